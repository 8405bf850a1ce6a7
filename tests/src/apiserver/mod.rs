//! The test API server: a Kubernetes API written for ballast's tests, because no
//! kube-apiserver can be installed on the machines they run on. It is never used by
//! product code. It is faithful where ballast depends on behaviour, and says here
//! what it implements and where it differs.
//!
//! ## Conventions it implements
//!
//! - **Discovery**: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/GROUP`,
//!   `/apis/GROUP/VERSION` (the legacy documents; no aggregated discovery, which
//!   clients fall back from). Subresources (`pods/log`, `deployments/scale`,
//!   `*/status`) are listed as `RESOURCE/SUB`. Types that can only be created
//!   (`bindings`, `tokenreviews`) are listed with the verb `create` alone. `events`
//!   is served by the core group and by `events.k8s.io`, from one set of objects.
//!   Preferred versions follow Kubernetes' version priority (GA, beta, alpha).
//! - **Objects**: get, list, watch, create, update (`PUT`), patch (JSON merge,
//!   strategic merge treated as merge, JSON patch, apply treated as merge and
//!   create-if-absent), delete and deletecollection, namespaced and cluster scope,
//!   all-namespace lists. Namespaced objects need their namespace (404 otherwise).
//! - **Metadata the server owns**: `generateName` (5 characters from Kubernetes'
//!   alphabet), `uid`, `resourceVersion` (one revision counter for all objects, as
//!   etcd's), `creationTimestamp`, `generation` (1, then +1 on any change outside
//!   metadata and status), `managedFields` (one entry per manager, no field sets).
//! - **Conflicts**: 409 AlreadyExists on create, 409 Conflict on an update whose
//!   `resourceVersion` is stale; 422 Invalid with Kubernetes' messages for bad
//!   names, immutable ConfigMaps and Secrets, Service addresses.
//! - **Lists**: label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`),
//!   field selectors (`metadata.name`, `metadata.namespace` for every kind, and the
//!   per-kind fields of Pods, Secrets, Events and Namespaces; others 400), `limit`
//!   and `continue` with every page served at the revision of the first, in the
//!   byte order of etcd keys (`namespace/name`); `resourceVersion` with
//!   `resourceVersionMatch=Exact` (a list at an older revision) or `NotOlderThan`.
//!   A continue token older than the last compaction gets 410 Expired with the real
//!   server's message. Items of built-in types come without `apiVersion` and `kind`,
//!   as the real server sends them; custom objects keep theirs.
//! - **Watch**: `?watch=true` from a `resourceVersion` (replay, then live) or from
//!   now (ADDED for every object first), JSON lines, `timeoutSeconds`, 410 as an
//!   ERROR event for a compacted revision.
//! - **Status subresource**: for types that have one, status is dropped on create
//!   and kept on update; `PUT .../status` changes status alone.
//! - **`dryRun=All`**: everything but the write (allocations are not kept).
//! - **Services**: a cluster IP from 10.96.0.0/12 unless headless (`None`) or
//!   ExternalName; node ports from 30000-32767 for NodePort and LoadBalancer; a
//!   requested IP or port that is taken is 422; a cluster IP cannot change.
//! - **CRDs**: a valid CRD is Established at once (conditions `NamesAccepted`,
//!   `Established`); its served versions appear in discovery; deleting it deletes
//!   its objects. Objects of every served version are one set (no conversion).
//! - **Namespaces**: created with the label `kubernetes.io/metadata.name`,
//!   `spec.finalizers`, phase Active, and (as the
//!   controllers do) a `default` ServiceAccount and a `kube-root-ca.crt`
//!   ConfigMap; `default`, `kube-system`, `kube-public` and `kube-node-lease` exist
//!   from the start, with the `kubernetes` Service and two PriorityClasses.
//! - **Authentication**: a bearer token when one is set (401 otherwise).
//! - **Faults** ([`Faults`]): latency, 429 with `Retry-After`, 500s by path, a
//!   connection dropped in the middle of a list, a group whose discovery fails
//!   (503, as a broken aggregated APIService), 403 on a resource or on its lists
//!   only (a user allowed into some namespaces), compaction after a number of
//!   pages, pages out of key order, a required token, extra discovery entries
//!   (a hostile aggregated server), and a server gone away (every connection
//!   closed unanswered).
//! - **Validating admission webhooks** (`admission.rs`): called over HTTPS at the
//!   first address of their Service's Endpoints, with `failurePolicy` and
//!   `namespaceSelector`; [`admission::Backend`] is a backend that allows all.
//! - **Controllers** (`controllers.rs`): CRDs Established after a delay,
//!   namespaces Terminating for a while, garbage collection of dependents, and
//!   ResourceQuota admission of object counts.
//! - **Immutable fields**: the selector of Deployments, ReplicaSets, StatefulSets
//!   and DaemonSets, immutable ConfigMaps and Secrets, a Service's cluster IP.
//! - **managedFields**: a create gives every field to the request's manager,
//!   whatever managedFields it carried; a patch or update that changes nothing but
//!   `managedFields` sets them as given (how a client hands fields back to their
//!   managers); any other update adds the request's manager. Field sets are not
//!   tracked, so the real server's finer split of ownership is not simulated.
//!
//! ## Where it differs from kube-apiserver
//!
//! No admission beyond validating webhooks and quota counts, no validation beyond names and the cases
//! above, no defaulting of workload specs, no conversion between versions, no
//! field ownership in server-side apply, no protobuf or Table output, no OpenAPI
//! documents. A namespace is deleted at once with its contents unless
//! `namespace_termination_ms` is set. Plain HTTP on loopback, or HTTPS with the
//! test CA's certificate ([`TestApiServer::start_tls`]).

pub mod admission;
pub mod api;
mod control;
pub mod controllers;
pub mod faults;
mod http;
mod objects;
pub mod resources;
mod seed;
pub mod select;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

pub use api::State;
pub use faults::{Faults, Served};
pub use seed::Dataset;

/// A running test API server on a loopback port, with its own threads.
pub struct TestApiServer {
    state: Arc<State>,
    addr: SocketAddr,
    tls: bool,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The test CA and its certificate for `localhost` and `127.0.0.1`, which
/// `.ci/install` makes (`.ci/databases`).
pub const TEST_TLS: &str = "/etc/ballast-test/tls";

impl TestApiServer {
    pub fn start() -> TestApiServer {
        TestApiServer::serve(Arc::new(State::new()), "127.0.0.1:0", 2)
    }

    /// A server on HTTPS with the test CA's certificate (`ca.pem` in [`TEST_TLS`]).
    pub fn start_tls() -> TestApiServer {
        let dir = Path::new(TEST_TLS);
        let tls = http::acceptor(&dir.join("server.pem"), &dir.join("server-key.pem"));
        TestApiServer::serve_with(Arc::new(State::new()), "127.0.0.1:0", 2, Some(tls))
    }

    /// Serves `state` on `addr` with `threads` worker threads.
    pub fn serve(state: Arc<State>, addr: &str, threads: usize) -> TestApiServer {
        TestApiServer::serve_with(state, addr, threads, None)
    }

    fn serve_with(
        state: Arc<State>,
        addr: &str,
        threads: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("test-apiserver")
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = std::net::TcpListener::bind(addr).expect("binding the test API server");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("an address");
        let s = state.clone();
        let secure = tls.is_some();
        runtime.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).expect("a listener");
            http::serve(s, l, tls).await
        });
        TestApiServer {
            state,
            addr,
            tls: secure,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Changes the faults.
    pub fn faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.state.faults.lock().unwrap());
    }

    /// The requests served so far.
    pub fn served(&self) -> Vec<Served> {
        self.state.served.lock().unwrap().clone()
    }

    pub fn clear_served(&self) {
        self.state.served.lock().unwrap().clear();
    }

    /// Serves one request in process (no HTTP, no faults but those in the state):
    /// the status and the body, a list's items gathered.
    pub fn call(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> (u16, Value) {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let token = self.state.faults.lock().unwrap().token.clone();
        let req = api::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            content_type: content_type.into(),
            user_agent: "ballast-tests".into(),
            authorization: format!("Bearer {token}"),
            body: body
                .map(|b| serde_json::to_vec(b).expect("JSON"))
                .unwrap_or_default(),
        };
        let r = self.state.handle(&req);
        let v = match r.body {
            api::Body::Json(v) => v,
            api::Body::List(l) => {
                let mut v = l.head;
                v["items"] = Value::Array(l.items);
                v
            }
            api::Body::Watch(_) => panic!("watch over HTTP only"),
        };
        (r.status, v)
    }

    /// Creates an object (the collection's path, e.g. `/api/v1/namespaces/a/configmaps`)
    /// and returns it as stored; panics unless it was created.
    pub fn create(&self, collection: &str, body: Value) -> Value {
        let (code, v) = self.call("POST", collection, Some(&body));
        assert_eq!(code, 201, "creating at {collection}: {v}");
        v
    }

    /// Creates a namespace.
    pub fn namespace(&self, name: &str) -> Value {
        self.create("/api/v1/namespaces", json!({"metadata": {"name": name}}))
    }

    /// Loads a generated dataset; returns how many objects were created.
    pub fn seed(&self, d: &Dataset) -> usize {
        seed::load(&self.state, d).expect("seeding")
    }

    /// Changes a fraction of the seeded ConfigMaps and Secrets.
    pub fn mutate(&self, fraction: f64) -> usize {
        seed::mutate(&self.state, fraction).expect("mutating")
    }

    /// The UID of `kube-system`, which names the cluster.
    pub fn cluster_uid(&self) -> String {
        let (_, ns) = self.call("GET", "/api/v1/namespaces/kube-system", None);
        ns["metadata"]["uid"].as_str().expect("a uid").to_string()
    }

    /// Writes a kubeconfig in `dir` with one context (`name`) for this server, with
    /// a bearer token if given; returns its path.
    pub fn kubeconfig(&self, dir: &Path, name: &str, token: Option<&str>) -> PathBuf {
        let user = match token {
            Some(t) => json!({"token": t}),
            None => json!({}),
        };
        let mut cluster = json!({"server": self.url()});
        if self.tls {
            cluster["certificate-authority"] = json!(format!("{TEST_TLS}/ca.pem"));
        }
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        });
        let path = dir.join(format!("kubeconfig-{name}"));
        std::fs::write(&path, serde_yaml_ng::to_string(&config).expect("YAML"))
            .expect("writing a kubeconfig");
        path
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
