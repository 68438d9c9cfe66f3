//! `lfeval runs list [--json]` and `lfeval runs show RUN`: the runs under the project's `runs/`,
//! from their summaries (never their samples), newest first.

use crate::cli::{GlobalArgs, RunsCommand, RunsShowArgs};
use crate::eval::policy::{self, number};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::report::finished_run::FinishedRun;
use crate::report::runs::{self, RunEntry};

pub fn run(global: &GlobalArgs, command: &RunsCommand, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let project = super::project_dir(global);
    match command {
        RunsCommand::List(args) => {
            let (entries, problems) = runs::list(&project);
            for problem in &problems {
                printer.warn(&problem.to_string());
            }
            if args.json {
                printer.outln(&serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                printer.errln(&format!("no runs under `{}`", runs::runs_dir(&project).display()));
            } else {
                printer.out(&list_table(&entries));
            }
            Ok(ExitStatus::Success)
        }
        RunsCommand::Show(args) => show(&project, args, printer),
    }
}

fn cost(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), super::run::usd)
}

fn list_table(entries: &[RunEntry]) -> String {
    let mut rows = vec![
        [
            "STARTED",
            "RUN",
            "EVALUATION",
            "MODELS",
            "STATUS",
            "SAMPLES",
            "FAILED",
            "COST",
            "METRICS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for e in entries {
        let metrics: Vec<String> = e
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.name, number(m.value)))
            .collect();
        rows.push(vec![
            e.started_at.get(..19).unwrap_or(&e.started_at).replace('T', " "),
            e.name.clone(),
            e.evaluation.clone(),
            if e.models.is_empty() {
                "-".to_owned()
            } else {
                e.models.join(", ")
            },
            e.status.to_owned(),
            e.samples.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            e.failed.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            cost(e.cost_usd),
            if metrics.is_empty() {
                "-".to_owned()
            } else {
                metrics.join(", ")
            },
        ]);
    }
    crate::table::table(&rows)
}

fn show(project: &std::path::Path, args: &RunsShowArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let dir = runs::resolve(project, &args.run).map_err(anyhow::Error::msg)?;
    let Some(entry) = RunEntry::read(&dir)? else {
        anyhow::bail!("`{}` is not a run directory", dir.display());
    };
    if entry.status == "incomplete" {
        if args.json {
            printer.outln(&serde_json::to_string_pretty(&serde_json::json!({ "run": entry }))?);
        } else {
            printer.outln(&format!(
                "{} ({}), started {}: incomplete\nhint: finish it with `lfeval run --resume {}`",
                entry.name,
                entry.evaluation,
                entry.started_at,
                dir.display()
            ));
        }
        return Ok(ExitStatus::Success);
    }
    let run = FinishedRun::open(&dir)?;
    let rules = policy::evaluate(&run.head.run_config.policies, &run.summary);
    let report = dir.join(crate::report::REPORT_FILE);
    if args.json {
        let doc = serde_json::json!({
            "run": entry,
            "lfeval_version": run.head.lfeval_version,
            "config_fingerprint": run.config_fingerprint,
            "command_line": run.command_lines.first(),
            "report": report.exists().then(|| report.display().to_string()),
            "policies": rules,
            "summary": run.summary,
        });
        printer.outln(&serde_json::to_string_pretty(&doc)?);
        return Ok(ExitStatus::Success);
    }
    let s = &run.summary;
    let mut head = vec![
        format!("run:         {}", dir.display()),
        format!("evaluation:  {}", s.evaluation),
        format!("status:      {}", entry.status),
        format!("started:     {}", s.started_at),
        format!("ended:       {}", s.ended_at),
        format!("sessions:    {}", s.sessions),
        format!("lfeval:      {}", run.head.lfeval_version),
    ];
    if let Some(argv) = run.command_lines.first() {
        head.push(format!("command:     {}", argv.join(" ")));
    }
    if let Some(fingerprint) = &run.config_fingerprint {
        head.push(format!("fingerprint: {fingerprint}"));
    }
    printer.outln(&head.join("\n"));
    printer.outln("");
    printer.out(&super::run::summary_table(s));
    let failures = super::run::failure_list(s);
    if !failures.is_empty() {
        printer.outln(&failures);
    }
    let policies = super::gates::policy_lines(&rules);
    if !policies.is_empty() {
        printer.outln(&policies);
    }
    if report.exists() {
        printer.outln(&format!("report: {}", report.display()));
    }
    Ok(ExitStatus::Success)
}
