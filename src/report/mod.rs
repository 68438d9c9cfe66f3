//! What people look at after a run: `report.html` (one self-contained page: summary with 95%
//! intervals, charts, a paged sample table and every sample's evidence), the comparison of two
//! runs, the runs under a project, and the CI outputs (JUnit, Markdown).
//!
//! Data flows from a run directory only: [`finished_run`] reads its files (records as a
//! [`record_view`]), [`series`] keeps one
//! small row per sample and each metric's per-sample values, [`stats`] computes intervals and
//! tests, [`meta`], [`index`] and [`comparison`] build the page's data, and [`encode`] streams it
//! into the template. [`junit`] and [`markdown`] render gates for CI; [`runs`] lists run
//! directories from their summaries alone.

pub mod comparison;
pub mod encode;
pub mod finished_run;
pub mod index;
pub mod junit;
pub mod markdown;
pub mod meta;
pub mod record_view;
pub mod runs;
pub mod series;
pub mod stats;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::report::comparison::Comparison;
use crate::report::encode::{CHUNK_SIZE, PageData};
use crate::report::finished_run::{FinishedRun, OrderedRecords, RunReadError};
use crate::report::index::Index;
use crate::report::record_view::RecordView;
use crate::report::series::SampleTable;

/// The report's file name in a run directory.
pub const REPORT_FILE: &str = "report.html";

/// A finished run with its samples folded into a [`SampleTable`].
pub struct Loaded {
    pub run: FinishedRun,
    pub table: SampleTable,
}

/// Hands every record to `each` in report order, with its specification's position.
fn scan(records: &mut OrderedRecords, mut each: impl FnMut(usize, &RecordView)) -> Result<(), RunReadError> {
    let mut buf = Vec::new();
    let mut spec = 0;
    let mut left = records.per_spec.first().copied().unwrap_or(0);
    for i in 0..records.len() {
        while left == 0 {
            spec += 1;
            left = records.per_spec[spec];
        }
        left -= 1;
        let record = records.record(i, &mut buf)?;
        each(spec, &record);
    }
    Ok(())
}

/// Reads a finished run and its samples (for a comparison).
pub fn load(dir: &Path) -> Result<Loaded, RunReadError> {
    let run = FinishedRun::open(dir)?;
    let mut table = SampleTable::new(&run.summary);
    let mut records = run.records()?;
    table.reserve(&records.per_spec);
    scan(&mut records, |spec, record| {
        table.add(spec, record, &index::preview(&index::output_text(record)));
    })?;
    table.finish();
    Ok(Loaded { run, table })
}

/// What [`write`] wrote, with the data it computed on the way.
pub struct Written {
    pub path: PathBuf,
    pub loaded: Loaded,
    pub comparison: Option<Comparison>,
}

/// Writes `RUN_DIR/report.html`, compared against `baseline` when one is given.
pub fn write(dir: &Path, baseline: Option<&Path>, alpha: f64) -> anyhow::Result<Written> {
    let run = FinishedRun::open(dir)?;
    let python_models: HashMap<String, bool> = run
        .summary
        .models
        .iter()
        .map(|m| (m.key.clone(), m.connection_type == "custom_inference"))
        .collect();
    let mut table = SampleTable::new(&run.summary);
    let mut records = run.records()?;
    table.reserve(&records.per_spec);
    let mut index = Index::new(dir, python_models).context("cannot start the report's index")?;
    let mut index_error = None;
    // The records' tags do not depend on the index: they are compressed on a second thread,
    // into an unnamed file beside the report, while this one builds the index.
    let mut chunk_reader = records.reader()?;
    let (scanned, chunks) = std::thread::scope(|scope| {
        let encoder = scope.spawn(move || -> anyhow::Result<File> {
            let mut out = BufWriter::new(tempfile::tempfile_in(dir)?);
            encode::write_chunks(&mut out, &mut chunk_reader)?;
            let mut file = out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
            file.rewind()?;
            Ok(file)
        });
        let scanned = scan(&mut records, |spec, record| {
            let output = index::preview(&index::output_text(record));
            table.add(spec, record, &output);
            if index_error.is_none()
                && let Err(e) = index.add(spec, record, &index::preview(&index::input_text(record)), &output)
            {
                index_error = Some(e);
            }
        });
        let chunks = encoder
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error: the report's encoder stopped")));
        (scanned, chunks)
    });
    scanned?;
    if let Some(e) = index_error {
        return Err(anyhow::Error::new(e).context("cannot write the report's index"));
    }
    let mut chunks = std::io::BufReader::new(chunks.context("cannot encode the run's records")?);
    table.finish();
    index.pass = table
        .specs
        .iter()
        .flat_map(|t| (0..t.rows.len()).map(|r| t.pass_of(r).map(u8::from)))
        .collect();
    let meta = meta::build(&run, &table, CHUNK_SIZE, records.len());
    let comparison = match baseline {
        Some(base) => {
            let a = load(base).with_context(|| format!("cannot read the baseline run `{}`", base.display()))?;
            Some(comparison::compare(&a.run, &a.table, &run, &table, alpha, Vec::new()))
        }
        None => None,
    };
    let page_comparison = comparison.as_ref().map(Comparison::page);
    let path = dir.join(REPORT_FILE);
    let temp = dir.join(format!(".{REPORT_FILE}.{}.tmp", std::process::id()));
    let written = (|| -> anyhow::Result<()> {
        let mut out = BufWriter::new(File::create(&temp)?);
        let data = PageData {
            meta: &meta,
            index,
            comparison: page_comparison.as_ref(),
        };
        encode::write_page(&mut out, data, &mut chunks)?;
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&temp, &path)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.context(format!("cannot write `{}`", path.display())));
    }
    drop(page_comparison);
    Ok(Written {
        path,
        loaded: Loaded { run, table },
        comparison,
    })
}
