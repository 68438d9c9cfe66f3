//! `lfeval merge DIR… --output DIR`: the shards of a sharded run become one run directory, and
//! its metrics table is printed as `run` prints it. Missing samples are listed by shard,
//! specification and id (all of them with `--json`), and nothing is written.

use crate::cli::{GlobalArgs, MergeArgs};
use crate::eval::merge::{self, MergeEnd, MergeRequest, MissingSamples};
use crate::eval::run::RunOutcome;
use crate::exit_status::ExitStatus;
use crate::printer::Printer;

/// How many missing ids are listed per shard and specification (`--json` lists every one).
const SHOWN_IDS: usize = 20;

pub fn run(global: &GlobalArgs, args: &MergeArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let python = super::start_python(global)?;
    let request = MergeRequest {
        dirs: &args.dirs,
        output: &args.output,
        run_file: args.file.as_deref(),
        project: global.project.as_deref(),
        env_file: global.env_file.as_deref(),
    };
    let end = merge::merge(&request, &python);
    python.flush();
    match end? {
        MergeEnd::Merged(summary) => {
            if args.json {
                printer.outln(&serde_json::to_string_pretty(&summary)?);
            } else {
                printer.out(&super::run::summary_table(&summary));
                let failures = super::run::failure_list(&summary);
                if !failures.is_empty() {
                    printer.errln(&failures);
                }
                printer.outln(&format!(
                    "merged {} shard(s) into {}",
                    args.dirs.len(),
                    summary.run_dir.display()
                ));
            }
            super::gates::write_report(&summary.run_dir, args.json, printer);
            let outcome = RunOutcome {
                summary: Some(*summary),
                notes: Vec::new(),
                stopped_early: false,
                cost_limit: None,
            };
            Ok(outcome.status())
        }
        MergeEnd::Missing(missing) => {
            if args.json {
                printer.outln(&serde_json::to_string_pretty(
                    &serde_json::json!({ "missing": missing }),
                )?);
            }
            printer.error(&missing_text(&missing));
            Ok(ExitStatus::Failure)
        }
    }
}

fn missing_text(missing: &[MissingSamples]) -> String {
    let total: usize = missing.iter().map(|m| m.sample_ids.len()).sum();
    let mut lines = vec![format!(
        "cannot merge: {total} sample(s) are missing; nothing was written"
    )];
    for group in missing {
        let place = match &group.dir {
            Some(dir) => format!("shard {} (`{}`)", group.shard, dir.display()),
            None => format!("shard {} (not given)", group.shard),
        };
        let mut ids: Vec<String> = group
            .sample_ids
            .iter()
            .take(SHOWN_IDS)
            .map(|id| format!("`{id}`"))
            .collect();
        if group.sample_ids.len() > SHOWN_IDS {
            ids.push(format!(
                "… {} more (`--json` lists all)",
                group.sample_ids.len() - SHOWN_IDS
            ));
        }
        lines.push(format!(
            "  {place}, `{}`: {} sample(s): {}",
            group.spec,
            group.sample_ids.len(),
            ids.join(", ")
        ));
    }
    let mut hints = Vec::new();
    if missing.iter().any(|m| m.dir.is_some()) {
        hints.push("finish an interrupted shard with `lfeval run --resume DIR`");
    }
    if missing.iter().any(|m| m.dir.is_none()) {
        hints.push("run a shard that was not given with `lfeval run -f RUN.yaml --shard I/N`, or add its directory");
    }
    lines.push(format!("hint: {}", hints.join("; ")));
    lines.join("\n")
}
