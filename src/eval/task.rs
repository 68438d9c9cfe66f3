//! Tasks (aigo.md §8.4): a dataset, a solver and scorers. A task may be parameterised by
//! `config_spec`; each task specification instantiates it with its own `task_config`, so the
//! definition is kept as YAML until then and `<< config.X >>` is substituted per specification.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::eval::scorer::{self, ScorerDef};
use crate::eval::solver::SolverDef;
use crate::model::io::Task as MlTask;
use crate::yaml::{Located, Node, SourceFile, from_node, join, substitute_config};

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

#[derive(Debug, Clone, Deserialize)]
pub struct ConfigParam {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub default_value: Option<Value>,
    #[serde(default)]
    pub nullable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub allowed_values: Option<Vec<Value>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Deserialize)]
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

/// A task instantiated for one specification.
#[derive(Debug, Clone)]
pub struct TaskDefinition {
    pub dataset_key: Option<String>,
    pub solver: Option<SolverDef>,
    pub scorers: Vec<ScorerDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionWire {
    #[serde(rename = "type")]
    kind: Option<Located<String>>,
    evaluated_entity_type: Option<String>,
    dataset: Option<DatasetRef>,
    solver: Option<SolverDef>,
    actions: Option<Value>,
    trials: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetRef {
    key: Option<String>,
    source: Option<String>,
    fast_subset_size: Option<Value>,
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
                && !allowed.contains(value)
            {
                return Err(Diagnostic::new(format!(
                    "config value `{}` of task `{}` must be one of {}",
                    param.key,
                    self.key,
                    Value::Array(allowed.clone())
                )));
            }
        }
        Ok(values)
    }

    pub fn instantiate(&self, config: &Map<String, Value>) -> Result<TaskDefinition, Diagnostic> {
        let mut node = self.definition.clone();
        substitute_config(&mut node, config)?;
        let scorers_node = node.take("scorers");
        let wire: DefinitionWire = from_node(&node, "definition")?;
        if let Some(kind) = &wire.kind
            && !matches!(kind.value.as_str(), "benchmark_task" | "declarative_task")
        {
            return Err(Diagnostic::new(format!("task type `{}` is not supported", kind.value))
                .at_location(kind.location.clone())
                .with_hint("lfeval runs `benchmark_task` (also spelled `declarative_task`)"));
        }
        if wire.trials.is_some() {
            return Err(Diagnostic::new(format!("task `{}`: `trials` is not supported yet", self.key)).at(&node.span));
        }
        if wire.actions.is_some() {
            return Err(Diagnostic::new(format!(
                "task `{}`: `actions` (such as `exclude_from_metrics`) are not supported yet",
                self.key
            ))
            .at(&node.span)
            .with_hint(
                "remove `actions`; metrics would otherwise silently include samples the task meant to exclude",
            ));
        }
        let _ = wire.evaluated_entity_type;
        let dataset_key = match wire.dataset {
            Some(DatasetRef {
                source: Some(source), ..
            }) if source != "dataset" => {
                return Err(Diagnostic::new(format!(
                    "task `{}`: dataset source `{source}` is not supported",
                    self.key
                ))
                .at(&node.span));
            }
            Some(d) => {
                let _ = d.fast_subset_size;
                d.key
            }
            None => None,
        };
        let mut scorers = Vec::new();
        if let Some((_, list)) = scorers_node {
            let Some(crate::yaml::Value::Seq(items)) = Some(&list.value) else {
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
            dataset_key,
            solver: wire.solver,
            scorers,
        })
    }
}
