//! When and how long to wait before trying a request again, per the contract.

use std::time::Duration;

use rand::Rng;

/// The retry rules. Defaults: 4 attempts in all, full-jitter backoff from 0.5 s doubling to 8 s (the
/// official SDKs' curve, with one more attempt), `retry-after` honoured up to 60 s.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Stop,
    /// Wait exactly this long (the server said so).
    After(Duration),
    /// Wait a jittered backoff.
    Backoff,
}

/// Classifies an HTTP answer. `should_retry` is the `x-should-retry` header, which overrides the status rule.
pub(crate) fn decide(
    status: u16,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
) -> Decision {
    let by_status = match status {
        // A 429 without retry-after is a spend cap, not a rate limit: waiting will not help.
        429 => match retry_after {
            Some(d) => Decision::After(d),
            None => Decision::Stop,
        },
        s if s >= 500 => Decision::Backoff,
        _ => Decision::Stop,
    };
    match should_retry {
        Some(false) => Decision::Stop,
        Some(true) if by_status == Decision::Stop => match retry_after {
            Some(d) => Decision::After(d),
            None => Decision::Backoff,
        },
        _ => by_status,
    }
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(max, base·2^(attempt-1))]`, `attempt` counting from 1.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

/// Parses `retry-after` (seconds, possibly fractional) or the SDKs' `retry-after-ms`.
pub(crate) fn parse_retry_after(seconds: Option<&str>, millis: Option<&str>) -> Option<Duration> {
    if let Some(ms) = millis.and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let secs = seconds?.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules_follow_the_contract() {
        let s = Some(Duration::from_secs(2));
        assert_eq!(
            decide(429, s, None),
            Decision::After(Duration::from_secs(2))
        );
        assert_eq!(decide(429, None, None), Decision::Stop);
        for st in [500, 502, 503, 504, 529] {
            assert_eq!(decide(st, None, None), Decision::Backoff, "{st}");
        }
        for st in [400, 401, 402, 403, 404, 409, 413, 418] {
            assert_eq!(decide(st, None, None), Decision::Stop, "{st}");
        }
    }

    #[test]
    fn x_should_retry_overrides_status() {
        assert_eq!(decide(500, None, Some(false)), Decision::Stop);
        assert_eq!(
            decide(429, Some(Duration::from_secs(1)), Some(false)),
            Decision::Stop
        );
        assert_eq!(decide(409, None, Some(true)), Decision::Backoff);
        assert_eq!(decide(429, None, Some(true)), Decision::Backoff);
        assert_eq!(decide(529, None, Some(true)), Decision::Backoff);
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = RetryPolicy::default();
        for attempt in 1..=10 {
            let cap = (500u64 << (attempt - 1)).min(8000);
            for _ in 0..50 {
                assert!(p.backoff(attempt).as_millis() as u64 <= cap);
            }
        }
    }

    #[test]
    fn parses_retry_after_forms() {
        assert_eq!(
            parse_retry_after(Some("3"), None),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(Some("0.5"), None),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after(Some("1"), Some("250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after(Some("soon"), None), None);
        assert_eq!(parse_retry_after(Some("-1"), None), None);
        assert_eq!(parse_retry_after(None, None), None);
    }
}
