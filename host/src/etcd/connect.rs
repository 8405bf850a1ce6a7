//! Connecting to etcd: endpoints, TLS, authentication and timeouts, with the same
//! meaning as etcdctl's flags; and surveying the members before a snapshot.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoint}: {detail}; {}", hint(detail))]
    Unreachable { endpoint: String, detail: String },
    #[error("no etcd endpoint answered: {0}")]
    NoneHealthy(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("etcd at {endpoint}: {detail}")]
    Request { endpoint: String, detail: String },
    #[error("the snapshot stream from {endpoint} broke after {bytes} bytes: {detail}; no snapshot was recorded")]
    StreamBroken {
        endpoint: String,
        bytes: u64,
        detail: String,
    },
    #[error("the snapshot from {endpoint} does not match the SHA-256 etcd sent with it; no snapshot was recorded")]
    Checksum { endpoint: String },
    #[error("restore: {0}")]
    Restore(String),
    #[error(
        "{endpoint} now serves etcd cluster {found}, not cluster {expected} whose changes this capture records; the capture stopped (what it had was stored). Start a capture for the new cluster: it begins with a full snapshot"
    )]
    OtherCluster {
        endpoint: String,
        found: String,
        expected: String,
    },
    #[error("{0}")]
    Repo(#[from] crate::repo::RepoError),
}

/// What to check, from what went wrong.
fn hint(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if d.contains("certificate")
        || d.contains("tls")
        || d.contains("handshake")
        || d.contains("unknownissuer")
    {
        "check --cacert, --cert and --key (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY): the CA must have signed the server's certificate, and a server with client-cert-auth needs a client certificate"
    } else {
        "check --endpoints (ETCDCTL_ENDPOINTS) and that etcd is running"
    }
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".into()],
            cacert: None,
            cert: None,
            key: None,
            user: None,
            password: None,
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdOptions {
    fn connect_options(&self) -> Result<ConnectOptions, EtcdError> {
        // HTTP/2 pings: a connection that died without a word (a dropped route, a
        // frozen peer) is noticed within seconds, also by a watch with nothing to say.
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(pw)) = (&self.user, &self.password) {
            o = o.with_user(user.clone(), pw.clone());
        }
        if self.cacert.is_some() || self.cert.is_some() {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| EtcdError::Tls(format!("{}: {e}", p.display())))
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => return Err(EtcdError::Tls("--cert and --key go together".into())),
            }
            o = o.with_tls(tls);
        }
        Ok(o)
    }

    fn url(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.to_string()
        } else if self.cacert.is_some() || self.cert.is_some() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }

    /// A client for one endpoint.
    pub async fn connect(&self, endpoint: &str) -> Result<Client, EtcdError> {
        let opts = self.connect_options()?;
        let fut = Client::connect([self.url(endpoint)], Some(opts));
        match tokio::time::timeout(self.dial_timeout + Duration::from_secs(1), fut).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(EtcdError::Unreachable {
                endpoint: endpoint.into(),
                detail: describe(&e),
            }),
            Err(_) => Err(EtcdError::Unreachable {
                endpoint: endpoint.into(),
                detail: format!("no answer within {:?}", self.dial_timeout),
            }),
        }
    }
}

/// What one member says about itself and the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub endpoint: String,
    pub version: String,
    pub db_size: i64,
    pub leader: String,
    pub member_id: String,
    pub cluster_id: String,
    pub raft_index: u64,
    pub revision: i64,
    pub is_leader: bool,
    /// A learner is not a voting member: it may lag, and a cluster can lose it.
    #[serde(default)]
    pub is_learner: bool,
    /// Alarms and errors the member reports (`NOSPACE`, corruption...).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Health and status of every endpoint; `Err` for the ones that did not answer.
pub async fn survey(opts: &EtcdOptions) -> Vec<(String, Result<MemberStatus, EtcdError>)> {
    let mut out = Vec::new();
    for ep in &opts.endpoints {
        let r = async {
            let mut c = opts.connect(ep).await?;
            let s = tokio::time::timeout(opts.command_timeout, c.status())
                .await
                .map_err(|_| EtcdError::Request {
                    endpoint: ep.clone(),
                    detail: "status timed out".into(),
                })?
                .map_err(|e| request_error(ep, &e))?;
            let h = s.header().cloned();
            let member_id = h.as_ref().map(|h| h.member_id()).unwrap_or_default();
            Ok(MemberStatus {
                endpoint: ep.clone(),
                version: s.version().to_string(),
                db_size: s.db_size(),
                leader: format!("{:x}", s.leader()),
                member_id: format!("{member_id:x}"),
                cluster_id: format!(
                    "{:x}",
                    h.as_ref().map(|h| h.cluster_id()).unwrap_or_default()
                ),
                raft_index: s.raft_index(),
                revision: h.as_ref().map(|h| h.revision()).unwrap_or_default(),
                is_leader: s.leader() == member_id,
                is_learner: s.is_learner(),
                errors: s.errors().to_vec(),
            })
        }
        .await;
        out.push((ep.clone(), r));
    }
    out
}

/// How far (in raft entries) a follower may trail the leader and still serve a
/// snapshot or a watch; further behind, the leader is used.
pub const MAX_LAG: u64 = 1000;

/// The member to read from (a snapshot, a watch): a voting member that has a leader
/// and no alarm, caught up with the leader (within [`MAX_LAG`] entries); a follower
/// when one qualifies (a snapshot costs its member disk and network; the leader has
/// enough to do), else the leader. Every endpoint that answers must belong to one
/// cluster: a list that mixes clusters is refused.
/// `member`, if it is in the cluster `expected` (a capture must never mix two
/// clusters' changes: endpoints can be pointed at a restored or rebuilt cluster).
pub fn same_cluster(member: MemberStatus, expected: &str) -> Result<MemberStatus, EtcdError> {
    if member.cluster_id == expected {
        Ok(member)
    } else {
        Err(EtcdError::OtherCluster {
            endpoint: member.endpoint.clone(),
            found: member.cluster_id.clone(),
            expected: expected.to_string(),
        })
    }
}

pub fn choose(
    survey: &[(String, Result<MemberStatus, EtcdError>)],
) -> Result<MemberStatus, EtcdError> {
    let healthy: Vec<&MemberStatus> = survey.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let clusters: std::collections::BTreeSet<&str> =
        healthy.iter().map(|m| m.cluster_id.as_str()).collect();
    if clusters.len() > 1 {
        let each: Vec<String> = healthy
            .iter()
            .map(|m| format!("{} is in cluster {}", m.endpoint, m.cluster_id))
            .collect();
        return Err(EtcdError::NoneHealthy(format!(
            "the endpoints belong to different clusters ({}); list the endpoints of one cluster",
            each.join(", ")
        )));
    }
    let mut passed_over = vec![];
    let usable: Vec<&MemberStatus> = healthy
        .iter()
        .copied()
        .filter(|m| {
            let why = if m.is_learner {
                Some("a learner (not a voting member)".to_string())
            } else if m.leader == "0" {
                Some("it has no leader (partitioned?)".to_string())
            } else if !m.errors.is_empty() {
                Some(format!("it reports {}", m.errors.join(", ")))
            } else {
                None
            };
            if let Some(why) = &why {
                passed_over.push(format!("{}: {why}", m.endpoint));
            }
            why.is_none()
        })
        .collect();
    let newest = usable.iter().map(|m| m.raft_index).max().unwrap_or(0);
    usable
        .iter()
        .filter(|m| !m.is_leader && m.raft_index + MAX_LAG >= newest)
        .max_by_key(|m| m.raft_index)
        .or_else(|| usable.iter().find(|m| m.is_leader))
        .or_else(|| usable.iter().max_by_key(|m| m.raft_index))
        .map(|m| (*m).clone())
        .ok_or_else(|| {
            let why: Vec<String> = survey
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
                .chain(passed_over)
                .collect();
            EtcdError::NoneHealthy(why.join("; "))
        })
}

/// A one-line description of a client error (gRPC status code and message).
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            if msg.is_empty() {
                format!("{:?}", s.code())
            } else {
                format!("{:?}: {msg}", s.code())
            }
        }
        other => other.to_string(),
    }
}

/// Connection failures become [`EtcdError::Unreachable`]; other failures name the
/// endpoint and what etcd said.
fn request_error(endpoint: &str, e: &etcd_client::Error) -> EtcdError {
    let detail = describe(e);
    // (Compared by name: tonic is not a direct dependency.)
    let unavailable = matches!(e, etcd_client::Error::GRpcStatus(s) if format!("{:?}", s.code()) == "Unavailable")
        || matches!(e, etcd_client::Error::TransportError(_));
    if unavailable {
        EtcdError::Unreachable {
            endpoint: endpoint.into(),
            detail,
        }
    } else {
        EtcdError::Request {
            endpoint: endpoint.into(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ep: &str, cluster: &str, leader: bool, index: u64) -> MemberStatus {
        MemberStatus {
            endpoint: ep.into(),
            version: "3.5.1".into(),
            db_size: 0,
            leader: "a1".into(),
            member_id: if leader {
                "a1".into()
            } else {
                format!("b{ep}")
            },
            cluster_id: cluster.into(),
            raft_index: index,
            revision: 1,
            is_leader: leader,
            is_learner: false,
            errors: vec![],
        }
    }

    fn ok(ms: Vec<MemberStatus>) -> Vec<(String, Result<MemberStatus, EtcdError>)> {
        ms.into_iter()
            .map(|m| (m.endpoint.clone(), Ok(m)))
            .collect()
    }

    #[test]
    fn a_caught_up_voting_follower_is_chosen() {
        let mut lagging = member("f1", "c", false, 10);
        lagging.raft_index = 100_000 - MAX_LAG - 1;
        let mut learner = member("l", "c", false, 100_000);
        learner.is_learner = true;
        let s = ok(vec![
            member("lead", "c", true, 100_000),
            lagging.clone(),
            learner,
            member("f2", "c", false, 99_900),
        ]);
        assert_eq!(choose(&s).unwrap().endpoint, "f2");
        // Only a lagging follower and a learner besides the leader: the leader.
        let mut learner = member("l", "c", false, 100_000);
        learner.is_learner = true;
        let s = ok(vec![member("lead", "c", true, 100_000), lagging, learner]);
        assert_eq!(choose(&s).unwrap().endpoint, "lead");
        // A member without a leader is passed over, and said why.
        let mut alone = member("p", "c", false, 5);
        alone.leader = "0".into();
        let e = choose(&ok(vec![alone])).unwrap_err().to_string();
        assert!(e.contains("p: it has no leader"), "{e}");
    }

    #[test]
    fn endpoints_of_two_clusters_are_refused() {
        let s = ok(vec![member("a", "c1", true, 5), member("b", "c2", true, 5)]);
        let e = choose(&s).unwrap_err().to_string();
        assert!(e.contains("belong to different clusters"), "{e}");
    }
}
