//! `lfeval model list`: the project's models, as a table or JSON.

use serde_json::json;

use crate::cli::ListArgs;
use crate::exit_status::ExitStatus;
use crate::model::Connection;
use crate::printer::Printer;
use crate::project::Project;

pub fn run(project: &Project, args: &ListArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    if args.json {
        let models: Vec<_> = project
            .models
            .values()
            .map(|m| {
                json!({
                    "key": m.key,
                    "display_name": m.display_name,
                    "description": m.description,
                    "task": m.task.as_str(),
                    "connection_type": m.connection.type_name(),
                    "adapter": m.adapter.value,
                    "rate_limit": m.rate_limit,
                    "max_concurrent_requests": m.max_concurrent_requests,
                    "file": m.file,
                })
            })
            .collect();
        let errors: Vec<_> = project
            .errors
            .iter()
            .filter(|e| e.kind == "model")
            .map(|e| json!({"file": e.file, "key": e.key, "error": e.diagnostic.message}))
            .collect();
        printer.outln(&crate::redact::to_json_pretty(
            &json!({"models": models, "errors": errors}),
        ));
        return Ok(ExitStatus::Success);
    }
    let mut rows = vec![vec![
        "KEY".to_owned(),
        "TASK".to_owned(),
        "CONNECTION".to_owned(),
        "ADAPTER".to_owned(),
        "FILE".to_owned(),
    ]];
    for m in project.models.values() {
        let target = match &m.connection {
            Connection::CustomInference(c) => c.snippet.file.clone(),
            Connection::CustomConnection(c) => c.url.masked(),
        };
        rows.push(vec![
            m.key.clone(),
            m.task.as_str().to_owned(),
            format!("{} ({target})", m.connection.type_name()),
            m.adapter.value.clone(),
            m.file.clone(),
        ]);
    }
    if project.models.is_empty() {
        printer.errln("no models found under `models/`");
    } else {
        printer.out(&crate::table::table(&rows));
    }
    super::warn_load_errors(project, "model", printer);
    Ok(ExitStatus::Success)
}
