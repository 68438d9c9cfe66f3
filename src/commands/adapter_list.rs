//! `lfeval adapter list`: built-in and project adapters.

use serde_json::json;

use crate::cli::ListArgs;
use crate::exit_status::ExitStatus;
use crate::model::adapter::Provider;
use crate::printer::Printer;
use crate::project::Project;

pub fn run(project: &Project, args: &ListArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    if args.json {
        let adapters: Vec<_> = project
            .adapters
            .values()
            .map(|a| {
                json!({
                    "key": a.key,
                    "display_name": a.display_name,
                    "description": a.description,
                    "provider": a.provider,
                    "task": a.task.map(|t| t.as_str()),
                    "file": a.file,
                })
            })
            .collect();
        printer.outln(&crate::redact::to_json_pretty(&json!({"adapters": adapters})));
        return Ok(ExitStatus::Success);
    }
    let mut rows = vec![vec![
        "KEY".to_owned(),
        "PROVIDER".to_owned(),
        "DISPLAY NAME".to_owned(),
        "FILE".to_owned(),
    ]];
    for a in project.adapters.values() {
        let provider = match a.provider {
            Provider::Latticeflow => "built-in",
            Provider::User => "user",
        };
        rows.push(vec![
            a.key.clone(),
            provider.to_owned(),
            a.display_name.clone(),
            a.file.clone(),
        ]);
    }
    printer.out(&crate::table::table(&rows));
    super::warn_load_errors(project, "adapter", printer);
    Ok(ExitStatus::Success)
}
