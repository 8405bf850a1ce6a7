//! What the server does to an object when it is written: names, metadata it owns,
//! status kept apart, Service addresses allocated, namespaces' default contents, CRDs
//! established. Called by the verbs in `api.rs` with the state locked.

use std::collections::{BTreeSet, HashMap};

use rand::Rng;
use serde_json::{json, Map, Value};

use super::api::ApiError;
use super::resources::ResourceType;

/// Cluster IPs and node ports in use, by the Service that holds them.
#[derive(Debug, Default)]
pub struct Allocations {
    next_ip: u32,
    ips: HashMap<String, String>,
    node_ports: HashMap<u16, String>,
}

const SERVICE_CIDR_BASE: u32 = (10 << 24) | (96 << 16);
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

impl Allocations {
    fn ip(&mut self, owner: &str, wanted: Option<&str>) -> Result<String, ApiError> {
        if let Some(ip) = wanted {
            if let Some(holder) = self.ips.get(ip).filter(|h| *h != owner) {
                return Err(ApiError::invalid(
                    "Service",
                    owner,
                    format!("spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated (to {holder})"),
                ));
            }
            self.ips.insert(ip.to_string(), owner.to_string());
            return Ok(ip.to_string());
        }
        loop {
            self.next_ip += 1;
            let n = SERVICE_CIDR_BASE + 9 + self.next_ip;
            let ip = format!(
                "{}.{}.{}.{}",
                n >> 24,
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            );
            if !self.ips.contains_key(&ip) {
                self.ips.insert(ip.clone(), owner.to_string());
                return Ok(ip);
            }
        }
    }

    fn node_port(&mut self, owner: &str, wanted: Option<u16>) -> Result<u16, ApiError> {
        if let Some(p) = wanted {
            if !NODE_PORTS.contains(&p) {
                return Err(ApiError::invalid(
                    "Service",
                    owner,
                    format!("spec.ports[0].nodePort: Invalid value: {p}: provided port is not in the valid range. The range of valid ports is 30000-32767"),
                ));
            }
            if self.node_ports.get(&p).is_some_and(|h| h != owner) {
                return Err(ApiError::invalid(
                    "Service",
                    owner,
                    format!("spec.ports[0].nodePort: Invalid value: {p}: provided port is already allocated"),
                ));
            }
            self.node_ports.insert(p, owner.to_string());
            return Ok(p);
        }
        let mut rng = rand::thread_rng();
        loop {
            let p = rng.gen_range(NODE_PORTS);
            if !self.node_ports.contains_key(&p) {
                self.node_ports.insert(p, owner.to_string());
                return Ok(p);
            }
        }
    }

    /// Releases what `owner` holds.
    pub fn release(&mut self, owner: &str) {
        self.ips.retain(|_, h| h != owner);
        self.node_ports.retain(|_, h| h != owner);
    }
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("rounding a timestamp")
        .to_string()
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A DNS subdomain (most names) or label (namespaces, Services).
pub fn check_name(kind: &str, name: &str, label: bool) -> Result<(), ApiError> {
    let max = if label { 63 } else { 253 };
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (!label && b == b'.')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            kind,
            name,
            format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 {} must consist of lower case alphanumeric characters{}, and must start and end with an alphanumeric character", if label { "label" } else { "subdomain" }, if label { " or '-'" } else { ", '-' or '.'" }),
        ))
    }
}

fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Who wrote: `fieldManager`, or the user agent up to its first `/`.
pub fn manager(field_manager: Option<&str>, user_agent: &str) -> String {
    field_manager.map(str::to_string).unwrap_or_else(|| {
        user_agent
            .split('/')
            .next()
            .unwrap_or("unknown")
            .to_string()
    })
}

fn managed_entry(manager: &str, operation: &str, api_version: &str) -> Value {
    json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {}},
    })
}

/// The object's body with what it says of itself checked against the request.
pub fn check_type(rt: &ResourceType, version: &str, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    let gv = rt.group_version(version);
    if let Some(k) = obj["kind"].as_str() {
        if k != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match the resource ({})",
                rt.kind
            )));
        }
    }
    if let Some(v) = obj["apiVersion"].as_str() {
        if v != gv {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({gv})"
            )));
        }
    }
    Ok(())
}

/// Fills in a new object's name and the metadata the server owns. `namespace_exists`
/// says whether a namespace may receive objects.
pub fn prepare_create(
    rt: &ResourceType,
    version: &str,
    namespace: Option<&str>,
    mut obj: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    check_type(rt, version, &obj)?;
    let gv = rt.group_version(version);
    obj["apiVersion"] = json!(gv);
    obj["kind"] = json!(rt.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().expect("an object");
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => generated_name(prefix),
        _ => {
            return Err(ApiError::invalid(
                &rt.kind,
                "",
                "metadata.name: Required value: name or generateName is required".into(),
            ))
        }
    };
    check_name(
        &rt.kind,
        &name,
        rt.kind == "Namespace" || rt.kind == "Service",
    )?;
    meta.insert("name".into(), json!(name));
    match (namespace, meta.get("namespace").and_then(Value::as_str)) {
        (Some(url), Some(body)) if !body.is_empty() && body != url => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        (Some(url), _) => {
            meta.insert("namespace".into(), json!(url));
        }
        (None, _) => {
            meta.remove("namespace");
        }
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    // The creator owns every field it set, whatever managedFields the request
    // carried (as the real server's field manager decides on a create).
    meta.insert(
        "managedFields".into(),
        json!([managed_entry(manager, "Update", &gv)]),
    );
    for owned in [
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(owned);
    }
    if rt.status {
        obj.as_object_mut().expect("an object").remove("status");
    }
    match rt.kind.as_str() {
        "Namespace" => {
            // Set on every namespace since Kubernetes 1.21.
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
            obj["status"] = json!({"phase": "Active"});
        }
        "Pod" => obj["status"] = json!({"phase": "Pending"}),
        "PersistentVolumeClaim" => obj["status"] = json!({"phase": "Pending"}),
        "PersistentVolume" => obj["status"] = json!({"phase": "Available"}),
        _ => {}
    }
    Ok(obj)
}

/// The Service's addresses: a cluster IP unless headless or ExternalName, and node
/// ports for NodePort and LoadBalancer Services. `old` is the stored Service on an
/// update (its cluster IP cannot change).
pub fn allocate_service(
    alloc: &mut Allocations,
    owner: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let spec = &mut obj["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    spec["type"] = json!(kind);
    if kind != "ExternalName" {
        let wanted = spec["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_string);
        if let (Some(w), Some(o)) = (&wanted, &old_ip) {
            if w != o {
                return Err(ApiError::invalid(
                    "Service",
                    owner,
                    format!("spec.clusterIPs[0]: Invalid value: []string{{\"{w}\"}}: may not change once set"),
                ));
            }
        }
        let ip = match wanted.or(old_ip) {
            Some(ip) if ip == "None" => ip,
            w => alloc.ip(owner, w.as_deref())?,
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        if let Some(ports) = spec["ports"].as_array_mut() {
            for p in ports {
                let wanted = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok());
                p["nodePort"] = json!(alloc.node_port(owner, wanted)?);
            }
        }
    }
    obj["status"] = json!({"loadBalancer": {}});
    Ok(())
}

/// The stored object after an update (`PUT` or a patch) of `old` with `new`.
/// `status_only` is an update of the status subresource.
pub fn prepare_update(
    rt: &ResourceType,
    version: &str,
    old: &Value,
    mut new: Value,
    status_only: bool,
    manager: &str,
) -> Result<Value, ApiError> {
    check_type(rt, version, &new)?;
    let name = old["metadata"]["name"].as_str().unwrap_or_default();
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && rv != old_rv => {
            return Err(ApiError::conflict(
                &rt.qualified(),
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ))
        }
        _ => {}
    }
    if status_only {
        let mut out = old.clone();
        out["status"] = new["status"].take();
        return Ok(out);
    }
    if let (Some(true), Some(field)) = (
        old["immutable"].as_bool(),
        ["data", "binaryData", "stringData"]
            .into_iter()
            .find(|f| old[*f] != new[*f] && !(new[*f].is_null() && old[*f].is_null())),
    ) {
        return Err(ApiError::invalid(
            &rt.kind,
            name,
            format!("{field}: Forbidden: field is immutable when `immutable` is set"),
        ));
    }
    if matches!(
        rt.kind.as_str(),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
    ) && old["spec"]["selector"] != new["spec"]["selector"]
    {
        return Err(ApiError::invalid(
            &format!("{}.{}", rt.kind, rt.group),
            name,
            format!(
                "spec.selector: Invalid value: {}: field is immutable",
                new["spec"]["selector"]
            ),
        ));
    }
    new["apiVersion"] = json!(rt.group_version(version));
    new["kind"] = json!(rt.kind);
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    // What the server owns stays as it was.
    for owned in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
    ] {
        match old["metadata"].get(owned) {
            Some(v) => new["metadata"][owned] = v.clone(),
            None => {
                new["metadata"]
                    .as_object_mut()
                    .expect("an object")
                    .remove(owned);
            }
        }
    }
    if rt.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().expect("an object").remove("status");
            }
        }
    }
    let spec_changed = {
        let strip = |v: &Value| -> Map<String, Value> {
            let mut m = v.as_object().cloned().unwrap_or_default();
            m.remove("metadata");
            m.remove("status");
            m
        };
        strip(old) != strip(&new)
    };
    if spec_changed {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    // managedFields that the request sets are taken as they are (how a client
    // gives fields back to their managers); otherwise the request's manager joins.
    let asked = &new["metadata"]["managedFields"];
    let explicit = asked.as_array().is_some_and(|a| !a.is_empty())
        && *asked != old["metadata"]["managedFields"]
        && !spec_changed;
    if !explicit {
        let mut managers = old["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !managers.iter().any(|m| m["manager"] == manager) {
            managers.push(managed_entry(manager, "Update", &rt.group_version(version)));
        }
        new["metadata"]["managedFields"] = json!(managers);
    }
    Ok(new)
}

/// A CRD's status once it is served: names accepted, established.
pub fn establish_crd(obj: &mut Value) {
    let now = now();
    let names = obj["spec"]["names"].clone();
    let stored: BTreeSet<String> = obj["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    obj["status"] = json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}

/// What a controller puts into every new namespace: the `default` ServiceAccount
/// and the `kube-root-ca.crt` ConfigMap.
pub fn namespace_defaults(namespace: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "serviceaccounts.",
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": namespace}}),
        ),
        (
            "configmaps.",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": namespace,
                                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                   "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"}}),
        ),
    ]
}
