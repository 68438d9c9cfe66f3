//! Which records `samples.jsonl` holds: per specification, the key of every line and how many
//! lines each sample has (its trials and parts), all as written (masked). Keyed by
//! specification first, so a large run keeps one copy of each id instead of one of the
//! specification's name beside every id; a line whose key is its sample id (no trials, no
//! parts: most runs) is a flag beside the id rather than a second copy of it. The ids sit end
//! to end in one buffer, found through a table of their positions: ~20 bytes a sample, where a
//! map of boxed ids cost ~50.

use std::collections::{HashMap, HashSet};

use crate::texts::TextSet;

#[derive(Debug, Default)]
pub(super) struct Index {
    specs: HashMap<String, SpecLines>,
}

#[derive(Debug, Default)]
struct SpecLines {
    /// Every sample id that has had a line. A sample whose lines are all removed keeps its
    /// place (with no lines), for when it is written again.
    ids: TextSet,
    /// By position in `ids`: the sample's lines, shifted left once, with whether one of them is
    /// keyed by the sample id itself in the low bit.
    samples: Vec<u32>,
    /// Record keys ([`crate::eval::record::record_key`]) that are not their sample's id.
    keyed: HashSet<Box<str>>,
    lines: usize,
}

const PLAIN: u32 = 1;

impl SpecLines {
    /// The position of `sample_id` in `ids`.
    fn row(&self, sample_id: &str) -> Option<usize> {
        self.ids.find(sample_id)
    }

    /// The position of `sample_id` in `ids`, added (with no lines) if it has none.
    fn row_or_insert(&mut self, sample_id: &str) -> usize {
        let (row, added) = self.ids.insert(sample_id);
        if added {
            self.samples.push(0);
        }
        row
    }

    fn lines_of(&self, sample_id: &str) -> u32 {
        self.row(sample_id).map_or(0, |row| self.samples[row] >> 1)
    }

    fn contains(&self, key: &str) -> bool {
        self.row(key).is_some_and(|row| self.samples[row] & PLAIN != 0) || self.keyed.contains(key)
    }

    fn reserve(&mut self, lines: usize, id_bytes: usize) {
        self.ids.reserve(lines);
        self.ids.reserve_bytes(id_bytes);
        self.samples.reserve(lines);
    }
}

impl Index {
    pub(super) fn contains(&self, spec: &str, key: &str) -> bool {
        self.specs.get(spec).is_some_and(|s| s.contains(key))
    }

    /// Adds one line; `false` (and nothing changes) when its key is already there.
    pub(super) fn insert(&mut self, spec: &str, key: &str, sample_id: &str) -> bool {
        if self.contains(spec, key) {
            return false;
        }
        let lines = match self.specs.get_mut(spec) {
            Some(lines) => lines,
            None => self.specs.entry(spec.to_owned()).or_default(),
        };
        lines.lines += 1;
        let plain = key == sample_id;
        if !plain {
            lines.keyed.insert(key.into());
        }
        let row = lines.row_or_insert(sample_id);
        lines.samples[row] = lines.samples[row].saturating_add(2) | u32::from(plain);
        true
    }

    pub(super) fn remove(&mut self, spec: &str, key: &str, sample_id: &str) {
        let Some(lines) = self.specs.get_mut(spec) else {
            return;
        };
        let row = lines.row(sample_id);
        let removed = if key == sample_id {
            row.is_some_and(|row| {
                let was = lines.samples[row] & PLAIN != 0;
                lines.samples[row] &= !PLAIN;
                was
            })
        } else {
            lines.keyed.remove(key)
        };
        if !removed {
            return;
        }
        lines.lines -= 1;
        if let Some(row) = row {
            lines.samples[row] = lines.samples[row].saturating_sub(2);
        }
    }

    /// Makes room for `lines` more lines of `spec`, each of a sample of its own (trials and
    /// parts grow the index as they come), whose ids take `id_bytes` in all.
    pub(super) fn reserve(&mut self, spec: &str, lines: usize, id_bytes: usize) {
        let spec_lines = match self.specs.get_mut(spec) {
            Some(spec_lines) => spec_lines,
            None => self.specs.entry(spec.to_owned()).or_default(),
        };
        spec_lines.reserve(lines, id_bytes);
    }

    pub(super) fn has_sample(&self, spec: &str, sample_id: &str) -> bool {
        self.specs.get(spec).is_some_and(|s| s.lines_of(sample_id) > 0)
    }

    /// How many lines `spec` has.
    pub(super) fn count(&self, spec: &str) -> usize {
        self.specs.get(spec).map_or(0, |s| s.lines)
    }

    /// `(spec, sample_id)` of every sample with a line, sorted.
    pub(super) fn samples(&self) -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = self
            .specs
            .iter()
            .flat_map(|(spec, lines)| {
                lines
                    .ids
                    .iter()
                    .zip(&lines.samples)
                    .filter(|(_, n)| **n >> 1 > 0)
                    .map(|(id, _)| (spec.clone(), id.to_owned()))
            })
            .collect();
        keys.sort();
        keys
    }

    /// How many lines there are in all.
    pub(super) fn total(&self) -> usize {
        self.specs.values().map(|s| s.lines).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_of_a_sample_are_lines_of_one_sample() {
        let mut index = Index::default();
        assert!(index.insert("a", "1#t1", "1"));
        assert!(index.insert("a", "1#t2", "1"));
        assert!(!index.insert("a", "1#t2", "1"), "a key is written once");
        assert!(index.insert("b", "1#t1", "1"));
        assert_eq!((index.count("a"), index.count("b"), index.count("c")), (2, 1, 0));
        assert!(index.contains("a", "1#t2") && !index.contains("b", "1#t2"));
        assert_eq!(
            index.samples(),
            vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "1".to_owned())]
        );

        index.remove("a", "1#t1", "1");
        assert!(index.has_sample("a", "1"), "its other trial is still there");
        index.remove("a", "1#t2", "1");
        index.remove("a", "1#t2", "1");
        assert!(!index.has_sample("a", "1"));
        assert_eq!(index.count("a"), 0);
        assert_eq!(index.total(), 1);
        assert!(index.contains("b", "1#t1"));
    }

    #[test]
    fn a_plain_line_and_a_trial_of_the_same_sample_are_two_lines() {
        let mut index = Index::default();
        assert!(index.insert("a", "1", "1"));
        assert!(index.insert("a", "1#t1", "1"));
        assert!(!index.insert("a", "1", "1"));
        assert_eq!(index.count("a"), 2);
        index.remove("a", "1", "1");
        assert!(!index.contains("a", "1") && index.contains("a", "1#t1"));
        assert!(index.has_sample("a", "1"));
        index.remove("a", "1", "1");
        assert_eq!(index.count("a"), 1, "a line is removed once");
        index.remove("a", "1#t1", "1");
        assert!(!index.has_sample("a", "1"));
        assert_eq!(index.total(), 0);
    }

    #[test]
    fn a_sample_written_again_after_its_lines_were_removed_is_listed_once() {
        let mut index = Index::default();
        index.reserve("a", 2, 2);
        assert!(index.insert("a", "1", "1") && index.insert("a", "2", "2"));
        index.remove("a", "1", "1");
        assert!(!index.has_sample("a", "1") && !index.contains("a", "1"));
        assert_eq!(index.samples(), vec![("a".to_owned(), "2".to_owned())]);
        assert!(index.insert("a", "1", "1"), "a removed line can be written again");
        assert!(!index.insert("a", "1", "1"));
        assert_eq!(index.specs["a"].ids.len(), 2, "the id keeps its place");
        assert_eq!(
            index.samples(),
            vec![("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())]
        );
        assert_eq!(index.count("a"), 2);
    }
}
