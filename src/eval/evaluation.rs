//! Evaluations (aigo.md §8.8): which tasks run on which models and datasets, how many samples,
//! and the cache policy. Both eras are read: the docs era's single execution (`mode`,
//! `num_samples`, literal keys) and lf 3.17's reusable definition (`config_spec`, templates,
//! `trials`, `repeatability`, and `type: repeatability` specifications that repeat another
//! evaluation's specifications).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Location};
use crate::eval::task::{ConfigParam, check_trials};
use crate::model::cache::CachePolicy;
use crate::yaml::{Located, Node, from_node};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Subsampling {
    #[default]
    Head,
    Random,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Debug,
    Full,
}

#[derive(Deserialize, schemars::JsonSchema)]
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
    tags: Option<Vec<String>>,
    config_spec: Option<Vec<ConfigParam>>,
    use_cases: Option<Value>,
    domains: Option<Value>,
    providers: Option<Value>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpecWire {
    #[serde(rename = "type")]
    _kind: Option<String>,
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
    repeatability: Option<RepeatabilityWire>,
    trials: Option<TrialsWire>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RepeatabilityWire {
    num_runs: Located<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TrialsWire {
    num_trials: Located<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RepeatSpecWire {
    #[serde(rename = "type")]
    _kind: String,
    key: Option<String>,
    repeatability_config: RepeatabilityWire,
    num_samples: Option<usize>,
    subsampling: Option<Subsampling>,
    inputs: Vec<RepeatInput>,
}

/// An evaluation (and optionally one of its specifications) to repeat.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatInput {
    pub evaluation_key: String,
    pub task_specification_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub key: String,
    pub display_name: String,
    pub cache_policy: CachePolicy,
    pub specs: Vec<TaskSpecification>,
    /// `type: repeatability` specifications, resolved by the run config into `specs`.
    pub repeats: Vec<RepeatOf>,
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
    /// Trials per sample, overriding the task's `definition.trials.num_trials`.
    pub trials: Option<u32>,
    /// `(run, of)` for one of the runs of a repeated specification (1-based); its model calls
    /// are never answered from the cache, or every run would be the first.
    pub repetition: Option<(u32, u32)>,
}

/// A `type: repeatability` specification.
#[derive(Debug, Clone)]
pub struct RepeatOf {
    pub key: String,
    pub num_runs: u32,
    pub num_samples: Option<usize>,
    pub subsampling: Option<Subsampling>,
    pub inputs: Vec<RepeatInput>,
    pub location: Location,
}

/// Evaluation-wide overrides from a run config's `run_config:` block (newer era).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOverrides {
    pub num_samples: Option<usize>,
    pub subsampling: Option<Subsampling>,
    pub cache_policy: Option<CachePolicy>,
    pub trials_config: Option<TrialsConfig>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialsConfig {
    num_trials: Located<u32>,
}

/// The bound on `num_runs`: each run is a whole specification.
const MAX_RUNS: u32 = 100;

fn check_runs(n: &Located<u32>) -> Result<u32, Diagnostic> {
    if n.value < 2 || n.value > MAX_RUNS {
        return Err(
            Diagnostic::new(format!("`num_runs` must be from 2 to {MAX_RUNS}, found {}", n.value))
                .at_location(n.location.clone())
                .with_path(n.path.clone()),
        );
    }
    Ok(n.value)
}

/// The evaluation's `config_spec`, read before its `<< config.X >>` templates are substituted.
pub fn config_spec(node: &Node) -> Result<Vec<ConfigParam>, Diagnostic> {
    match node.get("config_spec") {
        Some(n) => from_node(n, "evaluation.config_spec"),
        None => Ok(Vec::new()),
    }
}

/// The values an evaluation's templates see: `config_spec` defaults, then the run's `config`,
/// and the names of declared values that have neither.
pub fn config_values(spec: &[ConfigParam], config: &Map<String, Value>) -> (Map<String, Value>, Vec<String>) {
    let mut values = Map::new();
    let mut missing = Vec::new();
    for param in spec {
        if let Some(v) = config.get(&param.key) {
            values.insert(param.key.clone(), v.clone());
        } else if let Some(default) = &param.default_value {
            values.insert(param.key.clone(), default.clone());
        } else if param.nullable {
            values.insert(param.key.clone(), Value::Null);
        } else {
            missing.push(param.key.clone());
        }
    }
    for (k, v) in config {
        values.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (values, missing)
}

/// The JSON Schema of an evaluation: its keys and `task_specifications`, standard or
/// `type: repeatability`.
pub fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use crate::yaml::schema;
    use schemars::JsonSchema;
    let mut standard = SpecWire::json_schema(generator);
    schema::insert_property(
        &mut standard,
        "type",
        schemars::json_schema!({ "const": "standard" }),
        false,
    );
    let mut repeat = RepeatSpecWire::json_schema(generator);
    schema::pin(&mut repeat, "type", "repeatability");
    let specs = schema::list_of(schemars::json_schema!({ "anyOf": [standard, repeat] }));
    let mut evaluation = EvaluationWire::json_schema(generator);
    schema::insert_property(&mut evaluation, "task_specifications", specs, true);
    evaluation
}

pub fn from_yaml(node: &Node, overrides: &RunOverrides) -> Result<Evaluation, Diagnostic> {
    let mut node = node.clone();
    let specs_node = node.take("task_specifications");
    let wire: EvaluationWire = from_node(&node, "evaluation")?;
    crate::model::check_key(&wire.key, "evaluation", false)?;
    let _ = (
        wire.description,
        wire.long_description,
        wire.tags,
        wire.config_spec,
        wire.use_cases,
        wire.domains,
        wire.providers,
    );
    let run_trials = match &overrides.trials_config {
        Some(t) => Some(check_trials(&t.num_trials)?),
        None => None,
    };
    let items = match specs_node.as_ref().map(|(_, n)| &n.value) {
        Some(crate::yaml::Value::Seq(items)) => items.clone(),
        Some(_) => {
            let n = specs_node.as_ref().map_or(&node, |(_, n)| n);
            return Err(Diagnostic::new("`task_specifications` must be a list")
                .at(&n.span)
                .with_path("evaluation.task_specifications"));
        }
        None => {
            return Err(Diagnostic::new("missing required key `task_specifications`")
                .at(&node.span)
                .with_path("evaluation"));
        }
    };
    if items.is_empty() {
        return Err(Diagnostic::new("an evaluation needs at least one task specification").at(&node.span));
    }
    let default_samples = overrides.num_samples.or(wire.num_samples).or(match wire.mode {
        Some(Mode::Debug) => Some(10),
        _ => None,
    });
    let default_subsampling = overrides.subsampling.or(wire.subsampling).unwrap_or_default();
    let mut specs: Vec<TaskSpecification> = Vec::new();
    let mut repeats = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("evaluation.task_specifications[{i}]");
        match item.get("type").and_then(Node::as_str) {
            Some("repeatability") => {
                let wire: RepeatSpecWire = from_node(item, &path)?;
                if wire.inputs.is_empty() {
                    return Err(Diagnostic::new("`inputs` needs at least one evaluation")
                        .at(&item.span)
                        .with_path(format!("{path}.inputs")));
                }
                repeats.push(RepeatOf {
                    key: wire.key.unwrap_or_else(|| format!("repeatability-{}", i + 1)),
                    num_runs: check_runs(&wire.repeatability_config.num_runs)?,
                    num_samples: overrides.num_samples.or(wire.num_samples),
                    subsampling: overrides.subsampling.or(wire.subsampling),
                    inputs: wire.inputs,
                    location: Location::from(&item.span),
                });
                continue;
            }
            None | Some("standard") => {}
            Some(other) => {
                let at = item.get("type").unwrap_or(item);
                return Err(Diagnostic::new(format!("unknown task specification type `{other}`"))
                    .at(&at.span)
                    .with_path(format!("{path}.type"))
                    .with_hint("expected `standard` or `repeatability`"));
            }
        }
        let spec: SpecWire = from_node(item, &path)?;
        if let Some(log) = &spec.task_result_log_path {
            return Err(
                Diagnostic::new("`task_result_log_path` (replaying a result log) is not supported yet")
                    .at_location(log.location.clone()),
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
        let trials = match (run_trials, &spec.trials) {
            (Some(n), _) => Some(n),
            (None, Some(t)) => Some(check_trials(&t.num_trials)?),
            (None, None) => None,
        };
        let runs = match &spec.repeatability {
            Some(r) => check_runs(&r.num_runs)?,
            None => 1,
        };
        let display_name = spec.display_name.clone().unwrap_or_else(|| key.clone());
        for run in 1..=runs {
            let (key, display_name, repetition) = if runs > 1 {
                (
                    format!("{key}-run-{run}"),
                    format!("{display_name} (run {run} of {runs})"),
                    Some((run, runs)),
                )
            } else {
                (key.clone(), display_name.clone(), None)
            };
            specs.push(TaskSpecification {
                display_name,
                key,
                task_key: spec.task_key.clone(),
                task_config: spec.task_config.clone(),
                model_key: spec.model_key.clone(),
                dataset_key: spec.dataset_key.clone(),
                num_samples: spec.num_samples.or(default_samples),
                subsampling: spec.subsampling.unwrap_or(default_subsampling),
                trials,
                repetition,
            });
        }
    }
    Ok(Evaluation {
        display_name: wire.display_name.unwrap_or_else(|| wire.key.value.clone()),
        key: wire.key.value,
        cache_policy: overrides
            .cache_policy
            .or(wire.cache_policy)
            .unwrap_or(CachePolicy::Reuse),
        specs,
        repeats,
    })
}

impl Evaluation {
    /// Adds the runs of a repeated specification of another evaluation (`type: repeatability`).
    pub fn add_repetitions(&mut self, repeat: &RepeatOf, of: &[TaskSpecification]) {
        for spec in of {
            for run in 1..=repeat.num_runs {
                self.specs.push(TaskSpecification {
                    key: format!("{}-{}-run-{run}", repeat.key, spec.key),
                    display_name: format!("{} (run {run} of {})", spec.display_name, repeat.num_runs),
                    num_samples: repeat.num_samples.or(spec.num_samples),
                    subsampling: repeat.subsampling.unwrap_or(spec.subsampling),
                    repetition: Some((run, repeat.num_runs)),
                    ..spec.clone()
                });
            }
        }
    }
}
