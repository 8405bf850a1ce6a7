//! The test API server keeps the conventions its module doc lists: these tests hold
//! it to them, so that what ballast is tested against behaves as kube-apiserver does
//! where ballast depends on it.

use std::io::{BufRead, BufReader, Write};

use serde_json::{json, Value};

use ballast_tests::apiserver::TestApiServer;
use ballast_tests::kube::{configmap, crd};

fn get(s: &TestApiServer, path: &str) -> (u16, Value) {
    s.call("GET", path, None)
}

#[test]
fn objects_get_what_the_server_owns_and_conflicts_are_refused() {
    let s = TestApiServer::start();
    let ns = s.namespace("shop");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "shop"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    // A new namespace has what its controllers put there.
    let (code, _) = get(&s, "/api/v1/namespaces/shop/serviceaccounts/default");
    assert_eq!(code, 200);
    let cm = s.create(
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"generateName": "cfg-"}, "data": {}}),
    );
    let name = cm["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    for owned in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(cm["metadata"][owned].is_string(), "{owned}: {cm}");
    }
    assert_eq!(cm["metadata"]["generation"], 1);
    assert!(cm["metadata"]["managedFields"].is_array());
    let (code, e) = s.call(
        "POST",
        "/api/v1/namespaces/shop/configmaps",
        Some(&json!({"metadata": {"name": name}})),
    );
    assert_eq!((code, e["reason"].as_str()), (409, Some("AlreadyExists")));
    // A stale resourceVersion is a conflict; the current one is not.
    let mut stale = cm.clone();
    stale["data"] = json!({"k": "1"});
    let path = format!("/api/v1/namespaces/shop/configmaps/{name}");
    let (code, updated) = s.call("PUT", &path, Some(&stale));
    assert_eq!(code, 200);
    assert_eq!(updated["metadata"]["generation"], 2);
    let (code, e) = s.call("PUT", &path, Some(&stale));
    assert_eq!((code, e["reason"].as_str()), (409, Some("Conflict")));
    // A namespace that does not exist; a name that is not one.
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/none/configmaps",
        Some(&configmap("a", "b")),
    );
    assert_eq!(code, 404);
    let (code, e) = s.call(
        "POST",
        "/api/v1/namespaces/shop/configmaps",
        Some(&configmap("Not_A_Name", "b")),
    );
    assert_eq!((code, e["reason"].as_str()), (422, Some("Invalid")));
    // dryRun=All writes nothing.
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/shop/configmaps?dryRun=All",
        Some(&configmap("dry", "b")),
    );
    assert_eq!(code, 201);
    assert_eq!(get(&s, "/api/v1/namespaces/shop/configmaps/dry").0, 404);
}

#[test]
fn status_services_and_crds_behave_as_kubernetes_does() {
    let s = TestApiServer::start();
    s.namespace("shop");
    // Status is kept apart: dropped on create, kept on update, set by /status.
    let d = s.create(
        "/apis/apps/v1/namespaces/shop/deployments",
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}, "status": {"replicas": 9}}),
    );
    assert!(d["status"].is_null());
    let mut st = d.clone();
    st["status"] = json!({"readyReplicas": 1});
    let (code, _) = s.call(
        "PUT",
        "/apis/apps/v1/namespaces/shop/deployments/web/status",
        Some(&st),
    );
    assert_eq!(code, 200);
    let (_, now) = get(&s, "/apis/apps/v1/namespaces/shop/deployments/web");
    assert_eq!(now["status"]["readyReplicas"], 1);
    let mut spec = now.clone();
    spec["spec"]["replicas"] = json!(3);
    spec["status"] = json!({});
    let (_, after) = s.call(
        "PUT",
        "/apis/apps/v1/namespaces/shop/deployments/web",
        Some(&spec),
    );
    assert_eq!(
        after["status"]["readyReplicas"], 1,
        "status survives a spec update"
    );
    // Services get addresses; a taken node port is refused; a cluster IP is fixed.
    let a = s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
    );
    let ip = a["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    let port = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port));
    let (code, e) = s.call(
        "POST",
        "/api/v1/namespaces/shop/services",
        Some(&json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}})),
    );
    assert_eq!(code, 422, "{e}");
    let headless = s.create(
        "/api/v1/namespaces/shop/services",
        json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    );
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let mut moved = a.clone();
    moved["spec"]["clusterIP"] = json!("10.96.99.99");
    let (code, _) = s.call("PUT", "/api/v1/namespaces/shop/services/a", Some(&moved));
    assert_eq!(code, 422);
    // A CRD is served once Established, and appears in discovery.
    assert_eq!(get(&s, "/apis/example.com/v1").0, 404);
    let c = s.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd("widgets", "example.com", "Widget"),
    );
    let established = c["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["type"] == "Established" && x["status"] == "True");
    assert!(established);
    let (_, groups) = get(&s, "/apis");
    assert!(groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "example.com"));
    let (_, list) = get(&s, "/apis/example.com/v1");
    assert_eq!(list["resources"][0]["name"], "widgets");
    s.create(
        "/apis/example.com/v1/namespaces/shop/widgets",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    );
    let (code, _) = s.call(
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(
        get(&s, "/apis/example.com/v1/namespaces/shop/widgets/w").0,
        404
    );
}

#[test]
fn lists_page_at_one_revision_select_and_expire() {
    let s = TestApiServer::start();
    s.namespace("shop");
    for i in 0..7 {
        let mut cm = configmap(&format!("c{i}"), "x");
        cm["metadata"]["labels"] = json!({"tier": if i % 2 == 0 { "web" } else { "db" }});
        s.create("/api/v1/namespaces/shop/configmaps", cm);
    }
    let (_, page1) = get(&s, "/api/v1/namespaces/shop/configmaps?limit=3");
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    // Built-in list items come without their type, as kube-apiserver sends them.
    assert!(page1["items"][0]["kind"].is_null());
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let rv = page1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // A change after the first page is not in the later pages.
    s.create(
        "/api/v1/namespaces/shop/configmaps",
        configmap("c00-late", "x"),
    );
    let (_, page2) = get(
        &s,
        &format!("/api/v1/namespaces/shop/configmaps?limit=10&continue={token}"),
    );
    assert_eq!(page2["metadata"]["resourceVersion"], rv.as_str());
    let names: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"c00-late"), "{names:?}");
    assert_eq!(names.len(), 5, "{names:?}"); // 7 + kube-root-ca.crt, less the first 3
                                             // Selectors.
    let (_, web) = get(
        &s,
        "/api/v1/namespaces/shop/configmaps?labelSelector=tier%3Dweb",
    );
    assert_eq!(web["items"].as_array().unwrap().len(), 4);
    let (_, one) = get(&s, "/api/v1/configmaps?fieldSelector=metadata.name%3Dc3");
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let (code, _) = get(&s, "/api/v1/configmaps?fieldSelector=data.k%3Dx");
    assert_eq!(code, 400);
    // After a compaction the token is too old: 410 with kube-apiserver's message.
    let (code, _) = s.call("POST", "/_test/compact", None);
    assert_eq!(code, 200);
    let (code, e) = get(
        &s,
        &format!("/api/v1/namespaces/shop/configmaps?limit=10&continue={token}"),
    );
    assert_eq!((code, e["reason"].as_str()), (410, Some("Expired")));
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("continue parameter is too old"));
}

#[test]
fn a_watch_replays_and_then_streams_changes() {
    let s = TestApiServer::start();
    s.namespace("shop");
    let first = s.create("/api/v1/namespaces/shop/configmaps", configmap("a", "1"));
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    s.create("/api/v1/namespaces/shop/configmaps", configmap("b", "1"));
    let addr = s.addr();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /api/v1/namespaces/shop/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut events = Vec::new();
    let mut line = String::new();
    while events.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            if v["type"].is_string() {
                events.push(v.clone());
                if events.len() == 1 {
                    // A change made while the watch is open arrives too.
                    let (code, _) = s.call("DELETE", "/api/v1/namespaces/shop/configmaps/a", None);
                    assert_eq!(code, 200);
                }
            }
        }
    }
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
    assert_eq!(events[1]["type"], "DELETED");
    assert_eq!(events[1]["object"]["metadata"]["name"], "a");
}

#[test]
fn discovery_lists_groups_subresources_and_preferred_versions() {
    let s = TestApiServer::start();
    let (_, core) = get(&s, "/api/v1");
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pods") && names.contains(&"pods/log") && names.contains(&"pods/status")
    );
    let (_, groups) = get(&s, "/apis");
    let autoscaling = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .unwrap();
    assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
    let (_, v) = get(&s, "/version");
    assert!(v["gitVersion"].as_str().unwrap().starts_with("v1."));
}

/// DeleteOptions' preconditions: a delete names the UID it means, and an object
/// made since under the same name is not deleted.
#[test]
fn a_delete_with_a_uid_precondition_deletes_only_that_object() {
    let s = TestApiServer::start();
    s.namespace("shop");
    let cm = s.create(
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "a"}}),
    );
    let path = "/api/v1/namespaces/shop/configmaps/a";
    let other = json!({"preconditions": {"uid": "not-its-uid"}});
    let (code, v) = s.call("DELETE", path, Some(&other));
    assert_eq!(code, 409, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("Precondition failed"));
    let own = json!({"preconditions": {"uid": cm["metadata"]["uid"]}});
    assert_eq!(s.call("DELETE", path, Some(&own)).0, 200);
    assert_eq!(s.call("GET", path, None).0, 404);
}
