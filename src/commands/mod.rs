//! One file per command. Each takes parsed arguments and a [`Printer`] and returns an
//! [`ExitStatus`]; errors bubble up to [`crate::run`], the only place that prints them.

mod adapter_list;
mod adapter_test;
mod compare;
mod completions;
mod doctor;
mod gates;
mod init;
mod merge;
mod model_list;
mod model_new;
mod model_test;
mod report;
mod run;
mod runs;
mod schema;
mod secret;
mod validate;
mod watch;

use std::path::PathBuf;

use crate::cli::{AdapterCommand, Cli, Command, GlobalArgs, ListCommand, ModelCommand, TestCommand};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::project::Project;
use crate::python::{PythonOptions, PythonRuntime};

pub fn dispatch(cli: Cli, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let global = cli.global;
    match cli.command {
        Command::Model(ModelCommand::List(args)) | Command::List(ListCommand::Model(args)) => {
            model_list::run(&load_project(&global)?, &args, printer)
        }
        Command::Adapter(AdapterCommand::List(args)) | Command::List(ListCommand::Adapter(args)) => {
            adapter_list::run(&load_project(&global)?, &args, printer)
        }
        Command::Adapter(AdapterCommand::Test(args)) => adapter_test::run(&load_project(&global)?, &args, printer),
        Command::Validate(args) => validate::run(&global, &args, printer),
        Command::Secret(command) => secret::run(command, printer),
        Command::Model(ModelCommand::Test(args)) | Command::Test(TestCommand::Model(args)) => {
            model_test::run(&global, &args, &start_python(&global)?, printer)
        }
        Command::Doctor => doctor::run(&start_python(&global)?, printer),
        Command::Run(args) => run::run(&global, &args, printer),
        Command::Merge(args) => merge::run(&global, &args, printer),
        Command::Init(args) => init::run(&args, printer),
        Command::Model(ModelCommand::New(args)) => model_new::run(&global, &args, printer),
        Command::Schema(args) => schema::run(&args, printer),
        Command::Completions(args) => completions::run(&args, printer),
        Command::Report(args) => report::run(&args, printer),
        Command::Compare(args) => compare::run(&args, printer),
        Command::Runs(command) => runs::run(&global, &command, printer),
        Command::Worker => {
            crate::python::worker::serve(&python_options(&global), &|max_response_bytes| {
                let http = crate::model::connection::snippet_http::SnippetHttp::new(max_response_bytes);
                std::sync::Arc::new(http) as std::sync::Arc<dyn crate::python::HttpBackend>
            })?;
            Ok(ExitStatus::Success)
        }
    }
}

fn python_options(global: &GlobalArgs) -> PythonOptions {
    PythonOptions {
        python_env: global.python_env.clone(),
        worker_exe: None,
    }
}

/// Starts the embedded interpreter. Must run on the main thread before any tokio runtime.
/// From then on lfeval's stdout is its own: what snippets write there goes to stderr.
pub fn start_python(global: &GlobalArgs) -> anyhow::Result<PythonRuntime> {
    let python = crate::python::initialize(&python_options(global))?;
    crate::stdio::protect().map_err(|e| anyhow::anyhow!("cannot set up lfeval's stdout: {e}"))?;
    Ok(python)
}

pub fn project_dir(global: &GlobalArgs) -> PathBuf {
    global.project.clone().unwrap_or_else(|| PathBuf::from("."))
}

pub fn load_project(global: &GlobalArgs) -> anyhow::Result<Project> {
    Project::load(&project_dir(global), global.env_file.as_deref())
}

/// Warns about entity files that failed to load, pointing at `validate` for details.
pub fn warn_load_errors(project: &Project, kind: &str, printer: &Printer) {
    let failed: Vec<&str> = project
        .errors
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.file.as_str())
        .collect();
    if !failed.is_empty() {
        printer.warn(&format!(
            "{} {kind} file(s) failed to load: {}\nhint: run `lfeval validate` for details",
            failed.len(),
            failed.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
        ));
    }
}

/// Writes an output file a flag asked for (`--junit`, `--markdown`), masked.
pub fn write_text(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    std::fs::write(path, crate::redact::redact(text).as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))
}
