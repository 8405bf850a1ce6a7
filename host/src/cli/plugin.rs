//! `ballast plugin list|info|verify|new`, `ballast hook run`, and what the
//! application commands (`backup app`, `restore app`, `verify app`) share: finding
//! a plugin, the policy, parameters, and printing what a job said.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::context::GlobalArgs;
use super::exit;
use super::output;
use crate::plugins::catalog::{self, Catalog};
use crate::plugins::job::{JobContext, Ran};
use crate::plugins::policy::{Grants, Policy};
use crate::plugins::{Job, JobOptions, Loaded, Runtime};

/// How a plugin is found and what it may do.
#[derive(Args, Clone)]
pub struct PluginArgs {
    /// The plugin catalog (default: PREFIX/share/ballast/catalog.toml beside an
    /// installed binary, else the checkout's guest-plugins/catalog.toml)
    #[arg(long, env = "BALLAST_CATALOG", global = true)]
    pub catalog: Option<PathBuf>,
    /// The plugin policy: targets and grants (default: /etc/ballast/plugins.yaml)
    #[arg(long, env = "BALLAST_PLUGIN_POLICY", global = true)]
    pub policy: Option<PathBuf>,
    /// A parameter for the plugin, NAME=VALUE; repeatable
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", global = true)]
    pub params: Vec<String>,
}

impl PluginArgs {
    pub fn runtime(&self) -> Result<Runtime> {
        Ok(Runtime::new(Runtime::default_cache())?)
    }

    pub fn policy(&self) -> Result<Policy> {
        Ok(Policy::load(self.policy.as_deref())?)
    }

    /// Resolves and loads `reference` (a catalog name or a .wasm path) and its grants.
    pub fn load(&self, rt: &Runtime, reference: &str) -> Result<(Loaded, Grants)> {
        let resolved = catalog::resolve(reference, self.catalog.as_deref())?;
        let policy = self.policy()?;
        let (loaded, grants) = rt.load(&resolved.path, &policy)?;
        if let Some(entry) = &resolved.entry {
            if entry.name != loaded.info.name {
                bail!(
                    "the catalog's {} component says it is plugin {}; refusing it",
                    entry.name,
                    loaded.info.name
                );
            }
        }
        Ok((loaded, grants))
    }

    /// The job's options: the parameters given plus `ballast.operation` and, when there
    /// is one, `ballast.target`.
    pub fn job_options(
        &self,
        g: &GlobalArgs,
        operation: &str,
        target: Option<&str>,
    ) -> Result<JobOptions> {
        let mut params = BTreeMap::new();
        for p in &self.params {
            let Some((k, v)) = p.split_once('=') else {
                bail!("--param {p}: expected NAME=VALUE");
            };
            if k.starts_with("ballast.") {
                bail!("--param {k}: names starting with ballast. are set by ballast itself");
            }
            params.insert(k.to_string(), v.to_string());
        }
        params.insert("ballast.operation".into(), operation.into());
        if let Some(t) = target {
            params.insert("ballast.target".into(), t.into());
        }
        Ok(JobOptions {
            params,
            echo: !g.json && !g.quiet,
        })
    }
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// List the plugins of the catalog, and whether their built components match
    List(ListArgs),
    /// Load a plugin and show what it is, what it needs and what the policy grants it
    Info(InfoArgs),
    /// Check catalog digests, WIT versions and what each plugin says about itself
    Verify(VerifyArgs),
    /// Make a new plugin crate from the template
    New(NewArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct InfoArgs {
    /// A catalog name or a path to a .wasm component
    plugin: String,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Catalog names (default: every plugin of the catalog)
    names: Vec<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits, dashes
    name: String,
    /// Where to put its crate
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The ballast-plugin-sdk crate to depend on
    #[arg(long, default_value = "guest-plugins/sdk")]
    sdk: PathBuf,
}

pub fn run(g: &GlobalArgs, cmd: PluginCommand) -> Result<i32> {
    match cmd {
        PluginCommand::List(a) => list(g, a),
        PluginCommand::Info(a) => info(g, a),
        PluginCommand::Verify(a) => verify(g, a),
        PluginCommand::New(a) => new(g, a),
    }
}

fn list(g: &GlobalArgs, a: ListArgs) -> Result<i32> {
    let c = Catalog::load(a.plugins.catalog.as_deref())?;
    let rows: Vec<_> = c
        .plugins
        .iter()
        .map(|e| {
            let state = match c.check(e) {
                Ok(_) => "ok".to_string(),
                Err(_) if !c.component(e).exists() => "not built".to_string(),
                Err(_) => "digest mismatch".to_string(),
            };
            (e, state)
        })
        .collect();
    if g.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(e, s)| json!({"entry": e, "component": c.component(e), "state": s}))
            .collect();
        output::json(&v)?;
        return Ok(exit::OK);
    }
    let mut t = output::table(&[
        "NAME", "VERSION", "WIT", "NEEDS", "OWNER", "BUILT", "SUMMARY",
    ]);
    for (e, s) in &rows {
        t.add_row(vec![
            e.name.clone(),
            e.version.clone(),
            e.wit.clone(),
            e.capabilities.join(","),
            e.owner.clone(),
            s.clone(),
            e.summary.clone(),
        ]);
    }
    println!("{t}");
    Ok(exit::OK)
}

fn info(g: &GlobalArgs, a: InfoArgs) -> Result<i32> {
    let rt = a.plugins.runtime()?;
    let resolved = catalog::resolve(&a.plugin, a.plugins.catalog.as_deref())?;
    let started = std::time::Instant::now();
    let loaded = rt.load_component(&resolved.path)?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let policy = a.plugins.policy()?;
    // A policy that pins other builds grants this one nothing: say why.
    let grants = policy
        .grants(&loaded.info.name, &loaded.sha256)
        .unwrap_or_else(|e| crate::plugins::policy::Grants {
            source: e.to_string(),
            ..crate::plugins::policy::Grants::none()
        });
    let granted = json!({
        "targets": grants.targets.keys().collect::<Vec<_>>(),
        "programs": grants.programs.iter().map(|(k, p)| (k.clone(), p.path.display().to_string())).collect::<BTreeMap<_, _>>(),
        "urls": grants.urls.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "memory": grants.limits.memory,
        "output": grants.limits.output,
        "scratch": grants.limits.scratch,
        "buffers": grants.limits.buffers,
        "timeouts": grants.limits.timeouts.iter().map(|(k, v)| (*k, humantime::format_duration(*v).to_string())).collect::<BTreeMap<_, _>>(),
    });
    if g.json {
        output::json(&json!({
            "info": loaded.info,
            "wit": loaded.wit.to_string(),
            "sha256": loaded.sha256,
            "file": loaded.path,
            "catalog": resolved.entry.is_some(),
            "from_cache": loaded.cached,
            "load_ms": load_ms,
            "policy": grants.source,
            "granted": granted,
        }))?;
        return Ok(exit::OK);
    }
    let i = &loaded.info;
    println!("{} {}: {}", i.name, i.version, i.summary);
    println!("  file:     {}", loaded.path.display());
    println!(
        "  sha256:   {}{}",
        loaded.sha256,
        if resolved.entry.is_some() {
            " (matches the catalog)"
        } else {
            ""
        }
    );
    println!("  wit:      ballast:plugin@{}", loaded.wit);
    println!(
        "  needs:    {}",
        if i.needs.is_empty() {
            "nothing".into()
        } else {
            i.needs.join(", ")
        }
    );
    println!(
        "  loaded in {load_ms:.1} ms ({})",
        if loaded.cached {
            "compiled code from the cache"
        } else {
            "compiled now"
        }
    );
    println!("  policy:   {}", grants.source);
    println!(
        "  granted:  targets {}; programs {}; urls {}",
        join(grants.targets.keys()),
        join(grants.programs.keys()),
        join(grants.urls.iter().map(|u| u.as_str()))
    );
    println!(
        "  limits:   memory {}, output {}",
        bytesize::ByteSize(grants.limits.memory),
        bytesize::ByteSize(grants.limits.output)
    );
    Ok(exit::OK)
}

fn join<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let v: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn verify(g: &GlobalArgs, a: VerifyArgs) -> Result<i32> {
    let c = Catalog::load(a.plugins.catalog.as_deref())?;
    let rt = a.plugins.runtime()?;
    let names: Vec<String> = if a.names.is_empty() {
        c.plugins.iter().map(|p| p.name.clone()).collect()
    } else {
        a.names.clone()
    };
    let mut results = vec![];
    for name in &names {
        let problem = (|| -> Result<(), String> {
            let entry = c.find(name).map_err(|e| e.to_string())?;
            let path = c.check(entry).map_err(|e| e.to_string())?;
            let loaded = rt.load_component(&path).map_err(|e| e.to_string())?;
            let i = &loaded.info;
            let mut needs = i.needs.clone();
            let mut listed = entry.capabilities.clone();
            needs.sort();
            listed.sort();
            let mismatch = [
                ("name", i.name.clone(), entry.name.clone()),
                ("version", i.version.clone(), entry.version.clone()),
                ("wit", loaded.wit.to_string(), entry.wit.clone()),
                ("capabilities", needs.join(","), listed.join(",")),
            ]
            .into_iter()
            .find(|(_, got, want)| got != want);
            match mismatch {
                Some((what, got, want)) => Err(format!(
                    "the component says {what} {got:?}, the catalog {want:?}"
                )),
                None => Ok(()),
            }
        })();
        results.push((name.clone(), problem));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if g.json {
        let v: Vec<_> = results
            .iter()
            .map(|(n, r)| json!({"name": n, "ok": r.is_ok(), "problem": r.as_ref().err()}))
            .collect();
        output::json(&v)?;
    } else {
        for (n, r) in &results {
            match r {
                Ok(()) => println!("{n}: ok"),
                Err(e) => println!("{n}: FAILED: {e}"),
            }
        }
        println!("{} plugins checked, {failed} failed", results.len());
    }
    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
}

fn new(g: &GlobalArgs, a: NewArgs) -> Result<i32> {
    let root = crate::plugins::scaffold::new_plugin(&a.dir, &a.name, &a.sdk)?;
    if g.json {
        output::json(&json!({"created": root}))?;
    } else {
        println!("created {}", root.display());
        println!(
            "  cd {} && cargo test && cargo build --release --target wasm32-wasip2",
            root.display()
        );
    }
    Ok(exit::OK)
}

#[derive(Subcommand)]
pub enum HookCommand {
    /// Run hooks of a plugin against a target, in order, in one job (for plugin authors)
    Run(HookRunArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    PreBackup,
    PostBackup,
}

#[derive(Args)]
pub struct HookRunArgs {
    /// A catalog name or a path to a .wasm component
    plugin: String,
    /// The policy target the hooks work on
    #[arg(long)]
    target: String,
    /// A hook to run; repeatable, run in the order given, each whatever the others did.
    /// Without it: pre-backup, then post-backup by the rules of a backup (not after a
    /// pre-backup that failed cleanly)
    #[arg(long, value_enum)]
    phase: Vec<Phase>,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn hook(g: &GlobalArgs, cmd: HookCommand) -> Result<i32> {
    let HookCommand::Run(a) = cmd;
    let rt = a.plugins.runtime()?;
    let (loaded, grants) = a.plugins.load(&rt, &a.plugin)?;
    let opts = a.plugins.job_options(g, "hook-run", Some(&a.target))?;
    let (results, ctx, interrupted) = rt.tokio.block_on(async {
        let mut job = Job::new(&loaded, grants, &opts)?;
        if a.phase.is_empty() {
            // As a backup runs them (without the dump).
            let s = job.around(&a.target, None).await;
            return Ok::<_, anyhow::Error>((s.hooks(), job.finish(), s.interrupted));
        }
        let mut results = vec![];
        for p in &a.phase {
            let r = match p {
                Phase::PreBackup => ("pre-backup", job.pre_backup(&a.target).await),
                Phase::PostBackup => ("post-backup", job.post_backup(&a.target).await),
            };
            results.push((r.0, Ran::from(&r.1)));
        }
        Ok((results, job.finish(), None))
    })?;
    let failed = results.iter().any(|(_, r)| *r != Ran::Ok);
    if a.phase.last() == Some(&Phase::PreBackup) && !failed && !g.json {
        eprintln!(
            "note: the job ends here, so whatever pre-backup holds in its sessions is released now"
        );
    }
    report(g, &loaded, &ctx, &results)?;
    Ok(match (interrupted, failed) {
        (Some(sig), _) => 128 + sig,
        (None, true) => exit::FAILURE,
        (None, false) => exit::OK,
    })
}

/// Prints the hooks' results and what the plugin said.
pub fn report(
    g: &GlobalArgs,
    plugin: &Loaded,
    ctx: &JobContext,
    results: &[(&str, Ran)],
) -> Result<()> {
    if g.json {
        let hook = |h: &str, r: &Ran| match r {
            Ran::Ok => json!({"hook": h, "ok": true}),
            Ran::Failed(e) => json!({"hook": h, "ok": false, "error": e}),
            Ran::Skipped(why) => json!({"hook": h, "ok": false, "skipped": why}),
        };
        output::json(&json!({
            "plugin": plugin.info.name,
            "version": plugin.info.version,
            "sha256": plugin.sha256,
            "hooks": results.iter().map(|(h, r)| hook(h, r)).collect::<Vec<_>>(),
            "log": ctx.journal.lines().iter().map(|(l, m)| json!({"level": l, "message": m})).collect::<Vec<_>>(),
            "notes": ctx.journal.notes(),
            "denied": ctx.journal.denials(),
        }))?;
    } else {
        for (h, r) in results {
            match r {
                Ran::Ok => println!("{h}: ok"),
                Ran::Failed(e) => println!("{h}: FAILED: {e}"),
                Ran::Skipped(why) => println!("{h}: not run: {why}"),
            }
        }
        for (k, v) in ctx.journal.notes() {
            println!("note {k}: {}", v.trim_end());
        }
    }
    Ok(())
}
