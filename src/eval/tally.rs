//! What this session has recorded, per task specification, kept as each record is appended:
//! the summary's [`Fold`] and the task log's [`EvidenceSpool`]. The end of a run then reads back
//! only the records earlier sessions wrote, instead of parsing every line it has just written.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::eval::evidence_spool::{EvidenceSpool, RenderedEvidence};
use crate::eval::record::SampleRecord;
use crate::eval::run_dir::RunDir;
use crate::eval::summary::Fold;
use crate::redact::{redact, redact_value_in_place};

/// One specification's part of the tally.
pub struct SpecTally {
    pub fold: Fold,
    /// Absent until its first record.
    pub spool: Option<EvidenceSpool>,
}

/// Every specification's tally, fed from any thread.
pub struct Tally {
    specs: HashMap<String, Mutex<Option<SpecTally>>>,
}

impl Tally {
    /// An empty tally for these specifications, each with its summary fold.
    pub fn new(specs: impl IntoIterator<Item = (String, Fold)>) -> Tally {
        Tally {
            specs: specs
                .into_iter()
                .map(|(key, fold)| {
                    let tally = SpecTally { fold, spool: None };
                    (key, Mutex::new(Some(tally)))
                })
                .collect(),
        }
    }

    /// Makes room for `records` more records of `spec`.
    pub fn reserve(&self, spec: &str, records: usize) {
        if let Some(slot) = self.specs.get(spec)
            && let Some(tally) = slot.lock().unwrap_or_else(PoisonError::into_inner).as_mut()
        {
            tally.fold.reserve(records);
        }
    }

    /// Takes in a record that was just appended to `run_dir`'s `samples.jsonl`.
    pub fn add(&self, run_dir: &RunDir, mut record: SampleRecord) -> anyhow::Result<()> {
        let Some(slot) = self.specs.get(&record.spec) else {
            anyhow::bail!("internal error: no tally for specification `{}`", record.spec);
        };
        // Rendering and masking happen before the lock: samples of one specification finish on
        // every worker at once.
        let evidence = RenderedEvidence::of(&record)?;
        mask_what_a_summary_keeps(&mut record);
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tally) = slot.as_mut() else {
            anyhow::bail!("internal error: specification `{}` was tallied already", record.spec);
        };
        let spool = match &mut tally.spool {
            Some(spool) => spool,
            None => tally.spool.insert(EvidenceSpool::create(run_dir.path())?),
        };
        spool.add(evidence)?;
        tally.fold.add(record);
        Ok(())
    }

    /// A specification's tally, for the end of the run; `None` the second time.
    pub fn take(&self, spec: &str) -> Option<SpecTally> {
        self.specs
            .get(spec)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Masks the strings a [`Fold`] keeps (ids, failure messages, scores), as they would read back
/// from the record's line, which is masked as it is written.
fn mask_what_a_summary_keeps(record: &mut SampleRecord) {
    fn mask(text: &mut String) {
        if let std::borrow::Cow::Owned(masked) = redact(text) {
            *text = masked;
        }
    }
    mask(&mut record.sample_id);
    for error in &mut record.errors {
        mask(&mut error.message);
        for text in [
            &mut error.scorer,
            &mut error.model,
            &mut error.location,
            &mut error.detail,
        ]
        .into_iter()
        .flatten()
        {
            mask(text);
        }
    }
    if let Some(excluded_by) = &mut record.excluded_by {
        mask(excluded_by);
    }
    for scores in record.scores.values_mut() {
        for map in [&mut scores.values, &mut scores.metadata] {
            let mut value = serde_json::Value::Object(std::mem::take(map));
            redact_value_in_place(&mut value);
            if let serde_json::Value::Object(masked) = value {
                *map = masked;
            }
        }
    }
}
