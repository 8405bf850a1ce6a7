//! The cluster restored into: what it serves, its objects got by name, and the
//! waits a restore makes on it (a CRD Established and served, a namespace done
//! terminating, a webhook's backend answering). Every wait has a deadline.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::client::Cluster;
use super::super::discovery::{self, ApiResource};
use super::super::KubeError;

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(200);

pub struct Target {
    pub cluster: Cluster,
    /// Every served version of every resource, at the start of the restore.
    pub served: Vec<ApiResource>,
}

/// How a wait ended.
pub enum Waited {
    Done,
    TimedOut(String),
}

impl Target {
    pub async fn connect(cluster: Cluster) -> Result<Target, KubeError> {
        let found = discovery::discover(&cluster, true).await?;
        Ok(Target {
            cluster,
            served: found.resources,
        })
    }

    /// The versions the target serves `group`/`resource` in.
    pub fn versions(&self, group: &str, resource: &str) -> Vec<&str> {
        self.served
            .iter()
            .filter(|r| r.group == group && r.resource == resource)
            .map(|r| r.version.as_str())
            .collect()
    }

    /// The resource of a kind (`apiVersion` and `kind`, as ownerReferences name
    /// them), as the target serves it.
    pub fn resource_of(&self, api_version: &str, kind: &str) -> Option<&ApiResource> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.served
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// GETs one object; `None` when it does not exist.
    pub async fn get(&self, path: &str, what: &str) -> Result<Option<Value>, KubeError> {
        match self.cluster.get_json::<Value>(path, what).await {
            Ok(v) => Ok(Some(v)),
            Err(KubeError::Api { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Polls `done` until it says yes or `timeout` passes.
    async fn poll<F, Fut>(&self, timeout: Duration, what: &str, mut done: F) -> Waited
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, KubeError>>,
    {
        let start = Instant::now();
        let mut last_error = None;
        loop {
            match done().await {
                Ok(true) => return Waited::Done,
                Ok(false) => {}
                // The API server went away: waiting longer cannot help.
                Err(e @ (KubeError::Transport { .. } | KubeError::Unreachable { .. })) => {
                    return Waited::TimedOut(format!("{what}: {e}"));
                }
                Err(e) => last_error = Some(e.to_string()),
            }
            if start.elapsed() >= timeout {
                let why = last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Waited::TimedOut(format!(
                    "{what}: not done after {:.0}s{why}",
                    timeout.as_secs_f64()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the CRD `name` is Established and its resource is served in
    /// `versions` (discovery lags the condition on a real server).
    pub async fn crd_ready(
        &self,
        name: &str,
        group: &str,
        resource: &str,
        versions: &[String],
        timeout: Duration,
    ) -> Waited {
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
        let what = format!("the CustomResourceDefinition {name} to be Established");
        self.poll(timeout, &what, || async {
            let Some(crd) = self.get(&path, &what).await? else {
                return Ok(false);
            };
            let established = crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if !established {
                return Ok(false);
            }
            for v in versions {
                let list: Value = match self
                    .cluster
                    .get_json(&format!("/apis/{group}/{v}"), &what)
                    .await
                {
                    Ok(l) => l,
                    Err(KubeError::Api { code: 404, .. }) => return Ok(false),
                    Err(e) => return Err(e),
                };
                let served = list["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["name"] == resource);
                if !served {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    /// Waits until the namespace `name` is gone (it was Terminating).
    pub async fn namespace_gone(&self, name: &str, timeout: Duration) -> Waited {
        let path = format!("/api/v1/namespaces/{name}");
        let what = format!("the namespace {name} to finish terminating");
        self.poll(timeout, &what, || async {
            Ok(self.get(&path, &what).await?.is_none())
        })
        .await
    }

    /// Waits until an object is gone (deleted, its finalizers done).
    pub async fn gone(&self, path: &str, what: &str, timeout: Duration) -> Waited {
        self.poll(timeout, what, || async {
            Ok(self.get(path, what).await?.is_none())
        })
        .await
    }

    /// Waits until the Service `namespace/name` has a ready endpoint: what an
    /// admission webhook or an APIService needs before it is registered.
    pub async fn backend_ready(&self, namespace: &str, name: &str, timeout: Duration) -> Waited {
        let path = format!("/api/v1/namespaces/{namespace}/endpoints/{name}");
        let what = format!("the Service {namespace}/{name} to have a ready endpoint");
        self.poll(timeout, &what, || async {
            let Some(ep) = self.get(&path, &what).await? else {
                return Ok(false);
            };
            Ok(ep["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty())))
        })
        .await
    }
}
