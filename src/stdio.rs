//! lfeval's own standard output, kept apart from whatever snippets write.
//!
//! A snippet's `print` is captured per call, but a thread it leaves behind, a subprocess it
//! starts or a C extension writes to file descriptor 1 directly, and anything there would be
//! mixed into lfeval's results (`--json` would stop being JSON). Once [`protect`] ran, lfeval
//! writes its results to a private copy of the original stdout, and fd 1, which children
//! inherit, is a pipe whose lines are masked and forwarded to stderr. Worker processes
//! (`isolation: process`) get that pipe as their stderr, and keep their own fd 0/1 for the
//! protocol with lfeval ([`worker_protocol`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// lfeval's stdout after [`protect`].
static REAL_STDOUT: OnceLock<Mutex<File>> = OnceLock::new();
/// Signals that the forwarding thread has written everything it read.
static FORWARDED: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

/// How long [`finish`] waits for stray output still in the pipe.
const DRAIN_WAIT: Duration = Duration::from_millis(300);
/// A stray "line" longer than this is forwarded in pieces.
const MAX_LINE: usize = 64 * 1024;

/// Keeps fd 1 for lfeval alone; see the module docs. Call once, after the interpreter is up
/// and before anything runs a snippet. Calling it again does nothing.
pub fn protect() -> io::Result<()> {
    if REAL_STDOUT.get().is_some() {
        return Ok(());
    }
    let real = dup_cloexec(1)?;
    let (read, write) = pipe_cloexec()?;
    dup2(write.as_raw_fd(), 1)?;
    drop(write);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("lfeval-stray-output".to_owned())
        .spawn(move || {
            forward(File::from(read));
            let _ = done_tx.send(());
        })?;
    *FORWARDED.lock().unwrap_or_else(PoisonError::into_inner) = Some(done_rx);
    let _ = REAL_STDOUT.set(Mutex::new(File::from(real)));
    Ok(())
}

/// Writes (and flushes) bytes to lfeval's stdout: the private copy once [`protect`] ran.
pub fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    match REAL_STDOUT.get() {
        Some(file) => {
            let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
            file.write_all(bytes)?;
            file.flush()
        }
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(bytes)?;
            stdout.flush()
        }
    }
}

/// A descriptor for children's stray output (the forwarding pipe), when [`protect`] ran.
pub fn stray_output() -> Option<OwnedFd> {
    REAL_STDOUT.get()?;
    dup_cloexec(1).ok()
}

/// Forwards what is still in the pipe before the process exits. Processes that inherited the
/// pipe (a snippet's leftover subprocess) keep it open, so this waits only [`DRAIN_WAIT`].
pub fn finish() {
    if REAL_STDOUT.get().is_none() {
        return;
    }
    // Our end of the pipe goes; once no child holds it either, the forwarder reads to the end.
    if let Ok(null) = File::open("/dev/null") {
        let _ = dup2(null.as_raw_fd(), 1);
    }
    let done = FORWARDED.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(done) = done {
        let _ = done.recv_timeout(DRAIN_WAIT);
    }
}

/// For `lfeval __worker`: takes fd 0 and fd 1 as the protocol channel to lfeval and points
/// them elsewhere (fd 0 at `/dev/null`, fd 1 at stderr) so that nothing a snippet does can
/// read from or write into the channel. Call before any other thread starts.
pub fn worker_protocol() -> io::Result<(File, File)> {
    let input = File::from(dup_cloexec(0)?);
    let output = File::from(dup_cloexec(1)?);
    let null = File::open("/dev/null")?;
    dup2(null.as_raw_fd(), 0)?;
    dup2(2, 1)?;
    Ok((input, output))
}

fn forward(mut pipe: File) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            emit(&line);
        }
        if pending.len() > MAX_LINE {
            let piece = std::mem::take(&mut pending);
            emit(&piece);
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

fn emit(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let masked = crate::redact::redact(&text);
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(masked.as_bytes());
    if !masked.ends_with('\n') {
        let _ = stderr.write_all(b"\n");
    }
}

fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor (or fails); we own the result.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: dup2 on descriptors this process holds; `to` is replaced atomically.
        if unsafe { libc::dup2(from, to) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
