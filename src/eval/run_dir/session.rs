//! A run's sessions: the first start and every resume, each appending its wall time to
//! `sessions.jsonl`, so a resumed run's summary covers the whole run.

use jiff::Timestamp;

/// One session of a run, from its start until [`RunDir::end_session`].
pub struct SessionLog {
    pub(super) started_at: Timestamp,
    pub(super) clock: std::time::Instant,
}

impl SessionLog {
    pub fn start() -> SessionLog {
        SessionLog {
            started_at: Timestamp::now(),
            clock: std::time::Instant::now(),
        }
    }
}

/// Every session of a run, added up.
#[derive(Debug, Clone, PartialEq)]
pub struct Sessions {
    /// When the run first started.
    pub first_started_at: String,
    /// Wall time across every session that ended (an interrupted one counts; a killed one
    /// could not say).
    pub wall_time_s: f64,
    pub count: u32,
}
