//! [`ScoreTable`]: the scores a summary's [`Fold`](crate::eval::summary::Fold) keeps for its
//! metrics, stored by column (one per scorer and field) with a row per scored record. A map per
//! record cost ~170 bytes for one boolean score; a column costs a byte a value while its values
//! are pass/fail (booleans, or the `0.0` and `1.0` that lf's scorers give) and 16 bytes once
//! they are not (a `serde_json::Value` is over four times that: its map variant is inline).

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use crate::eval::metric::ScoreFields;
use crate::eval::record::Scores;

/// Rows of scores by scorer, each scorer's fields by column.
#[derive(Default)]
pub struct ScoreTable {
    rows: usize,
    /// Rows expected in all, so that a column first seen later is made that long at once.
    capacity: usize,
    scorers: Vec<ScorerColumns>,
}

struct ScorerColumns {
    name: Box<str>,
    /// Whether each row has this scorer's scores.
    present: Vec<bool>,
    /// In the order fields were first seen.
    fields: Vec<(Box<str>, Cells)>,
    /// Each row's metadata, kept only for Python metrics, which read it.
    metadata: Option<Vec<Map<String, Value>>>,
}

impl ScoreTable {
    /// Makes room for `rows` more rows in every column, present and to come.
    pub fn reserve(&mut self, rows: usize) {
        self.capacity = self.rows + rows;
        for scorer in &mut self.scorers {
            scorer.reserve(self.capacity);
        }
    }

    /// Adds a row with these scorers' scores; metadata is kept when `keep_metadata`.
    pub fn push(&mut self, scores: impl IntoIterator<Item = (String, Scores)>, keep_metadata: bool) {
        let row = self.rows;
        self.rows += 1;
        for (name, scores) in scores {
            let at = match self.scorers.iter().position(|s| *s.name == *name) {
                Some(at) => at,
                None => {
                    let mut columns = ScorerColumns {
                        name: name.into_boxed_str(),
                        present: vec![false; row],
                        fields: Vec::new(),
                        metadata: keep_metadata.then(|| vec![Map::new(); row]),
                    };
                    columns.reserve(self.capacity);
                    self.scorers.push(columns);
                    self.scorers.len() - 1
                }
            };
            let scorer = &mut self.scorers[at];
            scorer.present.push(true);
            for (field, value) in scores.values {
                let column = match scorer.fields.iter().position(|(f, _)| **f == *field) {
                    Some(column) => column,
                    None => {
                        let cells = Cells::missing(row, self.capacity.saturating_sub(row));
                        scorer.fields.push((field.into_boxed_str(), cells));
                        scorer.fields.len() - 1
                    }
                };
                scorer.fields[column].1.push(value);
            }
            if let Some(metadata) = &mut scorer.metadata {
                metadata.push(scores.metadata);
            }
        }
        // Every column is one row longer, whether this record had its scorer or field or not.
        for scorer in &mut self.scorers {
            scorer.present.resize(self.rows, false);
            for (_, values) in &mut scorer.fields {
                values.resize(self.rows);
            }
            if let Some(metadata) = &mut scorer.metadata {
                metadata.resize(self.rows, Map::new());
            }
        }
    }

    /// One scorer's scores of row `row`, if that record has them.
    pub fn get(&self, scorer: &str, row: usize) -> Option<Entry<'_>> {
        let columns = self.scorers.iter().find(|s| *s.name == *scorer)?;
        // A table of four billion rows would not fit in memory first.
        columns.present[row].then_some(Entry {
            columns,
            row: row as u32,
        })
    }
}

impl ScorerColumns {
    fn reserve(&mut self, rows: usize) {
        self.present.reserve_exact(rows.saturating_sub(self.present.len()));
        for (_, cells) in &mut self.fields {
            cells.reserve_exact(rows.saturating_sub(cells.len()));
        }
        if let Some(metadata) = &mut self.metadata {
            metadata.reserve_exact(rows.saturating_sub(metadata.len()));
        }
    }
}

/// One value of a column. Scores are nearly always booleans and numbers, kept inline; anything
/// else is boxed.
#[derive(Clone, Default)]
enum Cell {
    /// The record has no such field.
    #[default]
    Missing,
    Bool(bool),
    Number(Number),
    Other(Box<Value>),
}

impl Cell {
    fn of(value: Value) -> Cell {
        match value {
            Value::Bool(b) => Cell::Bool(b),
            Value::Number(n) => Cell::Number(n),
            other => Cell::Other(Box::new(other)),
        }
    }

    fn value(&self) -> Option<Cow<'_, Value>> {
        match self {
            Cell::Missing => None,
            Cell::Bool(b) => Some(Cow::Owned(Value::Bool(*b))),
            Cell::Number(n) => Some(Cow::Owned(Value::Number(n.clone()))),
            Cell::Other(value) => Some(Cow::Borrowed(value)),
        }
    }
}

/// A field's cells: a byte each while every value is a pass or a fail (most scores are: a
/// boolean, or `0.0`/`1.0`), a [`Cell`] each from the first that is not.
enum Cells {
    /// One of the `FLAG_` values.
    Flags(Vec<u8>),
    Cells(Vec<Cell>),
}

const FLAG_MISSING: u8 = 0;
const FLAG_FALSE: u8 = 1;
const FLAG_TRUE: u8 = 2;
/// The float `0.0` (not `-0.0`, nor the integer `0`, which a metric's output would tell apart).
const FLAG_ZERO: u8 = 3;
/// The float `1.0`.
const FLAG_ONE: u8 = 4;

/// A value's flag, if it has one.
fn flag_of(value: &Value) -> Option<u8> {
    match value {
        Value::Bool(b) => Some(if *b { FLAG_TRUE } else { FLAG_FALSE }),
        Value::Number(n) if n.is_f64() => match n.as_f64()?.to_bits() {
            bits if bits == 0f64.to_bits() => Some(FLAG_ZERO),
            bits if bits == 1f64.to_bits() => Some(FLAG_ONE),
            _ => None,
        },
        _ => None,
    }
}

/// The value a flag stands for; `None` for a missing one.
fn flag_value(flag: u8) -> Option<Value> {
    match flag {
        FLAG_FALSE => Some(Value::Bool(false)),
        FLAG_TRUE => Some(Value::Bool(true)),
        FLAG_ZERO => Number::from_f64(0.0).map(Value::Number),
        FLAG_ONE => Number::from_f64(1.0).map(Value::Number),
        _ => None,
    }
}

impl Cells {
    /// `rows` missing cells, with room for `more`.
    fn missing(rows: usize, more: usize) -> Cells {
        let mut flags = vec![FLAG_MISSING; rows];
        flags.reserve_exact(more);
        Cells::Flags(flags)
    }

    fn len(&self) -> usize {
        match self {
            Cells::Flags(flags) => flags.len(),
            Cells::Cells(cells) => cells.len(),
        }
    }

    fn reserve_exact(&mut self, more: usize) {
        match self {
            Cells::Flags(flags) => flags.reserve_exact(more),
            Cells::Cells(cells) => cells.reserve_exact(more),
        }
    }

    fn push(&mut self, value: Value) {
        if let Cells::Flags(flags) = self {
            if let Some(flag) = flag_of(&value) {
                flags.push(flag);
                return;
            }
            let mut cells = Vec::with_capacity(flags.capacity());
            cells.extend(flags.iter().map(|&f| flag_value(f).map_or(Cell::Missing, Cell::of)));
            *self = Cells::Cells(cells);
        }
        if let Cells::Cells(cells) = self {
            cells.push(Cell::of(value));
        }
    }

    /// Pads the column with missing cells to `rows`.
    fn resize(&mut self, rows: usize) {
        match self {
            Cells::Flags(flags) => flags.resize(rows, FLAG_MISSING),
            Cells::Cells(cells) => cells.resize(rows, Cell::Missing),
        }
    }

    fn is_missing(&self, row: usize) -> bool {
        match self {
            Cells::Flags(flags) => flags[row] == FLAG_MISSING,
            Cells::Cells(cells) => matches!(cells[row], Cell::Missing),
        }
    }

    fn value(&self, row: usize) -> Option<Cow<'_, Value>> {
        match self {
            Cells::Flags(flags) => flag_value(flags[row]).map(Cow::Owned),
            Cells::Cells(cells) => cells[row].value(),
        }
    }
}

/// One scorer's scores of one row.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    columns: &'a ScorerColumns,
    /// A `u32`: a summary holds an entry per scored record while it computes its metrics.
    row: u32,
}

impl<'a> Entry<'a> {
    pub fn field_names(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let row = self.row as usize;
        self.columns
            .fields
            .iter()
            .filter(move |(_, values)| !values.is_missing(row))
            .map(|(name, _)| &**name)
    }

    pub fn values(&self) -> Map<String, Value> {
        self.columns
            .fields
            .iter()
            .filter_map(|(name, values)| Some((name.to_string(), values.value(self.row as usize)?.into_owned())))
            .collect()
    }

    /// The scores as they were added (metadata only if it was kept).
    pub fn scores(&self) -> Scores {
        Scores {
            values: self.values(),
            metadata: self
                .columns
                .metadata
                .as_ref()
                .map(|m| m[self.row as usize].clone())
                .unwrap_or_default(),
        }
    }
}

impl ScoreFields for Entry<'_> {
    fn get_field(&self, name: &str) -> Option<Cow<'_, Value>> {
        let (_, values) = self.columns.fields.iter().find(|(f, _)| **f == *name)?;
        values.value(self.row as usize)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cell_is_a_fraction_of_a_value() {
        let (cell, value) = (size_of::<super::Cell>(), size_of::<serde_json::Value>());
        assert!(
            cell <= 16 && value >= 4 * cell,
            "a cell is {cell} bytes, a value {value}"
        );
    }

    use serde_json::json;

    use super::*;

    fn scores(values: Value, metadata: Value) -> Scores {
        Scores {
            values: values.as_object().cloned().unwrap(),
            metadata: metadata.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn rows_keep_their_own_scorers_and_fields_whatever_came_before() {
        let mut table = ScoreTable::default();
        table.push([("a".to_owned(), scores(json!({"x": 1}), json!({"why": "one"})))], true);
        table.push([("b".to_owned(), scores(json!({"y": true}), json!({})))], true);
        table.push(
            [
                ("a".to_owned(), scores(json!({"z": "s", "x": 3}), json!({}))),
                ("b".to_owned(), scores(json!({}), json!({}))),
            ],
            true,
        );
        table.push([], true);

        let a0 = table.get("a", 0).expect("row 0 has a");
        assert_eq!(a0.get_field("x").as_deref(), Some(&json!(1)));
        assert_eq!(a0.get_field("z"), None);
        assert_eq!(a0.scores(), scores(json!({"x": 1}), json!({"why": "one"})));
        assert!(table.get("a", 1).is_none() && table.get("b", 0).is_none());
        assert_eq!(
            table.get("b", 1).unwrap().values(),
            *json!({"y": true}).as_object().unwrap()
        );
        let a2 = table.get("a", 2).unwrap();
        assert_eq!(a2.field_names().collect::<Vec<_>>(), ["x", "z"]);
        assert_eq!(a2.get_field("z").as_deref(), Some(&json!("s")));
        let b2 = table.get("b", 2).expect("present with no values");
        assert!(b2.values().is_empty());
        assert!(table.get("a", 3).is_none() && table.get("b", 3).is_none() && table.get("c", 0).is_none());
    }

    #[test]
    fn a_boolean_column_keeps_its_values_when_a_number_comes() {
        let mut table = ScoreTable::default();
        table.reserve(4);
        table.push([("a".to_owned(), scores(json!({"ok": true}), json!({})))], false);
        table.push([("a".to_owned(), scores(json!({}), json!({})))], false);
        table.push([("a".to_owned(), scores(json!({"ok": false}), json!({})))], false);
        assert!(
            matches!(table.scorers[0].fields[0].1, Cells::Flags(_)),
            "booleans take a byte"
        );
        table.push([("a".to_owned(), scores(json!({"ok": 0.5}), json!({})))], false);
        assert!(matches!(table.scorers[0].fields[0].1, Cells::Cells(_)));
        let ok = |row| table.get("a", row).unwrap().get_field("ok").map(Cow::into_owned);
        assert_eq!(
            [ok(0), ok(1), ok(2), ok(3)],
            [Some(json!(true)), None, Some(json!(false)), Some(json!(0.5))]
        );
    }

    #[test]
    fn pass_fail_floats_take_a_byte_and_come_back_as_they_were() {
        let mut table = ScoreTable::default();
        for value in [json!(1.0), json!(0.0), json!(true)] {
            table.push([("a".to_owned(), scores(json!({ "ok": value }), json!({})))], false);
        }
        assert!(matches!(table.scorers[0].fields[0].1, Cells::Flags(_)));
        // An integer and a negative zero print differently from `1.0` and `0.0`: not flags.
        for value in [json!(1), json!(-0.0)] {
            table.push([("a".to_owned(), scores(json!({ "ok": value }), json!({})))], false);
        }
        assert!(matches!(table.scorers[0].fields[0].1, Cells::Cells(_)));
        let ok = |row| table.get("a", row).unwrap().get_field("ok").unwrap().into_owned();
        let printed: Vec<String> = (0..5).map(|row| ok(row).to_string()).collect();
        assert_eq!(printed, ["1.0", "0.0", "true", "1", "-0.0"]);
    }

    #[test]
    fn metadata_is_dropped_unless_kept() {
        let mut table = ScoreTable::default();
        table.push([("a".to_owned(), scores(json!({"x": 1}), json!({"why": "w"})))], false);
        assert!(table.get("a", 0).unwrap().scores().metadata.is_empty());
    }
}
