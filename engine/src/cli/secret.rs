//! `danube secret`: store, list and remove secrets. Values come from stdin or
//! a hidden prompt, never from the command line, where other users could see
//! them in the process list and shells keep them in history.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::config::DataDir;
use crate::secrets::{Scope, SecretVault, validate_key};
use crate::store::Store;

use super::Status;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret; the value is read from stdin, or a hidden prompt on a terminal
    Set(SecretKeyArgs),
    /// List secret names and scopes (never values)
    List,
    /// Delete a secret
    Rm(SecretKeyArgs),
}

#[derive(Debug, Args)]
pub struct SecretKeyArgs {
    /// Secret name: letters, digits and `_`, not starting with a digit
    key: String,

    /// The pipeline the secret belongs to; without it the secret is global,
    /// readable by every pipeline
    #[arg(long, value_name = "NAME")]
    pipeline: Option<String>,
}

impl SecretKeyArgs {
    fn scope(&self) -> Scope {
        match &self.pipeline {
            Some(name) => Scope::Pipeline(name.clone()),
            None => Scope::Global,
        }
    }
}

/// Values shorter than this are masked so often in logs that they are
/// likely a mistake.
const SHORT_SECRET_BYTES: usize = 8;

pub async fn run(data: &DataDir, store: Store, command: SecretCommand) -> anyhow::Result<Status> {
    let vault = SecretVault::open(store, &data.encryption_key_path()).await?;
    match command {
        SecretCommand::Set(args) => {
            validate_key(&args.key)?;
            let value = read_value(&args.key)?;
            if value.len() < SHORT_SECRET_BYTES {
                eprintln!(
                    "warning: secret {} is shorter than {SHORT_SECRET_BYTES} bytes; logs mask it wherever those characters appear, even in unrelated words",
                    args.key
                );
            }
            vault.set(&args.scope(), &args.key, &value).await?;
            eprintln!("secret {} stored ({})", args.key, args.scope().as_db());
        }
        SecretCommand::List => {
            let secrets = vault.list().await?;
            if secrets.is_empty() {
                println!("No secrets. Add one with `danube secret set KEY`.");
            }
            for secret in secrets {
                println!("{}\t{}", secret.key, secret.scope);
            }
        }
        SecretCommand::Rm(args) => {
            validate_key(&args.key)?;
            if !vault.remove(&args.scope(), &args.key).await? {
                let elsewhere: Vec<String> = vault
                    .list()
                    .await?
                    .into_iter()
                    .filter(|secret| secret.key == args.key)
                    .map(|secret| secret.scope)
                    .collect();
                let hint = if elsewhere.is_empty() {
                    "`danube secret list` shows the stored ones".to_owned()
                } else {
                    format!(
                        "it exists in {}; pass --pipeline NAME for a pipeline's secret",
                        elsewhere.join(", ")
                    )
                };
                bail!(
                    "no secret `{}` in scope {}: {hint}",
                    args.key,
                    args.scope().as_db()
                );
            }
            eprintln!("secret {} removed", args.key);
        }
    }
    Ok(Status::Success)
}

fn read_value(key: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut value = if std::io::stdin().is_terminal() {
        let text = rpassword::prompt_password(format!("value for {key}: "))
            .context("failed to read the secret from the terminal")?;
        Zeroizing::new(text.into_bytes())
    } else {
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("failed to read the secret from stdin")?;
        bytes
    };
    // `echo value | danube secret set KEY` adds a newline that is not part of the value.
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!(
            "the value for secret `{key}` is empty: pipe it on stdin, as in `printf %s \"$TOKEN\" | danube secret set {key}`"
        );
    }
    Ok(value)
}
