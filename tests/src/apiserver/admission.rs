//! Validating admission webhooks, called as kube-apiserver calls them: on a create,
//! update or patch that a ValidatingWebhookConfiguration's rules match, the server
//! looks up the Endpoints of the webhook's Service and POSTs an `AdmissionReview`
//! over HTTPS to the first address, trusting the webhook's `caBundle`. No endpoint,
//! a connection that fails, or an answer that does not decode fails the request
//! with 500 and the real server's message when `failurePolicy` is `Fail` (the
//! default), and lets it through when it is `Ignore`; `allowed: false` refuses it
//! with the answer's code (400 by default) and message.
//!
//! Differences from kube-apiserver: the certificate is checked for the endpoint's
//! IP address, not for `SERVICE.NAMESPACE.svc` (the test certificate is for
//! loopback); rules match operations, groups, versions and resources (with `*`),
//! and `namespaceSelector` matches labels and `In`/`NotIn`/`Exists` expressions;
//! `objectSelector`, `matchConditions`, mutating webhooks and `url` client configs
//! are not implemented; a patch is reviewed as its patch body, not the patched
//! object; webhook configurations themselves are never reviewed (as on a real
//! server). The call is blocking, with a 5-second limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio_rustls::rustls;

use super::api::{ApiError, Inner};
use super::resources::ResourceType;

/// One webhook a request must pass.
pub struct Hook {
    name: String,
    service: String,
    namespace: String,
    path: String,
    /// The first ready endpoint of the Service, if it has one.
    endpoint: Option<SocketAddr>,
    ca: Vec<u8>,
    fail: bool,
}

fn matches_list(list: &Value, value: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == value))
}

impl Inner {
    /// The webhooks a write (`CREATE` or `UPDATE`) of `rt` in `namespace` must pass.
    pub fn webhooks_for(
        &self,
        rt: &ResourceType,
        version: &str,
        operation: &str,
        namespace: Option<&str>,
    ) -> Vec<Hook> {
        if rt.group == "admissionregistration.k8s.io" {
            return Vec::new();
        }
        let storage = "validatingwebhookconfigurations.admissionregistration.k8s.io";
        let ns_labels = namespace
            .and_then(|ns| self.store.get("namespaces.", ns))
            .map(|n| n["metadata"]["labels"].clone())
            .unwrap_or(Value::Null);
        let mut out = Vec::new();
        for key in self.store.keys(storage) {
            let Some(config) = self.store.get(storage, &key) else {
                continue;
            };
            for w in config["webhooks"].as_array().into_iter().flatten() {
                let ruled = w["rules"].as_array().into_iter().flatten().any(|r| {
                    matches_list(&r["operations"], operation)
                        && matches_list(&r["apiGroups"], &rt.group)
                        && matches_list(&r["apiVersions"], version)
                        && matches_list(&r["resources"], &rt.resource)
                });
                if !ruled || (namespace.is_some() && !selects(&w["namespaceSelector"], &ns_labels))
                {
                    continue;
                }
                let svc = &w["clientConfig"]["service"];
                let (Some(name), Some(ns)) = (svc["name"].as_str(), svc["namespace"].as_str())
                else {
                    continue;
                };
                let endpoint = self
                    .store
                    .get("endpoints.", &format!("{ns}/{name}"))
                    .and_then(|e| {
                        let subset = &e["subsets"][0];
                        let ip = subset["addresses"][0]["ip"].as_str()?;
                        let port = subset["ports"][0]["port"].as_u64()?;
                        format!("{ip}:{port}").parse().ok()
                    });
                let ca = w["clientConfig"]["caBundle"]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default();
                out.push(Hook {
                    name: w["name"].as_str().unwrap_or_default().to_string(),
                    service: name.to_string(),
                    namespace: ns.to_string(),
                    path: svc["path"].as_str().unwrap_or("/").to_string(),
                    endpoint,
                    ca,
                    fail: w["failurePolicy"].as_str() != Some("Ignore"),
                });
            }
        }
        out
    }
}

/// Whether a namespace selector takes a namespace with these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    if selector.is_null() {
        return true;
    }
    let ok_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k] == *v);
    let ok_exprs = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let have = labels[e["key"].as_str().unwrap_or_default()].as_str();
            let among = |v: &str| matches_list(&e["values"], v);
            match e["operator"].as_str() {
                Some("In") => have.is_some_and(among),
                Some("NotIn") => !have.is_some_and(among),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                _ => false,
            }
        });
    ok_labels && ok_exprs
}

/// Calls a webhook with the object of a write; `Err` is the API server's answer.
pub fn review(hook: &Hook, operation: &str, object: &[u8]) -> Result<(), ApiError> {
    let object: Value = serde_json::from_slice(object).unwrap_or(Value::Null);
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": super::objects::new_uid(), "operation": operation, "object": object},
    });
    let failed = |why: String| {
        if !hook.fail {
            return Ok(());
        }
        Err(ApiError::new(
            500,
            "InternalError",
            format!(
                "Internal error occurred: failed calling webhook \"{}\": failed to call webhook: Post \"https://{}.{}.svc:443{}?timeout=10s\": {why}",
                hook.name, hook.service, hook.namespace, hook.path
            ),
        ))
    };
    let Some(endpoint) = hook.endpoint else {
        return failed(format!(
            "no endpoints available for service \"{}\"",
            hook.service
        ));
    };
    let answer = match post(endpoint, &hook.path, &hook.ca, &body) {
        Ok(a) => a,
        Err(why) => return failed(why),
    };
    let r = &answer["response"];
    match r["allowed"].as_bool() {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::new(
            r["status"]["code"].as_u64().unwrap_or(400) as u16,
            "BadRequest",
            format!(
                "admission webhook \"{}\" denied the request: {}",
                hook.name,
                r["status"]["message"]
                    .as_str()
                    .unwrap_or("without a reason")
            ),
        )),
        None => failed("the answer is not an AdmissionReview".into()),
    }
}

/// An HTTPS POST of JSON, trusting only `ca`; the JSON answer.
fn post(to: SocketAddr, path: &str, ca: &[u8], body: &Value) -> Result<Value, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::io::BufReader::new(ca)) {
        let c = c.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(c).map_err(|e| format!("caBundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(to.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map_err(|e| format!("dial tcp {to}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let bytes = serde_json::to_vec(body).expect("JSON");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    tls.write_all(head.as_bytes())
        .and_then(|_| tls.write_all(&bytes))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // A server that closes without close_notify: what was read is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&answer);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or("no HTTP answer")?;
    serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// A webhook backend for the tests: HTTPS with the test certificate on loopback,
/// allowing every request and counting them.
pub struct Backend {
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Backend {
    pub fn start() -> Backend {
        let dir = std::path::Path::new(super::TEST_TLS);
        let tls = super::http::acceptor(&dir.join("server.pem"), &dir.join("server-key.pem"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("an address");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        runtime.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).expect("a listener");
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            counter.fetch_add(1, Ordering::SeqCst);
                            let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                "response": {"uid": review["request"]["uid"], "allowed": true}});
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                serde_json::to_vec(&answer).expect("JSON"),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            calls,
            runtime: Some(runtime),
        }
    }

    /// AdmissionReviews answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The `caBundle` that trusts it.
    pub fn ca_bundle() -> String {
        let pem = std::fs::read(std::path::Path::new(super::TEST_TLS).join("ca.pem"))
            .expect("the test CA");
        base64::engine::general_purpose::STANDARD.encode(pem)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
