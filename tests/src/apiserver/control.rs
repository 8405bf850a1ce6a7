//! The control API under `/_test/`: what a test or benchmark uses to set faults, read
//! what was served, compact, and load or change many objects at once. A real API
//! server has none of this; ballast never calls it.

use serde_json::{json, Value};

use super::api::{ApiError, Body, Request, Response, State};
use super::faults::Faults;
use super::seed;

pub fn handle(state: &State, what: &str, req: &Request) -> Response {
    match run(state, what, req) {
        Ok(v) => Response {
            status: 200,
            retry_after: None,
            body: Body::Json(v),
        },
        Err(e) => Response {
            status: e.code,
            retry_after: None,
            body: Body::Json(e.status()),
        },
    }
}

fn param(req: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn run(state: &State, what: &str, req: &Request) -> Result<Value, ApiError> {
    match (req.method.as_str(), what) {
        ("GET", "faults") => {
            Ok(serde_json::to_value(&*state.faults.lock().unwrap()).expect("JSON"))
        }
        ("PUT", "faults") => {
            let f: Faults = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("faults: {e}")))?;
            *state.faults.lock().unwrap() = f;
            Ok(json!({}))
        }
        ("GET", "served") => {
            Ok(serde_json::to_value(&*state.served.lock().unwrap()).expect("JSON"))
        }
        ("DELETE", "served") => {
            state.served.lock().unwrap().clear();
            Ok(json!({}))
        }
        ("POST", "compact") => {
            state.inner.lock().unwrap().compact_now();
            Ok(json!({}))
        }
        ("GET", "stats") => {
            let inner = state.inner.lock().unwrap();
            Ok(json!({"objects": inner.store.count(), "revision": inner.store.revision()}))
        }
        ("POST", "seed") => {
            let spec: seed::Dataset = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("seed: {e}")))?;
            let n = seed::load(state, &spec)?;
            Ok(json!({"created": n}))
        }
        ("POST", "mutate") => {
            let fraction: f64 = param(req, "fraction")
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| ApiError::bad_request("mutate needs ?fraction="))?;
            let n = seed::mutate(state, fraction)?;
            Ok(json!({"changed": n}))
        }
        _ => Err(ApiError::bad_request(format!(
            "no control endpoint {} /_test/{what}",
            req.method
        ))),
    }
}
