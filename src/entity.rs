//! What kind of entity a YAML file holds, decided from its content as lf's schemas define each
//! kind: a run config by lf's own `is_run_config` rule, every other kind by the keys only it
//! has (`process_input` → adapter, `task_specifications` → evaluation, …). A file that matches
//! none falls back on the folder it sits in (`models/`, `model_adapters/`, …) so its errors are
//! reported against the kind it was meant to be. Kinds that only the hosted platform can use
//! carry the refusal that names them.

use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    RunConfig,
    Model,
    ModelAdapter,
    Dataset,
    DatasetGenerator,
    Task,
    Evaluation,
    AiApp,
    AssessmentPlan,
    RiskScorers,
    RiskScoringMethodology,
    Framework,
    /// A scorer kept in its own file and `$ref`'d into a task's `scorers`.
    Scorer,
    /// An action rule kept in its own file and `$ref`'d into a task's `actions`.
    ActionRule,
}

/// Keys of an `SDKAIApp` (3.17 and the docs era's `key_info`).
const APP_KEYS: &[&str] = &[
    "key",
    "display_name",
    "description",
    "long_description",
    "risk_profile",
    "key_info",
    "tags",
    "model_under_test_key",
    "judge_model_key",
    "risk_scorers",
];

const RUN_CONFIG_KEYS: &[&str] = &[
    "secrets",
    "config",
    "run_config",
    "model_adapters",
    "models",
    "dataset_generators",
    "datasets",
    "tasks",
    "evaluation",
    "policies",
];

const SCORER_TYPES: &[&str] = &[
    "string_equals",
    "string_equals_mcqa",
    "python",
    "python_all_samples",
    "model_as_a_judge_classifier",
    "model_as_a_judge_scorer",
    "labeler_via_model",
    "bleu",
    "rag_checker",
    "function_call_coverage",
];

impl EntityKind {
    /// The kind's name in messages ("a dataset", "an AI app" read from this).
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::RunConfig => "run config",
            EntityKind::Model => "model",
            EntityKind::ModelAdapter => "model adapter",
            EntityKind::Dataset => "dataset",
            EntityKind::DatasetGenerator => "dataset generator",
            EntityKind::Task => "task",
            EntityKind::Evaluation => "evaluation",
            EntityKind::AiApp => "AI app",
            EntityKind::AssessmentPlan => "assessment plan",
            EntityKind::RiskScorers => "risk scorer list",
            EntityKind::RiskScoringMethodology => "risk scoring methodology",
            EntityKind::Framework => "framework",
            EntityKind::Scorer => "scorer",
            EntityKind::ActionRule => "action rule",
        }
    }

    /// The name with its article.
    pub fn described(self) -> String {
        let name = self.name();
        let article = if matches!(name.as_bytes().first(), Some(b'a' | b'e' | b'i' | b'o' | b'u' | b'A')) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }

    /// Why lfeval does not use this kind, for kinds that need the hosted platform.
    pub fn hosted(self) -> Option<HostedFeature> {
        match self {
            EntityKind::DatasetGenerator => Some(HostedFeature::DatasetGenerators),
            EntityKind::AssessmentPlan => Some(HostedFeature::AssessmentPlans),
            EntityKind::RiskScorers => Some(HostedFeature::RiskScorers),
            EntityKind::RiskScoringMethodology => Some(HostedFeature::RiskScoringMethodologies),
            EntityKind::Framework => Some(HostedFeature::Frameworks),
            _ => None,
        }
    }
}

/// A feature of the hosted AI GO! platform that lfeval recognises and refuses by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostedFeature {
    DatasetGenerators,
    LatticeFlowModels,
    AssessmentPlans,
    RiskScorers,
    RiskScoringMethodologies,
    Frameworks,
    StoredEvaluations,
}

/// The words every refusal shares, so tools (and the conformance test) can tell a refusal by
/// name from an error in the file.
pub const REFUSAL_MARK: &str = "need the hosted AI GO! platform; lfeval does not run them";

impl HostedFeature {
    pub fn name(self) -> &'static str {
        match self {
            HostedFeature::DatasetGenerators => "dataset generators",
            HostedFeature::LatticeFlowModels => "LatticeFlow-hosted models",
            HostedFeature::AssessmentPlans => "assessment plans",
            HostedFeature::RiskScorers => "risk scorers",
            HostedFeature::RiskScoringMethodologies => "risk scoring methodologies",
            HostedFeature::Frameworks => "frameworks",
            HostedFeature::StoredEvaluations => "evaluations stored on the platform",
        }
    }

    /// "dataset generators need the hosted AI GO! platform; lfeval does not run them".
    pub fn refusal(self) -> String {
        format!("{} {REFUSAL_MARK}", self.name())
    }

    /// What to do instead.
    pub fn hint(self) -> &'static str {
        match self {
            HostedFeature::DatasetGenerators => {
                "generate the rows once (for example with `lf` on the platform), save them as `.jsonl` and use `source: {type: local, file_path: ...}`"
            }
            HostedFeature::LatticeFlowModels => {
                "use a provider model with your own key (`$provider: \"openai/gpt-4.1-nano\"`) or a `custom_connection` model"
            }
            HostedFeature::AssessmentPlans => {
                "run each evaluation of the plan with `lfeval run -f run.yaml` and its `config:` values"
            }
            HostedFeature::RiskScorers | HostedFeature::RiskScoringMethodologies | HostedFeature::Frameworks => {
                "lfeval's results (`summary.json`, task result logs) can be uploaded to the platform, which scores them"
            }
            HostedFeature::StoredEvaluations => {
                "run the evaluation itself with `repeatability: {num_runs: N}` on its task specifications"
            }
        }
    }

    pub fn diagnostic(self, subject: &str) -> Diagnostic {
        Diagnostic::new(format!("{subject}: {}", self.refusal())).with_hint(self.hint())
    }
}

fn has(node: &Node, key: &str) -> bool {
    node.get(key).is_some()
}

/// lf's `run_config_processing.is_run_config`: any of the run-config lists, or `tasks` on a
/// file that is not itself a task. A file of nothing but run-config keys (`secrets`, `config`,
/// `policies`) is one too.
pub fn is_run_config(node: &Node) -> bool {
    let Some(entries) = node.as_map() else { return false };
    if [
        "datasets",
        "dataset_generators",
        "models",
        "model_adapters",
        "evaluation",
    ]
    .iter()
    .any(|k| has(node, k))
    {
        return true;
    }
    if has(node, "tasks") && !["key", "display_name", "definition"].iter().any(|k| has(node, k)) {
        return true;
    }
    !entries.is_empty() && entries.iter().all(|(k, _)| RUN_CONFIG_KEYS.contains(&k.name.as_str()))
}

/// The kind a loaded file holds, from its content alone.
pub fn detect(node: &Node) -> Option<EntityKind> {
    if matches!(node.value, Value::Seq(_)) {
        return Some(EntityKind::RiskScorers);
    }
    node.as_map()?;
    if is_run_config(node) {
        return Some(EntityKind::RunConfig);
    }
    let kind = if has(node, "process_input") || has(node, "process_output") {
        EntityKind::ModelAdapter
    } else if has(node, "risk_scorers") && !has(node, "display_name") {
        EntityKind::RiskScorers
    } else if has(node, "evaluation_specifications") {
        EntityKind::AssessmentPlan
    } else if has(node, "task_specifications") {
        EntityKind::Evaluation
    } else if let Some(definition) = node.get("definition") {
        if definition.get("synthesizers").is_some() {
            EntityKind::DatasetGenerator
        } else {
            EntityKind::Task
        }
    } else if has(node, "source") || has(node, "generator_specification") || has(node, "file_path") {
        EntityKind::Dataset
    } else if has(node, "function") && has(node, "metric_key") {
        EntityKind::RiskScoringMethodology
    } else if has(node, "risks") || node.get("kind").and_then(Node::as_str) == Some("framework") {
        EntityKind::Framework
    } else if has(node, "config") || has(node, "$provider") {
        EntityKind::Model
    } else if has(node, "risk_scoring_methodology_key") {
        EntityKind::RiskScorers
    } else if has(node, "action") && has(node, "filter") {
        EntityKind::ActionRule
    } else if node
        .get("type")
        .and_then(Node::as_str)
        .is_some_and(|t| SCORER_TYPES.contains(&t))
    {
        EntityKind::Scorer
    } else if has(node, "key")
        && has(node, "display_name")
        && node
            .as_map()
            .is_some_and(|entries| entries.iter().all(|(k, _)| APP_KEYS.contains(&k.name.as_str())))
    {
        EntityKind::AiApp
    } else {
        return None;
    };
    Some(kind)
}

/// The kind a file's place suggests: the folder lf's dump/restore layout (and lfeval's
/// project layout) uses for it, or a conventional file name.
pub fn from_location(path: &Path) -> Option<EntityKind> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    match stem {
        "app" | "ai_app" => return Some(EntityKind::AiApp),
        "model" => return Some(EntityKind::Model),
        "risk_scorers" => return Some(EntityKind::RiskScorers),
        "risk_scoring_methodology" => return Some(EntityKind::RiskScoringMethodology),
        "assessment-plan" | "assessment_plan" => return Some(EntityKind::AssessmentPlan),
        "policies" => return Some(EntityKind::RunConfig),
        s if s.starts_with("run") => return Some(EntityKind::RunConfig),
        _ => {}
    }
    path.ancestors().skip(1).find_map(|dir| {
        let folder = dir.file_name()?.to_string_lossy().to_lowercase();
        Some(match folder.as_str() {
            "models" => EntityKind::Model,
            "model_adapters" | "adapters" => EntityKind::ModelAdapter,
            "datasets" => EntityKind::Dataset,
            "dataset_generators" => EntityKind::DatasetGenerator,
            "tasks" => EntityKind::Task,
            "evaluations" => EntityKind::Evaluation,
            "apps" | "ai_apps" => EntityKind::AiApp,
            "action_rules" => EntityKind::ActionRule,
            "scorers" => EntityKind::Scorer,
            "frameworks" => EntityKind::Framework,
            "risk_scoring_methodologies" => EntityKind::RiskScoringMethodology,
            _ => return None,
        })
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the shape is checked")]
struct AiAppWire {
    key: String,
    display_name: String,
    description: Option<String>,
    long_description: Option<String>,
    risk_profile: Option<serde::de::IgnoredAny>,
    key_info: Option<serde::de::IgnoredAny>,
    tags: Option<Vec<String>>,
    model_under_test_key: Option<String>,
    judge_model_key: Option<String>,
    risk_scorers: Option<Vec<String>>,
}

/// Checks an AI app's shape (lfeval does not use apps, but a typo should still be caught).
pub fn check_app(node: &Node) -> Result<String, Diagnostic> {
    let app: AiAppWire = crate::yaml::from_node(node, "")?;
    Ok(app.key)
}

/// The kind of the file at `path`: its content, else its place. An app's signature (only a
/// `key`, a `display_name` and descriptions) is also what a model or task missing its main key
/// looks like, so the folder wins over it.
pub fn classify(node: &Node, path: &Path) -> Option<EntityKind> {
    match (detect(node), from_location(path)) {
        (Some(EntityKind::AiApp), Some(place)) if place != EntityKind::AiApp => Some(place),
        (Some(kind), _) => Some(kind),
        (None, place) => place,
    }
}

/// The error for a file that matches no entity kind.
pub fn unknown_kind(node: &Node) -> Diagnostic {
    let keys: Vec<String> = node
        .as_map()
        .map(|entries| entries.iter().map(|(k, _)| format!("`{}`", k.name)).collect())
        .unwrap_or_default();
    Diagnostic::new("this file matches no entity kind lfeval knows")
        .at(&node.span)
        .with_note(if keys.is_empty() {
            format!("its top level is {}", node.kind())
        } else {
            format!("its top-level keys are {}", keys.join(", "))
        })
        .with_hint(
            "a model has `config`, an adapter `process_input`, a dataset `source`, a task `definition`, an evaluation `task_specifications`, and a run config `models`/`datasets`/`tasks`/`evaluation`",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<EntityKind> {
        detect(&crate::yaml::load_str("x.yaml", text).unwrap())
    }

    #[test]
    fn kinds_come_from_content() {
        assert_eq!(kind("models: []\nsecrets: {A: b}"), Some(EntityKind::RunConfig));
        assert_eq!(
            kind("tasks: [chat_completion]\nkey: t\ndisplay_name: T\ndefinition: {}"),
            Some(EntityKind::Task)
        );
        assert_eq!(kind("tasks: []"), Some(EntityKind::RunConfig));
        assert_eq!(kind("policies: []"), Some(EntityKind::RunConfig));
        assert_eq!(
            kind("key: d\ndisplay_name: D\nsource: {type: local, file_path: x.csv}"),
            Some(EntityKind::Dataset)
        );
        assert_eq!(
            kind("key: g\ndisplay_name: G\ndefinition: {synthesizers: []}"),
            Some(EntityKind::DatasetGenerator)
        );
        assert_eq!(
            kind("key: a\ndisplay_name: A\ntags: [x]\nlong_description: y"),
            Some(EntityKind::AiApp)
        );
        assert_eq!(kind("key: m\ndisplay_name: M\nconfig: {}"), Some(EntityKind::Model));
        assert_eq!(kind("key: a\nprocess_input: {}"), Some(EntityKind::ModelAdapter));
        assert_eq!(
            kind("type: model_as_a_judge_classifier\nmodel_key: j"),
            Some(EntityKind::Scorer)
        );
        assert_eq!(
            kind("key: r\naction: exclude_from_metrics\nfilter: {}"),
            Some(EntityKind::ActionRule)
        );
        assert_eq!(kind("- key: r"), Some(EntityKind::RiskScorers));
        assert_eq!(kind("key: x\nbogus: 1"), None);
    }

    #[test]
    fn folders_and_names_suggest_a_kind() {
        assert_eq!(
            from_location(Path::new("p/model_adapters/a.yaml")),
            Some(EntityKind::ModelAdapter)
        );
        assert_eq!(
            from_location(Path::new("p/tasks/hate/task.yaml")),
            Some(EntityKind::Task)
        );
        assert_eq!(
            from_location(Path::new("p/run_generator.yaml")),
            Some(EntityKind::RunConfig)
        );
        assert_eq!(from_location(Path::new("p/app.yaml")), Some(EntityKind::AiApp));
        assert_eq!(from_location(Path::new("p/notes.yaml")), None);
    }

    #[test]
    fn refusals_name_the_feature() {
        assert_eq!(
            HostedFeature::DatasetGenerators.refusal(),
            "dataset generators need the hosted AI GO! platform; lfeval does not run them"
        );
        assert_eq!(EntityKind::AiApp.described(), "an AI app");
        assert_eq!(EntityKind::Task.described(), "a task");
    }
}
