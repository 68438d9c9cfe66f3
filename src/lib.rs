//! lfeval: an evaluation harness for custom LLM integrations.
//!
//! The pipeline, file by file: [`yaml`] reads the AI GO! dialect, [`project`] loads models and
//! adapters, [`adapter`] renders Jinja templates via [`template`], [`model_io`] checks shapes,
//! and [`commands`] holds one file per subcommand.

pub mod async_runtime;
pub mod cli;
pub mod commands;
pub mod config_value;
pub mod diagnostic;
pub mod error_class;
pub mod eval;
pub mod exit_status;
pub mod model;
pub mod printer;
pub mod progress;
pub mod project;
pub mod python;
pub mod redact;
pub mod secrets;
pub mod signals;
pub mod table;
pub mod template;
pub mod variables;
pub mod yaml;

use std::process::ExitCode;

use clap::Parser;

use crate::exit_status::ExitStatus;
use crate::printer::Printer;

/// Parses the command line, runs the command and prints any error: the whole program.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let printer = Printer::new(cli.global.color);
    let status = match commands::dispatch(cli, &printer) {
        Ok(status) => status,
        Err(err) => {
            report(&printer, &err);
            ExitStatus::Error
        }
    };
    status.into()
}

/// Prints an error chain: the outermost message, then each cause.
fn report(printer: &Printer, err: &anyhow::Error) {
    let mut chain = err.chain();
    if let Some(top) = chain.next() {
        printer.error(&top.to_string());
    }
    for cause in chain {
        printer.errln(&format!("  caused by: {cause}"));
    }
}
