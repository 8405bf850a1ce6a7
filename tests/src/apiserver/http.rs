//! HTTP: requests in through hyper, responses out with list items and watch events
//! streamed one by one, latency added and connections dropped where a fault says.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::api::{event_json, ApiError, Body, Request, Response, State};
use super::faults::Served;
use super::resources::ResourceType;
use super::select::{FieldSelector, LabelSelector};
use super::store::{EventKind, ReadError};

/// Serves connections on `listener` until the task is dropped, over TLS when an
/// acceptor is given.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    if state.faults.lock().unwrap().down {
                        // An error from the service closes the connection unanswered.
                        return Err(std::io::Error::other("the test API server is down"));
                    }
                    handle(state, req).await.map_err(|never| match never {})
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = builder.keep_alive(true).serve_connection(io, service).await;
                }
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = builder.keep_alive(true).serve_connection(io, service).await;
                }
            }
        });
    }
}

/// A TLS acceptor for the certificate chain and key in these PEM files.
pub fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).expect("the server certificate"),
    ))
    .collect::<Result<_, _>>()
    .expect("PEM certificates");
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).expect("the server key"),
    ))
    .expect("a PEM key")
    .expect("a key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

type Out = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn handle(
    state: Arc<State>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Out>, Infallible> {
    let latency = state.faults.lock().unwrap().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut r = Request {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or_default().to_string(),
        content_type: header(hyper::header::CONTENT_TYPE),
        user_agent: header(hyper::header::USER_AGENT),
        authorization: header(hyper::header::AUTHORIZATION),
        body: vec![],
    };
    r.body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => vec![],
    };
    let response = state.handle(&r);
    let items = match &response.body {
        Body::List(l) => l.drop_after.unwrap_or(l.items.len()).min(l.items.len()),
        _ => 0,
    };
    state.served.lock().unwrap().push(Served {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        status: response.status,
        items,
        user_agent: r.user_agent.clone(),
        at_ms: super::faults::now_ms(),
    });
    Ok(to_http(response))
}

fn to_http(r: Response) -> hyper::Response<Out> {
    let mut b = hyper::Response::builder()
        .status(r.status)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(s) = r.retry_after {
        b = b.header(hyper::header::RETRY_AFTER, s.to_string());
    }
    let body: Out = match r.body {
        Body::Json(v) => full(serde_json::to_vec(&v).expect("JSON")),
        Body::List(l) => ListStream::new(l).boxed(),
        Body::Watch(w) => w.into_body(),
    };
    b.body(body).expect("a response")
}

fn full(bytes: Vec<u8>) -> Out {
    http_body_util::Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

/// A list page written as `{head..., "items": [` item, item, ... `]}`.
struct ListStream {
    head: Option<Vec<u8>>,
    items: std::vec::IntoIter<Value>,
    sent: usize,
    drop_after: Option<usize>,
    /// A pause before the connection is dropped, so that what was sent leaves.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl ListStream {
    fn new(l: super::api::ListBody) -> ListStream {
        let mut head = serde_json::to_vec(&l.head).expect("JSON");
        head.pop(); // the closing brace
        head.extend_from_slice(b",\"items\":[");
        ListStream {
            head: Some(head),
            items: l.items.into_iter(),
            sent: 0,
            drop_after: l.drop_after,
            pause: None,
            done: false,
        }
    }
}

impl hyper::body::Body for ListStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(h) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(h)))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if self.drop_after == Some(self.sent) {
            let pause = self
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(100))));
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.done = true;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "connection dropped by the test",
            ))));
        }
        match self.items.next() {
            Some(item) => {
                let mut out = if self.sent == 0 { vec![] } else { vec![b','] };
                serde_json::to_writer(&mut out, &item).expect("JSON");
                self.sent += 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
            }
            None => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"]}")))))
            }
        }
    }
}

/// A watch: the changes since its revision, then live ones, as JSON lines, until
/// its timeout.
pub struct Watch {
    backlog: std::collections::VecDeque<Value>,
    live: Option<broadcast::Receiver<super::store::Event>>,
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    after: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Watch {
    pub fn start(
        state: &State,
        req: &Request,
        rt: ResourceType,
        version: String,
        namespace: Option<String>,
    ) -> Result<Watch, ApiError> {
        let param = |n: &str| {
            url::form_urlencoded::parse(req.query.as_bytes())
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.into_owned())
        };
        let labels = LabelSelector::parse(&param("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(&param("fieldSelector").unwrap_or_default(), &rt.kind)
            .map_err(ApiError::bad_request)?;
        let timeout = param("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800u64);
        let inner = state.inner.lock().unwrap();
        let live = inner.store.subscribe();
        let prefix = namespace.as_ref().map(|ns| format!("{ns}/"));
        let keep = |o: &Value| {
            labels.matches(&o["metadata"]["labels"])
                && fields.matches(o)
                && prefix.as_ref().is_none_or(|p| {
                    format!(
                        "{}/",
                        o["metadata"]["namespace"].as_str().unwrap_or_default()
                    ) == *p
                })
        };
        let mut backlog = std::collections::VecDeque::new();
        let now = inner.store.revision();
        let mut expired = None;
        match param("resourceVersion").filter(|r| !r.is_empty() && r != "0") {
            None => {
                let (all, _) = inner
                    .store
                    .list(&rt.storage, now, prefix.as_deref(), None, 0, &keep)
                    .map_err(|_| ApiError::bad_request("cannot list"))?;
                for (_, o) in all {
                    backlog.push_back(event_json(EventKind::Added, &rt, &version, &o));
                }
            }
            Some(rv) => {
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?;
                match inner.store.changes_since(&rt.storage, rv) {
                    Ok(events) => {
                        for e in events.iter().filter(|e| keep(&e.object)) {
                            backlog.push_back(event_json(e.kind, &rt, &version, &e.object));
                        }
                    }
                    Err(ReadError::Compacted {
                        requested,
                        compacted,
                    }) => {
                        expired = Some(
                            json!({"type": "ERROR", "object": ApiError::gone(format!("too old resource version: {requested} ({compacted})")).status()}),
                        );
                    }
                    Err(ReadError::TooNew { .. }) => {}
                }
            }
        }
        drop(inner);
        let live = match expired {
            Some(e) => {
                backlog.push_back(e);
                None
            }
            None => Some(live),
        };
        Ok(Watch {
            backlog,
            live,
            rt,
            version,
            namespace,
            labels,
            fields,
            after: now,
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(timeout))),
        })
    }

    fn wanted(&self, e: &super::store::Event) -> bool {
        let o = &e.object;
        e.storage == self.rt.storage
            && e.revision > self.after
            && self.labels.matches(&o["metadata"]["labels"])
            && self.fields.matches(o)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
    }
}

impl Watch {
    /// The body: one JSON line per event.
    fn into_body(self) -> Out {
        use futures::StreamExt;
        let events = futures::stream::unfold(self, |mut w| async move {
            if let Some(v) = w.backlog.pop_front() {
                return Some((line(&v), w));
            }
            let mut rx = w.live.take()?;
            loop {
                tokio::select! {
                    _ = &mut w.deadline => return None,
                    got = rx.recv() => match got {
                        Ok(e) if w.wanted(&e) => {
                            let v = event_json(e.kind, &w.rt, &w.version, &e.object);
                            w.live = Some(rx);
                            return Some((line(&v), w));
                        }
                        Ok(_) => continue,
                        // A watcher too slow to keep up is closed, as the real
                        // server closes it; the client watches again.
                        Err(_) => return None,
                    }
                }
            }
        });
        BodyExt::boxed(http_body_util::StreamBody::new(
            events.map(|b| Ok(Frame::data(b))),
        ))
    }
}

fn line(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec(v).expect("JSON");
    out.push(b'\n');
    Bytes::from(out)
}
