//! Fault injection: what a test asks the server to get wrong, and a log of the
//! requests it served so that a test can see how a client behaved.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Faults to inject; all off by default. Set through
/// [`TestApiServer::faults`](super::TestApiServer::faults) or `POST /_test/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every request before it is handled, in milliseconds.
    pub latency_ms: u64,
    /// The next this many requests get 429 Too Many Requests.
    pub throttle: u32,
    /// The `Retry-After` of those 429s, in seconds.
    pub retry_after_s: u32,
    /// Requests whose path contains the key get 500, as many times as the value.
    pub errors: HashMap<String, u32>,
    /// A list page of these resources (`resource` or `resource.group`) sends some
    /// items and then drops the connection, once each.
    pub drop_list: HashMap<String, DropAt>,
    /// Group versions (`metrics.k8s.io/v1beta1`) whose discovery fails with 503
    /// and this message, as a broken aggregated APIService does.
    pub broken_groups: HashMap<String, String>,
    /// Resources (`resource` or `resource.group`) that list and get 403 Forbidden.
    pub forbidden: HashSet<String>,
    /// Resources whose lists get 403 Forbidden, and whose objects can be got by
    /// name: what a user allowed into some namespaces only sees of `namespaces`.
    pub forbidden_lists: HashSet<String>,
    /// After this many more pages of a resource (`resource` or `resource.group`)
    /// are served, the store is written to and compacted, once: continue tokens of
    /// lists begun before expire (410 Gone).
    pub compact_after_pages: HashMap<String, u32>,
    /// Resources (`resource` or `resource.group`) whose list pages come in reverse
    /// key order, as an aggregated API server's may.
    pub unordered: HashSet<String>,
    /// Entries added to a group version's discovery (`GROUP/VERSION`, or `v1`), as
    /// a hostile or broken aggregated API server may serve them; a group that does
    /// not exist is listed too. Only discovery serves them.
    pub extra_resources: HashMap<String, Vec<serde_json::Value>>,
    /// The bearer token every request must carry; none needed when empty.
    pub token: String,
    /// A new CRD is Established (and its resource served) this long after it is
    /// created; at once when 0 (`controllers.rs`).
    pub crd_establish_ms: u64,
    /// A deleted namespace stays Terminating this long; gone at once when 0.
    pub namespace_termination_ms: u64,
    /// The server is gone: every request's connection is closed without an answer
    /// (new connections too), as when an API server goes away behind its address.
    pub down: bool,
}

/// Where a list is cut: after `pages` more whole pages of the resource, the next
/// page sends `items` items and drops the connection.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropAt {
    pub pages: u32,
    pub items: usize,
}

impl Faults {
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

/// One request as served.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Items a list sent.
    pub items: usize,
    pub user_agent: String,
    /// When it was answered: milliseconds on a clock that starts with the process.
    pub at_ms: u64,
}

/// Milliseconds since the first call in this process (a monotonic clock).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Whether `rule` (`resource` or `resource.group`) names this resource.
pub fn names(rule: &str, resource: &str, group: &str) -> bool {
    rule == resource || (!group.is_empty() && rule == format!("{resource}.{group}"))
}
