//! What samples cost, and `--max-cost`: a sample's cost is the sum of its calls' costs, each
//! priced by the `pricing` of the model that answered it; the [`CostBudget`] stops new samples
//! from starting once what was spent plus what the samples in flight will likely spend would
//! pass the limit.

use std::sync::{Mutex, PoisonError};

use crate::model::registry::Registry;
use crate::model::trace::Call;

/// The cost of a sample's calls in USD; `None` when no call was to a priced model.
pub fn sample_cost(calls: &[Call], registry: &Registry) -> Option<f64> {
    let mut total = None;
    for call in calls {
        let Some(pricing) = registry.get(&call.model).ok().and_then(|r| r.model.pricing) else {
            continue;
        };
        *total.get_or_insert(0.0) += pricing.call_cost(&call.trace);
    }
    total
}

/// A spending limit for one session of a run.
#[derive(Debug)]
pub struct CostBudget {
    limit: f64,
    state: Mutex<Spent>,
}

#[derive(Debug, Default)]
struct Spent {
    usd: f64,
    finished: u64,
    in_flight: u64,
    refused: bool,
}

impl CostBudget {
    pub fn new(limit: f64) -> CostBudget {
        CostBudget {
            limit,
            state: Mutex::new(Spent::default()),
        }
    }

    /// Admits one more sample unless the spend so far plus an estimate for every sample in
    /// flight (this one included) would pass the limit. The estimate is the mean cost of the
    /// samples finished so far; before any has finished, nothing is known and samples start.
    pub fn try_start(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let estimate = if s.finished == 0 {
            0.0
        } else {
            s.usd / s.finished as f64
        };
        if s.usd + estimate * (s.in_flight + 1) as f64 > self.limit {
            s.refused = true;
            return false;
        }
        s.in_flight += 1;
        true
    }

    /// Books a finished (or abandoned) sample that [`CostBudget::try_start`] admitted.
    pub fn finish(&self, cost: Option<f64>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.finished += 1;
        s.usd += cost.unwrap_or(0.0);
    }

    /// USD spent by the samples that finished.
    pub fn spent(&self) -> f64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).usd
    }

    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Whether a sample was held back by the limit.
    pub fn reached(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stop_starting_once_spent_plus_in_flight_would_pass_the_limit() {
        let budget = CostBudget::new(1.0);
        // Nothing known yet: two samples start.
        assert!(budget.try_start());
        assert!(budget.try_start());
        budget.finish(Some(0.3));
        // Spent 0.3, one in flight at ~0.3: a third would make 0.9, a fourth 1.2.
        assert!(budget.try_start());
        assert!(!budget.try_start());
        assert!(budget.reached());
        budget.finish(Some(0.3));
        budget.finish(Some(0.3));
        assert!((budget.spent() - 0.9).abs() < 1e-12);
        assert!(!budget.try_start(), "0.9 spent, another 0.3 would pass 1.0");
    }

    #[test]
    fn free_samples_never_exhaust_a_budget() {
        let budget = CostBudget::new(0.0);
        for _ in 0..3 {
            assert!(budget.try_start());
            budget.finish(None);
        }
        assert!(!budget.reached());
    }
}
