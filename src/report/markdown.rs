//! Markdown summaries fit for a pull-request comment: a run's metrics with their 95% intervals
//! and policy rules, or a comparison's deltas, p-values, flips and regressions.

use std::fmt::Write as _;

use crate::eval::policy::{RuleOutcome, number};
use crate::eval::summary::RunSummary;
use crate::report::comparison::{Comparison, Pair};
use crate::report::series::SampleTable;

/// Text for one table cell: pipes and line breaks would break the table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn ci(interval: Option<[f64; 2]>) -> String {
    interval.map_or_else(
        || "—".to_owned(),
        |[lo, hi]| format!("[{}, {}]", number(lo), number(hi)),
    )
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), number)
}

fn usd(value: f64) -> String {
    if value >= 0.01 {
        format!("${value:.2}")
    } else {
        format!("${value:.6}").trim_end_matches('0').to_owned()
    }
}

fn p_value(p: Option<f64>) -> String {
    p.map_or_else(|| "—".to_owned(), crate::report::stats::format_p)
}

fn policies(out: &mut String, rules: &[RuleOutcome]) {
    if rules.is_empty() {
        return;
    }
    let failed = rules.iter().filter(|r| !r.passed).count();
    let _ = writeln!(
        out,
        "\n**Policies:** {} of {} rule(s) passed\n\n| Rule | Condition | Status | Detail |\n|---|---|---|---|",
        rules.len() - failed,
        rules.len()
    );
    for r in rules {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} |",
            cell(&r.id()),
            cell(&r.condition),
            if r.passed { "✅ passed" } else { "❌ failed" },
            cell(&r.detail)
        );
    }
}

/// A finished run.
pub fn run(summary: &RunSummary, table: &SampleTable, rules: &[RuleOutcome]) -> String {
    let mut out = format!("## lfeval: `{}`\n\n", cell(&summary.evaluation));
    out.push_str(
        "| Specification | Model | Samples | Errored | Metric | Value | 95% CI | n |\n|---|---|---:|---:|---|---:|---|---:|\n",
    );
    for (spec, t) in summary.specifications.iter().zip(&table.specs) {
        let model = spec.identity.model.as_deref().unwrap_or("-");
        let head = format!(
            "| `{}` | `{}` | {} | {} ",
            cell(&spec.identity.key),
            cell(model),
            spec.samples,
            spec.failed
        );
        if t.series.is_empty() {
            let _ = writeln!(out, "{head}| (no metrics) | | | |");
        }
        for (i, series) in t.series.iter().enumerate() {
            let lead = if i == 0 { head.clone() } else { "| | | | ".to_owned() };
            let _ = writeln!(
                out,
                "{lead}| {} | {} | {} | {} |",
                cell(&series.full_name),
                opt(series.value),
                ci(series.interval().map(|(c, _)| c)),
                series.n
            );
        }
    }
    let t = &summary.totals;
    let _ = write!(
        out,
        "\n{} sample(s), {} errored · {} prompt + {} completion tokens",
        t.samples, t.failed, t.usage.num_prompt_tokens, t.usage.num_completion_tokens
    );
    if let Some(cost) = t.cost_usd {
        let _ = write!(out, " · {}", usd(cost));
    }
    let _ = writeln!(out, " · {:.1}s wall time", summary.wall_time_s);
    policies(&mut out, rules);
    out
}

fn pair_u64(p: &Pair<u64>) -> String {
    match (p.a, p.b) {
        (Some(a), Some(b)) => format!("{a} → {b}"),
        _ => "—".to_owned(),
    }
}

fn pair_ms(p: &Pair<f64>) -> String {
    match (p.a, p.b) {
        (Some(a), Some(b)) => format!("{a:.0} → {b:.0} ms"),
        _ => "—".to_owned(),
    }
}

fn pair_usd(p: &Pair<f64>) -> String {
    match (p.a, p.b) {
        (Some(a), Some(b)) => format!("{} → {}", usd(a), usd(b)),
        _ => "—".to_owned(),
    }
}

/// A comparison of B against baseline A.
pub fn comparison(c: &Comparison) -> String {
    let mut out = format!(
        "## lfeval compare: `{}` against baseline `{}`\n\n",
        cell(&c.current.dir),
        cell(&c.baseline.dir)
    );
    out.push_str(
        "| Specification | Metric | Baseline | Current | Δ | 95% CI of Δ | p | pass→fail | fail→pass |\n|---|---|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for spec in &c.specifications {
        for (i, m) in spec.metrics.iter().enumerate() {
            let name = if i == 0 {
                format!("`{}`", cell(&spec.key))
            } else {
                String::new()
            };
            let delta = match m.delta {
                Some(d) if m.regressed => format!("**{}{}** ⚠️", if d > 0.0 { "+" } else { "" }, number(d)),
                Some(d) => format!("{}{}", if d > 0.0 { "+" } else { "" }, number(d)),
                None => "—".to_owned(),
            };
            let flips = |n: usize| {
                if m.mcnemar_p.is_some() {
                    n.to_string()
                } else {
                    "—".to_owned()
                }
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {delta} | {} | {} | {} | {} |",
                cell(&m.name),
                opt(m.a),
                opt(m.b),
                ci(m.delta_ci),
                p_value(m.p_value),
                flips(m.flips.pass_to_fail.len()),
                flips(m.flips.fail_to_pass.len())
            );
        }
    }
    if c.regressions.is_empty() {
        let _ = writeln!(out, "\n**Regressions** (p < {}): none", c.alpha);
    } else {
        let _ = writeln!(out, "\n**Regressions** (p < {}):", c.alpha);
        for r in &c.regressions {
            let _ = writeln!(
                out,
                "- `{}` `{}`: {} → {} (p = {})",
                cell(&r.spec),
                cell(&r.name),
                opt(r.a),
                opt(r.b),
                p_value(Some(r.p_value))
            );
        }
    }
    out.push_str("\n| Specification | Paired | Errors appeared | Errors vanished | Latency p50 | Latency p95 | Tokens (prompt) | Cost |\n|---|---:|---:|---:|---|---|---|---|\n");
    for s in &c.specifications {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            cell(&s.key),
            s.n_paired,
            s.errors_appeared.len(),
            s.errors_vanished.len(),
            pair_ms(&s.latency_p50_ms),
            pair_ms(&s.latency_p95_ms),
            pair_u64(&s.prompt_tokens),
            pair_usd(&s.cost_usd)
        );
    }
    let u = &c.unmatched_specifications;
    if !u.only_in_baseline.is_empty() || !u.only_in_current.is_empty() {
        let list = |keys: &[String]| {
            keys.iter()
                .map(|k| format!("`{}`", cell(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "\nUnmatched specifications: only in the baseline {}; only in this run {}",
            if u.only_in_baseline.is_empty() {
                "none".to_owned()
            } else {
                list(&u.only_in_baseline)
            },
            if u.only_in_current.is_empty() {
                "none".to_owned()
            } else {
                list(&u.only_in_current)
            }
        );
    }
    policies(&mut out, &c.policies);
    out
}
