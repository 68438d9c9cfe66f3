//! Telling when Python itself is what holds a run back: the interpreter runs one thread at a
//! time, so sync snippets whose calls keep it busy nearly all of a specification's time cannot
//! go faster at any `max_concurrent_requests`. Typical cause: a snippet doing HTTP with httpx,
//! whose client costs milliseconds of CPU a call. Shown live in the progress line and once,
//! with what to do about it, when the run ends.

use std::time::{Duration, Instant};

use crate::python::Busy;

/// Busier than this, Python is what the run waits on.
const SATURATED: f64 = 0.8;
/// Specifications shorter than this are mostly start-up; they get no note.
const MIN_WALL: Duration = Duration::from_secs(1);

/// The note for a specification whose sync snippets kept Python `busy` for most of its `wall`
/// time, when its model could have had more calls in flight (`concurrency` above one).
pub fn note(spec: &str, concurrency: usize, busy: Busy, wall: Duration) -> Option<String> {
    if concurrency <= 1 || wall < MIN_WALL || busy.calls == 0 {
        return None;
    }
    let share = percent_busy(busy, wall)?;
    let per_call = busy.cpu.as_secs_f64() * 1000.0 / busy.calls as f64;
    Some(format!(
        "snippets kept Python busy {share:.0}% of `{spec}`'s {:.1} s ({per_call:.2} ms of CPU a call): Python runs one thread at a time, so more concurrency will not make them faster\nhint: a snippet waiting on HTTP can wait outside Python with `from lfeval import http`; a CPU-bound one can run in `isolation: process` workers, each with an interpreter of its own",
        wall.as_secs_f64(),
    ))
}

/// How much of `wall` Python was busy, in percent (at most 100), when that is saturation.
fn percent_busy(busy: Busy, wall: Duration) -> Option<f64> {
    let share = busy.cpu.as_secs_f64() / wall.as_secs_f64().max(1e-3);
    (share >= SATURATED).then(|| (share * 100.0).min(100.0))
}

/// How busy Python was since the previous look, for the progress line.
pub struct BusyMeter {
    last: Busy,
    at: Instant,
}

impl BusyMeter {
    pub fn new(now: Busy) -> BusyMeter {
        BusyMeter {
            last: now,
            at: Instant::now(),
        }
    }

    /// `"held by Python (busy 93%)"` when sync snippets kept Python saturated since the last
    /// call, else `None`.
    pub fn status(&mut self, now: Busy) -> Option<String> {
        let elapsed = self.at.elapsed();
        let used = now.since(self.last);
        self.last = now;
        self.at = Instant::now();
        percent_busy(used, elapsed).map(|share| format!("held by Python (busy {share:.0}%)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(cpu_ms: u64, calls: u64) -> Busy {
        Busy {
            cpu: Duration::from_millis(cpu_ms),
            calls,
        }
    }

    #[test]
    fn a_specification_whose_snippets_kept_python_saturated_gets_a_note_with_its_figures() {
        let note = note("echo", 64, busy(2_790, 2_000), Duration::from_secs(3)).expect("a note");
        assert!(
            note.starts_with("snippets kept Python busy 93% of `echo`'s 3.0 s (1.40 ms of CPU a call)"),
            "{note}"
        );
        assert!(note.contains("\nhint: "), "{note}");
    }

    #[test]
    fn idle_python_one_call_at_a_time_or_a_short_run_gets_no_note() {
        let wall = Duration::from_secs(3);
        assert_eq!(note("s", 64, busy(1_500, 2_000), wall), None, "half busy");
        assert_eq!(note("s", 1, busy(3_000, 2_000), wall), None, "concurrency 1");
        assert_eq!(note("s", 8, busy(900, 10), Duration::from_millis(900)), None, "short");
        assert_eq!(note("s", 8, Busy::default(), wall), None, "no snippet calls");
    }

    #[test]
    fn the_progress_line_says_python_holds_the_run_while_it_is_saturated_and_only_then() {
        let mut meter = BusyMeter::new(Busy::default());
        let saturated = busy(10_000, 5);
        assert_eq!(meter.status(saturated).as_deref(), Some("held by Python (busy 100%)"));
        assert_eq!(meter.status(saturated), None, "no CPU used since the last look");
    }
}
