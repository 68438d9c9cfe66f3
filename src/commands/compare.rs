//! `lfeval compare A B`: run B against baseline A — a table of metric deltas with intervals and
//! p-values, flipped samples, errors, latency, tokens and cost; `--json`, `--markdown FILE`,
//! `--junit FILE`; B's policies checked; `--fail-on-regression` exits 1 only for a metric that
//! got worse with p below `--alpha`.

use anyhow::Context;

use crate::cli::CompareArgs;
use crate::eval::policy::{self, number};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::report::comparison::{self, Comparison};
use crate::report::{junit, markdown};

/// How many flipped ids the terminal lists per direction (the JSON has them all).
const SHOWN_FLIPS: usize = 10;

pub fn run(args: &CompareArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    anyhow::ensure!(
        args.alpha > 0.0 && args.alpha < 1.0,
        "`--alpha` must be between 0 and 1, found `{}`",
        args.alpha
    );
    let a = crate::report::load(&args.baseline)
        .with_context(|| format!("cannot read the baseline run `{}`", args.baseline.display()))?;
    let b = crate::report::load(&args.current)
        .with_context(|| format!("cannot read the run `{}`", args.current.display()))?;
    let rules = policy::evaluate(&b.run.head.run_config.policies, &b.run.summary);
    let c = comparison::compare(&a.run, &a.table, &b.run, &b.table, args.alpha, rules);
    if args.json {
        printer.outln(&serde_json::to_string_pretty(&c)?);
    } else {
        printer.out(&table(&c));
    }
    if let Some(path) = &args.markdown {
        super::write_text(path, &markdown::comparison(&c))?;
    }
    if let Some(path) = &args.junit {
        let name = format!("lfeval compare {}", c.current.evaluation);
        super::write_text(path, &junit::render(&name, &junit::compare_cases(&c))?)?;
    }
    let failed_rules: Vec<_> = c.policies.iter().filter(|r| !r.passed).collect();
    for rule in &failed_rules {
        printer.errln(&format!(
            "policy rule `{}` failed: {}: {}",
            rule.id(),
            rule.condition,
            rule.detail
        ));
    }
    if args.fail_on_regression && !c.regressions.is_empty() {
        printer.errln(&format!(
            "{} metric(s) got worse with p < {}",
            c.regressions.len(),
            args.alpha
        ));
        return Ok(ExitStatus::Failure);
    }
    Ok(if failed_rules.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn signed(value: f64) -> String {
    if value > 0.0 {
        format!("+{}", number(value))
    } else {
        number(value)
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), number)
}

/// The terminal view: one row per metric, then flips, errors and deltas.
fn table(c: &Comparison) -> String {
    let mut rows = vec![
        ["SPECIFICATION", "METRIC", "A", "B", "DELTA", "95% CI", "P", "TEST"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for spec in &c.specifications {
        for (i, m) in spec.metrics.iter().enumerate() {
            rows.push(vec![
                if i == 0 { spec.key.clone() } else { String::new() },
                m.name.clone(),
                opt(m.a),
                opt(m.b),
                m.delta.map_or_else(
                    || "-".to_owned(),
                    |d| {
                        if m.regressed {
                            format!("{} worse", signed(d))
                        } else {
                            signed(d)
                        }
                    },
                ),
                m.delta_ci.map_or_else(
                    || "-".to_owned(),
                    |[lo, hi]| format!("[{}, {}]", signed(lo), signed(hi)),
                ),
                m.p_value.map_or_else(|| "-".to_owned(), crate::report::stats::format_p),
                m.test.unwrap_or("-").to_owned(),
            ]);
        }
    }
    let mut out = crate::table::table(&rows);
    for spec in &c.specifications {
        let mut lines = Vec::new();
        for m in spec.metrics.iter().filter(|m| m.mcnemar_p.is_some()) {
            for (label, ids) in [
                ("pass → fail", &m.flips.pass_to_fail),
                ("fail → pass", &m.flips.fail_to_pass),
            ] {
                if ids.is_empty() {
                    continue;
                }
                let shown: Vec<String> = ids.iter().take(SHOWN_FLIPS).map(|id| format!("`{id}`")).collect();
                let more = if ids.len() > SHOWN_FLIPS {
                    format!(" and {} more", ids.len() - SHOWN_FLIPS)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "  {} {label} ({}): {}{more}",
                    m.name,
                    ids.len(),
                    shown.join(", ")
                ));
            }
        }
        if !spec.errors_appeared.is_empty() || !spec.errors_vanished.is_empty() {
            lines.push(format!(
                "  errors: {} appeared, {} vanished",
                spec.errors_appeared.len(),
                spec.errors_vanished.len()
            ));
        }
        if let (Some(a), Some(b)) = (spec.latency_p50_ms.a, spec.latency_p50_ms.b) {
            let mut line = format!("  latency p50 {a:.0} → {b:.0} ms");
            if let (Some(a), Some(b)) = (spec.latency_p95_ms.a, spec.latency_p95_ms.b) {
                line.push_str(&format!(", p95 {a:.0} → {b:.0} ms"));
            }
            if let (Some(a), Some(b)) = (spec.prompt_tokens.a, spec.prompt_tokens.b) {
                line.push_str(&format!("; prompt tokens {a} → {b}"));
            }
            if let (Some(a), Some(b)) = (spec.completion_tokens.a, spec.completion_tokens.b) {
                line.push_str(&format!(", completion {a} → {b}"));
            }
            if let (Some(a), Some(b)) = (spec.cost_usd.a, spec.cost_usd.b) {
                line.push_str(&format!("; cost ${a:.6} → ${b:.6}"));
            }
            lines.push(line);
        }
        if spec.only_in_baseline > 0 || spec.only_in_current > 0 {
            lines.push(format!(
                "  unpaired samples: {} only in A, {} only in B",
                spec.only_in_baseline, spec.only_in_current
            ));
        }
        if !lines.is_empty() {
            out.push_str(&format!("\n{}:\n{}\n", spec.key, lines.join("\n")));
        }
    }
    let u = &c.unmatched_specifications;
    for (label, keys) in [("only in A", &u.only_in_baseline), ("only in B", &u.only_in_current)] {
        if !keys.is_empty() {
            let list: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            out.push_str(&format!("\nspecifications {label}: {}\n", list.join(", ")));
        }
    }
    out.push_str(&if c.regressions.is_empty() {
        format!("\nno metric got worse with p < {}\n", c.alpha)
    } else {
        format!("\n{} metric(s) got worse with p < {}\n", c.regressions.len(), c.alpha)
    });
    out
}
