//! `ballast backup kube` against the test API server: what is captured, how it is
//! listed, what is recorded, and every fault of the capture issue.

use serde_json::{json, Value};

use ballast_tests::apiserver::faults::DropAt;
use ballast_tests::kube::{configmap, crd, KubeEnv};

fn seed_shop(k: &KubeEnv) {
    let s = &k.server;
    s.namespace("shop");
    s.namespace("tools");
    for i in 0..12 {
        s.create(
            "/api/v1/namespaces/shop/configmaps",
            configmap(&format!("cm-{i:02}"), &"x".repeat(i * 10)),
        );
    }
    s.create(
        "/api/v1/namespaces/tools/configmaps",
        configmap("tool", "t"),
    );
    s.create(
        "/api/v1/namespaces/shop/secrets",
        json!({"metadata": {"name": "db"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
    );
    s.create(
        "/apis/apps/v1/namespaces/shop/deployments",
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
    );
    s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "example.com", "Widget"),
    );
    s.create(
        "/apis/example.com/v1/namespaces/shop/widgets",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}),
    );
}

/// Asserts that the ConfigMaps the backup `out` stored are exactly those a LIST at
/// its recorded resourceVersion returns (no duplicate, none missing), and returns them.
fn stored_as_listed(k: &KubeEnv, out: &Value) -> Vec<(String, String)> {
    let cm = resource(manifest(out), "", "configmaps");
    let rv = cm["lists"][0]["resource_version"].as_str().unwrap();
    let stored = k.stored(out["snapshot_id"].as_str().unwrap(), "configmaps");
    assert_eq!(stored, k.list("/api/v1/configmaps", Some(rv)));
    stored
}

fn manifest(v: &Value) -> &Value {
    &v["manifest"]
}

fn resource<'a>(m: &'a Value, group: &str, resource: &str) -> &'a Value {
    m["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == group && r["resource"] == resource)
        .unwrap_or_else(|| panic!("{resource}.{group} not in the manifest"))
}

#[test]
fn a_cluster_is_captured_whole_and_read_back_object_by_object() {
    let k = KubeEnv::new();
    seed_shop(&k);
    let out = k.backup_ok(&[]);
    let m = manifest(&out);
    assert_eq!(m["complete"], true);
    assert_eq!(m["cluster"]["uid"], k.server.cluster_uid());
    assert_eq!(m["cluster"]["server"], k.server.url());
    assert_eq!(m["cluster"]["version"], "v1.31.0");
    // Every stored object is the server's, resourceVersion and all.
    let id = out["snapshot_id"].as_str().unwrap();
    assert_eq!(
        k.stored(id, "configmaps"),
        k.list("/api/v1/configmaps", None)
    );
    assert_eq!(
        k.stored(id, "widgets"),
        k.list("/apis/example.com/v1/widgets", None)
    );
    assert_eq!(resource(m, "", "configmaps")["objects"], 12 + 1 + 4 + 2); // + kube-root-ca.crt of each namespace
                                                                          // Subresources, create-only types and the second copy of events are not captured.
    let not: Vec<&str> = m["not_captured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap())
        .collect();
    assert!(
        not.contains(&"events.events.k8s.io") && not.contains(&"bindings"),
        "{not:?}"
    );
    assert!(!m["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resource"].as_str().unwrap().contains('/')));
    // The record names the cluster, and per resource its resourceVersion and count.
    let meta = &out["snapshot"]["source"]["meta"];
    assert_eq!(out["snapshot"]["source"]["kind"], "kube");
    assert_eq!(meta["cluster"]["uid"], k.server.cluster_uid());
    assert_eq!(meta["resources"]["v1/configmaps"]["count"], 19);
    assert!(meta["resources"]["apps/v1/deployments"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    // A Secret's data is stored as the server sent it (it is encrypted at rest).
    let secret = k.json(&["kube", "get", id, "secret/db", "-n", "shop"]);
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["apiVersion"], "v1");

    // Nothing changed: the second backup stores almost nothing.
    let first = out["snapshot"]["summary"]["bytes_stored"].as_u64().unwrap();
    let again = k.backup_ok(&[]);
    let second = again["snapshot"]["summary"]["bytes_stored"]
        .as_u64()
        .unwrap();
    let objects_new = again["snapshot"]["summary"]["blobs_new"].as_u64().unwrap();
    // Only the manifest (it holds times) and the trees above it are new.
    assert!(
        objects_new <= 4,
        "{objects_new} new blobs on an unchanged cluster"
    );
    assert!(second * 4 < first, "{second} of {first} bytes again");
}

#[test]
fn every_list_is_paginated_and_each_resource_is_read_at_one_resource_version() {
    let k = KubeEnv::new();
    seed_shop(&k);
    k.server.clear_served();
    // Objects change while the backup runs.
    k.server.faults(|f| f.latency_ms = 20);
    let writer = {
        let state = k.server.state().clone();
        std::thread::spawn(move || {
            for i in 0..40 {
                let req = ballast_tests::apiserver::api::Request {
                    method: "POST".into(),
                    path: "/api/v1/namespaces/shop/configmaps".into(),
                    content_type: "application/json".into(),
                    user_agent: "writer".into(),
                    body: serde_json::to_vec(&configmap(&format!("late-{i:02}"), "y")).unwrap(),
                    ..Default::default()
                };
                state.handle(&req);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let out = k.backup_ok(&["--page-size", "3"]);
    writer.join().unwrap();
    let served = k.server.served();
    let lists: Vec<_> = served
        .iter()
        .filter(|s| {
            s.method == "GET" && s.path.ends_with("/configmaps") && s.user_agent != "writer"
        })
        .collect();
    assert!(lists.len() >= 7, "{} pages of configmaps", lists.len());
    assert!(
        lists.iter().all(|s| s.query.contains("limit=3")),
        "an unpaginated list: {lists:?}"
    );
    assert!(lists.iter().any(|s| s.query.contains("continue=")));
    // What was stored is the list at the recorded resourceVersion, exactly.
    stored_as_listed(&k, &out);
}

#[test]
fn a_group_whose_discovery_fails_is_recorded_and_the_backup_exits_3() {
    let k = KubeEnv::new();
    seed_shop(&k);
    k.server.faults(|f| {
        f.broken_groups.insert(
            "metrics.k8s.io/v1beta1".into(),
            "the server is currently unable to handle the request".into(),
        );
    });
    let out = k.backup(&[]).expect_code(3).json();
    let m = manifest(&out);
    assert_eq!(m["complete"], false);
    let skipped = &m["skipped_groups"][0];
    assert_eq!(skipped["what"], "metrics.k8s.io/v1beta1");
    assert_eq!(skipped["code"], 503);
    assert!(skipped["reason"]
        .as_str()
        .unwrap()
        .contains("unable to handle the request"));
    // Everything else is there.
    assert_eq!(resource(m, "", "configmaps")["objects"], 19);
    // --strict makes it fatal, and records nothing.
    let before = k.env.snapshot_ids().len();
    let e = k.backup(&["--strict"]).expect_code(1);
    assert!(e.stderr.contains("metrics.k8s.io/v1beta1"), "{}", e.stderr);
    assert_eq!(k.env.snapshot_ids().len(), before);
}

#[test]
fn names_from_a_hostile_discovery_are_refused_and_the_rest_is_captured() {
    let k = KubeEnv::new();
    seed_shop(&k);
    let entry = |name: &str, kind: &str| {
        json!({"name": name, "singularName": "", "namespaced": true, "kind": kind,
               "verbs": ["get", "list", "watch"]})
    };
    k.server.faults(|f| {
        f.extra_resources.insert(
            "evil.example.com/v1".into(),
            vec![
                entry("..", "Pwn"),
                entry("widgets", "../Escape"),
                entry("_capture.json", "Capture"),
            ],
        );
        f.extra_resources
            .insert("Bad_Group/v1".into(), vec![entry("things", "Thing")]);
        f.extra_resources
            .insert("core/v1".into(), vec![entry("things", "Thing")]);
    });
    let out = k.backup(&[]).expect_code(3).json();
    let m = manifest(&out);
    let skipped: Vec<&str> = m["skipped_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["what"].as_str().unwrap())
        .collect();
    for what in [
        "evil.example.com/v1/..",
        "evil.example.com/v1/widgets",
        "evil.example.com/v1/_capture.json",
        "Bad_Group/v1",
        "core/v1",
    ] {
        assert!(skipped.contains(&what), "{what} not in {skipped:?}");
    }
    for x in m["skipped_groups"].as_array().unwrap() {
        assert!(
            x["reason"]
                .as_str()
                .unwrap()
                .contains("cannot be a Kubernetes name"),
            "{x}"
        );
    }
    assert!(
        m["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["group"] != "evil.example.com" && r["group"] != "core"),
        "{m}"
    );
    assert_eq!(resource(m, "", "configmaps")["objects"], 19);
}

#[test]
fn an_expired_continue_token_starts_the_resource_over_without_duplicates_or_gaps() {
    let k = KubeEnv::new();
    seed_shop(&k);
    k.server.faults(|f| {
        f.compact_after_pages.insert("configmaps".into(), 2);
    });
    let out = k.backup_ok(&["--page-size", "4", "--concurrency", "1"]);
    let m = manifest(&out);
    let cm = resource(m, "", "configmaps");
    assert_eq!(cm["lists"][0]["restarts"], 1, "{cm}");
    let stored = stored_as_listed(&k, &out);
    assert_eq!(cm["objects"].as_u64().unwrap() as usize, stored.len());
    let warnings = m["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("410")),
        "{warnings:?}"
    );
}

/// A server whose lists do not come in key order (an aggregated API server's may
/// not): the list starts over, kept whole in memory, and nothing is lost.
#[test]
fn objects_out_of_key_order_are_all_captured() {
    let k = KubeEnv::new();
    seed_shop(&k);
    k.server.namespace("a-shop");
    k.server
        .create("/api/v1/namespaces/a-shop/configmaps", configmap("x", "1"));
    k.server.faults(|f| {
        f.unordered.insert("configmaps".into());
    });
    let out = k.backup_ok(&["--page-size", "4"]);
    let cm = resource(manifest(&out), "", "configmaps");
    assert_eq!(cm["lists"][0]["restarts"], 1, "{cm}");
    stored_as_listed(&k, &out);
}

#[test]
fn throttling_is_waited_out_as_the_server_asks() {
    let k = KubeEnv::new();
    seed_shop(&k);
    k.server.clear_served();
    k.server.faults(|f| {
        f.throttle = 3;
        f.retry_after_s = 1;
    });
    let out = k.backup_ok(&[]);
    assert_eq!(manifest(&out)["complete"], true);
    let served = k.server.served();
    let throttled = served.iter().filter(|s| s.status == 429).count();
    assert_eq!(throttled, 3);
    // Each 429 said "retry after 1 s": the next request came no sooner (a lower
    // bound, which a slow machine cannot break).
    let last = served.iter().rposition(|s| s.status == 429).unwrap();
    let again = |s: &&ballast_tests::apiserver::faults::Served| {
        s.path == served[last].path && s.query == served[last].query
    };
    let next = served[last + 1..].iter().find(again).expect("asked again");
    assert!(
        next.at_ms >= served[last].at_ms + 950,
        "asked again {} ms after a Retry-After of 1 s",
        next.at_ms - served[last].at_ms
    );
}

#[test]
fn an_unreachable_server_is_named_with_its_context() {
    let k = KubeEnv::new();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = k.env.path("kubeconfig-down");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: prod-eu\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: prod-eu\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let out = k
        .env
        .run(&["backup", "kube", "--kubeconfig", kc.to_str().unwrap()])
        .expect_code(1);
    assert!(
        out.stderr.contains(&format!("http://127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("context prod-eu"), "{}", out.stderr);
    // A context that is not there is named with those that are.
    let out = k
        .env
        .run(&[
            "backup",
            "kube",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--context",
            "staging",
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains("no context \"staging\"") && out.stderr.contains("prod-eu"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_connection_dropped_in_a_list_is_resumed_without_duplicates_or_gaps() {
    let k = KubeEnv::new();
    seed_shop(&k);
    // The third page of configmaps breaks after two items.
    k.server.faults(|f| {
        f.drop_list
            .insert("configmaps".into(), DropAt { pages: 2, items: 2 });
    });
    let run = k.backup(&["--page-size", "4"]).ok();
    assert!(
        run.stderr.contains("cut short after 2 objects"),
        "{}",
        run.stderr
    );
    let out = run.json();
    let m = manifest(&out);
    let cm = resource(m, "", "configmaps");
    stored_as_listed(&k, &out);
    assert!(
        cm["lists"][0]["restarts"].is_null(),
        "a later page is asked for again, not the list: {cm}"
    );
    // The cut page was served (two items of four) and then asked for again.
    let cut = k
        .server
        .served()
        .into_iter()
        .filter(|s| s.path == "/api/v1/configmaps" && s.query.contains("continue="))
        .map(|s| (s.query, s.items))
        .collect::<Vec<_>>();
    let (query, _) = cut
        .iter()
        .find(|(_, n)| *n == 2)
        .expect("a page cut after two items");
    assert_eq!(cut.iter().filter(|(q, _)| q == query).count(), 2, "{cut:?}");
    // The first page breaks after two items: asked again, it would be a list at a
    // newer resourceVersion, so the list starts over.
    k.server.faults(|f| {
        f.drop_list
            .insert("configmaps".into(), DropAt { pages: 0, items: 2 });
    });
    let out = k.backup_ok(&["--page-size", "4"]);
    let cm = resource(manifest(&out), "", "configmaps");
    assert_eq!(cm["lists"][0]["restarts"], 1, "{cm}");
    stored_as_listed(&k, &out);
}

#[test]
fn a_forbidden_resource_is_recorded_and_strict_makes_it_fatal() {
    let k = KubeEnv::new();
    seed_shop(&k);
    k.server.faults(|f| {
        f.forbidden.insert("secrets".into());
    });
    let out = k.backup(&[]).expect_code(3).json();
    let m = manifest(&out);
    let f = &m["forbidden"][0];
    assert_eq!(f["what"], "secrets");
    assert_eq!(f["code"], 403);
    assert!(f["reason"]
        .as_str()
        .unwrap()
        .contains("cannot list resource \"secrets\""));
    assert_eq!(resource(m, "", "configmaps")["objects"], 19);
    let out = k.backup(&["--strict"]).expect_code(1);
    assert!(out.stderr.contains("secrets forbidden"), "{}", out.stderr);
}

#[test]
fn named_namespaces_are_got_by_name_so_a_user_who_may_not_list_them_gets_a_complete_backup() {
    let k = KubeEnv::new();
    seed_shop(&k);
    // A user allowed into `shop` only: no list of namespaces, and nothing
    // cluster-scoped.
    k.server.faults(|f| {
        f.forbidden_lists.insert("namespaces".into());
    });
    let out = k.backup_ok(&["-n", "shop,gone", "--cluster-resources", "no"]);
    let m = manifest(&out);
    assert_eq!(m["complete"], true, "{m}");
    let lists = &resource(m, "", "namespaces")["lists"];
    assert_eq!(lists.as_array().unwrap().len(), 2, "{lists}");
    assert_eq!(resource(m, "", "namespaces")["objects"], 1);
    let id = out["snapshot_id"].as_str().unwrap();
    let names: Vec<String> = k
        .json(&["kube", "ls", id, "--kind", "namespaces"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["shop"]);
    let served = k.server.served();
    assert!(served
        .iter()
        .any(|r| r.path == "/api/v1/namespaces/shop" && r.status == 200));
    assert!(!served
        .iter()
        .any(|r| r.path == "/api/v1/namespaces" && r.user_agent != "ballast-tests"));
    // With a glob the namespaces must be listed: forbidden, recorded, exit 3.
    let out = k
        .backup(&["-n", "sho*", "--cluster-resources", "no"])
        .expect_code(3)
        .json();
    assert_eq!(manifest(&out)["forbidden"][0]["what"], "namespaces");
}

#[test]
fn a_refused_token_is_a_clear_error_and_is_never_printed() {
    let k = KubeEnv::new();
    k.server.faults(|f| f.token = "the-right-token".into());
    let kc = k
        .server
        .kubeconfig(k.env.dir.path(), "expired", Some("s3cr3t-expired-token"));
    let out = k
        .env
        .run(&[
            "backup",
            "kube",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "-vv",
        ])
        .expect_code(1);
    assert!(
        out.stderr
            .contains("refused the credentials of context expired"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("s3cr3t") && !out.stdout.contains("s3cr3t"),
        "{}",
        out.stderr
    );
    // The right token works.
    let good = k
        .server
        .kubeconfig(k.env.dir.path(), "good", Some("the-right-token"));
    k.env
        .run(&["backup", "kube", "--kubeconfig", good.to_str().unwrap()])
        .ok();
}

/// Over HTTPS, the server is checked against the kubeconfig's CA; in a pod, the
/// service account's token, CA and the KUBERNETES_SERVICE_* variables are used.
#[test]
fn tls_and_the_pods_service_account() {
    let k = KubeEnv::new();
    let s = ballast_tests::apiserver::TestApiServer::start_tls();
    s.faults(|f| f.token = "sa-token-of-the-pod".into());
    s.namespace("shop");
    let kc = s.kubeconfig(k.env.dir.path(), "tls", Some("sa-token-of-the-pod"));
    let out = k
        .env
        .run(&[
            "backup",
            "kube",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(out["manifest"]["cluster"]["server"], s.url());
    // Another CA: the server is not trusted.
    let text = std::fs::read_to_string(&kc).unwrap();
    let other = k.env.path("other-ca.pem");
    std::fs::write(&other, include_str!("../fixtures/other-ca.pem")).unwrap();
    let bad = k.env.path("kubeconfig-bad-ca");
    std::fs::write(
        &bad,
        text.replace(
            &format!("{}/ca.pem", ballast_tests::apiserver::TEST_TLS),
            other.to_str().unwrap(),
        ),
    )
    .unwrap();
    let e = k
        .env
        .run(&["backup", "kube", "--kubeconfig", bad.to_str().unwrap()])
        .expect_code(1);
    assert!(
        e.stderr.contains(&s.url()) && e.stderr.to_lowercase().contains("certificate"),
        "{}",
        e.stderr
    );

    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: no mount namespace for the service-account files here");
        return;
    }
    // In a pod: the files of /var/run/secrets/kubernetes.io/serviceaccount, in a
    // mount namespace of the test's own, and no kubeconfig anywhere.
    let sa = k.env.path("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "sa-token-of-the-pod").unwrap();
    std::fs::copy(
        format!("{}/ca.pem", ballast_tests::apiserver::TEST_TLS),
        sa.join("ca.crt"),
    )
    .unwrap();
    std::fs::write(sa.join("namespace"), "shop").unwrap();
    let ballast = ballast_tests::ballast_bin();
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && cp {}/* /run/secrets/kubernetes.io/serviceaccount/ && exec {} --repo {} backup kube --json",
        sa.display(),
        ballast.display(),
        k.env.repo
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", k.env.path("no-home"))
        .env("BALLAST_PASSWORD", ballast_tests::PASSWORD)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", s.addr().port().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["manifest"]["cluster"]["context"], "in-cluster");
    assert_eq!(v["manifest"]["complete"], true);
}

#[test]
fn a_large_configmap_and_two_crds_that_share_a_kind() {
    let k = KubeEnv::new();
    let s = &k.server;
    s.namespace("shop");
    let big: String = (0..1_500_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    s.create("/api/v1/namespaces/shop/configmaps", configmap("big", &big));
    s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "a.example.com", "Widget"),
    );
    s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "b.example.com", "Widget"),
    );
    for g in ["a", "b"] {
        s.create(
            &format!("/apis/{g}.example.com/v1/namespaces/shop/widgets"),
            json!({"apiVersion": format!("{g}.example.com/v1"), "kind": "Widget", "metadata": {"name": "w"}, "spec": {"from": g}}),
        );
    }
    let out = k.backup_ok(&[]);
    let id = out["snapshot_id"].as_str().unwrap();
    let got = k.json(&["kube", "get", id, "cm/big", "-n", "shop"]);
    assert_eq!(got["data"]["k"].as_str().unwrap(), big);
    // One kind in two groups: a bare name is ambiguous and says how to choose.
    let e = k
        .env
        .run(&["kube", "get", id, "widget/w", "-n", "shop"])
        .expect_code(1);
    assert!(
        e.stderr.contains("Widget.a.example.com") && e.stderr.contains("Widget.b.example.com"),
        "{}",
        e.stderr
    );
    for g in ["a", "b"] {
        let w = k.json(&[
            "kube",
            "get",
            id,
            &format!("Widget.{g}.example.com/w"),
            "-n",
            "shop",
        ]);
        assert_eq!(w["spec"]["from"], g);
    }
}

#[test]
fn many_small_objects_are_captured() {
    let k = KubeEnv::new();
    let n = k.server.seed(&ballast_tests::apiserver::Dataset {
        namespaces: 20,
        configmaps: 60_000,
        secrets: 30_000,
        custom: 10_000,
        deployments: 0,
        services: 0,
        min_size: 40,
        max_size: 120,
        seed: 7,
    });
    assert!(n >= 100_000);
    let out = k.backup_ok(&[]);
    let m = manifest(&out);
    assert_eq!(resource(m, "", "configmaps")["objects"], 60_000 + 24);
    assert_eq!(resource(m, "", "secrets")["objects"], 30_000);
    assert_eq!(
        resource(m, "bench.example.com", "widgets")["objects"],
        5_000
    );
    assert_eq!(
        out["snapshot"]["summary"]["files"].as_u64().unwrap() as usize,
        k.server.state().inner.lock().unwrap().store.count()
    );
}

#[test]
fn killed_halfway_records_nothing_and_the_next_backup_reuses_what_was_uploaded() {
    let k = KubeEnv::new();
    k.server.namespace("big");
    for i in 0..120 {
        let data = base64_random(600_000, i);
        k.server.create(
            "/api/v1/namespaces/big/secrets",
            json!({"metadata": {"name": format!("s-{i:03}")}, "type": "Opaque", "data": {"blob": data}}),
        );
    }
    // Slow pages so that the kill lands after packs went up and before the end.
    k.server.faults(|f| f.latency_ms = 150);
    let kc = k.kubeconfig.display().to_string();
    let mut child = k
        .env
        .cmd(&["backup", "kube", "--kubeconfig", &kc, "--page-size", "2"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while k.env.objects("data").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before its first pack"
        );
        assert!(std::time::Instant::now() < deadline, "no pack uploaded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        k.env.snapshot_ids().is_empty(),
        "a killed backup has no record"
    );
    k.server.faults(|f| f.latency_ms = 0);
    let out = k.backup_ok(&[]);
    let s = &out["snapshot"]["summary"];
    let total = s["total_bytes"].as_u64().unwrap();
    let new = s["bytes_new"].as_u64().unwrap();
    assert!(
        new < total * 3 / 4,
        "the second backup added {new} of {total} bytes: what the first uploaded was not reused"
    );
}

fn base64_random(n: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    ballast_tests::random_bytes(n, seed + 1)
        .iter()
        .map(|b| ALPHABET[(b & 63) as usize] as char)
        .collect()
}

#[test]
fn a_namespace_backup_takes_the_cluster_objects_its_objects_need() {
    let k = KubeEnv::new();
    seed_shop(&k);
    let s = &k.server;
    for (name, class) in [("fast", true), ("slow", false)] {
        let _ = class;
        s.create(
            "/apis/storage.k8s.io/v1/storageclasses",
            json!({"metadata": {"name": name}, "provisioner": "x"}),
        );
    }
    s.create(
        "/api/v1/persistentvolumes",
        json!({"metadata": {"name": "pv-shop"}, "spec": {"capacity": {"storage": "1Gi"}, "storageClassName": "fast", "accessModes": ["ReadWriteOnce"]}}),
    );
    s.create(
        "/api/v1/persistentvolumes",
        json!({"metadata": {"name": "pv-other"}, "spec": {"capacity": {"storage": "1Gi"}, "storageClassName": "slow"}}),
    );
    s.create(
        "/api/v1/namespaces/shop/persistentvolumeclaims",
        json!({"metadata": {"name": "data", "labels": {"team": "shop"}}, "spec": {"volumeName": "pv-shop", "accessModes": ["ReadWriteOnce"]}}),
    );
    s.create(
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        json!({"metadata": {"name": "shop-high"}, "value": 1000}),
    );
    s.create(
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        json!({"metadata": {"name": "unused"}, "value": 10}),
    );
    s.create(
        "/apis/apps/v1/namespaces/shop/statefulsets",
        json!({"metadata": {"name": "db"}, "spec": {"selector": {"matchLabels": {"app": "db"}},
               "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"priorityClassName": "shop-high", "containers": []}}}}),
    );
    s.create(
        "/api/v1/namespaces/shop/serviceaccounts",
        json!({"metadata": {"name": "app"}}),
    );
    for (name, ns) in [("app-reader", "shop"), ("tool-reader", "tools")] {
        s.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                   "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]}),
        );
        s.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"metadata": {"name": name}, "rules": []}),
        );
    }
    // A CRD may serve a *.k8s.io group: its custom objects still need it.
    s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd(
            "volumesnapshots",
            "snapshot.storage.k8s.io",
            "VolumeSnapshot",
        ),
    );
    s.create(
        "/apis/snapshot.storage.k8s.io/v1/namespaces/shop/volumesnapshots",
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": "data-1"}, "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
    );
    // Opted out by its label.
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "scratch", "labels": {"ballast.io/exclude": "true"}}, "data": {}}),
    );
    let out = k.backup_ok(&["-n", "shop"]);
    let id = out["snapshot_id"].as_str().unwrap();
    let m = manifest(&out);
    // The names a snapshot holds of one kind.
    let names_in = |id: &str, kind: &str| -> Vec<String> {
        k.json(&["kube", "ls", id, "--kind", kind])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let names = |kind: &str| names_in(id, kind);
    assert_eq!(names("pv"), ["pv-shop"]);
    assert_eq!(names("storageclasses"), ["fast"]);
    assert_eq!(names("priorityclasses"), ["shop-high"]);
    assert_eq!(
        names("crd"),
        [
            "volumesnapshots.snapshot.storage.k8s.io",
            "widgets.example.com"
        ]
    );
    assert_eq!(names("clusterrolebindings"), ["app-reader"]);
    assert_eq!(names("clusterroles"), ["app-reader"]);
    assert_eq!(names("namespaces"), ["shop"]);
    assert!(!names("configmaps").contains(&"scratch".to_string()));
    assert!(!names("configmaps").contains(&"tool".to_string()));
    assert_eq!(resource(m, "", "persistentvolumes")["not_needed"], 1);
    assert_eq!(m["excluded_objects"][0]["name"], "scratch");
    assert_eq!(resource(m, "", "configmaps")["excluded_by_label"], 1);
    // Only the namespace's lists were made: each namespaced resource in `shop`.
    assert!(k
        .server
        .served()
        .iter()
        .filter(|r| r.path.ends_with("/configmaps") && r.user_agent != "ballast-tests")
        .all(|r| r.path == "/api/v1/namespaces/shop/configmaps"));

    // A label selector picks the namespaced objects; the Namespace and the cluster
    // objects they need come whatever their labels.
    let out = k.backup_ok(&["-n", "shop", "-l", "team=shop"]);
    let selected = out["snapshot_id"].as_str().unwrap();
    let names = |kind: &str| names_in(selected, kind);
    assert_eq!(names("pvc"), ["data"]);
    assert_eq!(names("pv"), ["pv-shop"]);
    assert_eq!(names("storageclasses"), ["fast"]);
    assert_eq!(names("namespaces"), ["shop"]);
    assert!(names("configmaps").is_empty());

    // --cluster-resources no takes none (but the namespace itself); resources by kind.
    let out = k.backup_ok(&[
        "-n",
        "shop",
        "--cluster-resources",
        "no",
        "--include-resources",
        "ConfigMap,namespaces",
    ]);
    let captured: Vec<String> = manifest(&out)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(captured, ["configmaps", "namespaces"]);
    // A label selector goes to the server.
    let out = k.backup_ok(&["-l", "app=web", "--include-resources", "deployments.apps"]);
    assert_eq!(
        resource(manifest(&out), "apps", "deployments")["objects"],
        1
    );
}

#[test]
fn all_versions_keeps_every_served_version() {
    let k = KubeEnv::new();
    k.server.namespace("shop");
    k.server.create(
        "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers",
        json!({"metadata": {"name": "web"}, "spec": {"maxReplicas": 3}}),
    );
    let one = k.backup_ok(&["--include-resources", "hpa"]);
    let versions = |v: &Value| -> Vec<String> {
        manifest(v)["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(versions(&one), ["v2"]);
    let all = k.backup_ok(&["--include-resources", "hpa", "--all-versions"]);
    assert_eq!(versions(&all), ["v1", "v2"]);
}
