//! `ballast restore kube` against the test API server (a second one is the target
//! cluster): the order derived from the objects, owners pointed at their new
//! UIDs, the pre-flight, the `--existing` policies, mappings, and the faults of
//! issue 11 (a CRD slow to be Established, a namespace stuck Terminating, a quota,
//! an immutable field, a version the target does not serve, the API server going
//! away, a snapshot that is no Kubernetes backup, two clusters in one repository).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ballast_tests::apiserver::admission::Backend;
use ballast_tests::apiserver::TestApiServer;
use ballast_tests::kube::{configmap, crd, owned_by, KubeEnv};
use ballast_tests::Out;

/// A source cluster with a backup, and a target cluster to restore into.
struct Restore {
    k: KubeEnv,
    target: TestApiServer,
    target_config: PathBuf,
}

impl Restore {
    fn new() -> Restore {
        let k = KubeEnv::new();
        let target = TestApiServer::start();
        let target_config = target.kubeconfig(k.env.dir.path(), "target", None);
        Restore {
            k,
            target,
            target_config,
        }
    }

    fn source(&self) -> &TestApiServer {
        &self.k.server
    }

    /// `ballast restore kube ARGS --kubeconfig TARGET --json`.
    fn restore(&self, args: &[&str]) -> Out {
        let kc = self.target_config.display().to_string();
        let mut a = vec!["restore", "kube"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--kubeconfig", kc.as_str(), "--json"]);
        self.k.env.run(&a)
    }

    fn get(&self, path: &str) -> Option<Value> {
        let (code, v) = self.target.call("GET", path, None);
        match code {
            200 => Some(v),
            404 => None,
            _ => panic!("GET {path}: {code} {v}"),
        }
    }
}

/// The outcome of one object in a report.
fn outcome<'a>(report: &'a Value, kind: &str, name: &str) -> &'a Value {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == kind && o["name"] == name)
        .unwrap_or_else(|| panic!("no outcome for {kind} {name} in {report:#}"))
}

/// A namespace with a custom resource that owns a ConfigMap, a Deployment with the
/// ReplicaSet and Pod its controllers made, a Service, a Secret and a token.
fn seed_shop(s: &TestApiServer) {
    s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "example.com", "Widget"),
    );
    s.namespace("shop");
    let w = s.create(
        "/apis/example.com/v1/namespaces/shop/widgets",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}),
    );
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "w1-config", "ownerReferences": owned_by(&w, "Widget")},
               "data": {"k": "v"}}),
    );
    // A GitOps controller manages it (managers are set by a patch of
    // managedFields alone, as a create makes its requester the manager).
    let (code, _) = s.call(
        "PATCH",
        "/api/v1/namespaces/shop/configmaps/w1-config",
        Some(&json!({"metadata": {"managedFields": [
            {"manager": "argocd-controller", "operation": "Apply", "apiVersion": "v1"}]}})),
    );
    assert_eq!(code, 200);
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        configmap("settings", "debug=false"),
    );
    s.create(
        "/api/v1/namespaces/shop/secrets",
        json!({"metadata": {"name": "db"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
    );
    s.create(
        "/api/v1/namespaces/shop/secrets",
        json!({"metadata": {"name": "app-token", "annotations": {"kubernetes.io/service-account.name": "app"}},
               "type": "kubernetes.io/service-account-token", "data": {"token": "eHl6"}}),
    );
    let d = s.create(
        "/apis/apps/v1/namespaces/shop/deployments",
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
    );
    let rs = s.create(
        "/apis/apps/v1/namespaces/shop/replicasets",
        json!({"metadata": {"name": "web-5d8f", "ownerReferences": owned_by(&d, "Deployment")},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}),
    );
    s.create(
        "/api/v1/namespaces/shop/pods",
        json!({"metadata": {"name": "web-5d8f-abcde", "ownerReferences": owned_by(&rs, "ReplicaSet")},
               "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx:1.27"}]}}),
    );
    s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
}

fn backup_id(r: &Restore, args: &[&str]) -> String {
    r.k.backup_ok(args)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_namespace_comes_back_in_dependency_order_with_its_owners() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    // The target takes its time to establish CRDs, as a real one may.
    r.target.faults(|f| f.crd_establish_ms = 5000);
    let report = r.restore(&[&id, "-n", "shop"]).ok().json();
    assert_eq!(report["dry_run"], false);
    let restore_id = report["restore_id"].as_str().unwrap();

    for (kind, name) in [
        ("CustomResourceDefinition", "widgets.example.com"),
        ("Namespace", "shop"),
        ("Widget", "w1"),
        ("ConfigMap", "w1-config"),
        ("ConfigMap", "settings"),
        ("Secret", "db"),
        ("Deployment", "web"),
        ("Service", "web"),
    ] {
        assert_eq!(
            outcome(&report, kind, name)["outcome"],
            "created",
            "{kind} {name}"
        );
    }
    for (kind, name) in [
        ("ReplicaSet", "web-5d8f"),
        ("Pod", "web-5d8f-abcde"),
        ("Secret", "app-token"),
    ] {
        let o = outcome(&report, kind, name);
        assert_eq!(o["outcome"], "left_out", "{kind} {name}");
        assert!(o["reason"].as_str().unwrap().len() > 10, "{o}");
    }
    assert!(r
        .get("/apis/apps/v1/namespaces/shop/replicasets/web-5d8f")
        .is_none());
    // The CRD wait is reported, and its objects came after it.
    let waits = report["waits"].as_array().unwrap();
    assert!(
        waits.iter().any(
            |w| w["what"].as_str().unwrap().contains("widgets.example.com") && w["done"] == true
        ),
        "{waits:?}"
    );
    let served = r.target.served();
    let first = |method: &str, path: &str| {
        served
            .iter()
            .position(|s| s.method == method && s.path.ends_with(path))
            .unwrap_or_else(|| panic!("no {method} {path}"))
    };
    let crd_post = first("POST", "/customresourcedefinitions");
    let ns_post = first("POST", "/api/v1/namespaces");
    let widget_post = first("POST", "/namespaces/shop/widgets");
    let cm_post = first("POST", "/namespaces/shop/configmaps");
    let deploy_post = first("POST", "/namespaces/shop/deployments");
    assert!(crd_post < ns_post && ns_post < cm_post && cm_post < deploy_post);
    // The widget was sent once, after its CRD was Established (nothing failed).
    assert_eq!(
        served
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/widgets"))
            .count(),
        1
    );
    assert!(crd_post < widget_post);
    // It was sent once its version was served in discovery (after the wait).
    let discovered = served
        .iter()
        .position(|s| s.method == "GET" && s.path == "/apis/example.com/v1" && s.status == 200)
        .expect("the CRD's version discovered");
    assert!(discovered < widget_post);

    // The ConfigMap's owner is the new widget; its managers and labels came along.
    let w = r
        .get("/apis/example.com/v1/namespaces/shop/widgets/w1")
        .unwrap();
    let cm = r
        .get("/api/v1/namespaces/shop/configmaps/w1-config")
        .unwrap();
    assert_eq!(
        cm["metadata"]["ownerReferences"][0]["uid"],
        w["metadata"]["uid"]
    );
    let source_w = r
        .source()
        .call(
            "GET",
            "/apis/example.com/v1/namespaces/shop/widgets/w1",
            None,
        )
        .1;
    assert_ne!(w["metadata"]["uid"], source_w["metadata"]["uid"]);
    assert!(cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["manager"] == "argocd-controller"));
    let patched = |name: &str| {
        served
            .iter()
            .filter(|s| s.method == "PATCH" && s.path.ends_with(&format!("/configmaps/{name}")))
            .count()
    };
    assert_eq!(
        patched("w1-config"),
        1,
        "an Apply manager is handed back by a patch"
    );
    // One Update wrote all of this one: it is created under that manager's name,
    // with no patch after.
    let source_settings = r
        .source()
        .call("GET", "/api/v1/namespaces/shop/configmaps/settings", None)
        .1;
    let settings = r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .unwrap();
    let managers = |o: &Value| -> Vec<(String, String)> {
        o["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["manager"].to_string(), m["operation"].to_string()))
            .collect()
    };
    assert_eq!(managers(&settings), managers(&source_settings));
    assert_ne!(managers(&settings)[0].0, "\"ballast\"");
    assert_eq!(patched("settings"), 0);
    assert_eq!(cm["metadata"]["labels"]["ballast.io/restore"], restore_id);
    assert_eq!(
        cm["metadata"]["labels"]["ballast.io/backup"],
        id[..8].to_string()
    );
    // Garbage-collecting the new owner removes the new dependent.
    let (code, _) = r.target.call(
        "DELETE",
        "/apis/example.com/v1/namespaces/shop/widgets/w1",
        None,
    );
    assert_eq!(code, 200);
    assert!(r
        .get("/api/v1/namespaces/shop/configmaps/w1-config")
        .is_none());
    assert!(r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .is_some());
}

#[test]
fn running_again_finds_its_own_objects_unchanged() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    r.restore(&[&id, "-n", "shop"]).ok();
    let again = r.restore(&[&id, "-n", "shop"]).ok().json();
    assert_eq!(
        again["counts"].get("created"),
        None,
        "{:#}",
        again["counts"]
    );
    assert_eq!(
        outcome(&again, "ConfigMap", "settings")["outcome"],
        "unchanged"
    );
}

#[test]
fn existing_objects_under_each_policy() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(
        &r,
        &[
            "-n",
            "shop",
            "--include-resources",
            "configmaps,deployments,secrets,namespaces",
        ],
    );
    // The target has its own versions: other data, another (immutable) selector.
    r.target.namespace("shop");
    r.target.create(
        "/api/v1/namespaces/shop/configmaps",
        configmap("settings", "debug=true"),
    );
    r.target.create(
        "/api/v1/namespaces/shop/secrets",
        json!({"metadata": {"name": "db"}, "type": "Opaque", "data": {"password": "bGl2ZS1zZWNyZXQ="}}),
    );
    r.target.create(
        "/apis/apps/v1/namespaces/shop/deployments",
        json!({"metadata": {"name": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web-v2"}},
                        "template": {"metadata": {"labels": {"app": "web-v2"}}, "spec": {"containers": []}}}}),
    );

    // skip (the default): reported, left as they are, exit 3.
    let skip = r.restore(&[&id, "-n", "shop"]).expect_code(3).json();
    for (kind, name) in [
        ("ConfigMap", "settings"),
        ("Deployment", "web"),
        ("Secret", "db"),
    ] {
        assert_eq!(outcome(&skip, kind, name)["outcome"], "skipped", "{kind}");
    }
    assert_eq!(
        outcome(&skip, "ConfigMap", "w1-config")["outcome"],
        "created"
    );
    let live = r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .unwrap();
    assert_eq!(live["data"]["k"], "debug=true");

    // A dry run of update shows what would change, says the selector change is
    // refused, and shows no Secret value.
    let dry = r
        .restore(&[&id, "-n", "shop", "--existing", "update", "--dry-run"])
        .expect_code(1)
        .json();
    let cm = outcome(&dry, "ConfigMap", "settings");
    assert_eq!(cm["outcome"], "updated");
    assert!(cm["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["path"] == "data.k"
            && c["before"] == "debug=true"
            && c["after"] == "debug=false"));
    let web = outcome(&dry, "Deployment", "web");
    assert_eq!(web["outcome"], "failed");
    assert!(
        web["reason"]
            .as_str()
            .unwrap()
            .contains("field is immutable"),
        "{web}"
    );
    let text = dry.to_string();
    for secret in ["aHVudGVyMg==", "bGl2ZS1zZWNyZXQ=", "hunter2", "live-secret"] {
        assert!(!text.contains(secret), "a Secret value in the report");
    }
    assert!(!outcome(&dry, "Secret", "db")["changes"]
        .as_array()
        .unwrap()
        .is_empty());
    let live = r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .unwrap();
    assert_eq!(live["data"]["k"], "debug=true", "a dry run wrote");

    // update: the ConfigMap is replaced; the refused selector change fails, never
    // reported as done.
    let upd = r
        .restore(&[&id, "-n", "shop", "--existing", "update"])
        .expect_code(1)
        .json();
    assert_eq!(outcome(&upd, "ConfigMap", "settings")["outcome"], "updated");
    assert_eq!(outcome(&upd, "Deployment", "web")["outcome"], "failed");
    let live = r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .unwrap();
    assert_eq!(live["data"]["k"], "debug=false");
    let web = r
        .get("/apis/apps/v1/namespaces/shop/deployments/web")
        .unwrap();
    assert_eq!(web["spec"]["selector"]["matchLabels"]["app"], "web-v2");

    // recreate for all: never deletes the namespace (its other objects stay).
    r.target.create(
        "/api/v1/namespaces/shop/configmaps",
        configmap("target-only", "x"),
    );
    let all = r
        .restore(&[&id, "-n", "shop", "--existing", "recreate"])
        .ok()
        .json();
    assert_eq!(outcome(&all, "Namespace", "shop")["outcome"], "unchanged");
    assert_eq!(
        outcome(&all, "ConfigMap", "settings")["outcome"],
        "recreated"
    );
    assert!(r
        .get("/api/v1/namespaces/shop/configmaps/target-only")
        .is_some());

    // recreate for deployments only: deleted and created with the backed-up
    // selector.
    let rec = r
        .restore(&[&id, "-n", "shop", "--existing", "deployments=recreate"])
        .ok()
        .json();
    assert_eq!(outcome(&rec, "Deployment", "web")["outcome"], "recreated");
    let web = r
        .get("/apis/apps/v1/namespaces/shop/deployments/web")
        .unwrap();
    assert_eq!(web["spec"]["selector"]["matchLabels"]["app"], "web");
}

#[test]
fn a_dry_run_writes_nothing_and_finds_the_quota_first() {
    let r = Restore::new();
    let s = r.source();
    s.namespace("shop");
    for i in 0..4 {
        s.create(
            "/api/v1/namespaces/shop/configmaps",
            configmap(&format!("c{i}"), "x"),
        );
    }
    let id = backup_id(&r, &["-n", "shop"]);
    r.target.namespace("shop");
    r.target.create(
        "/api/v1/namespaces/shop/resourcequotas",
        json!({"metadata": {"name": "small"}, "spec": {"hard": {"count/configmaps": "3"}}}),
    );
    // kube-root-ca.crt is one; room for two more.
    let before = r.target.state().inner.lock().unwrap().store.revision();
    let dry = r.restore(&[&id, "-n", "shop", "--dry-run"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    let after = r.target.state().inner.lock().unwrap().store.revision();
    assert_eq!(before, after, "a dry run wrote to the target");
    // Each dry-run create is checked against the quota as it stands: all four fit
    // one at a time, so the dry run cannot see the sum. What it does see is exact
    // for each object; the real restore reports every refusal.
    let real = r
        .restore(&[&id, "-n", "shop", "--parallel", "1"])
        .expect_code(1)
        .json();
    assert_eq!(real["counts"]["created"], 2, "{:#}", real["counts"]);
    assert_eq!(real["counts"]["failed"], 2);
    let failed: Vec<&Value> = real["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "failed")
        .collect();
    assert!(failed.iter().all(|o| o["reason"]
        .as_str()
        .unwrap()
        .contains("exceeded quota: small")));
    // A full namespace: the dry run says so before anything is written.
    let dry = r
        .restore(&[&id, "-n", "shop", "--dry-run"])
        .expect_code(1)
        .json();
    let c = dry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["reason"]
                .as_str()
                .is_some_and(|r| r.contains("exceeded quota"))
        })
        .count();
    assert_eq!(c, 2, "{dry:#}");
}

#[test]
fn a_dry_run_defers_what_the_restore_itself_creates() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    let dry = r
        .restore(&[&id, "-n", "shop", "--dry-run"])
        .expect_code(3)
        .json();
    // The CRD and the namespace are checked; what goes into them waits for them.
    assert_eq!(
        outcome(&dry, "CustomResourceDefinition", "widgets.example.com")["outcome"],
        "created"
    );
    assert_eq!(outcome(&dry, "Namespace", "shop")["outcome"], "created");
    let w = outcome(&dry, "Widget", "w1");
    assert_eq!(w["outcome"], "deferred");
    assert_eq!(
        outcome(&dry, "ConfigMap", "settings")["outcome"],
        "deferred"
    );
    assert!(dry["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["what"] == "widgets.example.com/v1" && p["blocking"] == false));
    assert!(r.get("/api/v1/namespaces/shop").is_none());
}

#[test]
fn a_version_the_target_does_not_serve_blocks_the_restore() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    // The target has the CRD already, serving v2 only.
    let mut v2 = crd("widgets", "example.com", "Widget");
    v2["spec"]["versions"][0]["name"] = json!("v2");
    r.target.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        v2,
    );
    r.target.clear_served();
    let out = r.restore(&[&id, "-n", "shop"]).expect_code(1);
    let report = out.json();
    let p = &report["preflight"][0];
    assert_eq!(p["blocking"], true, "{report:#}");
    assert!(p["problem"].as_str().unwrap().contains("only in v2"), "{p}");
    assert!(report["stopped"]
        .as_str()
        .unwrap()
        .contains("nothing was written"));
    assert!(
        r.target.served().iter().all(|s| s.method == "GET"),
        "the refused restore wrote"
    );
    // Told to leave the widgets out, the rest comes back.
    let report = r
        .restore(&[
            &id,
            "-n",
            "shop",
            "--exclude-resources",
            "widgets.example.com",
        ])
        .expect_code(0)
        .json();
    assert_eq!(
        outcome(&report, "ConfigMap", "settings")["outcome"],
        "created"
    );
    // The widget's ConfigMap lost an owner the target does not hold: noted.
    let cm = outcome(&report, "ConfigMap", "w1-config");
    assert!(cm["notes"][0]
        .as_str()
        .unwrap()
        .contains("ownerReference was dropped"));
}

#[test]
fn a_namespace_stuck_terminating_is_waited_for_then_given_up_on() {
    let r = Restore::new();
    r.source().namespace("shop");
    r.source()
        .create("/api/v1/namespaces/shop/configmaps", configmap("a", "1"));
    let id = backup_id(&r, &["-n", "shop"]);
    r.target.namespace("shop");
    r.target.faults(|f| f.namespace_termination_ms = 2000);
    assert_eq!(
        r.target.call("DELETE", "/api/v1/namespaces/shop", None).0,
        200
    );
    let report = r.restore(&[&id, "-n", "shop"]).ok().json();
    assert!(report["waits"][0]["what"]
        .as_str()
        .unwrap()
        .contains("terminating"));
    assert_eq!(report["waits"][0]["done"], true);
    assert_eq!(outcome(&report, "ConfigMap", "a")["outcome"], "created");

    // Stuck for longer than --wait-timeout: the wait is reported, the restore does
    // not hang, and what it could not write is failed with the server's reason.
    r.target.faults(|f| f.namespace_termination_ms = 600_000);
    assert_eq!(
        r.target.call("DELETE", "/api/v1/namespaces/shop", None).0,
        200
    );
    let report = r
        .restore(&[&id, "-n", "shop", "--wait-timeout", "1s"])
        .expect_code(1)
        .json();
    assert_eq!(report["waits"][0]["done"], false);
    let a = outcome(&report, "ConfigMap", "a");
    assert_eq!(a["outcome"], "failed");
    assert!(
        a["reason"].as_str().unwrap().contains("being terminated"),
        "{a}"
    );
}

#[test]
fn the_api_server_going_away_stops_the_restore_and_a_second_run_completes_it() {
    let r = Restore::new();
    r.source().namespace("bulk");
    for i in 0..300 {
        r.source().create(
            "/api/v1/namespaces/bulk/configmaps",
            configmap(&format!("c{i:03}"), "x"),
        );
    }
    let id = backup_id(&r, &["-n", "bulk"]);
    r.target.faults(|f| f.latency_ms = 20);
    let kc = r.target_config.display().to_string();
    let child =
        r.k.env
            .cmd(&[
                "restore",
                "kube",
                &id,
                "-n",
                "bulk",
                "--parallel",
                "2",
                "--kubeconfig",
                &kc,
                "--json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    // Wait until some objects are in, then take the server away.
    let deadline = Instant::now() + Duration::from_secs(120);
    while r
        .target
        .served()
        .iter()
        .filter(|s| s.method == "POST")
        .count()
        < 40
    {
        assert!(Instant::now() < deadline, "the restore never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    r.target.faults(|f| f.down = true);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["stopped"].is_string(), "{:#}", report["counts"]);
    let created = report["counts"]["created"].as_u64().unwrap_or(0);
    assert!(created >= 30, "{:#}", report["counts"]);
    assert!(report["counts"]["not_attempted"].as_u64().unwrap_or(0) > 0);
    // Every object is accounted for, with one outcome each.
    let total = |r: &Value| -> u64 {
        r["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        total(&report),
        report["objects"].as_array().unwrap().len() as u64
    );
    let configmaps = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" && o["name"].as_str().unwrap().starts_with('c'))
        .count();
    assert_eq!(configmaps, 300);

    // The server comes back with what it had; the same restore with skip completes.
    r.target.faults(|f| {
        f.down = false;
        f.latency_ms = 0;
    });
    let again = r.restore(&[&id, "-n", "bulk"]).ok().json();
    assert_eq!(total(&again), total(&report));
    assert!(again["counts"]["unchanged"].as_u64().unwrap() >= 30);
    let (_, list) = r
        .target
        .call("GET", "/api/v1/namespaces/bulk/configmaps", None);
    // kube-root-ca.crt and the 300.
    assert_eq!(list["items"].as_array().unwrap().len(), 301);
}

#[test]
fn namespace_and_storage_class_maps_and_modifiers() {
    let r = Restore::new();
    let s = r.source();
    s.namespace("shop");
    s.create(
        "/api/v1/namespaces/shop/persistentvolumeclaims",
        json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
               "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    s.create(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings",
        json!({"metadata": {"name": "app"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app"},
               "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}]}),
    );
    s.create(
        "/apis/apps/v1/namespaces/shop/deployments",
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "nginx", "env": [{"name": "DB", "value": "db.shop.svc"}]}]}}}}),
    );
    let id = backup_id(&r, &["-n", "shop"]);
    let modifiers = r.k.env.path("modifiers.yaml");
    std::fs::write(
        &modifiers,
        "rules:\n  - match: {resources: [deployments.apps], names: [web]}\n    jsonPatch: [{op: replace, path: /spec/replicas, value: 1}]\n",
    )
    .unwrap();
    let m = modifiers.display().to_string();
    // The pre-flight names the storage class the target lacks.
    let dry = r
        .restore(&[
            &id,
            "-n",
            "shop",
            "--namespace-map",
            "shop=shop-copy",
            "--dry-run",
        ])
        .expect_code(3)
        .json();
    assert!(dry["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["what"] == "storageclass fast"));
    r.target.create(
        "/apis/storage.k8s.io/v1/storageclasses",
        json!({"metadata": {"name": "ssd"}, "provisioner": "x"}),
    );
    let report = r
        .restore(&[
            &id,
            "-n",
            "shop",
            "--namespace-map",
            "shop=shop-copy",
            "--storage-class-map",
            "fast=ssd",
            "--modifiers",
            &m,
        ])
        .ok()
        .json();
    assert!(report["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["what"] != "storageclass ssd"));
    let pvc = r
        .get("/api/v1/namespaces/shop-copy/persistentvolumeclaims/data")
        .unwrap();
    assert_eq!(pvc["spec"]["storageClassName"], "ssd");
    let rb = r
        .get("/apis/rbac.authorization.k8s.io/v1/namespaces/shop-copy/rolebindings/app")
        .unwrap();
    assert_eq!(rb["subjects"][0]["namespace"], "shop-copy");
    let web = r
        .get("/apis/apps/v1/namespaces/shop-copy/deployments/web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 1);
    let note = &outcome(&report, "Deployment", "web")["notes"][0];
    assert!(
        note.as_str().unwrap().contains("db.shop.svc")
            || note.as_str().unwrap().contains("\"shop\""),
        "{note}"
    );
    assert!(r.get("/api/v1/namespaces/shop").is_none());
}

#[test]
fn one_object_by_kind_and_name() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    r.target.namespace("shop");
    let report = r.restore(&[&id, "cm/settings", "-n", "shop"]).ok().json();
    assert_eq!(report["objects"].as_array().unwrap().len(), 1);
    assert!(r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .is_some());
    assert!(r.get("/api/v1/namespaces/shop/secrets/db").is_none());
    // An object the snapshot does not hold is an error, not an empty success.
    let out = r.restore(&[&id, "cm/missing", "-n", "shop"]).expect_code(1);
    assert!(out.stderr.contains("holds no object"), "{}", out.stderr);
}

#[test]
fn an_owner_the_target_holds_keeps_its_dependents() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    // Into the same cluster: the ConfigMap went, its owner (the widget) is there
    // with its UID; the restored ConfigMap points at it instead of losing it.
    let s = r.source();
    assert_eq!(
        s.call(
            "DELETE",
            "/api/v1/namespaces/shop/configmaps/w1-config",
            None
        )
        .0,
        200
    );
    let kc = r.k.kubeconfig.display().to_string();
    let report =
        r.k.env
            .run(&[
                "restore",
                "kube",
                &id,
                "cm/w1-config",
                "-n",
                "shop",
                "--kubeconfig",
                &kc,
                "--json",
            ])
            .ok()
            .json();
    let o = outcome(&report, "ConfigMap", "w1-config");
    assert_eq!(o["outcome"], "created");
    assert!(o.get("notes").is_none(), "{o}");
    let w = s
        .call(
            "GET",
            "/apis/example.com/v1/namespaces/shop/widgets/w1",
            None,
        )
        .1;
    let cm = s
        .call("GET", "/api/v1/namespaces/shop/configmaps/w1-config", None)
        .1;
    assert_eq!(
        cm["metadata"]["ownerReferences"][0]["uid"],
        w["metadata"]["uid"]
    );

    // Into another cluster whose widget w1 is another object (another UID, not
    // restored from this backup): the dependent is not given to it.
    r.target.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "example.com", "Widget"),
    );
    r.target.namespace("shop");
    r.target.create(
        "/apis/example.com/v1/namespaces/shop/widgets",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}}),
    );
    let report = r.restore(&[&id, "cm/w1-config", "-n", "shop"]).ok().json();
    let o = outcome(&report, "ConfigMap", "w1-config");
    assert!(
        o["notes"][0]
            .as_str()
            .unwrap()
            .contains("ownerReference was dropped"),
        "{o}"
    );
    let cm = r
        .get("/api/v1/namespaces/shop/configmaps/w1-config")
        .unwrap();
    assert!(cm["metadata"].get("ownerReferences").is_none(), "{cm}");
}

#[test]
fn what_is_not_a_kubernetes_backup_or_is_ambiguous_is_refused() {
    let r = Restore::new();
    let dir = r.k.env.path("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), "x").unwrap();
    let path_id = r.k.env.backup(&dir, &[]);
    let out = r.restore(&[&path_id]).expect_code(1);
    assert!(
        out.stderr.contains("not a Kubernetes one"),
        "{}",
        out.stderr
    );

    // Two clusters in one repository: `latest` is refused, an id works, and
    // `snapshots` shows where each came from.
    r.source().namespace("a");
    backup_id(&r, &[]);
    let other = TestApiServer::start();
    let other_config = other.kubeconfig(r.k.env.dir.path(), "other", None);
    let oc = other_config.display().to_string();
    let b =
        r.k.env
            .run(&["backup", "kube", "--kubeconfig", &oc, "--json"])
            .ok()
            .json();
    let b_id = b["snapshot_id"].as_str().unwrap();
    let out = r.restore(&["latest"]).expect_code(2);
    assert!(out.stderr.contains("2 clusters"), "{}", out.stderr);
    let table = r.k.env.run(&["snapshots"]).ok().stdout;
    assert!(
        table.contains(&r.source().url()) && table.contains(&other.url()),
        "{table}"
    );
    r.restore(&[b_id]).ok();
}

/// A namespace `hooks` with a webhook backend (a Service without a selector, and
/// Endpoints at the backend's address) and a ValidatingWebhookConfiguration that
/// reviews ConfigMaps outside `hooks` and `kube-system`, with failurePolicy Fail.
fn seed_webhook(s: &TestApiServer, backend: &Backend) {
    let port = backend.addr.port();
    s.namespace("hooks");
    s.create(
        "/api/v1/namespaces/hooks/services",
        json!({"metadata": {"name": "guard"}, "spec": {"ports": [{"port": 443, "targetPort": port}]}}),
    );
    s.create(
        "/api/v1/namespaces/hooks/endpoints",
        json!({"metadata": {"name": "guard"},
               "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": port}]}]}),
    );
    s.create(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        json!({"metadata": {"name": "guard"}, "webhooks": [{
            "name": "guard.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail",
            "clientConfig": {"service": {"namespace": "hooks", "name": "guard", "path": "/validate"},
                             "caBundle": Backend::ca_bundle()},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["hooks", "kube-system"]}]}}]}),
    );
}

fn seed_configmaps(s: &TestApiServer, n: usize) {
    s.namespace("shop");
    for i in 0..n {
        s.create(
            "/api/v1/namespaces/shop/configmaps",
            configmap(&format!("c{i}"), "x"),
        );
    }
}

#[test]
fn a_webhook_whose_backend_is_in_the_backup_comes_last_and_refuses_nothing() {
    let r = Restore::new();
    let backend = Backend::start();
    seed_webhook(r.source(), &backend);
    let before = backend.calls();
    // Each ConfigMap the source takes is reviewed by the webhook.
    seed_configmaps(r.source(), 3);
    assert_eq!(backend.calls(), before + 3);
    let id = backup_id(&r, &[]);
    // The backend is down now: had the webhook come first, with failurePolicy
    // Fail it would have refused every ConfigMap after it.
    drop(backend);
    let report = r.restore(&[&id]).ok().json();
    assert_eq!(
        outcome(&report, "ValidatingWebhookConfiguration", "guard")["outcome"],
        "created"
    );
    for i in 0..3 {
        assert_eq!(
            outcome(&report, "ConfigMap", &format!("c{i}"))["outcome"],
            "created"
        );
    }
    let served = r.target.served();
    let hook = served
        .iter()
        .position(|s| s.method == "POST" && s.path.ends_with("/validatingwebhookconfigurations"))
        .unwrap();
    let last_write = served
        .iter()
        .rposition(|s| s.method == "POST" && !s.path.ends_with("/validatingwebhookconfigurations"))
        .unwrap();
    assert!(last_write < hook, "the webhook was not last");
    // It is live: a new ConfigMap is now refused, as it would have been mid-restore.
    let (code, v) = r.target.call(
        "POST",
        "/api/v1/namespaces/shop/configmaps",
        Some(&configmap("late", "x")),
    );
    assert_eq!(code, 500, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("failed calling webhook \"guard.example.com\""));
}

#[test]
fn a_webhook_whose_backend_is_not_in_the_backup_is_reported_first_and_held_back() {
    let r = Restore::new();
    let backend = Backend::start();
    seed_webhook(r.source(), &backend);
    seed_configmaps(r.source(), 2);
    let id = backup_id(&r, &["--exclude-namespaces", "hooks"]);
    let dry = r.restore(&[&id, "--dry-run"]).expect_code(3).json();
    assert!(
        dry["preflight"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["what"] == "service hooks/guard"
                && p["problem"]
                    .as_str()
                    .unwrap()
                    .contains("neither the backup nor the target")),
        "{:#}",
        dry["preflight"]
    );
    assert!(r
        .get("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/guard")
        .is_none());
    let report = r
        .restore(&[&id, "--wait-timeout", "1s"])
        .expect_code(3)
        .json();
    let hook = outcome(&report, "ValidatingWebhookConfiguration", "guard");
    assert_eq!(hook["outcome"], "deferred");
    assert!(
        hook["reason"].as_str().unwrap().contains("hooks/guard"),
        "{hook}"
    );
    assert_eq!(outcome(&report, "ConfigMap", "c1")["outcome"], "created");
    assert!(r
        .get("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/guard")
        .is_none());
}

#[test]
fn a_label_selector_takes_the_objects_it_matches_and_their_namespace() {
    let r = Restore::new();
    seed_shop(r.source());
    let id = backup_id(&r, &["-n", "shop"]);
    let report = r.restore(&[&id, "-n", "shop", "-l", "app=web"]).ok().json();
    assert_eq!(outcome(&report, "Deployment", "web")["outcome"], "created");
    assert_eq!(outcome(&report, "Namespace", "shop")["outcome"], "created");
    let names: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"settings"), "{names:?}");
    assert!(r
        .get("/api/v1/namespaces/shop/configmaps/settings")
        .is_none());
    // The CRD comes only with its objects.
    assert!(r
        .get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
        .is_none());
    let out = r.restore(&[&id, "-l", "app in (web"]).expect_code(2);
    assert!(out.stderr.contains("--selector"), "{}", out.stderr);
}
