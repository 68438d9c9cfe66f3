//! Handing freed memory back to the system where a run changes phase: before its samples and
//! once they are done.
//!
//! The passes over a dataset before the first sample (selection, precomputed scores, hashes)
//! run on the main thread, which allocates little afterwards, so what they freed stayed
//! resident for the whole run: ~7 MB at 100,000 samples. [`collect`] gives it back.
//!
//! Samples are processed on tokio's workers, and mimalloc keeps the pages a thread frees for a
//! second (its purge delay) in case they are needed again. After the last sample the workers
//! sit idle, so those pages would stay resident while the summary and the report, on the main
//! thread, allocate their own: a 100,000-sample run peaked ~13 MB higher. After
//! [`release_freed`] a freed page goes back at once; the phases left allocate little and seldom,
//! so that costs nothing measurable (a purge delay of 0 for the whole run costs ~10% more CPU).

use std::sync::atomic::{AtomicBool, Ordering};

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t`, which the Rust bindings do not name;
/// the test below checks it against the option's default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Set (before the option) once [`release_freed`] has run, for the test below.
static RELEASED: AtomicBool = AtomicBool::new(false);

/// Gives back what this thread has freed so far.
pub fn collect() {
    // SAFETY: a plain call into the allocator, which takes its own locks.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Makes every page freed from now on, and every one freed so far, go back to the system.
pub fn release_freed() {
    RELEASED.store(true, Ordering::SeqCst);
    // SAFETY: plain calls into the allocator, which takes its own locks; an option may be set
    // at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        // Another test of this process may have ended a run already.
        let released = super::RELEASED.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            delay == 1000 || (delay == 0 && released),
            "mimalloc v3's purge delay defaults to 1000 ms, and 0 once released; got {delay}"
        );
    }
}
