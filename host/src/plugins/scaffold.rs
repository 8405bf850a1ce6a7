//! `ballast plugin new NAME`: a plugin crate that builds and passes its test as it
//! is, for an application team to fill in.

use std::path::{Path, PathBuf};

use super::PluginError;

/// Writes the crate `dir/name`; `sdk` is the path of the `ballast-plugin-sdk` crate.
/// Refuses to touch an existing directory.
pub fn new_plugin(dir: &Path, name: &str, sdk: &Path) -> Result<PathBuf, PluginError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(PluginError::Load(format!(
            "{name:?} is not a plugin name: use lowercase letters, digits and dashes, starting with a letter"
        )));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(PluginError::Load(format!(
            "{} exists already; pick another name or directory",
            root.display()
        )));
    }
    let sdk = std::fs::canonicalize(sdk).map_err(|e| {
        PluginError::Load(format!(
            "the plugin SDK {}: {e} (point --sdk at guest-plugins/sdk of a ballast checkout)",
            sdk.display()
        ))
    })?;
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("README.md", README),
        (".gitignore", "target/\n"),
    ];
    let io =
        |p: &Path, e: std::io::Error| PluginError::Load(format!("writing {}: {e}", p.display()));
    for (file, template) in files {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| io(&path, e))?;
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string());
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    Ok(root)
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
ballast-plugin-sdk = { path = "{{sdk}}" }

# A workspace of its own, so it builds wherever it is put.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#;

const LIB_RS: &str = r#"//! {{name}}: a ballast plugin.
//!
//! Fill in the hooks your application needs; each one you leave out keeps the SDK's
//! default (quiesce hooks do nothing, the others say they are not supported).

use std::io::Read;

use ballast_plugin_sdk::{self as sdk, Error, Info, Plugin, Sink, Source};

struct Hooks;

impl Plugin for Hooks {
    fn info() -> Info {
        // The last argument lists the capabilities it needs (Capability::Sql, Exec,
        // Http); the operator's policy must grant them.
        sdk::info("{{name}}", env!("CARGO_PKG_VERSION"), "TODO: say what it backs up", &[])
    }

    fn pre_backup(target: &str) -> Result<(), Error> {
        sdk::log(format!("quiescing {target}"));
        Ok(())
    }

    fn backup(target: &str, out: &Sink) -> Result<(), Error> {
        out.write(dump(target).as_bytes())
    }

    fn post_backup(target: &str) -> Result<(), Error> {
        sdk::log(format!("resuming {target}"));
        Ok(())
    }

    fn verify(input: &Source) -> Result<(), Error> {
        let mut text = String::new();
        sdk::source_reader(input)
            .read_to_string(&mut text)
            .map_err(sdk::failed)?;
        check(&text).map_err(sdk::failed)
    }
}

/// What the backup writes.
fn dump(target: &str) -> String {
    format!("{{name}} backup of {target}\n")
}

/// What verify accepts.
fn check(text: &str) -> Result<(), String> {
    if text.starts_with("{{name}} backup of ") {
        Ok(())
    } else {
        Err("not a {{name}} backup".into())
    }
}

sdk::plugin!(Hooks);

#[cfg(test)]
mod tests {
    #[test]
    fn a_dump_passes_its_own_check() {
        assert!(super::check(&super::dump("db")).is_ok());
        assert!(super::check("something else").is_err());
    }
}
"#;

const README: &str = r#"# {{name}}

A ballast plugin. See docs/plugins/ in the ballast repository for the whole story.

```sh
cargo test                                          # the plugin's own tests
cargo build --release --target wasm32-wasip2        # the component
ballast plugin info target/wasm32-wasip2/release/{{crate}}.wasm
ballast hook run target/wasm32-wasip2/release/{{crate}}.wasm --target my-db \
    --phase pre-backup --phase post-backup
```

To publish it, move it under `guest-plugins/`, add it to the workspace members, and add
an entry to `guest-plugins/catalog.toml` with the digest `guest-plugins/build --digests`
prints.
"#;
