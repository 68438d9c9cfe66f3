//! [`Texts`]: many short strings in one buffer. Per-sample columns (ids, previews) of a
//! 100,000-sample run would otherwise cost a `String` header and an allocation each, several
//! times the text itself. [`TextSet`]: such a list that finds its strings by hash, each once (a
//! set of 100,000 ids in ~20 bytes apiece, where a `HashSet<String>` takes ~60).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use serde::ser::{Serialize, SerializeSeq, Serializer};

/// An append-only list of strings stored end to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts {
    bytes: String,
    /// Where each string ends in `bytes`, modulo 2³²: half the size of a `usize` per string,
    /// which is most of what a column of short ids costs.
    ends: Vec<u32>,
    /// The rows whose end passed another multiple of 2³² (a row once per multiple), in order:
    /// empty unless the buffer outgrew 4 GiB.
    wraps: Vec<usize>,
}

impl Texts {
    pub fn with_capacity(n: usize) -> Texts {
        Texts {
            bytes: String::new(),
            ends: Vec::with_capacity(n),
            wraps: Vec::new(),
        }
    }

    /// Makes room for `n` more strings.
    pub fn reserve(&mut self, n: usize) {
        self.ends.reserve_exact(n);
    }

    pub fn push(&mut self, text: &str) {
        let start = self.bytes.len() as u64;
        self.bytes.push_str(text);
        self.push_end(start, self.bytes.len() as u64);
    }

    /// Records where the next string ends, given where it starts.
    fn push_end(&mut self, start: u64, end: u64) {
        let row = self.ends.len();
        self.wraps
            .extend(std::iter::repeat_n(row, ((end >> 32) - (start >> 32)) as usize));
        // Truncation is the point: the lost high bits are counted in `wraps`.
        self.ends.push(end as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where the `i`th string ends in `bytes`.
    fn end(&self, i: usize) -> usize {
        let high = if self.wraps.is_empty() {
            0
        } else {
            self.wraps.partition_point(|&row| row <= i) as u64
        };
        ((high << 32) | u64::from(self.ends[i])) as usize
    }

    /// The `i`th string; panics past the end, like a slice.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        &self.bytes[start..self.end(i)]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl Serialize for Texts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for text in self.iter() {
            seq.serialize_element(text)?;
        }
        seq.end()
    }
}

/// Distinct strings in the order first inserted, each found by its position.
#[derive(Debug, Default)]
pub struct TextSet {
    texts: Texts,
    /// Positions in `texts`, found by their string's hash.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl TextSet {
    /// The position of `text`, if it is in the set.
    pub fn find(&self, text: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(text);
        self.table
            .find(hash, |&row| self.texts.get(row as usize) == text)
            .map(|&row| row as usize)
    }

    /// The position of `text`, and whether it was added now.
    pub fn insert(&mut self, text: &str) -> (usize, bool) {
        if let Some(row) = self.find(text) {
            return (row, false);
        }
        let row = self.texts.len();
        self.texts.push(text);
        let TextSet { texts, table, hasher } = self;
        // A set of four billion strings would not fit in memory before this wrapped.
        table.insert_unique(hasher.hash_one(text), row as u32, |&r| {
            hasher.hash_one(texts.get(r as usize))
        });
        (row, true)
    }

    /// The string at position `i`; panics past the end, like a slice.
    pub fn get(&self, i: usize) -> &str {
        self.texts.get(i)
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.texts.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::{TextSet, Texts};

    #[test]
    fn a_set_finds_each_string_at_the_place_it_was_first_inserted() {
        let mut set = TextSet::default();
        assert_eq!(set.insert("b"), (0, true));
        assert_eq!(set.insert("a"), (1, true));
        assert_eq!(set.insert("b"), (0, false));
        for i in 0..1000 {
            set.insert(&i.to_string());
        }
        assert_eq!(
            (set.find("a"), set.find("999"), set.find("x")),
            (Some(1), Some(1001), None)
        );
        assert_eq!(set.len(), 1002);
        assert_eq!(set.iter().take(3).collect::<Vec<_>>(), ["b", "a", "0"]);
    }

    #[test]
    fn strings_come_back_as_pushed_and_serialise_as_a_list() {
        let mut texts = Texts::default();
        for t in ["a", "", "ünï", "last"] {
            texts.push(t);
        }
        assert_eq!(texts.len(), 4);
        assert_eq!(texts.iter().collect::<Vec<_>>(), ["a", "", "ünï", "last"]);
        assert_eq!(texts.get(1), "");
        assert_eq!(serde_json::to_string(&texts).unwrap(), r#"["a","","ünï","last"]"#);
        assert_eq!(serde_json::to_string(&Texts::default()).unwrap(), "[]");
    }

    #[test]
    fn ends_past_four_gibibytes_are_kept_whole() {
        // Positions only: a buffer that big is not needed to check the arithmetic.
        const G4: u64 = 1 << 32;
        let ends = [10, G4 - 1, G4 + 5, G4 + 5, 3 * G4 + 1, 3 * G4 + 2];
        let mut texts = Texts::default();
        let mut start = 0;
        for end in ends {
            texts.push_end(start, end);
            start = end;
        }
        assert_eq!(texts.wraps, [2, 4, 4]);
        let back: Vec<u64> = (0..ends.len()).map(|i| texts.end(i) as u64).collect();
        assert_eq!(back, ends);
    }
}
