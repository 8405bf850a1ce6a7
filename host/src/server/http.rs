//! The HTTP listener: `/metrics` (Prometheus), `/healthz`, and `/api/schedules`
//! (each schedule's next run, newest attempt and success, and its newest run
//! record, as JSON).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::metrics::sched;
use super::Server;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn schedules(server: &Server) -> serde_json::Value {
    let state = server.state.lock().unwrap();
    let list: Vec<_> = server
        .config
        .schedules
        .iter()
        .map(|s| {
            let st = state.schedules.get(&s.name).cloned().unwrap_or_default();
            let labels = sched(s);
            let mut v = s.describe();
            v["next_run"] = json!(server.next_run(s));
            v["running"] = json!(server.metrics.running.get_or_create(&labels).get() == 1);
            v["last_attempt"] = json!(st.last_attempt);
            v["last_success"] = json!(st.last_success);
            v["last_run"] = json!(st.last_run);
            v
        })
        .collect();
    json!({ "schedules": list })
}

async fn handle(
    server: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            server.metrics.encode(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/api/schedules" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&schedules(&server)).expect("JSON"),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz, /api/schedules\n".into(),
        ),
    })
}

pub async fn serve(server: Arc<Server>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| handle(server.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
