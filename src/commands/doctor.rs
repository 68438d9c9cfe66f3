//! `lfeval doctor`: what the embedded Python looks like from inside.

use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::python::PythonRuntime;

pub fn run(python: &PythonRuntime, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let info = python.info();
    printer.outln(&format!("python      {}", info.version.lines().next().unwrap_or("")));
    printer.outln(&format!("executable  {}", info.executable));
    printer.outln(&format!("prefix      {}", info.prefix));
    printer.outln(&format!(
        "start-up    {:.1}ms",
        python.startup_time().as_secs_f64() * 1000.0
    ));
    match &info.httpx {
        Ok(version) => printer.outln(&format!("httpx       {version}")),
        Err(e) => printer.outln(&format!("httpx       not importable ({e})")),
    }
    printer.outln("sys.path");
    for p in &info.sys_path {
        printer.outln(&format!("  {p}"));
    }
    if info.httpx.is_err() {
        printer.warn("snippets that `import httpx` will fail to load\nhint: `python3 -m venv .venv && .venv/bin/pip install httpx`, then `--python-env .venv` or activate it");
    }
    Ok(ExitStatus::Success)
}
