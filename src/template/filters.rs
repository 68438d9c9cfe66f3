//! The small filters official adapters use beyond Jinja2's built-ins: `zip` and `merge`.

use minijinja::Error;
use minijinja::value::{Rest, Tuple, Value, ValueKind};

use super::json::{MAX_JSON_DEPTH, map_pairs};
use super::mut_list::MutList;
use super::mut_map::{MutMap, OrderedMap};
use super::mutation::{invalid, iterate, make_mutable};

pub(super) fn zip_filter(value: &Value, others: Rest<Value>) -> Result<Value, Error> {
    let mut columns = vec![iterate(value, "zip")?];
    for other in others.iter() {
        columns.push(iterate(other, "zip")?);
    }
    let len = columns.iter().map(Vec::len).min().unwrap_or(0);
    let rows = (0..len)
        .map(|i| Value::from(Tuple::from(columns.iter().map(|c| c[i].clone()).collect::<Vec<_>>())))
        .collect();
    Ok(MutList::new_value(rows))
}

pub(super) fn merge_filter(left: &Value, right: &Value) -> Result<Value, Error> {
    if left.kind() != ValueKind::Map || right.kind() != ValueKind::Map {
        return Err(invalid(format!(
            "`merge` expects two mappings, got {} and {}",
            left.kind(),
            right.kind()
        )));
    }
    deep_merge(left, right, 0)
}

pub(super) fn deep_merge(left: &Value, right: &Value, depth: usize) -> Result<Value, Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply to merge"));
    }
    let mut map = OrderedMap::default();
    for (k, v) in map_pairs(left) {
        map.insert(k, v);
    }
    for (k, rv) in map_pairs(right) {
        let merged = match map.get(&k) {
            Some(lv) if lv.kind() == ValueKind::Map && rv.kind() == ValueKind::Map => deep_merge(lv, &rv, depth + 1)?,
            _ => make_mutable(rv, 0)?,
        };
        map.insert(k, merged);
    }
    Ok(MutMap::new_value(map))
}
