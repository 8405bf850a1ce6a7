//! host/deploy/: every manifest parses, and holds the properties the docs promise:
//! least-privilege RBAC (no `*` verb, no cluster-admin, backups read-only, restores
//! a separate role), hardened containers, the etcd CronJob's placement and
//! concurrency, the kustomization's files, and a static, non-root image.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("host/deploy")
}

/// Every document of every manifest (kustomization.yaml and server.yaml aside).
fn manifests() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(deploy().join("kubernetes")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "kustomization.yaml" || name == "server.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                assert!(
                    v["kind"].is_string() && v["apiVersion"].is_string(),
                    "{name}: {v}"
                );
                out.push((name.clone(), v));
            }
        }
    }
    out
}

fn of_kind<'a>(all: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|(_, v)| v["kind"] == kind)
        .map(|(_, v)| v)
        .collect()
}

fn named<'a>(all: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    of_kind(all, kind)
        .into_iter()
        .find(|v| v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn verbs(role: &Value) -> Vec<String> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["verbs"].as_array().unwrap().iter())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rbac_is_least_privilege() {
    let all = manifests();
    for role in of_kind(&all, "ClusterRole")
        .into_iter()
        .chain(of_kind(&all, "Role"))
    {
        let v = verbs(role);
        assert!(!v.iter().any(|v| v == "*"), "a `*` verb in {role}");
        assert!(
            !v.iter()
                .any(|v| v == "escalate" || v == "bind" || v == "impersonate"),
            "{role}"
        );
    }
    for b in of_kind(&all, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(&all, "RoleBinding"))
    {
        assert_ne!(b["roleRef"]["name"], "cluster-admin", "{b}");
        assert_ne!(b["roleRef"]["name"], "admin", "{b}");
    }
    // Backups read only; restores are another role, bound to another account.
    let backup = verbs(named(&all, "ClusterRole", "ballast-backup"));
    assert!(
        backup.iter().all(|v| v == "get" || v == "list"),
        "{backup:?}"
    );
    let restore = verbs(named(&all, "ClusterRole", "ballast-restore"));
    assert!(restore.contains(&"create".to_string()));
    let server_sa =
        named(&all, "ClusterRoleBinding", "ballast-backup")["subjects"][0]["name"].clone();
    let restore_sa =
        named(&all, "ClusterRoleBinding", "ballast-restore")["subjects"][0]["name"].clone();
    assert_ne!(server_sa, restore_sa);
    let deployment = named(&all, "Deployment", "ballast");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        server_sa
    );
    // The restore role is not applied with the rest.
    let kustomization =
        std::fs::read_to_string(deploy().join("kubernetes/kustomization.yaml")).unwrap();
    assert!(!kustomization.contains("restore-rbac.yaml"));
}

/// The pod spec of a Deployment or a CronJob.
fn pod(w: &Value) -> &Value {
    match w["kind"].as_str().unwrap() {
        "CronJob" => &w["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &w["spec"]["template"]["spec"],
    }
}

#[test]
fn containers_are_hardened() {
    let all = manifests();
    let workloads: Vec<&Value> = of_kind(&all, "Deployment")
        .into_iter()
        .chain(of_kind(&all, "CronJob"))
        .collect();
    assert_eq!(workloads.len(), 2);
    for w in workloads {
        let p = pod(w);
        for c in p["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
            assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{c}");
            assert!(
                sc["privileged"].is_null() || sc["privileged"] == false,
                "{c}"
            );
            assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");
        }
        let root = p["securityContext"]["runAsUser"] == 0;
        if w["kind"] == "Deployment" {
            assert_eq!(p["securityContext"]["runAsNonRoot"], true, "{w}");
        } else {
            // Root only to read kubeadm's certificates, which it mounts read-only.
            assert!(root, "{w}");
        }
    }
}

#[test]
fn the_etcd_cronjob_runs_on_the_control_plane_alone_and_never_overlaps() {
    let all = manifests();
    let cj = named(&all, "CronJob", "ballast-etcd");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let p = pod(cj);
    assert_eq!(p["hostNetwork"], true);
    assert!(p["nodeSelector"]
        .as_object()
        .unwrap()
        .contains_key("node-role.kubernetes.io/control-plane"));
    assert_eq!(p["dnsPolicy"], "ClusterFirstWithHostNet");
    let mounts = p["containers"][0]["volumeMounts"].as_array().unwrap();
    let pki: Vec<&Value> = mounts
        .iter()
        .filter(|m| {
            m["mountPath"]
                .as_str()
                .unwrap()
                .starts_with("/etc/kubernetes/pki")
        })
        .collect();
    assert_eq!(
        pki.len(),
        3,
        "the CA certificate, a client certificate and its key"
    );
    for m in &pki {
        assert_eq!(m["readOnly"], true, "{m}");
        let path = m["mountPath"].as_str().unwrap();
        assert!(
            !path.ends_with("ca.key") && !path.contains("server") && !path.contains("peer"),
            "{path}"
        );
    }
    // Files, not the directory that holds the CA's key.
    for v in p["volumes"].as_array().unwrap() {
        if let Some(h) = v["hostPath"]["path"].as_str() {
            if h.starts_with("/etc/kubernetes") {
                assert_eq!(v["hostPath"]["type"], "File", "{v}");
            }
        }
    }
    // It runs the configuration's etcd schedule once.
    let args: Vec<&str> = p["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--once=etcd"), "{args:?}");
    let config: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(deploy().join("kubernetes/server.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["schedules"]["etcd"]["job"], "etcd-snapshot");
    let certs = config["schedules"]["etcd"]["args"].to_string();
    for m in &pki {
        assert!(certs.contains(m["mountPath"].as_str().unwrap()), "{certs}");
    }
}

#[test]
fn monitoring_objects_and_the_image_are_there() {
    let all = manifests();
    assert_eq!(of_kind(&all, "ServiceMonitor").len(), 1);
    assert_eq!(of_kind(&all, "PrometheusRule").len(), 1);
    let kustomization: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(deploy().join("kubernetes/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    for r in kustomization["resources"].as_array().unwrap() {
        assert!(
            deploy()
                .join("kubernetes")
                .join(r.as_str().unwrap())
                .exists(),
            "{r}"
        );
    }
    let docker = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let last_from = docker
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .last()
        .unwrap();
    assert!(last_from.contains("distroless/static"), "{last_from}");
    assert!(docker.contains("unknown-linux-musl"), "a static binary");
    assert!(
        docker.lines().any(|l| l.starts_with("USER 65532")),
        "non-root"
    );
}
