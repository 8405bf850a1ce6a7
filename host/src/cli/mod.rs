//! The `ballast` command line: one module per noun. Each command parses its
//! arguments, calls the library and prints a table (or JSON with `--json`).

mod app;
mod backup;
mod context;
mod demo;
mod drill;
mod etcd;
mod forget;
mod key;
mod kube;
mod output;
mod plugin;
mod repo;
mod restore;
mod server;
mod snapshots;
mod verify;

use clap::{Parser, Subcommand};

pub use context::GlobalArgs;

/// Exit codes, documented in `docs/cli.md`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    /// A backup was saved, but some files could not be read, or some Kubernetes
    /// objects not captured (see its warnings or manifest).
    pub const PARTIAL: i32 = 3;
    /// The location holds no repository, or does not exist.
    pub const NO_REPOSITORY: i32 = 10;
    /// No key of the repository opens with the password or key file given.
    pub const WRONG_PASSWORD: i32 = 11;
    /// `repo check` found damage.
    pub const CHECK_FAILED: i32 = 12;
    /// Another prune, forget or repair-index holds the repository's lease.
    pub const LOCKED: i32 = 13;

    /// The name `--json` error objects give an exit code.
    pub fn kind(code: i32) -> &'static str {
        match code {
            OK => "ok",
            USAGE => "usage",
            PARTIAL => "partial",
            NO_REPOSITORY => "no_repository",
            WRONG_PASSWORD => "wrong_password",
            CHECK_FAILED => "check_failed",
            LOCKED => "locked",
            _ => "failure",
        }
    }
}

/// A mistake in how a command was called that parsing could not see (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

#[derive(Parser)]
#[command(
    name = "ballast",
    version,
    about = "Backup and recovery for Kubernetes clusters: etcd, resources, volumes, applications",
    long_about = "ballast backs up into a deduplicating, compressed, encrypted repository on a local \
path or object storage (S3 and S3-compatibles, GCS, Azure Blob).\n\n\
The repository comes from --repo or BALLAST_REPO; the password from BALLAST_PASSWORD, \
BALLAST_PASSWORD_FILE, --key-file, or a prompt.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 backup saved but incomplete (unreadable files, objects not captured), \
10 no repository, 11 wrong password, 12 check found damage, 13 locked by another prune."
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, check, inspect and prune a repository
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// Manage the keys (passwords, key files) that open a repository
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Back up into the repository
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// List the files of a snapshot
    Ls(snapshots::LsArgs),
    /// Show what changed between two snapshots
    Diff(snapshots::DiffArgs),
    /// Restore a snapshot (or part of it) into a directory
    Restore(restore::RestoreArgs),
    /// Remove snapshots by a retention policy (data goes with `repo prune`)
    Forget(forget::ForgetArgs),
    /// etcd: snapshots from a running cluster, exported files, status
    #[command(subcommand)]
    Etcd(etcd::EtcdCommand),
    /// Kubernetes snapshots: list, print, compare and export their objects
    #[command(subcommand)]
    Kube(kube::KubeCommand),
    /// Application plugins: list, inspect, check, scaffold
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run a plugin's hooks by hand (for plugin authors)
    #[command(subcommand)]
    Hook(plugin::HookCommand),
    /// Check a backup without restoring it
    #[command(subcommand)]
    Verify(verify::VerifyCommand),
    /// Prove a backup by restoring it into scratch space and checking what comes back
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Run schedules of backups, checks and prunes as a long-running server (metrics on /metrics)
    Server(server::ServerArgs),
    /// Run a self-contained demonstration in a local directory
    Demo(demo::DemoArgs),
}

/// Parses the process arguments, runs the command, and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if !e.use_stderr() {
                let _ = e.print(); // --help, --version
                return exit::OK;
            }
            let _ = e.print();
            // args_os: an argument that is not UTF-8 must not panic here.
            if std::env::args_os().any(|a| a == "--json") {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                output::error_json(exit::USAGE, first.trim_start_matches("error: "));
            }
            return exit::USAGE;
        }
    };
    context::init_logging(&cli.global);
    let json = cli.global.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code(&e);
            let message = output::error_chain(&e);
            eprintln!("error: {message}");
            if json {
                output::error_json(code, &message);
            }
            code
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Repo(c) => repo::run(g, c),
        Command::Key(c) => key::run(g, c),
        Command::Backup(c) => backup::run(g, c),
        Command::Snapshots(a) => snapshots::snapshots(g, a),
        Command::Ls(a) => snapshots::ls(g, a),
        Command::Diff(a) => snapshots::diff(g, a),
        Command::Restore(a) => restore::run(g, a),
        Command::Forget(a) => forget::run(g, a),
        Command::Etcd(c) => etcd::run(g, c),
        Command::Kube(c) => kube::run(g, c),
        Command::Plugin(c) => plugin::run(g, c),
        Command::Hook(c) => plugin::hook(g, c),
        Command::Verify(c) => verify::run(g, c),
        Command::Drill(c) => drill::run(g, c),
        Command::Server(a) => server::run(g, a),
        Command::Demo(a) => demo::run(g, a),
    }
}

fn exit_code(e: &anyhow::Error) -> i32 {
    use crate::repo::RepoError;
    use crate::store::StoreError;
    for cause in e.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return exit::USAGE;
        }
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return match r {
                RepoError::NotARepository { .. }
                | RepoError::Store(StoreError::NoSuchDirectory { .. }) => exit::NO_REPOSITORY,
                RepoError::WrongSecret { .. } => exit::WRONG_PASSWORD,
                RepoError::Locked { .. } => exit::LOCKED,
                _ => exit::FAILURE,
            };
        }
        if let Some(StoreError::NoSuchDirectory { .. }) = cause.downcast_ref::<StoreError>() {
            return exit::NO_REPOSITORY;
        }
    }
    exit::FAILURE
}
