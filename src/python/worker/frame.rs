//! Frames on the pipes between lfeval and a worker: an 8-byte big-endian length, then that many
//! bytes of JSON. The reader refuses a length above its bound before allocating anything.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(super) fn write<T: Serialize>(w: &mut impl Write, message: &T) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    w.write_all(&(body.len() as u64).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// The next frame, or `None` when the other side closed the pipe between frames.
pub(super) fn read<T: DeserializeOwned>(r: &mut impl Read, max_len: u64) -> io::Result<Option<T>> {
    let mut len = [0u8; 8];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u64::from_be_bytes(len);
    if len > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {max_len}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write(&mut buf, &vec!["a".to_owned(), "é".to_owned()]).unwrap();
        write(&mut buf, &"x".repeat(100)).unwrap();
        let mut r = buf.as_slice();
        let first: Option<Vec<String>> = read(&mut r, 1024).unwrap();
        assert_eq!(first, Some(vec!["a".to_owned(), "é".to_owned()]));
        let err = read::<String>(&mut r, 50).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut empty: &[u8] = &[];
        assert!(read::<String>(&mut empty, 10).unwrap().is_none());
        let mut cut: &[u8] = &buf[..buf.len() - 3];
        let _ = read::<Vec<String>>(&mut cut, 1024).unwrap();
        assert!(read::<String>(&mut cut, 1024).is_err(), "a frame cut short is an error");
    }
}
