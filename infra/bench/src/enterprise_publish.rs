//! `enterprise-publish-bench [skills] [speed]`: publishes a catalog, each skill granted to two RBAC groups,
//! to the simulator's Claude Enterprise org with 40 ms per call at the documented limits (writes 60 and
//! reads 300 a minute, in the connector and the simulator) times `speed` (default 10: the same ratios, a
//! tenth of the wait), and reports the time against the write-limit floor (writes ÷ limit) with the ETA the
//! publish report gave; then a no-change full publish inside one request's budget (25 s): its time, reads
//! and writes.

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
/// The documented per-org limits.
const WRITES: f64 = 60.0;
const READS: f64 = 300.0;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let speed: f64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10.0);
    let (writes_per_minute, reads_per_minute) = (WRITES * speed, READS * speed);
    let env = TestEnv::enterprise_with(|c| {
        c.publish_concurrency = 16;
        c.enterprise_limits.writes_per_minute = writes_per_minute;
        c.enterprise_limits.reads_per_minute = reads_per_minute;
    })
    .await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"writes_per_minute": writes_per_minute, "reads_per_minute": reads_per_minute}),
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

    let deadline = || Deadline::after(Duration::from_secs(7200));
    let writes0 = env.enterprise_writes().await;
    let t = Instant::now();
    let full = env.app.publish(&hub, None, deadline()).await.unwrap();
    let full_time = t.elapsed();
    let writes1 = env.enterprise_writes().await;
    let eta = full
        .eta
        .clone()
        .expect("an enterprise publish reports its ETA");
    let floor = f64::from(eta.writes_planned) * 60.0 / writes_per_minute;

    // The no-change rerun as a request runs it: one 25 s budget.
    let reads1 = env.settings_reads().await;
    let lists1 = env.sim_get("/_sim/state").await["routes"]["GET /v1/organizations/plugins"]
        ["requests"]
        .as_u64()
        .unwrap_or(0);
    let t = Instant::now();
    let again = env
        .app
        .publish(&hub, None, Deadline::after(Duration::from_secs(25)))
        .await
        .unwrap();
    let nochange_time = t.elapsed();
    let writes2 = env.enterprise_writes().await;
    let lists2 = env.sim_get("/_sim/state").await["routes"]["GET /v1/organizations/plugins"]
        ["requests"]
        .as_u64()
        .unwrap_or(0);

    println!("enterprise-publish-bench: {n} skills × 2 RBAC groups, simulator latency {LATENCY_MS} ms/call, limits {writes_per_minute} writes and {reads_per_minute} reads a minute (the documented 60/300 × {speed})");
    println!(
        "  full publish        {:>8.2} s   {} created, {} failed, {} writes sent",
        full_time.as_secs_f64(),
        full.targets[0].created.len(),
        full.targets[0].failed.len(),
        writes1 - writes0
    );
    println!(
        "  report's ETA        {:>8} s   ({} writes planned at {}/min; ETA ÷ actual {:.3})",
        eta.seconds,
        eta.writes_planned,
        eta.writes_per_minute,
        eta.seconds as f64 / full_time.as_secs_f64()
    );
    println!("  write-limit floor   {floor:>8.2} s   (writes ÷ limit)");
    println!(
        "  ratio to floor      {:>8.3}     (target ≤ 1.15)",
        full_time.as_secs_f64() / floor
    );
    println!(
        "  no-change publish   {:>8.2} s   in one 25 s request: complete {}, {} writes, {} settings read, {} plugin-list pages, {} unchanged (target: 0 writes)",
        nochange_time.as_secs_f64(),
        again.complete,
        writes2 - writes1,
        env.settings_reads().await - reads1,
        lists2 - lists1,
        again.targets[0].unchanged.len()
    );
}
