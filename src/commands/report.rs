//! `lfeval report RUN_DIR [--baseline A] [--open]`: write the run's `report.html` again, with a
//! comparison view when a baseline is given, and open it in a browser.

use std::path::Path;

use anyhow::Context;

use crate::cli::ReportArgs;
use crate::exit_status::ExitStatus;
use crate::printer::Printer;

/// Significance level the report marks differences at.
const ALPHA: f64 = 0.05;

pub fn run(args: &ReportArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let written = crate::report::write(&args.run_dir, args.baseline.as_deref(), ALPHA)?;
    printer.outln(&format!("report: {}", written.path.display()));
    if args.open {
        open(&written.path)?;
    }
    Ok(ExitStatus::Success)
}

/// Opens `path` with `$BROWSER` when it is set, else with the system's default handler.
pub fn open(path: &Path) -> anyhow::Result<()> {
    if let Some(browser) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        let status = std::process::Command::new(&browser)
            .arg(path)
            .status()
            .with_context(|| format!("cannot start `$BROWSER` (`{}`)", browser.to_string_lossy()))?;
        anyhow::ensure!(status.success(), "`$BROWSER` exited with {status}");
        return Ok(());
    }
    open::that(path).with_context(|| format!("cannot open `{}`; hint: set `$BROWSER`", path.display()))
}
