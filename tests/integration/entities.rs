//! What kind of entity a file is, decided from its content; fragments and governance files;
//! refusals by name; discovery (`model_adapters/`, one entity reached by `$ref` and by folder);
//! and runs that load only what they use.

use crate::lfeval_snapshot;
use crate::test::Test;

const DATASET: &str = "key: qa\ndisplay_name: QA\nsource:\n  type: local\n  file_path: qa.jsonl\n";
const ROWS: &str = "{\"question\": \"2+2\", \"answer\": \"4\"}\n{\"question\": \"3+3\", \"answer\": \"6\"}\n";
const TASK: &str = r#"key: echo-task
display_name: Echo
description: The offline model echoes; the scorer compares.
definition:
  dataset:
    key: qa
  solver:
    type: single_turn_solver
    input_builder:
      type: chat_completion
      input_messages:
        - role: user
          content: "{{ sample.answer }}"
  scorers:
    - type: string_equals
      ground_truth: "echo: {{ sample.answer }}"
      metrics:
        - {type: mean, field: is_correct, name: Accuracy}
"#;
const MODEL: &str = r#"key: echo
display_name: Echo
config:
  connection_type: custom_inference
  adapter: {key: latticeflow$openai_chat_completion}
  run_inference_snippet: |
    import json
    def run_inference(body, environment):
        last = json.loads(body)["messages"][-1]["content"]
        return json.dumps({"choices": [{"message": {"role": "assistant", "content": "echo: " + last}}]})
  timeout: 10
"#;
const EVALUATION: &str = r#"evaluation:
  key: echo-eval
  display_name: Echo
  description: Echo evaluation
  config_spec:
    - {key: model_key, type: model, display_name: Model}
    - {key: dataset_key, type: dataset, display_name: Dataset, default_value: qa}
  task_specifications:
    - key: echo
      task_key: echo-task
      model_key: "<< config.model_key >>"
config:
  model_key: echo
"#;

#[test]
fn validate_reads_each_file_as_the_kind_its_content_says() {
    let t = Test::new()
        .write("my_model.yaml", MODEL)
        .write("qa.yaml", DATASET)
        .write("echo_task.yaml", TASK)
        .write("app.yaml", "key: my-app\ndisplay_name: My app\ntags: [x]\nlong_description: text\n")
        .write(
            "generator.yaml",
            "key: g\ndisplay_name: G\ndescription: d\ndefinition:\n  dataset: {type: empty}\n  synthesizers: []\n",
        )
        .write(
            "scorer.yaml",
            "type: model_as_a_judge_classifier\nmodel_key: '<< config.judge >>'\nuser_prompt: x\ncorrect_labels: [a]\nincorrect_labels: [b]\n",
        )
        .write("odd.yaml", "key: x\nweights: [1, 2]\n")
        .args([
            "validate",
            "my_model.yaml",
            "qa.yaml",
            "echo_task.yaml",
            "app.yaml",
            "generator.yaml",
            "scorer.yaml",
            "odd.yaml",
        ]);
    lfeval_snapshot!(t);
}

#[test]
fn a_run_loads_only_what_it_uses() {
    let t = Test::new()
        .write("models/echo.yaml", MODEL)
        .write("datasets/qa.yaml", DATASET)
        .write("datasets/qa.jsonl", ROWS)
        .write(
            "datasets/broken.yaml",
            "key: broken\ndisplay_name: B\nsorce: {type: local}\n",
        )
        .write("tasks/echo.yaml", TASK)
        .write("tasks/other.yaml", "key: other\ndisplay_name: O\n")
        .write(
            "run.yaml",
            &format!("tasks:\n  - $ref: ./tasks/echo.yaml\ndatasets:\n  - $ref: ./datasets/qa.yaml\n{EVALUATION}"),
        )
        .args(["run", "-f", "run.yaml", "--no-progress"]);
    let out = t.success();
    // The run config's `$ref`s and the folders reach the same files: one entity each.
    assert!(!out.stderr.contains("duplicate"), "{}", out.stderr);
    assert!(
        out.stderr.contains("does not use `datasets/broken.yaml`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("does not use `tasks/other.yaml`"), "{}", out.stderr);
    assert!(out.stdout.contains("Accuracy"), "{}", out.stdout);
}

#[test]
fn lf_folder_names_and_run_files_that_only_register_entities() {
    let adapter = "key: my-adapter\ndisplay_name: Mine\nprocess_input:\n  language: jinja\n  source_code: '{{ input | tojson }}'\nprocess_output:\n  language: jinja\n  source_code: '{{ body }}'\n";
    let model = "key: m\ndisplay_name: M\nconfig:\n  url: http://127.0.0.1:9/x\n  adapter: {key: my-adapter}\n";
    let mut t = Test::new()
        .write("model_adapters/mine.yaml", adapter)
        .write("models/m.yaml", model)
        .write(
            "run.yaml",
            "model_adapters:\n  - $ref: ./model_adapters/mine.yaml\nmodels:\n  - $ref: ./models/m.yaml\n",
        );
    let out = t.set_args(["validate"]).success();
    assert!(out.stderr.contains("3 valid"), "{}", out.stderr);
    let out = t.set_args(["validate", "run.yaml"]).success();
    assert!(out.stderr.contains("registers entities"), "{}", out.stderr);
    let out = t.set_args(["run", "-f", "run.yaml"]).config_error();
    assert!(out.stderr.contains("has no `evaluation` to run"), "{}", out.stderr);
}

#[test]
fn running_a_file_that_is_not_a_run_config_says_what_it_is() {
    let t = Test::new()
        .write("tasks/echo.yaml", TASK)
        .args(["run", "-f", "tasks/echo.yaml"]);
    let out = t.config_error();
    assert!(
        out.stderr.contains("`echo.yaml` is a task, not a run config"),
        "{}",
        out.stderr
    );
}
