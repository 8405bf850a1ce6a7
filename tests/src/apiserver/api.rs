//! The API: routes, verbs, lists with pagination at one revision, watches,
//! discovery, and the Status objects of errors. Transport-free: `http.rs` turns HTTP
//! into a [`Request`] and a [`Response`] back into HTTP, and tests may call
//! [`State::handle`] directly.

use std::sync::Mutex;

use base64::Engine;
use serde_json::{json, Value};

use super::controllers::Pending;
use super::faults::{self, Faults, Served};
use super::objects::{self, Allocations};
use super::resources::{self, ResourceType};
use super::select::{FieldSelector, LabelSelector};
use super::store::{self, EventKind, ReadError, Store};

/// An error as the API server reports it: a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn not_found(resource: &str, name: &str) -> ApiError {
        let mut e = ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"));
        e.details = json!({"name": name, "kind": resource});
        e
    }

    pub fn conflict(resource: &str, name: &str, why: &str) -> ApiError {
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
        );
        e.details = json!({"name": name, "kind": resource});
        e
    }

    pub fn invalid(kind: &str, name: &str, cause: String) -> ApiError {
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {cause}"),
        );
        e.details = json!({"name": name, "kind": kind, "causes": [{"message": cause}]});
        e
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        if let Some(r) = self.retry_after {
            s["details"]["retryAfterSeconds"] = json!(r);
        }
        s
    }
}

/// A request, as far as the API needs it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub user_agent: String,
    pub authorization: String,
    pub body: Vec<u8>,
}

impl Request {
    fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// A list page: its head, then items sent one by one (so that a fault can cut the
/// connection between two).
pub struct ListBody {
    pub head: Value,
    pub items: Vec<Value>,
    /// Drop the connection after this many items.
    pub drop_after: Option<usize>,
}

pub enum Body {
    Json(Value),
    List(ListBody),
    Watch(super::http::Watch),
}

pub struct Response {
    pub status: u16,
    pub retry_after: Option<u32>,
    pub body: Body,
}

impl Response {
    fn ok(v: Value) -> Response {
        Response {
            status: 200,
            retry_after: None,
            body: Body::Json(v),
        }
    }

    fn error(e: ApiError) -> Response {
        Response {
            status: e.code,
            retry_after: e.retry_after,
            body: Body::Json(e.status()),
        }
    }
}

/// What the server holds.
pub struct Inner {
    pub store: Store,
    pub types: Vec<ResourceType>,
    pub alloc: Allocations,
    /// What comes due later (`controllers.rs`).
    pub pending: Pending,
    /// The delays of the faults that simulate controllers, as of this request.
    pub delays: Delays,
}

/// How long a CRD takes to be Established and a namespace to terminate.
#[derive(Default, Clone, Copy)]
pub struct Delays {
    pub crd_establish: std::time::Duration,
    pub namespace_termination: std::time::Duration,
}

/// The whole server: objects, faults, and the log of what was served.
pub struct State {
    pub inner: Mutex<Inner>,
    pub faults: Mutex<Faults>,
    pub served: Mutex<Vec<Served>>,
    pub version: String,
}

/// Where a request goes.
enum Route {
    Version,
    CoreVersions,
    GroupList,
    Group(String),
    Resources(String, String),
    Object(Target),
    Control(String),
}

/// A request for objects of one type.
struct Target {
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// The position of a paginated list: the revision of its first page and the last
/// key sent.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    start: String,
}

impl State {
    pub fn new() -> State {
        let mut inner = Inner {
            store: Store::default(),
            types: resources::built_in(),
            alloc: Allocations::default(),
            pending: Pending::default(),
            delays: Delays::default(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            inner
                .create_raw("namespaces.", None, json!({"metadata": {"name": ns}}))
                .expect("a built-in namespace");
        }
        inner
            .create_raw(
                "services.",
                Some("default"),
                json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                       "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
            )
            .expect("the kubernetes Service");
        for (name, value) in [
            ("system-cluster-critical", 2000000000),
            ("system-node-critical", 2000001000),
        ] {
            inner
                .create_raw(
                    "priorityclasses.scheduling.k8s.io",
                    None,
                    json!({"metadata": {"name": name}, "value": value, "description": "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."}),
                )
                .expect("a built-in PriorityClass");
        }
        State {
            inner: Mutex::new(inner),
            faults: Mutex::new(Faults::default()),
            served: Mutex::new(Vec::new()),
            version: "v1.31.0".into(),
        }
    }

    /// Serves one request.
    pub fn handle(&self, req: &Request) -> Response {
        let faults = self.faults.lock().unwrap().clone();
        {
            let mut inner = self.inner.lock().unwrap();
            inner.delays = Delays {
                crd_establish: std::time::Duration::from_millis(faults.crd_establish_ms),
                namespace_termination: std::time::Duration::from_millis(
                    faults.namespace_termination_ms,
                ),
            };
            inner.tick();
        }
        let route = match self.route(&req.path) {
            Ok(r) => r,
            Err(e) => return Response::error(e),
        };
        if let Route::Control(what) = route {
            return super::control::handle(self, &what, req);
        }
        if !faults.token.is_empty() && req.authorization != format!("Bearer {}", faults.token) {
            return Response::error(ApiError::new(401, "Unauthorized", "Unauthorized"));
        }
        {
            let mut f = self.faults.lock().unwrap();
            if f.throttle > 0 {
                f.throttle -= 1;
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                );
                e.retry_after = Some(f.retry_after_s);
                return Response::error(e);
            }
            if let Some(n) = f
                .errors
                .iter_mut()
                .find(|(k, n)| **n > 0 && req.path.contains(k.as_str()))
                .map(|(_, n)| n)
            {
                *n -= 1;
                return Response::error(ApiError::new(
                    500,
                    "InternalError",
                    "Internal error occurred: injected by the test",
                ));
            }
        }
        match route {
            Route::Version => Response::ok(json!({
                "major": "1", "minor": "31", "gitVersion": self.version,
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc",
                "platform": "linux/amd64",
            })),
            Route::CoreVersions => Response::ok(json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
            })),
            Route::GroupList => Response::ok(self.group_list(&faults)),
            Route::Group(g) => match self.group_list(&faults)["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == json!(g)).cloned())
            {
                Some(mut group) => {
                    group["kind"] = json!("APIGroup");
                    group["apiVersion"] = json!("v1");
                    Response::ok(group)
                }
                None => Response::error(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            },
            Route::Resources(g, v) => {
                let gv = if g.is_empty() {
                    v.clone()
                } else {
                    format!("{g}/{v}")
                };
                if let Some(why) = faults.broken_groups.get(&gv) {
                    return Response::error(ApiError::new(503, "ServiceUnavailable", why.clone()));
                }
                let extra = faults.extra_resources.get(&gv).cloned().unwrap_or_default();
                let inner = self.inner.lock().unwrap();
                let types: Vec<&ResourceType> =
                    inner.types.iter().filter(|t| t.group == g).collect();
                if !types.iter().any(|t| t.versions.contains(&v)) && extra.is_empty() {
                    return Response::error(ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ));
                }
                let mut list = resources::api_resources(&types, &v);
                list.extend(extra);
                Response::ok(json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": list,
                }))
            }
            Route::Object(t) => {
                let gv = t.rt.group_version(&t.version);
                if let Some(why) = faults.broken_groups.get(&gv) {
                    return Response::error(ApiError::new(503, "ServiceUnavailable", why.clone()));
                }
                let reading = req.method == "GET";
                let names = |rules: &std::collections::HashSet<String>| {
                    rules
                        .iter()
                        .any(|r| faults::names(r, &t.rt.resource, &t.rt.group))
                };
                if reading
                    && (names(&faults.forbidden)
                        || (t.name.is_none() && names(&faults.forbidden_lists)))
                {
                    let verb = if t.name.is_some() { "get" } else { "list" };
                    let scope = match &t.namespace {
                        Some(ns) => format!("in the namespace \"{ns}\""),
                        None => "at the cluster scope".into(),
                    };
                    return Response::error(ApiError::new(
                        403,
                        "Forbidden",
                        format!("{} is forbidden: User \"system:serviceaccount:ballast:ballast\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}", t.rt.qualified(), t.rt.resource, t.rt.group),
                    ));
                }
                match self.object_verb(req, t) {
                    Ok(r) => r,
                    Err(e) => Response::error(e),
                }
            }
            Route::Control(_) => unreachable!("handled above"),
        }
    }

    fn group_list(&self, faults: &Faults) -> Value {
        let inner = self.inner.lock().unwrap();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in inner.types.iter().filter(|t| !t.group.is_empty()) {
            let entry = match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some(e) => e,
                None => {
                    groups.push((t.group.clone(), vec![]));
                    groups.last_mut().expect("just pushed")
                }
            };
            for v in &t.versions {
                if !entry.1.contains(v) {
                    entry.1.push(v.clone());
                }
            }
        }
        for gv in faults
            .broken_groups
            .keys()
            .chain(faults.extra_resources.keys())
        {
            if let Some((g, v)) = gv.split_once('/') {
                if !groups.iter().any(|(x, _)| x == g) {
                    groups.push((g.to_string(), vec![v.to_string()]));
                }
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by(|a, b| resources::version_order(a, b));
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let not_found = || {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
        let (group, version, rest) = match segs.as_slice() {
            ["version"] => return Ok(Route::Version),
            ["_test", rest @ ..] => return Ok(Route::Control(rest.join("/"))),
            ["api"] => return Ok(Route::CoreVersions),
            ["api", v] => return Ok(Route::Resources(String::new(), v.to_string())),
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis"] => return Ok(Route::GroupList),
            ["apis", g] => return Ok(Route::Group(g.to_string())),
            ["apis", g, v] => return Ok(Route::Resources(g.to_string(), v.to_string())),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(not_found()),
        };
        let (namespace, resource, name, sub) = match rest {
            ["namespaces", ns] => (None, "namespaces", Some(*ns), None),
            ["namespaces", ns, s @ ("status" | "finalize")] => {
                (None, "namespaces", Some(*ns), Some(*s))
            }
            ["namespaces", ns, r] => (Some(*ns), *r, None, None),
            ["namespaces", ns, r, n] => (Some(*ns), *r, Some(*n), None),
            ["namespaces", ns, r, n, s] => (Some(*ns), *r, Some(*n), Some(*s)),
            [r] => (None, *r, None, None),
            [r, n] => (None, *r, Some(*n), None),
            [r, n, s] => (None, *r, Some(*n), Some(*s)),
            _ => return Err(not_found()),
        };
        let inner = self.inner.lock().unwrap();
        let rt = inner
            .types
            .iter()
            .find(|t| {
                t.group == group
                    && t.resource == resource
                    && t.versions.iter().any(|v| v == version)
            })
            .cloned()
            .ok_or_else(not_found)?;
        if namespace.is_some() && !rt.namespaced {
            return Err(not_found());
        }
        if !rt.namespaced && rt.kind != "Namespace" && name.is_none() && namespace.is_some() {
            return Err(not_found());
        }
        if rt.namespaced && namespace.is_none() && name.is_some() {
            return Err(not_found());
        }
        if let Some(s) = sub {
            let known = (s == "status" && rt.status) || (rt.kind == "Namespace" && s == "finalize");
            if !known {
                return Err(not_found());
            }
        }
        Ok(Route::Object(Target {
            rt,
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        }))
    }

    fn object_verb(&self, req: &Request, t: Target) -> Result<Response, ApiError> {
        let verb = match (req.method.as_str(), &t.name) {
            ("GET", Some(_)) => "get",
            ("GET", None) if matches!(req.param("watch").as_deref(), Some("true" | "1")) => "watch",
            ("GET", None) => "list",
            ("POST", None) => "create",
            ("PUT", Some(_)) => "update",
            ("PATCH", Some(_)) => "patch",
            ("DELETE", Some(_)) => "delete",
            ("DELETE", None) => "deletecollection",
            _ => {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    format!("{} is not supported here", req.method),
                ));
            }
        };
        if !t.rt.verbs.iter().any(|v| v == verb) {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource ({verb} {})",
                    t.rt.qualified()
                ),
            ));
        }
        let dry_run = req.param("dryRun").as_deref() == Some("All");
        let manager = objects::manager(req.param("fieldManager").as_deref(), &req.user_agent);
        if matches!(verb, "create" | "update" | "patch") && t.sub.is_none() {
            // Admission webhooks are called without the lock (`admission.rs`).
            let operation = if verb == "create" { "CREATE" } else { "UPDATE" };
            let hooks = self.inner.lock().unwrap().webhooks_for(
                &t.rt,
                &t.version,
                operation,
                t.namespace.as_deref(),
            );
            for h in &hooks {
                super::admission::review(h, operation, &req.body)?;
            }
        }
        let mut inner = self.inner.lock().unwrap();
        match verb {
            "get" => {
                let key = store::key(
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or_default(),
                );
                let o = inner.store.get(&t.rt.storage, &key).ok_or_else(|| {
                    ApiError::not_found(&t.rt.qualified(), t.name.as_deref().unwrap_or_default())
                })?;
                Ok(Response::ok(present(&t.rt, &t.version, &o, false)))
            }
            "list" => inner.list(req, &t, &self.faults),
            "watch" => {
                drop(inner);
                super::http::Watch::start(self, req, t.rt, t.version, t.namespace).map(|w| {
                    Response {
                        status: 200,
                        retry_after: None,
                        body: Body::Watch(w),
                    }
                })
            }
            "create" => {
                let body = parse_body(req)?;
                let obj = inner.create(
                    &t.rt,
                    &t.version,
                    t.namespace.as_deref(),
                    body,
                    &manager,
                    dry_run,
                )?;
                Ok(Response {
                    status: 201,
                    retry_after: None,
                    body: Body::Json(present(&t.rt, &t.version, &obj, false)),
                })
            }
            "update" | "patch" => {
                let key = store::key(
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or_default(),
                );
                let name = t.name.clone().unwrap_or_default();
                let old = inner.store.get(&t.rt.storage, &key);
                let apply = req.content_type.starts_with("application/apply-patch");
                let new = match (verb, &old) {
                    ("update", Some(_)) => parse_body(req)?,
                    ("patch", Some(old)) => patch(req, old)?,
                    (_, None) if apply => {
                        let mut body = parse_yaml_or_json(req)?;
                        body["metadata"]["name"] = json!(name);
                        let obj = inner.create(
                            &t.rt,
                            &t.version,
                            t.namespace.as_deref(),
                            body,
                            &manager,
                            dry_run,
                        )?;
                        return Ok(Response {
                            status: 201,
                            retry_after: None,
                            body: Body::Json(present(&t.rt, &t.version, &obj, false)),
                        });
                    }
                    _ => return Err(ApiError::not_found(&t.rt.qualified(), &name)),
                };
                let old = old.expect("matched above");
                let status_only = t.sub.as_deref() == Some("status");
                let obj = inner.update(
                    &t.rt,
                    &t.version,
                    &key,
                    &old,
                    new,
                    status_only,
                    &manager,
                    dry_run,
                )?;
                Ok(Response::ok(present(&t.rt, &t.version, &obj, false)))
            }
            "delete" => {
                let key = store::key(
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or_default(),
                );
                // DeleteOptions' preconditions: only the object with this UID.
                let options: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                if let (Some(want), Some(o)) = (
                    options["preconditions"]["uid"].as_str(),
                    inner.store.get(&t.rt.storage, &key),
                ) {
                    let have = o["metadata"]["uid"].as_str().unwrap_or_default();
                    if want != have {
                        return Err(ApiError::conflict(
                            &t.rt.qualified(),
                            t.name.as_deref().unwrap_or_default(),
                            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have}"),
                        ));
                    }
                }
                let obj = inner.delete(&t.rt, &key, dry_run)?;
                Ok(Response::ok(present(&t.rt, &t.version, &obj, false)))
            }
            "deletecollection" => {
                let labels = LabelSelector::parse(&req.param("labelSelector").unwrap_or_default())
                    .map_err(ApiError::bad_request)?;
                let prefix = t.namespace.as_ref().map(|ns| format!("{ns}/"));
                let rev = inner.store.revision();
                let (all, _) = inner
                    .store
                    .list(&t.rt.storage, rev, prefix.as_deref(), None, 0, &|o| {
                        labels.matches(&o["metadata"]["labels"])
                    })
                    .map_err(read_error)?;
                for (key, _) in all {
                    inner.delete(&t.rt, &key, dry_run)?;
                }
                Ok(Response::ok(
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ))
            }
            _ => unreachable!("verbs are matched above"),
        }
    }
}

impl Default for State {
    fn default() -> State {
        State::new()
    }
}

fn parse_body(req: &Request) -> Result<Value, ApiError> {
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

fn parse_yaml_or_json(req: &Request) -> Result<Value, ApiError> {
    serde_yaml_ng::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the body is not YAML: {e}")))
}

/// A patch of `old`: JSON merge patch (strategic merge patches are treated as
/// merge patches), JSON patch, or an apply patch (merged, without field ownership).
fn patch(req: &Request, old: &Value) -> Result<Value, ApiError> {
    let mut out = old.clone();
    let ct = req.content_type.as_str();
    if ct.starts_with("application/json-patch+json") {
        let ops: Vec<Value> =
            serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        for op in ops {
            json_patch_op(&mut out, &op)?;
        }
    } else if ct.starts_with("application/merge-patch+json")
        || ct.starts_with("application/strategic-merge-patch+json")
    {
        merge(&mut out, &parse_body(req)?);
    } else if ct.starts_with("application/apply-patch") {
        merge(&mut out, &parse_yaml_or_json(req)?);
    } else {
        return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ct:?})")));
    }
    // The patch is applied to the stored object: its resourceVersion is current.
    Ok(out)
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// One operation of RFC 6902 (add, remove, replace, test).
fn json_patch_op(doc: &mut Value, op: &Value) -> Result<(), ApiError> {
    let path = op["path"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("a patch operation without a path"))?;
    let bad = |why: &str| {
        ApiError::new(
            422,
            "Invalid",
            format!("the patch cannot be applied at {path}: {why}"),
        )
    };
    let parts: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = parts.split_last().ok_or_else(|| bad("empty path"))?;
    let mut node = &mut *doc;
    for p in parents {
        node = match node {
            Value::Object(m) => m.get_mut(p).ok_or_else(|| bad("no such member"))?,
            Value::Array(a) => p
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(|| bad("no such index"))?,
            _ => return Err(bad("not a container")),
        };
    }
    match (op["op"].as_str(), node) {
        (Some("add" | "replace"), Value::Object(m)) => {
            m.insert(last.clone(), op["value"].clone());
        }
        (Some("add"), Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| bad("bad index"))?
            };
            if i > a.len() {
                return Err(bad("index out of range"));
            }
            a.insert(i, op["value"].clone());
        }
        (Some("replace"), Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| bad("bad index"))?;
            *a.get_mut(i).ok_or_else(|| bad("index out of range"))? = op["value"].clone();
        }
        (Some("remove"), Value::Object(m)) => {
            m.remove(last).ok_or_else(|| bad("no such member"))?;
        }
        (Some("remove"), Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| bad("bad index"))?;
            if i >= a.len() {
                return Err(bad("index out of range"));
            }
            a.remove(i);
        }
        (Some("test"), node) => {
            let v = match node {
                Value::Object(m) => m.get(last),
                Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            if v != Some(&op["value"]) {
                return Err(bad("test failed"));
            }
        }
        _ => return Err(bad("unsupported operation")),
    }
    Ok(())
}

/// The object as served in `version`. In lists, built-in objects come without
/// `apiVersion` and `kind`, as the real server sends them; custom objects keep them.
pub fn present(rt: &ResourceType, version: &str, obj: &Value, in_list: bool) -> Value {
    let mut o = obj.clone();
    let builtin = !rt.custom;
    if in_list && builtin {
        if let Some(m) = o.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
    } else {
        o["apiVersion"] = json!(rt.group_version(version));
        o["kind"] = json!(rt.kind);
    }
    o
}

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        ReadError::TooNew { requested, current } => {
            let mut e = ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            );
            e.details = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1});
            e
        }
    }
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

impl Inner {
    /// Creates an object without a request (the server's own objects).
    fn create_raw(
        &mut self,
        storage: &str,
        namespace: Option<&str>,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let rt = self
            .types
            .iter()
            .find(|t| t.storage == storage)
            .cloned()
            .expect("a built-in type");
        let version = rt.versions[0].clone();
        self.create(&rt, &version, namespace, obj, "kube-apiserver", false)
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        namespace: Option<&str>,
        body: Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut obj = objects::prepare_create(rt, version, namespace, body, manager)?;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(ns) = namespace {
            match self.store.get("namespaces.", ns) {
                None => return Err(ApiError::not_found("namespaces", ns)),
                Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                    return Err(ApiError::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", rt.qualified())));
                }
                _ => {}
            }
            self.check_quota(rt, ns, &name)?;
        }
        let key = store::key(namespace, &name);
        if self.store.get(&rt.storage, &key).is_some() {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified()),
            );
            e.details = json!({"name": name, "group": rt.group, "kind": rt.resource});
            return Err(e);
        }
        let owner = format!("{}/{key}", rt.storage);
        match rt.kind.as_str() {
            "Service" => {
                let mut scratch = Allocations::default();
                let alloc = if dry_run {
                    &mut scratch
                } else {
                    &mut self.alloc
                };
                objects::allocate_service(alloc, &owner, &mut obj, None)?;
            }
            "CustomResourceDefinition" => {
                let crd_type = resources::from_crd(&obj)
                    .map_err(|why| ApiError::invalid("CustomResourceDefinition", &name, why))?;
                if self
                    .types
                    .iter()
                    .any(|t| t.group == crd_type.group && t.resource == crd_type.resource)
                {
                    return Err(ApiError::invalid(
                        "CustomResourceDefinition",
                        &name,
                        "spec.names.plural: Invalid value: already served".into(),
                    ));
                }
                if dry_run {
                    objects::establish_crd(&mut obj);
                } else if self.delays.crd_establish.is_zero() {
                    objects::establish_crd(&mut obj);
                    self.types.push(crd_type);
                } else {
                    let delay = self.delays.crd_establish;
                    self.establish_later(&mut obj, crd_type, delay);
                }
            }
            _ => {}
        }
        if dry_run {
            return Ok(obj);
        }
        let (_, stored) = self.store.put(&rt.storage, &key, Some(obj));
        let stored = stored.expect("a write");
        if rt.kind == "Namespace" {
            for (storage, o) in objects::namespace_defaults(&name) {
                self.create_raw(storage, Some(&name), o)?;
            }
        }
        Ok((*stored).clone())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        version: &str,
        key: &str,
        old: &Value,
        new: Value,
        status_only: bool,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut obj = objects::prepare_update(rt, version, old, new, status_only, manager)?;
        if rt.kind == "Service" && !status_only {
            let owner = format!("{}/{key}", rt.storage);
            let mut scratch = Allocations::default();
            let alloc = if dry_run {
                &mut scratch
            } else {
                &mut self.alloc
            };
            objects::allocate_service(alloc, &owner, &mut obj, Some(old))?;
        }
        if rt.kind == "CustomResourceDefinition" && !status_only {
            let name = key.to_string();
            let t = resources::from_crd(&obj)
                .map_err(|why| ApiError::invalid("CustomResourceDefinition", &name, why))?;
            objects::establish_crd(&mut obj);
            if !dry_run {
                if let Some(slot) = self.types.iter_mut().find(|x| x.storage == t.storage) {
                    *slot = t;
                }
            }
        }
        if dry_run {
            return Ok(obj);
        }
        let (_, stored) = self.store.put(&rt.storage, key, Some(obj));
        Ok((*stored.expect("a write")).clone())
    }

    pub fn delete(
        &mut self,
        rt: &ResourceType,
        key: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let old = self.store.get(&rt.storage, key).ok_or_else(|| {
            ApiError::not_found(&rt.qualified(), key.rsplit('/').next().unwrap_or(key))
        })?;
        if dry_run {
            return Ok((*old).clone());
        }
        match rt.kind.as_str() {
            // Deleted at once with everything in it, or Terminating for a while
            // (`controllers.rs`).
            "Namespace" => {
                if self.delays.namespace_termination.is_zero() {
                    self.remove_namespace(key);
                    return Ok((*old).clone());
                }
                let delay = self.delays.namespace_termination;
                self.terminate_later(key, delay);
                let now = self.store.get(&rt.storage, key).expect("terminating");
                return Ok((*now).clone());
            }
            "CustomResourceDefinition" => {
                if let Ok(t) = resources::from_crd(&old) {
                    self.store.drop_storage(&t.storage);
                    self.types.retain(|x| x.storage != t.storage);
                }
            }
            "Service" => self.alloc.release(&format!("{}/{key}", rt.storage)),
            _ => {}
        }
        self.store.put(&rt.storage, key, None);
        if let Some(uid) = old["metadata"]["uid"].as_str() {
            self.collect_garbage(uid);
        }
        Ok((*old).clone())
    }

    fn list(
        &mut self,
        req: &Request,
        t: &Target,
        fault_cfg: &Mutex<Faults>,
    ) -> Result<Response, ApiError> {
        let labels = LabelSelector::parse(&req.param("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fields =
            FieldSelector::parse(&req.param("fieldSelector").unwrap_or_default(), &t.rt.kind)
                .map_err(ApiError::bad_request)?;
        let limit: usize = match req.param("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let (revision, after) = match req.param("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let c: Continue = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token.as_bytes())
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("continue key is not valid: illegal base64 data")
                    })?;
                if c.rv < self.store.compacted() {
                    let mut e = ApiError::gone(CONTINUE_EXPIRED);
                    e.details = Value::Null;
                    return Err(e);
                }
                (c.rv, Some(c.start))
            }
            None => match (
                req.param("resourceVersion").filter(|r| !r.is_empty()),
                req.param("resourceVersionMatch"),
            ) {
                (Some(rv), Some(m)) if m == "Exact" => (
                    rv.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?,
                    None,
                ),
                (_, Some(m)) if m != "NotOlderThan" => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported resourceVersionMatch {m:?}"
                    )))
                }
                _ => (self.store.revision(), None),
            },
        };
        let prefix = t.namespace.as_ref().map(|ns| format!("{ns}/"));
        let keep = |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
        let (page, more) = self
            .store
            .list(
                &t.rt.storage,
                revision,
                prefix.as_deref(),
                after.as_deref(),
                limit,
                &keep,
            )
            .map_err(read_error)?;
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if more {
            let last = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
            let token = serde_json::to_vec(&Continue {
                rv: revision,
                start: last,
            })
            .expect("a token");
            meta["continue"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
        }
        let head = json!({
            "kind": format!("{}List", t.rt.kind),
            "apiVersion": t.rt.group_version(&t.version),
            "metadata": meta,
        });
        let mut items: Vec<Value> = page
            .iter()
            .map(|(_, o)| present(&t.rt, &t.version, o, true))
            .collect();
        let reversed = fault_cfg
            .lock()
            .unwrap()
            .unordered
            .iter()
            .any(|r| faults::names(r, &t.rt.resource, &t.rt.group));
        if reversed {
            items.reverse();
        }
        // Faults that act on lists of this resource, each once.
        let named = |rule: &String| faults::names(rule, &t.rt.resource, &t.rt.group);
        let mut f = fault_cfg.lock().unwrap();
        let mut drop_after = None;
        if let Some(rule) = f.drop_list.keys().find(|r| named(r)).cloned() {
            let at = f.drop_list.get_mut(&rule).expect("just found");
            if at.pages == 0 {
                drop_after = Some(at.items);
                f.drop_list.remove(&rule);
            } else {
                at.pages -= 1;
            }
        }
        let mut compact = false;
        if let Some(rule) = f.compact_after_pages.keys().find(|r| named(r)).cloned() {
            let n = f.compact_after_pages.get_mut(&rule).expect("just found");
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.compact_after_pages.remove(&rule);
                compact = true;
            }
        }
        drop(f);
        if compact {
            self.compact_now();
        }
        Ok(Response {
            status: 200,
            retry_after: None,
            body: Body::List(ListBody {
                head,
                items,
                drop_after,
            }),
        })
    }

    /// Writes one object (a lease renewal, as a real cluster always has) and compacts
    /// the store to now.
    pub fn compact_now(&mut self) {
        let _ = self.create_raw(
            "leases.coordination.k8s.io",
            Some("kube-node-lease"),
            json!({"metadata": {"generateName": "compaction-"}, "spec": {}}),
        );
        let r = self.store.revision();
        self.store.compact(r);
    }
}

/// Presents a watch event.
pub fn event_json(kind: EventKind, rt: &ResourceType, version: &str, obj: &Value) -> Value {
    json!({"type": kind.name(), "object": present(rt, version, obj, false)})
}
