//! Configuration from the environment. Every variable is listed in the README's configuration table.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `STAGE`: dev, staging or prod; prefixes secret names.
    pub stage: String,
    /// `HUB_TABLE`: the DynamoDB hub table.
    pub hub_table: String,
    /// `ANTHROPIC_BASE_URL`: Anthropic, or the simulator.
    pub anthropic_base_url: String,
    /// `SECRET_RECOVERY_WINDOW_DAYS`: how long an offboarded tenant's key can still be restored (7–30).
    pub secret_recovery_window_days: i64,
    /// `SECRETS_KMS_KEY_ID`: customer-managed KMS key for tenants' secrets (empty: Secrets Manager's own).
    pub secrets_kms_key_id: Option<String>,
    /// `REQUEST_BUDGET_MS`: how long an HTTP request may spend on Anthropic (API Gateway stops at 30 s).
    pub request_budget: Duration,
    /// `PUBLISH_CONCURRENCY`: skill writes in flight at once during a publish (1–64).
    pub publish_concurrency: usize,
    /// `ANTHROPIC_MAX_RPS`: client-side pacing of Anthropic requests per sandbox; 0 disables it.
    pub anthropic_max_rps: f64,
    /// `ENTERPRISE_WRITES_PER_MINUTE`, `ENTERPRISE_READS_PER_MINUTE`, `COMPLIANCE_REQUESTS_PER_MINUTE`,
    /// `ANALYTICS_REQUESTS_PER_MINUTE`: the per-org limits of the enterprise surface the connector paces
    /// itself to (documented: 60, 300, 600, 60). Lower them if other tools share the org's budget.
    pub enterprise_limits: crate::surface::EnterpriseLimits,
    /// `USAGE_POLL_INTERVAL_SECS`: how often the enterprise Analytics usage is pulled (it changes daily).
    pub usage_poll_interval: Duration,
    /// `ANTHROPIC_ATTEMPT_TIMEOUT_MS`: the longest one Anthropic attempt may take before it counts as a
    /// timeout and is retried (the request's deadline may cut it shorter).
    pub anthropic_attempt_timeout: Duration,
    /// `TELEMETRY_TABLE`: the `telemetry_event` table.
    pub telemetry_table: String,
    /// `POLL_CONCURRENCY`: tenants polled at once (1–64).
    pub poll_concurrency: usize,
    /// `TELEMETRY_WRITE_CONCURRENCY`: telemetry batch writes (25 events each) in flight at once across a
    /// whole tick (1–256), so many tenants' pages do not hit the table all at once.
    pub telemetry_write_concurrency: usize,
    /// `POLL_PAGE_LIMIT`: audit events per page (1–1000).
    pub poll_page_limit: u32,
    /// `KEY_CACHE_TTL_SECS`: how long the poller keeps a tenant's key in memory (and, at most, its routing).
    pub key_cache_ttl: Duration,
    /// How long a lease (a tenant's poll lease, a Hub's publish lease) outlives its holder's deadline: a
    /// crashed holder's lease lapses then.
    pub poll_lease_slack: Duration,
    /// `SWEEP_SLICE_SECS`: the most one Hub's sweep item runs (a large backlog goes on in the next slice).
    pub sweep_slice: Duration,
    /// `TLS_NATIVE_ROOTS`: also trust the system's certificate store (a private CA, a TLS-inspecting
    /// proxy), for both Anthropic and AWS. Off: the compiled-in roots only, and no certificate file is read.
    pub tls_native_roots: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let stage = get("STAGE").unwrap_or_else(|| "dev".into());
        if stage.is_empty()
            || !stage
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::Invalid {
                name: "STAGE",
                reason: format!("{stage:?} must be lowercase letters, digits and '-'"),
            });
        }
        let hub_table = get("HUB_TABLE").unwrap_or_else(|| format!("{stage}-claresia-hub"));
        let anthropic_base_url =
            get("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into());
        let secret_recovery_window_days = match get("SECRET_RECOVERY_WINDOW_DAYS") {
            None => 7,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (7..=30).contains(&n) => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "SECRET_RECOVERY_WINDOW_DAYS",
                        reason: format!("{v:?} must be a whole number of days from 7 to 30"),
                    })
                }
            },
        };
        let request_budget = match get("REQUEST_BUDGET_MS") {
            None => Duration::from_secs(25),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if (100..=29_000).contains(&ms) => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "REQUEST_BUDGET_MS",
                        reason: format!("{v:?} must be milliseconds from 100 to 29000"),
                    })
                }
            },
        };
        let publish_concurrency = match get("PUBLISH_CONCURRENCY") {
            None => 8,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "PUBLISH_CONCURRENCY",
                        reason: format!("{v:?} must be a whole number from 1 to 64"),
                    })
                }
            },
        };
        let anthropic_max_rps = match get("ANTHROPIC_MAX_RPS") {
            None => 50.0,
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "ANTHROPIC_MAX_RPS",
                        reason: format!("{v:?} must be a number ≥ 0 (0 disables pacing)"),
                    })
                }
            },
        };
        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or(ConfigError::Invalid {
                            name,
                            reason: format!("{v:?} must be a whole number from {min} to {max}"),
                        }),
                }
            };
        Ok(Config {
            telemetry_table: get("TELEMETRY_TABLE")
                .unwrap_or_else(|| format!("{stage}-claresia-telemetry-event")),
            poll_concurrency: number("POLL_CONCURRENCY", 8, 1, 64)? as usize,
            poll_page_limit: number("POLL_PAGE_LIMIT", 1000, 1, 1000)? as u32,
            telemetry_write_concurrency: number("TELEMETRY_WRITE_CONCURRENCY", 32, 1, 256)?
                as usize,
            key_cache_ttl: Duration::from_secs(number("KEY_CACHE_TTL_SECS", 300, 0, 3600)?),
            poll_lease_slack: Duration::from_secs(5),
            sweep_slice: Duration::from_secs(number("SWEEP_SLICE_SECS", 25, 5, 840)?),
            publish_concurrency,
            anthropic_max_rps,
            usage_poll_interval: Duration::from_secs(number(
                "USAGE_POLL_INTERVAL_SECS",
                3600,
                0,
                86_400,
            )?),
            enterprise_limits: crate::surface::EnterpriseLimits {
                writes_per_minute: number("ENTERPRISE_WRITES_PER_MINUTE", 60, 1, 100_000)? as f64,
                reads_per_minute: number("ENTERPRISE_READS_PER_MINUTE", 300, 1, 100_000)? as f64,
                compliance_per_minute: number("COMPLIANCE_REQUESTS_PER_MINUTE", 600, 1, 100_000)?
                    as f64,
                analytics_per_minute: number("ANALYTICS_REQUESTS_PER_MINUTE", 60, 1, 100_000)?
                    as f64,
            },
            anthropic_attempt_timeout: Duration::from_millis(number(
                "ANTHROPIC_ATTEMPT_TIMEOUT_MS",
                10_000,
                100,
                29_000,
            )?),
            stage,
            hub_table,
            anthropic_base_url,
            secret_recovery_window_days,
            secrets_kms_key_id: get("SECRETS_KMS_KEY_ID").filter(|k| !k.trim().is_empty()),
            request_budget,
            tls_native_roots: match get("TLS_NATIVE_ROOTS").as_deref().map(str::trim) {
                None | Some("") | Some("false") => false,
                Some("true") => true,
                Some(v) => {
                    return Err(ConfigError::Invalid {
                        name: "TLS_NATIVE_ROOTS",
                        reason: format!("{v:?} must be true or false"),
                    })
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_stage() {
        let c = cfg(&[("STAGE", "prod")]).unwrap();
        assert_eq!(c.hub_table, "prod-claresia-hub");
        assert_eq!(c.anthropic_base_url, "https://api.anthropic.com");
        assert_eq!(c.secret_recovery_window_days, 7);
        assert_eq!(c.request_budget, Duration::from_secs(25));
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        for (k, v) in [
            ("STAGE", "Prod"),
            ("SECRET_RECOVERY_WINDOW_DAYS", "3"),
            ("SECRET_RECOVERY_WINDOW_DAYS", "x"),
            ("REQUEST_BUDGET_MS", "60000"),
        ] {
            let err = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }
}
