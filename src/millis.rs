//! Durations as records, evidence and summaries store them: milliseconds, to the microsecond.
//! Finer digits are clock noise, and a binary fraction of a millisecond printed in full
//! (`0.0016330000000000001`) costs every line of `samples.jsonl` another twenty bytes.

use std::time::Duration;

/// `d` in milliseconds, rounded to the microsecond.
pub fn of(d: Duration) -> f64 {
    let micros = d.as_nanos().saturating_add(500) / 1000;
    micros as f64 / 1000.0
}

/// Adds `d` to a sum of milliseconds, keeping it to the microsecond.
pub fn add(sum: &mut f64, d: Duration) {
    *sum = round(*sum + of(d));
}

/// `ms` rounded to the microsecond: for sums and differences of [`of`] values, whose binary
/// fractions would otherwise grow digits again.
pub fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_three_decimals_and_print_short() {
        assert_eq!(of(Duration::from_nanos(1_633)), 0.002);
        assert_eq!(of(Duration::from_nanos(412_554_321)), 412.554);
        assert_eq!(of(Duration::from_nanos(499)), 0.0);
        assert_eq!(
            serde_json::to_string(&of(Duration::from_nanos(412_554_321))).unwrap(),
            "412.554"
        );
        let mut sum = 0.413;
        add(&mut sum, Duration::from_micros(2));
        assert_eq!(serde_json::to_string(&sum).unwrap(), "0.415");
        assert_eq!(serde_json::to_string(&round(0.847_69 - 0.839_534)).unwrap(), "0.008");
    }
}
