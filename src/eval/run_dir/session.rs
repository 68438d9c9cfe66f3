//! A run's sessions: the first start and every resume, each appending its wall time to
//! `sessions.jsonl`, so a resumed run's summary covers the whole run.

use jiff::Timestamp;

/// One session of a run, from its start until [`RunDir::end_session`].
pub struct SessionLog {
    pub(super) started_at: Timestamp,
    pub(super) clock: std::time::Instant,
    /// The process's arguments, for the report's provenance (masked when written).
    pub(super) command_line: Vec<String>,
}

impl SessionLog {
    pub fn start() -> SessionLog {
        SessionLog {
            started_at: Timestamp::now(),
            clock: std::time::Instant::now(),
            command_line: std::env::args()
                .enumerate()
                // The program as people type it, not the path it was started from.
                .map(|(i, arg)| if i == 0 { program_name(arg) } else { arg })
                .collect(),
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

fn program_name(arg: String) -> String {
    std::path::Path::new(&arg)
        .file_name()
        .map_or(arg.clone(), |n| n.to_string_lossy().into_owned())
}
