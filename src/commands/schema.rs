//! `lfeval schema [KIND]`: print one entity kind's JSON Schema, or write every kind's into a
//! folder (`--output schema` regenerates the repository's copies).

use anyhow::Context;

use crate::cli::SchemaArgs;
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::schema::{SchemaKind, generate};

pub fn run(args: &SchemaArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    if let Some(dir) = &args.output {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        for kind in SchemaKind::ALL {
            let path = dir.join(kind.file_name());
            std::fs::write(&path, generate(kind)).with_context(|| format!("cannot write `{}`", path.display()))?;
            printer.outln(&format!("wrote {}", path.display()));
        }
    } else if let Some(kind) = args.kind {
        printer.out(&generate(kind));
    }
    Ok(ExitStatus::Success)
}
