//! The test builder: a fresh project directory per test, files written into it, and the real
//! `lfeval` binary run there with a clean, deterministic environment. `snapshot()` renders the
//! exit code, stdout and stderr with paths, ports and timings filtered, for insta.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use regex::Regex;

#[must_use]
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
    filters: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Test {
    pub fn new() -> Test {
        let dir = tempfile::Builder::new()
            .prefix("lfeval-test-")
            .tempdir()
            .expect("create a temp dir");
        Test {
            dir,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            filters: Vec::new(),
            cwd: None,
        }
    }

    /// The project directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(self, relative: &str, contents: &str) -> Test {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        std::fs::write(&path, contents).expect("write file");
        self
    }

    /// Copies a file or directory of the repository (e.g. `snippets/run_inference.py`).
    pub fn copy_from_repo(self, relative: &str) -> Test {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        copy_tree(&from, &self.dir.path().join(relative));
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Test {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the arguments in place, to run another command in the same project.
    pub fn set_args<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, args: I) -> &mut Test {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn stdin(mut self, input: &str) -> Test {
        self.stdin = Some(input.to_owned());
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Test {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// An extra regex filter for snapshots.
    pub fn filter(mut self, pattern: &str, replacement: &str) -> Test {
        self.filters.push((pattern.to_owned(), replacement.to_owned()));
        self
    }

    pub fn secrets_file(&self) -> PathBuf {
        self.dir.path().join(".test-home/secrets.json")
    }

    pub fn run(&self) -> Output {
        let home = self.dir.path().join(".test-home");
        std::fs::create_dir_all(&home).expect("home");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lfeval"));
        cmd.args(&self.args)
            .current_dir(self.cwd.as_deref().unwrap_or(self.dir.path()))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .env("LANG", "C.UTF-8")
            .env("LFEVAL_SECRETS_FILE", self.secrets_file());
        if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
            cmd.env("VIRTUAL_ENV", venv);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run lfeval");
        if let Some(input) = &self.stdin {
            use std::io::Write;
            // lfeval may exit before reading its input (e.g. a rejected name): that is not a
            // test failure, so a closed pipe is fine.
            if let Err(e) = child.stdin.take().expect("stdin").write_all(input.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing lfeval's stdin: {e}");
            }
        }
        let out = child.wait_with_output().expect("wait for lfeval");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and checks the exit code, showing both streams when it is not `code`.
    #[track_caller]
    pub fn status(&self, code: i32) -> Output {
        let out = self.run();
        assert_eq!(
            out.code,
            code,
            "`lfeval {}` exited {} (expected {code})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        out
    }

    /// Runs and expects exit code 0.
    #[track_caller]
    pub fn success(&self) -> Output {
        self.status(0)
    }

    /// Runs and expects exit code 1: the command ran, and checks or samples failed.
    #[track_caller]
    pub fn failure(&self) -> Output {
        self.status(1)
    }

    /// Runs and expects exit code 2: a usage or configuration error.
    #[track_caller]
    pub fn config_error(&self) -> Output {
        self.status(2)
    }

    /// Runs and renders what a user sees, with nondeterminism filtered out.
    pub fn snapshot(&self) -> String {
        self.render(&self.run())
    }

    /// Renders an output that was already produced, as [`Test::snapshot`] does.
    pub fn render(&self, out: &Output) -> String {
        let text = format!(
            "exit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
            out.code,
            out.stdout.trim_end(),
            out.stderr.trim_end()
        );
        self.filtered(&text)
    }

    pub fn filtered(&self, text: &str) -> String {
        let root = self
            .dir
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.dir.path().to_path_buf());
        let mut text = text
            .replace(&root.display().to_string(), "[PROJECT]")
            .replace(&self.dir.path().display().to_string(), "[PROJECT]");
        let mut filters: Vec<(String, String)> = vec![
            (r"127\.0\.0\.1:\d+".to_owned(), "127.0.0.1:[PORT]".to_owned()),
            (r"\b\d+(\.\d+)?(ms|µs|s)\b".to_owned(), "[TIME]".to_owned()),
            (
                r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z".to_owned(),
                "[TIMESTAMP]".to_owned(),
            ),
            (r"\d+(\.\d+)?/s\b".to_owned(), "[RATE]".to_owned()),
        ];
        filters.extend(self.filters.iter().cloned());
        for (pattern, replacement) in filters {
            text = Regex::new(&pattern)
                .expect("valid filter")
                .replace_all(&text, replacement.as_str())
                .into_owned();
        }
        text
    }
}

/// One line of `samples.jsonl` as readers see it through lfeval's own `SampleRecord`: the
/// solver output that the line stores by reference (`output_call`, `reply_from_output`)
/// spelled out in full.
pub fn record_of_line(line: &str) -> serde_json::Value {
    let mut raw: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad samples.jsonl line ({e}): {line}"));
    let record: lfeval::eval::record::SampleRecord =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a sample record ({e}): {line}"));
    raw["solver_output"] = serde_json::to_value(&record.solver_output).expect("solver output");
    raw
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, to).expect("copy");
    }
}

/// Asserts a snapshot of a [`Test`] run.
#[macro_export]
macro_rules! lfeval_snapshot {
    ($test:expr) => {
        insta::assert_snapshot!($test.snapshot())
    };
    ($name:expr, $test:expr) => {
        insta::assert_snapshot!($name, $test.snapshot())
    };
}
