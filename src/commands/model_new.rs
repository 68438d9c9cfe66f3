//! `lfeval model new KEY --url URL [--adapter KEY]`: add a model the way `init` writes one, a
//! model file and a snippet with a module-level client, pointed at `URL`.

use crate::cli::{GlobalArgs, ModelNewArgs};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::scaffold::{self, ModelPlan};

pub fn run(global: &GlobalArgs, args: &ModelNewArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    scaffold::check_key(&args.key)?;
    let root = super::project_dir(global);
    let plan = ModelPlan {
        key: &args.key,
        url: &args.url,
        adapter: &args.adapter,
    };
    let mut files = scaffold::model_files(&plan);
    files.extend(scaffold::schema_files());
    scaffold::write(&root, &files, args.force)?;
    for file in files.iter().filter(|f| !f.about.is_empty()) {
        printer.outln(&format!("created {}  {}", file.path.display(), file.about));
    }
    printer.outln(&format!("next: lfeval model test {}", args.key));
    Ok(ExitStatus::Success)
}
