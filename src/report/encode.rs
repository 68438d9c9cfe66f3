//! Writing `report.html`: the template with its CSS and JS inlined, then
//! the data tags streamed in place of the data marker — meta, index and comparison as ASCII-only
//! JSON (`<` and every non-ASCII character as `\uXXXX`), and the full records in chunks of
//! [`CHUNK_SIZE`], each gzip-compressed and base64-encoded as its lines stream through (into a
//! side file, on a thread of their own, while the index is built). Nothing holds the whole page.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;

use crate::redact::redact;
use crate::report::finished_run::{OrderedRecords, RunReadError};
use crate::report::index::Index;

const TEMPLATE: &str = include_str!("assets/report.html");
const CSS: &str = include_str!("assets/report.css");
const JS: &str = include_str!("assets/report.js");
const CSS_MARK: &str = "/*@@CSS@@*/";
const JS_MARK: &str = "//@@JS@@";
const DATA_MARK: &str = "<!--@@DATA@@-->";

/// Records per detail chunk: opening a sample decodes one chunk.
pub const CHUNK_SIZE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{0}")]
    Write(#[from] io::Error),
    #[error(transparent)]
    Read(#[from] RunReadError),
    #[error("cannot serialize the report data: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("a record of the run is not UTF-8")]
    NotUtf8,
}

/// The template split at the data marker, with CSS and JS in place.
fn page() -> (String, String) {
    let page = TEMPLATE.replacen(CSS_MARK, CSS, 1).replacen(JS_MARK, JS, 1);
    match page.split_once(DATA_MARK) {
        Some((head, tail)) => (head.to_owned(), tail.to_owned()),
        // The template is compiled in and tested to hold the marker.
        None => (page, String::new()),
    }
}

/// Everything that goes into the page.
pub struct PageData<'a, M: Serialize, C: Serialize> {
    pub meta: &'a M,
    pub index: Index,
    pub comparison: Option<&'a C>,
}

/// Writes the whole page around `chunks`, the records' tags as [`write_chunks`] wrote them (of
/// the records the index was built from, in the same order).
pub fn write_page<M: Serialize, C: Serialize>(
    out: &mut impl Write,
    data: PageData<'_, M, C>,
    chunks: &mut impl io::Read,
) -> Result<(), EncodeError> {
    let (head, tail) = page();
    out.write_all(head.as_bytes())?;
    small_json_tag(out, "lfeval-meta", data.meta)?;
    // The index is big: its strings were masked as they went in, so it streams straight out.
    out.write_all(br#"<script type="application/json" id="lfeval-index">"#)?;
    data.index.write_json(&mut AsciiJson::new(&mut *out))?;
    out.write_all(b"</script>\n")?;
    if let Some(comparison) = data.comparison {
        small_json_tag(out, "lfeval-comparison", comparison)?;
    }
    io::copy(chunks, out)?;
    out.write_all(tail.as_bytes())?;
    Ok(())
}

/// Writes the records' tags: chunks of [`CHUNK_SIZE`] records, each a JSON array of their lines,
/// gzip-compressed and base64-encoded. Independent of the rest of the page, so it can be
/// written while the index is built.
pub fn write_chunks(out: &mut impl Write, records: &mut OrderedRecords) -> Result<(), EncodeError> {
    let mut line = Vec::new();
    let count = records.len().div_ceil(CHUNK_SIZE);
    for chunk in 0..count {
        write!(
            out,
            r#"<script type="application/octet-stream" id="lfeval-chunk-{chunk}" data-encoding="gzip-base64">"#
        )?;
        let base64 = base64::write::EncoderWriter::new(&mut *out, &STANDARD);
        // Level 1: a third of the CPU of the default level for a page about 40% larger, and the
        // chunks are only decoded when a sample is opened.
        let mut gzip = GzEncoder::new(base64, Compression::fast());
        gzip.write_all(b"[")?;
        let start = chunk * CHUNK_SIZE;
        for i in start..records.len().min(start + CHUNK_SIZE) {
            if i > start {
                gzip.write_all(b",")?;
            }
            records.line(i, &mut line)?;
            let text = std::str::from_utf8(&line).map_err(|_| EncodeError::NotUtf8)?;
            gzip.write_all(redact(text).as_bytes())?;
        }
        gzip.write_all(b"]")?;
        gzip.finish()?.finish()?;
        out.write_all(b"</script>\n")?;
    }
    Ok(())
}

/// A plain JSON tag for a small value, masked as a whole.
fn small_json_tag(out: &mut impl Write, id: &str, value: &impl Serialize) -> Result<(), EncodeError> {
    let text = serde_json::to_string(value)?;
    let text = redact(&text);
    write!(out, r#"<script type="application/json" id="{id}">"#)?;
    AsciiJson::new(&mut *out).write_all(text.as_bytes())?;
    out.write_all(b"</script>\n")?;
    Ok(())
}

/// Rewrites serialized JSON as it passes: `<` becomes `\u003c` (so nothing can end the script
/// element or open a comment in it) and every non-ASCII character `\uXXXX` (a surrogate pair
/// above U+FFFF), which keeps Blink's parser on its fast path. Both can only occur inside JSON
/// strings, so the document means the same.
pub struct AsciiJson<W: Write> {
    inner: W,
    /// The bytes of a character split across two writes.
    pending: Vec<u8>,
}

impl<W: Write> AsciiJson<W> {
    pub fn new(inner: W) -> AsciiJson<W> {
        AsciiJson {
            inner,
            pending: Vec::new(),
        }
    }

    fn escape_char(&mut self, c: char) -> io::Result<()> {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            write!(self.inner, "\\u{unit:04x}")?;
        }
        Ok(())
    }
}

impl<W: Write> Write for AsciiJson<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if !self.pending.is_empty() || b >= 0x80 {
                self.inner.write_all(&buf[start..i])?;
                self.pending.push(b);
                let need = match self.pending[0] {
                    0xf0..=0xff => 4,
                    0xe0..=0xef => 3,
                    _ => 2,
                };
                if self.pending.len() == need {
                    let text = std::str::from_utf8(&self.pending)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let c = text.chars().next().unwrap_or('\u{fffd}');
                    self.pending.clear();
                    self.escape_char(c)?;
                }
                i += 1;
                start = i;
                continue;
            }
            if b == b'<' {
                self.inner.write_all(&buf[start..i])?;
                self.inner.write_all(b"\\u003c")?;
                start = i + 1;
            }
            i += 1;
        }
        self.inner.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_holds_each_marker_once_and_assets_cannot_end_their_element() {
        for mark in [CSS_MARK, JS_MARK, DATA_MARK] {
            assert_eq!(TEMPLATE.matches(mark).count(), 1, "{mark}");
        }
        assert!(!CSS.to_ascii_lowercase().contains("</style"));
        assert!(!JS.to_ascii_lowercase().contains("</script"));
        let (head, tail) = page();
        assert!(head.contains("<style>") && tail.contains("</html>"));
    }

    #[test]
    fn json_text_becomes_ascii_with_angle_brackets_escaped() {
        let value = serde_json::json!({"t": "</script><!-- naïve 数学 😀"});
        let mut out = Vec::new();
        // One byte at a time: characters split across writes still come out whole.
        let text = serde_json::to_vec(&value).unwrap();
        let mut w = AsciiJson::new(&mut out);
        for b in &text {
            w.write_all(std::slice::from_ref(b)).unwrap();
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.is_ascii());
        assert!(!out.contains('<'));
        assert!(out.contains(r"\ud83d\ude00"), "{out}");
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, value);
    }
}
