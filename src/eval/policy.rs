//! Quality gates: AI GO! `policies` (a run config's top-level `policies:` list, aigo-schema
//! `Policy`), each a list of rules with a `threshold` or `exists` definition over a metric of
//! `summary.json` and a scope. [`evaluate`] checks every rule against a run's summary; a failed
//! rule fails the run (exit 1).
//!
//! A rule's `metric` names a metric value as `summary.json` and the terminal show it: the value's
//! name (`is_correct_mean`), or prefixed with its scorer (`exact.is_correct_mean`), or a metric's
//! `key` (alone or as `scorer.key`) when that metric has one numeric value. A threshold rule
//! passes when at least one metric in scope matches and every match meets the threshold; an
//! exists rule passes when one matches.

use serde::{Deserialize, Serialize};

use crate::eval::summary::{MetricResult, RunSummary, SpecSummary};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub key: String,
    pub display_name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub key: String,
    pub display_name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub definition: RuleDefinition,
    pub scope: Scope,
    #[serde(default)]
    pub methodology: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleDefinition {
    Threshold {
        metric: String,
        operator: Operator,
        threshold: f64,
    },
    Exists {
        metric: String,
    },
}

impl RuleDefinition {
    pub fn metric(&self) -> &str {
        match self {
            RuleDefinition::Threshold { metric, .. } | RuleDefinition::Exists { metric } => metric,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Operator {
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Greater => ">",
            Operator::GreaterOrEqual => ">=",
            Operator::Equal => "=",
            Operator::Less => "<",
            Operator::LessOrEqual => "<=",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::Greater => value > threshold,
            Operator::GreaterOrEqual => value >= threshold,
            // Metrics are computed in floating point: equal up to rounding.
            Operator::Equal => (value - threshold).abs() <= 1e-9 * threshold.abs().max(1.0),
            Operator::Less => value < threshold,
            Operator::LessOrEqual => value <= threshold,
        }
    }
}

/// `all_latest`, or lists of keys that narrow what the rule looks at (absent = any).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Scope {
    Simple(SimpleScope),
    Finegrained(FinegrainedScope),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimpleScope {
    AllLatest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinegrainedScope {
    #[serde(default)]
    pub evaluation_keys: Option<Vec<String>>,
    #[serde(default)]
    pub task_specification_keys: Option<Vec<String>>,
    #[serde(default)]
    pub scorer_keys: Option<Vec<String>>,
    #[serde(default)]
    pub metric_keys: Option<Vec<String>>,
}

/// One metric value a rule looked at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checked {
    pub spec: String,
    /// `scorer.value`, as the terminal shows it.
    pub metric: String,
    pub value: f64,
    pub passed: bool,
}

/// How one rule came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleOutcome {
    pub policy: String,
    pub policy_name: String,
    pub rule: String,
    pub rule_name: String,
    /// The definition in words: `exact.is_correct_mean >= 0.9`.
    pub condition: String,
    pub passed: bool,
    /// Why it failed, or what it checked.
    pub detail: String,
    pub checked: Vec<Checked>,
}

impl RuleOutcome {
    /// `policy/rule`, the rule's name in lists and JUnit.
    pub fn id(&self) -> String {
        format!("{}/{}", self.policy, self.rule)
    }
}

/// Checks every rule of every policy against the run's summary.
pub fn evaluate(policies: &[Policy], summary: &RunSummary) -> Vec<RuleOutcome> {
    let mut out = Vec::new();
    for policy in policies {
        for rule in &policy.rules {
            out.push(evaluate_rule(policy, rule, summary));
        }
    }
    out
}

fn evaluate_rule(policy: &Policy, rule: &PolicyRule, summary: &RunSummary) -> RuleOutcome {
    let wanted = rule.definition.metric();
    let mut checked = Vec::new();
    for spec in summary
        .specifications
        .iter()
        .filter(|s| in_spec_scope(&rule.scope, summary, s))
    {
        for metric in spec.metrics.iter().filter(|m| in_metric_scope(&rule.scope, m)) {
            for (name, value) in numeric_values(metric) {
                if !names_match(wanted, metric, &name) {
                    continue;
                }
                let passed = match &rule.definition {
                    RuleDefinition::Threshold {
                        operator, threshold, ..
                    } => operator.holds(value, *threshold),
                    RuleDefinition::Exists { .. } => true,
                };
                checked.push(Checked {
                    spec: spec.identity.key.clone(),
                    metric: format!("{}.{name}", metric.scorer_name),
                    value,
                    passed,
                });
            }
        }
    }
    let condition = match &rule.definition {
        RuleDefinition::Threshold {
            metric,
            operator,
            threshold,
        } => format!("{metric} {} {}", operator.as_str(), number(*threshold)),
        RuleDefinition::Exists { metric } => format!("{metric} exists"),
    };
    let failed: Vec<&Checked> = checked.iter().filter(|c| !c.passed).collect();
    let (passed, detail) = if checked.is_empty() {
        (false, format!("no metric `{wanted}` in the rule's scope"))
    } else if let Some(first) = failed.first() {
        let more = if failed.len() > 1 {
            format!(" (and {} more)", failed.len() - 1)
        } else {
            String::new()
        };
        (
            false,
            format!(
                "`{}` of `{}` is {}{more}",
                first.metric,
                first.spec,
                number(first.value)
            ),
        )
    } else {
        let values: Vec<String> = checked
            .iter()
            .map(|c| format!("`{}` of `{}` is {}", c.metric, c.spec, number(c.value)))
            .collect();
        (true, values.join(", "))
    };
    RuleOutcome {
        policy: policy.key.clone(),
        policy_name: policy.display_name.clone(),
        rule: rule.key.clone(),
        rule_name: rule.display_name.clone(),
        condition,
        passed,
        detail,
        checked,
    }
}

/// A number as people read it: up to four decimals, no trailing zeros.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "0" || text == "-0" {
        format!("{value:e}")
    } else {
        text.to_owned()
    }
}

fn in_spec_scope(scope: &Scope, summary: &RunSummary, spec: &SpecSummary) -> bool {
    let Scope::Finegrained(s) = scope else { return true };
    let listed = |keys: &Option<Vec<String>>, key: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == key));
    listed(&s.evaluation_keys, &summary.evaluation) && listed(&s.task_specification_keys, &spec.identity.key)
}

fn in_metric_scope(scope: &Scope, metric: &MetricResult) -> bool {
    let Scope::Finegrained(s) = scope else { return true };
    let scorer_ok = s.scorer_keys.as_ref().is_none_or(|keys| {
        keys.iter()
            .any(|k| *k == metric.scorer_name || metric.scorer_key.as_deref() == Some(k.as_str()))
    });
    let metric_ok = s.metric_keys.as_ref().is_none_or(|keys| {
        keys.iter()
            .any(|k| metric.metric_key.as_deref() == Some(k.as_str()) || metric.values.contains_key(k.as_str()))
    });
    scorer_ok && metric_ok
}

/// The metric's numeric values (frequencies and confusion matrices are maps, not gated).
pub fn numeric_values(metric: &MetricResult) -> Vec<(String, f64)> {
    metric
        .values
        .iter()
        .filter_map(|(name, v)| v.as_f64().map(|x| (name.clone(), x)))
        .collect()
}

fn names_match(wanted: &str, metric: &MetricResult, name: &str) -> bool {
    let scorer = &metric.scorer_name;
    if wanted == name || wanted == format!("{scorer}.{name}") {
        return true;
    }
    let single = metric.values.len() == 1;
    match &metric.metric_key {
        Some(key) if single => wanted == key || wanted == format!("{scorer}.{key}"),
        _ => false,
    }
}

/// Rule and policy keys follow the AI GO! key pattern.
pub fn check_keys(policies: &[Policy]) -> Result<(), String> {
    let valid = |k: &str| {
        !k.is_empty() && k.len() <= 250 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    for policy in policies {
        if !valid(&policy.key) {
            return Err(format!("invalid policy key `{}`", policy.key));
        }
        for rule in &policy.rules {
            if !valid(&rule.key) {
                return Err(format!("invalid rule key `{}` in policy `{}`", rule.key, policy.key));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::summary::{SpecIdentity, SpecStatus, Totals};
    use serde_json::json;

    fn summary() -> RunSummary {
        let metric = |scorer: &str, key: Option<&str>, values: serde_json::Value| MetricResult {
            scorer_name: scorer.into(),
            scorer_key: Some(scorer.into()),
            scorer_purpose: "score".into(),
            metric_key: key.map(str::to_owned),
            metric_type: "mean".into(),
            field: None,
            values: values.as_object().cloned().unwrap(),
            n: 10,
            excluded: 0,
        };
        let spec = |key: &str, accuracy: f64| SpecSummary {
            metrics: vec![
                metric("exact", Some("accuracy"), json!({"is_correct_mean": accuracy})),
                metric("judge", None, json!({"verdict_frequency": {"A": 3}})),
            ],
            status: SpecStatus::Succeeded,
            ..SpecSummary::not_started(SpecIdentity {
                key: key.into(),
                display_name: key.into(),
                task: "t".into(),
                model: None,
                dataset: "d".into(),
            })
        };
        RunSummary {
            evaluation: "ev".into(),
            run_dir: "runs/x".into(),
            started_at: String::new(),
            ended_at: String::new(),
            wall_time_s: 0.0,
            sessions: 1,
            specifications: vec![spec("a", 0.95), spec("b", 0.80)],
            totals: Totals::default(),
            models: Vec::new(),
            datasets: Vec::new(),
        }
    }

    fn policies(yaml_like: serde_json::Value) -> Vec<Policy> {
        serde_json::from_value(yaml_like).unwrap()
    }

    #[test]
    fn a_threshold_holds_only_when_every_metric_in_scope_meets_it() {
        let p = policies(json!([{
        "key": "quality", "display_name": "Quality", "rules": [
            {"key": "all", "display_name": "All", "scope": "all_latest",
             "definition": {"type": "threshold", "metric": "is_correct_mean", "operator": ">=", "threshold": 0.9}},
            {"key": "only-a", "display_name": "A", "scope": {"task_specification_keys": ["a"]},
             "definition": {"type": "threshold", "metric": "exact.accuracy", "operator": ">", "threshold": 0.9}},
            {"key": "exists", "display_name": "E", "scope": {"scorer_keys": ["judge"]},
             "definition": {"type": "exists", "metric": "exact.is_correct_mean"}}
        ]}]));
        let outcomes = evaluate(&p, &summary());
        assert!(!outcomes[0].passed);
        assert_eq!(outcomes[0].detail, "`exact.is_correct_mean` of `b` is 0.8");
        assert_eq!(outcomes[0].condition, "is_correct_mean >= 0.9");
        assert!(outcomes[1].passed, "{:?}", outcomes[1]);
        assert_eq!(outcomes[1].checked.len(), 1);
        assert!(!outcomes[2].passed, "the judge scorer has no such metric");
        assert_eq!(
            outcomes[2].detail,
            "no metric `exact.is_correct_mean` in the rule's scope"
        );
    }

    #[test]
    fn operators_compare_as_written() {
        assert!(Operator::Equal.holds(0.1 + 0.2, 0.3));
        assert!(Operator::LessOrEqual.holds(1.0, 1.0) && !Operator::Less.holds(1.0, 1.0));
        let op: Operator = serde_json::from_value(json!(">=")).unwrap();
        assert_eq!(op, Operator::GreaterOrEqual);
    }
}
