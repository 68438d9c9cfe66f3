//! `lfeval model test KEY`: push one request through the whole chain and show every step, like
//! `lf model test`: (1) connection, (2) transform input, (3) run inference, (4) transform
//! output. Credentials are masked; a failure names its step and exits 1.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::cli::{GlobalArgs, ModelTestArgs};
use crate::diagnostic::format_duration;
use crate::exit_status::ExitStatus;
use crate::model::runtime::{Endpoint, ModelRuntime};
use crate::model::trace::{Failure, Step, Trace};
use crate::model::{Connection, Model};
use crate::printer::Printer;
use crate::python::PythonRuntime;

pub fn run(
    global: &GlobalArgs,
    args: &ModelTestArgs,
    python: &PythonRuntime,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    if !args.watch {
        return test_once(global, args, python, printer, &mut Vec::new());
    }
    let project_dir = super::project_dir(global);
    super::watch::run(&project_dir, printer, |watched| {
        test_once(global, args, python, printer, watched)
    })
}

/// One test; `watched` gets the files it read (model, snippet, adapter) as soon as it knows them.
fn test_once(
    global: &GlobalArgs,
    args: &ModelTestArgs,
    python: &PythonRuntime,
    printer: &Printer,
    watched: &mut Vec<std::path::PathBuf>,
) -> anyhow::Result<ExitStatus> {
    let mut project = super::load_project(global)?;
    let model = match &args.file {
        Some(file) => {
            let file = file
                .canonicalize()
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            project.models.remove(&args.key);
            project.load_model_file(&file);
            if let Some(err) = project
                .errors
                .iter()
                .find(|e| Path::new(&e.file) == file.strip_prefix(&project.root).unwrap_or(&file))
            {
                return Err(err.diagnostic.clone().into());
            }
            project.model(&args.key)?
        }
        None => project.model(&args.key)?,
    };
    let input = match &args.model_input {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("`{}` is not valid JSON", path.display()))?
        }
        None => model.task.default_input().with_context(|| {
            format!("model `{}` has task `{}`, which has no default test input\nhint: pass `--model-input FILE` with a JSON model input", model.key, model.task.as_str())
        })?,
    };

    // One attempt unless asked: a test should show the first failure, not hide it behind retries.
    let model = if args.retries {
        model
    } else {
        let mut once = (*model).clone();
        once.retry.max_attempts = 1;
        Arc::new(once)
    };
    watched.extend(model.sources.iter().map(|f| f.path.clone()));
    if let Ok(adapter) = project.adapter(&model.adapter.value) {
        watched.extend(adapter.sources.iter().map(|f| f.path.clone()));
    }
    project.register_inline_secrets();
    let mut report = Report::new(&model, args, printer);
    report.connection(&model);
    let built = project
        .register_model_secrets(&model)
        .and_then(|()| {
            project
                .adapter(&model.adapter.value)
                .map_err(|d| d.at_location(model.adapter.location.clone()))
        })
        .and_then(|adapter| ModelRuntime::new(Arc::clone(&model), adapter, Some(python), &project.secrets));
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(d) => return Ok(report.fail_connection(&d.to_string())),
    };
    report.connection_details(&runtime);

    let rt = crate::async_runtime::build()?;
    let (trace, result) = rt.block_on(runtime.infer(&input, &Map::new(), None));
    rt.shutdown_background();
    Ok(report.finish(&runtime, &input, &trace, result.as_ref().err()))
}

struct Report<'a> {
    printer: &'a Printer,
    json: bool,
    verbose: bool,
    doc: Map<String, Value>,
    key: String,
}

impl<'a> Report<'a> {
    fn new(model: &Model, args: &ModelTestArgs, printer: &'a Printer) -> Report<'a> {
        Report {
            printer,
            json: args.json,
            verbose: args.verbose,
            doc: Map::new(),
            key: model.key.clone(),
        }
    }

    fn heading(&self, n: usize, title: &str) {
        if !self.json {
            let text = format!("── {n}. {title} ");
            let rule = "─".repeat(72usize.saturating_sub(text.chars().count()));
            self.printer.outln(&self.printer.heading(&format!("{text}{rule}")));
        }
    }

    fn field(&self, name: &str, value: &str) {
        if !self.json {
            let mut lines = value.lines();
            self.printer.outln(&format!("{name:<13}{}", lines.next().unwrap_or("")));
            for line in lines {
                self.printer.outln(&format!("{:<13}{line}", ""));
            }
        }
    }

    fn block(&self, title: &str, text: &str) {
        if !self.json {
            self.printer.outln(&format!("{title}:"));
            for line in text.trim_end().lines() {
                self.printer.outln(&format!("  {line}"));
            }
        }
    }

    fn connection(&mut self, model: &Model) {
        self.heading(1, "connection");
        let mut step = Map::new();
        step.insert("key".into(), json!(model.key));
        step.insert("connection_type".into(), json!(model.connection.type_name()));
        step.insert("adapter".into(), json!(model.adapter.value));
        self.field("key", &model.key);
        self.field("type", model.connection.type_name());
        match &model.connection {
            Connection::CustomInference(c) => {
                self.field("snippet", &c.snippet.file);
                step.insert("snippet".into(), json!(c.snippet.file));
                let env: Map<String, Value> = c
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v.masked())))
                    .collect();
                let shown: Vec<String> = c
                    .environment
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.masked()))
                    .collect();
                self.field(
                    "environment",
                    if shown.is_empty() {
                        "(empty)".to_owned()
                    } else {
                        shown.join("\n")
                    }
                    .as_str(),
                );
                step.insert("environment".into(), Value::Object(env));
            }
            Connection::CustomConnection(c) => {
                self.field("url", &c.url.masked());
                step.insert("url".into(), json!(c.url.masked()));
                if let Some(key) = &c.api_key {
                    let shown = if key.is_sensitive() {
                        key.masked()
                    } else if key.masked().is_empty() {
                        String::new()
                    } else {
                        "<masked>".to_owned()
                    };
                    self.field("api key", &shown);
                    step.insert("api_key".into(), json!(shown));
                }
                if let Some(model_key) = &c.model_key {
                    let shown = model_key.masked();
                    self.field("model key", &shown);
                    step.insert("model_key".into(), json!(shown));
                }
                if !c.custom_headers.is_empty() {
                    let shown: Vec<String> = c
                        .custom_headers
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}: {}",
                                if v.is_sensitive() {
                                    v.masked()
                                } else {
                                    "<masked>".to_owned()
                                }
                            )
                        })
                        .collect();
                    self.field("headers", &shown.join("\n"));
                }
            }
        }
        self.field("adapter", &model.adapter.value);
        let timeout = format_duration(model.connection.timeout());
        self.field("timeout", &timeout);
        step.insert(
            "timeout_seconds".into(),
            json!(model.connection.timeout().as_secs_f64()),
        );
        let limits = format!(
            "rate_limit {}, max_concurrent_requests {}",
            model
                .rate_limit
                .map_or_else(|| "none".to_owned(), |r| format!("{r}/min")),
            model
                .max_concurrent_requests
                .map_or_else(|| format!("{} (default)", model.concurrency()), |n| n.to_string())
        );
        self.field("limits", &limits);
        step.insert("rate_limit".into(), json!(model.rate_limit));
        step.insert("max_concurrent_requests".into(), json!(model.concurrency()));
        self.doc.insert("connection".into(), Value::Object(step));
    }

    fn connection_details(&mut self, runtime: &ModelRuntime) {
        if let Endpoint::Snippet(s) = &runtime.endpoint {
            let kind = if s.snippet().is_async() { "async def" } else { "def" };
            let params = if s.snippet().arity() >= 3 {
                "body, environment, sample"
            } else {
                "body, environment"
            };
            self.field("function", &format!("{kind} run_inference({params})"));
            if let Some(step) = self.doc.get_mut("connection").and_then(Value::as_object_mut) {
                step.insert("function".into(), json!(format!("{kind} run_inference({params})")));
            }
        }
        if !self.json {
            // Nothing has been sent yet; step 3 is where the endpoint answers or not.
            let ready = match &runtime.endpoint {
                Endpoint::Snippet(_) => "snippet loaded",
                Endpoint::Http(_) => "client configured",
            };
            self.printer.outln(&self.printer.ok(ready));
        }
    }

    /// The model could not be set up (an unset variable, an unknown adapter, a snippet that
    /// does not compile): a configuration error, so exit 2 rather than a failed test.
    fn fail_connection(mut self, message: &str) -> ExitStatus {
        self.doc.insert("failed_step".into(), json!("connection"));
        self.doc.insert("error".into(), json!(message));
        self.done(false, message);
        ExitStatus::Error
    }

    fn finish(mut self, runtime: &ModelRuntime, input: &Value, trace: &Trace, failure: Option<&Failure>) -> ExitStatus {
        let stage = failure.map(|f| f.step);
        // 2. transform input
        self.heading(2, "transform input");
        let input_text = crate::redact::to_json_pretty(input);
        self.block("model input", &input_text);
        let adapter = &runtime.adapter.adapter;
        let template_title = |t: &crate::yaml::SourceText| format!("template ({}:{})", t.file, t.line_offset + 1);
        self.block(&template_title(&adapter.process_input), &adapter.process_input.text);
        if let Some(body) = &trace.request_body {
            self.block("request body", &super::adapter_test::pretty_text(body));
        }
        self.doc.insert(
            "transform_input".into(),
            json!({"input": input, "template": adapter.process_input.text, "request_body": trace.request_body}),
        );
        if stage == Some(Step::TransformInput) {
            return self.fail(failure);
        }

        // 3. run inference
        self.heading(3, "run inference");
        let attempts = trace.attempts.len();
        self.field(
            "latency",
            &format!(
                "{:.0}ms ({attempts} attempt{})",
                trace.timings.inference_ms,
                if attempts == 1 { "" } else { "s" }
            ),
        );
        for (i, attempt) in trace.attempts.iter().enumerate() {
            if let Some(err) = &attempt.error {
                self.field(&format!("attempt {}", i + 1), err);
            }
        }
        let mut step = Map::new();
        step.insert("latency_ms".into(), json!(trace.timings.inference_ms));
        step.insert("attempts".into(), json!(trace.attempts));
        match &runtime.endpoint {
            Endpoint::Http(http) => {
                self.field("url", http.url());
                let request_headers: Vec<String> =
                    http.masked_headers().iter().map(|(k, v)| format!("{k}: {v}")).collect();
                self.field("request", &request_headers.join("\n"));
                step.insert("request_headers".into(), json!(http.masked_headers()));
                if let Some(response) = &trace.response {
                    self.field("status", &response.status_code.to_string());
                    let headers: Vec<String> = response.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    self.field("response", &headers.join("\n"));
                    step.insert("status_code".into(), json!(response.status_code));
                    step.insert("response_headers".into(), json!(response.headers));
                }
            }
            Endpoint::Snippet(_) => {
                // A call that raised or timed out has no response, but may well have printed.
                let captured = match (&trace.response, failure) {
                    (Some(response), _) => response.captured.as_str(),
                    (None, Some(failure)) => failure.captured.as_str(),
                    (None, None) => "",
                };
                if captured.is_empty() {
                    // A snippet that raised has no response; what it printed goes with the error.
                    if stage != Some(Step::RunInference) {
                        self.field("output", "(the snippet printed nothing)");
                    }
                } else {
                    self.block("snippet output", captured);
                }
                step.insert("captured_output".into(), json!(captured));
            }
        }
        self.doc.insert("run_inference".into(), Value::Object(step));
        if stage == Some(Step::RunInference) {
            return self.fail(failure);
        }

        // 4. transform output
        self.heading(4, "transform output");
        let raw = trace.response.as_ref().map_or("", |r| r.body.as_str());
        self.block("raw output", &super::adapter_test::pretty_text(raw));
        self.block(&template_title(&adapter.process_output), &adapter.process_output.text);
        if let Some(output) = &trace.output {
            self.block("model output", &crate::redact::to_json_pretty(output));
        } else if let Some(rendered) = &trace.rendered_output {
            self.block("rendered output", rendered);
        }
        self.doc.insert("transform_output".into(), json!({"raw_output": raw, "template": adapter.process_output.text, "rendered_output": trace.rendered_output, "output": trace.output}));
        if stage == Some(Step::TransformOutput) {
            return self.fail(failure);
        }
        self.doc.insert("timings".into(), json!(trace.timings));
        let key = self.key.clone();
        self.done(true, &format!("model `{key}` passed all 4 steps"))
    }

    fn fail(mut self, failure: Option<&Failure>) -> ExitStatus {
        let Some(failure) = failure else {
            return self.done(false, "failed");
        };
        let step = match failure.step {
            Step::TransformInput => "transform input",
            Step::RunInference => "run inference",
            Step::TransformOutput => "transform output",
        };
        let mut message = match &failure.diagnostic {
            Some(d) => d.to_string(),
            None => failure.message.clone(),
        };
        if let Some(detail) = &failure.detail {
            let show = self.verbose || failure.step != Step::RunInference || detail.starts_with("captured output");
            if show {
                message.push_str(&format!("\n{}", detail.trim_end()));
            } else if let Some(captured) = detail.split_once("captured output:\n").map(|(_, c)| c) {
                message.push_str(&format!("\ncaptured output:\n{}", captured.trim_end()));
            }
        }
        if !self.verbose
            && failure.step == Step::RunInference
            && failure.detail.as_deref().is_some_and(|d| d.contains("Traceback"))
        {
            message.push_str("\nhint: `--verbose` shows the full Python traceback");
        }
        self.doc.insert("failed_step".into(), json!(failure.step));
        self.doc.insert("error".into(), json!(failure.message));
        if let Some(detail) = &failure.detail {
            self.doc.insert("error_detail".into(), json!(detail));
        }
        self.done(false, &format!("step `{step}` failed: {message}"))
    }

    fn done(mut self, ok: bool, message: &str) -> ExitStatus {
        self.doc.insert("ok".into(), json!(ok));
        if self.json {
            self.printer.outln(&crate::redact::to_json_pretty(&self.doc));
            if !ok {
                self.printer.error(message);
            }
        } else if ok {
            self.printer.outln(&self.printer.ok(message));
        } else {
            self.printer.error(message);
        }
        if ok { ExitStatus::Success } else { ExitStatus::Failure }
    }
}
