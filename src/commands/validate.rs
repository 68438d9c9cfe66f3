//! `lfeval validate [PATH…]`: load every entity (or the given files), compile every adapter
//! template, check references between them, and report every error at once.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::cli::{GlobalArgs, ValidateArgs};
use crate::diagnostic::Diagnostic;
use crate::exit_status::ExitStatus;
use crate::model::Connection;
use crate::model::adapter::CompiledAdapter;
use crate::model::connection::snippet;
use crate::printer::Printer;
use crate::project::{Project, yaml_files};

pub fn run(global: &GlobalArgs, args: &ValidateArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let (run_files, paths): (Vec<_>, Vec<_>) = args.paths.iter().cloned().partition(|p| is_run_config(p));
    if !run_files.is_empty() {
        let status = validate_run_configs(global, &run_files, printer)?;
        if paths.is_empty() || status != ExitStatus::Success {
            return Ok(status);
        }
    }
    let args = &ValidateArgs { paths };
    let mut project = super::load_project(global)?;
    let (models, adapters): (BTreeSet<String>, BTreeSet<String>) = if args.paths.is_empty() {
        (
            project.models.keys().cloned().collect(),
            project.adapters.keys().cloned().collect(),
        )
    } else {
        select(&mut project, &args.paths)?
    };
    let mut problems: Vec<Diagnostic> = project.errors.iter().map(|e| e.diagnostic.clone()).collect();

    let mut checked = BTreeSet::new();
    for key in &models {
        let Ok(model) = project.model(key) else { continue };
        match project.adapter(&model.adapter.value) {
            Ok(adapter) => {
                if checked.insert(adapter.key.clone())
                    && let Err(d) = CompiledAdapter::compile(Arc::clone(&adapter))
                {
                    problems.push(d);
                }
            }
            Err(d) => problems.push(
                d.at_location(model.adapter.location.clone())
                    .with_path(model.adapter.path.clone()),
            ),
        }
    }
    for key in &adapters {
        if checked.insert(key.clone())
            && let Ok(adapter) = project.adapter(key)
            && let Err(d) = CompiledAdapter::compile(adapter)
        {
            problems.push(d);
        }
    }

    // Variables and secrets depend on the machine, not on the files: report what is missing
    // here as warnings, so `validate` still passes in CI without the credentials.
    let mut warnings = Vec::new();
    for key in &models {
        let Ok(model) = project.model(key) else { continue };
        if let Err(d) = project.register_model_secrets(&model) {
            warnings.push(d.to_string());
            continue;
        }
        for value in model.deferred_values() {
            if let Err(d) = value.resolve(&project.secrets, true) {
                warnings.push(format!("model `{}` cannot be used here yet: {d}", model.key));
            }
        }
    }

    // Snippets are compiled too, so syntax and import errors show up before any request.
    let snippet_models: Vec<_> = models
        .iter()
        .filter_map(|key| project.model(key).ok())
        .filter(|m| matches!(m.connection, Connection::CustomInference(_)))
        .collect();
    if !snippet_models.is_empty() {
        let python = super::start_python(global)?;
        for model in snippet_models {
            if let Connection::CustomInference(config) = &model.connection
                && let Err(d) = snippet::load(&model, config, 1, &python)
            {
                problems.push(d);
            }
        }
        python.flush();
    }

    for warning in &warnings {
        printer.warn(warning);
        printer.errln("");
    }
    for problem in &problems {
        printer.error(&problem.to_string());
        printer.errln("");
    }
    let user_adapters = adapters.iter().filter(|k| !k.starts_with("latticeflow$")).count();
    let summary = format!(
        "checked {} model(s) and {} adapter(s): {} error(s)",
        models.len(),
        user_adapters,
        problems.len()
    );
    if problems.is_empty() {
        printer.errln(&printer.ok(&summary));
        Ok(ExitStatus::Success)
    } else {
        printer.errln(&printer.bad(&summary));
        Ok(ExitStatus::Failure)
    }
}

/// A YAML file whose top level has run-config keys.
fn is_run_config(path: &Path) -> bool {
    path.is_file()
        && std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|l| {
                ["evaluation:", "tasks:", "datasets:", "model_adapters:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
        })
}

/// Loads each run config and resolves every task specification, dataset, model, adapter and
/// snippet it uses, without calling any model.
fn validate_run_configs(
    global: &GlobalArgs,
    files: &[std::path::PathBuf],
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let python = super::start_python(global)?;
    let mut failed = 0;
    for file in files {
        let checked = crate::eval::run_config::load(file, global.project.as_deref(), global.env_file.as_deref())
            .and_then(|config| crate::eval::prepare::check(&config, &python));
        match checked {
            Ok(specs) => printer.errln(&printer.ok(&format!(
                "`{}`: {specs} task specification(s) ready to run",
                file.display()
            ))),
            Err(err) => {
                failed += 1;
                printer.error(&format!("`{}` is not ready to run", file.display()));
                for cause in err.chain() {
                    printer.errln(&cause.to_string());
                }
            }
        }
    }
    python.flush();
    Ok(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Restricts validation to the given files or directories (models and adapters by folder).
fn select(project: &mut Project, paths: &[std::path::PathBuf]) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    project.errors.clear();
    project.models.clear();
    project.adapters.retain(|k, _| k.starts_with("latticeflow$"));
    let all_adapters = yaml_files(
        &project.root.join("adapters"),
        Some(&project.root.join("adapters/builtin")),
    );
    for path in &all_adapters {
        project.load_adapter_file(path);
    }
    project.errors.clear();
    let mut models = BTreeSet::new();
    let mut adapters = BTreeSet::new();
    for path in paths {
        let files = if path.is_dir() {
            yaml_files(path, None)
        } else {
            vec![path.clone()]
        };
        for file in files {
            let file = file
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", file.display()))?;
            if is_adapter_file(&project.root, &file) {
                let before = project.errors.len();
                project
                    .adapters
                    .retain(|_, a| Path::new(&a.file) != file.strip_prefix(&project.root).unwrap_or(&file));
                if let Some(a) = project.load_adapter_file(&file) {
                    adapters.insert(a.key.clone());
                } else if project.errors.len() == before {
                    adapters.insert(String::new());
                }
            } else if let Some(m) = project.load_model_file(&file) {
                models.insert(m.key.clone());
            }
        }
    }
    adapters.remove("");
    Ok((models, adapters))
}

fn is_adapter_file(root: &Path, file: &Path) -> bool {
    file.strip_prefix(root).is_ok_and(|rel| rel.starts_with("adapters"))
        || std::fs::read_to_string(file).is_ok_and(|t| t.contains("process_input"))
}
