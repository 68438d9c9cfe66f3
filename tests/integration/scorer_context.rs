//! What judges and Python scorers see, offline: lf 3.17's `trace` in prompts, the docs era's
//! `model_output` / `model_input` as objects, and `message_format: latticeflow`'s
//! `SingleSolverOutput` (lfeval's look-alike, as the test virtualenv has no latticeflow-core).

use serde_json::Value;

use crate::test::Test;

const MODELS: &str = r#"
models:
  - key: echo
    display_name: Echo
    config:
      connection_type: custom_inference
      adapter: {key: latticeflow$openai_chat_completion}
      run_inference_snippet: |
        import json
        def run_inference(body, environment):
            last = json.loads(body)["messages"][-1]["content"]
            return json.dumps({"choices": [{"message": {"role": "assistant", "content": "echo " + last}}],
                               "usage": {"prompt_tokens": 2, "completion_tokens": 2}})
      timeout: 10
  - key: judge
    display_name: Judge
    config:
      connection_type: custom_inference
      adapter: {key: latticeflow$openai_chat_completion}
      run_inference_snippet: |
        import json
        def run_inference(body, environment):
            prompt = json.loads(body)["messages"][-1]["content"]
            ok = prompt == "echo What is 7?|What is 7?|What is 7?|echo What is 7?"
            answer = {"prediction": "CORRECT" if ok else "INCORRECT", "reasoning": prompt, "confidence": 1}
            return json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}]})
      timeout: 10
datasets:
  - key: q
    display_name: Q
    source: {type: local, file_path: q.jsonl}
"#;

fn task(format: &str) -> String {
    format!(
        r#"
tasks:
  - key: t
    display_name: T
    description: d
    definition:
      dataset: {{key: q}}
      solver:
        type: single_turn_solver
        message_format: {format}
        input_builder:
          type: chat_completion
          input_messages:
            - {{role: user, content: "What is {{{{ sample.n }}}}?"}}
      scorers:
        - type: model_as_a_judge_classifier
          model_key: judge
          user_prompt: "{{{{ model_output.choices[0].message.content }}}}|{{{{ model_input.messages[0].content }}}}|{{{{ trace.get_last_user_text() }}}}|{{{{ trace.get_last_assistant_text() }}}}"
          correct_labels: [CORRECT]
          incorrect_labels: [INCORRECT]
        - type: python
          compute_scores_snippet: |
            def compute_scores(sample, solver_output):
                if hasattr(solver_output, "trace"):
                    text = solver_output.trace.get_last_assistant_text()
                    turns = len(solver_output.trace.turns)
                else:
                    text = solver_output.output["choices"][0]["message"]["content"]
                    turns = len([m for m in solver_output.messages if m["role"] == "user"])
                return {{"text_ok": text == "echo What is %d?" % sample["n"], "turns": turns}}
          metrics:
            - {{type: mean, field: text_ok, name: Text}}
evaluation:
  key: e
  display_name: E
  description: d
  task_specifications:
    - {{key: s, task_key: t, model_key: echo}}
"#
    )
}

fn summary(format: &str) -> Value {
    let t = Test::new()
        .write("q.jsonl", "{\"n\": 7}\n")
        .write("run.yaml", &format!("{MODELS}{}", task(format)))
        .args(["run", "-f", "run.yaml", "--json", "--no-progress"]);
    let out = t.success();
    serde_json::from_str(&out.stdout).expect("summary")
}

#[test]
fn judges_see_the_trace_and_the_docs_era_objects() {
    for format in ["open_responses", "latticeflow"] {
        let summary = summary(format);
        let metrics = summary["specifications"][0]["metrics"].as_array().expect("metrics");
        let text = metrics
            .iter()
            .find(|m| m["values"].get("Text").is_some())
            .expect("Text");
        assert_eq!(text["values"]["Text"], 1.0, "{format}: {summary:#}");
        assert_eq!(summary["totals"]["failed"], 0, "{format}: {summary:#}");
    }
    // The judge only says CORRECT when every variable rendered as expected; the record keeps it.
    let t = Test::new()
        .write("q.jsonl", "{\"n\": 7}\n")
        .write("run.yaml", &format!("{MODELS}{}", task("open_responses")))
        .args(["run", "-f", "run.yaml", "--json", "--no-progress"]);
    let out = t.success();
    let summary: Value = serde_json::from_str(&out.stdout).expect("summary");
    let dir = std::path::Path::new(summary["run_dir"].as_str().expect("dir")).to_path_buf();
    let record = super::test::record_of_line(
        std::fs::read_to_string(dir.join("samples.jsonl"))
            .expect("records")
            .trim(),
    );
    assert_eq!(
        record["scores"]["model_as_a_judge_classifier"]["values"]["is_correct"], 1.0,
        "{:#}",
        record["scores"]
    );
    assert_eq!(record["scores"]["python"]["values"]["turns"], 1);
    assert_eq!(record["solver_output"]["trace"]["FORMAT"], "open_responses");
    assert_eq!(record["usage"]["num_prompt_tokens"], 2, "OpenAI-style usage is mapped");
}
