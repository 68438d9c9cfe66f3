//! `lfeval init [DIR]`: scaffold a project that validates, passes `model test` and runs with no
//! network. It never prompts: everything it asks is a flag, so it works the same in a script.

use std::path::{Path, PathBuf};

use crate::cli::InitArgs;
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::scaffold;

pub fn run(args: &InitArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let key = args.model.as_deref().unwrap_or("my-model");
    scaffold::check_key(key)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let files = scaffold::project_files(key);
    scaffold::write(&dir, &files, args.force)?;

    printer.outln(&format!("created an lfeval project in `{}`:", dir.display()));
    let listed: Vec<_> = files.iter().filter(|f| !f.about.is_empty()).collect();
    let width = listed
        .iter()
        .map(|f| f.path.display().to_string().len())
        .max()
        .unwrap_or(0);
    for file in listed {
        printer.outln(&format!(
            "  {:<width$}  {}",
            file.path.display().to_string(),
            file.about
        ));
    }
    printer.outln(&format!(
        "  {:<width$}  JSON Schemas the files' `yaml-language-server` lines name",
        format!("{}/", scaffold::SCHEMA_DIR)
    ));
    printer.outln("");
    printer.outln("next:");
    if dir != Path::new(".") {
        printer.outln(&format!("  cd {}", dir.display()));
    }
    let steps = [
        (
            format!("lfeval model test {key}"),
            "one request through the chain, offline",
        ),
        (
            "lfeval run -f run.yaml".to_owned(),
            "the evaluation, results in `runs/` (offline, the echo scores 0)",
        ),
    ];
    let width = steps.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    for (command, about) in steps {
        printer.outln(&format!("  {command:<width$}  # {about}"));
    }
    Ok(ExitStatus::Success)
}
