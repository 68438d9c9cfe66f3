//! Integration tests: one binary that drives the real `lfeval` executable through [`test::Test`],
//! against real HTTP servers on 127.0.0.1 ([`server`]) and the real embedded Python.

mod limits;
mod runs;
mod server;
mod server_selftest;
mod test;
