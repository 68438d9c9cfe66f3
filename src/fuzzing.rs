//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/`) and the regression tests
//! that replay what fuzzing found (`fuzz/regressions/<target>/`). Each takes arbitrary bytes
//! and must return, whatever they are: errors are the expected outcome of most inputs, and
//! only a panic (or a hang) is a finding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::template::{TemplateEngine, TemplateOrigin};
use crate::variables::Variables;

/// A scratch directory for the inputs that must be files (one per process, reused).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lfeval-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("data"));
        dir.canonicalize().unwrap_or(dir)
    })
}

/// The YAML loader (parsing, anchors and merge keys, `!include`, `$ref`, `$VAR`, `((TODO))`)
/// and the typed readers of models, adapters, tasks, scorers and datasets on top of it.
pub fn yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let dir = scratch();
    let path = dir.join("fuzz.yaml");
    if std::fs::write(&path, text.as_bytes()).is_err() {
        return;
    }
    let vars = Variables::fixed(HashMap::from([
        ("HOST".to_owned(), "example.org".to_owned()),
        ("API_KEY".to_owned(), "sk-fuzz-0000".to_owned()),
    ]));
    let node = match crate::yaml::load(&path, dir, &vars) {
        Ok(node) => node,
        Err(_) => match crate::yaml::load_str("fuzz.yaml", &text) {
            Ok(node) => node,
            Err(_) => return,
        },
    };
    let _ = crate::model::from_yaml(node.clone(), "");
    let _ = crate::model::adapter::from_yaml(&node, "");
    let _ = crate::eval::task::from_yaml(node.clone());
    let _ = crate::eval::scorer::from_yaml(&node, "");
    let _ = crate::yaml::from_node::<crate::eval::dataset::DatasetSpec>(&node, "");
}

/// The Jinja engine: compiling and rendering a template (and evaluating it as an expression)
/// against a context like the adapters' and solvers'.
pub fn template(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let context = json!({
        "input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <&>"}]},
        "body": "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"ok\"}}], \"n\": [1, 2.5, null]}",
        "status_code": 200,
        "headers": {"content-type": "application/json"},
        "model_info": {"model_key": "m", "task": "chat_completion"},
        "kwargs": {"temperature": 0.5},
        "sample": {"question": "2+2", "answer": "4", "n": 3, "tags": ["a", "b"]},
    });
    let Value::Object(context) = context else { return };
    let engine = TemplateEngine::new();
    let origin = TemplateOrigin {
        file: "fuzz.j2".to_owned(),
        line_offset: 0,
        column_offset: 0,
    };
    let _ = engine.render_str(&source, &origin, &context);
    let _ = engine.eval_expression(&source, &context);
}

/// The dataset readers: the first byte picks CSV, JSONL or a folder holding one text file
/// with front matter; the rest is the file. Every row is read, with an id column and a filter.
pub fn dataset(data: &[u8]) {
    let Some((&kind, contents)) = data.split_first() else {
        return;
    };
    let dir = scratch().join("data");
    let (source, file) = match kind % 3 {
        0 => (json!({"type": "local", "file_path": "rows.csv"}), dir.join("rows.csv")),
        1 => (
            json!({"type": "local", "file_path": "rows.jsonl"}),
            dir.join("rows.jsonl"),
        ),
        _ => {
            let folder = dir.join("folder");
            let _ = std::fs::create_dir_all(&folder);
            (
                json!({"type": "folder", "directory_path": "folder", "extension": "md"}),
                folder.join("doc.md"),
            )
        }
    };
    if std::fs::write(&file, contents).is_err() {
        return;
    }
    let mut spec = json!({"key": "fuzz", "source": source});
    if kind & 0x80 != 0 {
        spec["id_column"] = json!("id");
    }
    if kind & 0x40 != 0 {
        spec["source"]["filters"] = json!([{"expression": "sample.n", "op": "greater_than", "value": 1}]);
    }
    let Ok(spec) = serde_json::from_value::<crate::eval::dataset::DatasetSpec>(spec) else {
        return;
    };
    let lookup = |expr: &str, row: &crate::eval::dataset::Row| -> Result<Value, String> {
        Ok(row
            .get(expr.trim_start_matches("sample."))
            .cloned()
            .unwrap_or(Value::Null))
    };
    let Ok(rows) = crate::eval::dataset::open(&spec, &dir, &lookup) else {
        return;
    };
    for row in rows.take(10_000) {
        if row.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every input fuzzing ever found is replayed here, under the ordinary test command.

    use std::path::Path;

    fn replay(target: &str, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let data = std::fs::read(entry.path()).expect("read a regression input");
            run(&data);
            count += 1;
        }
        assert!(count > 0, "no regression inputs in `{}`", dir.display());
    }

    #[test]
    fn yaml_inputs_found_by_fuzzing_still_load_or_fail_cleanly() {
        replay("yaml", super::yaml);
    }

    #[test]
    fn template_inputs_found_by_fuzzing_still_render_or_fail_cleanly() {
        replay("template", super::template);
    }

    #[test]
    fn dataset_inputs_found_by_fuzzing_still_read_or_fail_cleanly() {
        replay("dataset", super::dataset);
    }
}
