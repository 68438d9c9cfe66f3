//! The evaluation pipeline, in data order: a [`run_config`] names an [`evaluation`] whose task
//! specifications pair a [`task`] with a [`dataset`] and a model (the run's [`entities`]);
//! [`prepare`] resolves all of it before anything runs; [`run`] streams samples from their
//! [`sample_source`], and [`process`] takes each through the [`solver`] (defined in
//! [`solver_def`]) and [`scorer`]s, each finished sample becoming one [`record`] in the
//! [`run_dir`]; [`summary`] folds the records into [`metric`] values, and [`task_log`] writes the
//! AI GO!-shaped result logs (this session's part from an [`evidence_spool`]). [`cost`] prices samples and bounds spending; [`policy`] checks a
//! finished run against its quality gates.

pub mod cost;
pub mod dataset;
pub mod entities;
pub mod evaluation;
pub mod evidence_spool;
pub mod fingerprint;
pub mod merge;
pub mod metric;
pub mod policy;
pub mod prepare;
pub mod process;
pub mod python_busy;
pub mod record;
pub mod run;
pub mod run_config;
pub mod run_dir;
pub mod sample_source;
pub mod score_table;
pub mod scorer;
pub mod shard;
pub mod solver;
pub mod solver_def;
pub mod summary;
pub mod tally;
pub mod task;
pub mod task_log;
