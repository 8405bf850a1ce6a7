//! Printing: JSON, tables, sizes, progress bars, error chains.

use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde::Serialize;

pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(
        header
            .iter()
            .map(|h| comfy_table::Cell::new(h.to_uppercase())),
    );
    t
}

/// The error and its causes, without repeating a cause already in the message.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// With `--json`, a failure is a JSON object on stdout too, where the output would
/// have been: `{"error": {"message", "kind", "exit_code"}}`.
pub fn error_json(exit_code: i32, message: &str) {
    let _ = json(&serde_json::json!({
        "error": {
            "message": message,
            "kind": super::exit::kind(exit_code),
            "exit_code": exit_code,
        }
    }));
}

/// A progress bar on stderr, or a hidden one when not on a terminal.
pub fn bar(enabled: bool, total: Option<u64>, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    pb.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

pub fn short_time(t: &jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}
