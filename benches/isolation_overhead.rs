#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
//! What `isolation: process` costs and buys: the round trip of one call to a snippet that
//! returns a constant, in-process and in a worker process (the difference is the per-call
//! overhead of the pipe protocol); how long a worker takes to start (spawn, interpreter,
//! snippet); and the wall time of CPU-bound calls run two at a time, where worker processes,
//! each with its own GIL, use both cores and in-process threads share one GIL.
//!
//! Run with `cargo bench --bench isolation_overhead` (it starts `target/release/lfeval
//! __worker`, which `cargo bench` builds first).

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lfeval::python::{Isolation, PythonOptions, PythonRuntime, ReturnKind, Snippet, SnippetSpec, initialize};
use serde_json::{Value, json};

const CALLS: usize = 5_000;
const WARMUP: usize = 200;
const CPU_CALLS: usize = 8;

const CONSTANT: &str = "def run_inference(body, environment):\n    return 'ok'\n";
const CPU_BOUND: &str = "def run_inference(body, environment):\n    n = 0\n    for i in range(3_000_000):\n        n += i\n    return str(n)\n";

fn spec(source: &str, isolation: Isolation, workers: usize) -> SnippetSpec {
    SnippetSpec {
        owner: "bench `isolation`".to_owned(),
        file: "bench/isolation.py".to_owned(),
        source: source.to_owned(),
        display_source: None,
        line_offset: 0,
        function: "run_inference".to_owned(),
        arities: vec![2, 3],
        returns: ReturnKind::Str,
        workers,
        isolation,
        max_return_bytes: Some(32 * 1024 * 1024),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn round_trips(
    runtime: &PythonRuntime,
    snippet: &Snippet,
    args: &[Value],
) -> Result<Vec<Duration>, Box<dyn Error>> {
    let timeout = Duration::from_secs(10);
    for _ in 0..WARMUP {
        runtime.call(snippet, args.to_vec(), timeout).await?;
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        runtime.call(snippet, args.to_vec(), timeout).await?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

async fn parallel_wall(runtime: &PythonRuntime, snippet: &Snippet, args: &[Value]) -> Result<Duration, Box<dyn Error>> {
    let together = |n: usize| {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (runtime, snippet, args) = (runtime.clone(), snippet.clone(), args.to_vec());
            set.spawn(async move { runtime.call(&snippet, args, Duration::from_secs(60)).await });
        }
        set
    };
    // Warm up both workers (the pool starts them on demand).
    let mut warm = together(2);
    while let Some(done) = warm.join_next().await {
        done??;
    }
    let started = Instant::now();
    let mut calls = together(CPU_CALLS);
    while let Some(done) = calls.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

fn main() -> Result<(), Box<dyn Error>> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_lfeval"));
    let runtime = initialize(&PythonOptions {
        python_env: None,
        worker_exe: Some(exe),
    })?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args = vec![
        json!(r#"{"messages": [{"role": "user", "content": "hello"}]}"#),
        json!({"MODEL_KEY": "m", "BASE_URL": "http://localhost:1"}),
        json!({"id": 1}),
    ];

    let in_process = runtime.load_snippet(spec(CONSTANT, Isolation::InProcess, 1))?;
    let started = Instant::now();
    let in_worker = runtime.load_snippet(spec(CONSTANT, Isolation::Process, 1))?;
    let worker_start = started.elapsed();

    let (local, remote) = tokio.block_on(async {
        let local = round_trips(&runtime, &in_process, &args).await?;
        let remote = round_trips(&runtime, &in_worker, &args).await?;
        Ok::<_, Box<dyn Error>>((local, remote))
    })?;
    println!("one call to a snippet returning a constant, {CALLS} sequential calls:");
    for (label, p) in [("median", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        println!(
            "  {label:>6}: in-process {:>9.1?}, worker process {:>9.1?}",
            pct(&local, p),
            pct(&remote, p)
        );
    }
    let overhead = pct(&remote, 0.5).saturating_sub(pct(&local, 0.5));
    println!("  per-call overhead of isolation: process (median): {overhead:.1?}");
    println!("starting a worker (spawn, interpreter, snippet load): {worker_start:.1?}");

    let cpu_local = runtime.load_snippet(spec(CPU_BOUND, Isolation::InProcess, 2))?;
    let cpu_remote = runtime.load_snippet(spec(CPU_BOUND, Isolation::Process, 2))?;
    let (local_wall, remote_wall) = tokio.block_on(async {
        let local = parallel_wall(&runtime, &cpu_local, &args).await?;
        let remote = parallel_wall(&runtime, &cpu_remote, &args).await?;
        Ok::<_, Box<dyn Error>>((local, remote))
    })?;
    println!(
        "{CPU_CALLS} CPU-bound calls (3M-iteration loop), two at a time: in-process {local_wall:.2?}, worker processes {remote_wall:.2?} ({:.2}x)",
        local_wall.as_secs_f64() / remote_wall.as_secs_f64()
    );
    runtime.flush();
    Ok(())
}
