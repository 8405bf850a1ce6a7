//! `ballast key list|add|remove|passwd`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::context::{new_password, GlobalArgs};
use super::exit;
use super::output;
use crate::repo::keys::Secret;

const NEW_PASSWORD_VARS: (&str, &str) = ("BALLAST_NEW_PASSWORD", "BALLAST_NEW_PASSWORD_FILE");

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List the keys that open the repository
    List,
    /// Add a key: a new password (BALLAST_NEW_PASSWORD, --new-password-file, prompt) or a new key file
    Add(AddArgs),
    /// Remove a key by id (not the one in use)
    Remove {
        /// The key id, or a unique prefix of it
        id: String,
    },
    /// Change the password of the key in use (the data is not rewritten)
    Passwd(NewSecretArgs),
}

#[derive(Args)]
pub struct NewSecretArgs {
    /// Read the new password from this file
    #[arg(long, env = "BALLAST_NEW_PASSWORD_FILE")]
    new_password_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    secret: NewSecretArgs,
    /// Make the new key a key file written to this path
    #[arg(long, value_name = "PATH", conflicts_with = "new_password_file")]
    new_key_file: Option<PathBuf>,
    /// Who or what uses this key
    #[arg(long, default_value = "")]
    label: String,
}

pub fn run(g: &GlobalArgs, cmd: KeyCommand) -> Result<i32> {
    let repo = g.open()?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                output::json(&keys)?;
            } else {
                let mut t = output::table(&["", "id", "kind", "label", "user", "host", "created"]);
                for k in keys {
                    t.add_row(vec![
                        if k.current { "*".into() } else { String::new() },
                        k.id,
                        serde_json::to_value(k.record.kind)?
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        k.record.label,
                        k.record.username,
                        k.record.host,
                        output::short_time(&k.record.created),
                    ]);
                }
                println!("{t}");
            }
        }
        KeyCommand::Add(a) => {
            let secret = match &a.new_key_file {
                Some(path) => {
                    let (secret, text) = Secret::new_key_file();
                    super::repo::write_private(path, text.as_bytes())?;
                    secret
                }
                None => new_password(NEW_PASSWORD_VARS, a.secret.new_password_file.as_deref())?,
            };
            let id = repo.add_key(&secret, &a.label)?;
            if g.json {
                output::json(&json!({ "added": id }))?;
            } else {
                println!("added key {id}");
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id)?;
            if g.json {
                output::json(&json!({ "removed": removed }))?;
            } else {
                println!("removed key {removed}");
            }
        }
        KeyCommand::Passwd(a) => {
            let secret = new_password(NEW_PASSWORD_VARS, a.new_password_file.as_deref())?;
            let id = repo.change_secret(&secret)?;
            if g.json {
                output::json(&json!({ "key": id }))?;
            } else {
                println!("password changed (key {id})");
            }
        }
    }
    Ok(exit::OK)
}
