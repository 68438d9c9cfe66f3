//! Integration tests: one binary driving the real `lfeval` executable.
