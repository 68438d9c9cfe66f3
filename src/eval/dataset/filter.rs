//! Dataset filters: each `filters:` entry compiled once into a check on the value the
//! caller's Jinja evaluator returns for the row.

use serde_json::Value;

use crate::diagnostic::describe_value;

use super::{DatasetError, FilterOp, FilterSpec, Location};

pub(super) struct CompiledFilter {
    pub(super) expression: String,
    op: FilterOp,
    check: Check,
}

pub(super) enum Check {
    Equals(Value),
    NotEquals(Value),
    Order(f64),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists,
    NotExists,
    IsTrue,
    IsFalse,
}

pub(super) fn compile_filter(key: &str, index: usize, filter: &FilterSpec) -> Result<CompiledFilter, DatasetError> {
    let invalid = |problem: String| DatasetError::InvalidFilter {
        key: key.to_owned(),
        index,
        expression: filter.expression.clone(),
        problem,
    };
    if filter.expression.trim().is_empty() {
        return Err(invalid("`expression` is empty".into()));
    }
    let op = filter.op;
    let value = || -> Result<Value, DatasetError> {
        if filter.values.is_some() {
            return Err(invalid(format!("`{op}` takes `value`, not `values`")));
        }
        filter
            .value
            .clone()
            .ok_or_else(|| invalid(format!("`{op}` needs a `value`")))
    };
    let values = || -> Result<Vec<Value>, DatasetError> {
        if filter.value.is_some() {
            return Err(invalid(format!("`{op}` takes `values`, not `value`")));
        }
        filter
            .values
            .clone()
            .ok_or_else(|| invalid(format!("`{op}` needs a `values` list")))
    };
    let unary = || -> Result<(), DatasetError> {
        if filter.value.is_some() || filter.values.is_some() {
            return Err(invalid(format!("`{op}` takes neither `value` nor `values`")));
        }
        Ok(())
    };
    let check = match op {
        FilterOp::Equals => Check::Equals(value()?),
        FilterOp::NotEquals => Check::NotEquals(value()?),
        FilterOp::GreaterThan | FilterOp::LessThan | FilterOp::GreaterOrEqual | FilterOp::LessOrEqual => {
            let value = value()?;
            let bound = ordinal(&value).ok_or_else(|| {
                invalid(format!(
                    "`{op}` needs a number or boolean `value`, got {}",
                    describe_value(&value)
                ))
            })?;
            Check::Order(bound)
        }
        FilterOp::In => Check::In(values()?),
        FilterOp::NotIn => Check::NotIn(values()?),
        FilterOp::Exists => unary().map(|()| Check::Exists)?,
        FilterOp::NotExists => unary().map(|()| Check::NotExists)?,
        FilterOp::IsTrue => unary().map(|()| Check::IsTrue)?,
        FilterOp::IsFalse => unary().map(|()| Check::IsFalse)?,
    };
    Ok(CompiledFilter {
        expression: filter.expression.clone(),
        op,
        check,
    })
}

impl CompiledFilter {
    pub(super) fn passes(&self, actual: &Value, location: &Location) -> Result<bool, DatasetError> {
        Ok(match &self.check {
            Check::Equals(expected) => json_eq(actual, expected),
            Check::NotEquals(expected) => !json_eq(actual, expected),
            Check::Order(bound) => {
                let Some(actual) = ordinal(actual) else {
                    return Err(DatasetError::FilterNotNumeric {
                        location: location.clone(),
                        expression: self.expression.clone(),
                        op: self.op,
                        found: describe_value(actual),
                    });
                };
                match self.op {
                    FilterOp::GreaterThan => actual > *bound,
                    FilterOp::LessThan => actual < *bound,
                    FilterOp::GreaterOrEqual => actual >= *bound,
                    // `Order` is only built for the four ordering ops.
                    _ => actual <= *bound,
                }
            }
            Check::In(values) => values.iter().any(|v| json_eq(actual, v)),
            Check::NotIn(values) => !values.iter().any(|v| json_eq(actual, v)),
            Check::Exists => !actual.is_null(),
            Check::NotExists => actual.is_null(),
            Check::IsTrue => truthy(actual),
            Check::IsFalse => !truthy(actual),
        })
    }
}

/// JSON equality where numbers compare by value, like Python's `1 == 1.0`.
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

pub(super) fn ordinal(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

pub(super) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
