//! [`EvidenceSpool`]: one specification's task-log evidence, rendered as its records are
//! appended and read back in sample order at the end of the run, so that the task log never
//! parses `samples.jsonl` for what this session wrote.
//!
//! Records finish in about sample order, not exactly. The evidence goes to an unnamed file as it
//! comes; where each piece is, with its place in sample order, goes through a small heap into a
//! second one in sorted runs (replacement selection: a record out of order by less than the
//! heap's size stays in its run, so a run is usually one run). Sealing merges the runs. Memory is
//! the heap's, whatever the number of records; an index of every record cost ~55 bytes a sample.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::eval::record::{RecordIdentity, SampleRecord};
use crate::eval::task_log::render_evidence;
use crate::redact::redact;

/// Records the heap holds before the smallest is written out: a record may finish this many
/// places late without starting a run of its own.
const HEAP: usize = 4096;

/// A record's place in sample order: the order [`crate::eval::run_dir::RunDir::lines_in_order`]
/// reads a specification's lines in (the fields compare in this order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    sample_index: u64,
    /// As written: masked, as `samples.jsonl` has it.
    sample_id: Box<str>,
    trial: Option<u32>,
    part: Option<u32>,
}

impl Place {
    fn cmp_identity(&self, identity: &RecordIdentity) -> Ordering {
        (self.sample_index, &*self.sample_id, self.trial, self.part).cmp(&(
            identity.sample_index,
            identity.sample_id.as_str(),
            identity.trial,
            identity.part,
        ))
    }
}

/// One record's place and where its evidence is in the evidence file.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    place: Place,
    offset: u64,
    len: u32,
}

/// An entry of the heap, in the run it will be written to.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    run: u32,
    entry: Entry,
}

/// A record's evidence for an [`EvidenceSpool`], rendered before the spool is locked.
pub struct RenderedEvidence {
    place: Place,
    evidence: Vec<u8>,
}

impl RenderedEvidence {
    pub fn of(record: &SampleRecord) -> anyhow::Result<RenderedEvidence> {
        let mut evidence = Vec::new();
        render_evidence(record, &mut evidence)?;
        Ok(RenderedEvidence {
            place: Place {
                sample_index: record.sample_index,
                sample_id: redact(&record.sample_id).into_owned().into_boxed_str(),
                trial: record.trial,
                part: record.part,
            },
            evidence,
        })
    }
}

/// One specification's evidence as its records are appended.
pub struct EvidenceSpool {
    evidence: BufWriter<File>,
    evidence_len: u64,
    entries: BufWriter<File>,
    entries_len: u64,
    heap: BinaryHeap<Reverse<Pending>>,
    /// The run being written, and the place last written to it.
    run: u32,
    last: Option<Place>,
    /// Each run's span of the entries file.
    runs: Vec<(u64, u64)>,
    count: usize,
}

fn spool_file(dir: &Path) -> anyhow::Result<BufWriter<File>> {
    let file =
        tempfile::tempfile_in(dir).with_context(|| format!("cannot create a spool file in `{}`", dir.display()))?;
    Ok(BufWriter::with_capacity(64 * 1024, file))
}

/// The spool's files are unnamed: nothing is left behind, even by a process that is killed.
fn spool_error(error: io::Error) -> anyhow::Error {
    anyhow::Error::new(error).context("cannot write the task log's spool")
}

impl EvidenceSpool {
    /// A spool whose files are in `dir` (they have no name there).
    pub fn create(dir: &Path) -> anyhow::Result<EvidenceSpool> {
        Ok(EvidenceSpool {
            evidence: spool_file(dir)?,
            evidence_len: 0,
            entries: spool_file(dir)?,
            entries_len: 0,
            heap: BinaryHeap::with_capacity(HEAP + 1),
            run: 0,
            last: None,
            runs: Vec::new(),
            count: 0,
        })
    }

    /// Adds the evidence of a record that was just appended to `samples.jsonl`.
    pub fn add(&mut self, rendered: RenderedEvidence) -> anyhow::Result<()> {
        let RenderedEvidence { place, evidence } = rendered;
        let len = u32::try_from(evidence.len()).context("a sample's evidence is over 4 GiB")?;
        self.evidence.write_all(&evidence).map_err(spool_error)?;
        let entry = Entry {
            place,
            offset: self.evidence_len,
            len,
        };
        self.evidence_len += u64::from(len);
        self.count += 1;
        // Behind what the run has written already: it goes into the next run.
        let run = match &self.last {
            Some(last) if entry.place < *last => self.run + 1,
            _ => self.run,
        };
        self.heap.push(Reverse(Pending { run, entry }));
        if self.heap.len() > HEAP {
            self.write_smallest()?;
        }
        Ok(())
    }

    fn write_smallest(&mut self) -> anyhow::Result<()> {
        let Some(Reverse(Pending { run, entry })) = self.heap.pop() else {
            return Ok(());
        };
        if run != self.run || self.runs.is_empty() {
            self.run = run;
            self.runs.push((self.entries_len, self.entries_len));
        }
        self.entries_len += write_entry(&mut self.entries, &entry).map_err(spool_error)?;
        if let Some(span) = self.runs.last_mut() {
            span.1 = self.entries_len;
        }
        self.last = Some(entry.place);
        Ok(())
    }

    /// Writes out what the heap holds and makes the evidence readable in sample order.
    pub fn seal(mut self) -> anyhow::Result<SealedSpool> {
        while !self.heap.is_empty() {
            self.write_smallest()?;
        }
        let into_file = |writer: BufWriter<File>| -> anyhow::Result<File> {
            let mut file = writer.into_inner().map_err(|e| spool_error(e.into_error()))?;
            file.rewind().map_err(spool_error)?;
            Ok(file)
        };
        let entries = Arc::new(into_file(self.entries)?);
        let evidence = into_file(self.evidence)?;
        let mut merge = Merge {
            runs: self
                .runs
                .iter()
                .map(|&(start, end)| {
                    BufReader::with_capacity(
                        16 * 1024,
                        Span {
                            file: Arc::clone(&entries),
                            at: start,
                            end,
                        },
                    )
                })
                .collect(),
            heads: BinaryHeap::new(),
        };
        for run in 0..merge.runs.len() {
            merge.refill(run).map_err(read_error)?;
        }
        Ok(SealedSpool {
            len: self.count,
            inner: RefCell::new(Sealed {
                merge,
                evidence: BufReader::with_capacity(64 * 1024, evidence),
                at: Some(0),
                buf: Vec::new(),
            }),
        })
    }
}

/// The entry's fixed part: sample index, offset, length, trial, part, which of the two are
/// there, the id's length.
const ENTRY_HEAD: usize = 8 + 8 + 4 + 4 + 4 + 1 + 4;

fn write_entry(out: &mut impl Write, entry: &Entry) -> io::Result<u64> {
    let place = &entry.place;
    let id = place.sample_id.as_bytes();
    let id_len = u32::try_from(id.len()).map_err(|_| io::Error::other("a sample id is over 4 GiB"))?;
    let mut head = [0u8; ENTRY_HEAD];
    head[0..8].copy_from_slice(&place.sample_index.to_le_bytes());
    head[8..16].copy_from_slice(&entry.offset.to_le_bytes());
    head[16..20].copy_from_slice(&entry.len.to_le_bytes());
    head[20..24].copy_from_slice(&place.trial.unwrap_or(0).to_le_bytes());
    head[24..28].copy_from_slice(&place.part.unwrap_or(0).to_le_bytes());
    head[28] = u8::from(place.trial.is_some()) | u8::from(place.part.is_some()) << 1;
    head[29..33].copy_from_slice(&id_len.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(id)?;
    Ok((ENTRY_HEAD + id.len()) as u64)
}

fn read_entry(input: &mut impl Read) -> io::Result<Entry> {
    let mut head = [0u8; ENTRY_HEAD];
    input.read_exact(&mut head)?;
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let u64_at = |i: usize| u64::from_le_bytes(std::array::from_fn(|k| head[i + k]));
    let mut id = vec![0u8; u32_at(29) as usize];
    input.read_exact(&mut id)?;
    let sample_id = String::from_utf8(id).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Entry {
        place: Place {
            sample_index: u64_at(0),
            sample_id: sample_id.into_boxed_str(),
            trial: (head[28] & 1 != 0).then(|| u32_at(20)),
            part: (head[28] & 2 != 0).then(|| u32_at(24)),
        },
        offset: u64_at(8),
        len: u32_at(16),
    })
}

/// One run of the entries file, read where it is: runs share the file, and a shared file
/// position would move under each of them.
struct Span {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for Span {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The runs merged: each run's smallest unread entry, the smallest on top.
struct Merge {
    runs: Vec<BufReader<Span>>,
    heads: BinaryHeap<Reverse<(Entry, usize)>>,
}

impl Merge {
    /// Reads run `run`'s next entry into the heads, if it has one.
    fn refill(&mut self, run: usize) -> io::Result<()> {
        let reader = &mut self.runs[run];
        if reader.get_ref().at == reader.get_ref().end && reader.buffer().is_empty() {
            return Ok(());
        }
        let entry = read_entry(reader)?;
        self.heads.push(Reverse((entry, run)));
        Ok(())
    }

    fn peek(&self) -> Option<&Entry> {
        self.heads.peek().map(|Reverse((entry, _))| entry)
    }

    fn pop(&mut self) -> io::Result<Option<Entry>> {
        let Some(Reverse((entry, run))) = self.heads.pop() else {
            return Ok(None);
        };
        self.refill(run)?;
        Ok(Some(entry))
    }
}

fn read_error(error: io::Error) -> anyhow::Error {
    anyhow::Error::new(error).context("cannot read the task log's spool")
}

/// A sealed spool: its evidence in sample order, each record's once.
pub struct SealedSpool {
    len: usize,
    /// Behind a cell: the run's lines ask [`SealedSpool::contains`] while they are read, and
    /// the loop over them copies.
    inner: RefCell<Sealed>,
}

struct Sealed {
    merge: Merge,
    evidence: BufReader<File>,
    /// Where the evidence reader is: mostly where the last copy ended.
    at: Option<u64>,
    buf: Vec<u8>,
}

impl Sealed {
    fn copy(&mut self, entry: &Entry, each: &mut impl FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let read = (|| -> io::Result<()> {
            match self.at {
                Some(at) if at == entry.offset => {}
                Some(at) => self.evidence.seek_relative(entry.offset as i64 - at as i64)?,
                None => {
                    self.evidence.seek(SeekFrom::Start(entry.offset))?;
                }
            }
            self.buf.resize(entry.len as usize, 0);
            self.evidence.read_exact(&mut self.buf)?;
            self.at = Some(entry.offset + u64::from(entry.len));
            Ok(())
        })();
        if let Err(error) = read {
            self.at = None;
            return Err(read_error(error));
        }
        each(&self.buf)
    }
}

impl SealedSpool {
    /// How many records the spool holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `identity` is the next record the spool holds. Asked of a specification's lines
    /// in sample order, each of which [`SealedSpool::copy_next`] takes when it is: the spool's
    /// records are all among the lines, so the next one is never behind the line asked about.
    pub fn contains(&self, identity: &RecordIdentity) -> bool {
        let inner = self.inner.borrow();
        inner
            .merge
            .peek()
            .is_some_and(|entry| entry.place.cmp_identity(identity) == Ordering::Equal)
    }

    /// Hands the evidence of `identity`, the next record (see [`SealedSpool::contains`]), to
    /// `each`.
    pub fn copy_next(
        &self,
        identity: &RecordIdentity,
        mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let matches = inner
            .merge
            .peek()
            .is_some_and(|entry| entry.place.cmp_identity(identity) == Ordering::Equal);
        anyhow::ensure!(matches, "internal error: no evidence spooled for `{}`", identity.key());
        let entry = inner.merge.pop().map_err(read_error)?;
        let entry = entry.context("internal error: the spool ended early")?;
        inner.copy(&entry, &mut each)
    }

    /// Hands every record's evidence to `each`, in sample order: the whole log, when this
    /// session wrote every record of its specification.
    pub fn copy_all(&self, mut each: impl FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut inner = self.inner.borrow_mut();
        while let Some(entry) = inner.merge.pop().map_err(read_error)? {
            inner.copy(&entry, &mut each)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;

    fn record(id: &str, index: u64, trial: Option<u32>) -> SampleRecord {
        let mut r = SampleRecord::new("spec", id, index, Map::new());
        r.sample.insert("question".into(), json!(format!("{id} {trial:?}")));
        r.trial = trial;
        r
    }

    fn identity(id: &str, index: u64, trial: Option<u32>) -> RecordIdentity {
        RecordIdentity {
            spec: "spec".into(),
            sample_id: id.into(),
            sample_index: index,
            trial,
            part: None,
        }
    }

    /// Collects each piece of evidence.
    fn collect(into: &mut Vec<Vec<u8>>) -> impl FnMut(&[u8]) -> anyhow::Result<()> + '_ {
        |evidence| {
            into.push(evidence.to_vec());
            Ok(())
        }
    }

    /// The `(sample_id, trial)` of each piece of evidence.
    fn read(evidence: &[Vec<u8>]) -> Vec<(String, Option<u64>)> {
        evidence
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_slice(e).expect("evidence is JSON");
                (v["sample_id"].as_str().expect("id").to_owned(), v["trial"].as_u64())
            })
            .collect()
    }

    #[test]
    fn evidence_comes_back_in_sample_order_by_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Finished out of order, trials included; the longest evidence first, so that a read
        // of the wrong length would show.
        let finished = [
            record("b", 1, Some(2)),
            record("c-with-a-longer-id", 2, None),
            record("a", 0, None),
            record("b", 1, Some(1)),
        ];
        let mut spool = EvidenceSpool::create(dir.path()).expect("spool");
        for r in &finished {
            spool.add(RenderedEvidence::of(r).expect("render")).expect("add");
        }
        let spool = spool.seal().expect("seal");
        assert_eq!(spool.len(), 4);
        let in_order = [
            identity("a", 0, None),
            identity("b", 1, Some(1)),
            identity("b", 1, Some(2)),
            identity("c-with-a-longer-id", 2, None),
        ];
        let mut copied = Vec::new();
        // A line of an earlier session, before the spool's first record.
        assert!(!spool.contains(&identity("0", 0, None)));
        for id in &in_order {
            assert!(spool.contains(id));
            assert!(!spool.contains(&identity("a", 0, Some(1))));
            spool.copy_next(id, collect(&mut copied)).expect("copy");
        }
        assert!(!spool.contains(&in_order[3]), "each record is copied once");
        assert!(spool.copy_next(&in_order[3], |_| Ok(())).is_err());
        assert_eq!(
            read(&copied),
            [
                ("a".into(), None),
                ("b".into(), Some(1)),
                ("b".into(), Some(2)),
                ("c-with-a-longer-id".into(), None)
            ]
        );
        let question: Value = serde_json::from_slice(&copied[1]).expect("json");
        assert_eq!(question["sample"]["question"], "b Some(1)");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the spool's files have no name"
        );
    }

    #[test]
    fn records_far_out_of_order_make_runs_that_merge_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = EvidenceSpool::create(dir.path()).expect("spool");
        // Three interleaved descending sequences: out of order by far more than the heap holds.
        let n = 3 * HEAP as u64;
        let order: Vec<u64> = (0..n).rev().collect();
        for &i in &order {
            spool
                .add(RenderedEvidence::of(&record(&format!("s{i}"), i, None)).expect("render"))
                .expect("add");
        }
        assert!(spool.runs.len() > 1, "reverse order cannot stay in one run");
        let spool = spool.seal().expect("seal");
        let mut copied = Vec::new();
        spool.copy_all(collect(&mut copied)).expect("copy");
        let ids: Vec<String> = read(&copied).into_iter().map(|(id, _)| id).collect();
        let expected: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn records_a_little_out_of_order_stay_in_one_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = EvidenceSpool::create(dir.path()).expect("spool");
        // Pairs swapped, and one record a thousand places late.
        let mut order: Vec<u64> = (0..10_000u64).map(|i| i ^ 1).filter(|&i| i != 5).collect();
        order.insert(1005, 5);
        for &i in &order {
            spool
                .add(RenderedEvidence::of(&record(&format!("s{i:05}"), i, None)).expect("render"))
                .expect("add");
        }
        let spool = {
            let mut s = spool;
            while !s.heap.is_empty() {
                s.write_smallest().expect("write");
            }
            assert_eq!(s.runs.len(), 1);
            s.seal().expect("seal")
        };
        let mut copied = 0u64;
        spool
            .copy_all(|e| {
                let v: Value = serde_json::from_slice(e).expect("json");
                assert_eq!(v["sample_id"], format!("s{copied:05}"));
                copied += 1;
                Ok(())
            })
            .expect("copy");
        assert_eq!(copied, 10_000);
    }
}
