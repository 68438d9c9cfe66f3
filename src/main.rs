//! The `lfeval` executable; everything lives in the library (see `lib.rs`).

// The pipeline allocates many short-lived strings and maps per sample; mimalloc's per-thread
// free lists halve what glibc's malloc costs there and hand memory back to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lfeval::main()
}
