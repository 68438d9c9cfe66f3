//! Integration tests: one binary that drives the real `lfeval` executable through [`test::Test`],
//! against real HTTP servers on 127.0.0.1 ([`server`]) and the real embedded Python.

#![allow(
    clippy::print_stderr,
    reason = "tests print measured figures to help diagnose failures"
)]

mod adapters;
mod bounds;
mod canary;
mod config;
mod config_limits;
mod conformance;
mod conformance_runs;
mod dialect;
mod entities;
mod errors;
mod isolation;
mod lfeval_http;
mod limits;
mod model_test;
mod providers;
mod python_busy;
mod redis;
mod report;
mod resume;
mod runs;
mod scaffold;
mod scorer_context;
mod secrets;
mod server;
mod server_selftest;
mod shards;
mod shared_limits;
mod signals;
mod snippet_errors;
mod snippet_threads;
mod test;
mod timeouts;
