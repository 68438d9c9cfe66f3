#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
//! Fixed costs of the embedded Python runtime: interpreter start-up, and the overhead
//! `PythonRuntime::call` adds around a synchronous snippet that returns a constant (thread hop,
//! GIL hand-over, argument/return conversion, output capture).
//!
//! Run with `cargo bench --bench snippet_overhead`.

use std::error::Error;
use std::time::{Duration, Instant};

use lfeval::python::{PythonOptions, ReturnKind, SnippetSpec, initialize};
use serde_json::json;

const CALLS: usize = 10_000;
const WARMUP: usize = 500;

fn main() -> Result<(), Box<dyn Error>> {
    let runtime = initialize(&PythonOptions::default())?;
    let startup = runtime.startup_time();

    let snippet = runtime.load_snippet(SnippetSpec {
        owner: "bench `constant`".to_owned(),
        file: "bench/constant.py".to_owned(),
        source: "def run_inference(body, environment):\n    return 'ok'\n".to_owned(),
        display_source: None,
        line_offset: 0,
        function: "run_inference".to_owned(),
        arities: vec![2, 3],
        returns: ReturnKind::Str,
        workers: 1,
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
    let timeout = Duration::from_secs(10);

    let (mut total, mut inside) = tokio.block_on(async {
        for _ in 0..WARMUP {
            runtime.call(&snippet, args.clone(), timeout).await?;
        }
        let mut total = Vec::with_capacity(CALLS);
        let mut inside = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            let out = runtime.call(&snippet, args.clone(), timeout).await?;
            total.push(started.elapsed());
            inside.push(out.python_time);
        }
        Ok::<_, Box<dyn Error>>((total, inside))
    })?;
    runtime.flush();

    total.sort_unstable();
    inside.sort_unstable();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!("interpreter start (initialize): {startup:.1?}");
    println!("sync call round trip over {CALLS} sequential calls:");
    for (label, p) in [("median", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let t = pct(&total, p);
        let i = pct(&inside, p);
        println!("  {label:>6}: {t:>9.1?} total, {i:>8.1?} inside the snippet function");
    }
    println!("  max   : {:>9.1?}", total[total.len() - 1]);
    Ok(())
}
