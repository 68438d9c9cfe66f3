#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark prints its figures"
)]
//! The whole-program figures: the real `lfeval` binary on generated projects against an echo
//! server started here (HTTP/1.1 with keep-alive and a configurable latency). One line per
//! figure on stdout:
//!
//! - CPU per sample with a constant snippet at 10,000 samples (default settings and
//!   `--no-cache`), interpreter start included, the median of five runs;
//! - peak RSS at 10,000 and 100,000 samples (medians of five and three runs);
//! - wall time against the limit `samples / in-flight × latency` for 2,000 samples at 64 in
//!   flight against 50 ms, the median of five runs: `custom_connection`, a module-level
//!   `httpx.Client` snippet, and a bare Python thread pool sharing one `httpx.Client` (no harness
//!   at all; whole processes on both sides, in alternating runs), plus `lfeval.http` snippets
//!   when the binary provides them;
//! - the rate `rate_limit: 600` achieves as the server sees it;
//! - `model test` start-up on an offline snippet.
//!
//! Run with `cargo bench --bench workload` (needs `.venv` with httpx, as the tests do;
//! `LFEVAL_BENCH_QUICK=1` shrinks every workload for a smoke run; `LFEVAL_BENCH_ONLY=throughput`
//! (or `overhead`, `rate`, `model_test`, comma-separated) runs only those figures, at full size).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const LFEVAL: &str = env!("CARGO_BIN_EXE_lfeval");

fn main() {
    let quick = std::env::var_os("LFEVAL_BENCH_QUICK").is_some();
    let only = std::env::var("LFEVAL_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    let scale = |n: usize| if quick { (n / 20).max(50) } else { n };
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "run `.ci/test` once first: it creates `.venv` with httpx"
    );

    if wanted("overhead") {
        overhead(&venv, &scale, quick);
    }
    if wanted("throughput") {
        throughput(&venv, &python, &scale);
    }
    if wanted("rate") {
        rate(&venv, quick);
    }
    if wanted("model_test") {
        model_test(&venv);
    }
}

/// CPU per sample and peak RSS with a constant snippet, no network: the median of several runs
/// (one run's CPU varies by a third on a shared 2-core machine; the median by a few percent).
fn overhead(venv: &Path, scale: &dyn Fn(usize) -> usize, quick: bool) {
    let runs = |n: usize| if quick { 1 } else { n };
    for (label, extra) in [("default", &[][..]), ("no_cache", &["--no-cache"][..])] {
        let n = scale(10_000);
        let project = constant_project(n);
        let usage = median_run(&project, venv, extra, runs(5));
        figure(
            &format!("overhead_cpu_us_per_sample_{n}_{label}"),
            usage.cpu.as_secs_f64() * 1e6 / n as f64,
            "µs",
        );
        if label == "default" {
            figure(&format!("peak_rss_mb_{n}"), usage.max_rss_kb as f64 / 1024.0, "MB");
        }
    }
    let n = scale(100_000);
    let project = constant_project(n);
    let usage = median_run(&project, venv, &[], runs(3));
    figure(&format!("peak_rss_mb_{n}"), usage.max_rss_kb as f64 / 1024.0, "MB");
    figure(
        &format!("overhead_cpu_us_per_sample_{n}_default"),
        usage.cpu.as_secs_f64() * 1e6 / n as f64,
        "µs",
    );
}

/// `lfeval run` in `project` `runs` times: the median CPU time and the median peak RSS.
fn median_run(project: &Path, venv: &Path, extra: &[&str], runs: usize) -> Usage {
    let mut usages: Vec<Usage> = (0..runs)
        .map(|_| {
            run(
                project,
                venv,
                &["run", "-f", "run.yaml", "-o", "out", "--no-progress"],
                extra,
            )
            .0
        })
        .collect();
    let middle = usages.len() / 2;
    usages.sort_by_key(|u| u.cpu);
    let cpu = usages[middle].cpu;
    usages.sort_by_key(|u| u.max_rss_kb);
    Usage { cpu, ..usages[middle] }
}

/// Wall time against the limit at 64 in flight against 50 ms.
fn throughput(venv: &Path, python: &Path, scale: &dyn Fn(usize) -> usize) {
    let latency = Duration::from_millis(50);
    let server = EchoServer::start(latency);
    let (n, in_flight) = (scale(2_000), 64);
    let limit = n as f64 / in_flight as f64 * latency.as_secs_f64();
    figure("throughput_limit_s", limit, "s");
    for (label, model) in [
        ("custom_connection", custom_connection_model(&server.url())),
        (
            "httpx_client_snippet",
            snippet_model(HTTPX_SNIPPET, &server.url(), false),
        ),
        (
            "lfeval_http_snippet",
            snippet_model(LFEVAL_HTTP_SNIPPET, &server.url(), false),
        ),
        (
            "lfeval_http_async_snippet",
            snippet_model(LFEVAL_HTTP_ASYNC_SNIPPET, &server.url(), true),
        ),
    ] {
        let project = http_project(n, in_flight, &model);
        // The httpx snippet is compared with the bare pool in alternating runs, so that a
        // slow spell of the machine falls on both sides.
        let compare = label == "httpx_client_snippet";
        let (mut runs, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..THROUGHPUT_RUNS {
            server.reset();
            let (usage, ok) = run(
                &project,
                venv,
                &["run", "-f", "run.yaml", "-o", "out", "--no-progress", "--no-cache"],
                &[],
            );
            if !ok || server.count() < n {
                break;
            }
            runs.push(usage);
            if compare {
                bare.extend(bare_pool(python, &server, n, in_flight));
            }
        }
        if runs.len() < THROUGHPUT_RUNS {
            println!("{label:<40} n/a (the run failed or this lfeval has no such feature)");
            continue;
        }
        let usage = median_by_wall(runs);
        figure(&format!("{label}_wall_s"), usage.wall.as_secs_f64(), "s");
        figure(
            &format!("{label}_wall_over_limit"),
            usage.wall.as_secs_f64() / limit,
            "×",
        );
        figure(&format!("{label}_cpu_s"), usage.cpu.as_secs_f64(), "s");
        if compare && bare.len() == THROUGHPUT_RUNS {
            let bare = median_by_wall(bare);
            figure("bare_python_pool_wall_s", bare.wall.as_secs_f64(), "s");
            figure("bare_python_pool_cpu_s", bare.cpu.as_secs_f64(), "s");
            figure(
                "httpx_client_snippet_over_bare_pool",
                usage.wall.as_secs_f64() / bare.wall.as_secs_f64(),
                "×",
            );
        }
    }
}

/// Runs of each throughput figure; the figure is the run with the median wall time. The httpx
/// snippet and the bare pool vary most: httpcore polls and counts its idle connections on every
/// request, so the same 2,000 calls cost it 1.3 to 4.7 s of CPU from one run to the next.
const THROUGHPUT_RUNS: usize = 5;

fn median_by_wall(mut runs: Vec<Usage>) -> Usage {
    runs.sort_by_key(|u| u.wall);
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// Rate limit accuracy: 600/min is one request every 100 ms.
fn rate(venv: &Path, quick: bool) {
    let server = EchoServer::start(Duration::ZERO);
    let n = if quick { 30 } else { 121 };
    let project = rate_project(n, &server.url());
    run(
        &project,
        venv,
        &["run", "-f", "run.yaml", "-o", "out", "--no-progress", "--no-cache"],
        &[],
    );
    let arrivals = server.arrivals();
    if arrivals.len() >= 2 {
        let span = arrivals[arrivals.len() - 1].duration_since(arrivals[0]).as_secs_f64();
        let per_minute = (arrivals.len() - 1) as f64 / span * 60.0;
        figure("rate_limit_600_observed_per_min", per_minute, "/min");
        figure("rate_limit_600_error_pct", (per_minute - 600.0) / 600.0 * 100.0, "%");
    }
}

/// `model test` start-up on an offline snippet.
fn model_test(venv: &Path) {
    let project = constant_project(1);
    let mut walls: Vec<f64> = (0..7)
        .map(|_| {
            run(&project, venv, &["model", "test", "constant"], &[])
                .0
                .wall
                .as_secs_f64()
        })
        .collect();
    walls.sort_by(f64::total_cmp);
    figure(
        "model_test_offline_wall_ms_median",
        walls[walls.len() / 2] * 1000.0,
        "ms",
    );
}

fn figure(name: &str, value: f64, unit: &str) {
    println!("{name:<40} {value:>10.2} {unit}");
}

/// What one child process used.
#[derive(Default)]
struct Usage {
    wall: Duration,
    cpu: Duration,
    max_rss_kb: i64,
}

/// Runs lfeval in `project`; `false` (with its stderr printed) when it failed.
fn run(project: &Path, venv: &Path, args: &[&str], extra: &[&str]) -> (Usage, bool) {
    let _ = std::fs::remove_dir_all(project.join("out"));
    let _ = std::fs::remove_dir_all(project.join(".lfeval"));
    let mut command = Command::new(LFEVAL);
    command
        .args(args)
        .args(extra)
        .current_dir(project)
        .env("VIRTUAL_ENV", venv)
        .env("NO_COLOR", "1");
    let (usage, ok, stderr) = measure(command);
    if !ok {
        eprintln!("lfeval {} failed:\n{stderr}", args.join(" "));
    }
    (usage, ok)
}

/// Runs `command` to its end and waits for it with `wait4`, which reports that child's own CPU
/// time and peak RSS: the usage, whether it exited 0 or 1 (a run whose scores fail a gate),
/// and its stderr.
#[allow(clippy::zombie_processes, reason = "the child is waited for with `wait4`")]
fn measure(mut command: Command) -> (Usage, bool, String) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the benchmarked program");
    let pid = child.id() as libc::pid_t;
    let mut stderr = String::new();
    let mut err = child.stderr.expect("stderr");
    let reader = std::thread::spawn(move || {
        let _ = err.read_to_string(&mut stderr);
        stderr
    });
    let mut status = 0;
    // SAFETY: `rusage` is plain data that `wait4` fills in; `pid` is our own child.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the child is not waited for anywhere else.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
    let wall = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    let ok = waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) <= 1;
    let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    (
        Usage {
            wall,
            cpu: time(rusage.ru_utime) + time(rusage.ru_stime),
            max_rss_kb: rusage.ru_maxrss,
        },
        ok,
        stderr,
    )
}

/// A scratch project under the temporary directory, removed when dropped (a 100,000-sample run
/// directory is a quarter of a gigabyte).
struct Project(PathBuf);

impl std::ops::Deref for Project {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn project_dir(name: &str) -> Project {
    let dir = std::env::temp_dir().join(format!("lfeval-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("project dir");
    Project(dir)
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(path, text).expect("write");
}

fn rows(dir: &Path, n: usize) {
    let mut text = String::with_capacity(n * 40);
    for i in 0..n {
        text.push_str(&json!({"id": format!("s{i}"), "question": format!("question {i}")}).to_string());
        text.push('\n');
    }
    write(dir, "rows.jsonl", &text);
}

fn run_yaml(model: &str, scorer_value: &str) -> String {
    format!(
        r#"models:
{model}
datasets:
  - key: rows
    source: {{type: local, file_path: rows.jsonl}}
    id_column: id
tasks:
  - key: echo
    display_name: Echo
    definition:
      dataset: {{key: rows}}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - {{role: user, content: "{{{{ sample.question }}}}"}}
      scorers:
        - type: string_equals
          key: exact
          ground_truth: "{scorer_value}"
          metrics:
            - {{type: mean, field: is_correct}}
evaluation:
  key: bench
  task_specifications:
    - {{key: echo, task_key: echo, model_key: m}}
"#
    )
}

const CONSTANT_SNIPPET: &str = r#"import json

ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})

def run_inference(body, environment):
    return ANSWER
"#;

/// A constant snippet model, for the harness's own cost.
fn constant_project(n: usize) -> Project {
    let dir = project_dir(&format!("constant-{n}"));
    write(&dir, "snippets/constant.py", CONSTANT_SNIPPET);
    let model = "  - key: m\n    display_name: constant\n    max_concurrent_requests: 8\n    config:\n      connection_type: custom_inference\n      run_inference_snippet: !include snippets/constant.py\n";
    write(&dir, "run.yaml", &run_yaml(model, "ok"));
    write(
        &dir,
        "models/constant.yaml",
        "key: constant\ndisplay_name: constant\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include ../snippets/constant.py\n",
    );
    rows(&dir, n);
    dir
}

fn custom_connection_model(url: &str) -> String {
    format!(
        "  - key: m\n    display_name: http\n    max_concurrent_requests: 64\n    config:\n      connection_type: custom_connection\n      adapter: {{key: \"latticeflow$openai_chat_completion\"}}\n      url: \"{url}\"\n      model_key: echo\n"
    )
}

const HTTPX_SNIPPET: &str = r#"import httpx

client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

def run_inference(body, environment):
    response = client.post(environment["URL"], content=body, headers={"content-type": "application/json"})
    response.raise_for_status()
    return response.text
"#;

const LFEVAL_HTTP_SNIPPET: &str = r#"from lfeval import http

def run_inference(body, environment):
    response = http.post(environment["URL"], content=body, headers={"content-type": "application/json"})
    response.raise_for_status()
    return response.text
"#;

const LFEVAL_HTTP_ASYNC_SNIPPET: &str = r#"from lfeval import http

async def run_inference(body, environment):
    response = await http.apost(environment["URL"], content=body, headers={"content-type": "application/json"})
    response.raise_for_status()
    return response.text
"#;

fn snippet_model(source: &str, url: &str, _is_async: bool) -> String {
    let indented: String = source.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "  - key: m\n    display_name: snippet\n    max_concurrent_requests: 64\n    config:\n      connection_type: custom_inference\n      adapter: {{key: \"latticeflow$openai_chat_completion\"}}\n      environment:\n        URL: \"{url}\"\n      run_inference_snippet: |\n{indented}"
    )
}

fn http_project(n: usize, _in_flight: usize, model: &str) -> Project {
    let dir = project_dir(&format!("http-{n}"));
    write(&dir, "run.yaml", &run_yaml(model, "echo: {{ sample.question }}"));
    rows(&dir, n);
    dir
}

fn rate_project(n: usize, url: &str) -> Project {
    let dir = project_dir("rate");
    let model = custom_connection_model(url).replace(
        "max_concurrent_requests: 64",
        "rate_limit: 600\n    max_concurrent_requests: 8",
    );
    write(&dir, "run.yaml", &run_yaml(&model, "echo: {{ sample.question }}"));
    rows(&dir, n);
    dir
}

/// The same calls from a bare Python thread pool sharing one `httpx.Client`: what a user would
/// write without any harness. Measured as a whole process, as lfeval is: interpreter start,
/// `import httpx` and all (`None` when the script failed).
fn bare_pool(python: &Path, server: &EchoServer, n: usize, in_flight: usize) -> Option<Usage> {
    let script = format!(
        r#"import json, httpx
from concurrent.futures import ThreadPoolExecutor
client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections={in_flight}, max_keepalive_connections={in_flight}))
bodies = [json.dumps({{"model": "echo", "messages": [{{"role": "user", "content": f"question {{i}}"}}]}}) for i in range({n})]
def call(body):
    r = client.post("{url}", content=body, headers={{"content-type": "application/json"}})
    r.raise_for_status()
    return json.loads(r.text)["choices"][0]["message"]["content"]
with ThreadPoolExecutor({in_flight}) as pool:
    out = list(pool.map(call, bodies))
"#,
        url = server.url()
    );
    server.reset();
    let mut command = Command::new(python);
    command.arg("-c").arg(script);
    let (usage, ok, stderr) = measure(command);
    if !ok || server.count() < n {
        eprintln!("the bare Python pool failed:\n{stderr}");
        return None;
    }
    Some(usage)
}

/// An OpenAI-compatible echo server: every POST answers `echo: <last user message>` after
/// `latency`, over keep-alive connections, one thread per connection.
struct EchoServer {
    port: u16,
    count: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl EchoServer {
    fn start(latency: Duration) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let count = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (c, a) = (Arc::clone(&count), Arc::clone(&arrivals));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, a) = (Arc::clone(&c), Arc::clone(&a));
                std::thread::spawn(move || serve(stream, latency, &c, &a));
            }
        });
        EchoServer { port, count, arrivals }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/chat/completions", self.port)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        if let Ok(mut a) = self.arrivals.lock() {
            a.clear();
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, latency: Duration, count: &AtomicUsize, arrivals: &Mutex<Vec<Instant>>) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(mut a) = arrivals.lock() {
            a.push(Instant::now());
        }
        count.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(latency);
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = request["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let answer = json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "model": "echo",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": format!("echo: {text}")}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
