//! The operator's plugin policy: which targets exist (and how to reach them), and per
//! plugin which targets, programs and URLs it may use, with its limits. Anything not
//! granted is denied; a plugin the policy does not name gets nothing, and grants of
//! targets or programs go only to the builds the policy names by digest.
//!
//! ```yaml
//! run-as: nobody                # who granted programs run as (default: nobody when
//!                               # ballast runs as root)
//! targets:
//!   - name: shop-db
//!     kind: mysql                 # mysql | postgresql
//!     address: 127.0.0.1:3306
//!     database: shop
//!     user: backup
//!     password: { env: SHOP_DB_PASSWORD }   # or { file: /etc/ballast/shop-db.password }
//!     tls: { mode: verify-full, ca: /etc/ballast/shop-ca.pem }
//! plugins:
//!   - name: mysql
//!     sha256: 5d1c...             # required with targets or programs; or a list
//!     targets: [shop-db]
//!     programs:
//!       mysqldump: { path: /usr/bin/mysqldump, args: ["--single-transaction", "**"] }
//!       mysql: { path: /usr/bin/mysql, args: ["[a-z]*"] }
//!     urls: ["http://127.0.0.1:8080/quiesce"]
//!     limits: { memory: 256MiB, output: 64GiB, timeouts: { backup: 6h } }
//! ```

mod clients;
mod program;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

pub use clients::{is_mysql_shell, refused as refused_client_argument};
pub use program::{ArgShapes, Program, RunAs, Shapes};

use super::PluginError;

/// Where the policy is read from when neither `--policy` nor
/// `BALLAST_PLUGIN_POLICY` says.
pub const DEFAULT_PATH: &str = "/etc/ballast/plugins.yaml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who granted programs run as, unless a program says otherwise.
    #[serde(default, rename = "run-as")]
    pub run_as: Option<String>,
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

impl TargetKind {
    pub fn default_port(self) -> u16 {
        match self {
            TargetKind::Mysql => 3306,
            TargetKind::Postgresql => 5432,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Mysql => "MySQL",
            TargetKind::Postgresql => "PostgreSQL",
        }
    }
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
    /// TLS to the server (none when absent).
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// How the host (and the target's client programs) talk TLS to a database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub mode: TlsMode,
    /// The CA certificates (PEM) to verify the server against; without it, the
    /// system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// As libpq names them: `require` encrypts without checking who answers,
/// `verify-ca` checks the certificate's chain, `verify-full` also its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A secret the host reads when it connects; the plugin never sees it. Exactly one
/// of `env` (a variable of ballast's environment) and `file` (its content, without a
/// trailing newline).
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// The fields of a [`Secret`], as the policy spells them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFields {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

/// A password written into the policy itself is refused without being quoted: the
/// error goes to logs and terminals.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        const INLINE: &str = "a password is given as { env: VARIABLE } or { file: PATH }, never written into the policy (the value is not shown here)";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{ env: VARIABLE } or { file: PATH }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Secret, A::Error> {
                let f =
                    SecretFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Secret {
                    env: f.env,
                    file: f.file,
                })
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(serde::de::Error::custom(INLINE))
            }
        }
        d.deserialize_any(V)
    }
}

/// A password is short; a secret file larger than this is not one.
const MAX_SECRET: u64 = 64 * 1024;

impl Secret {
    /// Reads the secret. Errors name where it should be, never what it is.
    pub fn read(&self) -> Result<String, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("the environment variable {var} is not set"))
            }
            (None, Some(path)) => {
                let len = std::fs::metadata(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?
                    .len();
                if len > MAX_SECRET {
                    return Err(format!(
                        "{} is {len} bytes, too large for a password (64 KiB at most)",
                        path.display()
                    ));
                }
                std::fs::read_to_string(path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("reading {}: {e}", path.display()))
            }
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
    /// The builds (sha256 of the component) these grants go to: required when they
    /// include targets or programs, since a plugin names itself.
    #[serde(default)]
    pub sha256: Option<Digests>,
}

/// One digest or several, as strings (YAML reads an unquoted digest of digits only
/// as a number: such a value is refused with a hint to quote it).
#[derive(Debug, Clone)]
pub struct Digests(Vec<String>);

impl<'de> Deserialize<'de> for Digests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "sha256 must be a digest in quotes, or a list of them (\"3f9c...\")";
        let as_string = |v: &serde_yaml_ng::Value| v.as_str().map(str::to_ascii_lowercase);
        let v = serde_yaml_ng::Value::deserialize(d)?;
        let list = match &v {
            serde_yaml_ng::Value::Sequence(items) => items.iter().map(as_string).collect(),
            one => as_string(one).map(|s| vec![s]),
        };
        list.map(Digests)
            .ok_or_else(|| serde::de::Error::custom(hint))
    }
}

impl Digests {
    fn list(&self) -> Vec<String> {
        self.0.clone()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProgramGrant {
    /// Just the path: no arguments.
    Path(PathBuf),
    Detailed(DetailedProgram),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedProgram {
    path: PathBuf,
    /// Argument shapes, by position (see [`program`]); none: no arguments.
    #[serde(default)]
    args: Option<ArgShapes>,
    /// The database kind it is a client of, for a client ballast does not know by
    /// name (a wrapper script).
    #[serde(default)]
    client: Option<TargetKind>,
    #[serde(default, rename = "run-as")]
    run_as: Option<String>,
    /// Paths it may read besides the system's.
    #[serde(default)]
    read: Vec<PathBuf>,
    /// Paths it may write besides its own directory.
    #[serde(default)]
    write: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub memory: Option<ByteSize>,
    #[serde(default)]
    pub output: Option<ByteSize>,
    /// What `/scratch` may hold.
    #[serde(default)]
    pub scratch: Option<ByteSize>,
    /// What the host may hold for the plugin at once: query rows, HTTP bodies and
    /// program output not yet read.
    #[serde(default)]
    pub buffers: Option<ByteSize>,
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
    /// Bytes `/scratch` may hold.
    pub scratch: u64,
    /// Bytes the host holds for the plugin at once (rows, bodies, program output).
    pub buffers: u64,
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
            scratch: 64 << 20,
            buffers: 64 << 20,
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

/// What one plugin may do, resolved against the policy's targets.
#[derive(Debug, Clone)]
pub struct Grants {
    pub plugin: String,
    pub targets: BTreeMap<String, Target>,
    pub programs: BTreeMap<String, Program>,
    pub urls: Vec<url::Url>,
    pub limits: Limits,
    /// Where the grants came from (for messages).
    pub source: String,
}

/// Whether `name` can be a plugin's name: 1 to 64 of `a-z 0-9 . _ -`, starting with a
/// letter or digit. Names become file names (`NAME.dump` in a snapshot) and log fields.
pub fn valid_plugin_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Who programs run as when nothing says: `nobody` when ballast runs as root (a
/// program must not act with ballast's identity), ballast's own user otherwise.
fn default_run_as() -> RunAs {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        RunAs::User("nobody".into())
    } else {
        RunAs::Inherit
    }
}

fn run_as(name: &str) -> RunAs {
    if name == "ballast" {
        RunAs::Inherit
    } else {
        RunAs::User(name.to_string())
    }
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
        Policy::parse(&text, Some(path))
    }

    /// Parses and checks a policy's text.
    pub fn parse(text: &str, path: Option<PathBuf>) -> Result<Policy, PluginError> {
        let shown = path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the policy".into());
        let mut policy: Policy = serde_yaml_ng::from_str(text)
            .map_err(|e| PluginError::Policy(format!("{shown}: {e}")))?;
        policy.path = path;
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
            if let Some(ca) = t.tls.as_ref().and_then(|tls| tls.ca.as_ref()) {
                if !ca.is_absolute() {
                    return err(format!(
                        "target {}: tls.ca must be an absolute path",
                        t.name
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.plugins {
            if !valid_plugin_name(&p.name) {
                return err(format!(
                    "`{}` cannot be a plugin's name (1-64 of a-z, 0-9, '.', '_', '-')",
                    p.name
                ));
            }
            if !names.insert(&p.name) {
                return err(format!(
                    "plugin {} is listed twice (give several builds as a list under sha256)",
                    p.name
                ));
            }
            for t in &p.targets {
                if !seen.contains(t) {
                    return err(format!(
                        "plugin {} is granted target {t}, which is not defined under targets",
                        p.name
                    ));
                }
            }
            let digests = p.sha256.as_ref().map(Digests::list).unwrap_or_default();
            if (!p.targets.is_empty() || !p.programs.is_empty()) && digests.is_empty() {
                return err(format!(
                    "plugin {} is granted targets or programs, so its grants must name the builds \
                     they go to: add `sha256:` with the component's digest (`ballast plugin info {}` \
                     prints it). A plugin names itself; without a digest any component calling \
                     itself {} would get them",
                    p.name, p.name, p.name
                ));
            }
            if let Some(bad) = digests
                .iter()
                .find(|d| d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return err(format!(
                    "plugin {}: `{bad}` is not a sha256 (64 hex digits)",
                    p.name
                ));
            }
            for (name, program) in &p.programs {
                let ctx = |m: String| format!("plugin {}, program {name}: {m}", p.name);
                if !program.path().is_absolute() {
                    return err(ctx(format!(
                        "the path must be absolute (got {})",
                        program.path().display()
                    )));
                }
                let file = program.path().file_name().and_then(|n| n.to_str());
                if file.is_some_and(|f| clients::SHELLS.contains(&f))
                    || clients::SHELLS.contains(&name.as_str())
                {
                    return err(ctx(
                        "psql runs shell commands from its input (\\!) and nothing turns that \
                         off: it cannot be granted; grant pg_dump, pg_restore or a session (sql)"
                            .into(),
                    ));
                }
                if let ProgramGrant::Detailed(d) = program {
                    Shapes::compile(d.args.as_ref()).map_err(|e| {
                        PluginError::Policy(format!("{}: {}", self.describe(), ctx(e)))
                    })?;
                    if let Some(rel) = d.read.iter().chain(&d.write).find(|p| !p.is_absolute()) {
                        return err(ctx(format!(
                            "read and write paths must be absolute (got {})",
                            rel.display()
                        )));
                    }
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

    /// What the component `sha256`, which calls itself `plugin`, may do: nothing at
    /// all if the policy does not name it. Grants pinned to other builds are refused.
    pub fn grants(&self, plugin: &str, sha256: &str) -> Result<Grants, PluginError> {
        let source = self.describe();
        let mut grants = Grants {
            plugin: plugin.to_string(),
            targets: BTreeMap::new(),
            programs: BTreeMap::new(),
            urls: vec![],
            limits: Limits::default(),
            source: source.clone(),
        };
        let Some(g) = self.plugins.iter().find(|p| p.name == plugin) else {
            return Ok(grants);
        };
        if let Some(pins) = g.sha256.as_ref().map(Digests::list) {
            if !pins.contains(&sha256.to_ascii_lowercase()) {
                return Err(PluginError::Policy(format!(
                    "a component with sha256 {sha256} says it is plugin {plugin}, but {source} \
                     grants {plugin} only to {}; if this build is meant, add its digest under \
                     the plugin's sha256",
                    pins.join(", ")
                )));
            }
        }
        for t in &g.targets {
            if let Some(target) = self.targets.iter().find(|x| &x.name == t) {
                grants.targets.insert(t.clone(), target.clone());
            }
        }
        let policy_run_as = self
            .run_as
            .as_deref()
            .map(run_as)
            .unwrap_or_else(default_run_as);
        for (name, p) in &g.programs {
            let (args, client, who, read, write) = match p {
                ProgramGrant::Path(_) => (None, None, None, vec![], vec![]),
                ProgramGrant::Detailed(d) => (
                    d.args.as_ref(),
                    d.client,
                    d.run_as.as_deref(),
                    d.read.clone(),
                    d.write.clone(),
                ),
            };
            let shapes = Shapes::compile(args).map_err(|e| {
                PluginError::Policy(format!("{source}: plugin {plugin}, program {name}: {e}"))
            })?;
            grants.programs.insert(
                name.clone(),
                Program {
                    path: p.path().to_path_buf(),
                    shapes,
                    client: client.or_else(|| clients::kind_of(p.path())),
                    run_as: who.map(run_as).unwrap_or_else(|| policy_run_as.clone()),
                    read,
                    write,
                },
            );
        }
        for u in &g.urls {
            grants.urls.push(url::Url::parse(u).map_err(|e| {
                PluginError::Policy(format!("{source}: plugin {plugin}: URL {u}: {e}"))
            })?);
        }
        let l = &mut grants.limits;
        let c = &g.limits;
        for (field, value) in [
            (&mut l.memory, c.memory),
            (&mut l.output, c.output),
            (&mut l.scratch, c.scratch),
            (&mut l.buffers, c.buffers),
        ] {
            if let Some(v) = value {
                *field = v.as_u64();
            }
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
    /// Nothing at all (a plugin's `info` runs with this).
    pub fn none() -> Grants {
        Grants {
            plugin: String::new(),
            targets: BTreeMap::new(),
            programs: BTreeMap::new(),
            urls: vec![],
            limits: Limits::default(),
            source: "nothing granted".into(),
        }
    }

    /// The target `name`, or a denial that says where to grant it.
    pub fn target(&self, name: &str) -> Result<&Target, String> {
        self.targets.get(name).ok_or_else(|| {
            format!(
                "target {name} is not granted to plugin {} (add it to the plugin's targets in {})",
                self.plugin, self.source
            )
        })
    }

    /// The program `name`, if it may run with `args` and `target`, or a denial.
    pub fn program(
        &self,
        name: &str,
        args: &[String],
        target: Option<&Target>,
    ) -> Result<&Program, String> {
        let p = self.programs.get(name).ok_or_else(|| {
            format!(
                "exec: program {name} is not granted to plugin {} (granted: {})",
                self.plugin,
                list(self.programs.keys())
            )
        })?;
        if p.client.is_none() && target.is_some() {
            return Err(format!(
                "exec: {name} is not a database client (its grant has no `client:`): it cannot \
                 run with a target, which would hand it the target's address and credentials"
            ));
        }
        if let Some(kind) = p.client {
            match target {
                Some(t) if t.kind == kind => {}
                Some(t) => {
                    return Err(format!(
                        "exec: {name} is a {} client; target {} is a {} database",
                        kind.name(),
                        t.name,
                        t.kind.name()
                    ))
                }
                None => {
                    return Err(format!(
                        "exec: {name} is a {} client: it runs only with a target, which gives it \
                         the target's address and credentials and nothing else",
                        kind.name()
                    ))
                }
            }
            if let Some(bad) = clients::refused(kind, args) {
                return Err(format!(
                    "exec: argument {bad:?} of {name} is refused: a {} client may not be pointed \
                     at another server, given other credentials, or told to read or write files \
                     (ballast sets its connection)",
                    kind.name()
                ));
            }
        }
        p.shapes.allow(args).map_err(|e| {
            format!(
                "exec: {name} for plugin {}: {e} (see its args in {})",
                self.plugin, self.source
            )
        })?;
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
        Policy::parse(yaml, Some("test.yaml".into())).unwrap()
    }

    const DIGEST: &str = "5d1c0000000000000000000000000000000000000000000000000000000000aa";

    fn yaml() -> String {
        format!(
            r#"
targets:
  - {{ name: db, kind: mysql, address: "127.0.0.1:3306", user: root }}
  - {{ name: pg, kind: postgresql, address: "127.0.0.1:5432" }}
plugins:
  - name: mysql
    sha256: {DIGEST}
    targets: [db, pg]
    programs:
      mysqldump: {{ path: /usr/bin/mysqldump, args: ["--single-transaction", "**"] }}
      mysql: {{ path: /usr/bin/mysql, args: ["[a-z]*"] }}
      touch: /usr/bin/touch
    urls: ["http://127.0.0.1:8080/hooks"]
    limits: {{ memory: 64MiB, scratch: 1MiB, buffers: 2MiB, timeouts: {{ backup: 2h }} }}
"#
        )
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn grants_follow_the_policy_and_deny_the_rest() {
        let p = policy(&yaml());
        let g = p.grants("mysql", DIGEST).unwrap();
        let db = g.target("db").unwrap().clone();
        let e = g.target("other").unwrap_err();
        assert!(
            e.contains("target other is not granted to plugin mysql"),
            "{e}"
        );
        assert!(g
            .program(
                "mysqldump",
                &s(&["--single-transaction", "shop"]),
                Some(&db)
            )
            .is_ok());
        assert!(g.program("mysql", &s(&["shop"]), Some(&db)).is_ok());
        let e = g
            .program("mysql", &s(&["--execute=DROP"]), Some(&db))
            .unwrap_err();
        assert!(e.contains("fit none of the shapes"), "{e}");
        let e = g.program("sh", &[], None).unwrap_err();
        assert!(e.contains("program sh is not granted"), "{e}");
        // A path alone grants no arguments.
        assert!(g.program("touch", &[], None).is_ok());
        assert!(g.program("touch", &s(&["/tmp/x"]), None).is_err());
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
        assert_eq!((g.limits.scratch, g.limits.buffers), (1 << 20, 2 << 20));
        assert_eq!(g.limits.timeout("backup"), Duration::from_secs(7200));
        assert_eq!(g.limits.timeout("pre-backup"), Duration::from_secs(60));
    }

    #[test]
    fn database_clients_run_only_with_a_target_of_their_kind() {
        let p = policy(&yaml());
        let g = p.grants("mysql", DIGEST).unwrap();
        let (db, pg) = (
            g.target("db").unwrap().clone(),
            g.target("pg").unwrap().clone(),
        );
        let e = g.program("mysql", &s(&["shop"]), None).unwrap_err();
        assert!(
            e.contains("MySQL client: it runs only with a target"),
            "{e}"
        );
        let e = g.program("mysql", &s(&["shop"]), Some(&pg)).unwrap_err();
        assert!(e.contains("PostgreSQL database"), "{e}");
        // A program that is no client never gets a target's credentials.
        let e = g.program("touch", &[], Some(&db)).unwrap_err();
        assert!(e.contains("is not a database client"), "{e}");
        assert!(g.program("touch", &[], None).is_ok());
        // Refused whatever the shapes allow.
        for bad in [
            &["--single-transaction", "--print-defaults"][..],
            &["--single-transaction", "--defaults-extra-file=db.cnf"],
            &["--single-transaction", "--result-file=/etc/x"],
            &["--single-transaction", "--local-infile=1"],
        ] {
            let e = g.program("mysqldump", &s(bad), Some(&db)).unwrap_err();
            assert!(e.contains("is refused"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn grants_go_only_to_the_builds_the_policy_names() {
        let p = policy(&yaml());
        let e = p.grants("mysql", &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("grants mysql only to 5d1c"), "{e}");
        let g = p.grants("stranger", &"0".repeat(64)).unwrap();
        assert!(g.targets.is_empty() && g.programs.is_empty() && g.urls.is_empty());
        assert!(g.program("mysqldump", &[], None).is_err());
        // A list of builds.
        let two = policy(&yaml().replace(
            &format!("sha256: {DIGEST}"),
            &format!("sha256: [\"{}\", {DIGEST}]", "1".repeat(64)),
        ));
        // Unquoted, a digest of digits only is a number to YAML: refused with a hint.
        let e = Policy::parse(
            &yaml().replace(
                &format!("sha256: {DIGEST}"),
                &format!("sha256: {}", "1".repeat(64)),
            ),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("in quotes"), "{e}");
        assert!(two.grants("mysql", &"1".repeat(64)).is_ok());
        assert!(two.grants("mysql", DIGEST).is_ok());
    }

    #[test]
    fn mistakes_in_the_policy_are_named() {
        let bad = |yaml: &str| {
            Policy::parse(yaml, Some("test.yaml".into()))
                .unwrap_err()
                .to_string()
        };
        let pin = format!("sha256: {DIGEST}, ");
        assert!(bad("plugins: [{ name: x, targets: [nope] }]").contains("target nope"));
        assert!(bad(&format!(
            "plugins: [{{ name: x, {pin}programs: {{ sh: bin/sh }} }}]"
        ))
        .contains("must be absolute"));
        assert!(
            bad("plugins: [{ name: x, limits: { timeouts: { backpu: 1h } } }]")
                .contains("no hook is called backpu")
        );
        assert!(bad("targets: [{ name: a, kind: oracle, address: x }]").contains("oracle"));
        assert!(bad("plugins: [{ name: x, grant: all }]").contains("grant"));
        // A typo in a program's details must not become "any arguments".
        assert!(bad(&format!(
            "plugins: [{{ name: x, {pin}programs: {{ m: {{ path: /usr/bin/m, arg: [\"a*\"] }} }} }}]"
        ))
        .contains("did not match any variant"));
        assert!(bad(
            "targets: [{ name: a, kind: mysql, address: x, password: { env: A, file: /b } }]"
        )
        .contains("exactly one of env: or file:"));
        // Programs or targets without a digest; a digest that is not one.
        assert!(
            bad("plugins: [{ name: x, programs: { t: /usr/bin/touch } }]")
                .contains("must name the builds")
        );
        assert!(
            bad("plugins: [{ name: x, sha256: abc, programs: { t: /usr/bin/touch } }]")
                .contains("not a sha256")
        );
        // psql is a shell.
        assert!(bad(&format!(
            "plugins: [{{ name: x, {pin}programs: {{ psql: /usr/bin/psql }} }}]"
        ))
        .contains("cannot be granted"));
        // Patterns that would cross directories.
        assert!(bad(&format!(
            "plugins: [{{ name: x, {pin}programs: {{ t: {{ path: /usr/bin/touch, args: [\"/srv/**\"] }} }} }}]"
        ))
        .contains("**"));
        // Names that cannot be plugin names.
        assert!(bad("plugins: [{ name: ../x }]").contains("cannot be a plugin's name"));
        assert!(bad("plugins: [{ name: x }, { name: x }]").contains("listed twice"));
        assert!(
            bad("targets: [{ name: a, kind: mysql, address: x, tls: { mode: strict } }]")
                .contains("strict")
        );
        // A password written into the policy is refused, and never quoted.
        let e = bad("targets: [{ name: a, kind: mysql, address: x, password: \"hunter2secret\" }]");
        assert!(
            e.contains("never written into the policy") && !e.contains("hunter2"),
            "{e}"
        );
        let e = bad("targets: [{ name: a, kind: mysql, address: x, password: 424242 }]");
        assert!(!e.contains("424242"), "{e}");
        // The forms the guide shows parse.
        policy("targets: [{ name: a, kind: mysql, address: x, password: { env: A } }]");
        policy("targets: [{ name: a, kind: mysql, address: x, tls: { mode: verify-full, ca: /etc/ca.pem } }]");
        policy("plugins: [{ name: quiesce-http, urls: [\"http://x/\"] }]");
    }

    #[test]
    fn plugin_names_are_single_plain_words() {
        for good in ["mysql", "quiesce-http", "my_plugin.v2", "a"] {
            assert!(valid_plugin_name(good), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "Mysql",
            ".hidden",
            "-x",
            &"a".repeat(65),
            "a b",
        ] {
            assert!(!valid_plugin_name(bad), "{bad}");
        }
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
