//! Tasks (aigo.md §8.4, lf 3.17's `SDKTask`): a dataset, a solver and scorers (`benchmark_task`),
//! or a Python evidence snippet (`system_task`). A task may be parameterised by `config_spec`;
//! each task specification instantiates it with its own `task_config`, so the definition is
//! kept as YAML until then and `<< config.X >>` is substituted per specification. Trials
//! (`definition.trials`) repeat each sample; action rules (`definition.actions`) leave samples
//! out of the metrics.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::eval::dataset::FilterSpec;
use crate::eval::scorer::{self, ScorerDef};
use crate::eval::solver_def::{self, SolverDef};
use crate::model::io::Task as MlTask;
use crate::yaml::{Located, Node, SourceFile, SourceText, from_node, join, substitute_config};

/// A task as loaded, before a specification instantiates it.
#[derive(Debug, Clone)]
pub struct TaskDef {
    pub key: String,
    pub display_name: String,
    pub description: Option<String>,
    pub config_spec: Vec<ConfigParam>,
    pub file: String,
    /// Every file the definition was read from (for a run's fingerprint).
    pub sources: Vec<Arc<SourceFile>>,
    definition: Node,
}

/// One `config_spec` entry (lf's `ParameterSpec`, discriminated by `type`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigParam {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub default_value: Option<Value>,
    #[serde(default)]
    pub nullable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub allowed_values: Option<Vec<Value>>,
    pub multiple: Option<bool>,
    pub values_mapping: Option<Value>,
    pub default_file_content: Option<String>,
    pub string_kind: Option<String>,
    pub examples: Option<Value>,
    pub usage: Option<String>,
    pub dtype: Option<String>,
    pub value_dtype: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    Float,
    Int,
    Boolean,
    String,
    Model,
    Dataset,
    DatasetColumn,
    List,
    Dict,
    Categorical,
    TaskResult,
}

impl ConfigParam {
    /// A stand-in value of the right type, for checking a definition whose config is not known
    /// yet (`lfeval validate tasks/x.yaml`).
    pub fn placeholder(&self) -> Value {
        if let Some(v) = &self.default_value {
            return v.clone();
        }
        match self.kind {
            ParamType::Int => Value::from(self.min.map_or(2, |m| m.max(2.0) as i64)),
            ParamType::Float => Value::from(self.min.unwrap_or(0.0)),
            ParamType::Boolean => Value::Bool(false),
            ParamType::List => Value::Array(Vec::new()),
            ParamType::Dict => Value::Object(Map::new()),
            ParamType::Categorical => self
                .allowed_values
                .as_ref()
                .and_then(|v| v.first().cloned())
                .unwrap_or(Value::Null),
            _ => Value::String(format!("{}-placeholder", self.key)),
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskWire {
    key: Located<String>,
    display_name: String,
    description: Option<String>,
    long_description: Option<String>,
    tasks: Option<Vec<MlTask>>,
    evaluated_entity_type: Option<String>,
    config_spec: Option<Vec<ConfigParam>>,
    tags: Option<Vec<String>>,
}

/// Where a task's samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskDataset {
    Key(String),
    /// Several datasets aligned by row: each sample is `{dataset key: row}` (what
    /// `sample["<< config.x >>"]` in a snippet becomes once the config is substituted).
    Keys(Vec<String>),
    /// The records of another task specification of the same run.
    TaskResult(String),
}

/// `definition.trials`: run each sample several times and aggregate its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Trials {
    pub num_trials: u32,
    pub aggregators: Vec<ScoreAggregator>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreAggregator {
    pub score_name: String,
    pub aggregator: Aggregator,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Aggregator {
    pub function: AggregateFunction,
    pub k: Option<u32>,
    pub score_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum AggregateFunction {
    #[serde(rename = "mean")]
    Mean,
    #[serde(rename = "min")]
    Min,
    #[serde(rename = "max")]
    Max,
    #[serde(rename = "pass@k")]
    PassAtK,
    #[serde(rename = "pass^k")]
    PassPowerK,
}

impl ScoreAggregator {
    /// The name the aggregated score is stored under.
    pub fn output_name(&self) -> String {
        if let Some(name) = &self.aggregator.score_name {
            return name.clone();
        }
        let k = self.aggregator.k.unwrap_or(1);
        let function = match self.aggregator.function {
            AggregateFunction::Mean => "mean".to_owned(),
            AggregateFunction::Min => "min".to_owned(),
            AggregateFunction::Max => "max".to_owned(),
            AggregateFunction::PassAtK => format!("pass@{k}"),
            AggregateFunction::PassPowerK => format!("pass^{k}"),
        };
        format!("{}_{function}", self.score_name)
    }

    /// Folds one sample's trial values (numbers; booleans count as 0/1).
    pub fn aggregate(&self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let k = f64::from(self.aggregator.k.unwrap_or(1));
        Some(match self.aggregator.function {
            AggregateFunction::Mean => mean,
            AggregateFunction::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            AggregateFunction::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            AggregateFunction::PassAtK => 1.0 - (1.0 - mean).powf(k),
            AggregateFunction::PassPowerK => mean.powf(k),
        })
    }
}

/// `definition.actions[]`: only `exclude_from_metrics` exists.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    pub key: String,
    pub action: ActionKind,
    pub filter: FilterSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    ExcludeFromMetrics,
}

/// A task instantiated for one specification.
#[derive(Debug, Clone)]
pub struct TaskDefinition {
    pub dataset: Option<TaskDataset>,
    pub solver: Option<SolverDef>,
    pub scorers: Vec<ScorerDef>,
    pub trials: Option<Trials>,
    pub actions: Vec<ActionRule>,
    /// `system_task`: `compute_evidence()` instead of samples.
    pub evidence: Option<SourceText>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BenchmarkWire {
    #[serde(rename = "type")]
    _kind: Option<String>,
    evaluated_entity_type: Option<String>,
    actions: Option<Vec<ActionRule>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SystemWire {
    #[serde(rename = "type")]
    _kind: String,
    compute_evidence_snippet: SourceText,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct DatasetWire {
    source: Option<DatasetSource>,
    key: Option<Located<String>>,
    keys: Option<Vec<String>>,
    /// Docs era.
    fast_subset_size: Option<Value>,
}

#[derive(Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum DatasetSource {
    Dataset,
    TaskResult,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TrialsWire {
    num_trials: Located<u32>,
    score_aggregators: Option<Vec<ScoreAggregator>>,
}

pub fn from_yaml(mut node: Node) -> Result<TaskDef, Diagnostic> {
    let sources = crate::yaml::sources(&node);
    let definition = node.take("definition");
    let wire: TaskWire = from_node(&node, "")?;
    crate::model::check_key(&wire.key, "task", false)?;
    let _ = (wire.long_description, wire.tasks, wire.evaluated_entity_type, wire.tags);
    let Some((_, definition)) = definition else {
        return Err(Diagnostic::new("missing required key `definition`").at(&node.span));
    };
    Ok(TaskDef {
        key: wire.key.value.clone(),
        display_name: wire.display_name,
        description: wire.description,
        config_spec: wire.config_spec.unwrap_or_default(),
        file: node.span.file.display.clone(),
        sources,
        definition,
    })
}

/// The JSON Schema of a task file: a `benchmark_task` (dataset, solver, scorers, trials,
/// actions) or a `system_task`.
pub fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use crate::yaml::schema;
    use schemars::JsonSchema;
    let mut benchmark = BenchmarkWire::json_schema(generator);
    let kinds = schemars::json_schema!({ "enum": ["benchmark_task", "declarative_task"] });
    schema::insert_property(&mut benchmark, "type", kinds, false);
    schema::insert_property(&mut benchmark, "dataset", DatasetWire::json_schema(generator), false);
    schema::insert_property(&mut benchmark, "solver", solver_def::json_schema(generator), false);
    let scorers = schema::list_of(scorer::json_schema(generator));
    schema::insert_property(&mut benchmark, "scorers", scorers, false);
    schema::insert_property(&mut benchmark, "trials", TrialsWire::json_schema(generator), false);
    let mut system = SystemWire::json_schema(generator);
    schema::pin(&mut system, "type", "system_task");
    let mut task = TaskWire::json_schema(generator);
    let definition = schemars::json_schema!({ "anyOf": [benchmark, system] });
    schema::insert_property(&mut task, "definition", definition, true);
    task
}

/// Bounds `num_trials` so one sample cannot turn into an unbounded amount of work.
const MAX_TRIALS: u32 = 1000;

pub fn check_trials(n: &Located<u32>) -> Result<u32, Diagnostic> {
    if n.value < 2 || n.value > MAX_TRIALS {
        return Err(Diagnostic::new(format!(
            "`num_trials` must be from 2 to {MAX_TRIALS}, found {}",
            n.value
        ))
        .at_location(n.location.clone())
        .with_path(n.path.clone()));
    }
    Ok(n.value)
}

impl TaskDef {
    /// The config values a specification sees: `config_spec` defaults, then `overrides`.
    pub fn config_values(&self, overrides: &Map<String, Value>) -> Result<Map<String, Value>, Diagnostic> {
        let mut values = Map::new();
        for param in &self.config_spec {
            if let Some(default) = &param.default_value {
                values.insert(param.key.clone(), default.clone());
            } else if param.nullable {
                values.insert(param.key.clone(), Value::Null);
            }
        }
        for (k, v) in overrides {
            values.insert(k.clone(), v.clone());
        }
        for param in &self.config_spec {
            let Some(value) = values.get(&param.key) else {
                return Err(
                    Diagnostic::new(format!("task `{}` needs config value `{}`", self.key, param.key)).with_hint(
                        format!("set `task_config: {{{}: ...}}` on the task specification", param.key),
                    ),
                );
            };
            if let (Some(n), Some(min)) = (value.as_f64(), param.min)
                && n < min
            {
                return Err(Diagnostic::new(format!(
                    "config value `{}` of task `{}` is {n}, below the minimum {min}",
                    param.key, self.key
                )));
            }
            if let (Some(n), Some(max)) = (value.as_f64(), param.max)
                && n > max
            {
                return Err(Diagnostic::new(format!(
                    "config value `{}` of task `{}` is {n}, above the maximum {max}",
                    param.key, self.key
                )));
            }
            if let Some(allowed) = &param.allowed_values
                && !value.is_null()
            {
                let ok = match value {
                    Value::Array(items) if param.multiple == Some(true) => items.iter().all(|v| allowed.contains(v)),
                    v => allowed.contains(v),
                };
                if !ok {
                    return Err(Diagnostic::new(format!(
                        "config value `{}` of task `{}` must be one of {}",
                        param.key,
                        self.key,
                        Value::Array(allowed.clone())
                    )));
                }
            }
        }
        Ok(values)
    }

    /// Config values for checking the definition alone: defaults, else placeholders.
    pub fn placeholder_values(&self) -> Map<String, Value> {
        self.config_spec
            .iter()
            .map(|p| (p.key.clone(), p.placeholder()))
            .collect()
    }

    pub fn instantiate(&self, config: &Map<String, Value>) -> Result<TaskDefinition, Diagnostic> {
        let mut node = self.definition.clone();
        substitute_config(&mut node, config)?;
        if node.as_map().is_none() {
            return Err(
                Diagnostic::new(format!("`definition` must be a mapping, found {}", node.kind()))
                    .at(&node.span)
                    .with_path("definition"),
            );
        }
        let kind = match node.get("type") {
            None => "benchmark_task".to_owned(),
            Some(n) => n.as_str().map(str::to_owned).ok_or_else(|| {
                Diagnostic::new("`definition.type` must be a string")
                    .at(&n.span)
                    .with_path("definition.type")
            })?,
        };
        match kind.as_str() {
            "system_task" => {
                let wire: SystemWire = from_node(&node, "definition")?;
                return Ok(TaskDefinition {
                    dataset: None,
                    solver: None,
                    scorers: Vec::new(),
                    trials: None,
                    actions: Vec::new(),
                    evidence: Some(wire.compute_evidence_snippet),
                });
            }
            "benchmark_task" | "declarative_task" => {}
            other => {
                let at = node.get("type").unwrap_or(&node);
                return Err(Diagnostic::new(format!("unknown task type `{other}`"))
                    .at(&at.span)
                    .with_path("definition.type")
                    .with_hint("expected `benchmark_task` or `system_task`"));
            }
        }
        let scorers_node = node.take("scorers");
        let solver_node = node.take("solver");
        let dataset_node = node.take("dataset");
        let trials_node = node.take("trials");
        let wire: BenchmarkWire = from_node(&node, "definition")?;
        let _ = wire.evaluated_entity_type;
        let solver = match solver_node {
            Some((_, n)) if !matches!(n.value, crate::yaml::Value::Null) => {
                Some(solver_def::from_yaml(&n, "definition.solver")?)
            }
            _ => None,
        };
        let dataset = match dataset_node {
            Some((_, n)) if !matches!(n.value, crate::yaml::Value::Null) => Some(self.dataset(&n)?),
            _ => None,
        };
        if solver.is_some() && dataset.is_none() {
            return Err(
                Diagnostic::new(format!("task `{}` has a solver but no `dataset`", self.key))
                    .at(&node.span)
                    .with_path("definition")
                    .with_hint("a task with a solver needs `dataset: {key: ...}`"),
            );
        }
        let trials = match trials_node {
            Some((_, n)) if !matches!(n.value, crate::yaml::Value::Null) => {
                let wire: TrialsWire = from_node(&n, "definition.trials")?;
                let aggregators = wire.score_aggregators.unwrap_or_default();
                for a in &aggregators {
                    let needs_k = matches!(
                        a.aggregator.function,
                        AggregateFunction::PassAtK | AggregateFunction::PassPowerK
                    );
                    if needs_k && a.aggregator.k.is_none_or(|k| k < 1) {
                        return Err(Diagnostic::new(format!(
                            "the `pass@k`/`pass^k` aggregator of `{}` needs `k` of at least 1",
                            a.score_name
                        ))
                        .at(&n.span)
                        .with_path("definition.trials.score_aggregators"));
                    }
                }
                Some(Trials {
                    num_trials: check_trials(&wire.num_trials)?,
                    aggregators,
                })
            }
            _ => None,
        };
        let mut scorers = Vec::new();
        if let Some((_, list)) = scorers_node {
            let crate::yaml::Value::Seq(items) = &list.value else {
                return Err(Diagnostic::new(format!("`scorers` must be a list, found {}", list.kind())).at(&list.span));
            };
            for (i, item) in items.iter().enumerate() {
                scorers.push(scorer::from_yaml(
                    item,
                    &format!("{}[{i}]", join("definition", "scorers")),
                )?);
            }
        }
        scorer::check_unique_names(&scorers)?;
        Ok(TaskDefinition {
            dataset,
            solver,
            scorers,
            trials,
            actions: wire.actions.unwrap_or_default(),
            evidence: None,
        })
    }

    fn dataset(&self, node: &Node) -> Result<TaskDataset, Diagnostic> {
        let path = "definition.dataset";
        let wire: DatasetWire = from_node(node, path)?;
        let _ = wire.fast_subset_size;
        let source = wire.source.unwrap_or(DatasetSource::Dataset);
        match (source, wire.key, wire.keys) {
            (DatasetSource::TaskResult, Some(key), None) => Ok(TaskDataset::TaskResult(key.value)),
            (DatasetSource::TaskResult, _, _) => Err(Diagnostic::new(
                "a `task_result` dataset needs exactly one `key` (the task specification whose results it reads)",
            )
            .at(&node.span)
            .with_path(path)),
            (DatasetSource::Dataset, Some(key), None) => Ok(TaskDataset::Key(key.value)),
            (DatasetSource::Dataset, None, Some(keys)) if !keys.is_empty() => Ok(TaskDataset::Keys(keys)),
            _ => Err(
                Diagnostic::new("a task's `dataset` needs exactly one of `key` and `keys`")
                    .at(&node.span)
                    .with_path(path),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(text: &str) -> TaskDef {
        from_yaml(crate::yaml::load_str("t.yaml", text).unwrap()).unwrap()
    }

    #[test]
    fn lf_317_definitions_load() {
        let t = task(
            "key: t\ndisplay_name: T\ndescription: d\nconfig_spec:\n  - {type: dataset, key: a, display_name: A, default_value: x}\n  - {type: dataset, key: b, display_name: B, default_value: y}\ndefinition:\n  dataset:\n    keys: ['<< config.a >>', '<< config.b >>']\n  scorers:\n    - type: python_all_samples\n      compute_scores_snippet: 'def compute_scores(samples): return []'\n      metrics: []\n  trials:\n    num_trials: 5\n    score_aggregators:\n      - {score_name: is_correct, aggregator: {function: 'pass^k', k: 3, score_name: 'pass^3'}}\n  actions:\n    - key: drop\n      action: exclude_from_metrics\n      filter: {op: is_true, expression: '{{ sample.a.holdout }}'}\n",
        );
        let def = t.instantiate(&t.config_values(&Map::new()).unwrap()).unwrap();
        assert_eq!(def.dataset, Some(TaskDataset::Keys(vec!["x".into(), "y".into()])));
        let trials = def.trials.unwrap();
        assert_eq!(trials.num_trials, 5);
        assert_eq!(trials.aggregators[0].output_name(), "pass^3");
        assert_eq!(trials.aggregators[0].aggregate(&[1.0, 0.0]), Some(0.125));
        assert_eq!(def.actions.len(), 1);
    }

    #[test]
    fn system_tasks_and_task_results_load() {
        let t = task(
            "key: s\ndisplay_name: S\ndescription: d\ndefinition:\n  type: system_task\n  compute_evidence_snippet: 'def compute_evidence(): return {\"metrics\": {}}'\n",
        );
        assert!(t.instantiate(&Map::new()).unwrap().evidence.is_some());
        let t = task(
            "key: r\ndisplay_name: R\ndescription: d\nconfig_spec: [{type: task_result, key: k, display_name: K, default_value: first}]\ndefinition:\n  dataset: {source: task_result, key: '<< config.k >>'}\n",
        );
        let def = t.instantiate(&t.config_values(&Map::new()).unwrap()).unwrap();
        assert_eq!(def.dataset, Some(TaskDataset::TaskResult("first".into())));
    }

    #[test]
    fn placeholders_stand_in_for_missing_config() {
        let t = task(
            "key: t\ndisplay_name: T\ndescription: d\nconfig_spec: [{type: model, key: judge, display_name: J}, {type: int, key: n, display_name: N, min: 3}]\ndefinition: {}\n",
        );
        let values = t.placeholder_values();
        assert_eq!(values["judge"], json!("judge-placeholder"));
        assert_eq!(values["n"], json!(3));
    }
}
