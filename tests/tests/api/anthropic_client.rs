//! The Anthropic client against the simulator's fault injection: retries exactly as the contract says.

use std::time::{Duration, Instant};

use anthropic_sim::{demo, Sim, SimServer};
use claresia_anthropic::{AnthropicClient, ClientConfig, Deadline, ErrorKind, RetryPolicy};
use claresia_domain::AdminKey;
use serde_json::{json, Value};

struct Fixture {
    sim: SimServer,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Fixture {
        let sim = Sim::new();
        demo::seed(&sim);
        Fixture {
            sim: SimServer::start("127.0.0.1:0".parse().unwrap(), sim)
                .await
                .unwrap(),
            http: reqwest::Client::new(),
        }
    }

    /// A client with the contract's rules but short backoff, so tests stay fast.
    fn client(&self) -> AnthropicClient {
        let mut cfg = ClientConfig::new(self.sim.base_url());
        cfg.retry = RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        cfg.attempt_timeout = Duration::from_secs(2);
        AnthropicClient::new(cfg).unwrap()
    }

    async fn fault(&self, spec: Value) {
        self.http
            .put(format!("{}/_sim/faults", self.sim.base_url()))
            .json(&spec)
            .send()
            .await
            .unwrap();
    }

    async fn hits(&self, route: &str) -> u64 {
        let state: Value = self
            .http
            .get(format!("{}/_sim/state", self.sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["routes"][route]["requests"].as_u64().unwrap_or(0)
    }
}

const ME: &str = "GET /v1/organizations/me";

fn key(k: &str) -> AdminKey {
    AdminKey::parse(k).unwrap()
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

#[tokio::test]
async fn overloaded_then_recovers() {
    let f = Fixture::start().await;
    f.fault(json!({"route": ME, "fail": {"status": 529, "count": 3}}))
        .await;
    let org = f
        .client()
        .organization(&key(demo::GOOD_KEY), deadline())
        .await
        .unwrap();
    assert_eq!(org.name, "Dainese S.p.A.");
    assert_eq!(org.zero_retention, Some(true));
    assert_eq!(f.hits(ME).await, 4);
}

#[tokio::test]
async fn server_errors_stop_after_four_attempts_with_the_request_id() {
    let f = Fixture::start().await;
    f.fault(json!({"route": ME, "fail": {"status": 500, "count": 10}}))
        .await;
    let err = f
        .client()
        .organization(&key(demo::GOOD_KEY), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert_eq!(err.attempts(), 4);
    assert!(err.request_id().unwrap().starts_with("req_"));
    assert!(err.is_unavailable());
    assert_eq!(f.hits(ME).await, 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let f = Fixture::start().await;
    let err = f
        .client()
        .organization(&key(demo::REVOKED_KEY), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication);
    assert_eq!(err.attempts(), 1);
    assert_eq!(f.hits(ME).await, 1);
    let err = f
        .client()
        .list_page::<Value>(
            &key(demo::NO_AUDIT_KEY),
            &format!("/v1/organizations/{}/audit_logs", demo::DAINESE_ORG_ID),
            &[],
            None,
            1,
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permission);
    assert_eq!(
        err.upstream_message(),
        Some("API key is missing required scope: Audit:read")
    );
}

#[tokio::test]
async fn rate_limit_storm_is_ridden_out_honouring_retry_after() {
    let f = Fixture::start().await;
    // 2 requests per second, 6 callers at once: most get 429 + retry-after, all finish.
    f.fault(json!({"route": ME, "rate_limit_rps": 2.0})).await;
    let client = f.client();
    let started = Instant::now();
    let calls = (0..6).map(|_| {
        let c = client.clone();
        async move { c.organization(&key(demo::GOOD_KEY), deadline()).await }
    });
    let results = futures_join(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(f.hits(ME).await > 6, "some were rate limited and retried");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry-after was honoured"
    );
}

async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_429_without_retry_after_is_a_spend_cap_and_not_retried() {
    let f = Fixture::start().await;
    f.fault(json!({"route": ME, "spend_cap": 3})).await;
    let err = f
        .client()
        .organization(&key(demo::GOOD_KEY), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.attempts(), 1);
    assert_eq!(f.hits(ME).await, 1);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let f = Fixture::start().await;
    f.fault(json!({"route": ME, "drop_connections": 2})).await;
    let org = f
        .client()
        .organization(&key(demo::GOOD_KEY), deadline())
        .await
        .unwrap();
    assert_eq!(org.id, demo::DAINESE_ORG_ID);
    assert_eq!(f.hits(ME).await, 3);
    // Dropped every time: a transport error after four attempts.
    f.fault(json!({"route": ME, "drop_connections": 10})).await;
    let err = f
        .client()
        .organization(&key(demo::GOOD_KEY), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert_eq!(err.attempts(), 4);
}

#[tokio::test]
async fn never_runs_past_the_deadline() {
    let f = Fixture::start().await;
    f.fault(json!({"route": ME, "latency_ms": 3000})).await;
    let started = Instant::now();
    let err = f
        .client()
        .organization(
            &key(demo::GOOD_KEY),
            Deadline::after(Duration::from_millis(400)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn lists_every_page() {
    let f = Fixture::start().await;
    for i in 0..45 {
        f.http
            .post(format!(
                "{}/_sim/orgs/{}/workspaces",
                f.sim.base_url(),
                demo::DAINESE_ORG_ID
            ))
            .json(&json!({"name": format!("ws-{i}"), "archived": i % 10 == 0}))
            .send()
            .await
            .unwrap();
    }
    let c = f.client();
    let all: Vec<Value> = c
        .list_all(
            &key(demo::GOOD_KEY),
            "/v1/organizations/workspaces",
            &[("include_archived", "false".into())],
            10,
            deadline(),
        )
        .await
        .unwrap();
    // 3 demo + 45 new, minus the archived ones (1 demo + 5 new).
    assert_eq!(all.len(), 3 + 40);
    let ids: std::collections::BTreeSet<_> = all.iter().map(|w| w["id"].to_string()).collect();
    assert_eq!(ids.len(), all.len(), "no duplicates across pages");
    assert_eq!(f.hits("GET /v1/organizations/workspaces").await, 5);
    assert_eq!(
        c.workspaces(&key(demo::GOOD_KEY), deadline())
            .await
            .unwrap()
            .len(),
        43
    );
}
