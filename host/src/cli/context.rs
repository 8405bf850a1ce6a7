//! Options every command shares, and what they resolve to: the store, the secret,
//! the open repository.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroize::Zeroizing;

use crate::repo::keys::Secret;
use crate::repo::Repository;
use crate::store::{Location, Store, StoreOptions};

/// What a backup command labels its snapshots with.
#[derive(Args, Clone)]
pub struct LabelArgs {
    /// Tag the snapshot; repeatable
    #[arg(short, long)]
    pub tag: Vec<String>,
    /// Record this host name instead of the machine's (a CronJob's pod has a new name
    /// every run: give a stable one so that retention groups the runs together)
    #[arg(long, env = "BALLAST_HOST")]
    pub host: Option<String>,
}

impl LabelArgs {
    pub fn labels(&self) -> crate::repo::snapshot::Labels {
        crate::repo::snapshot::Labels {
            tags: self.tag.clone(),
            host: self.host.clone(),
        }
    }
}

#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Repository location: a path, file://, s3://BUCKET/PREFIX, gs://..., az://...
    #[arg(
        short = 'r',
        long,
        env = "BALLAST_REPO",
        hide_env_values = true,
        global = true
    )]
    pub repo: Option<String>,

    /// Read the password from this file (first line)
    #[arg(long, env = "BALLAST_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,

    /// Open the repository with a key file instead of a password
    #[arg(long, env = "BALLAST_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,

    /// Object store client option KEY=VALUE (endpoint, region, allow_http,
    /// virtual_hosted_style_request, ...); repeatable
    #[arg(
        short = 'o',
        long = "store-option",
        value_name = "KEY=VALUE",
        global = true
    )]
    pub store_options: Vec<String>,

    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v info, -vv debug); also RUST_LOG
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress bars, no log output below errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

pub fn init_logging(g: &GlobalArgs) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ballast={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .try_init();
}

impl GlobalArgs {
    pub fn location(&self) -> Result<Location> {
        let Some(repo) = &self.repo else {
            return Err(super::Usage(
                "no repository given: pass --repo LOCATION or set BALLAST_REPO (a path, or \
                 s3://BUCKET/PREFIX, ...)"
                    .into(),
            )
            .into());
        };
        Ok(Location::parse(repo)?)
    }

    pub fn store(&self) -> Result<Store> {
        let options = StoreOptions::parse(&self.store_options).map_err(anyhow::Error::msg)?;
        Ok(Store::connect(&self.location()?, &options)?)
    }

    /// The secret that opens the repository: a key file, BALLAST_PASSWORD,
    /// BALLAST_PASSWORD_FILE, or a prompt on a terminal.
    pub fn secret(&self) -> Result<Secret> {
        if let Some(path) = &self.key_file {
            return Secret::read_key_file(path).map_err(anyhow::Error::msg);
        }
        password_from(
            ("BALLAST_PASSWORD", "BALLAST_PASSWORD_FILE"),
            self.password_file.as_deref(),
            "repository password: ",
        )
    }

    pub fn open(&self) -> Result<Repository> {
        let store = self.store()?;
        let secret = self.secret()?;
        Ok(Repository::open(store, &secret)?)
    }

    /// Whether to draw progress bars.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

/// A password from a file (named by a flag or its environment variable), an
/// environment variable, or a prompt; `vars` names the password variable and the file
/// variable.
pub fn password_from(
    vars: (&str, &str),
    file: Option<&std::path::Path>,
    prompt: &str,
) -> Result<Secret> {
    let (env, file_env) = vars;
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file {}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            bail!("the password file {} is empty", path.display());
        }
        return Ok(Secret::Password(Zeroizing::new(line.to_string())));
    }
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() {
            return Ok(Secret::Password(Zeroizing::new(p)));
        }
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(prompt)
            .context("cannot read the password from the terminal")?;
        return Ok(Secret::Password(Zeroizing::new(p)));
    }
    bail!("no password: set {env} or {file_env}, pass --key-file, or run on a terminal to be asked")
}

/// A new password (for `repo init`, `key add`, `key passwd`): asked twice on a terminal.
pub fn new_password(vars: (&str, &str), file: Option<&std::path::Path>) -> Result<Secret> {
    if std::env::var(vars.0).is_ok_and(|v| !v.is_empty())
        || file.is_some()
        || !std::io::stdin().is_terminal()
    {
        return password_from(vars, file, "");
    }
    let a = Zeroizing::new(rpassword::prompt_password("new password: ")?);
    let b = Zeroizing::new(rpassword::prompt_password("again: ")?);
    if a != b {
        bail!("the passwords do not match");
    }
    if a.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(Secret::Password(a))
}
