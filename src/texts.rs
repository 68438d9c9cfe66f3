//! [`Texts`]: many short strings in one buffer. Per-sample columns (ids, previews) of a
//! 100,000-sample run would otherwise cost a `String` header and an allocation each, several
//! times the text itself.

use serde::ser::{Serialize, SerializeSeq, Serializer};

/// An append-only list of strings stored end to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts {
    bytes: String,
    /// Where each string ends in `bytes`.
    ends: Vec<usize>,
}

impl Texts {
    pub fn with_capacity(n: usize) -> Texts {
        Texts {
            bytes: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    /// Makes room for `n` more strings.
    pub fn reserve(&mut self, n: usize) {
        self.ends.reserve_exact(n);
    }

    pub fn push(&mut self, text: &str) {
        self.bytes.push_str(text);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th string; panics past the end, like a slice.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
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

#[cfg(test)]
mod tests {
    use super::Texts;

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
}
