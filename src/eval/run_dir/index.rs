//! Which records `samples.jsonl` holds, per specification, in two halves.
//!
//! Lines that were in the file when it was opened are known by their key (the masked sample id,
//! with its trial and part): a resume matches them to the dataset by id, wherever the sample
//! sits in it now. Their ids sit end to end in one buffer, found through a table of positions
//! (~20 bytes a sample); a line whose key is its sample id (no trials, no parts: most runs) is
//! a flag beside the id rather than a second copy of it.
//!
//! Lines this process wrote are known by their place (sample index, trial, part): within one
//! process a specification's samples come from one pass over an unchanging dataset (a merge
//! numbers them as one run would), so a place stands for one sample. A plain line is one bit
//! of a compressed bitmap: a fresh run of 100,000 samples keeps ~16 KB here instead of a copy
//! of every id.

use std::collections::{BTreeSet, HashMap, HashSet};

use roaring::RoaringTreemap;

use crate::texts::TextSet;

/// A record's place within its specification: its sample's position, its trial and its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    sample_index: u64,
    trial: Option<u32>,
    part: Option<u32>,
}

impl Place {
    pub fn new(sample_index: u64, trial: Option<u32>, part: Option<u32>) -> Place {
        Place {
            sample_index,
            trial,
            part,
        }
    }

    pub fn trial(self) -> Option<u32> {
        self.trial
    }

    pub fn part(self) -> Option<u32> {
        self.part
    }

    fn is_plain(self) -> bool {
        self.trial.is_none() && self.part.is_none()
    }

    /// Every place of one sample, in order.
    fn of_sample(sample_index: u64) -> std::ops::RangeInclusive<Place> {
        let first = Place {
            sample_index,
            trial: None,
            part: None,
        };
        let last = Place {
            sample_index,
            trial: Some(u32::MAX),
            part: Some(u32::MAX),
        };
        first..=last
    }
}

#[derive(Debug, Default)]
pub(super) struct Index {
    specs: HashMap<String, SpecLines>,
}

#[derive(Debug, Default)]
struct SpecLines {
    by_key: KeyedLines,
    by_place: PlacedLines,
    lines: usize,
}

/// Lines found in the file when it was opened: by key.
#[derive(Debug, Default)]
struct KeyedLines {
    /// Every sample id that has had a line. A sample whose lines are all removed keeps its
    /// place (with no lines).
    ids: TextSet,
    /// By position in `ids`: the sample's lines, shifted left once, with whether one of them is
    /// keyed by the sample id itself in the low bit.
    samples: Vec<u32>,
    /// Record keys ([`crate::eval::record::record_key`]) that are not their sample's id.
    keyed: HashSet<Box<str>>,
}

const PLAIN: u32 = 1;

impl KeyedLines {
    fn lines_of(&self, sample_id: &str) -> u32 {
        self.ids.find(sample_id).map_or(0, |row| self.samples[row] >> 1)
    }

    fn contains(&self, key: &str) -> bool {
        self.ids.find(key).is_some_and(|row| self.samples[row] & PLAIN != 0) || self.keyed.contains(key)
    }

    /// Adds a line known not to be there.
    fn insert(&mut self, key: &str, sample_id: &str) {
        let plain = key == sample_id;
        if !plain {
            self.keyed.insert(key.into());
        }
        let (row, added) = self.ids.insert(sample_id);
        if added {
            self.samples.push(0);
        }
        self.samples[row] = self.samples[row].saturating_add(2) | u32::from(plain);
    }

    /// Whether the line was there (and is now gone).
    fn remove(&mut self, key: &str, sample_id: &str) -> bool {
        let row = self.ids.find(sample_id);
        let removed = if key == sample_id {
            row.is_some_and(|row| {
                let was = self.samples[row] & PLAIN != 0;
                self.samples[row] &= !PLAIN;
                was
            })
        } else {
            self.keyed.remove(key)
        };
        if let (true, Some(row)) = (removed, row) {
            self.samples[row] = self.samples[row].saturating_sub(2);
        }
        removed
    }
}

/// Lines this process wrote: by place.
#[derive(Debug, Default)]
struct PlacedLines {
    /// Sample indexes with a plain line.
    plain: RoaringTreemap,
    /// The lines of trials and parts.
    keyed: BTreeSet<Place>,
}

impl PlacedLines {
    fn contains(&self, place: Place) -> bool {
        if place.is_plain() {
            self.plain.contains(place.sample_index)
        } else {
            self.keyed.contains(&place)
        }
    }

    /// Adds the line; `false` when it is already there.
    fn insert(&mut self, place: Place) -> bool {
        if place.is_plain() {
            self.plain.insert(place.sample_index)
        } else {
            self.keyed.insert(place)
        }
    }

    fn remove(&mut self, place: Place) -> bool {
        if place.is_plain() {
            self.plain.remove(place.sample_index)
        } else {
            self.keyed.remove(&place)
        }
    }

    fn has_sample(&self, sample_index: u64) -> bool {
        self.plain.contains(sample_index) || self.keyed.range(Place::of_sample(sample_index)).next().is_some()
    }
}

impl Index {
    /// Whether a line with this key (masked, as written) or, among the lines this process
    /// wrote, this place is there.
    pub(super) fn contains(&self, spec: &str, key: &str, place: Place) -> bool {
        self.specs
            .get(spec)
            .is_some_and(|s| s.by_key.contains(key) || s.by_place.contains(place))
    }

    /// Adds a line found in the file; `false` (and nothing changes) when its key is already
    /// there.
    pub(super) fn insert_by_key(&mut self, spec: &str, key: &str, sample_id: &str) -> bool {
        let lines = self.spec_mut(spec);
        if lines.by_key.contains(key) {
            return false;
        }
        lines.by_key.insert(key, sample_id);
        lines.lines += 1;
        true
    }

    /// Adds a line this process wrote; `false` (and nothing changes) when its key or its place
    /// is already there.
    pub(super) fn insert_by_place(&mut self, spec: &str, key: &str, place: Place) -> bool {
        let lines = self.spec_mut(spec);
        if lines.by_key.contains(key) || !lines.by_place.insert(place) {
            return false;
        }
        lines.lines += 1;
        true
    }

    /// Removes a line, found by its key among the lines known by key and else by its place.
    pub(super) fn remove(&mut self, spec: &str, key: &str, sample_id: &str, place: Place) {
        let Some(lines) = self.specs.get_mut(spec) else {
            return;
        };
        if lines.by_key.remove(key, sample_id) || lines.by_place.remove(place) {
            lines.lines -= 1;
        }
    }

    /// Whether any line of this sample (masked id, and its index) is there.
    pub(super) fn has_sample(&self, spec: &str, sample_id: &str, sample_index: u64) -> bool {
        self.specs
            .get(spec)
            .is_some_and(|s| s.by_key.lines_of(sample_id) > 0 || s.by_place.has_sample(sample_index))
    }

    /// How many lines `spec` has.
    pub(super) fn count(&self, spec: &str) -> usize {
        self.specs.get(spec).map_or(0, |s| s.lines)
    }

    /// How many lines there are in all.
    pub(super) fn total(&self) -> usize {
        self.specs.values().map(|s| s.lines).sum()
    }

    fn spec_mut(&mut self, spec: &str) -> &mut SpecLines {
        // Looked up before it is inserted: the entry API would allocate the name every time.
        if !self.specs.contains_key(spec) {
            self.specs.insert(spec.to_owned(), SpecLines::default());
        }
        self.specs.get_mut(spec).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sample_index: u64, trial: Option<u32>, part: Option<u32>) -> Place {
        Place::new(sample_index, trial, part)
    }

    #[test]
    fn trials_of_a_sample_are_lines_of_one_sample() {
        let mut index = Index::default();
        assert!(index.insert_by_key("a", "1#t1", "1"));
        assert!(index.insert_by_key("a", "1#t2", "1"));
        assert!(!index.insert_by_key("a", "1#t2", "1"), "a key is read once");
        assert!(index.insert_by_place("b", "1#t1", at(0, Some(1), None)));
        assert!(
            !index.insert_by_place("b", "1#t1", at(0, Some(1), None)),
            "a place is written once"
        );
        assert_eq!((index.count("a"), index.count("b"), index.count("c")), (2, 1, 0));
        assert!(
            index.contains("a", "1#t2", at(9, Some(2), None)) && !index.contains("b", "1#t2", at(0, Some(2), None))
        );
        assert!(index.has_sample("b", "1", 0) && !index.has_sample("b", "1", 1));

        index.remove("a", "1#t1", "1", at(0, Some(1), None));
        assert!(index.has_sample("a", "1", 0), "its other trial is still there");
        index.remove("a", "1#t2", "1", at(0, Some(2), None));
        index.remove("a", "1#t2", "1", at(0, Some(2), None));
        assert!(!index.has_sample("a", "1", 0));
        assert_eq!(index.count("a"), 0);
        assert_eq!(index.total(), 1);
        index.remove("b", "1#t1", "1", at(0, Some(1), None));
        assert!(!index.has_sample("b", "1", 0) && index.total() == 0);
    }

    #[test]
    fn a_plain_line_and_a_trial_of_the_same_sample_are_two_lines() {
        let mut index = Index::default();
        assert!(index.insert_by_key("a", "1", "1"));
        assert!(index.insert_by_key("a", "1#t1", "1"));
        assert!(!index.insert_by_key("a", "1", "1"));
        assert_eq!(index.count("a"), 2);
        index.remove("a", "1", "1", at(0, None, None));
        assert!(!index.contains("a", "1", at(0, None, None)) && index.contains("a", "1#t1", at(0, Some(1), None)));
        assert!(index.has_sample("a", "1", 0));
        index.remove("a", "1", "1", at(0, None, None));
        assert_eq!(index.count("a"), 1, "a line is removed once");
        index.remove("a", "1#t1", "1", at(0, Some(1), None));
        assert!(!index.has_sample("a", "1", 0));
        assert_eq!(index.total(), 0);
    }

    #[test]
    fn a_line_read_is_found_by_its_id_wherever_its_sample_is_now() {
        let mut index = Index::default();
        // Read from the file: sample `x` once sat at position 3.
        assert!(index.insert_by_key("a", "x", "x"));
        assert!(index.contains("a", "x", at(7, None, None)), "`x` moved to position 7");
        assert!(!index.contains("a", "y", at(3, None, None)), "position 3 is `y` now");
        assert!(index.insert_by_place("a", "y", at(3, None, None)));
        assert!(
            !index.insert_by_place("a", "x", at(7, None, None)),
            "`x` is recorded already"
        );
        assert!(index.has_sample("a", "x", 7) && index.has_sample("a", "y", 3));
        assert_eq!(index.count("a"), 2);

        // A removed line can be written again.
        index.remove("a", "x", "x", at(7, None, None));
        assert!(!index.contains("a", "x", at(7, None, None)));
        assert!(index.insert_by_place("a", "x", at(7, None, None)));
        assert_eq!(index.count("a"), 2);
    }
}
