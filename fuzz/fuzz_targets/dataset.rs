//! Fuzz target: `lfeval::fuzzing::dataset` on every input (see `fuzz/run`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lfeval::fuzzing::dataset(data));
