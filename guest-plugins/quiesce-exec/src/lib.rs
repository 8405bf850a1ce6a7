//! Runs an operator-allowed command before and after a backup (`fsfreeze --freeze`,
//! a maintenance-mode switch...).
//!
//! Parameters: `pre` and `post`, each a program and its arguments separated by
//! spaces (no shell: no quoting, no pipes). Either may be left out.

use ballast_plugin_sdk::{self as sdk, Capability, Error, Info, Plugin};

struct QuiesceExec;

impl Plugin for QuiesceExec {
    fn info() -> Info {
        sdk::info(
            "quiesce-exec",
            env!("CARGO_PKG_VERSION"),
            "Runs an allowed command before and after a backup (fsfreeze, maintenance mode)",
            &[Capability::Exec],
        )
    }

    fn pre_backup(_target: &str) -> Result<(), Error> {
        run("pre")
    }

    fn post_backup(_target: &str) -> Result<(), Error> {
        run("post")
    }
}

/// Runs the command of a parameter. The target names what is quiesced; it is not a
/// database, so no credentials go to the command.
fn run(param: &str) -> Result<(), Error> {
    let Some(command) = sdk::param(param) else {
        return Ok(());
    };
    let mut words = command.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| sdk::invalid(format!("the parameter {param} is empty")))?;
    let args: Vec<&str> = words.collect();
    let output = sdk::run(program, &args, None)?;
    sdk::log(format!(
        "{command}: ok{}",
        if output.is_empty() {
            String::new()
        } else {
            format!(" ({})", String::from_utf8_lossy(&output).trim())
        }
    ));
    Ok(())
}

sdk::plugin!(QuiesceExec);
