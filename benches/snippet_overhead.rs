#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
//! Fixed costs of the embedded Python runtime: interpreter start-up, the overhead
//! `PythonRuntime::call` adds around a synchronous snippet that returns a constant (thread hop,
//! GIL hand-over, argument/return conversion, output capture), and the whole per-call chain of a
//! custom-inference model around that snippet (input template, gate, call, output template,
//! output validation), measured as wall time and as CPU time of the process.
//!
//! Run with `cargo bench --bench snippet_overhead`.

use std::error::Error;
use std::time::{Duration, Instant};

use std::sync::Arc;

use lfeval::model::runtime::ModelRuntime;
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
        isolation: lfeval::python::Isolation::InProcess,
        max_return_bytes: None,
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

    // The whole chain, through a model defined in YAML like a user's.
    let project_dir = std::env::temp_dir().join(format!("lfeval-bench-{}", std::process::id()));
    std::fs::create_dir_all(project_dir.join("models"))?;
    std::fs::write(
        project_dir.join("models/constant.yaml"),
        "key: constant\ndisplay_name: Constant\nmax_concurrent_requests: 1\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: |\n    import json\n    ANSWER = json.dumps({\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"ok\"}}]})\n    def run_inference(body, environment):\n        return ANSWER\n  environment: {}\n  timeout: 10\n",
    )?;
    let project = lfeval::project::Project::load(&project_dir, None)?;
    let model = project.model("constant").map_err(|d| d.to_string())?;
    let adapter = project.adapter(&model.adapter.value).map_err(|d| d.to_string())?;
    let chain =
        ModelRuntime::new(Arc::clone(&model), adapter, Some(&runtime), &project.secrets).map_err(|d| d.to_string())?;
    let input = json!({"messages": [{"role": "user", "content": "hello"}]});
    let kwargs = serde_json::Map::new();
    let (mut chain_times, cpu) = tokio.block_on(async {
        for _ in 0..WARMUP {
            let (_, out) = chain.infer(&input, &kwargs, None).await;
            out.map_err(|f| f.message)?;
        }
        let cpu_start = cpu_time();
        let mut times = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            let (_, out) = chain.infer(&input, &kwargs, None).await;
            out.map_err(|f| f.message)?;
            times.push(started.elapsed());
        }
        Ok::<_, Box<dyn Error>>((times, cpu_time().saturating_sub(cpu_start)))
    })?;
    let _ = std::fs::remove_dir_all(&project_dir);
    chain_times.sort_unstable();
    println!("whole chain (identity adapter, gate, snippet, output check) over {CALLS} calls:");
    for (label, p) in [("median", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        println!("  {label:>6}: {:>9.1?}", pct(&chain_times, p));
    }
    println!("  CPU time per call (all threads): {:.1?}", cpu / CALLS as u32);
    Ok(())
}

/// CPU time used by the whole process so far (user + system, all threads).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // Linux reports in clock ticks of 1/100 s on every common configuration.
    Duration::from_millis(ticks * 10)
}
