//! Calls itself `../escape`: a name that would be a path if the host used it as one
//! (a dump's file name is the plugin's name). The host must refuse it at load.

use ballast_plugin_sdk::{self as sdk, Error, Info, Plugin, Sink};

struct BadName;

impl Plugin for BadName {
    fn info() -> Info {
        sdk::info(
            "../escape",
            env!("CARGO_PKG_VERSION"),
            "a name that is a path (tests)",
            &[],
        )
    }

    fn backup(_target: &str, out: &Sink) -> Result<(), Error> {
        out.write(b"escaped\n")
    }
}

sdk::plugin!(BadName);
