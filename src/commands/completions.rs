//! `lfeval completions SHELL`: the shell completion script, generated from the clap definition.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;

pub fn run(args: &CompletionsArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "lfeval", &mut script);
    printer.out(&String::from_utf8_lossy(&script));
    Ok(ExitStatus::Success)
}
