//! `regex_replace`: Python `re.sub` semantics on the `regex` crate, with a compiled-pattern
//! cache and Python-style replacement templates (`\1`, `\g<name>`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use minijinja::value::{Kwargs, Rest, Value, ValueOrKwargs, from_args};
use minijinja::{Error, ErrorKind};

use super::mut_list::lock;
use super::mutation::{invalid, undefined_error};

pub(super) type RegexKey = (String, bool, bool);

pub(super) static REGEX_CACHE: LazyLock<Mutex<HashMap<RegexKey, regex::Regex>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub(super) fn compiled_regex(pattern: &str, multiline: bool, ignorecase: bool) -> Result<regex::Regex, Error> {
    let key = (pattern.to_string(), multiline, ignorecase);
    if let Some(re) = lock(&REGEX_CACHE).get(&key) {
        return Ok(re.clone());
    }
    let re = regex::RegexBuilder::new(pattern)
        .multi_line(multiline)
        .case_insensitive(ignorecase)
        .build()
        .map_err(|e| {
            invalid(format!(
                "invalid regular expression `{pattern}`: {}",
                regex_error_summary(&e)
            ))
        })?;
    let mut cache = lock(&REGEX_CACHE);
    if cache.len() >= 256 {
        cache.clear();
    }
    cache.insert(key, re.clone());
    Ok(re)
}

/// The one-line reason of a regex error (the full text repeats the pattern with a caret).
pub(super) fn regex_error_summary(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), str::to_string)
}

/// Translates a Python `re.sub` replacement template into the `regex` crate's syntax.
pub(super) fn translate_replacement(repl: &str, re: &regex::Regex) -> Result<String, Error> {
    let groups = re.captures_len(); // includes group 0
    let check_group = |n: usize| {
        if n < groups {
            Ok(format!("${{{n}}}"))
        } else {
            Err(invalid(format!("invalid group reference {n} in replacement")))
        }
    };
    let chars: Vec<char> = repl.chars().collect();
    let mut out = String::with_capacity(repl.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            out.push_str("$$");
            i += 1;
            continue;
        }
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&d) = chars.get(i + 1) else {
            return Err(invalid("bad escape (end of replacement)"));
        };
        i += 2;
        match d {
            'g' => {
                if chars.get(i) != Some(&'<') {
                    return Err(invalid("missing `<` after `\\g` in replacement"));
                }
                let Some(close) = chars[i..].iter().position(|c| *c == '>') else {
                    return Err(invalid("missing `>`, unterminated group name in replacement"));
                };
                let name: String = chars[i + 1..i + close].iter().collect();
                i += close + 1;
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
                    let n = name
                        .parse::<usize>()
                        .map_err(|_| invalid(format!("invalid group reference {name}")))?;
                    out.push_str(&check_group(n)?);
                } else if re.capture_names().flatten().any(|n| n == name) {
                    let _ = write!(out, "${{{name}}}");
                } else {
                    return Err(invalid(format!("unknown group name `{name}` in replacement")));
                }
            }
            '0' => {
                // octal escape: \0, \0o, \0oo
                let mut code = 0u32;
                let mut taken = 0;
                while taken < 2 && chars.get(i).is_some_and(|c| ('0'..='7').contains(c)) {
                    code = code * 8 + chars[i].to_digit(8).unwrap_or(0);
                    i += 1;
                    taken += 1;
                }
                push_literal(&mut out, char::from_u32(code).unwrap_or('\0'));
            }
            '1'..='9' => {
                let mut digits = String::from(d);
                if let Some(&e) = chars.get(i)
                    && e.is_ascii_digit()
                {
                    let octal = d <= '7' && e <= '7' && chars.get(i + 1).is_some_and(|c| ('0'..='7').contains(c));
                    if octal {
                        let text: String = [d, e, chars[i + 1]].iter().collect();
                        let code = u32::from_str_radix(&text, 8).unwrap_or(0);
                        if code > 0o377 {
                            return Err(invalid(format!("octal escape value \\{text} outside of range 0-0o377")));
                        }
                        push_literal(&mut out, char::from_u32(code).unwrap_or('\0'));
                        i += 2;
                        continue;
                    }
                    digits.push(e);
                    i += 1;
                }
                let n = digits.parse::<usize>().unwrap_or(usize::MAX);
                out.push_str(&check_group(n)?);
            }
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            '\\' => out.push('\\'),
            d if d.is_ascii_alphabetic() => {
                return Err(invalid(format!("bad escape \\{d} in replacement")));
            }
            d => {
                out.push('\\');
                push_literal(&mut out, d);
            }
        }
    }
    Ok(out)
}

pub(super) fn push_literal(out: &mut String, c: char) {
    if c == '$' {
        out.push_str("$$");
    } else {
        out.push(c);
    }
}

pub(super) fn regex_replace(
    value: &Value,
    pattern: &str,
    replacement: &str,
    rest: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    let rest = rest.into_values();
    let (positional, kwargs): (&[Value], Kwargs) = from_args(&rest)?;
    if positional.len() > 3 {
        return Err(Error::from(ErrorKind::TooManyArguments));
    }
    let flag = |i: usize, name: &str| -> Result<bool, Error> {
        match kwargs.get::<Option<bool>>(name)? {
            Some(b) => Ok(b),
            None => Ok(positional.get(i).is_some_and(Value::is_true)),
        }
    };
    let multiline = flag(0, "multiline")?;
    let ignorecase = flag(1, "ignorecase")?;
    let count = match kwargs.get::<Option<i64>>("count")? {
        Some(c) => c,
        None => match positional.get(2) {
            Some(v) => i64::try_from(v.clone())?,
            None => 0,
        },
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    let Some(text) = value.as_str() else {
        return Err(invalid(format!(
            "`regex_replace` expects a string, got {}",
            value.kind()
        )));
    };
    let re = compiled_regex(pattern, multiline, ignorecase)?;
    let template = translate_replacement(replacement, &re)?;
    Ok(Value::from(python_sub(&re, text, &template, count)))
}

/// `re.sub` with Python 3.7+ empty-match rules: an empty match right after a previous match is
/// allowed, an empty match at the position where the previous empty match was is not.
pub(super) fn python_sub(re: &regex::Regex, text: &str, template: &str, count: i64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut pos = 0;
    let mut must_advance = false;
    let mut n = 0i64;
    while pos <= text.len() && (count <= 0 || n < count) {
        let Some(mut caps) = re.captures_at(text, pos) else {
            break;
        };
        let Some(mut m) = caps.get(0) else {
            break;
        };
        if must_advance && m.is_empty() && m.start() == pos {
            let Some(next) = text[pos..].chars().next() else {
                break;
            };
            let Some(retry) = re.captures_at(text, pos + next.len_utf8()) else {
                break;
            };
            caps = retry;
            let Some(retry_m) = caps.get(0) else {
                break;
            };
            m = retry_m;
        }
        out.push_str(&text[last..m.start()]);
        caps.expand(template, &mut out);
        last = m.end();
        pos = m.end();
        must_advance = m.is_empty();
        n += 1;
    }
    out.push_str(&text[last..]);
    out
}
