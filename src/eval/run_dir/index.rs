//! Which records `samples.jsonl` holds: per specification, the key of every line and how many
//! lines each sample has (its trials and parts), all as written (masked). Keyed by
//! specification first, so a large run keeps one copy of each id instead of one of the
//! specification's name beside every id.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Default)]
pub(super) struct Index {
    specs: HashMap<String, SpecLines>,
}

#[derive(Debug, Default)]
struct SpecLines {
    /// Record keys ([`crate::eval::record::record_key`]).
    records: HashSet<Box<str>>,
    /// Lines per sample id.
    samples: HashMap<Box<str>, u32>,
}

impl Index {
    pub(super) fn contains(&self, spec: &str, key: &str) -> bool {
        self.specs.get(spec).is_some_and(|s| s.records.contains(key))
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
        lines.records.insert(key.into());
        match lines.samples.get_mut(sample_id) {
            Some(n) => *n += 1,
            None => {
                lines.samples.insert(sample_id.into(), 1);
            }
        }
        true
    }

    pub(super) fn remove(&mut self, spec: &str, key: &str, sample_id: &str) {
        let Some(lines) = self.specs.get_mut(spec) else {
            return;
        };
        if !lines.records.remove(key) {
            return;
        }
        if let Some(n) = lines.samples.get_mut(sample_id) {
            *n -= 1;
            if *n == 0 {
                lines.samples.remove(sample_id);
            }
        }
    }

    pub(super) fn has_sample(&self, spec: &str, sample_id: &str) -> bool {
        self.specs.get(spec).is_some_and(|s| s.samples.contains_key(sample_id))
    }

    /// How many lines `spec` has.
    pub(super) fn count(&self, spec: &str) -> usize {
        self.specs.get(spec).map_or(0, |s| s.records.len())
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
        self.specs.values().map(|s| s.records.len()).sum()
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
}
