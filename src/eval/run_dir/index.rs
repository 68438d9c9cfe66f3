//! Which records `samples.jsonl` holds: per specification, the key of every line and how many
//! lines each sample has (its trials and parts), all as written (masked). Keyed by
//! specification first, so a large run keeps one copy of each id instead of one of the
//! specification's name beside every id; a line whose key is its sample id (no trials, no
//! parts: most runs) is a flag beside the id rather than a second copy of it.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Default)]
pub(super) struct Index {
    specs: HashMap<String, SpecLines>,
}

#[derive(Debug, Default)]
struct SpecLines {
    samples: HashMap<Box<str>, SampleLines>,
    /// Record keys ([`crate::eval::record::record_key`]) that are not their sample's id.
    keyed: HashSet<Box<str>>,
    lines: usize,
}

#[derive(Debug, Default)]
struct SampleLines {
    lines: u32,
    /// Whether a line's key is the sample id itself.
    plain: bool,
}

impl SpecLines {
    fn contains(&self, key: &str) -> bool {
        self.samples.get(key).is_some_and(|s| s.plain) || self.keyed.contains(key)
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
        let sample = match lines.samples.get_mut(sample_id) {
            Some(sample) => sample,
            None => lines.samples.entry(sample_id.into()).or_default(),
        };
        sample.lines += 1;
        sample.plain |= plain;
        true
    }

    pub(super) fn remove(&mut self, spec: &str, key: &str, sample_id: &str) {
        let Some(lines) = self.specs.get_mut(spec) else {
            return;
        };
        let plain = key == sample_id;
        let removed = if plain {
            lines
                .samples
                .get_mut(sample_id)
                .is_some_and(|s| std::mem::take(&mut s.plain))
        } else {
            lines.keyed.remove(key)
        };
        if !removed {
            return;
        }
        lines.lines -= 1;
        if let Some(sample) = lines.samples.get_mut(sample_id) {
            sample.lines -= 1;
            if sample.lines == 0 {
                lines.samples.remove(sample_id);
            }
        }
    }

    /// Makes room for `lines` more lines of `spec`, each of a sample of its own (trials and
    /// parts grow the index as they come).
    pub(super) fn reserve(&mut self, spec: &str, lines: usize) {
        let spec_lines = match self.specs.get_mut(spec) {
            Some(spec_lines) => spec_lines,
            None => self.specs.entry(spec.to_owned()).or_default(),
        };
        spec_lines.samples.reserve(lines);
    }

    pub(super) fn has_sample(&self, spec: &str, sample_id: &str) -> bool {
        self.specs.get(spec).is_some_and(|s| s.samples.contains_key(sample_id))
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
            .flat_map(|(spec, lines)| lines.samples.keys().map(|id| (spec.clone(), id.to_string())))
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
}
