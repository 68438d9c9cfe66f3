//! Strict undefined inside filters, as Jinja2's `StrictUndefined` has it. minijinja's strict
//! mode stops printing or iterating an undefined value, but many built-in filters quietly
//! accept one (`r.answer.line | join` renders `""`), so an output template that reads a
//! missing attribute would produce an empty answer that passes. Every filter except `default`
//! is registered again behind a check: an undefined value going into it is the engine's usual
//! undefined error, naming the expression.

use minijinja::value::{Rest, Value, ValueOrKwargs};
use minijinja::{Environment, Error, State, filters};

use super::filters::{merge_filter, zip_filter};
use super::json::{fromjson, json_escape, tojson_filter};
use super::mutation::undefined_error;
use super::regex::regex_replace;

/// Prefix of the names the unchecked filters stay registered under.
const UNCHECKED: &str = "__lfeval_unchecked_";

/// Registers every filter lfeval templates may use, each behind the undefined check.
pub(super) fn register(env: &mut Environment<'static>) {
    macro_rules! checked {
        ($($name:literal => $filter:expr),* $(,)?) => {$(
            env.add_filter(concat!("__lfeval_unchecked_", $name), $filter);
            env.add_filter($name, |state: &mut State<'_, '_>, args: Rest<ValueOrKwargs>| {
                checked(state, $name, args)
            });
        )*};
    }
    checked! {
        "safe" => filters::safe, "escape" => filters::escape, "e" => filters::escape,
        "lower" => filters::lower, "upper" => filters::upper, "title" => filters::title,
        "capitalize" => filters::capitalize, "replace" => filters::replace,
        "length" => filters::length, "count" => filters::length, "dictsort" => filters::dictsort,
        "items" => filters::items, "reverse" => filters::reverse, "trim" => filters::trim,
        "join" => filters::join, "split" => filters::split, "lines" => filters::lines,
        "round" => filters::round, "abs" => filters::abs, "int" => filters::int,
        "float" => filters::float, "attr" => filters::attr, "first" => filters::first,
        "last" => filters::last, "min" => filters::min, "max" => filters::max,
        "sort" => filters::sort, "list" => filters::list, "string" => filters::string,
        "bool" => filters::bool, "batch" => filters::batch, "slice" => filters::slice,
        "sum" => filters::sum, "indent" => filters::indent, "select" => filters::select,
        "reject" => filters::reject, "selectattr" => filters::selectattr,
        "rejectattr" => filters::rejectattr, "map" => filters::map, "groupby" => filters::groupby,
        "unique" => filters::unique, "chain" => filters::chain, "pprint" => filters::pprint,
        "format" => filters::format,
        "fromjson" => fromjson, "tojson" => tojson_filter, "json_escape" => json_escape,
        "zip" => zip_filter, "merge" => merge_filter, "regex_replace" => regex_replace,
    }
}

fn checked(state: &mut State<'_, '_>, name: &str, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let args: Vec<Value> = args.0.into_iter().map(ValueOrKwargs::into_value).collect();
    if let Some(value) = args.iter().find(|v| v.is_undefined()) {
        return Err(undefined_error(value));
    }
    state.apply_filter(&format!("{UNCHECKED}{name}"), &args)
}
