//! Run progress on stderr: a bar on a terminal (done/total, rate, ETA, errors, retries and the
//! limit holding the run back), plain periodic lines otherwise, nothing with `--no-progress`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::printer::Printer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Off,
}

pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    total: AtomicU64,
    label: Mutex<String>,
    limit: Mutex<String>,
    started: Instant,
    last_line: Mutex<Instant>,
    printer: Printer,
}

/// How often plain progress lines are printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(mode: Mode, printer: Printer) -> Arc<Progress> {
        let bar = (mode == Mode::Bar).then(|| {
            // Hidden until `start` knows the total, so it never flashes `0/0`.
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Arc::new(Progress {
            mode,
            bar,
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            total: AtomicU64::new(0),
            label: Mutex::new(String::new()),
            limit: Mutex::new(String::new()),
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
            printer,
        })
    }

    /// Starts counting a new task specification.
    pub fn start(&self, label: &str, total: u64, already_done: u64) {
        self.done.store(already_done, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.retries.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        if let Ok(mut l) = self.label.lock() {
            label.clone_into(&mut l);
        }
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(total);
            bar.set_position(already_done);
            bar.set_prefix(label.to_owned());
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        }
        if self.mode == Mode::Lines {
            self.printer.errln(&format!(
                "{label}: {total} sample(s){}",
                if already_done > 0 {
                    format!(", {already_done} already done")
                } else {
                    String::new()
                }
            ));
        }
    }

    pub fn finish_sample(&self, ok: bool, retries: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.retries.fetch_add(retries, Ordering::Relaxed);
        self.refresh();
    }

    /// Why the run is not going faster, e.g. "waiting on rate_limit 60/min of `gpt`".
    pub fn set_limit(&self, text: String) {
        if let Ok(mut l) = self.limit.lock() {
            *l = text;
        }
        self.refresh();
    }

    fn message(&self) -> String {
        let errors = self.errors.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        let limit = self.limit.lock().map(|l| l.clone()).unwrap_or_default();
        let mut parts = vec![
            rate(self.done.load(Ordering::Relaxed), self.started.elapsed()),
            format!("{errors} error(s)"),
            format!("{retries} retr{}", if retries == 1 { "y" } else { "ies" }),
        ];
        if !limit.is_empty() {
            parts.push(limit);
        }
        parts.join(", ")
    }

    pub fn refresh(&self) {
        match self.mode {
            Mode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(self.done.load(Ordering::Relaxed));
                    bar.set_message(self.message());
                }
            }
            Mode::Lines => {
                let Ok(mut last) = self.last_line.lock() else { return };
                if last.elapsed() >= LINE_INTERVAL {
                    *last = Instant::now();
                    drop(last);
                    self.print_line();
                }
            }
            Mode::Off => {}
        }
    }

    fn print_line(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let label = self.label.lock().map(|l| l.clone()).unwrap_or_default();
        self.printer
            .errln(&format!("{label}: {done}/{total} samples, {}", self.message()));
    }

    /// Clears the bar (or prints a last line) when a task specification is done.
    pub fn end(&self) {
        match self.mode {
            Mode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.finish_and_clear();
                }
            }
            Mode::Lines => self.print_line(),
            Mode::Off => {}
        }
    }
}

/// Samples per second as people read it: whole numbers from 10/s up, one decimal below.
fn rate(done: u64, elapsed: Duration) -> String {
    let per_sec = done as f64 / elapsed.as_secs_f64().max(1e-3);
    if per_sec >= 10.0 {
        format!("{per_sec:.0}/s")
    } else {
        format!("{per_sec:.1}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_at_most_one_decimal() {
        assert_eq!(rate(1234, Duration::from_secs(1)), "1234/s");
        assert_eq!(rate(3, Duration::from_secs(2)), "1.5/s");
        assert_eq!(rate(0, Duration::ZERO), "0.0/s");
    }
}
