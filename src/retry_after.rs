//! `Retry-After`: how long a server asked to be left alone, as delay-seconds or an HTTP date
//! (RFC 9110 §10.2.3). Read by `custom_connection` and by `lfeval.http` alike, so a snippet's
//! 429 feeds the model's gate exactly as a connection's does.

use std::time::Duration;

/// Longer asks are held to this: a server's typo must not park a run for a day.
const LONGEST: Duration = Duration::from_secs(3600);

/// The wait a `Retry-After` value asks for, from now; `None` when it is neither form.
pub fn parse(value: &str) -> Option<Duration> {
    parse_at(value, jiff::Timestamp::now())
}

fn parse_at(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs).min(LONGEST));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    // A date already past asks for no wait at all.
    let secs = (when.as_second() - now.as_second()).clamp(0, LONGEST.as_secs() as i64);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn seconds_are_read_as_given_and_held_to_an_hour() {
        let now = at("2026-12-01T12:00:00Z");
        assert_eq!(parse_at("2.5", now), Some(Duration::from_millis(2500)));
        assert_eq!(parse_at(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_at("86400", now), Some(LONGEST));
        assert_eq!(parse_at("-1", now), None);
        assert_eq!(parse_at("NaN", now), None);
        assert_eq!(parse_at("soon", now), None);
    }

    #[test]
    fn an_http_date_is_the_time_until_it() {
        let now = at("2026-12-01T12:00:00Z");
        assert_eq!(
            parse_at("Tue, 01 Dec 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_at("Tue, 01 Dec 2026 11:59:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_at("Wed, 02 Dec 2026 12:00:00 GMT", now), Some(LONGEST));
    }
}
