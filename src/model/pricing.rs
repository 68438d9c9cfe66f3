//! What a model's tokens cost: `pricing: {input_per_million, output_per_million}` (USD per
//! million tokens) at a model's top level, and the cost of one call from the usage its canonical
//! output reported.

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::model::io::Usage;
use crate::model::trace::Trace;
use crate::yaml::Located;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Pricing {
    /// The cost of `usage` in USD.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.num_prompt_tokens as f64 * self.input_per_million
            + usage.num_completion_tokens as f64 * self.output_per_million)
            / 1e6
    }

    /// What one call cost: the usage its output reported, priced. A cached answer cost nothing
    /// in this run, and a call without an output reported no usage.
    pub fn call_cost(&self, trace: &Trace) -> f64 {
        if trace.cached {
            return 0.0;
        }
        call_usage(trace).map_or(0.0, |usage| self.cost(usage))
    }
}

/// The token usage a call's canonical output reported, if any.
pub fn call_usage(trace: &Trace) -> Option<Usage> {
    let usage = trace.output.as_ref()?.get("usage")?;
    serde_json::from_value(usage.clone()).ok()
}

/// Checks a `pricing:` block: both prices finite and not negative.
pub fn validate(pricing: Option<Located<Pricing>>) -> Result<Option<Pricing>, Diagnostic> {
    let Some(p) = pricing else { return Ok(None) };
    let sane = |v: f64| v.is_finite() && v >= 0.0;
    if !sane(p.value.input_per_million) || !sane(p.value.output_per_million) {
        return Err(Diagnostic::new("invalid `pricing`")
            .at_location(p.location.clone())
            .with_path(p.path.clone())
            .with_hint("`input_per_million` and `output_per_million` are USD per million tokens, 0 or more"));
    }
    Ok(Some(p.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_costs_its_reported_tokens_and_a_cached_call_nothing() {
        let price = Pricing {
            input_per_million: 0.10,
            output_per_million: 0.40,
        };
        let mut trace = Trace {
            output: Some(json!({"usage": {"num_prompt_tokens": 1000, "num_completion_tokens": 500}})),
            ..Trace::default()
        };
        assert!((price.call_cost(&trace) - 0.0003).abs() < 1e-15);
        trace.cached = true;
        assert_eq!(price.call_cost(&trace), 0.0);
        trace.cached = false;
        trace.output = Some(json!({"choices": []}));
        assert_eq!(price.call_cost(&trace), 0.0);
    }
}
