//! Tests of the YAML dialect: scalar typing, includes, `$ref`, variables, `((TODO))` and located errors.

use std::collections::HashMap;

use super::*;

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn load_in(dir: &tempfile::TempDir, name: &str, vars: &[(&str, &str)]) -> Result<Node, Diagnostic> {
    let vars = Variables::fixed(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    );
    let root = dir.path().canonicalize().expect("root");
    load(&root.join(name), &root, &vars)
}

#[test]
fn scalars_follow_the_core_schema() {
    let node = load_str("t.yaml", "a: yes\nb: 12\nc: 1.5\nd: true\ne: ~\nf: '12'\ng: 0x1f\n").expect("parse");
    assert!(matches!(node.get("a").map(|n| &n.value), Some(Value::Str(s)) if s == "yes"));
    assert!(matches!(node.get("b").map(|n| &n.value), Some(Value::Int(12))));
    assert!(matches!(node.get("c").map(|n| &n.value), Some(Value::Float(f)) if (*f - 1.5).abs() < 1e-9));
    assert!(matches!(node.get("d").map(|n| &n.value), Some(Value::Bool(true))));
    assert!(matches!(node.get("e").map(|n| &n.value), Some(Value::Null)));
    assert!(matches!(node.get("f").map(|n| &n.value), Some(Value::Str(s)) if s == "12"));
    assert!(matches!(node.get("g").map(|n| &n.value), Some(Value::Int(31))));
}

#[test]
fn duplicate_keys_are_rejected_with_both_lines() {
    let err = load_str("t.yaml", "a: 1\nb: 2\na: 3\n").expect_err("duplicate");
    assert_eq!(err.message, "duplicate key `a`");
    assert_eq!(err.location.as_ref().map(|l| l.line), Some(3));
    assert!(err.notes.iter().any(|n| n.contains("t.yaml:1")), "{:?}", err.notes);
}

#[test]
fn include_text_is_stripped_and_remembers_its_file() {
    let dir = project(&[
        ("m.yaml", "code: !include \"./s/x.py\"\n"),
        ("s/x.py", "\n\nprint(1)\n\n"),
    ]);
    let node = load_in(&dir, "m.yaml", &[]).expect("load");
    let code = node.get("code").expect("code");
    assert_eq!(code.as_str(), Some("print(1)"));
    let (file, offset, _) = code.text_origin();
    assert_eq!(file.display, "s/x.py");
    assert_eq!(offset, 2);
}

#[test]
fn include_escaping_the_project_is_rejected() {
    let outer = tempfile::tempdir().expect("tempdir");
    std::fs::write(outer.path().join("secret.txt"), "x").expect("write");
    std::fs::create_dir(outer.path().join("p")).expect("mkdir");
    std::fs::write(outer.path().join("p/m.yaml"), "a: !include ../secret.txt\n").expect("write");
    let root = outer.path().join("p").canonicalize().expect("root");
    let err = load(&root.join("m.yaml"), &root, &Variables::fixed(HashMap::new())).expect_err("escape");
    assert!(err.message.contains("escapes the project directory"), "{}", err.message);
}

#[test]
fn include_cycle_is_reported() {
    let dir = project(&[("a.yaml", "x: !include b.yaml\n"), ("b.yaml", "y: !include a.yaml\n")]);
    let err = load_in(&dir, "a.yaml", &[]).expect_err("cycle");
    assert!(err.message.contains("include cycle"), "{}", err.message);
}

#[test]
fn errors_inside_included_yaml_point_into_it() {
    let dir = project(&[("a.yaml", "x: !include b.yaml\n"), ("b.yaml", "ok: 1\nbad: [\n")]);
    let err = load_in(&dir, "a.yaml", &[]).expect_err("bad yaml");
    let loc = err.location.expect("location");
    assert_eq!(loc.file, "b.yaml");
    assert!(err.notes.iter().any(|n| n.contains("a.yaml:1")), "{:?}", err.notes);
}

#[test]
fn variables_expand_with_defaults_and_interpolation() {
    let dir = project(&[(
        "m.yaml",
        "a: $HOST\nb: ${PORT:-8080}\nc: \"http://${HOST}:${PORT:-80}/v1\"\nd: $MISSING\ne: pre-$HOST\nf: |\n  ${HOST} stays\n",
    )]);
    let node = load_in(&dir, "m.yaml", &[("HOST", "example.org")]).expect("load");
    assert_eq!(node.get("a").and_then(Node::as_str), Some("example.org"));
    assert_eq!(node.get("a").and_then(|n| n.env_var.clone()).as_deref(), Some("HOST"));
    assert_eq!(node.get("b").and_then(Node::as_str), Some("8080"));
    assert_eq!(node.get("c").and_then(Node::as_str), Some("http://example.org:80/v1"));
    assert!(matches!(node.get("d").map(|n| &n.value), Some(Value::Unset(u)) if u.var == "MISSING"));
    assert_eq!(node.get("e").and_then(Node::as_str), Some("pre-$HOST"));
    assert_eq!(node.get("f").and_then(Node::as_str), Some("${HOST} stays\n"));
}

#[test]
fn ref_replaces_or_merges() {
    let dir = project(&[
        (
            "run.yaml",
            "one: {$ref: ./m.yaml}\ntwo: {$ref: ./m.yaml, key: local, extra: 1}\n",
        ),
        ("m.yaml", "key: shared\nname: M\n"),
    ]);
    let node = load_in(&dir, "run.yaml", &[]).expect("load");
    let one = node.get("one").expect("one");
    assert_eq!(one.get("key").and_then(Node::as_str), Some("shared"));
    let two = node.get("two").expect("two");
    assert_eq!(
        two.get("key").and_then(Node::as_str),
        Some("shared"),
        "referenced keys win"
    );
    assert!(matches!(two.get("extra").map(|n| &n.value), Some(Value::Int(1))));
}

#[test]
fn todo_placeholders_are_listed() {
    let dir = project(&[("m.yaml", "a: ((TODO))\nb:\n  c: x ((TODO)) y\n")]);
    let err = load_in(&dir, "m.yaml", &[]).expect_err("todo");
    assert!(
        err.message.contains("`a`") && err.message.contains("`b.c`"),
        "{}",
        err.message
    );
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Sample {
    display_name: String,
    rate_limit: Option<u32>,
}

#[test]
fn unknown_keys_suggest_the_closest() {
    let node = load_str("m.yaml", "display_name: x\nrate_limt: 3\n").expect("parse");
    let err = from_node::<Sample>(&node, "").expect_err("unknown");
    assert_eq!(err.message, "unknown key `rate_limt`");
    assert_eq!(err.hint.as_deref(), Some("did you mean `rate_limit`?"));
    assert_eq!(err.location.as_ref().map(|l| (l.line, l.col)), Some((2, 1)));
}

#[test]
fn wrong_types_name_the_key_path() {
    let node = load_str("m.yaml", "display_name: x\nrate_limit: sixty\n").expect("parse");
    let err = from_node::<Sample>(&node, "").expect_err("type");
    assert!(err.message.contains("found the string \"sixty\""), "{}", err.message);
    assert_eq!(err.key_path.as_deref(), Some("rate_limit"));
    assert_eq!(err.location.as_ref().map(|l| l.line), Some(2));
}

#[test]
fn block_scalar_origin_is_its_first_content_line() {
    let node = load_str("a.yaml", "x:\n  code: |\n    line one\n    line two\n").expect("parse");
    let code = node.get("x").and_then(|x| x.get("code")).expect("code");
    let (_, offset, indent) = code.text_origin();
    assert_eq!(offset, 2, "the text's first line is line 3");
    assert_eq!(indent, 4);
}

#[test]
fn dollar_words_expand_like_lf() {
    let dir = project(&[("m.yaml", "url: $BASE/chat/completions\nplain: pre-$BASE\n")]);
    let node = load_in(&dir, "m.yaml", &[("BASE", "http://h/v1")]).expect("load");
    assert_eq!(
        node.get("url").and_then(Node::as_str),
        Some("http://h/v1/chat/completions")
    );
    assert_eq!(node.get("plain").and_then(Node::as_str), Some("pre-$BASE"));
}

#[test]
fn ref_content_is_expanded_once() {
    let dir = project(&[
        ("run.yaml", "m: {$ref: ./m.yaml, extra: $A}\n"),
        ("m.yaml", "key: $B\n"),
    ]);
    // `B` holds a value that itself looks like a variable; it must not be expanded again.
    let node = load_in(&dir, "run.yaml", &[("A", "a"), ("B", "$NOT_A_VARIABLE")]).expect("load");
    let m = node.get("m").expect("m");
    assert_eq!(m.get("key").and_then(Node::as_str), Some("$NOT_A_VARIABLE"));
    assert_eq!(m.get("extra").and_then(Node::as_str), Some("a"));
}

#[test]
fn ref_escaping_the_project_is_rejected_like_include() {
    let outer = tempfile::tempdir().expect("tempdir");
    std::fs::write(outer.path().join("outside.yaml"), "key: stolen\n").expect("write");
    std::fs::create_dir(outer.path().join("p")).expect("mkdir");
    std::fs::write(outer.path().join("p/m.yaml"), "a:\n  $ref: ../outside.yaml\n").expect("write");
    let root = outer.path().join("p").canonicalize().expect("root");
    let err = load(&root.join("m.yaml"), &root, &Variables::fixed(HashMap::new())).expect_err("escape");
    assert_eq!(err.message, "`$ref: ../outside.yaml` escapes the project directory");
    assert_eq!(err.location.as_ref().map(|l| l.line), Some(2));
}

/// A "billion laughs" document: each level holds ten aliases of the level before.
fn alias_bomb(levels: usize) -> String {
    let mut text = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..levels {
        let prev = format!("*l{}", i - 1);
        text.push_str(&format!("l{i}: &l{i} [{}]\n", [prev.as_str(); 10].join(", ")));
    }
    text
}

#[test]
fn an_alias_bomb_is_stopped_naming_the_alias_and_the_limit() {
    let text = alias_bomb(9);
    assert!(text.len() < 1024, "a small file: {} bytes", text.len());
    let err = load_str("bomb.yaml", &text).expect_err("bomb");
    assert_eq!(
        err.message,
        "alias `*l3` expands the document past the limit of 100000 nodes added by aliases"
    );
    assert_eq!(err.location.as_ref().map(|l| l.line), Some(5));
    // Ordinary use of anchors (shared defaults) is unaffected.
    let node = load_str(
        "ok.yaml",
        "defaults: &d {timeout: 5, retries: 2}\na: {<<: *d, name: a}\nb: {<<: *d, name: b}\n",
    )
    .expect("small aliases load");
    assert!(matches!(
        node.get("b").and_then(|b| b.get("timeout")).map(|n| &n.value),
        Some(Value::Int(5))
    ));
}

#[test]
fn aliases_of_a_large_text_count_its_bytes() {
    let big = "x".repeat(1024 * 1024);
    let text = format!("a: &a \"{big}\"\nb: [{}]\n", ["*a"; 20].join(", "));
    let err = load_str("big.yaml", &text).expect_err("16 MiB of copies");
    assert!(err.message.contains("16 MiB of text"), "{}", err.message);
}

#[test]
fn a_mapping_of_200000_keys_loads_and_still_finds_duplicates() {
    let mut text = String::with_capacity(200_000 * 16);
    for i in 0..200_000 {
        text.push_str(&format!("k{i}: {i}\n"));
    }
    let node = load_str("many.yaml", &text).expect("loads");
    assert_eq!(node.as_map().map(<[_]>::len), Some(200_000));
    text.push_str("k123456: again\n");
    let err = load_str("many.yaml", &text).expect_err("duplicate");
    assert_eq!(err.message, "duplicate key `k123456`");
    assert!(
        err.notes.iter().any(|n| n.contains("many.yaml:123457")),
        "{:?}",
        err.notes
    );
}

#[test]
fn nesting_is_bounded_so_walking_the_tree_cannot_overflow_the_stack() {
    let ok = format!("x: {}1{}\n", "[".repeat(60), "]".repeat(60));
    assert!(load_str("ok.yaml", &ok).is_ok());
    let deep = format!("x: {}1{}\n", "{a: ".repeat(5000), "}".repeat(5000));
    let err = load_str("deep.yaml", &deep).expect_err("too deep");
    assert_eq!(err.message, "YAML nested deeper than 64 levels of lists and mappings");
}
