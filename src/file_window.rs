//! [`FileWindow`]: byte ranges of a file read at known offsets through one window onto it.
//!
//! `samples.jsonl` is written in the order samples finish, and read back in sample order: each
//! record sits a few lines before or after the one read last. A `BufReader` asked to seek back
//! past the start of its buffer throws the buffer away and reads it again (a system call and up
//! to 64 KiB copied for a line of one), which it did for most records. A window that starts a
//! little before the range it loads serves those reads from memory. Its size adapts: a window
//! that served few reads (records far apart, as after a resume) makes the next one smaller, so
//! the worst case costs no more than the buffered reader did.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const SMALLEST: usize = 8 * 1024;
const LARGEST: usize = 256 * 1024;
/// A window that served fewer reads than this was mostly wasted.
const WORTH_IT: usize = 4;

#[derive(Debug)]
pub struct FileWindow {
    file: File,
    /// Where `buf` starts in the file.
    start: u64,
    buf: Vec<u8>,
    /// The size of the next window loaded.
    size: usize,
    /// Reads served by the current window.
    served: usize,
}

impl FileWindow {
    pub fn new(file: File) -> FileWindow {
        FileWindow {
            file,
            start: 0,
            buf: Vec::new(),
            size: LARGEST,
            served: 0,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The `len` bytes at `offset`; an error if the file ends before them.
    pub fn read(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            self.load(offset, end)?;
        }
        self.served += 1;
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }

    fn load(&mut self, offset: u64, end: u64) -> io::Result<()> {
        self.size = if self.served < WORTH_IT {
            (self.size / 2).max(SMALLEST)
        } else {
            (self.size * 2).min(LARGEST)
        };
        self.served = 0;
        // A quarter behind: the next record in sample order may have finished a little earlier.
        let start = offset.saturating_sub(self.size as u64 / 4);
        let want = usize::try_from(end - start).map_or(usize::MAX, |n| n.max(self.size));
        self.buf.clear();
        self.buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self.file.read_at(&mut self.buf[filled..], start + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        self.buf.truncate(filled);
        self.start = start;
        if start + (filled as u64) < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends before byte {end}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn ranges_read_in_any_order_come_back_whole_and_mostly_from_the_window() {
        let mut file = tempfile::tempfile().unwrap();
        let lines: Vec<String> = (0..5000)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 97)))
            .collect();
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for line in &lines {
            file.write_all(line.as_bytes()).unwrap();
            offsets.push(at);
            at += line.len() as u64;
        }
        let mut window = FileWindow::new(file);
        // Near order (each line up to eight places from its own), then far apart.
        let mut order: Vec<usize> = (0..lines.len()).collect();
        for chunk in order.chunks_mut(8) {
            chunk.reverse();
        }
        let mut loads = 0;
        for &i in &order {
            let before = window.start;
            assert_eq!(window.read(offsets[i], lines[i].len()).unwrap(), lines[i].as_bytes());
            loads += usize::from(window.start != before);
        }
        assert!(
            loads < 20,
            "{loads} windows for {} lines read in near order",
            lines.len()
        );
        for i in (0..lines.len()).step_by(611).chain([0, lines.len() - 1]) {
            assert_eq!(window.read(offsets[i], lines[i].len()).unwrap(), lines[i].as_bytes());
        }
        assert!(window.size < LARGEST, "far-apart reads shrink the window");
        let err = window.read(at - 2, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(window.read(offsets[3], lines[3].len()).unwrap(), lines[3].as_bytes());
    }
}
