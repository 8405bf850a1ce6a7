//! `ballast etcd ...`: etcd snapshot files (status for now).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use super::context::GlobalArgs;
use super::exit;
use super::output;
use crate::etcd::status;

#[derive(Subcommand)]
pub enum EtcdCommand {
    /// Print HASH, REVISION, TOTAL KEYS and TOTAL SIZE of a snapshot file, as `etcdctl snapshot status` does
    Status(StatusArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct StatusArgs {
    /// A snapshot file (`etcdctl snapshot save` output, or a member's `member/snap/db`)
    file: PathBuf,
    /// Output format, as etcdctl's `-w` (`--json` is the same as `-w json`)
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
    write_out: Format,
}

pub fn run(g: &GlobalArgs, cmd: EtcdCommand) -> Result<i32> {
    match cmd {
        EtcdCommand::Status(a) => {
            let s = status::of_file(&a.file)?;
            if g.json || matches!(a.write_out, Format::Json) {
                output::json(&s)?;
            } else {
                let mut t = output::table(&["hash", "revision", "total keys", "total size"]);
                t.add_row(vec![
                    format!("{:08x}", s.hash),
                    s.revision.to_string(),
                    s.total_keys.to_string(),
                    output::bytes(s.total_size),
                ]);
                println!("{t}");
                if s.sha256_verified {
                    println!("sha256 trailer verified");
                }
            }
            Ok(exit::OK)
        }
    }
}
