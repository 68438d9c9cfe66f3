//! Response bodies as text: the `charset` a `Content-Type` declares, and decoding with it
//! (UTF-8 when none is declared), as `custom_connection` and `lfeval.http` both read bodies.

/// The `charset` parameter of a `Content-Type` value.
pub fn charset_of(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

fn encoding(content_type: Option<&str>) -> &'static encoding_rs::Encoding {
    content_type
        .and_then(charset_of)
        .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8)
}

/// Whether a body of this `Content-Type` is read as UTF-8.
pub fn is_utf8(content_type: Option<&str>) -> bool {
    encoding(content_type) == encoding_rs::UTF_8
}

/// Text of a body in its declared charset, invalid sequences replaced.
pub fn decode(bytes: Vec<u8>, content_type: Option<&str>) -> String {
    let encoding = encoding(content_type);
    if encoding == encoding_rs::UTF_8 {
        return match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
    }
    encoding.decode(&bytes).0.into_owned()
}
