//! One sample (or one trial of it) from start to its records: the solver (declarative, a
//! recorded trace, or a Python `run_solver` whose `model.predict` calls come back into lfeval's
//! model chain), the solver's `postprocessor` (one sample may become several scored rows), the
//! scorers, and the task's action rules. A system task's single evidence call is a record of its
//! own. Nothing here writes: the caller appends the records it returns.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::error_class::ErrorClass;
use crate::eval::dataset::{Row, Sample};
use crate::eval::prepare::{Prepared, Samples};
use crate::eval::record::{EVIDENCE_SCORER, SampleError, SampleRecord, SampleTimings, Scores, SolverOutput, Stage};
use crate::eval::scorer::{self, ScoreContext};
use crate::eval::solver::{self, SolveContext, Solved};
use crate::eval::solver_def::{MessageFormat, SolverKind};
use crate::millis;
use crate::model::io::{self, Task, Usage};
use crate::model::registry::Registry;
use crate::model::runtime::ModelRuntime;
use crate::model::trace::{Call, CallPurpose};
use crate::open_responses::{Item, Trace};
use crate::python::{CallErrorKind, LfType, PythonRuntime};
use crate::template::TemplateEngine;

/// How long one Python solver, postprocessor or evidence call may run (model calls included).
const SNIPPET_TIMEOUT: Duration = Duration::from_secs(600);

/// What a sample needs from the run.
pub struct Env<'a> {
    pub registry: &'a Registry,
    pub python: &'a PythonRuntime,
}

/// The cache salt of a trial or a repeated run, so repetitions are asked afresh.
fn cache_salt(p: &Prepared, trial: Option<u32>) -> Option<String> {
    let run = p
        .spec
        .repetition
        .filter(|(run, _)| *run > 1)
        .map(|(run, _)| format!("run {run}"));
    let trial = trial.filter(|t| *t > 1).map(|t| format!("trial {t}"));
    match (run, trial) {
        (None, None) => None,
        (a, b) => Some([a, b].into_iter().flatten().collect::<Vec<_>>().join(" ")),
    }
}

fn snippet_error(stage: Stage, e: &crate::python::CallError) -> SampleError {
    let class = match &*e.kind {
        CallErrorKind::Timeout { .. } => ErrorClass::Timeout,
        _ => ErrorClass::SnippetError,
    };
    let location = e.kind.frames().last().map(|f| format!("{}:{}", f.file, f.line));
    let message = match &*e.kind {
        CallErrorKind::Raised { exc_type, message, .. } if message.is_empty() => exc_type.clone(),
        CallErrorKind::Raised { exc_type, message, .. } => format!("{exc_type}: {message}"),
        other => format!("{} {other}", e.function),
    };
    let mut detail = match &*e.kind {
        CallErrorKind::Raised { traceback, .. } => traceback.clone(),
        _ => String::new(),
    };
    if !e.captured.is_empty() {
        detail.push_str(&format!("\ncaptured output:\n{}", e.captured.trim_end()));
    }
    let error = SampleError::new(stage, class, message).with_location(location);
    if detail.trim().is_empty() {
        error
    } else {
        error.with_detail(detail.trim().to_owned())
    }
}

/// A `SolverTrace` as lf's `model_dump` writes it, back into what lfeval's scorers read.
fn solved_from_solver_trace(value: &Value, stage: Stage) -> Result<Solved, SampleError> {
    let bad = |what: String| {
        SampleError::new(
            stage,
            ErrorClass::InvalidOutput,
            format!("expected a `SolverTrace`: {what}"),
        )
        .with_detail(value.to_string())
    };
    let trace: Trace = match value.get("trace") {
        Some(t) => serde_json::from_value(t.clone()).map_err(|e| bad(format!("its `trace` is not a trace: {e}")))?,
        None => return Err(bad("it has no `trace`".to_owned())),
    };
    let raw_outputs = value
        .get("raw_outputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let output = match raw_outputs.last() {
        Some(last) => Some(
            io::parse_output(Task::ChatCompletion, &last.to_string())
                .map_err(|e| bad(format!("its last raw output is not a model output: {e}")))?,
        ),
        None => trace.last_assistant_text().map(solver::text_output),
    };
    let messages: Vec<Value> = trace
        .items
        .iter()
        .filter_map(Item::message)
        .map(|m| json!({"role": m.role, "content": m.text()}))
        .collect();
    let usage = raw_outputs
        .iter()
        .filter_map(|o| o.get("usage"))
        .filter_map(|u| io::parse_usage(u).ok())
        .fold(Usage::default(), |mut a, u| {
            a += u;
            a
        });
    Ok(Solved {
        output,
        model_input: json!({ "messages": messages }),
        messages,
        usage,
        trace,
        raw_outputs,
    })
}

/// The messages a model gets for trace items (lf's `trace_items_to_model_input`).
fn items_to_input(items: &Value) -> Result<Value, String> {
    let items: Vec<Item> =
        serde_json::from_value(items.clone()).map_err(|e| format!("`items` are not trace items: {e}"))?;
    let messages: Vec<Value> = items
        .iter()
        .filter_map(Item::message)
        .map(|m| {
            let mut message = Map::new();
            message.insert("role".into(), json!(m.role));
            message.insert("content".into(), json!(m.text()));
            message.extend(m.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            Value::Object(message)
        })
        .collect();
    Ok(json!({ "messages": messages }))
}

/// Runs a `python` solver: `run_solver(sample, model, trace)` with `model.predict` calling
/// the model under test through lfeval's chain.
async fn python_solve(
    p: &Prepared,
    env: &Env<'_>,
    sample: &Row,
    calls: &mut Vec<Call>,
    salt: Option<&str>,
) -> Result<Solved, SampleError> {
    let (Some(snippet), Some(model)) = (&p.solver_snippet, &p.model) else {
        return Err(SampleError::new(
            Stage::Solver,
            ErrorClass::Internal,
            "internal error: python solver not loaded",
        ));
    };
    let made: Arc<Mutex<Vec<Call>>> = Arc::default();
    let predict = {
        let (model, made, sample, salt) = (
            Arc::clone(model),
            Arc::clone(&made),
            Value::Object(sample.clone()),
            salt.map(str::to_owned),
        );
        Arc::new(move |request: Value| -> crate::python::HostFuture {
            let (model, made, sample, salt) = (Arc::clone(&model), Arc::clone(&made), sample.clone(), salt.clone());
            Box::pin(async move {
                let input = items_to_input(request.get("items").unwrap_or(&Value::Null))?;
                let (trace, result) = model
                    .infer_salted(&input, &Map::new(), Some(&sample), salt.as_deref())
                    .await;
                made.lock().unwrap_or_else(PoisonError::into_inner).push(Call {
                    model: model.model.key.clone(),
                    purpose: CallPurpose::Solver,
                    trace,
                });
                let output = result.map_err(|f| f.message)?;
                let items: Vec<Value> = solver::output_items(&output).iter().map(Item::to_json).collect();
                Ok(json!({"raw_output": output.value, "items": items}))
            }) as crate::python::HostFuture
        }) as crate::python::HostFn
    };
    let (model_arg, guard) = crate::python::host_object(predict);
    let trace = crate::python::lf_object(
        LfType::SolverTrace,
        json!({"trace": Trace::default().to_json(), "raw_outputs": []}),
        Value::Null,
    );
    let result = env
        .python
        .call(
            snippet,
            vec![Value::Object(sample.clone()), model_arg, trace],
            SNIPPET_TIMEOUT,
        )
        .await;
    drop(guard);
    calls.extend(std::mem::take(
        &mut *made.lock().unwrap_or_else(PoisonError::into_inner),
    ));
    let out = result.map_err(|e| snippet_error(Stage::Solver, &e))?;
    solved_from_solver_trace(&out.value, Stage::Solver)
}

/// `postprocess(sample, solver_output)` → the rows to score, each with its own solver output.
async fn postprocess(
    p: &Prepared,
    snippet: &crate::python::Snippet,
    env: &Env<'_>,
    record: &SampleRecord,
    solved: &Solved,
) -> Result<Vec<(Row, Solved)>, SampleError> {
    let cx = ScoreContext {
        sample: &record.sample,
        solved,
        format: message_format(p),
        registry: env.registry,
        templates: &p.templates,
        origin: &p.origin,
        python: Some(env.python),
        calls: &mut record.calls.clone(),
        usage: &mut Usage::default(),
        cache_salt: None,
    };
    let solver_output = cx.solver_output_value();
    let out = env
        .python
        .call(
            snippet,
            vec![Value::Object(record.sample.clone()), solver_output],
            SNIPPET_TIMEOUT,
        )
        .await
        .map_err(|e| snippet_error(Stage::Solver, &e))?;
    let bad = |what: &str| {
        SampleError::new(
            Stage::Solver,
            ErrorClass::InvalidOutput,
            format!("`postprocess` must return a list of `(sample, solver_output)` pairs: {what}"),
        )
        .with_detail(out.value.to_string())
    };
    let Value::Array(pairs) = &out.value else {
        return Err(bad("it did not return a list"));
    };
    pairs
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::Object(row), output]) => Ok((row.clone(), solved_from_solver_trace(output, Stage::Solver)?)),
            _ => Err(bad("an item is not a pair of a dict and a solver output")),
        })
        .collect()
}

fn message_format(p: &Prepared) -> MessageFormat {
    p.solver
        .as_ref()
        .map_or(MessageFormat::OpenResponses, |s| s.message_format)
}

/// Solves, postprocesses and scores one sample (one trial of it); returns its records.
pub async fn sample(
    p: &Prepared,
    env: &Env<'_>,
    sample: Sample,
    trial: Option<u32>,
    precomputed: Option<&Result<Scores, SampleError>>,
) -> Vec<SampleRecord> {
    let start = Instant::now();
    let mut record = SampleRecord::new(&p.spec.key, sample.id, sample.index as u64, sample.row);
    record.trial = trial;
    if let Samples::Evidence(snippet) = &p.samples {
        evidence(snippet, env, &mut record).await;
        record.timings.total_ms = millis::of(start.elapsed());
        return vec![record];
    }
    let salt = cache_salt(p, trial);
    let salt = salt.as_deref();
    let solved = match &p.solver {
        None => Ok(Solved::default()),
        Some(def) => match &def.kind {
            SolverKind::Python { .. } => python_solve(p, env, &record.sample, &mut record.calls, salt).await,
            _ => {
                let mut cx = SolveContext {
                    sample: &record.sample,
                    target: p.model.as_deref(),
                    registry: env.registry,
                    templates: &p.templates,
                    origin: &p.origin,
                    calls: &mut record.calls,
                    cache_salt: salt,
                };
                solver::solve(def, &mut cx).await
            }
        },
    };
    let solver_ms = millis::of(start.elapsed());
    let solved = match solved {
        Ok(solved) => solved,
        Err(e) => {
            record.errors.push(e);
            finish(&mut record, Usage::default(), solver_ms, start);
            return vec![record];
        }
    };
    let scoring = Scoring {
        p,
        env,
        salt,
        precomputed,
        solver_ms,
        start,
    };
    let Some(snippet) = &p.postprocessor else {
        // The common case: one record, scored from the solver's output, both moved into it.
        let usage = solved.usage;
        return vec![scoring.part(record, solved, usage).await];
    };
    let parts = match postprocess(p, snippet, env, &record, &solved).await {
        Ok(parts) => parts,
        Err(e) => {
            record.errors.push(e);
            finish(&mut record, Usage::default(), solver_ms, start);
            return vec![record];
        }
    };
    if parts.is_empty() {
        record.errors.push(SampleError::new(
            Stage::Solver,
            ErrorClass::InvalidOutput,
            "`postprocess` returned no rows to score",
        ));
        finish(&mut record, solved.usage, solver_ms, start);
        return vec![record];
    }
    let mut records = Vec::with_capacity(parts.len());
    for (i, (row, part_solved)) in parts.into_iter().enumerate() {
        let mut part = record.clone();
        part.part = Some(i as u32);
        part.sample = row;
        // The model calls belong to the sample; its first row carries them.
        if i > 0 {
            part.calls.clear();
        }
        let usage = if i == 0 { solved.usage } else { Usage::default() };
        records.push(scoring.part(part, part_solved, usage).await);
    }
    records
}

/// What scoring a sample's records shares.
struct Scoring<'a> {
    p: &'a Prepared,
    env: &'a Env<'a>,
    salt: Option<&'a str>,
    precomputed: Option<&'a Result<Scores, SampleError>>,
    solver_ms: f64,
    start: Instant,
}

impl Scoring<'_> {
    /// Scores one record and moves the solver's output into it.
    async fn part(&self, mut part: SampleRecord, solved: Solved, mut usage: Usage) -> SampleRecord {
        let p = self.p;
        score(p, self.env, &mut part, &solved, &mut usage, self.salt, self.precomputed).await;
        let Solved {
            model_input,
            output,
            messages,
            trace,
            ..
        } = solved;
        part.model_input = Some(model_input);
        part.solver_output = p.solver.as_ref().map(|_| {
            let (output, text) = output.map_or((None, None), |o| (Some(o.value), o.text));
            SolverOutput {
                output,
                text,
                messages,
                trace: Some(trace),
            }
        });
        apply_actions(p, &mut part);
        finish(&mut part, usage, self.solver_ms, self.start);
        part
    }
}

async fn score(
    p: &Prepared,
    env: &Env<'_>,
    record: &mut SampleRecord,
    solved: &Solved,
    usage: &mut Usage,
    salt: Option<&str>,
    precomputed: Option<&Result<Scores, SampleError>>,
) {
    for (def, snippet) in &p.scorers {
        if let scorer::ScorerKind::PythonAllSamples { .. } = def.kind {
            match precomputed {
                Some(Ok(scores)) => {
                    record.scores.insert(def.name.clone(), scores.clone());
                }
                Some(Err(e)) => record.errors.push(SampleError {
                    scorer: Some(def.name.clone()),
                    ..e.clone()
                }),
                None => record.errors.push(SampleError {
                    scorer: Some(def.name.clone()),
                    ..SampleError::new(
                        Stage::Score,
                        ErrorClass::Internal,
                        "internal error: no all-samples score",
                    )
                }),
            }
            continue;
        }
        let mut cx = ScoreContext {
            sample: &record.sample,
            solved,
            format: message_format(p),
            registry: env.registry,
            templates: &p.templates,
            origin: &p.origin,
            python: Some(env.python),
            calls: &mut record.calls,
            usage,
            cache_salt: salt,
        };
        match scorer::score(def, snippet.as_ref(), &mut cx).await {
            Ok(scores) => {
                record.scores.insert(def.name.clone(), scores);
            }
            Err(e) => record.errors.push(SampleError {
                scorer: Some(def.name.clone()),
                ..e
            }),
        }
    }
}

fn finish(record: &mut SampleRecord, usage: Usage, solver_ms: f64, start: Instant) {
    record.usage = usage;
    record.attempts = record.calls.iter().map(|c| c.trace.attempts.len() as u32).sum();
    record.retries = record
        .calls
        .iter()
        .map(|c| c.trace.attempts.len().saturating_sub(1) as u32)
        .sum();
    record.cached = !record.calls.is_empty() && record.calls.iter().all(|c| c.trace.cached);
    let total_ms = millis::of(start.elapsed());
    record.timings = SampleTimings {
        solver_ms,
        score_ms: millis::round(total_ms - solver_ms),
        total_ms,
    };
}

/// Marks the record with the first action rule whose filter it matches (`exclude_from_metrics`).
/// A rule that cannot be evaluated is the sample's error: silently keeping it would skew the
/// metrics the rule exists to protect.
fn apply_actions(p: &Prepared, record: &mut SampleRecord) {
    if p.actions.is_empty() {
        return;
    }
    static ENGINE: std::sync::LazyLock<TemplateEngine> = std::sync::LazyLock::new(TemplateEngine::new);
    let mut ctx = Map::new();
    ctx.insert("sample".into(), Value::Object(record.sample.clone()));
    let scores: Map<String, Value> = record
        .scores
        .iter()
        .map(|(name, s)| {
            let mut values = s.values.clone();
            for (k, v) in &s.metadata {
                values.entry(k.clone()).or_insert_with(|| v.clone());
            }
            (name.clone(), Value::Object(values))
        })
        .collect();
    ctx.insert("scores".into(), Value::Object(scores));
    for (i, rule) in p.actions.iter().enumerate() {
        let value = match ENGINE.eval_native(&rule.filter.expression, &ctx) {
            Ok(v) => v,
            Err(e) if matches!(e.kind, crate::template::TemplateErrorKind::Undefined) => Value::Null,
            Err(e) => {
                record.errors.push(SampleError::new(
                    Stage::Score,
                    ErrorClass::TemplateError,
                    format!("action rule `{}`: {}", rule.key, e.message),
                ));
                return;
            }
        };
        match crate::eval::dataset::filter_matches(&rule.key, i, &rule.filter, &value) {
            Ok(true) => {
                record.excluded_by = Some(rule.key.clone());
                return;
            }
            Ok(false) => {}
            Err(e) => {
                record.errors.push(SampleError::new(
                    Stage::Score,
                    ErrorClass::ScorerError,
                    format!("action rule `{}`: {e}", rule.key),
                ));
                return;
            }
        }
    }
}

/// A system task's `compute_evidence()`: `{"metrics": {name: {"value": n, "reason": "…"}}}`.
async fn evidence(snippet: &crate::python::Snippet, env: &Env<'_>, record: &mut SampleRecord) {
    let out = match env.python.call(snippet, Vec::new(), SNIPPET_TIMEOUT).await {
        Ok(out) => out,
        Err(e) => {
            record.errors.push(snippet_error(Stage::Score, &e));
            return;
        }
    };
    let mut scores = Scores::default();
    let metrics = out.value.get("metrics").and_then(Value::as_object);
    let Some(metrics) = metrics else {
        record.errors.push(
            SampleError::new(
                Stage::Score,
                ErrorClass::SnippetError,
                "`compute_evidence` must return `{\"metrics\": {name: {\"value\": number, \"reason\": text}}}`",
            )
            .with_detail(out.value.to_string()),
        );
        return;
    };
    for (name, entry) in metrics {
        match entry.get("value").filter(|v| v.is_number()) {
            Some(value) => {
                scores.values.insert(name.clone(), value.clone());
            }
            None => {
                record.errors.push(SampleError::new(
                    Stage::Score,
                    ErrorClass::SnippetError,
                    format!("metric `{name}` of `compute_evidence` has no numeric `value`"),
                ));
                return;
            }
        }
        if let Some(reason) = entry.get("reason").filter(|r| !r.is_null()) {
            scores.metadata.insert(name.clone(), reason.clone());
        }
    }
    if !out.captured.is_empty() {
        scores.metadata.insert("captured_output".into(), json!(out.captured));
    }
    record.scores.insert(EVIDENCE_SCORER.to_owned(), scores);
}

/// `python_all_samples` scores of a dataset task, computed once over every selected sample:
/// `compute_scores(samples)` returns one score dict per sample, in order.
pub async fn all_sample_scores(
    snippet: &crate::python::Snippet,
    python: &PythonRuntime,
    rows: &[Row],
    keyed: Option<&[String]>,
) -> Vec<Result<Scores, SampleError>> {
    let samples = match keyed {
        // `dataset.keys`: `{config key: [rows]}`.
        Some(keys) => {
            let mut by_key = Map::new();
            for key in keys {
                let column: Vec<Value> = rows
                    .iter()
                    .map(|r| r.get(key).cloned().unwrap_or(Value::Null))
                    .collect();
                by_key.insert(key.clone(), Value::Array(column));
            }
            Value::Object(by_key)
        }
        None => Value::Array(rows.iter().cloned().map(Value::Object).collect()),
    };
    let fail = |e: SampleError| rows.iter().map(|_| Err(e.clone())).collect();
    let out = match python.call(snippet, vec![samples], SNIPPET_TIMEOUT).await {
        Ok(out) => out,
        Err(e) => return fail(snippet_error(Stage::Score, &e)),
    };
    let Value::Array(items) = out.value else {
        return fail(SampleError::new(
            Stage::Score,
            ErrorClass::SnippetError,
            "`compute_scores(samples)` must return a list with one score dict per sample",
        ));
    };
    if items.len() < rows.len() {
        return fail(SampleError::new(
            Stage::Score,
            ErrorClass::SnippetError,
            format!(
                "`compute_scores(samples)` returned {} score(s) for {} sample(s)",
                items.len(),
                rows.len()
            ),
        ));
    }
    items
        .into_iter()
        .take(rows.len())
        .map(|item| scorer::python::scores_from(item, String::new()))
        .collect()
}

/// The runtime a spec's solver calls, for the progress display.
pub fn target(p: &Prepared) -> Option<&ModelRuntime> {
    p.model.as_deref()
}
