//! Merging the run directories of a sharded run (`lfeval run --shard I/N`) into one run
//! directory that holds what a single process would have written: every record once, in sample
//! order, and the summary and task logs recomputed from those records (never averaged from the
//! shards' summaries), so the metrics are bit-identical to a single run.
//!
//! Before anything is written the shards are checked: each was a shard of the same run (the same
//! fingerprint apart from the shard), each index is given once, every record belongs to the
//! shard it is in, and every sample the run selects is there. If samples are missing nothing is
//! written and [`MergeEnd::Missing`] names them, by specification and id.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::eval::fingerprint::{FINGERPRINT_FILE, Fingerprint};
use crate::eval::prepare::{Prepared, Samples, prepare_tasks};
use crate::eval::record::SampleRecord;
use crate::eval::run::{Outputs, selected_samples, write_outputs};
use crate::eval::run_dir::{InOrder, RunDir, RunInfo, SESSIONS_FILE, SUMMARY_FILE, Sessions};
use crate::eval::shard::Shard;
use crate::eval::summary::{ModelSummary, RunSummary};
use crate::python::PythonRuntime;
use crate::redact::redact;

/// What to merge, and where from.
pub struct MergeRequest<'a> {
    pub dirs: &'a [PathBuf],
    pub output: &'a Path,
    /// The run config; by default the one the first shard ran.
    pub run_file: Option<&'a Path>,
    pub project: Option<&'a Path>,
    pub env_file: Option<&'a Path>,
}

pub enum MergeEnd {
    Merged(Box<RunSummary>),
    /// Samples no shard recorded; nothing was written.
    Missing(Vec<MissingSamples>),
}

/// The samples of one specification that one shard should have recorded and did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingSamples {
    pub shard: Shard,
    /// The shard's run directory; `None` when no directory of that shard was given.
    pub dir: Option<PathBuf>,
    pub spec: String,
    /// In dataset order.
    pub sample_ids: Vec<String>,
}

struct ShardRun {
    shard: Shard,
    run: RunDir,
    fingerprint: Fingerprint,
}

pub fn merge(request: &MergeRequest<'_>, python: &PythonRuntime) -> anyhow::Result<MergeEnd> {
    let shards = open_shards(request.dirs)?;
    let count = shards[0].shard.count;
    let mut base = shards[0].fingerprint.clone();
    base.flags.shard = None;

    let first = &shards[0].run;
    let (run_file, project) = match request.run_file {
        Some(file) => (file.to_path_buf(), request.project.map(Path::to_path_buf)),
        None => (
            first
                .info()
                .run_file
                .clone()
                .with_context(|| format!("`{}` does not say which run config it ran", first.path().display()))?,
            Some(
                request
                    .project
                    .map_or_else(|| first.info().project_dir.clone(), Path::to_path_buf),
            ),
        ),
    };
    let config = crate::eval::run_config::load(&run_file, project.as_deref(), request.env_file)
        .context("hint: pass the run config the shards ran with `-f RUN.yaml`")?;
    let (prepared, _) = prepare_tasks(&config.scope(), python)?;
    let changes = base.task_file_changes(&config, &prepared)?;
    if !changes.is_empty() {
        bail!(
            "cannot merge: the run config here is not the one the shards ran\n{}\nhint: merge with the files the shards ran with (`-f RUN.yaml`, `-C DIR`)",
            changes
                .iter()
                .map(|c| format!("  - {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    let by_index: HashMap<u32, &ShardRun> = shards.iter().map(|s| (s.shard.index, s)).collect();
    check_records(&shards, &prepared)?;
    let missing = missing_samples(&prepared, count, &by_index, &shards[0].run)?;
    if !missing.is_empty() {
        return Ok(MergeEnd::Missing(missing));
    }

    let started_at = shards
        .iter()
        .map(|s| s.run.info().started_at)
        .min()
        .unwrap_or(first.info().started_at);
    let info = RunInfo {
        project_dir: config.project.root.clone(),
        run_file: Some(config.file.clone()),
        started_at,
    };
    let out = RunDir::create(request.output, &info, first.run_config())?;
    out.write_json(FINGERPRINT_FILE, &base)?;
    for p in &prepared {
        append_in_order(&out, &shards, p)?;
    }
    out.finish()?;
    let sessions = merge_sessions(&shards, &out, started_at)?;

    let runtime = crate::async_runtime::build()?;
    let prepared: Vec<Arc<Prepared>> = prepared.into_iter().map(Arc::new).collect();
    let started: HashSet<String> = prepared.iter().map(|p| p.spec.key.clone()).collect();
    let outputs = Outputs {
        run_dir: &out,
        python,
        evaluation: &config.evaluation.key,
        sessions,
        models: shard_models(&shards),
        datasets: base.datasets(&config, prepared.iter().map(|p| &**p)),
        tally: None,
    };
    let summary = write_outputs(&prepared, &started, &outputs, &runtime, &|| false)?;
    runtime.shutdown_background();
    summary
        .map(|s| MergeEnd::Merged(Box::new(s)))
        .context("internal error: the merge produced no summary")
}

/// Opens every shard, sorted by index, and checks that they are distinct shards of one run.
fn open_shards(dirs: &[PathBuf]) -> anyhow::Result<Vec<ShardRun>> {
    let mut shards = Vec::new();
    for dir in dirs {
        let run = RunDir::open_read_only(dir).with_context(|| format!("cannot read shard `{}`", dir.display()))?;
        let fingerprint = Fingerprint::read(dir)?.with_context(|| {
            format!(
                "`{}` has no `{FINGERPRINT_FILE}`; hint: merge takes run directories written by `lfeval run --shard I/N`",
                dir.display()
            )
        })?;
        let Some(shard) = fingerprint.flags.shard else {
            bail!(
                "`{}` is not a shard: it ran without `--shard`; hint: merge takes the run directories of `lfeval run --shard I/N`",
                dir.display()
            );
        };
        shards.push(ShardRun {
            shard,
            run,
            fingerprint,
        });
    }
    shards.sort_by_key(|s| s.shard.index);
    let first = &shards[0];
    for pair in shards.windows(2) {
        if pair[0].shard.index == pair[1].shard.index {
            bail!(
                "cannot merge: shard {} is given twice (`{}` and `{}`); hint: give each shard's directory once",
                pair[1].shard,
                pair[0].run.path().display(),
                pair[1].run.path().display()
            );
        }
    }
    let mut base = first.fingerprint.clone();
    base.flags.shard = None;
    for other in &shards[1..] {
        if other.shard.count != first.shard.count {
            bail!(
                "cannot merge: `{}` is shard {} but `{}` is shard {}; hint: every shard of a run is split the same number of ways",
                first.run.path().display(),
                first.shard,
                other.run.path().display(),
                other.shard
            );
        }
        let mut theirs = other.fingerprint.clone();
        theirs.flags.shard = None;
        let changes = base.changes(&theirs);
        if !changes.is_empty() {
            bail!(
                "cannot merge: `{}` and `{}` are not shards of the same run\n{}",
                first.run.path().display(),
                other.run.path().display(),
                changes
                    .iter()
                    .map(|c| format!("  - {c}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    Ok(shards)
}

/// Every record must be a sample the run selects, in the shard that owns it.
fn check_records(shards: &[ShardRun], prepared: &[Prepared]) -> anyhow::Result<()> {
    let specs: HashSet<&str> = prepared.iter().map(|p| p.spec.key.as_str()).collect();
    for s in shards {
        for (spec, sample_id) in s.run.recorded_samples()? {
            if !specs.contains(spec.as_str()) {
                bail!(
                    "cannot merge: `{}` holds sample `{sample_id}` of `{spec}`, which is not a task specification of this run",
                    s.run.path().display()
                );
            }
            let owner = Shard::of(&sample_id, s.shard.count);
            if owner != s.shard.index {
                bail!(
                    "cannot merge: `{}` is shard {} but holds sample `{sample_id}` of `{spec}`, which belongs to shard {owner}/{}",
                    s.run.path().display(),
                    s.shard,
                    s.shard.count
                );
            }
        }
    }
    Ok(())
}

/// The samples the run selects that the shard owning them did not record, grouped by shard and
/// specification.
/// `sources` answers for a dataset; a specification whose samples are an earlier one's records
/// asks every shard.
fn missing_samples(
    prepared: &[Prepared],
    count: u32,
    by_index: &HashMap<u32, &ShardRun>,
    sources: &RunDir,
) -> anyhow::Result<Vec<MissingSamples>> {
    let mut missing: Vec<MissingSamples> = Vec::new();
    let mut selected: HashSet<(String, String)> = HashSet::new();
    // Each shard numbered the earlier specification's records it had, so a specification that
    // reads them selects, across shards, what every shard's records select.
    let mut shards: Vec<&ShardRun> = by_index.values().copied().collect();
    shards.sort_by_key(|s| s.shard.index);
    for p in prepared {
        let mut groups: Vec<MissingSamples> = Vec::new();
        let sources: Vec<&RunDir> = match p.samples {
            Samples::TaskResult(_) => shards.iter().map(|s| &s.run).collect(),
            _ => vec![sources],
        };
        let samples = sources.into_iter().map(|source| selected_samples(p, source));
        for sample in samples.collect::<Result<Vec<_>, _>>()?.into_iter().flatten() {
            let sample = sample?;
            selected.insert((p.spec.key.clone(), redact(&sample.id).into_owned()));
            let shard = Shard {
                index: Shard::of(&sample.id, count),
                count,
            };
            let run = by_index.get(&shard.index);
            if run.is_some_and(|s| s.run.has_sample(&p.spec.key, &sample.id, sample.index as u64)) {
                continue;
            }
            match groups.iter_mut().find(|g| g.shard == shard) {
                Some(group) => group.sample_ids.push(sample.id),
                None => groups.push(MissingSamples {
                    shard,
                    dir: run.map(|s| s.run.path().to_path_buf()),
                    spec: p.spec.key.clone(),
                    sample_ids: vec![sample.id],
                }),
            }
        }
        groups.sort_by_key(|g| g.shard.index);
        missing.extend(groups);
    }
    // A record of a sample the run no longer selects means the dataset or selection changed.
    for s in by_index.values() {
        if let Some((spec, id)) = s.run.recorded_samples()?.into_iter().find(|k| !selected.contains(k)) {
            bail!(
                "cannot merge: `{}` holds sample `{id}` of `{spec}`, which this run does not select",
                s.run.path().display()
            );
        }
    }
    Ok(missing)
}

/// Appends one specification's records from every shard, in sample order (dataset position,
/// then id), one record per shard in memory.
fn append_in_order(out: &RunDir, shards: &[ShardRun], p: &Prepared) -> anyhow::Result<()> {
    type Stream = Box<dyn Iterator<Item = anyhow::Result<SampleRecord>>>;
    let spec = &p.spec.key;
    // Each shard numbered the earlier specification's records it had; the merged run numbers
    // them as one run does, across every shard, so that an index names one sample again.
    let positions = match &p.samples {
        Samples::TaskResult(source) => Some(std::rc::Rc::new(positions(out, source)?)),
        _ => None,
    };
    let mut streams: Vec<std::iter::Peekable<Stream>> = Vec::new();
    for s in shards {
        let records = s.run.records_in_order(spec)?.map(|r| r.map_err(anyhow::Error::from));
        let stream: Stream = match &positions {
            None => Box::new(records),
            Some(positions) => {
                let positions = std::rc::Rc::clone(positions);
                Box::new(records.map(move |record| {
                    let mut record = record?;
                    record.sample_index = *positions.get(&record.sample_id).with_context(|| {
                        format!(
                            "internal error: sample `{}` of `{}` has no earlier record",
                            record.sample_id, record.spec
                        )
                    })?;
                    Ok(record)
                }))
            }
        };
        streams.push(stream.peekable());
    }
    loop {
        // `(stream, (sample index, sample id, trial, part))` of the next record in sample order.
        type Position = (u64, String, Option<u32>, Option<u32>);
        let mut next: Option<(usize, Position)> = None;
        for (i, stream) in streams.iter_mut().enumerate() {
            match stream.peek() {
                None => {}
                Some(Err(_)) => {
                    if let Some(Err(e)) = stream.next() {
                        return Err(e);
                    }
                }
                Some(Ok(record)) => {
                    let key = (record.sample_index, record.sample_id.clone(), record.trial, record.part);
                    if next.as_ref().is_none_or(|(_, best)| key < *best) {
                        next = Some((i, key));
                    }
                }
            }
        }
        let Some((i, _)) = next else { return Ok(()) };
        if let Some(Ok(record)) = streams[i].next() {
            out.append(&record)?;
        }
    }
}

/// The position of each of `source`'s merged records in its sample order, by key: what a
/// specification reading them numbers its samples by.
fn positions(out: &RunDir, source: &str) -> anyhow::Result<HashMap<String, u64>> {
    let mut positions = HashMap::new();
    for (position, line) in out.lines_in_order(source, |_| true)?.enumerate() {
        if let InOrder::Known(identity) = line? {
            positions.insert(identity.key(), position as u64);
        }
    }
    Ok(positions)
}

/// Every shard's sessions, for the record, and what the summary says of them: the first start,
/// the longest shard's wall time (they ran side by side) and the number of sessions.
fn merge_sessions(shards: &[ShardRun], out: &RunDir, started_at: jiff::Timestamp) -> anyhow::Result<Sessions> {
    let mut lines = String::new();
    let mut sessions = Sessions {
        first_started_at: started_at.to_string(),
        wall_time_s: 0.0,
        count: 0,
    };
    for s in shards {
        let path = s.run.path().join(SESSIONS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => lines.push_str(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        }
        let theirs = s.run.sessions()?;
        sessions.wall_time_s = sessions.wall_time_s.max(theirs.wall_time_s);
        sessions.count += theirs.count;
    }
    let path = out.path().join(SESSIONS_FILE);
    std::fs::write(&path, lines).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(sessions)
}

/// The models the shards called, from their summaries (every shard ran the same config, but a
/// shard whose samples never reached a judge may not list it).
fn shard_models(shards: &[ShardRun]) -> Vec<ModelSummary> {
    let mut models: Vec<ModelSummary> = Vec::new();
    for shard in shards {
        let Ok(text) = std::fs::read_to_string(shard.run.path().join(SUMMARY_FILE)) else {
            continue;
        };
        let Ok(summary) = serde_json::from_str::<RunSummary>(&text) else {
            continue;
        };
        for model in summary.models {
            if !models.iter().any(|m| m.key == model.key) {
                models.push(model);
            }
        }
    }
    models.sort_by(|a, b| a.key.cmp(&b.key));
    models
}
