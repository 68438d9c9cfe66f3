//! Evaluations (aigo.md §8.8, docs era): which tasks run on which models and datasets, how many
//! samples, and the cache policy. Newer field names are accepted where they differ.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::model::cache::CachePolicy;
use crate::yaml::{Located, Node, from_node};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subsampling {
    #[default]
    Head,
    Random,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Debug,
    Full,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluationWire {
    key: Located<String>,
    display_name: Option<String>,
    description: Option<String>,
    long_description: Option<String>,
    mode: Option<Mode>,
    num_samples: Option<usize>,
    subsampling: Option<Subsampling>,
    cache_policy: Option<CachePolicy>,
    task_specifications: Vec<SpecWire>,
    tags: Option<Vec<String>>,
    config_spec: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecWire {
    key: Option<String>,
    task_key: Located<String>,
    #[serde(default)]
    task_config: Map<String, Value>,
    model_key: Option<String>,
    dataset_key: Option<String>,
    num_samples: Option<usize>,
    subsampling: Option<Subsampling>,
    display_name: Option<String>,
    task_result_log_path: Option<Located<String>>,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub key: String,
    pub display_name: String,
    pub cache_policy: CachePolicy,
    pub specs: Vec<TaskSpecification>,
}

#[derive(Debug, Clone)]
pub struct TaskSpecification {
    pub key: String,
    pub display_name: String,
    pub task_key: Located<String>,
    pub task_config: Map<String, Value>,
    pub model_key: Option<String>,
    pub dataset_key: Option<String>,
    pub num_samples: Option<usize>,
    pub subsampling: Subsampling,
}

/// Evaluation-wide overrides from a run config's `run_config:` block (newer era).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOverrides {
    pub num_samples: Option<usize>,
    pub subsampling: Option<Subsampling>,
    pub cache_policy: Option<CachePolicy>,
    pub trials_config: Option<Value>,
}

pub fn from_yaml(node: &Node, overrides: &RunOverrides) -> Result<Evaluation, Diagnostic> {
    let wire: EvaluationWire = from_node(node, "evaluation")?;
    crate::model::check_key(&wire.key, "evaluation", false)?;
    let _ = (wire.description, wire.long_description, wire.tags, wire.config_spec);
    if overrides.trials_config.is_some() {
        return Err(
            Diagnostic::new("`run_config.trials_config` (repeated trials) is not supported yet").at(&node.span),
        );
    }
    if wire.task_specifications.is_empty() {
        return Err(Diagnostic::new("an evaluation needs at least one task specification").at(&node.span));
    }
    let default_samples = overrides.num_samples.or(wire.num_samples).or(match wire.mode {
        Some(Mode::Debug) => Some(10),
        _ => None,
    });
    let default_subsampling = overrides.subsampling.or(wire.subsampling).unwrap_or_default();
    let mut specs: Vec<TaskSpecification> = Vec::new();
    for spec in wire.task_specifications {
        if let Some(path) = &spec.task_result_log_path {
            return Err(
                Diagnostic::new("`task_result_log_path` (replaying a result log) is not supported yet")
                    .at_location(path.location.clone()),
            );
        }
        let base = spec.key.clone().unwrap_or_else(|| match &spec.model_key {
            Some(model) => format!("{}_{}", spec.task_key.value, model.replace('$', "_")),
            None => spec.task_key.value.clone(),
        });
        let mut key = base.clone();
        let mut n = 2;
        while specs.iter().any(|s| s.key == key) {
            if spec.key.is_some() {
                return Err(Diagnostic::new(format!("two task specifications have the key `{key}`"))
                    .at_location(spec.task_key.location.clone()));
            }
            key = format!("{base}_{n}");
            n += 1;
        }
        let located_key = Located {
            value: key.clone(),
            location: spec.task_key.location.clone(),
            path: spec.task_key.path.clone(),
        };
        crate::model::check_key(&located_key, "task specification", false)?;
        specs.push(TaskSpecification {
            display_name: spec.display_name.unwrap_or_else(|| key.clone()),
            key,
            task_key: spec.task_key,
            task_config: spec.task_config,
            model_key: spec.model_key,
            dataset_key: spec.dataset_key,
            num_samples: spec.num_samples.or(default_samples),
            subsampling: spec.subsampling.unwrap_or(default_subsampling),
        });
    }
    Ok(Evaluation {
        display_name: wire.display_name.unwrap_or_else(|| wire.key.value.clone()),
        key: wire.key.value,
        cache_policy: overrides
            .cache_policy
            .or(wire.cache_policy)
            .unwrap_or(CachePolicy::Reuse),
        specs,
    })
}
