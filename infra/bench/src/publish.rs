//! `publish-bench [skills]`: publishes a large catalog to the simulator with per-call latency and a rate
//! limit, and reports the time against the rate-limit floor, the no-change republish (time and writes),
//! and the time to publish one changed skill.

use claresia_aws::Expect;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use claresia_anthropic::Deadline;
use claresia_domain::catalog::Archetype;
use claresia_domain::TenantSlug;
use claresia_tests::{example, TestEnv, GOOD_KEY};
use serde_json::json;

const LATENCY_MS: u64 = 40;
const RATE_LIMIT: f64 = 50.0;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let env = TestEnv::start_with(|c| {
        c.publish_concurrency = 16;
        c.anthropic_max_rps = RATE_LIMIT;
    })
    .await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201, "connect");
    let hub = TenantSlug::parse("dainese").unwrap();

    let ids = env.put_bench_skills(&hub, n).await;
    let base = example("skill-incident-postmortem.json");
    let archetype = Archetype {
        skills: ids.clone(),
        group_ids: vec!["grp_engineering".into()],
        workspace_ids: vec![],
        sub_tenant: None,
        installation_preference: None,
    };
    env.app
        .hub
        .put_archetype(&hub, "everyone", &archetype, &Expect::Any)
        .await
        .unwrap();
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": LATENCY_MS, "rate_limit_rps": RATE_LIMIT}),
    )
    .await;

    let deadline = || Deadline::after(Duration::from_secs(900));
    let writes0 = env.sim_skill_writes().await;
    let t = Instant::now();
    let full = env.app.publish(&hub, None, deadline()).await.unwrap();
    let full_time = t.elapsed();
    let writes1 = env.sim_skill_writes().await;
    let created = full.targets[0].created.len();
    let failed = full.targets[0].failed.len();
    let floor = (2 * n) as f64 / RATE_LIMIT;

    let t = Instant::now();
    let again = env.app.publish(&hub, None, deadline()).await.unwrap();
    let nochange_time = t.elapsed();
    let writes2 = env.sim_skill_writes().await;

    let changed = &ids[n / 2];
    let mut doc = base.clone();
    doc["id"] = json!(changed);
    doc["title"] = json!("Bench skill, edited");
    env.app
        .hub
        .put_skill(&hub, changed, &doc, &Expect::Any)
        .await
        .unwrap();
    let t = Instant::now();
    let one = env
        .app
        .publish(&hub, Some(&BTreeSet::from([changed.clone()])), deadline())
        .await
        .unwrap();
    let one_time = t.elapsed();
    let state = env.sim_get("/_sim/state").await;

    println!("publish-bench: {n} skills, simulator latency {LATENCY_MS} ms/call, rate limit {RATE_LIMIT} req/s");
    println!(
        "  full publish        {:>8.2} s   {created} created, {failed} failed, {} writes",
        full_time.as_secs_f64(),
        writes1 - writes0
    );
    println!(
        "  rate-limit floor    {floor:>8.2} s   ({} creates + {} ACL writes at {RATE_LIMIT}/s)",
        n, n
    );
    println!(
        "  ratio to floor      {:>8.3}     (target ≤ 1.15)",
        full_time.as_secs_f64() / floor
    );
    println!(
        "  no-change republish {:>8.2} s   {} writes, {} unchanged (target: 0 writes)",
        nochange_time.as_secs_f64(),
        writes2 - writes1,
        again.targets[0].unchanged.len()
    );
    println!(
        "  one changed skill   {:>8.3} s   updated {:?}",
        one_time.as_secs_f64(),
        one.targets[0].updated
    );
    let total_requests: u64 = state["routes"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["requests"].as_u64().unwrap_or(0))
        .sum();
    println!("  simulator requests  {total_requests:>8}");
}
