//! The `lfeval` executable; everything lives in the library (see `lib.rs`).

// The pipeline allocates many short-lived strings and maps per sample; mimalloc's per-thread
// free lists halve what glibc's malloc costs there and hand memory back to the system. Built
// with `no_thp`: asked for transparent huge pages, it would have every 2 MiB region it touches
// zeroed and resident whole (a 10,000-sample run peaked at 76 MB instead of 43 MB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lfeval::main()
}
