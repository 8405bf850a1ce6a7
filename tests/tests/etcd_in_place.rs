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

/// One member of a three-member cluster restored alone would start a cluster of its
/// own beside the others: refused, naming the members; with --cluster-stopped, only
/// once the other members no longer answer.
#[test]
fn in_place_restore_of_one_member_of_a_cluster_is_refused() {
    let cluster = ballast_tests::etcd::Etcd::start_cluster(3);
    let first = &cluster[0];
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &first.endpoint]);
    let manifest = env.path("etcd.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: etcd, namespace: kube-system}}\n\
             spec:\n  containers:\n  - name: etcd\n    command:\n\
             \x20   - etcd\n    - --name={}\n    - --data-dir={}\n\
             \x20   - --initial-cluster={}\n",
            first.member.name,
            env.path("data").display(),
            first.initial_cluster
        ),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "etcd",
            "restore",
            "latest",
            "--in-place",
            "--manifest",
            m,
            "--yes",
            "--endpoints",
            &first.endpoint,
        ];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let out = run(&[]).expect_code(1);
    assert!(
        out.stderr.contains("one of 3 members (m1, m2, m3)")
            && out.stderr.contains("--cluster-stopped"),
        "{}",
        out.stderr
    );
    let out = run(&["--cluster-stopped"]).expect_code(1);
    assert!(
        out.stderr.contains("other members still answer"),
        "{}",
        out.stderr
    );
    assert!(manifest.exists(), "nothing was touched");
}
