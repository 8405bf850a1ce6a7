//! Sending one prepared object to the target: its ownerReferences pointed at the
//! new owners, created, and when it exists already, the `--existing` policy
//! (skip, update, recreate). A refused change is reported as failed with the
//! server's message, never as done. In a dry run every write carries
//! `dryRun=All`, and an existing object's outcome comes with the fields the
//! restore would change (Secret values redacted).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::diff::{self, FieldChange};
use super::super::layout::ObjectRef;
use super::super::KubeError;
use super::prepare::{Prepared, BACKUP_LABEL, RESTORE_LABEL};
use super::report::{ObjectOutcome, Outcome};
use super::target::{Target, Waited};

/// What to do with an object that exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Existing {
    /// Leave it as it is, and report it.
    Skip,
    /// Replace it with the backed-up object (a refused change fails).
    Update,
    /// Delete it and create the backed-up object.
    Recreate,
}

/// `--existing`: a policy for all, and per resource.
#[derive(Debug, Clone)]
pub struct ExistingPolicy {
    pub default: Existing,
    /// `(group, resource)` to its policy.
    pub by_resource: BTreeMap<(String, String), Existing>,
}

impl Default for ExistingPolicy {
    fn default() -> ExistingPolicy {
        ExistingPolicy {
            default: Existing::Skip,
            by_resource: BTreeMap::new(),
        }
    }
}

impl ExistingPolicy {
    pub fn of(&self, at: &ObjectRef) -> Existing {
        self.by_resource
            .get(&(at.group.clone(), at.resource.clone()))
            .copied()
            .unwrap_or(self.default)
    }
}

/// What every send shares.
pub struct Sender<'a> {
    pub target: &'a Target,
    pub dry_run: bool,
    pub existing: &'a ExistingPolicy,
    pub wait_timeout: Duration,
    pub backup_id: String,
    pub restore_id: String,
    /// Backed-up UIDs to the UIDs of the objects in the target.
    pub uids: Mutex<HashMap<String, String>>,
    /// Set when the API server went away: nothing more is sent.
    pub stopped: AtomicBool,
    pub stop_reason: Mutex<Option<String>>,
}

/// One object to send.
pub struct Outgoing<'a> {
    pub at: &'a ObjectRef,
    pub kind: &'a str,
    /// Its UID in the backed-up cluster.
    pub uid: Option<&'a str>,
    pub prepared: Prepared,
    pub level: usize,
}

/// The URL path of a resource's objects in `namespace` (or cluster-scoped).
pub fn collection(at: &ObjectRef, namespace: Option<&str>) -> String {
    let base = if at.group.is_empty() {
        format!("/api/{}", at.version)
    } else {
        format!("/apis/{}/{}", at.group, at.version)
    };
    match namespace {
        Some(ns) => format!("{base}/namespaces/{ns}/{}", at.resource),
        None => format!("{base}/{}", at.resource),
    }
}

/// The one manager of a backed-up object's fields, when a single `Update` wrote
/// them all (a Secret from Helm, a ConfigMap from `kubectl create`, an object a
/// controller made): creating the object under that manager's name gives it back
/// every field, and no managedFields patch needs to follow. That manager then also
/// owns the two restore labels, which nothing else writes.
fn sole_manager(body: &Value) -> Option<&str> {
    match body["metadata"]["managedFields"].as_array()?.as_slice() {
        [only] if only["operation"] == "Update" && only["subresource"].is_null() => {
            only["manager"].as_str().filter(|m| !m.is_empty())
        }
        _ => None,
    }
}

impl Sender<'_> {
    fn dry(&self) -> &'static str {
        if self.dry_run {
            "?dryRun=All"
        } else {
            ""
        }
    }

    fn stop(&self, why: String) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop_reason.lock().unwrap().get_or_insert(why);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn record_uid(&self, old: Option<&str>, live: &Value) {
        if let (Some(old), Some(new)) = (old, live["metadata"]["uid"].as_str()) {
            self.uids
                .lock()
                .unwrap()
                .insert(old.to_string(), new.to_string());
        }
    }

    /// Points ownerReferences at the owners' UIDs in the target: an owner this
    /// restore created or found, or one the target holds by the reference's kind
    /// and name. A reference to an owner the target does not hold is dropped and
    /// noted: the garbage collector deletes an object all of whose owners are gone.
    /// In a dry run nothing was created, so references to owners not found are
    /// left as they are.
    async fn owners(&self, body: &mut Value, namespace: Option<&str>, notes: &mut Vec<String>) {
        let Some(refs) = body["metadata"]["ownerReferences"].as_array().cloned() else {
            return;
        };
        let mut kept = Vec::new();
        for mut r in refs {
            let old = r["uid"].as_str().unwrap_or_default().to_string();
            let known = self.uids.lock().unwrap().get(&old).cloned();
            let found = match known {
                Some(new) => Some(new),
                None => self.owner_in_target(&r, namespace).await,
            };
            match found {
                Some(new) => {
                    r["uid"] = Value::String(new);
                    kept.push(r);
                }
                None if self.dry_run => kept.push(r),
                None => notes.push(format!(
                    "its owner {} {} is not in the target: the ownerReference was dropped (the garbage collector would delete it otherwise)",
                    r["kind"].as_str().unwrap_or("?"),
                    r["name"].as_str().unwrap_or("?")
                )),
            }
        }
        match body["metadata"].as_object_mut() {
            Some(m) if kept.is_empty() => {
                m.remove("ownerReferences");
            }
            Some(m) => {
                m.insert("ownerReferences".into(), Value::Array(kept));
            }
            None => {}
        }
    }

    /// The UID of the object an ownerReference names, if the target holds that
    /// same object (an owner is in the dependent's namespace, or cluster-scoped):
    /// its UID is the backed-up one (the same cluster) or this backup restored it
    /// before. A same-named object that is another, or one being deleted, is not
    /// an owner to give a dependent: the garbage collector would delete the
    /// dependent with it.
    async fn owner_in_target(&self, r: &Value, namespace: Option<&str>) -> Option<String> {
        let (api_version, kind, name) = (
            r["apiVersion"].as_str()?,
            r["kind"].as_str()?,
            r["name"].as_str()?,
        );
        let res = self.target.resource_of(api_version, kind)?;
        let ns = if res.namespaced { namespace } else { None };
        let path = format!("{}/{name}", res.path(ns));
        let live = self
            .target
            .get(&path, &format!("the owner {kind} {name}"))
            .await
            .ok()??;
        if !self.same_object(r["uid"].as_str(), &live) {
            return None;
        }
        live["metadata"]["uid"].as_str().map(str::to_string)
    }

    /// Whether a live object is the backed-up one with UID `uid`: the same UID, or
    /// restored from this backup; and not being deleted.
    fn same_object(&self, uid: Option<&str>, live: &Value) -> bool {
        let m = &live["metadata"];
        !m["deletionTimestamp"].is_string()
            && (uid.is_some() && m["uid"].as_str() == uid
                || m["labels"][BACKUP_LABEL].as_str() == Some(self.backup_id.as_str()))
    }

    /// Sends one object and says what became of it.
    pub async fn send(&self, o: Outgoing<'_>) -> ObjectOutcome {
        let start = Instant::now();
        let Outgoing {
            at,
            kind,
            uid,
            prepared,
            level,
        } = o;
        let Prepared {
            namespace,
            name,
            mut body,
            mut notes,
        } = prepared;
        let mut out = ObjectOutcome {
            resource: at.qualified_resource(),
            kind: kind.to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            outcome: Outcome::NotAttempted,
            reason: None,
            notes: Vec::new(),
            changes: Vec::new(),
            level,
            ms: 0.0,
        };
        if self.is_stopped() {
            out.reason = Some("the restore stopped before this object".into());
            return out;
        }
        self.owners(&mut body, namespace.as_deref(), &mut notes)
            .await;
        let what = format!(
            "restoring {kind} {}",
            super::scope::shown(namespace.as_deref(), &name)
        );
        let coll = collection(at, namespace.as_deref());
        let path = format!("{coll}/{name}");
        let (outcome, reason, changes) = match self.create(&coll, &path, &body, &what).await {
            Ok(created) => {
                self.record_uid(uid, &created);
                (Outcome::Created, None, Vec::new())
            }
            Err(KubeError::Api {
                code: 409, reason, ..
            }) if reason == "AlreadyExists" => {
                match self.exists(at, uid, &path, &coll, body, &what).await {
                    Ok(r) => r,
                    Err(e) => self.failed(at, e),
                }
            }
            // Admission (a quota) answers before the store would say AlreadyExists:
            // an object that is there already, in a namespace that is not being
            // deleted, goes by the --existing policy.
            Err(e @ KubeError::Api { code: 403, .. }) => {
                if self.there_to_stay(&path, namespace.as_deref(), &what).await {
                    match self.exists(at, uid, &path, &coll, body, &what).await {
                        Ok(r) => r,
                        Err(e) => self.failed(at, e),
                    }
                } else {
                    self.failed(at, e)
                }
            }
            Err(e) => self.failed(at, e),
        };
        out.outcome = outcome;
        out.reason = reason;
        out.changes = changes;
        out.notes = notes;
        out.ms = start.elapsed().as_secs_f64() * 1000.0;
        out
    }

    /// Whether the object at `path` exists, in a namespace that is not terminating.
    async fn there_to_stay(&self, path: &str, namespace: Option<&str>, what: &str) -> bool {
        if !matches!(self.target.get(path, what).await, Ok(Some(_))) {
            return false;
        }
        let Some(ns) = namespace else { return true };
        match self
            .target
            .get(&format!("/api/v1/namespaces/{ns}"), what)
            .await
        {
            Ok(Some(n)) => !n["metadata"]["deletionTimestamp"].is_string(),
            _ => false,
        }
    }

    /// Whether the live object carries this restore's label.
    async fn made_by_us(&self, path: &str, what: &str) -> bool {
        matches!(self.target.get(path, what).await, Ok(Some(live))
            if live["metadata"]["labels"][RESTORE_LABEL].as_str() == Some(self.restore_id.as_str()))
    }

    /// Gives the fields back to the managers that owned them. A create or an update
    /// makes its own manager the owner of every field it sets; a patch of
    /// `managedFields` alone sets them as they were. Best effort: a refusal leaves
    /// the object restored, with ballast as its fields' manager, and is logged.
    async fn restore_managers(&self, path: &str, body: &Value, what: &str) {
        let managers = &body["metadata"]["managedFields"];
        if !managers.as_array().is_some_and(|m| !m.is_empty()) {
            return;
        }
        let patch = serde_json::json!({"metadata": {"managedFields": managers}});
        if let Err(e) = self
            .target
            .cluster
            .send_json(
                http::Method::PATCH,
                path,
                Some(("application/merge-patch+json", &patch)),
                what,
            )
            .await
        {
            let why = match e {
                KubeError::Api { code, reason, .. } => format!("{code} {reason}"),
                other => other.to_string(),
            };
            tracing::warn!("{what}: its field managers were not restored ({why})");
        }
    }

    /// Creates the object with its fields' managers as they were: under the name of
    /// its one manager when it has one ([`sole_manager`]), else followed by a
    /// managedFields patch.
    async fn create(
        &self,
        coll: &str,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<Value, KubeError> {
        let sole = sole_manager(body);
        // The dry run sends the manager too: a name the server refuses is found then.
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if self.dry_run {
            query.append_pair("dryRun", "All");
        }
        if let Some(m) = sole {
            query.append_pair("fieldManager", m);
        }
        let query = match query.finish() {
            q if q.is_empty() => q,
            q => format!("?{q}"),
        };
        let created = self
            .target
            .cluster
            .send_json(
                http::Method::POST,
                &format!("{coll}{query}"),
                Some(("application/json", body)),
                what,
            )
            .await?;
        if !self.dry_run && sole.is_none() {
            self.restore_managers(path, body, what).await;
        }
        Ok(created)
    }

    /// An error's outcome: the server's refusal, or the restore stops when the
    /// API server went away.
    fn failed(&self, at: &ObjectRef, e: KubeError) -> (Outcome, Option<String>, Vec<FieldChange>) {
        match &e {
            KubeError::Transport { .. } | KubeError::Unreachable { .. } => {
                self.stop(e.to_string());
                (Outcome::Failed, Some(e.to_string()), Vec::new())
            }
            KubeError::Api {
                code,
                reason,
                message,
                ..
            } => (
                Outcome::Failed,
                Some(format!(
                    "the API server refused it ({code} {reason}): {}",
                    shown_message(at, message)
                )),
                Vec::new(),
            ),
            _ => (Outcome::Failed, Some(e.to_string()), Vec::new()),
        }
    }

    /// The object exists in the target: the policy decides.
    async fn exists(
        &self,
        at: &ObjectRef,
        uid: Option<&str>,
        path: &str,
        coll: &str,
        mut body: Value,
        what: &str,
    ) -> Result<(Outcome, Option<String>, Vec<FieldChange>), KubeError> {
        let Some(live) = self.target.get(path, what).await? else {
            // Gone between the create and the get: create once more.
            let created = self.create(coll, path, &body, what).await?;
            self.record_uid(uid, &created);
            return Ok((Outcome::Created, None, Vec::new()));
        };
        let labels = &live["metadata"]["labels"];
        if live["metadata"]["deletionTimestamp"].is_string() {
            return Ok((
                Outcome::Failed,
                Some("exists in the target and is being deleted: run the restore again once it is gone".into()),
                Vec::new(),
            ));
        }
        if !self.dry_run && labels[RESTORE_LABEL].as_str() == Some(self.restore_id.as_str()) {
            // This restore made it: a create sent again after a broken connection.
            self.record_uid(uid, &live);
            if sole_manager(&body).is_none() {
                self.restore_managers(path, &body, what).await;
            }
            return Ok((Outcome::Created, None, Vec::new()));
        }
        let rv = live["metadata"]["resourceVersion"].clone();
        body["metadata"]["resourceVersion"] = rv;
        let is_namespace = at.group.is_empty() && at.resource == "namespaces";
        let is_crd =
            at.group == "apiextensions.k8s.io" && at.resource == "customresourcedefinitions";
        let mut policy = self.existing.of(at);
        if policy == Existing::Recreate && (is_namespace || is_crd) {
            // Deleting a namespace or a CRD deletes everything in it or of it.
            policy = Existing::Skip;
        }
        match policy {
            Existing::Skip => {
                // A same-named object that is another keeps no dependents of ours.
                if self.same_object(uid, &live) {
                    self.record_uid(uid, &live);
                }
                let changes = if self.dry_run {
                    self.would_change(at, path, &live, &body, what)
                        .await
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                if is_namespace {
                    return Ok((
                        Outcome::Unchanged,
                        Some("the namespace exists: its objects are restored into it".into()),
                        changes,
                    ));
                }
                if is_crd && self.existing.of(at) == Existing::Recreate {
                    return Ok((
                        Outcome::Skipped,
                        Some("exists in the target: left as it is (recreate never deletes a CustomResourceDefinition, which would delete every object of it)".into()),
                        changes,
                    ));
                }
                if labels[BACKUP_LABEL].as_str() == Some(self.backup_id.as_str()) {
                    return Ok((
                        Outcome::Unchanged,
                        Some("exists, restored from this backup before: left as it is".into()),
                        changes,
                    ));
                }
                Ok((
                    Outcome::Skipped,
                    Some("exists in the target: left as it is (--existing skip)".into()),
                    changes,
                ))
            }
            Existing::Update => {
                match self
                    .target
                    .cluster
                    .send_json(
                        http::Method::PUT,
                        &format!("{path}{}", self.dry()),
                        Some(("application/json", &body)),
                        what,
                    )
                    .await
                {
                    Ok(updated) => {
                        self.record_uid(uid, &updated);
                        if !self.dry_run {
                            self.restore_managers(path, &body, what).await;
                        }
                        let changes = if self.dry_run {
                            changes(at, &live, &updated)
                        } else {
                            Vec::new()
                        };
                        Ok((Outcome::Updated, None, changes))
                    }
                    Err(KubeError::Api { code: 409, .. })
                        if !self.dry_run && self.made_by_us(path, what).await =>
                    {
                        // A PUT sent again after a broken connection: the first went in.
                        self.restore_managers(path, &body, what).await;
                        Ok((Outcome::Updated, None, Vec::new()))
                    }
                    Err(KubeError::Api {
                        code,
                        reason,
                        message,
                        ..
                    }) => Ok((
                        Outcome::Failed,
                        Some(format!(
                            "exists, and the API server refused the update ({code} {reason}): {}; --existing recreate deletes and creates it",
                            shown_message(at, &message)
                        )),
                        Vec::new(),
                    )),
                    Err(e) => Err(e),
                }
            }
            Existing::Recreate => {
                if self.dry_run {
                    let changes = self
                        .would_change(at, path, &live, &body, what)
                        .await
                        .unwrap_or_default();
                    return Ok((
                        Outcome::Recreated,
                        Some("exists: would be deleted and created".into()),
                        changes,
                    ));
                }
                // Only the object looked at: a DELETE sent again after a broken
                // connection must not delete one that was made since.
                let options = serde_json::json!({"apiVersion": "v1", "kind": "DeleteOptions",
                    "preconditions": {"uid": live["metadata"]["uid"]}});
                match self
                    .target
                    .cluster
                    .send_json(
                        http::Method::DELETE,
                        path,
                        Some(("application/json", &options)),
                        what,
                    )
                    .await
                {
                    // Gone already: a DELETE sent again after a broken connection.
                    Ok(_) | Err(KubeError::Api { code: 404, .. }) => {}
                    Err(e) => return Err(e),
                }
                if let Waited::TimedOut(why) = self.target.gone(path, what, self.wait_timeout).await
                {
                    return Ok((
                        Outcome::Failed,
                        Some(format!(
                            "deleted to be recreated, but {why}: run the restore again once it is gone"
                        )),
                        Vec::new(),
                    ));
                }
                body["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("resourceVersion"));
                match self.create(coll, path, &body, what).await {
                    Ok(created) => {
                        self.record_uid(uid, &created);
                        Ok((Outcome::Recreated, None, Vec::new()))
                    }
                    Err(e) => {
                        let (_, why, _) = self.failed(at, e);
                        Ok((
                            Outcome::Failed,
                            Some(format!(
                                "DELETED from the target to be recreated, and then not created: {}; restore it again",
                                why.unwrap_or_default()
                            )),
                            Vec::new(),
                        ))
                    }
                }
            }
        }
    }

    /// What an update would change (a dry-run PUT); a refusal is one change that
    /// says so.
    async fn would_change(
        &self,
        at: &ObjectRef,
        path: &str,
        live: &Value,
        body: &Value,
        what: &str,
    ) -> Result<Vec<FieldChange>, KubeError> {
        match self
            .target
            .cluster
            .send_json(
                http::Method::PUT,
                &format!("{path}?dryRun=All"),
                Some(("application/json", body)),
                what,
            )
            .await
        {
            Ok(after) => Ok(changes(at, live, &after)),
            Err(KubeError::Api {
                code,
                reason,
                message,
                ..
            }) => Ok(vec![FieldChange {
                path: "(update refused)".into(),
                before: None,
                after: Some(Value::String(format!(
                    "{code} {reason}: {}",
                    shown_message(at, &message)
                ))),
            }]),
            Err(e) => Err(e),
        }
    }
}

/// A server's message about an object, as a report may show it. A message about
/// a Secret is not shown: validation and webhooks may quote its values.
pub fn shown_message(at: &ObjectRef, message: &str) -> String {
    let secret = at.group.is_empty() && at.resource == "secrets";
    if secret {
        "the server's message about a Secret is not shown, as it may quote a value; the API server's log has it".into()
    } else {
        message.to_string()
    }
}

/// The fields that differ between the live object and what the restore would make
/// of it, leaving out what the server owns and the restore's own labels. Secret
/// values never appear: their changes say only that they differ.
pub fn changes(at: &ObjectRef, live: &Value, after: &Value) -> Vec<FieldChange> {
    let norm = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            for k in [
                "resourceVersion",
                "managedFields",
                "generation",
                "creationTimestamp",
                "uid",
            ] {
                m.remove(k);
            }
            if let Some(l) = m.get_mut("labels").and_then(Value::as_object_mut) {
                l.remove(BACKUP_LABEL);
                l.remove(RESTORE_LABEL);
            }
            if m.get("labels")
                .and_then(Value::as_object)
                .is_some_and(|l| l.is_empty())
            {
                m.remove("labels");
            }
        }
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
        }
        v
    };
    let mut out = diff::fields(&norm(live), &norm(after));
    // A Secret's values are in its data, and may be anywhere else too (kubectl's
    // last-applied-configuration annotation holds them all): only what cannot
    // hold one is shown.
    let secret = (at.group.is_empty() && at.resource == "secrets") || live["kind"] == "Secret";
    if secret {
        for c in &mut out {
            let shown = c.path.starts_with("metadata.labels")
                || matches!(c.path.as_str(), "type" | "immutable");
            if !shown {
                let hide = |v: &mut Option<Value>| {
                    if v.is_some() {
                        *v = Some(Value::String("(a Secret value, not shown)".into()));
                    }
                };
                hide(&mut c.before);
                hide(&mut c.after);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_values_never_reach_a_change() {
        let live = json!({"kind": "Secret", "metadata": {"name": "db", "resourceVersion": "5",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"b2xk\"}}"}},
            "data": {"password": "b2xk", "user": "YQ=="}});
        let after = json!({"kind": "Secret", "metadata": {"name": "db", "resourceVersion": "6",
            "labels": {BACKUP_LABEL: "x"}}, "data": {"password": "bmV3", "token": "dA=="}});
        let at = ObjectRef::test("", "secrets", Some("shop"), "db");
        let c = changes(&at, &live, &after);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(c.len(), 4, "{text}");
        for secret in ["b2xk", "bmV3", "dA==", "YQ=="] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            c.iter().any(|c| c.path.starts_with("metadata.annotations")),
            "{text}"
        );
        // A ConfigMap's values are shown.
        let cm = ObjectRef::test("", "configmaps", Some("shop"), "c");
        let c = changes(
            &cm,
            &json!({"kind": "ConfigMap", "data": {"a": "1"}}),
            &json!({"kind": "ConfigMap", "data": {"a": "2"}}),
        );
        assert_eq!(c[0].after, Some(json!("2")));
    }

    #[test]
    fn per_resource_policies_override_the_default() {
        let mut p = ExistingPolicy::default();
        p.by_resource
            .insert((String::new(), "configmaps".into()), Existing::Update);
        assert_eq!(
            p.of(&ObjectRef::test("", "configmaps", Some("a"), "b")),
            Existing::Update
        );
        assert_eq!(
            p.of(&ObjectRef::test("", "secrets", Some("a"), "b")),
            Existing::Skip
        );
    }
}
