//! lfeval: an evaluation harness for custom LLM integrations. [`commands`] holds one file per
//! command; [`eval`] is the evaluation pipeline and [`model`] the model call chain beneath it;
//! [`python`], [`template`] and [`yaml`] are the embedded interpreter, the Jinja engine and the
//! AI GO! dialect. `ARCHITECTURE.md` maps the whole tree.

pub mod async_runtime;
pub mod charset;
pub mod cli;
pub mod commands;
pub mod config_value;
pub mod diagnostic;
pub mod entity;
pub mod error_class;
pub mod eval;
pub mod exit_status;
pub mod file_window;
pub mod fuzzing;
pub mod memory;
pub mod millis;
pub mod model;
pub mod open_responses;
pub mod printer;
pub mod progress;
pub mod project;
pub mod python;
pub mod redact;
pub mod report;
pub mod retry_after;
pub mod scaffold;
pub mod schema;
pub mod secrets;
pub mod signals;
pub mod source;
pub mod stdio;
pub mod table;
pub mod template;
pub mod texts;
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
    // No worker process outlives lfeval, and what snippets left in the stray-output pipe
    // reaches stderr.
    python::worker::shutdown();
    stdio::finish();
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
