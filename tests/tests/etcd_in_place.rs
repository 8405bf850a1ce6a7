//! `ballast etcd restore --in-place` on a node laid out like a kubeadm control plane:
//! etcd runs from a static-pod manifest (followed here by a stand-in for the
//! kubelet), and the restore stops it, keeps the old data, restores, starts it and
//! checks it; `--rollback` puts the old data back.

use std::process::Command;
use std::time::{Duration, Instant};

use ballast_tests::etcd::Member;
use ballast_tests::kubelet::StaticPodRunner;
use ballast_tests::Env;

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .unwrap()
}

fn wait_healthy(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(endpoint, &["endpoint", "health"]).status.success() {
        assert!(Instant::now() < deadline, "etcd did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(endpoint: &str, key: &str) -> Option<String> {
    let out = etcdctl(endpoint, &["get", key, "--print-value-only"]);
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!v.is_empty()).then_some(v)
}

#[test]
fn in_place_restore_on_a_kubeadm_style_node_and_rollback() {
    let env = Env::init_local();
    let node = env.path("node");
    let manifests = node.join("etc/kubernetes/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let data_dir = node.join("var/lib/etcd");
    let m = Member::new("cp1");
    let endpoint = format!("127.0.0.1:{}", m.client);
    let manifest = manifests.join("etcd.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: etcd, namespace: kube-system}}\n\
             spec:\n  containers:\n  - name: etcd\n    image: registry.k8s.io/etcd:3.4.23-0\n    command:\n\
             \x20   - etcd\n    - --name=cp1\n    - --data-dir={}\n\
             \x20   - --listen-client-urls=http://{endpoint}\n    - --advertise-client-urls=http://{endpoint}\n\
             \x20   - --listen-peer-urls={peer}\n    - --initial-advertise-peer-urls={peer}\n\
             \x20   - --initial-cluster=cp1={peer}\n",
            data_dir.display(),
            peer = m.peer_url()
        ),
    )
    .unwrap();
    let _kubelet = StaticPodRunner::start(manifest.clone(), node.join("etcd.log"));
    wait_healthy(&endpoint);
    // Something writes as soon as etcd answers (an API server): the restore's check
    // counts keys at the restored revision, so these writes do not make it fail.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (writing, endpoint) = (writing.clone(), endpoint.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                if etcdctl(&endpoint, &["put", &format!("/registry/events/e{n}"), "x"])
                    .status
                    .success()
                {
                    n += 1;
                }
            }
            n
        })
    };
    for i in 0..20 {
        assert!(etcdctl(&endpoint, &["put", &format!("/app/{i}"), "good"])
            .status
            .success());
    }
    env.json(&["etcd", "snapshot", "--endpoints", &endpoint]);
    // The mistake the restore undoes.
    assert!(etcdctl(&endpoint, &["del", "/app/", "--prefix"])
        .status
        .success());
    assert!(etcdctl(&endpoint, &["put", "/oops", "1"]).status.success());

    let m_arg = manifest.to_str().unwrap();
    let refused = env
        .run(&[
            "etcd",
            "restore",
            "latest",
            "--in-place",
            "--manifest",
            m_arg,
            "--endpoints",
            &endpoint,
        ])
        .expect_code(1);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(
        get(&endpoint, "/oops").as_deref(),
        Some("1"),
        "nothing changed"
    );

    let out = env.json(&[
        "etcd",
        "restore",
        "latest",
        "--in-place",
        "--manifest",
        m_arg,
        "--yes",
        "--endpoints",
        &endpoint,
    ]);
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(writer.join().unwrap() > 0, "the writer wrote");
    let restored_keys = out["restored"]["keys"].as_u64().unwrap();
    assert_eq!(
        out["in_place"]["keys"].as_u64(),
        Some(restored_keys),
        "{out}"
    );
    assert!(manifest.exists(), "the manifest is back");
    assert_eq!(get(&endpoint, "/app/7").as_deref(), Some("good"));
    assert_eq!(get(&endpoint, "/oops"), None);
    assert_eq!(get(&endpoint, "/app/19").as_deref(), Some("good"));
    let previous = std::path::PathBuf::from(out["in_place"]["moved_aside"].as_str().unwrap());
    assert!(
        previous.join("member/snap/db").exists(),
        "the old data is kept"
    );

    let back = env.json(&[
        "etcd",
        "restore",
        "--rollback",
        "--manifest",
        m_arg,
        "--yes",
        "--endpoints",
        &endpoint,
    ]);
    assert!(back["rolled_back"]["keys"].as_u64().unwrap() >= 1, "{back}");
    assert_eq!(get(&endpoint, "/oops").as_deref(), Some("1"));
    assert_eq!(get(&endpoint, "/app/7"), None);
    // The restored data is kept too, and there is nothing left to roll back.
    assert!(std::path::Path::new(back["rolled_back"]["moved_aside"].as_str().unwrap()).is_dir());
    env.run(&[
        "etcd",
        "restore",
        "--rollback",
        "--manifest",
        m_arg,
        "--yes",
        "--endpoints",
        &endpoint,
    ])
    .expect_code(1);
}

/// A node laid out like a kubeadm control-plane node of a multi-member cluster: its
/// etcd manifest (naming every member) followed by a stand-in for the kubelet.
struct Node {
    manifest: std::path::PathBuf,
    endpoint: String,
    _kubelet: StaticPodRunner,
}

fn three_nodes(env: &Env) -> Vec<Node> {
    let members: Vec<Member> = (1..=3).map(|i| Member::new(&format!("cp{i}"))).collect();
    let cluster = ballast_tests::etcd::initial_cluster(&members);
    let nodes: Vec<Node> = members
        .iter()
        .map(|m| {
            let root = env.path(&m.name);
            let manifests = root.join("etc/kubernetes/manifests");
            std::fs::create_dir_all(&manifests).unwrap();
            let endpoint = format!("127.0.0.1:{}", m.client);
            let manifest = manifests.join("etcd.yaml");
            std::fs::write(
                &manifest,
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: etcd, namespace: kube-system}}\n\
                     spec:\n  containers:\n  - name: etcd\n    command:\n\
                     \x20   - etcd\n    - --name={name}\n    - --data-dir={data}\n\
                     \x20   - --listen-client-urls=http://{endpoint}\n    - --advertise-client-urls=http://{endpoint}\n\
                     \x20   - --listen-peer-urls={peer}\n    - --initial-advertise-peer-urls={peer}\n\
                     \x20   - --initial-cluster={cluster}\n",
                    name = m.name,
                    data = root.join("var/lib/etcd").display(),
                    peer = m.peer_url()
                ),
            )
            .unwrap();
            let kubelet = StaticPodRunner::start(manifest.clone(), root.join("etcd.log"));
            Node {
                manifest,
                endpoint,
                _kubelet: kubelet,
            }
        })
        .collect();
    for n in &nodes {
        wait_healthy(&n.endpoint);
    }
    nodes
}

fn cluster_id(endpoint: &str) -> u64 {
    let out = etcdctl(endpoint, &["endpoint", "status", "-w", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["Status"]["header"]["cluster_id"].as_u64().unwrap()
}

fn member_count(endpoint: &str) -> usize {
    let out = etcdctl(endpoint, &["member", "list", "-w", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["members"].as_array().unwrap().len()
}

/// One member of a three-member cluster restored alone would start a cluster of its
/// own beside the others: refused, naming the members. With --whole-cluster on one
/// node only, the others keep running the old cluster: it gives up and puts etcd back.
/// Run on every node at once, the three restored members form one new cluster (a new
/// cluster id) holding the snapshot's data.
#[test]
fn whole_cluster_in_place_restore_on_three_kubeadm_style_nodes() {
    let env = Env::init_local();
    let nodes = three_nodes(&env);
    let first = &nodes[0].endpoint;
    for i in 0..20 {
        assert!(etcdctl(first, &["put", &format!("/app/{i}"), "good"])
            .status
            .success());
    }
    let snap = env.json(&["etcd", "snapshot", "--endpoints", first]);
    let id = snap["snapshot_id"].as_str().unwrap().to_string();
    assert!(etcdctl(first, &["del", "/app/", "--prefix"])
        .status
        .success());
    assert!(etcdctl(first, &["put", "/oops", "1"]).status.success());
    let old_id = cluster_id(first);

    let restore = |node: &Node, extra: &[&str]| {
        let mut args = vec![
            "etcd",
            "restore",
            &id,
            "--in-place",
            "--manifest",
            node.manifest.to_str().unwrap(),
            "--yes",
            "--endpoints",
            &node.endpoint,
        ];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let out = restore(&nodes[0], &[]).expect_code(1);
    assert!(
        out.stderr.contains("one of 3 members (cp1, cp2, cp3)")
            && out.stderr.contains("--whole-cluster"),
        "{}",
        out.stderr
    );
    let out = restore(&nodes[0], &["--whole-cluster", "--wait", "3s"]).expect_code(1);
    assert!(
        out.stderr.contains("still run the cluster being replaced"),
        "{}",
        out.stderr
    );
    assert!(nodes[0].manifest.exists(), "the manifest is back");
    wait_healthy(first);
    assert_eq!(get(first, "/oops").as_deref(), Some("1"), "nothing changed");

    let outs: Vec<serde_json::Value> = std::thread::scope(|s| {
        let runs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let restore = &restore;
                s.spawn(move || {
                    restore(n, &["--whole-cluster", "--wait", "60s", "--json"])
                        .ok()
                        .json()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (n, out) in nodes.iter().zip(&outs) {
        assert_eq!(
            out["in_place"]["keys"], out["restored"]["keys"],
            "{}: {out}",
            n.endpoint
        );
        assert_eq!(get(&n.endpoint, "/app/7").as_deref(), Some("good"));
        assert_eq!(get(&n.endpoint, "/oops"), None);
        assert_eq!(member_count(&n.endpoint), 3);
    }
    let new_id = cluster_id(first);
    assert_ne!(new_id, old_id, "a new cluster");
    for n in &nodes[1..] {
        assert_eq!(cluster_id(&n.endpoint), new_id, "one cluster");
    }
    // The three form one cluster: a write on one is read on another.
    assert!(etcdctl(first, &["put", "/after", "yes"]).status.success());
    assert_eq!(get(&nodes[2].endpoint, "/after").as_deref(), Some("yes"));
}
