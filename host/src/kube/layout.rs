//! Where objects live in a Kubernetes snapshot's tree:
//!
//! ```text
//! _capture.json                         the capture manifest
//! GROUP/VERSION/RESOURCE/NAMESPACE/NAME.json
//! ```
//!
//! `GROUP` is `core` for the core group (no other group has that name: API groups
//! outside the core are DNS names, and Kubernetes' own have no dots but are never
//! `core`); `NAMESPACE` is `_cluster` for cluster-scoped objects (a namespace name
//! cannot start with `_`). One path per object and version: nothing collides, and
//! an unchanged object, directory or resource is the same blob in every backup.

use serde::Serialize;

pub const MANIFEST_FILE: &str = "_capture.json";
pub const CORE_GROUP: &str = "core";
pub const CLUSTER_SCOPE: &str = "_cluster";
pub const SUFFIX: &str = ".json";

/// The directory name of a group.
pub fn group_dir(group: &str) -> &str {
    if group.is_empty() {
        CORE_GROUP
    } else {
        group
    }
}

/// The group a directory name stands for.
pub fn group_of_dir(dir: &str) -> &str {
    if dir == CORE_GROUP {
        ""
    } else {
        dir
    }
}

/// The directory name of a namespace, or of the cluster scope.
pub fn namespace_dir(namespace: Option<&str>) -> &str {
    namespace.unwrap_or(CLUSTER_SCOPE)
}

/// One object's place in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The path of the object's file in the tree.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}{SUFFIX}",
            group_dir(&self.group),
            self.version,
            self.resource,
            namespace_dir(self.namespace.as_deref()),
            self.name
        )
    }

    /// The object a tree path stands for, if it is one.
    pub fn from_path(path: &str) -> Option<ObjectRef> {
        let parts: Vec<&str> = path.split('/').collect();
        let [group, version, resource, ns, file] = parts[..] else {
            return None;
        };
        let name = file.strip_suffix(SUFFIX)?;
        Some(ObjectRef {
            group: group_of_dir(group).to_string(),
            version: version.to_string(),
            resource: resource.to_string(),
            namespace: (ns != CLUSTER_SCOPE).then(|| ns.to_string()),
            name: name.to_string(),
        })
    }

    /// A `v1` object of `group`/`resource`: the tests' shorthand.
    #[cfg(test)]
    pub fn test(group: &str, resource: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// `resource.group`, or `resource` for the core group.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for r in [
            ObjectRef {
                group: String::new(),
                version: "v1".into(),
                resource: "configmaps".into(),
                namespace: Some("shop".into()),
                name: "app.config".into(),
            },
            ObjectRef {
                group: "apiextensions.k8s.io".into(),
                version: "v1".into(),
                resource: "customresourcedefinitions".into(),
                namespace: None,
                name: "widgets.example.com".into(),
            },
        ] {
            assert_eq!(ObjectRef::from_path(&r.path()), Some(r.clone()));
        }
        assert_eq!(
            ObjectRef::from_path("core/v1/configmaps/shop/a.json")
                .unwrap()
                .path(),
            "core/v1/configmaps/shop/a.json"
        );
        assert!(ObjectRef::from_path("_capture.json").is_none());
        assert!(ObjectRef::from_path("core/v1/configmaps/shop").is_none());
    }
}
