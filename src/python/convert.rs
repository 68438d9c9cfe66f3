//! Conversions between `serde_json::Value` and Python objects for snippet arguments and return
//! values. Integers stay integers and floats stay floats in both directions; dict order is kept.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Deeper values are rejected rather than recursed into (a self-referencing list would otherwise
/// overflow the stack).
const MAX_DEPTH: usize = 128;

pub(super) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                // Finite by construction: serde_json numbers are never NaN or infinite.
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            if let Some(id) = map.get(super::host::HOST_OBJECT).and_then(Value::as_u64) {
                return super::host::to_py(py, id);
            }
            if let (Some(Value::String(kind)), Some(value)) = (map.get(super::LF_OBJECT), map.get("value")) {
                let fallback = map.get("fallback").unwrap_or(&Value::Null);
                return support(py, "lf_object")?.call1((kind.as_str(), to_py(py, value)?, to_py(py, fallback)?));
            }
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            record_class(py)?.call1((dict,))?
        }
    })
}

/// A function of `_lfeval_support`.
fn support<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("_lfeval_support")?.getattr(name)
}

/// `_lfeval_support.Record`: a `dict` whose keys also read as attributes, so snippets written
/// for the platform's objects (`solver_output.output`, `sample.answer`) and for plain dicts
/// (`sample["answer"]`) both work.
fn record_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLASS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    CLASS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("_lfeval_support")?.getattr("Record")?.unbind())
        })
        .map(|class| class.bind(py))
}

/// Why a Python value has no JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unconvertible {
    pub type_name: String,
    /// `None` when the top-level value itself is the problem.
    pub path: Option<String>,
    pub reason: Option<String>,
}

pub(super) fn from_py(obj: &Bound<'_, PyAny>) -> Result<Value, Unconvertible> {
    let mut path = String::from("$");
    convert(obj, &mut path, 0)
}

fn convert(obj: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value, Unconvertible> {
    let fail = |path: &str, reason: Option<String>| Unconvertible {
        type_name: type_name(obj),
        path: (path != "$").then(|| path.to_owned()),
        reason,
    };
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_string_lossy().into_owned()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        let digits = obj.str().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        return Err(fail(
            path,
            Some(format!("integer `{}` does not fit in 64 bits", shorten(&digits))),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        return Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| fail(path, Some(format!("float `{x}` has no JSON form"))));
    }
    let is_list = obj.cast::<PyList>().is_ok();
    let is_tuple = obj.cast::<PyTuple>().is_ok();
    let is_dict = obj.cast::<PyDict>().is_ok();
    if (is_list || is_tuple || is_dict) && depth >= MAX_DEPTH {
        return Err(fail(path, Some(format!("nested deeper than {MAX_DEPTH} levels"))));
    }
    if is_list || is_tuple {
        let items: Vec<Bound<'_, PyAny>> = match obj.cast::<PyList>() {
            Ok(list) => list.iter().collect(),
            Err(_) => obj.cast::<PyTuple>().map(|t| t.iter().collect()).unwrap_or_default(),
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            out.push(convert(item, path, depth + 1)?);
            path.truncate(len);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut out = Map::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let key = json_key(&k).ok_or_else(|| Unconvertible {
                type_name: type_name(&k),
                path: Some(format!("{path} (a key)")),
                reason: Some("dict keys must be str, int, float, bool or None".to_owned()),
            })?;
            let len = path.len();
            push_key(path, &key);
            let value = convert(&v, path, depth + 1)?;
            path.truncate(len);
            out.insert(key, value);
        }
        return Ok(Value::Object(out));
    }
    // pydantic models (`latticeflow.core` objects a snippet returns) as their JSON form.
    if let Ok(dump) = obj.getattr("model_dump")
        && dump.is_callable()
    {
        let kwargs = pyo3::types::PyDict::new(obj.py());
        let dumped = kwargs
            .set_item("mode", "json")
            .and_then(|()| kwargs.set_item("by_alias", true))
            // lf's models leave unset fields (an item's `type`) out by default.
            .and_then(|()| kwargs.set_item("exclude_unset", false))
            .and_then(|()| dump.call((), Some(&kwargs)));
        return match dumped {
            Ok(value) => convert(&value, path, depth + 1),
            Err(e) => Err(fail(path, Some(format!("`model_dump()` failed: {e}")))),
        };
    }
    Err(fail(path, None))
}

/// Keys the way `json.dumps` writes them, so snippets behave as they would under plain Python.
fn json_key(key: &Bound<'_, PyAny>) -> Option<String> {
    if key.is_none() {
        return Some("null".to_owned());
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Some(if b.is_true() { "true" } else { "false" }.to_owned());
    }
    if let Ok(s) = key.cast::<PyString>() {
        return Some(s.to_string_lossy().into_owned());
    }
    if key.cast::<PyInt>().is_ok() || key.cast::<PyFloat>().is_ok() {
        return key.repr().ok().map(|r| r.to_string_lossy().into_owned());
    }
    None
}

fn push_key(path: &mut String, key: &str) {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{}]", Value::String(key.to_owned())));
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// `module.QualName` for non-builtin types, so `httpx.Response` reads as such.
pub(super) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj.get_type();
    let name = ty
        .qualname()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".to_owned());
    let module = ty
        .module()
        .map(|m| m.to_string_lossy().into_owned())
        .unwrap_or_default();
    if module.is_empty() || module == "builtins" || module == "__main__" || module.starts_with("lfeval_snippet_") {
        name
    } else {
        format!("{module}.{name}")
    }
}
