//! Where values become mutable: the copy made at `{% set %}` and at container doors, the
//! `dict()` and `namespace()` functions, cycle checks, and the hint for a mutator called on an
//! immutable value.

use std::collections::HashSet;

use minijinja::value::{Kwargs, Rest, Tuple, Value, ValueKind, ValueOrKwargs};
use minijinja::{Error, ErrorKind, State};

use super::json::MAX_JSON_DEPTH;
use super::mut_list::MutList;
use super::mut_map::{MutMap, OrderedMap};

/// The engine's own error for using an undefined `value`: it remembers which expression
/// produced the value, so the final message can name it.
pub(super) fn undefined_error(value: &Value) -> Error {
    match value.get_attr("") {
        Err(err) => err,
        Ok(_) => Error::from(ErrorKind::UndefinedError),
    }
}

pub(super) fn invalid(msg: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// Python's index normalisation for `insert` (negative counts from the end, clamped at 0).
pub(super) fn python_index(idx: i64, len: usize) -> usize {
    if idx < 0 {
        len.saturating_sub(idx.unsigned_abs() as usize)
    } else {
        idx as usize
    }
}

pub(super) fn is_mutable(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.is::<MutList>() || o.is::<MutMap>())
}

pub(super) fn object_ptr(value: &Value) -> Option<*const ()> {
    if let Some(l) = value.downcast_object_ref::<MutList>() {
        Some(l as *const MutList as *const ())
    } else {
        value
            .downcast_object_ref::<MutMap>()
            .map(|m| m as *const MutMap as *const ())
    }
}

pub(super) fn iterate(value: &Value, what: &str) -> Result<Vec<Value>, Error> {
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map | ValueKind::String => Ok(value.try_iter()?.collect()),
        kind => Err(invalid(format!("`{what}` expects an iterable, got {kind}"))),
    }
}

/// Key/value pairs of a mapping or of an iterable of 2-item sequences (what `dict()` accepts).
pub(super) fn pairs_of(value: &Value, what: &str) -> Result<Vec<(Value, Value)>, Error> {
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    if value.kind() == ValueKind::Map {
        let Some(obj) = value.as_object() else {
            return Ok(Vec::new());
        };
        return Ok(obj.try_iter_pairs().map(|i| i.collect()).unwrap_or_default());
    }
    let mut out = Vec::new();
    for item in iterate(value, what)? {
        let kv: Vec<Value> = match item.kind() {
            ValueKind::Seq | ValueKind::Iterable => item.try_iter()?.collect(),
            _ => Vec::new(),
        };
        let [k, v]: [Value; 2] = kv
            .try_into()
            .map_err(|_| invalid(format!("`{what}` expects a mapping or a sequence of key/value pairs")))?;
        out.push((k, v));
    }
    Ok(out)
}

pub(super) fn hashable(key: Value) -> Result<Value, Error> {
    if key.is_undefined() {
        return Err(undefined_error(&key));
    }
    match key.kind() {
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable if !key.is_tuple() => {
            Err(invalid(format!("unhashable type `{}` used as a dict key", key.kind())))
        }
        _ => Ok(key),
    }
}

/// Prepares a value for storing inside the container at `container`: copies plain containers
/// into mutable ones and refuses to create a cycle.
pub(super) fn insertable(value: Value, container: *const ()) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(undefined_error(&value));
    }
    let value = make_mutable(value, 0)?;
    if reaches(&value, container) {
        return Err(invalid("cannot insert a container into itself (circular reference)"));
    }
    Ok(value)
}

/// Whether `target` is `value` or one of its (transitive) elements.
pub(super) fn reaches(value: &Value, target: *const ()) -> bool {
    let mut stack = vec![value.clone()];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if let Some(ptr) = object_ptr(&v) {
            if ptr == target {
                return true;
            }
            if !seen.insert(ptr as usize) {
                continue;
            }
            if let Some(l) = v.downcast_object_ref::<MutList>() {
                stack.extend(l.snapshot());
            } else if let Some(m) = v.downcast_object_ref::<MutMap>() {
                stack.extend(m.snapshot().into_iter().map(|(_, v)| v));
            }
        } else if v.is_tuple()
            && let Ok(items) = v.try_iter()
        {
            stack.extend(items);
        }
    }
    false
}

/// Copies plain sequences and maps (deeply) into mutable ones; mutable values, namespaces and
/// scalars pass through unchanged.
pub(super) fn make_mutable(value: Value, depth: usize) -> Result<Value, Error> {
    let Some(obj) = value.as_object() else {
        return Ok(value);
    };
    if is_mutable(&value) || value.is_kwargs() {
        return Ok(value);
    }
    if depth > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply"));
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            let mut items = Vec::new();
            for item in value.try_iter()? {
                items.push(make_mutable(item, depth + 1)?);
            }
            if value.is_tuple() {
                Ok(Value::from(Tuple::from(items)))
            } else {
                Ok(MutList::new_value(items))
            }
        }
        // namespaces must stay themselves: `{% set ns.x = ... %}` only works on the original
        ValueKind::Map if obj.type_name().ends_with("::Namespace") => Ok(value),
        ValueKind::Map => {
            let mut map = OrderedMap::default();
            for (k, v) in obj.try_iter_pairs().into_iter().flatten() {
                map.insert(k, make_mutable(v, depth + 1)?);
            }
            Ok(MutMap::new_value(map))
        }
        _ => Ok(value),
    }
}

pub(super) fn mutable_fn(args: Rest<Value>) -> Result<Value, Error> {
    let mut args = args.0;
    match args.len() {
        0 => Err(Error::from(ErrorKind::MissingArgument)),
        1 => make_mutable(args.remove(0), 0),
        // `{% set x = a, b %}` assigns a tuple
        _ => {
            let items = args
                .into_iter()
                .map(|v| make_mutable(v, 0))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::from(Tuple::from(items)))
        }
    }
}

/// `dict(mapping_or_pairs, **kwargs)` returning a mutable dict.
pub(super) fn dict_fn(value: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let mut pairs = match value {
        Some(v) => pairs_of(&v, "dict")?,
        None => Vec::new(),
    };
    for key in kwargs.args() {
        pairs.push((Value::from(key), kwargs.get::<Value>(key)?));
    }
    let mut map = OrderedMap::default();
    for (k, v) in pairs {
        map.insert(hashable(k)?, make_mutable(v, 0)?);
    }
    Ok(MutMap::new_value(map))
}

/// `namespace(...)` whose initial values are mutable.
pub(super) fn namespace_fn(args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let mut map = OrderedMap::default();
    for arg in args.0 {
        let arg = arg.into_value();
        for (k, v) in pairs_of(&arg, "namespace")? {
            map.insert(k, make_mutable(v, 0)?);
        }
    }
    minijinja::functions::namespace(Some(ValueOrKwargs::from(MutMap::new_value(map))))
}

pub(super) const MUTATORS: &[&str] = &[
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "reverse",
    "sort",
    "update",
    "setdefault",
    "popitem",
];

pub(super) fn unknown_method(
    state: &mut State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args) {
        Err(err)
            if err.kind() == ErrorKind::UnknownMethod
                && MUTATORS.contains(&method)
                && matches!(value.kind(), ValueKind::Seq | ValueKind::Map | ValueKind::Iterable) =>
        {
            Err(invalid(format!(
                "cannot call `{method}` on an immutable {}; hint: assign it with \
                 `{{% set name = ... %}}` first to get a mutable copy",
                value.kind()
            )))
        }
        other => other,
    }
}
