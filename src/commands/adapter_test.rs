//! `lfeval adapter test KEY`: render an adapter's templates offline, with no endpoint, and
//! check the result against the task's output shape. The way to unit-test an adapter.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::cli::AdapterTestArgs;
use crate::diagnostic::Diagnostic;
use crate::exit_status::ExitStatus;
use crate::model::adapter::{CompiledAdapter, ModelInfo};
use crate::model::io::{self, OutputError, Task};
use crate::printer::Printer;
use crate::project::Project;

pub fn run(project: &Project, args: &AdapterTestArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let adapter = project.adapter(&args.key)?;
    let task: Task = args.task.into();
    let input = match &args.input {
        Some(path) => read_json(path)?,
        None => task
            .default_input()
            .context("this task has no default input\nhint: pass `--input FILE` with a JSON model input")?,
    };
    let body = match &args.body {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?),
        None => None,
    };
    let info = ModelInfo {
        model_key: args.model_key.clone(),
        task,
    };
    let mut report = Map::new();
    report.insert("adapter".into(), json!(adapter.key));
    report.insert("input".into(), input.clone());

    let outcome = test(
        Arc::clone(&adapter),
        &input,
        body.as_deref(),
        args.status_code,
        &info,
        &mut report,
    );
    if args.json {
        if let Err(d) = &outcome {
            report.insert("error".into(), json!(d.to_string()));
        }
        report.insert("ok".into(), json!(outcome.is_ok()));
        printer.outln(&crate::redact::to_json_pretty(&report));
    } else {
        print_human(&report, body.is_some(), args.status_code, printer);
        match &outcome {
            Ok(()) => printer.errln(&printer.ok(&format!("adapter `{}` passed", adapter.key))),
            Err(d) => printer.error(&d.to_string()),
        }
    }
    Ok(if outcome.is_ok() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn test(
    adapter: Arc<crate::model::adapter::Adapter>,
    input: &Value,
    body: Option<&str>,
    status_code: u16,
    info: &ModelInfo,
    report: &mut Map<String, Value>,
) -> Result<(), Diagnostic> {
    io::validate_input(info.task, input).map_err(|e| Diagnostic::new(format!("invalid model input: {e}")))?;
    let compiled = CompiledAdapter::compile(adapter)?;
    let request = compiled.render_input(input, info, &Map::new())?;
    report.insert("request_body".into(), json!(request));
    let Some(body) = body else { return Ok(()) };
    report.insert("status_code".into(), json!(status_code));
    report.insert("response_body".into(), json!(body));
    let rendered = compiled.render_output(body, status_code, &Map::new(), info)?;
    report.insert("rendered_output".into(), json!(rendered));
    match io::parse_output(info.task, &rendered) {
        Ok(output) => {
            report.insert("output".into(), output.value);
            Ok(())
        }
        Err(OutputError::Reported(message)) => {
            report.insert("output".into(), json!({"error": message}));
            Err(Diagnostic::new(format!(
                "the output template reported an error: {message}"
            )))
        }
        Err(OutputError::Malformed { problem, rendered }) => {
            Err(Diagnostic::new(format!("invalid model output: {problem}"))
                .with_note(format!("rendered output:\n{rendered}")))
        }
    }
}

fn print_human(report: &Map<String, Value>, with_body: bool, status: u16, printer: &Printer) {
    let pretty = |v: &Value| crate::redact::to_json_pretty(v);
    let section = |title: &str| printer.outln(&printer.heading(&format!("── {title} ──")));
    section("process_input");
    printer.outln("input:");
    printer.outln(&pretty(report.get("input").unwrap_or(&Value::Null)));
    if let Some(request) = report.get("request_body").and_then(Value::as_str) {
        printer.outln("request body:");
        printer.outln(&pretty_text(request));
    }
    if !with_body {
        return;
    }
    section("process_output");
    if let Some(body) = report.get("response_body").and_then(Value::as_str) {
        printer.outln(&format!("response body (status {status}):"));
        printer.outln(body.trim_end());
    }
    if let Some(output) = report.get("output") {
        printer.outln("canonical output:");
        printer.outln(&pretty(output));
    } else if let Some(rendered) = report.get("rendered_output").and_then(Value::as_str) {
        printer.outln("rendered output:");
        printer.outln(rendered.trim_end());
    }
}

/// JSON text pretty-printed; anything else as it is.
pub fn pretty_text(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => crate::redact::to_json_pretty(&v),
        Err(_) => text.trim_end().to_owned(),
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("`{}` is not valid JSON", path.display()))
}
