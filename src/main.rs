//! The `lfeval` executable; everything lives in the library (see `lib.rs`).

fn main() -> std::process::ExitCode {
    lfeval::main()
}
