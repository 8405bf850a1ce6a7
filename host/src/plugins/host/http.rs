//! Outgoing HTTP to the URL prefixes the policy grants. Redirects are not followed
//! (the plugin may ask again, and is checked again), proxies are not used, bodies
//! are capped.

use super::HostError;
use crate::plugins::state::JobState;
use crate::plugins::v0_1::ballast::plugin::http;

const MAX_BODY: usize = 16 << 20;
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl http::Host for JobState {
    async fn request(
        &mut self,
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<http::Response, HostError> {
        let parsed =
            url::Url::parse(&url).map_err(|e| HostError::Invalid(format!("URL {url}: {e}")))?;
        self.ctx.grants.url(&parsed).map_err(HostError::Denied)?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HostError::Invalid(format!("{method} is not an HTTP method")))?;
        if body.len() > MAX_BODY {
            return Err(HostError::Invalid("the request body is over 16 MiB".into()));
        }
        let client = match &self.http {
            Some(c) => c.clone(),
            None => {
                let c = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .timeout(TIMEOUT)
                    .build()
                    .map_err(|e| HostError::Failed(e.to_string()))?;
                self.http = Some(c.clone());
                c
            }
        };
        let mut req = client.request(method, parsed).body(body);
        for (k, v) in headers {
            // The URL's host is what the policy checked; a Host header would send
            // the request to another virtual host behind the same address.
            let lower = k.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "host" | "connection" | "transfer-encoding" | "te" | "upgrade"
            ) || lower.starts_with("proxy-")
            {
                return Err(HostError::Denied(format!(
                    "http: the header {k} is set by ballast, not by plugins"
                )));
            }
            req = req.header(k, v);
        }
        let failed = |e: reqwest::Error| HostError::Failed(format!("{url}: {e}"));
        let mut resp = req.send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // The body is held until it is handed over: at most 16 MiB, and at most what
        // the job's buffers have room for.
        let cap = MAX_BODY.min(self.ctx.budget.available() as usize);
        let _held = self
            .ctx
            .budget
            .try_hold(cap as u64)
            .map_err(HostError::Failed)?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > cap {
                return Err(HostError::Failed(format!(
                    "{url}: the response body is over {cap} bytes (16 MiB, or what the job's \
                     buffers have room for: limits.buffers in the policy)"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}
