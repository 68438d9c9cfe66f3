//! Input-file tests for the YAML dialect: every directory under `tests/fixtures/dialect/valid/`
//! and `tests/fixtures/dialect/invalid/` is a tiny project (models, adapters, the files they
//! include, an optional `.env`) written to the docs-era contract of aigo.md §2, §3 and §6.
//!
//! Each case is copied into a fresh project directory and run through `lfeval validate` (plus
//! `model list` and `model list --json` for valid cases); the combined output is one snapshot per
//! case. Valid cases must exit 0; invalid ones must exit 1 and name `file:line:col`.
//!
//! Optional control files in a case directory (never read by lfeval itself):
//! * `_args`: global arguments put before every command, e.g. `--env config/staging.env`;
//! * `_env`: `KEY=value` lines set in the process environment of every command;
//! * `_commands`: extra commands for valid cases, one per line (whitespace-separated
//!   arguments), each of which must exit 0.

use std::path::Path;

use regex::Regex;

use crate::test::Test;

/// Copies the case directory into a fresh project.
fn project(case: &Path) -> Test {
    let mut t = Test::new();
    copy_dir(case, t.path());
    for line in control_lines(case, "_env") {
        let (key, value) = line.split_once('=').expect("`_env` lines are KEY=value");
        t = t.env(key, value);
    }
    t
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read case dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy case file");
        }
    }
}

/// Non-empty, non-comment lines of a control file; empty when it does not exist.
fn control_lines(case: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(case.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// Runs `lfeval <global args> <command>` and renders it like `Test::snapshot`, headed by the
/// command line. Returns the exit code too.
fn run(t: Test, global: &[String], command: &[&str]) -> (Test, i32, String) {
    let args: Vec<String> = global
        .iter()
        .cloned()
        .chain(command.iter().map(|s| (*s).to_owned()))
        .collect();
    let t = t.args(args.clone());
    let out = t.run();
    let text = format!(
        "$ lfeval {}\nexit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}\n",
        args.join(" "),
        out.code,
        out.stdout.trim_end(),
        out.stderr.trim_end()
    );
    let text = t.filtered(&text);
    (t, out.code, text)
}

fn case_name(case: &Path) -> String {
    case.file_name().expect("case name").to_string_lossy().into_owned()
}

#[test]
fn valid() {
    insta::glob!("../fixtures/dialect", "valid/*", |case| {
        let name = case_name(case);
        let global = words(&control_lines(case, "_args").join(" "));
        let mut commands: Vec<Vec<String>> = ["validate", "model list", "model list --json"]
            .iter()
            .map(|c| words(c))
            .collect();
        commands.extend(control_lines(case, "_commands").iter().map(|l| words(l)));

        let mut t = project(case);
        let mut report = String::new();
        for command in &commands {
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            let (next, code, text) = run(t, &global, &command);
            t = next;
            assert_eq!(
                code,
                0,
                "valid case `{name}`: `lfeval {}` failed:\n{text}",
                command.join(" ")
            );
            report.push_str(&text);
            report.push('\n');
        }
        // A valid project loads without a single error line. Warnings are allowed only for what
        // depends on the machine (unset variables, secrets not in this machine's store).
        let stray_warning = report
            .lines()
            .any(|l| l.starts_with("warning:") && !l.contains("cannot be used here yet"));
        assert!(
            !report.contains("error:") && !stray_warning,
            "valid case `{name}` reported problems:\n{report}"
        );
        insta::assert_snapshot!(report);
    });
}

#[test]
fn invalid() {
    let position = Regex::new(r"--> [^\s:]+\.(yaml|yml|j2|jinja|py|txt|md):\d+:\d+").expect("regex");
    insta::glob!("../fixtures/dialect", "invalid/*", |case| {
        let name = case_name(case);
        let global = words(&control_lines(case, "_args").join(" "));
        let t = project(case);
        let (t, code, text) = run(t, &global, &["validate"]);
        assert_eq!(
            code, 1,
            "invalid case `{name}` must fail validation with exit code 1:\n{text}"
        );
        assert!(
            text.contains("error: "),
            "invalid case `{name}` printed no error:\n{text}"
        );
        assert!(
            position.is_match(&text),
            "invalid case `{name}` does not name file:line:col:\n{text}"
        );
        // A broken file never takes the other commands down: listing still works and is JSON.
        let (_, list_code, list) = run(t, &global, &["model", "list", "--json"]);
        assert_eq!(
            list_code, 0,
            "`model list --json` must survive invalid case `{name}`:\n{list}"
        );
        let stdout = list
            .split("----- stdout -----\n")
            .nth(1)
            .and_then(|s| s.split("\n----- stderr -----").next())
            .unwrap_or("");
        serde_json::from_str::<serde_json::Value>(stdout)
            .unwrap_or_else(|e| panic!("case `{name}`: `model list --json` is not JSON ({e}):\n{list}"));
        insta::assert_snapshot!(text);
    });
}
