//! The in-repo marketplace: `guest-plugins/catalog.toml` lists each plugin with its
//! version, WIT version, capabilities, owner and the sha256 of its built component.
//! A plugin named by the catalog runs only if its file has that digest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::PluginError;

/// The catalog's path inside a checkout of ballast.
const IN_CHECKOUT: &str = "guest-plugins/catalog.toml";

/// Where the catalog is looked for when neither `--catalog` nor `BALLAST_CATALOG`
/// says, in order: beside an installed binary (`PREFIX/bin/ballast` reads
/// `PREFIX/share/ballast/catalog.toml`, as `guest-plugins/build --install PREFIX`
/// lays it out), the checkout a binary was built in (`target/*/ballast`), and the
/// checkout in the current directory.
pub fn default_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) {
        if let Some(bin) = exe.parent() {
            if let Some(prefix) = bin.parent() {
                paths.push(prefix.join("share/ballast/catalog.toml"));
            }
            // target/debug/ballast, target/release/ballast, target/x86_64-.../release/ballast
            for root in bin.ancestors().skip(1).take(3) {
                if root.join("Cargo.toml").is_file() {
                    paths.push(root.join(IN_CHECKOUT));
                    break;
                }
            }
        }
    }
    paths.push(PathBuf::from(IN_CHECKOUT));
    paths
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(rename = "plugin", default)]
    pub plugins: Vec<Entry>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub version: String,
    /// The `ballast:plugin` version it is built against.
    pub wit: String,
    /// The built component, relative to the catalog.
    pub component: PathBuf,
    pub sha256: String,
    /// What it asks the policy for: `sql`, `exec`, `http`.
    pub capabilities: Vec<String>,
    pub summary: String,
    pub owner: String,
    /// Its source folder, relative to the catalog.
    pub source: PathBuf,
}

/// A component file and, when it came from the catalog, its entry.
pub struct Resolved {
    pub path: PathBuf,
    pub entry: Option<Entry>,
}

impl Catalog {
    pub fn load(path: Option<&Path>) -> Result<Catalog, PluginError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let tried = default_paths();
                match tried.iter().find(|p| p.is_file()) {
                    Some(p) => p.clone(),
                    None => {
                        return Err(PluginError::Catalog(format!(
                            "no plugin catalog found (looked at {}); name it with --catalog or \
                             BALLAST_CATALOG, or give the plugin as a path to its .wasm",
                            tried
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                }
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            PluginError::Catalog(format!(
                "reading {}: {e} (name the catalog with --catalog or BALLAST_CATALOG, or give the plugin as a path to its .wasm)",
                path.display()
            ))
        })?;
        Catalog::parse(&text, path)
    }

    /// A catalog's text, read from `path` (component paths are relative to it).
    pub fn parse(text: &str, path: PathBuf) -> Result<Catalog, PluginError> {
        let mut c: Catalog = toml::from_str(text)
            .map_err(|e| PluginError::Catalog(format!("{}: {e}", path.display())))?;
        c.path = path;
        Ok(c)
    }

    pub fn find(&self, name: &str) -> Result<&Entry, PluginError> {
        self.plugins.iter().find(|p| p.name == name).ok_or_else(|| {
            PluginError::Catalog(format!(
                "no plugin {name} in {} (it lists: {})",
                self.path.display(),
                self.plugins
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The component file of an entry.
    pub fn component(&self, entry: &Entry) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&entry.component)
    }

    /// Checks an entry's component against its digest.
    pub fn check(&self, entry: &Entry) -> Result<PathBuf, PluginError> {
        let path = self.component(entry);
        let actual = sha256_file(&path).map_err(|e| {
            PluginError::Catalog(format!(
                "plugin {}: {}: {e} (build the plugins with guest-plugins/build)",
                entry.name,
                path.display()
            ))
        })?;
        if actual != entry.sha256 {
            return Err(PluginError::Catalog(format!(
                "plugin {}: {} has sha256 {actual}, but {} lists {}; refusing to run it. \
                 Rebuild it from its source with guest-plugins/build, or, if the change is \
                 meant, update the catalog entry",
                entry.name,
                path.display(),
                self.path.display(),
                entry.sha256
            )));
        }
        Ok(path)
    }
}

/// `reference` is a path to a component (it contains `/` or ends in `.wasm`) or a
/// name in the catalog, whose digest is then checked.
pub fn resolve(reference: &str, catalog: Option<&Path>) -> Result<Resolved, PluginError> {
    if reference.contains('/') || reference.ends_with(".wasm") {
        return Ok(Resolved {
            path: PathBuf::from(reference),
            entry: None,
        });
    }
    let c = Catalog::load(catalog)?;
    let entry = c.find(reference)?.clone();
    let path = c.check(&entry)?;
    Ok(Resolved {
        path,
        entry: Some(entry),
    })
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}
