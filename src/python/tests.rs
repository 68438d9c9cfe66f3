//! Tests for the embedded runtime. CPython can be initialised only once per process and the test
//! harness owns the main thread, so the runtime is created lazily on first use and shared.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::init::venv_site_packages;
use super::snippet::slug;
use super::*;

fn runtime() -> &'static PythonRuntime {
    static RT: OnceLock<PythonRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let runtime = initialize(&PythonOptions::default()).expect("python prepares");
        // Tests attach to the interpreter directly: it must be up before they do.
        runtime.start().expect("python starts");
        runtime
    })
}

/// Tests that block or time the shared asyncio loop must not overlap.
fn loop_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn spec(owner: &str, file: &str, source: &str) -> SnippetSpec {
    SnippetSpec {
        owner: format!("model `{owner}`"),
        file: file.to_owned(),
        source: source.to_owned(),
        display_source: None,
        line_offset: 0,
        function: "run_inference".to_owned(),
        arities: vec![2, 3],
        returns: ReturnKind::Str,
        workers: 2,
        isolation: Isolation::InProcess,
        max_return_bytes: None,
    }
}

fn load(spec: SnippetSpec) -> Snippet {
    match runtime().load_snippet(spec) {
        Ok(s) => s,
        Err(e) => panic!("load failed: {e}\n{}", e.traceback),
    }
}

fn load_err(spec: SnippetSpec) -> SnippetLoadError {
    match runtime().load_snippet(spec) {
        Ok(s) => panic!("expected a load error, got {s:?}"),
        Err(e) => e,
    }
}

fn call(s: &Snippet, args: Vec<Value>, timeout: Duration) -> Result<CallOutput, CallError> {
    block_on(runtime().call(s, args, timeout))
}

fn ok(s: &Snippet, args: Vec<Value>) -> CallOutput {
    match call(s, args, Duration::from_secs(10)) {
        Ok(out) => out,
        Err(e) => panic!("call failed: {e}\n{:?}", e.kind),
    }
}

fn body_env() -> Vec<Value> {
    vec![json!("hello"), json!({"K": "v"}), json!({"id": 7})]
}

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Calls

#[test]
fn sync_call_uses_two_args_and_drops_sample() {
    let s = load(spec(
        "two",
        "two.py",
        "def run_inference(body, environment):\n    return body + '/' + environment['K']\n",
    ));
    assert!(!s.is_async());
    assert_eq!(s.arity(), 2);
    let out = ok(&s, body_env());
    assert_eq!(out.value, json!("hello/v"));
    assert!(out.python_time < SECOND);
}

#[test]
fn defaulted_third_parameter_receives_sample() {
    let s = load(spec(
        "three",
        "three.py",
        "import json\ndef run_inference(body, environment, sample=None):\n    return json.dumps(sample)\n",
    ));
    assert_eq!(s.arity(), 3);
    assert_eq!(ok(&s, body_env()).value, json!(r#"{"id": 7}"#));
}

#[test]
fn decorated_and_callable_snippets_take_the_signature_they_show() {
    // A `functools.wraps` decorator shows the wrapped function's parameters, not `*args`.
    let s = load(spec(
        "wrapped",
        "wrapped.py",
        "import functools\ndef logged(f):\n    @functools.wraps(f)\n    def inner(*args, **kwargs):\n        return f(*args, **kwargs)\n    return inner\n@logged\ndef run_inference(body, environment):\n    return body\n",
    ));
    assert_eq!(s.arity(), 2, "`*args` alone would take the sample too");
    assert!(!s.is_async());
    let s = load(spec(
        "callable",
        "callable.py",
        "class Model:\n    async def __call__(self, body, environment):\n        return body\nrun_inference = Model()\n",
    ));
    assert_eq!(s.arity(), 2);
    assert!(s.is_async());
    let e = load_err(spec(
        "wrapped_kw",
        "wrapped_kw.py",
        "import functools\ndef run(body, environment, *, key):\n    return body\n@functools.wraps(run)\ndef run_inference(*args, **kwargs):\n    return run(*args, **kwargs)\n",
    ));
    assert_eq!(
        e.message,
        "`run_inference(body, environment, *, key)` has required keyword-only parameter `key`; expected 2 or 3 positional parameters"
    );
}

#[test]
fn async_call_runs_on_the_loop_and_captures_output() {
    let _guard = loop_lock();
    let s = load(spec(
        "async",
        "async.py",
        "import asyncio, threading\nasync def run_inference(body, environment):\n    await asyncio.sleep(0.01)\n    print('thread', threading.current_thread().name)\n    return body.upper()\n",
    ));
    assert!(s.is_async());
    let out = ok(&s, body_env());
    assert_eq!(out.value, json!("HELLO"));
    assert_eq!(out.captured, "thread lfeval-asyncio\n");
    assert!(out.python_time >= Duration::from_millis(10));
}

#[test]
fn arguments_and_json_returns_keep_int_float_and_order() {
    let mut sp = spec(
        "json",
        "json.py",
        "def compute(x):\n    kinds = [type(v).__name__ for v in x.values()]\n    return {'echo': x, 'kinds': kinds, 't': (1, 'a'), 2: 'int key', None: 1.5}\n",
    );
    sp.function = "compute".to_owned();
    sp.arities = vec![1];
    sp.returns = ReturnKind::Json;
    let s = load(sp);
    let input = json!({"z": 1, "a": 1.0, "s": "x", "b": true, "n": null, "l": [1, {"k": 2.5}], "big": u64::MAX});
    let out = ok(&s, vec![input.clone()]);
    assert_eq!(out.value["echo"], input);
    assert_eq!(
        out.value["kinds"],
        json!(["int", "float", "str", "bool", "NoneType", "list", "int"])
    );
    assert!(out.value["echo"]["z"].is_i64());
    assert!(out.value["echo"]["a"].is_f64());
    assert_eq!(out.value["t"], json!([1, "a"]));
    assert_eq!(out.value["2"], json!("int key"));
    assert_eq!(out.value["null"], json!(1.5));
    let keys: Vec<&String> = out.value["echo"].as_object().expect("object").keys().collect();
    assert_eq!(keys, ["z", "a", "s", "b", "n", "l", "big"]);
}

#[test]
fn modules_are_isolated_and_keep_state() {
    let src = |name: &str| {
        format!(
            "NAME = '{name}'\nCOUNT = 0\ndef run_inference(body, environment):\n    global COUNT\n    COUNT += 1\n    return f'{{NAME}}:{{COUNT}}'\n"
        )
    };
    let a = load(spec("iso-a", "a.py", &src("a")));
    let b = load(spec("iso-b", "b.py", &src("b")));
    assert_ne!(a.module_name(), b.module_name());
    assert!(a.module_name().starts_with("lfeval_snippet_model_iso_a_"));
    assert_eq!(ok(&a, body_env()).value, json!("a:1"));
    assert_eq!(ok(&b, body_env()).value, json!("b:1"));
    assert_eq!(ok(&a, body_env()).value, json!("a:2"));
}

#[test]
fn module_level_output_is_kept_as_load_output() {
    let s = load(spec(
        "chatty",
        "chatty.py",
        "print('loading')\ndef run_inference(body, environment):\n    return body\n",
    ));
    assert_eq!(s.load_output(), "loading\n");
}

// ---------------------------------------------------------------------------------------------
// Load errors

#[test]
fn syntax_error_reports_line_and_column_with_offset() {
    let src = "def run_inference(body, environment):\n    return (body\n";
    let e = load_err(spec("syn", "syn.py", src));
    assert_eq!(e.kind, LoadErrorKind::Syntax);
    assert_eq!((e.line, e.col), (2, 12));
    assert_eq!(e.source_line.as_deref(), Some("return (body"));
    assert!(e.message.contains("'(' was never closed"), "{}", e.message);

    let mut sp = spec("syn-yaml", "models.yaml", src);
    sp.line_offset = 10;
    let e = load_err(sp);
    assert_eq!((e.line, e.col), (12, 12));
    assert_eq!(
        e.to_string(),
        "model `syn-yaml`: syntax error: '(' was never closed (models.yaml:12:12)"
    );
}

#[test]
fn missing_function_suggests_a_close_name() {
    let e = load_err(spec(
        "missing",
        "missing.py",
        "def run_inferense(body, environment):\n    return body\n",
    ));
    assert_eq!(e.kind, LoadErrorKind::MissingFunction);
    assert!(e.message.starts_with("no function `run_inference` defined"));
    assert!(e.message.contains("did you mean `run_inferense`"), "{}", e.message);
}

#[test]
fn non_callable_is_rejected() {
    let e = load_err(spec("nc", "nc.py", "run_inference = 42\n"));
    assert_eq!(e.kind, LoadErrorKind::MissingFunction);
    assert_eq!(e.message, "`run_inference` is a `int`, not a function");
}

#[test]
fn wrong_parameter_count_names_accepted_signatures() {
    let mut sp = spec("arity", "models.yaml", "\ndef run_inference(body):\n    return body\n");
    sp.line_offset = 4;
    let e = load_err(sp);
    assert_eq!(e.kind, LoadErrorKind::BadSignature);
    assert_eq!(
        e.message,
        "`run_inference(body)` takes 1 positional parameter; expected 2 or 3"
    );
    assert_eq!(e.line, 6);

    let e = load_err(spec(
        "arity4",
        "a4.py",
        "def run_inference(a, b, c, d):\n    return a\n",
    ));
    assert!(
        e.message.contains("takes 4 positional parameters; expected 2 or 3"),
        "{}",
        e.message
    );

    let e = load_err(spec(
        "kwonly",
        "kw.py",
        "def run_inference(a, b, *, c):\n    return a\n",
    ));
    assert!(
        e.message.contains("required keyword-only parameter `c`"),
        "{}",
        e.message
    );
}

#[test]
fn import_error_points_at_the_import_line() {
    let mut sp = spec(
        "imp",
        "models.yaml",
        "import json\n\nimport nonexistent_lfeval_pkg\ndef run_inference(body, environment):\n    return body\n",
    );
    sp.line_offset = 5;
    let e = load_err(sp);
    assert_eq!(e.kind, LoadErrorKind::Import);
    assert_eq!((e.line, e.col), (8, 1));
    assert_eq!(e.source_line.as_deref(), Some("import nonexistent_lfeval_pkg"));
    assert!(
        e.message.contains("No module named 'nonexistent_lfeval_pkg'"),
        "{}",
        e.message
    );
    assert!(e.to_string().contains("(models.yaml:8:1); hint:"), "{e}");
    // A failed module must not linger in sys.modules.
    Python::attach(|py| {
        let modules = py
            .import("sys")
            .and_then(|s| s.getattr("modules"))
            .expect("sys.modules");
        let names: Vec<String> = modules
            .call_method0("keys")
            .and_then(|k| k.try_iter()?.map(|n| n?.extract::<String>()).collect())
            .expect("names");
        assert!(!names.iter().any(|n| n.starts_with("lfeval_snippet_model_imp_")));
    });
}

#[test]
fn module_level_exception_is_other() {
    let e = load_err(spec("zero", "zero.py", "x = 1\ny = x / 0\n"));
    assert_eq!(e.kind, LoadErrorKind::Other);
    assert_eq!(e.line, 2);
    assert!(e.message.contains("ZeroDivisionError"), "{}", e.message);
    assert!(e.traceback.contains("ZeroDivisionError"));
}

// ---------------------------------------------------------------------------------------------
// Call errors

#[test]
fn non_str_return_names_the_type() {
    let s = load(spec(
        "int",
        "int.py",
        "def run_inference(body, environment):\n    return 42\n",
    ));
    let e = call(&s, body_env(), SECOND).expect_err("bad return");
    assert!(matches!(&*e.kind, CallErrorKind::BadReturn { type_name, .. } if type_name == "int"));
    assert_eq!(e.to_string(), "model `int`: run_inference must return `str`, got `int`");

    let s = load(spec(
        "coro",
        "coro.py",
        "import asyncio\ndef run_inference(body, environment):\n    return asyncio.sleep(0)\n",
    ));
    let e = call(&s, body_env(), SECOND).expect_err("coroutine");
    assert!(
        e.to_string()
            .contains("got `coroutine`; hint: declare the function with `async def`")
    );
}

#[test]
fn unconvertible_json_return_names_type_and_path() {
    let mut sp = spec(
        "set",
        "set.py",
        "def run_inference(body, environment):\n    return {'a': [1, {1, 2}]}\n",
    );
    sp.returns = ReturnKind::Json;
    let s = load(sp);
    let e = call(&s, body_env(), SECOND).expect_err("set");
    match &*e.kind {
        CallErrorKind::BadReturn { type_name, path, .. } => {
            assert_eq!(type_name, "set");
            assert_eq!(path.as_deref(), Some("$.a[1]"));
        }
        other => panic!("unexpected {other:?}"),
    }

    let mut sp = spec(
        "nan",
        "nan.py",
        "def run_inference(body, environment):\n    x = []\n    x.append(x)\n    return {'n': float('nan')} if body == 'nan' else x\n",
    );
    sp.returns = ReturnKind::Json;
    let s = load(sp);
    let e = call(&s, vec![json!("nan"), json!({})], SECOND).expect_err("nan");
    assert!(
        e.to_string()
            .contains("`float` at `$.n` (float `NaN` has no JSON form)"),
        "{e}"
    );
    let e = call(&s, vec![json!("loop"), json!({})], SECOND).expect_err("cycle");
    assert!(e.to_string().contains("nested deeper than 128 levels"), "{e}");
}

#[test]
fn exceptions_keep_only_snippet_frames() {
    let s = load(spec(
        "raise",
        "snippets/raise.py",
        "def helper(d):\n    return d['k']\n\ndef run_inference(body, environment):\n    print('before')\n    return helper({})\n",
    ));
    let e = call(&s, body_env(), SECOND).expect_err("raises");
    assert_eq!(e.captured, "before\n");
    match &*e.kind {
        CallErrorKind::Raised {
            exc_type,
            message,
            frames,
            traceback,
        } => {
            assert_eq!(exc_type, "KeyError");
            assert_eq!(message, "'k'");
            let lines: Vec<(usize, &str, &str)> = frames
                .iter()
                .map(|f| (f.line, f.function.as_str(), f.source_line.as_str()))
                .collect();
            assert_eq!(
                lines,
                [
                    (6, "run_inference", "return helper({})"),
                    (2, "helper", "return d['k']")
                ]
            );
            assert!(frames.iter().all(|f| f.file == "snippets/raise.py"));
            assert!(traceback.contains("KeyError: 'k'"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "model `raise`: run_inference raised `KeyError: 'k'` (snippets/raise.py:2, in helper)"
    );
}

#[test]
fn tracebacks_show_display_source_not_substituted_secrets() {
    let mut sp = spec(
        "secret",
        "secret.py",
        "def run_inference(body, environment):\n    raise RuntimeError('sk-123' + '')\n",
    );
    sp.display_source =
        Some("def run_inference(body, environment):\n    raise RuntimeError('<< secrets.KEY >>' + '')\n".to_owned());
    let s = load(sp);
    let e = call(&s, body_env(), SECOND).expect_err("raises");
    let frames = e.kind.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].source_line, "raise RuntimeError('<< secrets.KEY >>' + '')");
    if let CallErrorKind::Raised { traceback, .. } = &*e.kind {
        assert!(!traceback.contains("raise RuntimeError('sk-123'"), "{traceback}");
    }
}

#[test]
fn source_lines_survive_a_cleared_linecache() {
    let mut sp = spec(
        "clear",
        "clear.yaml",
        "import linecache\ndef run_inference(body, environment):\n    linecache.clearcache()\n    raise ValueError('x')\n",
    );
    sp.line_offset = 7;
    let s = load(sp);
    let e = call(&s, body_env(), SECOND).expect_err("raises");
    let frames = e.kind.frames();
    assert_eq!(frames[0].line, 11);
    assert_eq!(frames[0].source_line, "raise ValueError('x')");
}

#[test]
fn inline_snippets_sharing_a_file_keep_their_own_lines() {
    let mut first = spec(
        "inline-1",
        "shared.yaml",
        "def run_inference(body, environment):\n    raise ValueError('one')\n",
    );
    first.line_offset = 3;
    let mut second = spec(
        "inline-2",
        "shared.yaml",
        "def run_inference(body, environment):\n    raise ValueError('two')\n",
    );
    second.line_offset = 20;
    let (a, b) = (load(first), load(second));
    let fa = call(&a, body_env(), SECOND).expect_err("one").kind.frames().to_vec();
    let fb = call(&b, body_env(), SECOND).expect_err("two").kind.frames().to_vec();
    assert_eq!((fa[0].line, fa[0].source_line.as_str()), (5, "raise ValueError('one')"));
    assert_eq!(
        (fb[0].line, fb[0].source_line.as_str()),
        (22, "raise ValueError('two')")
    );
}

#[test]
fn system_exit_and_keyboard_interrupt_fail_only_that_call() {
    let s = load(spec(
        "exit",
        "exit.py",
        "import sys\ndef run_inference(body, environment):\n    if body == 'exit':\n        sys.exit(3)\n    if body == 'int':\n        raise KeyboardInterrupt\n    return 'alive'\n",
    ));
    let e = call(&s, vec![json!("exit"), json!({})], SECOND).expect_err("exit");
    assert!(
        matches!(&*e.kind, CallErrorKind::Raised { exc_type, message, .. } if exc_type == "SystemExit" && message == "3")
    );
    let e = call(&s, vec![json!("int"), json!({})], SECOND).expect_err("interrupt");
    assert!(matches!(&*e.kind, CallErrorKind::Raised { exc_type, .. } if exc_type == "KeyboardInterrupt"));
    assert_eq!(ok(&s, body_env()).value, json!("alive"));

    let _guard = loop_lock();
    let s = load(spec(
        "aexit",
        "aexit.py",
        "import asyncio\nasync def run_inference(body, environment):\n    if body == 'exit':\n        raise SystemExit(2)\n    await asyncio.sleep(0)\n    return 'alive'\n",
    ));
    let e = call(&s, vec![json!("exit"), json!({})], SECOND).expect_err("exit");
    assert!(matches!(&*e.kind, CallErrorKind::Raised { exc_type, .. } if exc_type == "SystemExit"));
    assert_eq!(ok(&s, body_env()).value, json!("alive"));
}

// ---------------------------------------------------------------------------------------------
// Output capture

#[test]
fn concurrent_sync_calls_capture_their_own_output() {
    let mut sp = spec(
        "capture",
        "capture.py",
        "import logging, sys, time\nlogging.basicConfig(format='%(message)s')\nlog = logging.getLogger('capture')\ndef run_inference(body, environment):\n    for i in range(20):\n        print(body, i)\n        time.sleep(0.001)\n    sys.stderr.write(body + ' err\\n')\n    log.warning(body + ' log')\n    return body\n",
    );
    sp.workers = 4;
    let s = load(sp);
    let outputs = block_on(async {
        let calls = (0..8).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                runtime()
                    .call(&s, vec![json!(format!("c{i}")), json!({})], Duration::from_secs(10))
                    .await
            })
        });
        let mut outs = Vec::new();
        for c in calls {
            outs.push(c.await.expect("join").expect("call"));
        }
        outs
    });
    for (i, out) in outputs.iter().enumerate() {
        let mut expected: String = (0..20).map(|n| format!("c{i} {n}\n")).collect();
        expected.push_str(&format!("c{i} err\nc{i} log\n"));
        assert_eq!(out.captured, expected);
    }
}

#[test]
fn concurrent_async_calls_capture_their_own_output() {
    let _guard = loop_lock();
    let s = load(spec(
        "acapture",
        "acapture.py",
        "import asyncio\nasync def run_inference(body, environment):\n    for i in range(20):\n        print(body, i)\n        await asyncio.sleep(0)\n    return body\n",
    ));
    let outputs = block_on(async {
        let calls = (0..8).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                runtime()
                    .call(&s, vec![json!(format!("a{i}")), json!({})], Duration::from_secs(10))
                    .await
            })
        });
        let mut outs = Vec::new();
        for c in calls {
            outs.push(c.await.expect("join").expect("call"));
        }
        outs
    });
    for (i, out) in outputs.iter().enumerate() {
        let expected: String = (0..20).map(|n| format!("a{i} {n}\n")).collect();
        assert_eq!(out.captured, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts

fn timeout_frames(e: &CallError) -> &[Frame] {
    match &*e.kind {
        CallErrorKind::Timeout { frames, .. } => frames,
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn pure_python_loop_swallowing_exception_times_out() {
    let mut sp = spec(
        "spin",
        "spin.py",
        "def run_inference(body, environment):\n    while body == 'hang':\n        try:\n            sum(range(100))\n        except Exception:\n            pass\n    return 'free'\n",
    );
    sp.workers = 1;
    let s = load(sp);
    let started = Instant::now();
    let e = call(&s, vec![json!("hang"), json!({})], SECOND).expect_err("timeout");
    let elapsed = started.elapsed();
    assert!(elapsed >= SECOND && elapsed < SECOND + TIMEOUT_GRACE, "{elapsed:?}");
    let frames = timeout_frames(&e);
    assert!(matches!(frames.last(), Some(f) if f.function == "run_inference" && (2..=6).contains(&f.line)));
    assert!(
        e.to_string()
            .starts_with("model `spin`: run_inference timed out after 1s (spin.py:"),
        "{e}"
    );
    // Same (only) worker thread: no timeout may leak into the next call.
    for _ in 0..3 {
        assert_eq!(ok(&s, body_env()).value, json!("free"));
    }
}

#[test]
fn timeout_converted_into_another_exception_is_still_a_timeout() {
    let s = load(spec(
        "wrap",
        "wrap.py",
        "def run_inference(body, environment):\n    try:\n        while True:\n            pass\n    except BaseException:\n        raise RuntimeError('cleanup failed')\n",
    ));
    let started = Instant::now();
    let e = call(&s, body_env(), SECOND).expect_err("timeout");
    assert!(started.elapsed() < SECOND + TIMEOUT_GRACE);
    let frames = timeout_frames(&e);
    // Where the timeout landed (the loop), not where the replacement exception was raised.
    assert!(
        matches!(frames.last(), Some(f) if (3..=4).contains(&f.line)),
        "{frames:?}"
    );
}

#[test]
fn queueing_for_a_worker_does_not_use_up_the_budget() {
    let mut sp = spec(
        "queued",
        "queued.py",
        "import time\ndef run_inference(body, environment):\n    time.sleep(0.6)\n    return body\n",
    );
    sp.workers = 1;
    let s = load(sp);
    let results = block_on(async {
        let first = runtime().call(&s, vec![json!("a"), json!({})], SECOND);
        let second = runtime().call(&s, vec![json!("b"), json!({})], SECOND);
        tokio::join!(first, second)
    });
    // The second call waited ~0.6 s for the only worker and then ran ~0.6 s: 1.2 s in total,
    // but only 0.6 s of its own budget.
    assert_eq!(results.0.expect("first").value, json!("a"));
    assert_eq!(results.1.expect("second").value, json!("b"));
}

#[test]
fn sleeping_call_is_abandoned_after_grace_and_pool_recovers() {
    let mut sp = spec(
        "sleepy",
        "sleepy.py",
        "import time\ndef run_inference(body, environment):\n    print('about to sleep')\n    if body == 'hang':\n        time.sleep(10)\n    return 'awake'\n",
    );
    sp.workers = 1;
    let s = load(sp);
    let started = Instant::now();
    let e = call(&s, vec![json!("hang"), json!({})], SECOND).expect_err("timeout");
    let elapsed = started.elapsed();
    // Stuck in C (a sleep): reported once the short stop grace is over, not after the sleep.
    assert!(elapsed >= SECOND + STOP_GRACE, "{elapsed:?}");
    assert!(
        elapsed < SECOND + STOP_GRACE * 2 + Duration::from_millis(750),
        "{elapsed:?}"
    );
    assert_eq!(e.captured, "about to sleep\n");
    assert_eq!(
        e.to_string(),
        "model `sleepy`: run_inference timed out after 1s (sleepy.py:5, in run_inference)"
    );
    assert_eq!(timeout_frames(&e)[0].source_line, "time.sleep(10)");
    let started = Instant::now();
    assert_eq!(ok(&s, body_env()).value, json!("awake"));
    assert!(started.elapsed() < SECOND);
}

#[test]
fn async_sleep_is_cancelled_at_the_deadline() {
    let _guard = loop_lock();
    let s = load(spec(
        "asleep",
        "asleep.py",
        "import asyncio\nasync def run_inference(body, environment):\n    if body == 'hang':\n        await asyncio.sleep(10)\n    return 'done'\n",
    ));
    let started = Instant::now();
    let e = call(&s, vec![json!("hang"), json!({})], SECOND).expect_err("timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= SECOND && elapsed < SECOND + Duration::from_millis(500),
        "{elapsed:?}"
    );
    assert_eq!(
        e.to_string(),
        "model `asleep`: run_inference timed out after 1s (asleep.py:4, in run_inference)"
    );
    assert_eq!(ok(&s, body_env()).value, json!("done"));
}

#[test]
fn blocking_coroutine_is_reported_and_frees_the_loop() {
    let _guard = loop_lock();
    let s = load(spec(
        "blocker",
        "blocker.py",
        "import time\nasync def run_inference(body, environment):\n    if body == 'hang':\n        time.sleep(3)\n    return 'done'\n",
    ));
    let started = Instant::now();
    let e = call(&s, vec![json!("hang"), json!({})], SECOND).expect_err("timeout");
    let elapsed = started.elapsed();
    assert!(elapsed >= SECOND + TIMEOUT_GRACE, "{elapsed:?}");
    assert!(
        elapsed < SECOND + TIMEOUT_GRACE + Duration::from_millis(750),
        "{elapsed:?}"
    );
    assert_eq!(
        e.to_string(),
        "model `blocker`: run_inference timed out after 1s (blocker.py:4, in run_inference)"
    );
    // The loop is busy until the sleep ends (3 s after the start); then the injected timeout
    // unwinds the blocker and the loop serves again.
    let out = call(&s, body_env(), Duration::from_secs(5)).expect("loop recovers");
    assert_eq!(out.value, json!("done"));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Runtime

#[test]
fn second_initialize_is_refused() {
    let _ = runtime();
    assert!(matches!(
        initialize(&PythonOptions::default()),
        Err(PythonError::AlreadyInitialized)
    ));
}

#[test]
fn info_describes_the_embedded_interpreter() {
    let info = runtime().info();
    assert!(info.version.starts_with("3."), "{info:?}");
    let minor = info.version.split('.').take(2).collect::<Vec<_>>().join(".");
    assert!(std::path::Path::new(&info.executable).is_file(), "{info:?}");
    assert!(
        info.sys_path.iter().any(|p| p.ends_with(&format!("lib/python{minor}"))),
        "{info:?}"
    );
    match &info.httpx {
        Ok(version) => assert!(version.chars().next().is_some_and(|c| c.is_ascii_digit())),
        Err(e) => assert!(e.contains("httpx"), "{e}"),
    }
    runtime().flush();
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lfeval-py-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn venv_for_another_python_is_explained() {
    let dir = scratch_dir("venv-other");
    std::fs::create_dir_all(dir.join("lib/python3.99/site-packages")).expect("mkdir");
    let err = venv_site_packages(&dir, 3, 11).expect_err("wrong version");
    assert!(
        err.to_string()
            .contains("created for `python3.99` but lfeval embeds `python3.11`"),
        "{err}"
    );
    let empty = scratch_dir("venv-empty");
    let err = venv_site_packages(&empty, 3, 11).expect_err("no lib");
    assert!(
        err.to_string().contains("no `lib/python3.11/site-packages` inside"),
        "{err}"
    );
    std::fs::create_dir_all(empty.join("lib/python3.11/site-packages")).expect("mkdir");
    assert!(venv_site_packages(&empty, 3, 11).is_ok());
}

#[test]
fn site_dirs_shadow_base_packages_and_run_pth_files() {
    let dir = scratch_dir("site");
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(dir.join("lfeval_probe_a.py"), "VALUE = 'a'\n").expect("write");
    std::fs::write(extra.join("lfeval_probe_b.py"), "VALUE = 'b'\n").expect("write");
    std::fs::write(dir.join("probe.pth"), format!("{}\n", extra.display())).expect("write");
    let _ = runtime();
    let paths: Vec<String> = Python::attach(|py| {
        let support = py.import("_lfeval_support").expect("support");
        support
            .call_method1("_add_site_dir", (dir.display().to_string(),))
            .expect("add");
        py.import("sys")
            .and_then(|s| s.getattr("path"))
            .and_then(|p| p.extract())
            .expect("path")
    });
    let pos = |p: &std::path::Path| paths.iter().position(|x| x == &p.display().to_string());
    let base = paths.iter().position(|p| p.ends_with("site-packages"));
    assert!(pos(&dir) < base && pos(&extra) < base, "{paths:?}");
    let s = load(spec(
        "probe",
        "probe.py",
        "import lfeval_probe_a, lfeval_probe_b\ndef run_inference(body, environment):\n    return lfeval_probe_a.VALUE + lfeval_probe_b.VALUE\n",
    ));
    assert_eq!(ok(&s, body_env()).value, json!("ab"));
}

// ---------------------------------------------------------------------------------------------
// Formatting

#[test]
fn durations_read_like_timeouts() {
    assert_eq!(crate::diagnostic::format_duration(Duration::from_secs(15)), "15s");
    assert_eq!(crate::diagnostic::format_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(crate::diagnostic::format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(crate::diagnostic::format_duration(Duration::from_millis(2050)), "2.05s");
}

#[test]
fn slugs_are_module_name_safe() {
    assert_eq!(slug("model `gpt-4o`"), "model_gpt_4o");
    assert_eq!(slug("``"), "snippet");
    assert!(slug(&"x".repeat(100)).len() <= 40);
}

#[test]
fn runtime_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PythonRuntime>();
    check::<Snippet>();
    check::<CallError>();
    check::<SnippetLoadError>();
}
