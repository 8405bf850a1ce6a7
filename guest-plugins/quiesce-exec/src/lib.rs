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

    fn pre_backup(target: &str) -> Result<(), Error> {
        run("pre", target)
    }

    fn post_backup(target: &str) -> Result<(), Error> {
        run("post", target)
    }
}

fn run(param: &str, target: &str) -> Result<(), Error> {
    let Some(command) = sdk::param(param) else {
        return Ok(());
    };
    let mut words = command.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| sdk::invalid(format!("the parameter {param} is empty")))?;
    let args: Vec<&str> = words.collect();
    let target = (!target.is_empty()).then_some(target);
    let output = sdk::run(program, &args, target)?;
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
