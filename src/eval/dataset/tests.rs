//! Tests for dataset reading: sources, ids, filters and errors.

use super::folder_rows::split_front_matter;
use super::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;

/// Stand-in for the Jinja evaluator: the expression is a column name, `sample.` optional.
fn lookup(expression: &str, row: &Row) -> Result<Value, String> {
    if expression == "boom" {
        return Err("template error".into());
    }
    let name = expression.strip_prefix("sample.").unwrap_or(expression);
    Ok(row.get(name).cloned().unwrap_or(Value::Null))
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::File::create(&path).unwrap().write_all(contents).unwrap();
    path
}

fn spec(yaml: &str) -> DatasetSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn collect(spec: &DatasetSpec, dir: &Path) -> Result<Vec<Sample>, DatasetError> {
    open(spec, dir, &lookup)?.collect()
}

fn ids(samples: &[Sample]) -> Vec<&str> {
    samples.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn csv_rows_are_strings_with_index_ids() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "d.csv",
        "\u{feff}q,n,flag\nhi,1,True\n\"a, b\",2.5,False\n".as_bytes(),
    );
    let samples = collect(&spec("key: d\nsource: {type: local, file_path: d.csv}"), dir.path()).unwrap();
    assert_eq!(ids(&samples), ["0", "1"]);
    assert_eq!(
        Value::Object(samples[0].row.clone()),
        json!({"q": "hi", "n": "1", "flag": "True"})
    );
    assert_eq!(samples[1].row["q"], json!("a, b"));
    assert_eq!(samples[1].row["n"], json!("2.5"));
    assert_eq!(samples[1].index, 1);
}

#[test]
fn csv_short_rows_get_null_and_long_rows_fail_with_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.csv", b"a,b\n1\n1,2,3\n");
    let mut it = open(&spec("key: d\nfile_path: d.csv"), dir.path(), &lookup).unwrap();
    let first = it.next().unwrap().unwrap();
    assert_eq!(Value::Object(first.row), json!({"a": "1", "b": null}));
    let err = it.next().unwrap().unwrap_err();
    assert!(
        err.to_string().ends_with("d.csv:3` has 3 fields but the header has 2"),
        "{err}"
    );
    assert!(it.next().is_none(), "iteration stops after an error");
}

#[test]
fn csv_duplicate_header_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.csv", b"a,a\n1,2\n");
    let err = open(&spec("key: d\nfile_path: d.csv"), dir.path(), &lookup)
        .err()
        .unwrap();
    assert!(matches!(err, DatasetError::DuplicateColumn { ref column, .. } if column == "a"));
}

#[test]
fn csv_invalid_utf8_names_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.csv", b"a\nok\n\xff\xfe\n");
    let results: Vec<_> = open(&spec("key: d\nfile_path: d.csv"), dir.path(), &lookup)
        .unwrap()
        .collect();
    assert_eq!(results.len(), 2);
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("d.csv:3`: invalid UTF-8"), "{err}");
}

#[test]
fn jsonl_keeps_types_skips_blank_lines_and_uses_sample_id() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "d.jsonl",
        b"{\"sample_id\": \"q1\", \"n\": 1, \"ok\": true}\n\n   \n{\"sample_id\": 7, \"n\": 2.5}\r\n",
    );
    let samples = collect(&spec("key: d\nsource: {type: local, file_path: d.jsonl}"), dir.path()).unwrap();
    assert_eq!(ids(&samples), ["q1", "7"]);
    assert_eq!(samples[0].row["ok"], json!(true));
    assert_eq!(samples[1].row["n"], json!(2.5));
    assert_eq!(samples[1].index, 1);
}

#[test]
fn jsonl_malformed_line_reports_physical_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.jsonl", b"{\"a\": 1}\n\n{\"a\": }\n{\"a\": 3}\n");
    let results: Vec<_> = open(&spec("key: d\nfile_path: d.jsonl"), dir.path(), &lookup)
        .unwrap()
        .collect();
    assert_eq!(results.len(), 2);
    let err = results[1].as_ref().unwrap_err();
    let DatasetError::InvalidJson { location, message } = err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(location.line, Some(3));
    assert!(location.path.ends_with("d.jsonl"));
    assert_eq!(message, "expected value (column 7)");
    assert!(err.to_string().starts_with("invalid JSON at `"), "{err}");
}

#[test]
fn jsonl_non_object_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.jsonl", b"[1, 2]\n");
    let err = collect(&spec("key: d\nfile_path: d.jsonl"), dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("d.jsonl:1` is not a JSON object (found array `[1,2]`)"),
        "{err}"
    );
}

#[test]
fn duplicate_ids_name_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "d.jsonl",
        b"{\"sample_id\": \"a\"}\n{\"sample_id\": \"b\"}\n{\"sample_id\": \"a\"}\n",
    );
    let err = collect(&spec("key: d\nfile_path: d.jsonl"), dir.path()).unwrap_err();
    let DatasetError::DuplicateId { id, first, second } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(id, "a");
    assert_eq!((first.line, second.line), (Some(1), Some(3)));
    // an explicit sample_id may also collide with another row's index id
    write(dir.path(), "e.jsonl", b"{\"x\": 1}\n{\"sample_id\": \"0\"}\n");
    let err = collect(&spec("key: e\nfile_path: e.jsonl"), dir.path()).unwrap_err();
    assert!(err.to_string().starts_with("duplicate sample id `0` at"), "{err}");
}

#[test]
fn id_column_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.csv", b"qid,text,sample_id\nx1,a,s\nx2,b,s\n");
    let samples = collect(&spec("key: d\nfile_path: d.csv\nid_column: qid"), dir.path()).unwrap();
    assert_eq!(ids(&samples), ["x1", "x2"]);
    let err = collect(&spec("key: d\nfile_path: d.csv\nid_column: nope"), dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("d.csv:2` has no `nope` column for the sample id"),
        "{err}"
    );
    write(dir.path(), "e.jsonl", b"{\"id\": 1}\n{\"id\": null}\n");
    let err = collect(&spec("key: e\nfile_path: e.jsonl\nid_column: id"), dir.path()).unwrap_err();
    assert!(
        matches!(err, DatasetError::InvalidId { ref location, .. } if location.line == Some(2)),
        "{err}"
    );
}

#[test]
fn index_ids_are_stable_across_filters() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.jsonl", b"{\"k\": 1}\n{\"k\": 2}\n{\"k\": 3}\n");
    let yaml = "key: d\nsource:\n  type: local\n  file_path: d.jsonl\n  filters:\n    - {expression: k, op: not_equals, value: 2}\n";
    let samples = collect(&spec(yaml), dir.path()).unwrap();
    assert_eq!(ids(&samples), ["0", "2"]);
    assert_eq!(samples[1].index, 2);
}

fn filtered(rows: &[Value], filters: &str) -> Result<Vec<String>, DatasetError> {
    let dir = tempfile::tempdir().unwrap();
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    write(dir.path(), "d.jsonl", body.as_bytes());
    let yaml = format!("key: d\nsource:\n  type: local\n  file_path: d.jsonl\n  filters: {filters}\n");
    let samples = collect(&spec(&yaml), dir.path())?;
    Ok(samples.into_iter().map(|s| s.id).collect())
}

#[test]
fn filter_ops() {
    let rows = [
        json!({"num": 1, "s": "a", "b": true, "t": "TRUE"}),
        json!({"num": 2.0, "s": "b", "b": false, "t": "false"}),
        json!({"num": 3, "s": "c", "t": ""}),
    ];
    let case = |filters: &str| filtered(&rows, filters).unwrap();
    assert_eq!(case("[{expression: num, op: equals, value: 2}]"), ["1"]); // 2.0 == 2
    assert_eq!(case("[{expression: s, op: equals, value: 'a'}]"), ["0"]);
    assert_eq!(case("[{expression: num, op: not_equals, value: 1}]"), ["1", "2"]);
    assert_eq!(case("[{expression: num, op: greater_than, value: 1}]"), ["1", "2"]);
    assert_eq!(case("[{expression: num, op: less_than, value: 2}]"), ["0"]);
    assert_eq!(case("[{expression: num, op: greater_or_equal, value: 2}]"), ["1", "2"]);
    assert_eq!(case("[{expression: num, op: less_or_equal, value: 2}]"), ["0", "1"]);
    assert_eq!(case("[{expression: s, op: in, values: [a, c]}]"), ["0", "2"]);
    assert_eq!(case("[{expression: s, op: not_in, values: [a, c]}]"), ["1"]);
    assert_eq!(case("[{expression: b, op: exists}]"), ["0", "1"]);
    assert_eq!(case("[{expression: sample.b, op: not_exists}]"), ["2"]);
    assert_eq!(case("[{expression: b, op: is_true}]"), ["0"]);
    assert_eq!(case("[{expression: b, op: is_false}]"), ["1", "2"]); // missing → null → falsy
    assert_eq!(case("[{expression: t, op: is_true}]"), ["0"]); // "TRUE" true; "false", "" false
    assert_eq!(case("[{expression: t, op: is_false}]"), ["1", "2"]);
    // booleans order as 0/1; a missing value (null) cannot be ordered
    let bools = [json!({"b": true}), json!({"b": false})];
    assert_eq!(
        filtered(&bools, "[{expression: b, op: greater_than, value: 0}]").unwrap(),
        ["0"]
    );
    let err = filtered(&rows, "[{expression: b, op: greater_than, value: 0}]").unwrap_err();
    assert!(matches!(err, DatasetError::FilterNotNumeric { ref found, .. } if found == "`null`"));
    // AND-combined
    assert_eq!(
        case("[{expression: num, op: greater_than, value: 1}, {expression: s, op: not_equals, value: c}]"),
        ["1"]
    );
}

#[test]
fn equality_is_strict_between_strings_and_bools() {
    let rows = [json!({"f": "True"}), json!({"f": true})];
    assert_eq!(
        filtered(&rows, "[{expression: f, op: equals, value: true}]").unwrap(),
        ["1"]
    );
    assert_eq!(
        filtered(&rows, "[{expression: f, op: equals, value: 'True'}]").unwrap(),
        ["0"]
    );
}

#[test]
fn ordering_on_strings_fails_with_expression_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.csv", b"num\n5\n");
    let yaml = "key: d\nsource:\n  type: local\n  file_path: d.csv\n  filters: [{expression: num, op: greater_than, value: 3}]\n";
    let err = collect(&spec(yaml), dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("filter `num` with `greater_than` needs a number or boolean, got string `\"5\"` at `"),
        "{text}"
    );
    assert!(text.contains("d.csv:2`"), "{text}");
    assert!(text.contains("hint: CSV values are strings"), "{text}");
}

#[test]
fn evaluator_errors_are_reported_with_location() {
    let err = filtered(&[json!({"a": 1})], "[{expression: boom, op: exists}]").unwrap_err();
    assert!(err.to_string().starts_with("filter `boom` failed at `"), "{err}");
    assert!(err.to_string().ends_with("d.jsonl:1`: template error"), "{err}");
}

#[test]
fn filter_shapes_are_validated_at_open() {
    let bad = [
        ("[{expression: num, op: equals}]", "`equals` needs a `value`"),
        (
            "[{expression: num, op: in, value: 1}]",
            "`in` takes `values`, not `value`",
        ),
        ("[{expression: num, op: in}]", "`in` needs a `values` list"),
        (
            "[{expression: num, op: exists, value: 1}]",
            "`exists` takes neither `value` nor `values`",
        ),
        (
            "[{expression: num, op: less_than, value: abc}]",
            "`less_than` needs a number or boolean `value`, got string `\"abc\"`",
        ),
        ("[{expression: '', op: exists}]", "`expression` is empty"),
    ];
    for (filters, expected) in bad {
        let err = filtered(&[json!({"num": 1})], filters).unwrap_err();
        assert!(err.to_string().starts_with("dataset `d`, `filters[0]`"), "{err}");
        assert!(err.to_string().ends_with(expected), "{err}");
    }
}

#[test]
fn source_selection_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = collect(&spec("key: d"), dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::NoSource { .. }));
    let err = collect(
        &spec("key: d\nfile_path: a.csv\nsource: {type: local, file_path: a.csv}"),
        dir.path(),
    )
    .unwrap_err();
    assert!(matches!(err, DatasetError::BothSources { .. }));
    let err = collect(&spec("key: d\nsource: {type: local, file_path: a.json}"), dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::UnsupportedExtension { .. }), "{err}");
    let err = collect(&spec("key: d\nfile_path: missing.csv"), dir.path()).unwrap_err();
    assert!(err.to_string().starts_with("cannot open `"), "{err}");
    // filters are checked before the file is touched
    let yaml = "key: d\nsource: {type: local, file_path: missing.csv, filters: [{expression: x, op: in}]}";
    let err = collect(&spec(yaml), dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::InvalidFilter { .. }), "{err}");
    let err = collect(
        &spec(
            "key: d\ngenerator_specification: {dataset_generator_key: g, dataset_generator_config: {}, num_samples: 1}",
        ),
        dir.path(),
    )
    .unwrap_err();
    assert!(matches!(err, DatasetError::GeneratorUnsupported { .. }));
    let err = serde_saphyr::from_str::<DatasetSpec>("key: d\nfile_pth: a.csv").unwrap_err();
    assert!(err.to_string().contains("file_pth"), "{err}");
    // Sources lf reads through other services parse, and are refused by name when opened.
    let err = collect(&spec("key: d\nsource: {type: url, url: 'https://x'}"), dir.path()).unwrap_err();
    assert!(
        matches!(err, DatasetError::SourceUnsupported { kind: "url", .. }),
        "{err}"
    );
}

#[test]
fn relative_paths_resolve_against_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "data/d.jsonl", b"{\"a\": 1}\n");
    let samples = collect(&spec("key: d\nfile_path: data/d.jsonl"), dir.path()).unwrap();
    assert_eq!(samples.len(), 1);
    // absolute paths ignore base_dir
    let abs = dir.path().join("data/d.jsonl");
    let yaml = format!("key: d\nfile_path: '{}'", abs.display());
    let samples = collect(&spec(&yaml), Path::new("/nonexistent")).unwrap();
    assert_eq!(samples.len(), 1);
}

#[test]
fn folder_source_rows_front_matter_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("docs");
    write(
        &root,
        "b.md",
        b"---\ntitle: Bee\ntags: [x, y]\ndraft: no\nok: true\nfile_name: spoof\n---\nBody of b\n",
    );
    write(&root, "a.txt", b"plain a");
    write(&root, "sub/c.md", b"---\nnot closed\nstill content");
    write(&root, "z.pdf", b"%PDF-1.4 binary");
    write(&root, ".hidden.md", b"secret");
    let yaml = "key: f\nsource: {type: folder, directory_path: docs}";
    let samples = collect(&spec(yaml), dir.path()).unwrap();
    let names: Vec<&str> = samples.iter().map(|s| s.row["file_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.txt", "b.md", "sub/c.md"]);
    // sha256("plain a")
    let expected_id = hex::encode(Sha256::digest(b"plain a"));
    assert_eq!(samples[0].id, expected_id);
    assert_eq!(samples[0].row["sample_id"], json!(expected_id));
    assert_eq!(samples[0].row["content"], json!("plain a"));
    let b = &samples[1].row;
    assert_eq!(
        Value::Object(b.clone()),
        json!({
            "sample_id": hex::encode(Sha256::digest(b"---\ntitle: Bee\ntags: [x, y]\ndraft: no\nok: true\nfile_name: spoof\n---\nBody of b\n")),
            "file_name": "b.md",
            "content": "Body of b\n",
            "title": "Bee",
            "tags": ["x", "y"],
            "draft": "no",
            "ok": true
        })
    );
    // unterminated front matter is content
    assert_eq!(samples[2].row["content"], json!("---\nnot closed\nstill content"));
    assert_eq!(samples[2].index, 2);
}

#[test]
fn folder_extension_filter_and_row_filters() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.md", b"---\nlang: en\n---\nhello");
    write(dir.path(), "b.MD", b"---\nlang: de\n---\nhallo");
    write(dir.path(), "c.txt", b"text");
    let yaml = "key: f\nsource:\n  type: folder\n  directory_path: .\n  extension: .md\n  filters: [{expression: lang, op: equals, value: de}]\n";
    let samples = collect(&spec(yaml), dir.path()).unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].row["file_name"], json!("b.MD"));
    assert_eq!(samples[0].row["content"], json!("hallo"));
    assert_eq!(samples[0].index, 1);
}

#[test]
fn folder_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bin.dat", b"\xff\x00\xfe");
    let err = collect(&spec("key: f\nsource: {type: folder, directory_path: .}"), dir.path()).unwrap_err();
    assert!(
        matches!(err, DatasetError::NotUtf8 { ref path } if path.ends_with("bin.dat")),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "x.md", b"---\ntitle: [unclosed\n---\nbody");
    let err = collect(&spec("key: f\nsource: {type: folder, directory_path: .}"), dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("invalid front matter in `"), "{text}");
    assert!(text.contains("x.md"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "one.txt", b"same");
    write(dir.path(), "two.txt", b"same");
    let err = collect(&spec("key: f\nsource: {type: folder, directory_path: .}"), dir.path()).unwrap_err();
    let DatasetError::DuplicateId { first, second, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(first.path.ends_with("one.txt") && second.path.ends_with("two.txt"));

    let err = collect(
        &spec("key: f\nsource: {type: folder, directory_path: nope}"),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("cannot open `"), "{err}");
}

#[test]
fn front_matter_splitting() {
    assert_eq!(split_front_matter("---\na: 1\n---\nbody"), Some(("a: 1\n", "body")));
    assert_eq!(
        split_front_matter("---\r\na: 1\r\n---\r\nbody"),
        Some(("a: 1\r\n", "body"))
    );
    assert_eq!(split_front_matter("---\n---\n"), Some(("", "")));
    assert_eq!(split_front_matter("--- \na: 1\n---"), Some(("a: 1\n", "")));
    assert_eq!(split_front_matter("text\n---\na: 1\n---\n"), None);
    assert_eq!(split_front_matter("---"), None);
}

#[test]
fn rows_stream_lazily() {
    // the second line is broken; the first sample is still delivered before the error
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.jsonl", b"{\"a\": 1}\nnot json\n");
    let mut it = open(&spec("key: d\nfile_path: d.jsonl"), dir.path(), &lookup).unwrap();
    assert_eq!(it.next().unwrap().unwrap().row["a"], json!(1));
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
}
