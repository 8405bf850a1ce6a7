//! Reading Kubernetes snapshots back without restoring them: clean export that a
//! fresh cluster accepts (checked with kubectl against a second test API server),
//! byte-identical after a round trip, and diffs between snapshots and against the
//! live cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use ballast_tests::apiserver::TestApiServer;
use ballast_tests::kube::{configmap, crd, owned_by, KubeEnv};

/// A namespace as a cluster holds it: what people wrote, and what controllers and
/// the API server made beside it.
fn seed_app(s: &TestApiServer) {
    s.namespace("shop");
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        configmap("settings", "debug=false"),
    );
    s.create(
        "/api/v1/namespaces/shop/secrets",
        json!({"metadata": {"name": "db"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
    );
    let deploy = s.create(
        "/apis/apps/v1/namespaces/shop/deployments",
        json!({"metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"deployment.kubernetes.io/revision": "1"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
    );
    let rs = s.create(
        "/apis/apps/v1/namespaces/shop/replicasets",
        json!({"metadata": {"name": "web-5d8f", "labels": {"app": "web"}, "ownerReferences": owned_by(&deploy, "Deployment")},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}),
    );
    s.create(
        "/api/v1/namespaces/shop/pods",
        json!({"metadata": {"name": "web-5d8f-abcde", "ownerReferences": owned_by(&rs, "ReplicaSet")},
               "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx:1.27"}]}}),
    );
    s.create(
        "/api/v1/namespaces/shop/pods",
        json!({"metadata": {"name": "debug"}, "spec": {"nodeName": "node-2", "containers": [{"name": "sh", "image": "busybox"}]}}),
    );
    s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    s.create(
        "/api/v1/namespaces/shop/endpoints",
        json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 8080}]}]}),
    );
    s.create(
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        json!({"metadata": {"name": "web-x1", "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
               "addressType": "IPv4", "endpoints": []}),
    );
    s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "edge"}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 443}]}}),
    );
    s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
    );
    s.create(
        "/api/v1/namespaces/shop/secrets",
        json!({"metadata": {"name": "app-token", "annotations": {"kubernetes.io/service-account.name": "app"}},
               "type": "kubernetes.io/service-account-token", "data": {"token": "eHl6"}}),
    );
    s.create(
        "/api/v1/namespaces/shop/serviceaccounts",
        json!({"metadata": {"name": "app"}}),
    );
    s.create(
        "/apis/batch/v1/namespaces/shop/jobs",
        json!({"metadata": {"name": "migrate"},
               "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "8e1b"}},
                        "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "8e1b", "job-name": "migrate", "app": "migrate"}},
                                     "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "migrate:1"}]}}}}),
    );
    s.create(
        "/api/v1/namespaces/shop/events",
        json!({"metadata": {"name": "web.1"}, "reason": "Scheduled"}),
    );
    s.create(
        "/apis/coordination.k8s.io/v1/namespaces/shop/leases",
        json!({"metadata": {"name": "controller-leader"}, "spec": {"holderIdentity": "x"}}),
    );
    s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "example.com", "Widget"),
    );
    s.create(
        "/apis/example.com/v1/namespaces/shop/widgets",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}),
    );
    s.create(
        "/api/v1/persistentvolumes",
        json!({"metadata": {"name": "pv-data"},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/srv/data"},
                        "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data", "uid": "0c1f", "resourceVersion": "77"}}}),
    );
    s.create(
        "/api/v1/namespaces/shop/persistentvolumeclaims",
        json!({"metadata": {"name": "data", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
               "spec": {"volumeName": "pv-data", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl not found: .ci/install test installs it")
}

/// `kubectl apply` (no OpenAPI documents on the test server: client-side
/// validation off; the server's own checks still run).
fn apply(kubeconfig: &Path, path: &Path, dry_run: bool) {
    let p = path.display().to_string();
    let mut args = vec!["apply", "--validate=false", "-R", "-f", &p];
    if dry_run {
        args.push("--dry-run=server");
    }
    let out = kubectl(kubeconfig, &args);
    assert!(
        out.status.success(),
        "kubectl {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn export(k: &KubeEnv, snapshot: &str, dir: &Path) -> Value {
    k.json(&["kube", "export", snapshot, "--to", dir.to_str().unwrap()])
}

#[test]
fn export_writes_what_a_fresh_cluster_accepts_and_the_same_bytes_after_a_round_trip() {
    let k = KubeEnv::new();
    seed_app(&k.server);
    let first = k.backup_ok(&[]);
    let id = first["snapshot_id"].as_str().unwrap();
    let out1 = k.env.path("export-1");
    let summary = export(&k, id, &out1);
    let got = files(&out1);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    for want in [
        "shop/core.ConfigMap/settings.yaml",
        "shop/core.Secret/db.yaml",
        "shop/apps.Deployment/web.yaml",
        "shop/core.Pod/debug.yaml",
        "shop/core.Service/web.yaml",
        "shop/core.Service/edge.yaml",
        "shop/core.Service/db.yaml",
        "shop/core.ServiceAccount/app.yaml",
        "shop/batch.Job/migrate.yaml",
        "shop/core.PersistentVolumeClaim/data.yaml",
        "shop/example.com.Widget/w1.yaml",
        "_cluster/core.Namespace/shop.yaml",
        "_cluster/core.PersistentVolume/pv-data.yaml",
        "_cluster/apiextensions.k8s.io.CustomResourceDefinition/widgets.example.com.yaml",
        "_cluster/scheduling.k8s.io.PriorityClass/system-node-critical.yaml",
    ] {
        if want.contains("system-") {
            assert!(!names.contains(&want), "built into every cluster: {want}");
        } else {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
    }
    for gone in [
        "shop/apps.ReplicaSet/web-5d8f.yaml",
        "shop/core.Pod/web-5d8f-abcde.yaml",
        "shop/core.Endpoints/web.yaml",
        "shop/discovery.k8s.io.EndpointSlice/web-x1.yaml",
        "shop/core.Secret/app-token.yaml",
        "shop/core.ConfigMap/kube-root-ca.crt.yaml",
        "shop/core.ServiceAccount/default.yaml",
        "shop/core.Event/web.1.yaml",
        "shop/coordination.k8s.io.Lease/controller-leader.yaml",
        "_cluster/core.Namespace/kube-system.yaml",
        "default/core.Service/kubernetes.yaml",
    ] {
        assert!(!names.contains(&gone), "{gone} should be left out");
    }
    assert!(
        summary["dropped"]
            .as_object()
            .unwrap()
            .keys()
            .any(|r| r.contains("created by its controller")),
        "{summary}"
    );
    for (path, bytes) in &got {
        let text = String::from_utf8(bytes.clone()).unwrap();
        for owned in [
            "uid:",
            "resourceVersion:",
            "creationTimestamp:",
            "managedFields:",
            "status:",
            "generation:",
            "clusterIP:",
            "nodeName:",
        ] {
            let allowed = owned == "clusterIP:" && path.ends_with("core.Service/db.yaml");
            assert!(
                allowed || !text.contains(owned),
                "{path} holds {owned}:\n{text}"
            );
        }
    }
    let edge = String::from_utf8(got["shop/core.Service/edge.yaml"].clone()).unwrap();
    assert!(
        !edge.contains("nodePort"),
        "an allocated node port is dropped:\n{edge}"
    );
    let job = String::from_utf8(got["shop/batch.Job/migrate.yaml"].clone()).unwrap();
    assert!(
        !job.contains("controller-uid") && !job.contains("selector"),
        "{job}"
    );

    // A fresh cluster accepts it: namespaces and CRDs first (kubectl's server dry
    // run cannot create what later objects need), then everything, dry run.
    let fresh = TestApiServer::start();
    let kc = fresh.kubeconfig(k.env.dir.path(), "fresh", None);
    apply(&kc, &out1.join("_cluster/core.Namespace"), false);
    apply(
        &kc,
        &out1.join("_cluster/apiextensions.k8s.io.CustomResourceDefinition"),
        false,
    );
    apply(&kc, &out1, true);
    // Applied for real, backed up and exported again: the same bytes.
    apply(&kc, &out1, false);
    let again = KubeEnv {
        env: ballast_tests::Env::init_local(),
        kubeconfig: kc.clone(),
        server: fresh,
    };
    let second = again.backup_ok(&[]);
    let out2 = again.env.path("export-2");
    export(&again, second["snapshot_id"].as_str().unwrap(), &out2);
    let got2 = files(&out2);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        got2.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &got {
        assert_eq!(
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&got2[path]),
            "{path} differs after the round trip"
        );
    }
    // Exporting into a directory that is not empty is refused.
    let e = k
        .env
        .run(&["kube", "export", id, "--to", out1.to_str().unwrap()])
        .expect_code(1);
    assert!(e.stderr.contains("is not empty"), "{}", e.stderr);
}

#[test]
fn diffs_between_snapshots_and_against_the_live_cluster() {
    let k = KubeEnv::new();
    seed_app(&k.server);
    let a = k.backup_ok(&[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = &k.server;
    // One changed, one added, one removed, and one whose status alone changed.
    let (_, mut d) = s.call("GET", "/apis/apps/v1/namespaces/shop/deployments/web", None);
    d["spec"]["replicas"] = json!(3);
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let (code, _) = s.call(
        "PUT",
        "/apis/apps/v1/namespaces/shop/deployments/web",
        Some(&d),
    );
    assert_eq!(code, 200);
    s.create("/api/v1/namespaces/shop/configmaps", configmap("new", "1"));
    let (code, _) = s.call("DELETE", "/api/v1/namespaces/shop/secrets/db", None);
    assert_eq!(code, 200);
    let (_, mut pvc) = s.call(
        "GET",
        "/api/v1/namespaces/shop/persistentvolumeclaims/data",
        None,
    );
    pvc["status"] = json!({"phase": "Bound"});
    let (code, _) = s.call(
        "PUT",
        "/api/v1/namespaces/shop/persistentvolumeclaims/data/status",
        Some(&pvc),
    );
    assert_eq!(code, 200);

    let line = |d: &Value| {
        format!(
            "{} {}",
            d["change"].as_str().unwrap(),
            d["name"].as_str().unwrap()
        )
    };
    let live: Vec<String> = k.json(&[
        "kube",
        "diff",
        &a,
        "--live",
        "--kubeconfig",
        k.kubeconfig.to_str().unwrap(),
    ])["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(line)
        .collect();
    assert_eq!(
        live,
        ["added new", "removed db", "changed web"],
        "status changes are not changes of state"
    );
    let b = k.backup_ok(&[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let between: Vec<String> = k.json(&["kube", "diff", &a, &b])["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(line)
        .collect();
    assert_eq!(between, live);
    // --exact sees the status (and every resourceVersion that moved).
    let exact: Vec<String> = k.json(&["kube", "diff", &a, &b, "--exact"])["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(line)
        .collect();
    assert!(exact.contains(&"changed data".to_string()), "{exact:?}");
    // One object, field by field.
    let fields = k.json(&[
        "kube",
        "diff",
        &a,
        &b,
        "--object",
        "deploy/web",
        "-n",
        "shop",
    ]);
    let paths: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["spec.replicas", "spec.template.spec.containers[0].image"]
    );
    assert_eq!(fields[0]["before"], 2);
    assert_eq!(fields[0]["after"], 3);
    let human = k.env.run(&["kube", "diff", &a, &b]).ok();
    assert!(
        human.stdout.contains("M shop/deployments.apps/web"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("1 added, 1 removed, 1 changed"),
        "{}",
        human.stdout
    );
}

#[test]
fn what_one_side_could_not_hold_is_not_compared_and_a_live_diff_keeps_the_selection() {
    let k = KubeEnv::new();
    seed_app(&k.server);
    let s = &k.server;
    s.namespace("other");
    s.create(
        "/api/v1/namespaces/other/configmaps",
        configmap("elsewhere", "1"),
    );
    let id = |v: Value| v["snapshot_id"].as_str().unwrap().to_string();
    let whole = id(k.backup_ok(&[]));
    // B may not list Secrets: the one A holds is not "removed".
    s.faults(|f| {
        f.forbidden.insert("secrets".into());
    });
    let blind = id(k.backup(&[]).expect_code(3).json());
    s.faults(|f| f.forbidden.clear());
    for (a, b, side) in [(&whole, &blind, "B"), (&blind, &whole, "A")] {
        let cmp = k.json(&["kube", "diff", a, b]);
        assert_eq!(cmp["differences"], json!([]), "{cmp}");
        let nc = cmp["not_compared"].as_array().unwrap();
        assert_eq!(nc.len(), 1, "{cmp}");
        assert_eq!(nc[0]["resource"], "secrets");
        assert_eq!(nc[0]["namespace"], "shop");
        assert_eq!(nc[0]["objects"], 1);
        let reason = nc[0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("{side} could not list it")),
            "{reason}"
        );
    }
    let human = k.env.run(&["kube", "diff", &whole, &blind]).ok();
    assert!(
        human.stdout.contains("0 added, 0 removed, 0 changed")
            && human.stdout.contains("not compared: 1 secrets in shop"),
        "{}",
        human.stdout
    );

    // A namespace backup against a whole-cluster one: the other namespace is
    // outside it, not added.
    let shop = id(k.backup_ok(&["-n", "shop"]));
    let cmp = k.json(&["kube", "diff", &shop, &whole]);
    assert_eq!(cmp["differences"], json!([]), "{cmp}");
    let reasons: Vec<&str> = cmp["not_compared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"outside A's namespaces"), "{cmp}");

    // Against the live cluster, the namespace backup sees what it would have
    // taken: its namespace, without objects labelled to be left out, and no
    // cluster-scoped object it did not need.
    s.create(
        "/api/v1/namespaces/other/configmaps",
        configmap("later", "2"),
    );
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        configmap("added", "3"),
    );
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "scratch", "labels": {"ballast.io/exclude": "true"}}, "data": {"a": "1"}}),
    );
    s.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "newcomer"}, "rules": []}),
    );
    // `CHANGE NAME` of each difference against the live cluster, sorted.
    let live_changes = |snapshot: &str| -> Vec<String> {
        let live = k.json(&[
            "kube",
            "diff",
            snapshot,
            "--live",
            "--kubeconfig",
            k.kubeconfig.to_str().unwrap(),
        ]);
        let mut changes: Vec<String> = live["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d["change"].as_str().unwrap(),
                    d["name"].as_str().unwrap()
                )
            })
            .collect();
        changes.sort();
        changes
    };
    assert_eq!(live_changes(&shop), ["added added"]);
    // The whole-cluster backup sees all of it but the labelled one.
    assert_eq!(
        live_changes(&whole),
        ["added added", "added later", "added newcomer"]
    );
}

#[test]
fn ls_and_get_read_objects_without_restoring_them() {
    let k = KubeEnv::new();
    seed_app(&k.server);
    let id = k.backup_ok(&[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let table = k
        .env
        .run(&["kube", "ls", &id, "-n", "shop", "--kind", "svc"])
        .ok()
        .stdout;
    for name in ["web", "edge", "db"] {
        assert!(
            table
                .lines()
                .any(|l| l.contains("Service") && l.split_whitespace().nth(2) == Some(name)),
            "{table}"
        );
    }
    let yaml = k
        .env
        .run(&["kube", "get", &id, "deployment/web", "-n", "shop"])
        .ok()
        .stdout;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("image: nginx:1.27"),
        "{yaml}"
    );
    assert!(yaml.contains("resourceVersion:"), "as stored: {yaml}");
    let clean = k
        .env
        .run(&[
            "kube",
            "get",
            &id,
            "deployment/web",
            "-n",
            "shop",
            "--clean",
        ])
        .ok()
        .stdout;
    assert!(
        !clean.contains("resourceVersion:") && !clean.contains("deployment.kubernetes.io/revision"),
        "{clean}"
    );
    // Cluster-scoped objects take no namespace; a missing object is named.
    k.json(&["kube", "get", &id, "pv/pv-data"]);
    let e = k
        .env
        .run(&["kube", "get", &id, "pv/pv-data", "-n", "shop"])
        .expect_code(2);
    assert!(e.stderr.contains("cluster-scoped"), "{}", e.stderr);
    let e = k
        .env
        .run(&["kube", "get", &id, "cm/nope", "-n", "shop"])
        .expect_code(1);
    assert!(
        e.stderr.contains("holds no cm/nope in namespace shop"),
        "{}",
        e.stderr
    );
    let e = k.env.run(&["kube", "get", &id, "gizmo/x"]).expect_code(1);
    assert!(
        e.stderr.contains("no resource named \"gizmo\""),
        "{}",
        e.stderr
    );
    // A snapshot of another kind is named as such.
    let src = k.env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let files_id = k.env.backup(&src, &[]);
    let e = k.env.run(&["kube", "ls", &files_id]).expect_code(1);
    assert!(
        e.stderr
            .contains("is a `path` backup, not a Kubernetes one"),
        "{}",
        e.stderr
    );
    // `latest` is the newest Kubernetes snapshot, not the newest of all.
    k.json(&["kube", "ls", "latest"]);
}
