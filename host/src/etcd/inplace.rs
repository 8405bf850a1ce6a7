//! In-place restore on a kubeadm control-plane node, where etcd runs as a static pod:
//! the kubelet stops etcd when its manifest leaves the manifests directory and starts
//! it when the manifest comes back. ballast moves the manifest aside, waits for etcd
//! to stop, moves the data directory aside (never deletes it), restores, puts the
//! manifest back, waits for etcd to answer and checks the key count. A record of
//! what moved where lets `--rollback` put the previous data directory back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::connect::{survey, EtcdError, EtcdOptions};
use super::restore::{self, stamp, Database, Member, Plan, Restored, Tool};

/// The etcd static-pod manifest, and the flags of its etcd command.
pub struct Manifest {
    pub path: PathBuf,
    pub flags: BTreeMap<String, String>,
}

fn err(msg: String) -> EtcdError {
    EtcdError::Restore(msg)
}

fn io(path: &Path, e: std::io::Error) -> EtcdError {
    EtcdError::Repo(crate::repo::RepoError::io(path, e))
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, EtcdError> {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        let pod: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| err(format!("{}: not YAML: {e}", path.display())))?;
        let containers = pod["spec"]["containers"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let words = |c: &serde_yaml_ng::Value, field: &str| -> Vec<String> {
            c[field]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|w| w.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let command = containers
            .iter()
            .map(|c| [words(c, "command"), words(c, "args")].concat())
            .find(|cmd| {
                cmd.first()
                    .is_some_and(|p| p == "etcd" || p.ends_with("/etcd"))
            })
            .ok_or_else(|| {
                err(format!(
                    "{}: no container runs etcd (looked for a command starting with `etcd`)",
                    path.display()
                ))
            })?;
        let mut flags = BTreeMap::new();
        let mut words = command[1..].iter().peekable();
        while let Some(w) = words.next() {
            let Some(flag) = w.strip_prefix("--") else {
                continue;
            };
            match flag.split_once('=') {
                Some((k, v)) => {
                    flags.insert(k.to_string(), v.to_string());
                }
                None => {
                    let v = match words.peek() {
                        Some(next) if !next.starts_with("--") => words.next().cloned(),
                        _ => None,
                    };
                    flags.insert(flag.to_string(), v.unwrap_or_else(|| "true".into()));
                }
            }
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            flags,
        })
    }

    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    pub fn data_dir(&self) -> Result<PathBuf, EtcdError> {
        self.flag("data-dir").map(PathBuf::from).ok_or_else(|| {
            err(format!(
                "{}: the etcd command has no --data-dir",
                self.path.display()
            ))
        })
    }

    /// The member this manifest runs, as `restore` needs it.
    pub fn member(&self) -> Result<(Member, String, String), EtcdError> {
        let name = self.flag("name").unwrap_or("default").to_string();
        let peer_urls = self
            .flag("initial-advertise-peer-urls")
            .unwrap_or("http://localhost:2380")
            .to_string();
        let cluster = self
            .flag("initial-cluster")
            .map(String::from)
            .unwrap_or_else(|| format!("{name}={peer_urls}"));
        let token = self
            .flag("initial-cluster-token")
            .unwrap_or("etcd-cluster")
            .to_string();
        Ok((
            Member {
                name,
                data_dir: self.data_dir()?,
                peer_urls,
            },
            cluster,
            token,
        ))
    }

    /// Where the manifest waits while etcd is down: beside the manifests directory
    /// (a file left inside it would still be a static pod).
    fn aside(&self, stamp: &str) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let file = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        dir.parent()
            .unwrap_or(dir)
            .join(format!("{}.ballast-{stamp}", file.unwrap_or_default()))
    }

    fn record_path(&self) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.parent().unwrap_or(dir).join("ballast-restore.json")
    }
}

/// What an in-place restore moved, for `--rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub manifest: PathBuf,
    pub data_dir: PathBuf,
    /// The data directory etcd ran on before the restore.
    pub previous: PathBuf,
    pub time: String,
}

/// How long to wait for etcd to stop and to start.
#[derive(Debug, Clone)]
pub struct Waits {
    pub stop: Duration,
    pub start: Duration,
}

/// The outcome of an in-place restore or rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub data_dir: PathBuf,
    /// Where the data directory etcd ran on before went.
    pub moved_aside: PathBuf,
    pub keys: u64,
    pub revision: Option<i64>,
    pub record: PathBuf,
}

fn runtime() -> Result<tokio::runtime::Runtime, EtcdError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("starting an async runtime: {e}")))
}

/// Waits until every endpoint stops answering (`up == false`) or one answers.
fn wait_for(opts: &EtcdOptions, up: bool, within: Duration) -> Result<(), EtcdError> {
    let rt = runtime()?;
    let deadline = Instant::now() + within;
    loop {
        let answering = rt.block_on(survey(opts)).iter().any(|(_, r)| r.is_ok());
        if answering == up {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(err(format!(
                "etcd at {} did not {} within {within:?}",
                opts.endpoints.join(","),
                if up { "come up" } else { "stop" }
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The number of keys etcd holds at `revision` (now, without one). Counting at the
/// restored revision is not disturbed by what an API server writes as soon as etcd
/// is back.
fn count_keys(opts: &EtcdOptions, revision: Option<i64>) -> Result<u64, EtcdError> {
    let rt = runtime()?;
    rt.block_on(async {
        let ep = opts.endpoints.first().cloned().unwrap_or_default();
        let mut c = opts.connect(&ep).await?;
        let mut all = etcd_client::GetOptions::new()
            .with_all_keys()
            .with_count_only();
        if let Some(r) = revision {
            all = all.with_revision(r);
        }
        let r = tokio::time::timeout(opts.command_timeout, c.get("", Some(all)))
            .await
            .map_err(|_| EtcdError::Request {
                endpoint: ep.clone(),
                detail: format!("no answer within {:?}", opts.command_timeout),
            })?
            .map_err(|e| EtcdError::Request {
                endpoint: ep.clone(),
                detail: super::connect::describe(&e),
            })?;
        Ok(r.count().max(0) as u64)
    })
}

/// Stops etcd by moving its manifest aside; returns where the manifest went.
fn stop(
    manifest: &Manifest,
    opts: &EtcdOptions,
    waits: &Waits,
    stamp: &str,
) -> Result<PathBuf, EtcdError> {
    let aside = manifest.aside(stamp);
    std::fs::rename(&manifest.path, &aside).map_err(|e| io(&manifest.path, e))?;
    if let Err(e) = wait_for(opts, false, waits.stop) {
        std::fs::rename(&aside, &manifest.path).map_err(|e| io(&aside, e))?;
        return Err(err(format!(
            "{e}; the manifest is back in place and nothing changed"
        )));
    }
    Ok(aside)
}

/// Starts etcd by putting its manifest back, waits for it, and counts its keys (at
/// `revision`, when given). A member of a cluster answers a count only once a majority
/// runs, so the count is retried until the wait is over.
fn start(
    manifest: &Manifest,
    aside: &Path,
    opts: &EtcdOptions,
    waits: &Waits,
    revision: Option<i64>,
) -> Result<u64, EtcdError> {
    std::fs::rename(aside, &manifest.path).map_err(|e| io(aside, e))?;
    let deadline = Instant::now() + waits.start;
    wait_for(opts, true, waits.start)?;
    loop {
        match count_keys(opts, revision) {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() > deadline => {
                return Err(err(format!("etcd answers but cannot count its keys: {e}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The cluster this node's etcd belongs to, as seen before the restore.
struct Cluster {
    /// Member names, with the client URLs the live member list gives (none for
    /// members only the manifest names).
    members: Vec<(String, Vec<String>)>,
    /// The cluster id, when this node's etcd answered.
    live_id: Option<u64>,
}

/// The members from the manifest's `--initial-cluster` and, when this node's etcd
/// answers, its live member list (kubeadm's first node names only itself).
fn cluster(manifest: &Manifest, opts: &EtcdOptions) -> Result<Cluster, EtcdError> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(cluster) = manifest.flag("initial-cluster") {
        for entry in cluster.split(',').filter(|e| !e.is_empty()) {
            let name = entry.split_once('=').map_or(entry, |(n, _)| n);
            members.entry(name.to_string()).or_default();
        }
    }
    // A member without quorum may not answer the list.
    let rt = runtime()?;
    let live = rt.block_on(async {
        let ep = opts.endpoints.first().cloned().unwrap_or_default();
        let mut c = opts.connect(&ep).await.ok()?;
        tokio::time::timeout(opts.command_timeout, c.member_list())
            .await
            .ok()?
            .ok()
    });
    let live_id = live
        .as_ref()
        .and_then(|l| l.header())
        .map(|h| h.cluster_id());
    if let Some(list) = live {
        for m in list.members() {
            let name = if m.name().is_empty() {
                format!("{:x}", m.id())
            } else {
                m.name().to_string()
            };
            members
                .entry(name)
                .or_default()
                .extend(m.client_urls().iter().cloned());
        }
    }
    Ok(Cluster {
        members: members.into_iter().collect(),
        live_id,
    })
}

/// Refuses to restore one member of a cluster alone: the restored member would start
/// a new cluster of its own beside the others (a split). With `whole_cluster`, the
/// operator says every member is being restored from the same snapshot.
fn check_members(
    manifest: &Manifest,
    cluster: &Cluster,
    opts: &EtcdOptions,
    whole_cluster: bool,
) -> Result<(), EtcdError> {
    let (me, _, _) = manifest.member()?;
    if whole_cluster {
        return Ok(());
    }
    if cluster.live_id.is_none() {
        return Err(err(format!(
            "etcd on this node does not answer at {}, so ballast cannot see which members              its cluster has. If every member is being restored from this snapshot (or this              is the only member), pass --whole-cluster",
            opts.endpoints.join(",")
        )));
    }
    if cluster.members.len() > 1 {
        let names: Vec<&str> = cluster.members.iter().map(|(n, _)| n.as_str()).collect();
        return Err(err(format!(
            "etcd on this node ({}) is one of {} members ({}): restoring it alone would start a              new cluster beside the others and split it. To restore the cluster in place, run              this restore on every member at about the same time, with the same snapshot and              --whole-cluster",
            me.name,
            cluster.members.len(),
            names.join(", ")
        )));
    }
    Ok(())
}

/// After this node's etcd stopped: waits until no other member answers as a member of
/// the cluster being replaced (a restored member answers with the new cluster id).
fn wait_for_others(
    manifest: &Manifest,
    cluster: &Cluster,
    opts: &EtcdOptions,
    within: Duration,
    report: &mut dyn FnMut(String),
) -> Result<(), EtcdError> {
    let Some(old_id) = cluster.live_id else {
        return Ok(());
    };
    let (me, _, _) = manifest.member()?;
    let others: Vec<String> = cluster
        .members
        .iter()
        .filter(|(n, _)| *n != me.name)
        .flat_map(|(_, urls)| urls.iter().cloned())
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let probe = EtcdOptions {
        endpoints: others,
        ..opts.clone()
    };
    let rt = runtime()?;
    let deadline = Instant::now() + within;
    let mut said = false;
    loop {
        let running: Vec<String> = rt
            .block_on(survey(&probe))
            .into_iter()
            .filter_map(|(ep, r)| {
                let id = u64::from_str_radix(&r.ok()?.cluster_id, 16).ok()?;
                (id == old_id).then_some(ep)
            })
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(err(format!(
                "the other members still run the cluster being replaced at {} after {within:?}:                  run this restore on every member at about the same time",
                running.join(", ")
            )));
        }
        if !said {
            report(format!(
                "waiting for the other members to stop: {}",
                running.join(", ")
            ));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The cluster token the restored members share: derived from the restored database,
/// so every member restored from the same data forms one new cluster, with a new
/// cluster id that no member still on the old data can join.
fn restored_token(db: &Database) -> Result<String, EtcdError> {
    use sha2::Digest;
    let mut file = std::fs::File::open(&db.path).map_err(|e| io(&db.path, e))?;
    let mut hash = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hash).map_err(|e| io(&db.path, e))?;
    Ok(format!("ballast-{}", &hex::encode(hash.finalize())[..16]))
}

/// Restores `db` into the data directory of the manifest's member, in place.
pub fn restore(
    manifest: &Manifest,
    db: &Database,
    tool: Tool,
    bump_revision: Option<i64>,
    changes_applied: u64,
    opts: &EtcdOptions,
    waits: &Waits,
    whole_cluster: bool,
    report: &mut dyn FnMut(String),
) -> Result<(Restored, Outcome), EtcdError> {
    let cluster = cluster(manifest, opts)?;
    check_members(manifest, &cluster, opts, whole_cluster)?;
    let (member, initial_cluster, _) = manifest.member()?;
    let plan = Plan {
        members: vec![member.clone()],
        initial_cluster,
        initial_cluster_token: restored_token(db)?,
        bump_revision,
        move_existing: false,
        tool,
    };
    let stamp = stamp();
    report(format!(
        "stopping etcd: moving {} aside",
        manifest.path.display()
    ));
    let aside = stop(manifest, opts, waits, &stamp)?;
    if let Err(e) = wait_for_others(manifest, &cluster, opts, waits.stop, report) {
        std::fs::rename(&aside, &manifest.path).map_err(|e| io(&aside, e))?;
        return Err(err(format!(
            "{e}; the manifest is back in place and nothing changed"
        )));
    }
    let data_dir = &member.data_dir;
    let previous = PathBuf::from(format!("{}.ballast-{stamp}", data_dir.display()));
    if data_dir.exists() {
        std::fs::rename(data_dir, &previous).map_err(|e| io(data_dir, e))?;
        report(format!(
            "etcd stopped; its data directory moved to {}",
            previous.display()
        ));
    }
    let restored = match restore::restore(db, &plan, changes_applied) {
        Ok(r) => r,
        Err(e) => {
            // Put back what was moved, so the node runs as it did; a half-written
            // data directory is moved aside too, not deleted.
            if data_dir.exists() {
                let failed = format!("{}.ballast-failed-{stamp}", data_dir.display());
                let _ = std::fs::rename(data_dir, failed);
            }
            let _ = std::fs::rename(&previous, data_dir);
            let _ = std::fs::rename(&aside, &manifest.path);
            return Err(err(format!(
                "{e}; the previous data directory and the manifest are back in place"
            )));
        }
    };
    let record = Record {
        manifest: manifest.path.clone(),
        data_dir: member.data_dir.clone(),
        previous: previous.clone(),
        time: stamp,
    };
    let record_path = manifest.record_path();
    std::fs::write(
        &record_path,
        serde_json::to_vec_pretty(&record).expect("plain fields serialize"),
    )
    .map_err(|e| io(&record_path, e))?;
    report("restored; starting etcd: moving the manifest back".to_string());
    let keys = start(manifest, &aside, opts, waits, Some(restored.revision)).map_err(|e| {
        err(format!(
            "{e}; to go back: ballast etcd restore --rollback --manifest {}",
            manifest.path.display()
        ))
    })?;
    if keys != restored.keys {
        return Err(err(format!(
            "etcd is up but holds {keys} keys where the snapshot holds {}; to go back: \
             ballast etcd restore --rollback --manifest {}",
            restored.keys,
            manifest.path.display()
        )));
    }
    let outcome = Outcome {
        data_dir: member.data_dir,
        moved_aside: previous,
        keys,
        revision: Some(restored.revision),
        record: record_path,
    };
    Ok((restored, outcome))
}

/// Puts back the data directory the last in-place restore moved aside.
pub fn rollback(
    manifest: &Manifest,
    opts: &EtcdOptions,
    waits: &Waits,
    report: &mut dyn FnMut(String),
) -> Result<Outcome, EtcdError> {
    let record_path = manifest.record_path();
    let text = std::fs::read(&record_path).map_err(|e| {
        err(format!(
            "no in-place restore to roll back ({}: {e})",
            record_path.display()
        ))
    })?;
    let record: Record = serde_json::from_slice(&text)
        .map_err(|e| err(format!("{}: {e}", record_path.display())))?;
    if !record.previous.is_dir() {
        return Err(err(format!(
            "the previous data directory {} is gone; nothing to roll back to",
            record.previous.display()
        )));
    }
    let stamp = stamp();
    report(format!(
        "stopping etcd: moving {} aside",
        manifest.path.display()
    ));
    let aside = stop(manifest, opts, waits, &stamp)?;
    let restored_aside = PathBuf::from(format!(
        "{}.ballast-restored-{stamp}",
        record.data_dir.display()
    ));
    std::fs::rename(&record.data_dir, &restored_aside).map_err(|e| io(&record.data_dir, e))?;
    std::fs::rename(&record.previous, &record.data_dir).map_err(|e| io(&record.previous, e))?;
    let done = record_path.with_extension(format!("json.rolled-back-{stamp}"));
    std::fs::rename(&record_path, &done).map_err(|e| io(&record_path, e))?;
    report(format!(
        "previous data directory back in {}; starting etcd",
        record.data_dir.display()
    ));
    let keys = start(manifest, &aside, opts, waits, None)?;
    Ok(Outcome {
        data_dir: record.data_dir,
        moved_aside: restored_aside,
        keys,
        revision: None,
        record: done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeadm_manifest_gives_the_member() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yaml");
        std::fs::write(
            &path,
            r#"
apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.5.9-0
    command:
    - etcd
    - --advertise-client-urls=https://10.0.0.11:2379
    - --data-dir=/var/lib/etcd
    - --initial-advertise-peer-urls=https://10.0.0.11:2380
    - --initial-cluster=cp1=https://10.0.0.11:2380
    - --name=cp1
    - --client-cert-auth=true
"#,
        )
        .unwrap();
        let m = Manifest::read(&path).unwrap();
        let (member, cluster, token) = m.member().unwrap();
        assert_eq!(member.name, "cp1");
        assert_eq!(member.data_dir, Path::new("/var/lib/etcd"));
        assert_eq!(member.peer_urls, "https://10.0.0.11:2380");
        assert_eq!(cluster, "cp1=https://10.0.0.11:2380");
        assert_eq!(token, "etcd-cluster");
        std::fs::write(&path, "spec: {containers: [{name: x, command: [nginx]}]}").unwrap();
        assert!(Manifest::read(&path).is_err());
    }
}
