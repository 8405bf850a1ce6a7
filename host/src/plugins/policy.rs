//! The operator's plugin policy: which targets exist (and how to reach them), and per
//! plugin which targets, programs and URLs it may use, with its limits. Anything not
//! granted is denied; a plugin the policy does not name gets nothing.
//!
//! ```yaml
//! targets:
//!   - name: shop-db
//!     kind: mysql                 # mysql | postgresql
//!     address: 127.0.0.1:3306
//!     database: shop
//!     user: backup
//!     password: { env: SHOP_DB_PASSWORD }   # or { file: /etc/ballast/shop-db.password }
//! plugins:
//!   - name: mysql
//!     targets: [shop-db]
//!     programs:
//!       mysqldump: /usr/bin/mysqldump
//!       mysql: { path: /usr/bin/mysql, args: ["[a-z]*"] }
//!     urls: ["http://127.0.0.1:8080/quiesce"]
//!     limits: { memory: 256MiB, output: 64GiB, timeouts: { backup: 6h } }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use super::PluginError;

/// Where the policy is read from when neither `--policy` nor
/// `BALLAST_PLUGIN_POLICY` says.
pub const DEFAULT_PATH: &str = "/etc/ballast/plugins.yaml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub plugins: Vec<PluginGrant>,
    /// The file it came from (for messages).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Mysql,
    Postgresql,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// `host:port`
    pub address: String,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// A secret the host reads when it connects; the plugin never sees it. Exactly one
/// of `env` (a variable of ballast's environment) and `file` (its content, without a
/// trailing newline).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl Secret {
    /// Reads the secret. Errors name where it should be, never what it is.
    pub fn read(&self) -> Result<String, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("the environment variable {var} is not set"))
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("reading {}: {e}", path.display())),
            _ => Err("a password needs exactly one of env: or file:".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrant {
    /// The plugin's name, as its `info` gives it.
    pub name: String,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub programs: BTreeMap<String, ProgramGrant>,
    /// URL prefixes it may request.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// When set, only the component with this sha256 gets these grants (a plugin
    /// names itself, so a pin keeps another component from claiming the name).
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProgramGrant {
    /// Just the path: any arguments.
    Path(PathBuf),
    /// The path, and globs every argument must match.
    Detailed(DetailedProgram),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedProgram {
    path: PathBuf,
    #[serde(default)]
    args: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub memory: Option<ByteSize>,
    #[serde(default)]
    pub output: Option<ByteSize>,
    #[serde(default)]
    pub timeouts: BTreeMap<String, String>,
}

/// The limits of a job, after defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of the plugin, all memories together.
    pub memory: u64,
    /// Bytes a backup may write.
    pub output: u64,
    pub timeouts: BTreeMap<&'static str, Duration>,
}

/// The hooks, and how long each may run unless the policy says otherwise.
pub const HOOK_TIMEOUTS: &[(&str, u64)] = &[
    ("info", 5),
    ("pre-backup", 60),
    ("backup", 6 * 3600),
    ("post-backup", 60),
    ("restore", 6 * 3600),
    ("verify", 3600),
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            output: 64 << 30,
            timeouts: HOOK_TIMEOUTS
                .iter()
                .map(|(h, s)| (*h, Duration::from_secs(*s)))
                .collect(),
        }
    }
}

impl Limits {
    pub fn timeout(&self, hook: &str) -> Duration {
        self.timeouts
            .get(hook)
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

/// A program a plugin may run.
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    /// None: any arguments.
    pub args: Option<GlobSet>,
}

/// What one plugin may do, resolved against the policy's targets.
#[derive(Debug, Clone)]
pub struct Grants {
    pub plugin: String,
    pub targets: BTreeMap<String, Target>,
    pub programs: BTreeMap<String, Program>,
    pub urls: Vec<url::Url>,
    pub limits: Limits,
    /// The component the grants are pinned to, if any.
    pub sha256: Option<String>,
    /// Where the grants came from (for messages).
    pub source: String,
}

impl Policy {
    /// Reads the policy at `path`; a missing file at the default path is an empty
    /// policy (everything denied), anywhere else an error.
    pub fn load(path: Option<&Path>) -> Result<Policy, PluginError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Policy::default())
            }
            Err(e) => {
                return Err(PluginError::Policy(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        let mut policy: Policy = serde_yaml_ng::from_str(&text)
            .map_err(|e| PluginError::Policy(format!("{}: {e}", path.display())))?;
        policy.path = Some(path);
        policy.validate()?;
        Ok(policy)
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("no policy file ({DEFAULT_PATH} does not exist)"),
        }
    }

    fn validate(&self) -> Result<(), PluginError> {
        let err = |m: String| Err(PluginError::Policy(format!("{}: {m}", self.describe())));
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.targets {
            if !seen.insert(&t.name) {
                return err(format!("target {} is defined twice", t.name));
            }
            if let Some(p) = &t.password {
                if p.env.is_some() == p.file.is_some() {
                    return err(format!(
                        "target {}: password needs exactly one of env: or file:",
                        t.name
                    ));
                }
            }
        }
        for p in &self.plugins {
            for t in &p.targets {
                if !seen.contains(t) {
                    return err(format!(
                        "plugin {} is granted target {t}, which is not defined under targets",
                        p.name
                    ));
                }
            }
            for (name, program) in &p.programs {
                if !program.path().is_absolute() {
                    return err(format!(
                        "plugin {}: program {name} must be an absolute path (got {})",
                        p.name,
                        program.path().display()
                    ));
                }
            }
            for (hook, t) in &p.limits.timeouts {
                if !HOOK_TIMEOUTS.iter().any(|(h, _)| h == hook) {
                    return err(format!("plugin {}: no hook is called {hook}", p.name));
                }
                if humantime::parse_duration(t).is_err() {
                    return err(format!(
                        "plugin {}: timeout {t:?} is not a duration (e.g. 90s, 2h)",
                        p.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// What `plugin` may do: nothing at all if the policy does not name it.
    pub fn grants(&self, plugin: &str) -> Result<Grants, PluginError> {
        let source = self.describe();
        let mut grants = Grants {
            plugin: plugin.to_string(),
            targets: BTreeMap::new(),
            programs: BTreeMap::new(),
            urls: vec![],
            limits: Limits::default(),
            sha256: None,
            source: source.clone(),
        };
        let Some(g) = self.plugins.iter().find(|p| p.name == plugin) else {
            return Ok(grants);
        };
        grants.sha256 = g.sha256.clone();
        for t in &g.targets {
            if let Some(target) = self.targets.iter().find(|x| &x.name == t) {
                grants.targets.insert(t.clone(), target.clone());
            }
        }
        for (name, p) in &g.programs {
            let args = match p {
                ProgramGrant::Detailed(DetailedProgram {
                    args: Some(globs), ..
                }) => {
                    let mut b = GlobSetBuilder::new();
                    for glob in globs {
                        b.add(Glob::new(glob).map_err(|e| {
                            PluginError::Policy(format!(
                                "{source}: plugin {plugin}, program {name}: {e}"
                            ))
                        })?);
                    }
                    Some(b.build().map_err(|e| PluginError::Policy(e.to_string()))?)
                }
                _ => None,
            };
            grants.programs.insert(
                name.clone(),
                Program {
                    path: p.path().to_path_buf(),
                    args,
                },
            );
        }
        for u in &g.urls {
            grants.urls.push(url::Url::parse(u).map_err(|e| {
                PluginError::Policy(format!("{source}: plugin {plugin}: URL {u}: {e}"))
            })?);
        }
        let l = &mut grants.limits;
        if let Some(m) = g.limits.memory {
            l.memory = m.as_u64();
        }
        if let Some(o) = g.limits.output {
            l.output = o.as_u64();
        }
        for (hook, t) in &g.limits.timeouts {
            if let (Some((h, _)), Ok(d)) = (
                HOOK_TIMEOUTS.iter().find(|(h, _)| h == hook),
                humantime::parse_duration(t),
            ) {
                l.timeouts.insert(h, d);
            }
        }
        Ok(grants)
    }
}

impl ProgramGrant {
    fn path(&self) -> &Path {
        match self {
            ProgramGrant::Path(p) | ProgramGrant::Detailed(DetailedProgram { path: p, .. }) => p,
        }
    }
}

impl Grants {
    /// The target `name`, or a denial that says where to grant it.
    pub fn target(&self, name: &str) -> Result<&Target, String> {
        self.targets.get(name).ok_or_else(|| {
            format!(
                "target {name} is not granted to plugin {} (add it to the plugin's targets in {})",
                self.plugin, self.source
            )
        })
    }

    /// The program `name` if `args` are allowed, or a denial.
    pub fn program(&self, name: &str, args: &[String]) -> Result<&Program, String> {
        let p = self.programs.get(name).ok_or_else(|| {
            format!(
                "exec: program {name} is not granted to plugin {} (granted: {})",
                self.plugin,
                list(self.programs.keys())
            )
        })?;
        if let Some(globs) = &p.args {
            if let Some(bad) = args.iter().find(|a| !globs.is_match(a.as_str())) {
                return Err(format!(
                    "exec: argument {bad:?} of {name} is not allowed for plugin {} (see its args in {})",
                    self.plugin, self.source
                ));
            }
        }
        Ok(p)
    }

    /// Whether `url` lies under a granted prefix (same scheme, host and port, and a
    /// path below the prefix's).
    pub fn url(&self, url: &url::Url) -> Result<(), String> {
        let ok = self.urls.iter().any(|p| {
            p.scheme() == url.scheme()
                && p.host_str() == url.host_str()
                && p.port_or_known_default() == url.port_or_known_default()
                && under(url.path(), p.path())
        });
        if ok {
            return Ok(());
        }
        Err(format!(
            "http: URL {url} is not granted to plugin {} (granted: {})",
            self.plugin,
            list(self.urls.iter().map(|u| u.as_str()))
        ))
    }
}

/// Whether `path` is `prefix` or lies below it: `/admin` covers `/admin/x`, not
/// `/administrator`.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
}

fn list<'a>(items: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let v: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        let mut p: Policy = serde_yaml_ng::from_str(yaml).unwrap();
        p.path = Some("test.yaml".into());
        p.validate().unwrap();
        p
    }

    const YAML: &str = r#"
targets:
  - { name: db, kind: mysql, address: "127.0.0.1:3306", user: root }
plugins:
  - name: mysql
    targets: [db]
    programs:
      mysqldump: /usr/bin/mysqldump
      mysql: { path: /usr/bin/mysql, args: ["[a-z]*"] }
    urls: ["http://127.0.0.1:8080/hooks"]
    limits: { memory: 64MiB, timeouts: { backup: 2h } }
"#;

    #[test]
    fn grants_follow_the_policy_and_deny_the_rest() {
        let p = policy(YAML);
        let g = p.grants("mysql").unwrap();
        assert!(g.target("db").is_ok());
        let e = g.target("other").unwrap_err();
        assert!(
            e.contains("target other is not granted to plugin mysql"),
            "{e}"
        );
        assert!(g.program("mysqldump", &["--anything".into()]).is_ok());
        assert!(g.program("mysql", &["shop".into()]).is_ok());
        let e = g.program("mysql", &["--execute=DROP".into()]).unwrap_err();
        assert!(e.contains("argument \"--execute=DROP\""), "{e}");
        let e = g.program("sh", &[]).unwrap_err();
        assert!(e.contains("program sh is not granted"), "{e}");
        let ok = url::Url::parse("http://127.0.0.1:8080/hooks/quiesce").unwrap();
        assert!(g.url(&ok).is_ok());
        for bad in [
            "http://127.0.0.1:8080/other",
            "http://127.0.0.1:8081/hooks/x",
            "https://127.0.0.1:8080/hooks/x",
            "http://localhost:8080/hooks/x",
            "http://127.0.0.1:8080/hooks-internal/x",
        ] {
            assert!(g.url(&url::Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
        assert_eq!(g.limits.memory, 64 << 20);
        assert_eq!(g.limits.timeout("backup"), Duration::from_secs(7200));
        assert_eq!(g.limits.timeout("pre-backup"), Duration::from_secs(60));
    }

    #[test]
    fn a_plugin_the_policy_does_not_name_gets_nothing() {
        let g = policy(YAML).grants("stranger").unwrap();
        assert!(g.targets.is_empty() && g.programs.is_empty() && g.urls.is_empty());
        assert!(g.program("mysqldump", &[]).is_err());
    }

    #[test]
    fn mistakes_in_the_policy_are_named() {
        let bad = |yaml: &str| {
            let mut p: Policy = match serde_yaml_ng::from_str(yaml) {
                Ok(p) => p,
                Err(e) => return e.to_string(),
            };
            p.path = Some("test.yaml".into());
            p.validate().unwrap_err().to_string()
        };
        assert!(bad("plugins: [{ name: x, targets: [nope] }]").contains("target nope"));
        assert!(bad("plugins: [{ name: x, programs: { sh: bin/sh } }]").contains("absolute path"));
        assert!(
            bad("plugins: [{ name: x, limits: { timeouts: { backpu: 1h } } }]")
                .contains("no hook is called backpu")
        );
        assert!(bad("targets: [{ name: a, kind: oracle, address: x }]").contains("oracle"));
        assert!(bad("plugins: [{ name: x, grant: all }]").contains("grant"));
        // A typo in a program's details must not become "any arguments".
        assert!(bad(
            "plugins: [{ name: x, programs: { m: { path: /usr/bin/m, arg: [\"a*\"] } } }]"
        )
        .contains("did not match any variant"));
        assert!(bad(
            "targets: [{ name: a, kind: mysql, address: x, password: { env: A, file: /b } }]"
        )
        .contains("exactly one of env: or file:"));
        // The form the guide shows parses.
        policy("targets: [{ name: a, kind: mysql, address: x, password: { env: A } }]");
    }

    #[test]
    fn secrets_come_from_files_without_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let file = Secret {
            file: Some(f),
            ..Default::default()
        };
        assert_eq!(file.read().unwrap(), "s3cret");
        let env = Secret {
            env: Some("BALLAST_TEST_UNSET_VARIABLE".into()),
            ..Default::default()
        };
        let e = env.read().unwrap_err();
        assert!(e.contains("BALLAST_TEST_UNSET_VARIABLE is not set"));
    }
}
