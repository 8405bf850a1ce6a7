//! Write ballast plugins: WebAssembly components that quiesce, dump, restore and
//! verify an application, run by ballast with only the capabilities the operator's
//! policy grants.
//!
//! A plugin is a type that implements [`Plugin`] (only `info` is required), exported
//! with [`plugin!`](crate::plugin):
//!
//! ```ignore
//! use ballast_plugin_sdk::{self as sdk, Capability, Error, Info, Plugin, Sink};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn info() -> Info {
//!         sdk::info("hello", env!("CARGO_PKG_VERSION"), "says hello", &[])
//!     }
//!     fn backup(_target: &str, out: &Sink) -> Result<(), Error> {
//!         out.write(b"hello\n")
//!     }
//! }
//!
//! ballast_plugin_sdk::plugin!(Hello);
//! ```
//!
//! The host's imports are [`sql`], [`exec`], [`http`] and [`job`]; the helpers here
//! cover what most plugins do with them: copy a program's output into the backup
//! ([`copy_out`]), feed a backup into a program ([`copy_in`]), run a program to its end
//! ([`run`]), read a query's rows ([`query`]), and build errors ([`failed`]).

extern crate self as ballast_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen;

/// The generated bindings of `ballast:plugin@0.1.0` (the WIT is in `wit/` at the
/// repository's root).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/ballast-plugin-0.1.0",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "ballast_plugin_sdk::bindings",
        runtime_path: "ballast_plugin_sdk::wit_bindgen::rt",
    });
}

mod io;

pub use bindings::ballast::plugin::streams::{Sink, Source};
pub use bindings::ballast::plugin::types::{Capability, Error, PluginInfo as Info};
pub use bindings::ballast::plugin::{exec, http, job, sql};
pub use io::{copy_in, copy_out, finish, process_reader, query, run, source_reader};

/// The WIT version this SDK builds plugins for.
pub const WIT_VERSION: &str = "0.1.0";

/// The hooks of a plugin. Every hook but `info` has a default: quiesce hooks do
/// nothing, the others say the plugin does not support them.
pub trait Plugin {
    /// Name, version, summary and the capabilities the plugin needs.
    fn info() -> Info;

    /// Quiesce `target` (before a volume snapshot). If it succeeds, the host calls
    /// `post_backup` whatever happens next.
    fn pre_backup(_target: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Write a dump of `target` to `out`.
    fn backup(_target: &str, _out: &Sink) -> Result<(), Error> {
        Err(unsupported("backup"))
    }

    /// Undo `pre_backup`. After a trap or a timeout it runs in a fresh instance (the
    /// parameter `ballast.recovery` is then `1`), so it must not rely on state kept
    /// by `pre_backup`; sessions opened there are already closed by then.
    fn post_backup(_target: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Load a dump from `input` into `target`.
    fn restore(_target: &str, _input: &Source) -> Result<(), Error> {
        Err(unsupported("restore"))
    }

    /// Check a dump without a target.
    fn verify(_input: &Source) -> Result<(), Error> {
        Err(unsupported("verify"))
    }
}

fn unsupported(hook: &str) -> Error {
    Error::Invalid(format!("this plugin does not implement {hook}"))
}

/// Exports a [`Plugin`] as the component's `hooks`.
#[macro_export]
macro_rules! plugin {
    ($t:ident) => {
        impl $crate::bindings::exports::ballast::plugin::hooks::Guest for $t {
            fn info() -> $crate::Info {
                <$t as $crate::Plugin>::info()
            }
            fn pre_backup(target: String) -> Result<(), $crate::Error> {
                <$t as $crate::Plugin>::pre_backup(&target)
            }
            fn backup(target: String, out: &$crate::Sink) -> Result<(), $crate::Error> {
                <$t as $crate::Plugin>::backup(&target, out)
            }
            fn post_backup(target: String) -> Result<(), $crate::Error> {
                <$t as $crate::Plugin>::post_backup(&target)
            }
            fn restore(target: String, input: &$crate::Source) -> Result<(), $crate::Error> {
                <$t as $crate::Plugin>::restore(&target, input)
            }
            fn verify(input: &$crate::Source) -> Result<(), $crate::Error> {
                <$t as $crate::Plugin>::verify(input)
            }
        }
        $crate::bindings::export!($t);
    };
}

/// The `info` record.
pub fn info(name: &str, version: &str, summary: &str, needs: &[Capability]) -> Info {
    Info {
        name: name.into(),
        version: version.into(),
        summary: summary.into(),
        needs: needs.to_vec(),
    }
}

/// An `error.failed` with a message.
pub fn failed(message: impl std::fmt::Display) -> Error {
    Error::Failed(message.to_string())
}

/// An `error.invalid` with a message.
pub fn invalid(message: impl std::fmt::Display) -> Error {
    Error::Invalid(message.to_string())
}

/// A parameter of the job (`--param name=value`).
pub fn param(name: &str) -> Option<String> {
    job::param(name)
}

/// A parameter read as yes/no (`1`, `true`, `yes`); absent is `false`.
pub fn flag(name: &str) -> bool {
    matches!(param(name).as_deref(), Some("1" | "true" | "yes" | "on"))
}

/// Logs at info level.
pub fn log(message: impl AsRef<str>) {
    job::log(job::Level::Info, message.as_ref());
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    job::log(job::Level::Warn, message.as_ref());
}

/// What the host runs the hooks for, from the parameter `ballast.operation`:
/// `backup-app` (a logical dump), `hook-run` (a plugin author trying hooks),
/// `restore-app` or `verify-app`.
pub fn operation() -> String {
    param("ballast.operation").unwrap_or_default()
}
