//! Kubernetes tests: a repository, a test API server on loopback, and a kubeconfig
//! that points at it.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::apiserver::TestApiServer;
use crate::{Env, Out};

pub struct KubeEnv {
    pub env: Env,
    pub server: TestApiServer,
    pub kubeconfig: PathBuf,
}

impl KubeEnv {
    /// An initialised local repository and a fresh test API server.
    pub fn new() -> KubeEnv {
        let env = Env::init_local();
        let server = TestApiServer::start();
        let kubeconfig = server.kubeconfig(env.dir.path(), "test", None);
        KubeEnv {
            env,
            server,
            kubeconfig,
        }
    }

    /// `ballast backup kube --kubeconfig ... ARGS --json`.
    pub fn backup(&self, args: &[&str]) -> Out {
        let kc = self.kubeconfig.display().to_string();
        let mut a = vec!["backup", "kube", "--kubeconfig", kc.as_str(), "--json"];
        a.extend_from_slice(args);
        self.env.run(&a)
    }

    /// A backup that must be complete; returns its JSON (snapshot id, snapshot,
    /// manifest).
    pub fn backup_ok(&self, args: &[&str]) -> Value {
        self.backup(args).ok().json()
    }

    /// Runs a `ballast` command with `--json`, expecting success.
    pub fn json(&self, args: &[&str]) -> Value {
        self.env.json(args)
    }

    /// The objects of a list as the server serves it now (or at `rv`, exactly):
    /// `(namespace/name, resourceVersion)`.
    pub fn list(&self, collection: &str, rv: Option<&str>) -> Vec<(String, String)> {
        let path = match rv {
            Some(rv) => format!("{collection}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            None => collection.to_string(),
        };
        let (code, v) = self.server.call("GET", &path, None);
        assert_eq!(code, 200, "{path}: {v}");
        let mut out: Vec<(String, String)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let m = &o["metadata"];
                (
                    format!(
                        "{}/{}",
                        m["namespace"].as_str().unwrap_or_default(),
                        m["name"].as_str().unwrap()
                    ),
                    m["resourceVersion"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// `(namespace/name, resourceVersion)` of the objects of one resource in a
    /// snapshot, read back with `kube ls` and `kube get`.
    pub fn stored(&self, snapshot: &str, kind: &str) -> Vec<(String, String)> {
        let rows = self.json(&["kube", "ls", snapshot, "--kind", kind]);
        let mut out = Vec::new();
        for r in rows.as_array().unwrap() {
            let ns = r["namespace"].as_str().unwrap_or_default();
            let name = r["name"].as_str().unwrap();
            let mut args = vec!["kube", "get", snapshot];
            let obj = format!("{kind}/{name}");
            args.push(&obj);
            if !ns.is_empty() {
                args.push("-n");
                args.push(ns);
            }
            let o = self.json(&args);
            out.push((
                format!("{ns}/{name}"),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ));
        }
        out.sort();
        out
    }
}

impl Default for KubeEnv {
    fn default() -> KubeEnv {
        KubeEnv::new()
    }
}

/// A ConfigMap body.
pub fn configmap(name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": data}})
}

/// A namespaced CRD of `group` with kind `kind`, served in `v1`.
pub fn crd(plural: &str, group: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// `ownerReferences` naming `owner` (an object as the server returned it) as the
/// controller of the object they are put on.
pub fn owned_by(owner: &Value, kind: &str) -> Value {
    json!([{"apiVersion": owner["apiVersion"], "kind": kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
}
