//! `lfeval secret set|list|delete`: the local secret store. Values come from stdin (or a
//! prompt) so they never land in shell history or `ps` output, and are never printed.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};

use crate::cli::SecretCommand;
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::secrets;

pub fn run(command: SecretCommand, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let path = secrets::store_path();
    match command {
        SecretCommand::Set { name } => {
            check_name(&name)?;
            let value = read_value(&name)?;
            if value.is_empty() {
                bail!(
                    "no value given for secret `{name}`\nhint: pipe it in: `printf %s \"$TOKEN\" | lfeval secret set {name}`"
                );
            }
            let mut store = secrets::read_store(&path)?;
            let replaced = store.insert(name.clone(), value).is_some();
            secrets::write_store(&path, &store)?;
            let verb = if replaced { "updated" } else { "stored" };
            printer.errln(&format!("{verb} secret `{name}` in `{}`", path.display()));
        }
        SecretCommand::List(args) => {
            let store = secrets::read_store(&path)?;
            if args.json {
                let names: Vec<&String> = store.keys().collect();
                printer.outln(&serde_json::to_string_pretty(
                    &serde_json::json!({"store": path, "secrets": names}),
                )?);
            } else if store.is_empty() {
                printer.errln(&format!("no secrets in `{}`", path.display()));
            } else {
                for name in store.keys() {
                    printer.outln(name);
                }
            }
        }
        SecretCommand::Delete { name } => {
            check_name(&name)?;
            let mut store = secrets::read_store(&path)?;
            if store.remove(&name).is_none() {
                bail!("no secret named `{name}` in `{}`", path.display());
            }
            secrets::write_store(&path, &store)?;
            printer.errln(&format!("deleted secret `{name}`"));
        }
    }
    Ok(ExitStatus::Success)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if !secrets::valid_name(name) {
        bail!("invalid secret name `{name}`\nhint: use letters, digits, `_` and `-`");
    }
    Ok(())
}

#[allow(
    clippy::print_stderr,
    reason = "the prompt must appear before input is read, unbuffered"
)]
fn read_value(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value for `{name}` (input is not echoed): ");
        let _ = std::io::stderr().flush();
        let value = read_hidden_line().context("cannot read the secret value")?;
        eprintln!();
        return Ok(value);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the secret value from stdin")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Reads a line with terminal echo off (`stty -echo`), restoring it afterwards.
fn read_hidden_line() -> std::io::Result<String> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let _ = stty("-echo");
    let mut line = String::new();
    let result = std::io::stdin().lock().read_line(&mut line);
    let _ = stty("echo");
    result.map(|_| line.trim_end_matches(['\n', '\r']).to_owned())
}
