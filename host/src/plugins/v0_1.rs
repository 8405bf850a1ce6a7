//! The bindings of WIT `ballast:plugin@0.1.0` (`wit/ballast-plugin-0.1.0/`). Every
//! import is async (drivers, programs and HTTP are async, and each hook call runs
//! under one timeout) and may trap; `result<_, error>` maps to [`HostError`].
//! The host types behind the resources are shared by all versions (see `host/`).

use super::host::HostError;

wasmtime::component::bindgen!({
    path: "../wit/ballast-plugin-0.1.0",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: { "ballast:plugin/types.error" => HostError },
    with: {
        "ballast:plugin/streams.sink": crate::plugins::host::streams::Sink,
        "ballast:plugin/streams.source": crate::plugins::host::streams::Source,
        "ballast:plugin/sql.session": crate::plugins::host::sql::Session,
        "ballast:plugin/sql.rows": crate::plugins::host::sql::Rows,
        "ballast:plugin/exec.process": crate::plugins::host::exec::Process,
    },
});

/// The version these bindings serve.
pub const VERSION: semver::Version = semver::Version::new(0, 1, 0);
