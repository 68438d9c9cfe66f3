//! The `{% set %}` rewrite: before compiling, the right-hand side of every `{% set NAME = EXPR %}`
//! is wrapped in the mutable-copy function, so values assigned in a template can be mutated the
//! way Python's Jinja2 allows. Only text inside a line is inserted, so line numbers are unchanged.

/// Name of the function the `{% set %}` rewrite wraps right-hand sides in.
/// Text inserted by the `{% set %}` rewrite, in original-source byte offsets.
#[derive(Debug, Clone, Copy)]
pub(super) struct Insertion {
    pub(super) at: usize,
    pub(super) len: usize,
}

pub(super) const MUTABLE_FN: &str = "__lfeval_mutable";

/// Wraps the right-hand side of `{% set NAME = EXPR %}` (and `NAME.attr`) in the mutable-copy
/// function. Comments, `{{ }}` blocks, string literals and `{% raw %}` sections are skipped;
/// only text inside a line is inserted, so line numbers are unchanged.
pub(super) fn rewrite_sets(src: &str) -> (String, Vec<Insertion>) {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 32);
    let mut insertions = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'#' => i = find(b, i + 2, b"#}").map_or(b.len(), |p| p + 2),
            b'{' => i = scan_to_close(b, i + 2, b"}}"),
            b'%' => {
                let mut j = i + 2;
                if j < b.len() && matches!(b[j], b'-' | b'+') {
                    j += 1;
                }
                j = skip_ws(b, j);
                let word_end = ident_end(b, j);
                let end = scan_to_close(b, word_end, b"%}");
                match &src[j..word_end] {
                    "raw" => i = find_endraw(b, end),
                    "set" => {
                        if let Some((es, ee)) = set_expr_range(b, word_end, end) {
                            out.push_str(&src[copied..es]);
                            out.push_str(MUTABLE_FN);
                            out.push('(');
                            insertions.push(Insertion {
                                at: es,
                                len: MUTABLE_FN.len() + 1,
                            });
                            out.push_str(&src[es..ee]);
                            out.push(')');
                            insertions.push(Insertion { at: ee, len: 1 });
                            copied = ee;
                        }
                        i = end;
                    }
                    _ => i = end,
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&src[copied..]);
    (out, insertions)
}

pub(super) fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

pub(super) fn ident_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    i
}

/// Position just past `close`, skipping string literals; the end of input if unterminated.
pub(super) fn scan_to_close(b: &[u8], mut i: usize, close: &[u8]) -> usize {
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ if b[i..].starts_with(close) => return i + close.len(),
            _ => i += 1,
        }
    }
    b.len()
}

/// Position just past the `{% endraw %}` tag that closes a raw block.
pub(super) fn find_endraw(b: &[u8], mut i: usize) -> usize {
    while let Some(p) = find(b, i, b"{%") {
        let mut j = p + 2;
        if j < b.len() && matches!(b[j], b'-' | b'+') {
            j += 1;
        }
        j = skip_ws(b, j);
        let word_end = ident_end(b, j);
        if &b[j..word_end] == b"endraw" {
            return find(b, word_end, b"%}").map_or(b.len(), |p| p + 2);
        }
        i = p + 2;
    }
    b.len()
}

/// For a `set` tag whose keyword ends at `i` and whose closing `%}` ends at `end`, the byte range
/// of the right-hand side expression, if this is a single-target assignment.
pub(super) fn set_expr_range(b: &[u8], i: usize, end: usize) -> Option<(usize, usize)> {
    if end > b.len() || end < 2 || !b[end - 2..end].starts_with(b"%}") {
        return None;
    }
    let mut j = skip_ws(b, i);
    if j == i {
        return None;
    }
    // target: NAME or NAME.attr
    let name_end = ident_end(b, j);
    if name_end == j || b[j].is_ascii_digit() {
        return None;
    }
    j = name_end;
    while j < b.len() && b[j] == b'.' {
        let attr_end = ident_end(b, j + 1);
        if attr_end == j + 1 {
            return None;
        }
        j = attr_end;
    }
    j = skip_ws(b, j);
    if j >= b.len() || b[j] != b'=' || b.get(j + 1) == Some(&b'=') {
        return None;
    }
    let start = skip_ws(b, j + 1);
    let mut stop = end - 2;
    if stop > start && matches!(b[stop - 1], b'-' | b'+') {
        stop -= 1;
    }
    while stop > start && b[stop - 1].is_ascii_whitespace() {
        stop -= 1;
    }
    (stop > start).then_some((start, stop))
}
