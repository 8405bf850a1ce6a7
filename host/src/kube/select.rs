//! What a Kubernetes backup selects: namespaces and resources by glob, a label
//! selector, and which cluster-scoped objects come along.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::discovery::ApiResource;
use super::manifest::SelectionRecord;
use super::KubeError;

/// Which cluster-scoped objects a backup takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClusterResources {
    /// All of them for a whole-cluster backup; for a namespace backup, the ones the
    /// captured objects need.
    #[default]
    Auto,
    Yes,
    No,
}

impl ClusterResources {
    pub fn name(self) -> &'static str {
        match self {
            ClusterResources::Auto => "auto",
            ClusterResources::Yes => "yes",
            ClusterResources::No => "no",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Namespace globs to take (all when empty: a whole-cluster backup).
    pub include_namespaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
    /// Resource globs (`configmaps`, `ConfigMap`, `deployments.apps`, `*.example.com`).
    pub include_resources: Vec<String>,
    pub exclude_resources: Vec<String>,
    /// A label selector, applied by the server.
    pub label_selector: Option<String>,
    pub cluster_resources: ClusterResources,
    /// Keep every served version of each resource, not only the preferred one.
    pub all_versions: bool,
}

/// What happens to the cluster-scoped objects of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterScope {
    All,
    /// Only those the captured namespaced objects need.
    Needed,
    None,
}

/// A selection with its globs compiled.
pub struct Compiled {
    pub record: SelectionRecord,
    include_ns: Option<GlobSet>,
    exclude_ns: GlobSet,
    include_res: Option<GlobSet>,
    exclude_res: GlobSet,
    /// The included namespaces, when every pattern is a plain name: each is listed
    /// on its own (which a user allowed into some namespaces only may do).
    pub literal_namespaces: Option<Vec<String>>,
    pub scope: ClusterScope,
    pub label_selector: Option<String>,
}

fn globs(patterns: &[String], what: &str, case_insensitive: bool) -> Result<GlobSet, KubeError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g: Glob = GlobBuilder::new(p)
            .case_insensitive(case_insensitive)
            .literal_separator(false)
            .build()
            .map_err(|e| KubeError::Invalid(format!("{what} {p:?} is not a valid glob: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| KubeError::Invalid(format!("{what}: {e}")))
}

/// Splits `a,b` arguments and drops empty parts.
fn flat(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Selection {
    pub fn compile(&self) -> Result<Compiled, KubeError> {
        let inc_ns = flat(&self.include_namespaces);
        let exc_ns = flat(&self.exclude_namespaces);
        let inc_res = flat(&self.include_resources);
        let exc_res = flat(&self.exclude_resources);
        let literal = |p: &String| !p.contains(['*', '?', '[', '{']);
        let literal_namespaces = (!inc_ns.is_empty() && inc_ns.iter().all(literal)).then(|| {
            let mut v = inc_ns.clone();
            v.sort();
            v.dedup();
            v
        });
        let scope = match (self.cluster_resources, inc_ns.is_empty()) {
            (ClusterResources::No, _) => ClusterScope::None,
            (ClusterResources::Yes, _) | (ClusterResources::Auto, true) => ClusterScope::All,
            (ClusterResources::Auto, false) => ClusterScope::Needed,
        };
        if let Some(sel) = &self.label_selector {
            if sel.trim().is_empty() {
                return Err(KubeError::Invalid(
                    "--selector is empty: leave it out to take every object".into(),
                ));
            }
        }
        Ok(Compiled {
            record: SelectionRecord {
                include_namespaces: inc_ns.clone(),
                exclude_namespaces: exc_ns.clone(),
                include_resources: inc_res.clone(),
                exclude_resources: exc_res.clone(),
                label_selector: self.label_selector.clone(),
                cluster_resources: self.cluster_resources.name().into(),
                all_versions: self.all_versions,
            },
            include_ns: if inc_ns.is_empty() {
                None
            } else {
                Some(globs(&inc_ns, "the namespace", false)?)
            },
            exclude_ns: globs(&exc_ns, "the namespace", false)?,
            include_res: if inc_res.is_empty() {
                None
            } else {
                Some(globs(&inc_res, "the resource", true)?)
            },
            exclude_res: globs(&exc_res, "the resource", true)?,
            literal_namespaces,
            scope,
            label_selector: self.label_selector.clone(),
        })
    }
}

impl Compiled {
    /// Whether objects of `namespace` are taken.
    pub fn namespace(&self, namespace: &str) -> bool {
        self.include_ns
            .as_ref()
            .is_none_or(|g| g.is_match(namespace))
            && !self.exclude_ns.is_match(namespace)
    }

    /// Whether this is a backup of some namespaces, not of the whole cluster.
    pub fn namespace_backup(&self) -> bool {
        self.include_ns.is_some()
    }

    /// `Err(why)` when the resource is left out by `--include-resources` or
    /// `--exclude-resources`. A pattern matches the resource, `resource.group`, the
    /// kind, `kind.group`, a short name, and for the core group `resource.core`.
    pub fn resource(&self, r: &ApiResource) -> Result<(), String> {
        let group = if r.group.is_empty() {
            "core"
        } else {
            r.group.as_str()
        };
        let mut names = vec![
            r.resource.clone(),
            format!("{}.{group}", r.resource),
            r.kind.clone(),
            format!("{}.{group}", r.kind),
        ];
        names.extend(r.short_names.iter().cloned());
        names.extend(r.aliases.iter().cloned());
        if !r.group.is_empty() {
            names.push(r.qualified());
        }
        let hit = |g: &GlobSet| names.iter().any(|n| g.is_match(n));
        if let Some(inc) = &self.include_res {
            if !hit(inc) {
                return Err("not in --include-resources".into());
            }
        }
        if hit(&self.exclude_res) {
            return Err("in --exclude-resources".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, resource: &str, kind: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            kind: kind.into(),
            namespaced: true,
            short_names: vec!["cm".into()],
            preferred: true,
            aliases: vec![],
        }
    }

    #[test]
    fn resources_match_by_name_kind_group_or_short_name() {
        let cm = res("", "configmaps", "ConfigMap");
        let deploy = res("apps", "deployments", "Deployment");
        let widget = res("example.com", "widgets", "Widget");
        for (pattern, r, want) in [
            ("configmaps", &cm, true),
            ("ConfigMap", &cm, true),
            ("configmap", &cm, true),
            ("cm", &cm, true),
            ("configmaps.core", &cm, true),
            ("deployments.apps", &deploy, true),
            ("Deployment.apps", &deploy, true),
            ("*.apps", &deploy, true),
            ("*.apps", &cm, false),
            ("*.example.com", &widget, true),
            ("widgets", &deploy, false),
        ] {
            let s = Selection {
                include_resources: vec![pattern.into()],
                ..Default::default()
            }
            .compile()
            .unwrap();
            assert_eq!(
                s.resource(r).is_ok(),
                want,
                "{pattern} on {}",
                r.qualified()
            );
        }
        let s = Selection {
            exclude_resources: vec!["secrets,*.apps".into()],
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(s.resource(&deploy).is_err() && s.resource(&cm).is_ok());
    }

    #[test]
    fn namespaces_and_the_cluster_scope() {
        let s = Selection {
            include_namespaces: vec!["shop-*".into()],
            exclude_namespaces: vec!["shop-test".into()],
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(
            s.namespace("shop-web") && !s.namespace("shop-test") && !s.namespace("kube-system")
        );
        assert_eq!(s.scope, ClusterScope::Needed);
        assert!(s.literal_namespaces.is_none());
        let s = Selection {
            include_namespaces: vec!["b,a".into()],
            cluster_resources: ClusterResources::Yes,
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            s.literal_namespaces.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(s.scope, ClusterScope::All);
        let whole = Selection::default().compile().unwrap();
        assert_eq!(whole.scope, ClusterScope::All);
        assert!(whole.namespace("anything"));
        assert!(Selection {
            include_namespaces: vec!["[".into()],
            ..Default::default()
        }
        .compile()
        .is_err());
    }
}
