//! Stopping a run from outside: the first Ctrl-C (SIGINT) or SIGTERM asks everything to stop;
//! samples that finished are already on disk, and the run ends with exit code 130 and the
//! `--resume` hint. A second signal leaves at once.

use tokio::sync::watch;

/// Starts the listener on `runtime`; the receiver turns `true` at the first signal.
pub fn listen(runtime: &tokio::runtime::Runtime) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    runtime.spawn(async move {
        let mut terminate = terminate_stream();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = recv(&mut terminate) => {}
        }
        let _ = tx.send(true);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = recv(&mut terminate) => {}
        }
        // The user insists: nothing is left to save (every finished sample is on disk), and
        // the code still waiting would keep the process alive for no one.
        #[expect(clippy::exit, reason = "a second interrupt must end the process at once")]
        std::process::exit(130);
    });
    rx
}

#[cfg(unix)]
type Terminate = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Terminate = Option<()>;

#[cfg(unix)]
fn terminate_stream() -> Terminate {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
}

#[cfg(not(unix))]
fn terminate_stream() -> Terminate {
    None
}

#[cfg(unix)]
async fn recv(stream: &mut Terminate) {
    match stream {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Terminate) {
    std::future::pending().await
}
