//! The plugin runtime: one wasmtime engine per process with an epoch ticker, a
//! disk cache of compiled components, and loading (version check, linking, the
//! `info` call and the check of its needs against the policy).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::policy::{Grants, Policy};
use super::state::JobState;
use super::v0_1::{self, ballast::plugin::types::Capability};
use super::PluginError;

/// How often the epoch advances: spinning guest code yields at least this often,
/// so a timeout around a call fires on time.
const TICK: Duration = Duration::from_millis(10);

/// The engine, the linker of each served WIT version, the tokio runtime jobs run on
/// and the compile cache.
pub struct Runtime {
    pub engine: Engine,
    linker: Linker<JobState>,
    pub tokio: tokio::runtime::Runtime,
    cache: Option<PathBuf>,
}

/// A component ready to instantiate.
pub struct Loaded {
    /// The file it came from.
    pub path: PathBuf,
    pub sha256: String,
    /// The WIT version it was built against.
    pub wit: semver::Version,
    pub info: Info,
    pub(super) pre: v0_1::PluginPre<JobState>,
    pub(super) engine: Engine,
    /// Whether it came out of the compile cache.
    pub cached: bool,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub needs: Vec<String>,
}

/// The WIT versions this host serves.
pub fn served_versions() -> Vec<semver::Version> {
    vec![v0_1::VERSION]
}

impl Runtime {
    /// The engine and the ticker; `cache` is where compiled components are kept
    /// (None: compile every time).
    pub fn new(cache: Option<PathBuf>) -> Result<Runtime, PluginError> {
        // A program a plugin runs may stop reading its input early (`pg_restore
        // --list` reads only the table of contents). Writing to it must be an error
        // the plugin sees, not the end of ballast, so SIGPIPE is ignored from here on.
        // SAFETY: changing the disposition of SIGPIPE has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Load(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| PluginError::Load(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|_| v0_1::Plugin::add_to_linker::<_, HasSelf<JobState>>(&mut linker, |s| s))
            .map_err(|e| PluginError::Load(e.to_string()))?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("plugin-job")
            .enable_all()
            .build()
            .map_err(|e| PluginError::Load(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            tokio,
            cache,
        })
    }

    /// The default cache directory: `BALLAST_CACHE_DIR`, else `$XDG_CACHE_HOME/ballast`,
    /// else `~/.cache/ballast`.
    pub fn default_cache() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("BALLAST_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("ballast"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ballast"))
    }

    /// Loads the component at `path`: version check, compile (or the cache), link,
    /// `info`, and the check of what it needs against `policy`.
    pub fn load(&self, path: &Path, policy: &Policy) -> Result<(Loaded, Grants), PluginError> {
        let loaded = self.load_component(path)?;
        // Grants of targets and programs go to the builds the policy names by digest.
        let grants = policy.grants(&loaded.info.name, &loaded.sha256)?;
        check_needs(&loaded.info, &grants)?;
        Ok((loaded, grants))
    }

    /// Loads a component without asking the policy (for `plugin info`).
    pub fn load_component(&self, path: &Path) -> Result<Loaded, PluginError> {
        let name = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| PluginError::Load(format!("reading {name}: {e}")))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, cached) = self.compile(&bytes, &sha256, &name)?;
        let wit = version_of(&self.engine, &component, &name)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(v0_1::PluginPre::new)
            .map_err(|e| PluginError::Load(format!("{name} cannot be linked: {e:#}")))?;
        let mut loaded = Loaded {
            path: path.to_path_buf(),
            sha256,
            wit,
            info: Info {
                name: String::new(),
                version: String::new(),
                summary: String::new(),
                needs: vec![],
            },
            pre,
            engine: self.engine.clone(),
            cached,
        };
        loaded.info = super::job::info(self, &loaded)?;
        // The name becomes a file name in snapshots and a field in logs and grants.
        if !super::policy::valid_plugin_name(&loaded.info.name) {
            return Err(PluginError::Load(format!(
                "{name} calls itself {:?}, which cannot be a plugin's name (1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)",
                loaded.info.name
            )));
        }
        Ok(loaded)
    }

    /// The compiled component, from the cache when it holds it.
    fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
        name: &str,
    ) -> Result<(Component, bool), PluginError> {
        let fresh = || {
            Component::from_binary(&self.engine, bytes).map_err(|e| {
                PluginError::Load(format!("{name} is not a WebAssembly component: {e:#}"))
            })
        };
        let Some(dir) = &self.cache else {
            return fresh().map(|c| (c, false));
        };
        let dir = dir.join("plugins").join(self.engine_hash());
        let file = dir.join(format!("{sha256}.cwasm"));
        if file.exists() {
            check_private(&dir)?;
            // SAFETY: the file was written by `precompile_component` of an engine with
            // the same compatibility hash, in a directory only this user can write,
            // and entries are only ever replaced by rename, never changed in place.
            match unsafe { Component::deserialize_file(&self.engine, &file) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(
                        "compiled plugin {} unusable ({e}); compiling again",
                        file.display()
                    );
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        let component = fresh()?;
        let compiled = component
            .serialize()
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        if let Err(e) = store_private(&dir, &file, &compiled) {
            tracing::warn!("cannot cache the compiled plugin in {}: {e}", dir.display());
        }
        Ok((component, false))
    }

    /// 16 hex digits naming what compiled code this engine can run.
    fn engine_hash(&self) -> String {
        struct ShaHasher(Sha256);
        impl Hasher for ShaHasher {
            fn finish(&self) -> u64 {
                let d = self.0.clone().finalize();
                u64::from_le_bytes(d[..8].try_into().unwrap())
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut h = ShaHasher(Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

/// Refuses a cache directory others could write to: its files become machine code.
fn check_private(dir: &Path) -> Result<(), PluginError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(dir).map_err(|e| PluginError::Load(format!("{}: {e}", dir.display())))?;
    if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o022 != 0 {
        return Err(PluginError::Load(format!(
            "the plugin cache {} is writable by others or owned by another user; \
             fix it with chmod 700 (or remove it) before loading plugins from it",
            dir.display()
        )));
    }
    Ok(())
}

fn store_private(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    check_private(dir).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// The WIT version a component was built against, from its `hooks` export.
fn version_of(
    engine: &Engine,
    component: &Component,
    name: &str,
) -> Result<semver::Version, PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let served = served_versions();
    let list = served
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for export in &exports {
        if let Some(v) = export.strip_prefix("ballast:plugin/hooks@") {
            let v = semver::Version::parse(v).map_err(|_| {
                PluginError::Load(format!("{name} exports {export}: not a version"))
            })?;
            // Cargo's rule, which is also the component linker's: same major, and
            // for 0.x the same minor.
            if let Some(s) = served
                .iter()
                .find(|s| s.major == v.major && (v.major > 0 || s.minor == v.minor))
            {
                return Ok(s.clone());
            }
            return Err(PluginError::Load(format!(
                "{name} is built for ballast:plugin@{v}; this ballast serves {list}. \
                 Rebuild the plugin against a served version, or upgrade ballast"
            )));
        }
    }
    Err(PluginError::Load(format!(
        "{name} is not a ballast plugin: it exports no ballast:plugin/hooks (exports: {}); \
         this ballast serves ballast:plugin@{list}",
        if exports.is_empty() {
            "none".into()
        } else {
            exports.join(", ")
        }
    )))
}

/// Refuses a plugin whose needs exceed what the policy grants it.
fn check_needs(info: &Info, grants: &Grants) -> Result<(), PluginError> {
    for need in &info.needs {
        let granted = match need.as_str() {
            "sql" => !grants.targets.is_empty(),
            "exec" => !grants.programs.is_empty(),
            "http" => !grants.urls.is_empty(),
            _ => false,
        };
        if !granted {
            let what = match need.as_str() {
                "sql" => "targets",
                "exec" => "programs",
                _ => "urls",
            };
            return Err(PluginError::Policy(format!(
                "plugin {} needs {need}, which {} does not grant it (add {what} under the plugin {})",
                info.name, grants.source, info.name
            )));
        }
    }
    Ok(())
}

pub(super) fn capability_name(c: Capability) -> &'static str {
    match c {
        Capability::Sql => "sql",
        Capability::Exec => "exec",
        Capability::Http => "http",
    }
}

impl Loaded {
    /// A short identifier for records: `name@version sha256:…`.
    pub fn describe(&self) -> String {
        format!(
            "{}@{} (sha256 {})",
            self.info.name,
            self.info.version,
            &self.sha256[..12]
        )
    }
}
