//! The connection to a cluster, as kubectl makes it (`--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config`, `--context`, or the pod's service account), and the one way
//! ballast sends requests: rate limited on the client (`--qps`, `--burst`), 429s
//! waited out for the server's `Retry-After`, transient failures retried a few
//! times, errors named with the server and the context. Response bodies are never
//! logged: they hold Secrets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;

use super::KubeError;

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// A kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The context to use instead of the kubeconfig's current one.
    pub context: Option<String>,
    /// Requests per second on average (0: no limit).
    pub qps: f64,
    /// Requests that may go at once above the average.
    pub burst: u32,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            kubeconfig: None,
            context: None,
            qps: 50.0,
            burst: 100,
        }
    }
}

/// Counters of what the connection did.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// 429 answers waited out.
    pub throttled: AtomicU64,
    /// Requests sent again after a transient failure.
    pub retried: AtomicU64,
}

/// A connected cluster.
pub struct Cluster {
    client: kube::Client,
    /// The API server's URL.
    pub server: String,
    /// The kubeconfig context, or `in-cluster`.
    pub context: String,
    limiter: RateLimiter,
    pub stats: Stats,
}

/// How many times a request is sent again after a 5xx or a broken connection.
const RETRIES: u32 = 3;
/// How many 429s one request waits out before giving up.
const THROTTLE_WAITS: u32 = 20;
/// The longest `Retry-After` honoured, and the wait when none is given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Cluster {
    pub async fn connect(opts: &ConnectOptions) -> Result<Cluster, KubeError> {
        if !(opts.qps.is_finite() && (opts.qps == 0.0 || opts.qps >= 0.01)) {
            return Err(KubeError::Invalid(format!(
                "--qps {} is not a rate: give requests per second, at least 0.01 (0: no limit)",
                opts.qps
            )));
        }
        let (mut config, context) = load_config(opts).await?;
        // ballast retries itself, so that it can honour Retry-After and count.
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(120));
        let server = shown_url(&config.cluster_url);
        let client = kube::Client::try_from(config).map_err(|e| {
            KubeError::Config(format!(
                "cannot set up a client for {server} (context {context}): {e}"
            ))
        })?;
        Ok(Cluster {
            client,
            server,
            context,
            limiter: RateLimiter::new(opts.qps, opts.burst),
            stats: Stats::default(),
        })
    }

    /// GETs `path` (with its query) and returns the response once its status is a
    /// success; the body is left to the caller to stream.
    pub async fn get(
        &self,
        path: &str,
        what: &str,
    ) -> Result<http::Response<kube::client::Body>, KubeError> {
        self.send(http::Method::GET, path, None, what).await
    }

    /// Sends a request (a body with its content type) and returns the response once
    /// its status is a success. A request that may have reached the server before
    /// the connection broke is sent again, so a create may answer AlreadyExists for
    /// an object it made itself: callers that create check whose the object is.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&str, &[u8])>,
        what: &str,
    ) -> Result<http::Response<kube::client::Body>, KubeError> {
        let mut failures = 0;
        let mut throttles = 0;
        loop {
            self.limiter.acquire().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(http::header::ACCEPT, "application/json");
            if let Some((content_type, _)) = body {
                req = req.header(http::header::CONTENT_TYPE, content_type);
            }
            let req = req
                .body(match body {
                    Some((_, bytes)) => kube::client::Body::from(bytes.to_vec()),
                    None => kube::client::Body::empty(),
                })
                .map_err(|e| {
                    KubeError::Invalid(format!("{what}: a bad request path {path:?}: {e}"))
                })?;
            let res = match self.client.send(req).await {
                Ok(r) => r,
                Err(e) => {
                    let e = self.transport_error(what, &e);
                    if failures < RETRIES && !matches!(e, KubeError::Unreachable { .. }) {
                        failures += 1;
                        self.retry_pause(failures).await;
                        continue;
                    }
                    return Err(e);
                }
            };
            let status = res.status();
            if status.is_success() {
                return Ok(res);
            }
            let retry_after = res
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = match res.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Default::default(),
            };
            let (reason, message) = status_of(&body);
            if status.as_u16() == 429 && throttles < THROTTLE_WAITS {
                throttles += 1;
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER);
                tracing::debug!("{what}: throttled by the API server, waiting {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            if matches!(status.as_u16(), 500 | 502 | 503 | 504) && failures < RETRIES {
                failures += 1;
                self.retry_pause(failures).await;
                continue;
            }
            if status.as_u16() == 401 {
                return Err(KubeError::Unauthorized {
                    server: self.server.clone(),
                    context: self.context.clone(),
                });
            }
            return Err(KubeError::Api {
                what: what.to_string(),
                code: status.as_u16(),
                reason,
                message,
            });
        }
    }

    /// GETs `path` and decodes the JSON body.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, KubeError> {
        let v = self.send_json(http::Method::GET, path, None, what).await?;
        serde_json::from_value(v).map_err(|e| KubeError::Decode {
            what: what.to_string(),
            detail: e.to_string(),
        })
    }

    /// Sends a JSON body (or none) and decodes the JSON answer.
    pub async fn send_json(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&str, &serde_json::Value)>,
        what: &str,
    ) -> Result<serde_json::Value, KubeError> {
        let bytes = body.map(|(ct, v)| (ct, serde_json::to_vec(v).expect("JSON serializes")));
        let res = self
            .send(
                method,
                path,
                bytes.as_ref().map(|(ct, b)| (*ct, b.as_slice())),
                what,
            )
            .await?;
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| KubeError::Transport {
                what: what.to_string(),
                detail: e.to_string(),
            })?;
        serde_json::from_slice(&body.to_bytes()).map_err(|e| KubeError::Decode {
            what: what.to_string(),
            detail: e.to_string(),
        })
    }

    async fn retry_pause(&self, attempt: u32) {
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
    }

    fn transport_error(&self, what: &str, e: &kube::Error) -> KubeError {
        let detail = error_chain(e);
        let lower = detail.to_ascii_lowercase();
        // Only a certificate the client refused is fatal: a handshake cut by a
        // restarting server is transient, and retried.
        let tls = ["certificate", "unknownissuer", "invalid peer certificate"]
            .iter()
            .any(|s| lower.contains(s));
        let refused = [
            "connection refused",
            "dns error",
            "no route to host",
            "connecttimeout",
            "timed out",
        ]
        .iter()
        .any(|s| lower.contains(s));
        if tls {
            // Not transient: the same certificate fails the same way.
            KubeError::Unreachable {
                server: self.server.clone(),
                context: self.context.clone(),
                detail,
                hint: "the server's certificate is not trusted: check the cluster's certificate-authority in the kubeconfig (in a pod, the service account's ca.crt)",
            }
        } else if refused && self.stats.requests.load(Ordering::Relaxed) <= 1 {
            KubeError::Unreachable {
                server: self.server.clone(),
                context: self.context.clone(),
                detail,
                hint: "check that it runs and that the kubeconfig points at it",
            }
        } else {
            KubeError::Transport {
                what: what.to_string(),
                detail,
            }
        }
    }
}

/// The reason and message of a Status body (never the body itself).
fn status_of(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Status {
        #[serde(default)]
        reason: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Status>(body) {
        Ok(s) => (s.reason, s.message),
        Err(_) => (
            String::new(),
            format!("a non-Status answer of {} bytes", body.len()),
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

/// Finds the configuration as kubectl does, and the name of its context.
async fn load_config(opts: &ConnectOptions) -> Result<(kube::Config, String), KubeError> {
    let from_file = |kc: Kubeconfig, source: String| async move {
        let context = opts
            .context
            .clone()
            .or_else(|| kc.current_context.clone())
            .ok_or_else(|| {
                KubeError::Config(format!(
                    "{source} sets no current context: give --context (one of: {})",
                    context_names(&kc)
                ))
            })?;
        if !kc.contexts.iter().any(|c| c.name == context) {
            return Err(KubeError::Config(format!(
                "{source} has no context {context:?}; it has: {}",
                context_names(&kc)
            )));
        }
        let options = KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| {
                KubeError::Config(format!(
                    "{source}, context {context}: {}",
                    kubeconfig_error(&e)
                ))
            })?;
        Ok::<_, KubeError>((config, context))
    };
    let read = |path: &std::path::Path| {
        Kubeconfig::read_from(path).map_err(|e| {
            KubeError::Config(format!(
                "the kubeconfig {}: {}",
                path.display(),
                kubeconfig_error(&e)
            ))
        })
    };
    if let Some(path) = &opts.kubeconfig {
        return from_file(read(path)?, format!("the kubeconfig {}", path.display())).await;
    }
    if let Some(kc) = Kubeconfig::from_env().map_err(|e| {
        KubeError::Config(format!(
            "the kubeconfig in KUBECONFIG: {}",
            kubeconfig_error(&e)
        ))
    })? {
        return from_file(kc, "the kubeconfig in KUBECONFIG".into()).await;
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    if let Some(path) = home.filter(|p| p.exists()) {
        return from_file(read(&path)?, format!("the kubeconfig {}", path.display())).await;
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        if let Some(c) = &opts.context {
            return Err(KubeError::Config(format!(
                "--context {c} was given, but there is no kubeconfig (running in a pod with its service account)"
            )));
        }
        let config = kube::Config::incluster().map_err(|e| {
            KubeError::Config(format!("the pod's service account: {}", error_chain(&e)))
        })?;
        return Ok((config, "in-cluster".into()));
    }
    Err(KubeError::Config(
        "no kubeconfig: give --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run ballast in a pod with a service account".into(),
    ))
}

fn context_names(kc: &Kubeconfig) -> String {
    let names: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A kubeconfig error without the YAML it quotes (a kubeconfig holds tokens).
fn kubeconfig_error(e: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    match e {
        K::Parse(_) => {
            "it is not a valid kubeconfig (YAML with clusters, contexts and users)".into()
        }
        other => error_chain(other),
    }
}

/// A token bucket: `burst` requests at once, refilled at `qps` per second.
struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(qps: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    async fn acquire(&self) {
        if self.qps <= 0.0 {
            return;
        }
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap();
                let now = Instant::now();
                let tokens =
                    (s.0 + now.duration_since(s.1).as_secs_f64() * self.qps).min(self.burst);
                if tokens >= 1.0 {
                    *s = (tokens - 1.0, now);
                    return;
                }
                *s = (tokens, now);
                // At most a minute at a time, whatever the rate.
                Duration::from_secs_f64(((1.0 - tokens) / self.qps).min(60.0))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The server's URL as ballast shows and records it: scheme, host, port and path,
/// without a `user:password@` or a query that a kubeconfig may carry.
fn shown_url(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{scheme}://{host}{port}{}",
        uri.path().trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_url_is_shown_without_its_credentials() {
        let uri: http::Uri = "https://admin:s3cret@10.0.0.1:6443/k8s/?token=abc"
            .parse()
            .unwrap();
        let shown = shown_url(&uri);
        assert_eq!(shown, "https://10.0.0.1:6443/k8s");
        assert!(!shown.contains("s3cret") && !shown.contains("abc"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_lets_a_burst_through_then_the_average() {
        let l = RateLimiter::new(10.0, 5);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..10 {
            l.acquire().await;
        }
        // Ten more at ten a second: about a second of (paused, virtual) time.
        let t = start.elapsed();
        assert!(t >= Duration::from_millis(900), "{t:?}");
    }
}
