//! JUnit XML for CI: one test case per task specification and one per policy rule, so a CI
//! system shows which specification regressed or which gate failed.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::eval::policy::RuleOutcome;
use crate::eval::summary::{RunSummary, SpecStatus};
use crate::report::comparison::Comparison;

/// One test case before it is XML.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `specification` or `policy`.
    pub class: &'static str,
    pub name: String,
    pub outcome: Outcome,
    /// What was checked, shown as the case's output.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The cases of a finished run: a specification fails when a sample or a metric failed.
pub fn run_cases(summary: &RunSummary, rules: &[RuleOutcome]) -> Vec<Case> {
    let mut cases: Vec<Case> = summary
        .specifications
        .iter()
        .map(|spec| {
            let detail = format!(
                "{} sample(s), {} failed, {} metric error(s)",
                spec.samples,
                spec.failed,
                spec.metric_errors.len()
            );
            let outcome = match spec.status {
                SpecStatus::Succeeded => Outcome::Passed,
                SpecStatus::NotStarted => Outcome::Skipped("the run stopped before this specification".to_owned()),
                SpecStatus::Failed => Outcome::Failed(detail.clone()),
            };
            Case {
                class: "specification",
                name: spec.identity.key.clone(),
                outcome,
                detail,
            }
        })
        .collect();
    cases.extend(rule_cases(rules));
    cases
}

/// The cases of a comparison: a specification fails when one of its metrics regressed.
pub fn compare_cases(comparison: &Comparison) -> Vec<Case> {
    let mut cases: Vec<Case> = comparison
        .specifications
        .iter()
        .map(|spec| {
            let regressed: Vec<String> = spec
                .metrics
                .iter()
                .filter(|m| m.regressed)
                .map(|m| {
                    format!(
                        "`{}` got worse (p = {})",
                        m.name,
                        crate::report::stats::format_p(m.p_value.unwrap_or(1.0))
                    )
                })
                .collect();
            let detail = format!(
                "{} metric(s) compared over {} paired sample(s)",
                spec.metrics.len(),
                spec.n_paired
            );
            Case {
                class: "specification",
                name: spec.key.clone(),
                outcome: if regressed.is_empty() {
                    Outcome::Passed
                } else {
                    Outcome::Failed(regressed.join("; "))
                },
                detail,
            }
        })
        .collect();
    cases.extend(rule_cases(&comparison.policies));
    cases
}

fn rule_cases(rules: &[RuleOutcome]) -> Vec<Case> {
    rules
        .iter()
        .map(|rule| Case {
            class: "policy",
            name: rule.id(),
            outcome: if rule.passed {
                Outcome::Passed
            } else {
                Outcome::Failed(format!("{}: {}", rule.condition, rule.detail))
            },
            detail: format!("{} ({}): {}", rule.rule_name, rule.condition, rule.detail),
        })
        .collect()
}

/// The cases as one JUnit test suite named `name`.
pub fn render(name: &str, cases: &[Case]) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new("lfeval");
    let mut suite = TestSuite::new(name);
    for case in cases {
        let status = match &case.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failed(message) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(message.as_str());
                status
            }
            Outcome::Skipped(message) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(message.as_str());
                status
            }
        };
        let mut test = TestCase::new(case.name.as_str(), status);
        test.set_classname(format!("{name}.{}", case.class));
        test.set_system_out(case.detail.as_str());
        suite.add_test_case(test);
    }
    report.add_test_suite(suite);
    report.to_string()
}
