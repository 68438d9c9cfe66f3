//! Integration tests: one binary that drives the real `lfeval` executable through [`test::Test`],
//! against real HTTP servers on 127.0.0.1 ([`server`]) and the real embedded Python.

#![allow(
    clippy::print_stderr,
    reason = "tests print measured figures to help diagnose failures"
)]

mod adapters;
mod config;
mod dialect;
mod errors;
mod limits;
mod model_test;
mod report;
mod resume;
mod runs;
mod secrets;
mod server;
mod server_selftest;
mod snippet_errors;
mod test;
mod timeouts;
