//! What follows a summarised `lfeval run`: `report.html` written into the run directory, the
//! run config's policies checked (a failed rule fails the run), and the `--junit` and
//! `--markdown` files CI asks for.

use std::path::Path;

use crate::cli::RunArgs;
use crate::eval::policy::{self, Policy, RuleOutcome};
use crate::eval::summary::RunSummary;
use crate::printer::Printer;

/// Significance level the report marks differences at.
const REPORT_ALPHA: f64 = 0.05;

/// After a summarised run: writes `report.html`, checks the policies, writes `--markdown` and
/// `--junit`. `false` when a policy rule failed.
pub fn after_run(
    summary: &RunSummary,
    policies: &[Policy],
    run_dir: &Path,
    args: &RunArgs,
    printer: &Printer,
) -> anyhow::Result<bool> {
    let rules = policy::evaluate(policies, summary);
    let table = write_report(run_dir, args.json, printer);
    let lines = policy_lines(&rules);
    if !lines.is_empty() {
        if args.json {
            printer.errln(&lines);
        } else {
            printer.outln(&lines);
        }
    }
    if let Some(path) = &args.markdown {
        let table = match table {
            Some(t) => t,
            None => crate::report::load(run_dir)?.table,
        };
        super::write_text(path, &crate::report::markdown::run(summary, &table, &rules))?;
    }
    if let Some(path) = &args.junit {
        let cases = crate::report::junit::run_cases(summary, &rules);
        let xml = crate::report::junit::render(&format!("lfeval {}", summary.evaluation), &cases)?;
        super::write_text(path, &xml)?;
    }
    Ok(rules.iter().all(|r| r.passed))
}

/// Writes `report.html` into a finished run directory and says where (unless `json`). The
/// results are safe in `samples.jsonl` either way: a report that cannot be written is worth a
/// warning, not a failed run.
pub fn write_report(run_dir: &Path, json: bool, printer: &Printer) -> Option<crate::report::series::SampleTable> {
    match crate::report::write(run_dir, None, REPORT_ALPHA) {
        Ok(written) => {
            if !json {
                printer.outln(&format!("report: {}", written.path.display()));
            }
            Some(written.loaded.table)
        }
        Err(e) => {
            printer.warn(&format!(
                "cannot write the report: {e:#}\nhint: `lfeval report {}` tries again",
                run_dir.display()
            ));
            None
        }
    }
}

/// Policy rules: a count, then each failed rule with why.
pub fn policy_lines(rules: &[RuleOutcome]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let failed: Vec<&RuleOutcome> = rules.iter().filter(|r| !r.passed).collect();
    let mut lines = vec![format!(
        "policies: {} of {} rule(s) passed",
        rules.len() - failed.len(),
        rules.len()
    )];
    for rule in failed {
        lines.push(format!(
            "  failed `{}` ({}): {}",
            rule.id(),
            rule.condition,
            rule.detail
        ));
    }
    lines.join("\n")
}
