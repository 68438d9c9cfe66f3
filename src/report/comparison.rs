//! Run B against baseline run A: specifications matched by key, samples by id. For every metric
//! both runs have: the values, their difference, a paired-bootstrap interval of it, and a
//! p-value — the exact McNemar test for 0/1 scores (with the samples that flipped), the paired
//! bootstrap otherwise. Then errors that appeared or vanished, and latency, token and cost
//! deltas. [`Comparison`] is what `lfeval compare --json` prints; [`Comparison::page`] is the
//! report's `lfeval-comparison`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::eval::policy::RuleOutcome;
use crate::report::finished_run::FinishedRun;
use crate::report::meta::{Provenance, provenance};
use crate::report::series::{Better, MetricSeries, SampleTable, SeriesKind, SpecTable};
use crate::report::stats;

#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    pub dir: String,
    pub evaluation: String,
    pub started_at: String,
}

impl RunRef {
    fn of(run: &FinishedRun) -> RunRef {
        RunRef {
            dir: run.dir.display().to_string(),
            evaluation: run.summary.evaluation.clone(),
            started_at: run.summary.started_at.clone(),
        }
    }
}

/// A value in A and in B.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pair<T> {
    pub a: Option<T>,
    pub b: Option<T>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Flips {
    /// Passed in A, failed in B.
    pub pass_to_fail: Vec<String>,
    /// Failed in A, passed in B.
    pub fail_to_pass: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricComparison {
    /// `scorer.value`, as the terminal and `summary.json` name it.
    pub name: String,
    pub scorer: String,
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// `b − a`.
    pub delta: Option<f64>,
    /// 95% paired-bootstrap interval of the difference.
    pub delta_ci: Option<[f64; 2]>,
    pub flips: Flips,
    /// Exact McNemar p-value (0/1 scores only).
    pub mcnemar_p: Option<f64>,
    /// The p-value the regression gate uses: McNemar's, or the paired bootstrap's.
    pub p_value: Option<f64>,
    pub test: Option<&'static str>,
    pub n_paired: u64,
    pub better: Better,
    /// Worse in B with `p_value` below the chosen level.
    pub regressed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub class: String,
    pub a: u64,
    pub b: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorChange {
    pub id: String,
    pub class: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpecComparison {
    pub key: String,
    pub metrics: Vec<MetricComparison>,
    pub n_paired: u64,
    pub only_in_baseline: u64,
    pub only_in_current: u64,
    /// Errored samples per class of their first error.
    pub errors: Vec<ErrorCount>,
    /// Paired samples that errored in B but not in A.
    pub errors_appeared: Vec<ErrorChange>,
    /// Paired samples that errored in A but not in B.
    pub errors_vanished: Vec<ErrorChange>,
    pub latency_p50_ms: Pair<f64>,
    pub latency_p95_ms: Pair<f64>,
    pub prompt_tokens: Pair<u64>,
    pub completion_tokens: Pair<u64>,
    pub cost_usd: Pair<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Unmatched {
    pub only_in_baseline: Vec<String>,
    pub only_in_current: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub cost_usd: Pair<f64>,
    pub prompt_tokens: Pair<u64>,
    pub completion_tokens: Pair<u64>,
    pub wall_time_s: Pair<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    pub spec: String,
    pub name: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub p_value: f64,
}

/// `lfeval compare --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: RunRef,
    pub current: RunRef,
    pub alpha: f64,
    pub specifications: Vec<SpecComparison>,
    pub unmatched_specifications: Unmatched,
    pub totals: Totals,
    pub regressions: Vec<Regression>,
    /// B's policies, checked against B.
    pub policies: Vec<RuleOutcome>,
    #[serde(skip)]
    baseline_provenance: Provenance,
    /// The pass-rule flips with what A showed, for the report.
    #[serde(skip)]
    page_flips: Vec<PageFlip>,
    #[serde(skip)]
    page_metrics: Vec<PageMetric>,
}

/// Compares `b` (with its samples) against baseline `a`.
pub fn compare(
    a: &FinishedRun,
    a_table: &SampleTable,
    b: &FinishedRun,
    b_table: &SampleTable,
    alpha: f64,
    policies: Vec<RuleOutcome>,
) -> Comparison {
    let mut specifications = Vec::new();
    let mut page_flips = Vec::new();
    let mut page_metrics = Vec::new();
    let mut unmatched = Unmatched::default();
    let mut row_offset = 0usize;
    for (bi, bt) in b_table.specs.iter().enumerate() {
        let offset = row_offset;
        row_offset += bt.rows.len();
        let Some(at) = a_table.spec(&bt.key) else {
            unmatched.only_in_current.push(bt.key.clone());
            continue;
        };
        let a_spec = a.summary.specifications.iter().find(|s| s.identity.key == bt.key);
        let b_spec = &b.summary.specifications[bi];
        let spec = compare_spec(at, bt, alpha, offset, &mut page_flips, &mut page_metrics);
        specifications.push(SpecComparison {
            prompt_tokens: Pair {
                a: a_spec.map(|s| s.usage.num_prompt_tokens),
                b: Some(b_spec.usage.num_prompt_tokens),
            },
            completion_tokens: Pair {
                a: a_spec.map(|s| s.usage.num_completion_tokens),
                b: Some(b_spec.usage.num_completion_tokens),
            },
            cost_usd: Pair {
                a: a_spec.and_then(|s| s.cost_usd),
                b: b_spec.cost_usd,
            },
            ..spec
        });
    }
    for at in &a_table.specs {
        if b_table.spec(&at.key).is_none() {
            unmatched.only_in_baseline.push(at.key.clone());
        }
    }
    let regressions = specifications
        .iter()
        .flat_map(|s| {
            s.metrics.iter().filter(|m| m.regressed).map(|m| Regression {
                spec: s.key.clone(),
                name: m.name.clone(),
                a: m.a,
                b: m.b,
                p_value: m.p_value.unwrap_or(1.0),
            })
        })
        .collect();
    let (ta, tb) = (&a.summary.totals, &b.summary.totals);
    Comparison {
        baseline: RunRef::of(a),
        current: RunRef::of(b),
        alpha,
        specifications,
        unmatched_specifications: unmatched,
        totals: Totals {
            cost_usd: Pair {
                a: ta.cost_usd,
                b: tb.cost_usd,
            },
            prompt_tokens: Pair {
                a: Some(ta.usage.num_prompt_tokens),
                b: Some(tb.usage.num_prompt_tokens),
            },
            completion_tokens: Pair {
                a: Some(ta.usage.num_completion_tokens),
                b: Some(tb.usage.num_completion_tokens),
            },
            wall_time_s: Pair {
                a: Some(a.summary.wall_time_s),
                b: Some(b.summary.wall_time_s),
            },
        },
        regressions,
        policies,
        baseline_provenance: provenance(a),
        page_flips,
        page_metrics,
    }
}

fn compare_spec(
    at: &SpecTable,
    bt: &SpecTable,
    alpha: f64,
    offset: usize,
    page_flips: &mut Vec<PageFlip>,
    page_metrics: &mut Vec<PageMetric>,
) -> SpecComparison {
    let a_rows: HashMap<&str, usize> = (0..at.rows.len()).map(|i| (at.rows.id(i), i)).collect();
    // (row in A, row in B) of every sample both runs have, in B's order.
    let pairs: Vec<(usize, usize)> = (0..bt.rows.len())
        .filter_map(|j| a_rows.get(bt.rows.id(j)).map(|&i| (i, j)))
        .collect();
    let mut metrics = Vec::new();
    for bs in &bt.series {
        let Some(a_series) = at.series.iter().find(|s| s.full_name == bs.full_name) else {
            continue;
        };
        let m = compare_metric(a_series, bs, &pairs, bt, alpha);
        page_metrics.push(PageMetric {
            spec: bt.key.clone(),
            scorer: bs.scorer.clone(),
            metric: bs.metric.clone(),
            name: bs.name.clone(),
            a: m.a,
            b: m.b,
            delta: m.delta,
            delta_ci: m.delta_ci,
            p_value: m.p_value,
            test: m.test,
            n_paired: m.n_paired,
            pass_to_fail: m.mcnemar_p.map(|_| m.flips.pass_to_fail.len() as u64),
            fail_to_pass: m.mcnemar_p.map(|_| m.flips.fail_to_pass.len() as u64),
            better: m.better,
        });
        metrics.push(m);
    }
    // The report lists the flips of the pass rule, with what A showed for each.
    if let (Some(ap), Some(_)) = (at.pass, bt.pass) {
        let key = format!(
            "{}.{}",
            at.series[ap].scorer,
            at.series[ap].field.clone().unwrap_or_default()
        );
        for &(i, j) in &pairs {
            let (Some(was), Some(now)) = (at.pass_of(i), bt.pass_of(j)) else {
                continue;
            };
            if was == now {
                continue;
            }
            let mut scores = BTreeMap::new();
            scores.insert(key.clone(), at.series[ap].values[i]);
            page_flips.push(PageFlip {
                spec: bt.key.clone(),
                id: bt.rows.id(j).to_owned(),
                row: Some(offset + j),
                direction: if was { "pass_to_fail" } else { "fail_to_pass" },
                baseline: FlipBaseline {
                    output: at.rows.output(i).to_owned(),
                    error: at.rows.error(i).map(str::to_owned),
                    scores,
                },
            });
        }
    }
    let mut errors: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in (0..at.rows.len()).filter_map(|i| at.rows.error(i)) {
        errors.entry(c.to_owned()).or_default().0 += 1;
    }
    for c in (0..bt.rows.len()).filter_map(|j| bt.rows.error(j)) {
        errors.entry(c.to_owned()).or_default().1 += 1;
    }
    let (mut appeared, mut vanished) = (Vec::new(), Vec::new());
    for &(i, j) in &pairs {
        match (at.rows.error(i), bt.rows.error(j)) {
            (None, Some(c)) => appeared.push(ErrorChange {
                id: bt.rows.id(j).to_owned(),
                class: c.to_owned(),
            }),
            (Some(c), None) => vanished.push(ErrorChange {
                id: bt.rows.id(j).to_owned(),
                class: c.to_owned(),
            }),
            _ => {}
        }
    }
    SpecComparison {
        key: bt.key.clone(),
        metrics,
        n_paired: pairs.len() as u64,
        only_in_baseline: (at.rows.len() - pairs.len()) as u64,
        only_in_current: (bt.rows.len() - pairs.len()) as u64,
        errors: errors
            .into_iter()
            .map(|(class, (a, b))| ErrorCount { class, a, b })
            .collect(),
        errors_appeared: appeared,
        errors_vanished: vanished,
        latency_p50_ms: Pair {
            a: at.latency(0.5),
            b: bt.latency(0.5),
        },
        latency_p95_ms: Pair {
            a: at.latency(0.95),
            b: bt.latency(0.95),
        },
        prompt_tokens: Pair { a: None, b: None },
        completion_tokens: Pair { a: None, b: None },
        cost_usd: Pair { a: None, b: None },
    }
}

fn compare_metric(
    a: &MetricSeries,
    b: &MetricSeries,
    pairs: &[(usize, usize)],
    bt: &SpecTable,
    alpha: f64,
) -> MetricComparison {
    // Samples scored in both runs.
    let paired: Vec<(f64, f64, usize)> = pairs
        .iter()
        .filter_map(|&(i, j)| Some((a.values[i]?, b.values[j]?, j)))
        .collect();
    let both_binary = a.kind == SeriesKind::Proportion && b.kind == SeriesKind::Proportion;
    let mut flips = Flips::default();
    let (mut delta_ci, mut p_value, mut mcnemar_p, mut test) = (None, None, None, None);
    if both_binary {
        // A pass is the good value: 1, or 0 for a metric where lower is better.
        let good = if b.better == Better::Higher { 1.0 } else { 0.0 };
        for &(x, y, j) in &paired {
            if x == good && y != good {
                flips.pass_to_fail.push(bt.rows.id(j).to_owned());
            } else if x != good && y == good {
                flips.fail_to_pass.push(bt.rows.id(j).to_owned());
            }
        }
        let p = stats::mcnemar(flips.pass_to_fail.len() as u64, flips.fail_to_pass.len() as u64);
        mcnemar_p = Some(p);
        p_value = Some(p);
        test = Some("mcnemar");
    }
    if let Some(statistic) = b.statistic().filter(|_| a.statistic().is_some()) {
        let xs: Vec<f64> = paired.iter().map(|p| p.0).collect();
        let ys: Vec<f64> = paired.iter().map(|p| p.1).collect();
        if let Some(boot) = stats::paired_bootstrap(&xs, &ys, statistic) {
            delta_ci = Some(boot.ci);
            if p_value.is_none() {
                p_value = Some(boot.p_value);
                test = Some("paired_bootstrap");
            }
        }
    }
    let delta = match (a.value, b.value) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let regressed = match (a.value, b.value, p_value) {
        (Some(x), Some(y), Some(p)) => b.better.worse(x, y) && p < alpha,
        _ => false,
    };
    MetricComparison {
        name: b.full_name.clone(),
        scorer: b.scorer.clone(),
        metric: b.metric.clone(),
        a: a.value,
        b: b.value,
        delta,
        delta_ci,
        flips,
        mcnemar_p,
        p_value,
        test,
        n_paired: paired.len() as u64,
        better: b.better,
        regressed,
    }
}

// --- the report's view (report-data.md §6) ---------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct PageMetric {
    pub spec: String,
    pub scorer: String,
    pub metric: String,
    pub name: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
    pub delta_ci: Option<[f64; 2]>,
    pub p_value: Option<f64>,
    pub test: Option<&'static str>,
    pub n_paired: u64,
    pub pass_to_fail: Option<u64>,
    pub fail_to_pass: Option<u64>,
    pub better: Better,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageFlip {
    pub spec: String,
    pub id: String,
    pub row: Option<usize>,
    pub direction: &'static str,
    pub baseline: FlipBaseline,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlipBaseline {
    pub output: String,
    pub error: Option<String>,
    pub scores: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Serialize)]
pub struct PageBaseline<'a> {
    pub label: String,
    pub provenance: &'a Provenance,
}

#[derive(Debug, Serialize)]
pub struct PageErrorCount<'a> {
    pub spec: &'a str,
    pub class: &'a str,
    pub a: u64,
    pub b: u64,
}

#[derive(Debug, Serialize)]
pub struct PageErrorChange<'a> {
    pub spec: &'a str,
    pub id: &'a str,
    pub row: Option<usize>,
    pub change: &'static str,
    pub class: &'a str,
}

#[derive(Debug, Serialize)]
pub struct PageDelta<'a> {
    pub spec: &'a str,
    pub latency_p50_ms: Pair<f64>,
    pub latency_p95_ms: Pair<f64>,
    pub prompt_tokens: Pair<u64>,
    pub completion_tokens: Pair<u64>,
    pub cost_usd: Pair<f64>,
}

#[derive(Debug, Serialize)]
pub struct PageUnpaired {
    pub only_in_baseline: u64,
    pub only_in_current: u64,
}

/// `lfeval-comparison`.
#[derive(Debug, Serialize)]
pub struct PageComparison<'a> {
    pub baseline: PageBaseline<'a>,
    pub metrics: &'a [PageMetric],
    pub flips: Vec<&'a PageFlip>,
    pub errors: Vec<PageErrorCount<'a>>,
    pub error_changes: Vec<PageErrorChange<'a>>,
    pub deltas: Vec<PageDelta<'a>>,
    pub totals: &'a Totals,
    pub unpaired: PageUnpaired,
}

impl Comparison {
    /// The report's view: flips pass→fail first.
    pub fn page(&self) -> PageComparison<'_> {
        let mut flips: Vec<&PageFlip> = self.page_flips.iter().collect();
        flips.sort_by_key(|f| f.direction != "pass_to_fail");
        let mut rows: HashMap<(&str, &str), usize> = HashMap::new();
        for f in &self.page_flips {
            if let Some(r) = f.row {
                rows.insert((f.spec.as_str(), f.id.as_str()), r);
            }
        }
        let mut errors = Vec::new();
        let mut error_changes = Vec::new();
        let mut deltas = Vec::new();
        for s in &self.specifications {
            for e in &s.errors {
                errors.push(PageErrorCount {
                    spec: &s.key,
                    class: &e.class,
                    a: e.a,
                    b: e.b,
                });
            }
            for (list, change) in [(&s.errors_appeared, "appeared"), (&s.errors_vanished, "vanished")] {
                for e in list {
                    error_changes.push(PageErrorChange {
                        spec: &s.key,
                        id: &e.id,
                        // The page looks rows up itself when this is unknown.
                        row: rows.get(&(s.key.as_str(), e.id.as_str())).copied(),
                        change,
                        class: &e.class,
                    });
                }
            }
            deltas.push(PageDelta {
                spec: &s.key,
                latency_p50_ms: s.latency_p50_ms,
                latency_p95_ms: s.latency_p95_ms,
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.completion_tokens,
                cost_usd: s.cost_usd,
            });
        }
        PageComparison {
            baseline: PageBaseline {
                label: format!("{} ({})", self.baseline.evaluation, self.baseline.started_at),
                provenance: &self.baseline_provenance,
            },
            metrics: &self.page_metrics,
            flips,
            errors,
            error_changes,
            deltas,
            totals: &self.totals,
            unpaired: PageUnpaired {
                only_in_baseline: self.specifications.iter().map(|s| s.only_in_baseline).sum(),
                only_in_current: self.specifications.iter().map(|s| s.only_in_current).sum(),
            },
        }
    }
}
