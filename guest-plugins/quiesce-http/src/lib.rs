//! Calls an application's own quiesce and unquiesce endpoints around a backup.
//!
//! Parameters: `quiesce-url`, `unquiesce-url` (both required; the policy must allow
//! them), `method` (default `POST`). Any 2xx answer is success.

use ballast_plugin_sdk::{self as sdk, http, Capability, Error, Info, Plugin};

struct QuiesceHttp;

impl Plugin for QuiesceHttp {
    fn info() -> Info {
        sdk::info(
            "quiesce-http",
            env!("CARGO_PKG_VERSION"),
            "Calls the application's quiesce/unquiesce URLs before and after a backup",
            &[Capability::Http],
        )
    }

    fn pre_backup(_target: &str) -> Result<(), Error> {
        call("quiesce-url")
    }

    fn post_backup(_target: &str) -> Result<(), Error> {
        call("unquiesce-url")
    }
}

fn call(param: &str) -> Result<(), Error> {
    let url = sdk::param(param)
        .ok_or_else(|| sdk::invalid(format!("the parameter {param} is required")))?;
    let method = sdk::param("method").unwrap_or_else(|| "POST".into());
    let response = http::request(&method, &url, &[], &[])?;
    if !(200..300).contains(&response.status) {
        let body = String::from_utf8_lossy(&response.body);
        return Err(sdk::failed(format!(
            "{method} {url} answered {}: {}",
            response.status,
            body.chars().take(200).collect::<String>()
        )));
    }
    sdk::log(format!("{method} {url}: {}", response.status));
    Ok(())
}

sdk::plugin!(QuiesceHttp);
