//! `enterprise-publish-bench [skills]`: publishes a catalog, each skill granted to two RBAC groups, to the
//! simulator's Claude Enterprise org with 40 ms per call and the org's write limit raised to 600 a minute,
//! and reports the time against the write-limit floor (writes ÷ limit) with the ETA the publish report
//! gave, then the no-change republish (time and writes).

use std::time::{Duration, Instant};

use claresia_anthropic::Deadline;
use claresia_aws::Expect;
use claresia_domain::catalog::Archetype;
use claresia_domain::TenantSlug;
use claresia_tests::{
    TestEnv, ENTERPRISE_KEY, ENTERPRISE_ORG_ID, GROUP_ENGINEERING, GROUP_PRODUCT,
};
use serde_json::json;

const LATENCY_MS: u64 = 40;
const WRITES_PER_MINUTE: f64 = 600.0;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let env = TestEnv::enterprise_with(|c| {
        c.publish_concurrency = 16;
        c.enterprise_limits.writes_per_minute = WRITES_PER_MINUTE;
    })
    .await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"writes_per_minute": WRITES_PER_MINUTE, "reads_per_minute": 60000}),
    )
    .await;
    let (s, b) = env
        .connect_enterprise("ducati", ENTERPRISE_KEY, Some("bench"))
        .await;
    assert_eq!(s, 201, "connect: {b}");
    let hub = TenantSlug::parse("ducati").unwrap();
    let ids = env.put_bench_skills(&hub, n).await;
    let archetype = Archetype {
        skills: ids,
        group_ids: vec![GROUP_ENGINEERING.into(), GROUP_PRODUCT.into()],
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
        json!({"route": "*", "latency_ms": LATENCY_MS}),
    )
    .await;

    let deadline = || Deadline::after(Duration::from_secs(900));
    let writes0 = env.enterprise_writes().await;
    let t = Instant::now();
    let full = env.app.publish(&hub, None, deadline()).await.unwrap();
    let full_time = t.elapsed();
    let writes1 = env.enterprise_writes().await;
    let eta = full
        .eta
        .clone()
        .expect("an enterprise publish reports its ETA");
    let floor = f64::from(eta.writes_planned) * 60.0 / WRITES_PER_MINUTE;

    let t = Instant::now();
    let again = env.app.publish(&hub, None, deadline()).await.unwrap();
    let nochange_time = t.elapsed();
    let writes2 = env.enterprise_writes().await;

    println!("enterprise-publish-bench: {n} skills × 2 RBAC groups, simulator latency {LATENCY_MS} ms/call, write limit {WRITES_PER_MINUTE}/min");
    println!(
        "  full publish        {:>8.2} s   {} created, {} failed, {} writes sent",
        full_time.as_secs_f64(),
        full.targets[0].created.len(),
        full.targets[0].failed.len(),
        writes1 - writes0
    );
    println!(
        "  report's ETA        {:>8} s   ({} writes planned at {}/min)",
        eta.seconds, eta.writes_planned, eta.writes_per_minute
    );
    println!("  write-limit floor   {floor:>8.2} s   (writes ÷ limit)");
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
}
