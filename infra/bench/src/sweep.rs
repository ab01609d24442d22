//! `sweep-bench [hubs] [big_hub_skills]`: the sweep fan-out with many pending Hubs on moto's SQS and the
//! simulator (40 ms per call, 50 requests/s per org): one Hub fails for good (its org answers 500 to
//! everything), one has `big_hub_skills` skills to publish, each of the others one. Reports the minute
//! (dispatch + workers) in which each Hub's pending work finished: every other Hub must be done within 2.

use std::collections::BTreeMap;
use std::time::Instant;

use claresia_aws::Expect;
use claresia_domain::catalog::Archetype;
use claresia_domain::TenantSlug;
use claresia_tests::fanout::now_unix;
use claresia_tests::TestEnv;
use futures::stream::{self, StreamExt};
use serde_json::json;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let hubs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let big: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let env = TestEnv::start_with(|c| {
        c.publish_concurrency = 16;
        c.anthropic_max_rps = 50.0;
    })
    .await;
    let t = Instant::now();
    let made: Vec<(String, String)> = stream::iter(0..hubs)
        .map(|i| hub(&env, i, if i == 1 { big } else { 1 }))
        .buffer_unordered(8)
        .collect()
        .await;
    let setup = t.elapsed();
    let orgs: BTreeMap<String, String> = made.into_iter().collect();
    let failing = "sweep0000".to_owned();
    let large = "sweep0001".to_owned();
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{}", orgs[&failing]),
        json!({"fail_status": 500}),
    )
    .await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": 40}),
    )
    .await;
    let mut fanout = env.fanout().await;
    fanout.sweeps.max_concurrency = 50;
    fanout.polls.max_concurrency = 50;
    let mut done_in: BTreeMap<String, usize> = BTreeMap::new();
    let start = now_unix();
    let mut minutes = Vec::new();
    for minute in 1..=6 {
        let t = Instant::now();
        let m = fanout.minute(&env, start + 60 * minute as i64).await;
        let took = t.elapsed().as_secs_f64();
        for slug in orgs.keys() {
            let pending = env
                .app
                .hub
                .pending_token(&TenantSlug::parse(slug).unwrap())
                .await
                .unwrap();
            if pending.is_none() {
                done_in.entry(slug.clone()).or_insert(minute);
            }
        }
        let big_outcome = m.outcomes(&large).last().cloned().unwrap_or_default();
        let failing_outcome = m.outcomes(&failing).last().cloned().unwrap_or_default();
        minutes.push((
            minute,
            took,
            m.dispatch.sweeps_enqueued,
            big_outcome,
            failing_outcome,
        ));
        if done_in.len() >= hubs - 1 && done_in.contains_key(&large) {
            break;
        }
    }
    let others_done = orgs
        .keys()
        .filter(|s| **s != failing && **s != large)
        .map(|s| done_in.get(s).copied().unwrap_or(usize::MAX))
        .max()
        .unwrap_or(0);
    let retry = env
        .app
        .hub
        .pending_retry(&TenantSlug::parse(&failing).unwrap())
        .await
        .unwrap();
    println!("sweep-bench: {hubs} pending Hubs (one failing for good, one with {big} skills, the others 1), 40 ms per call, 50 req/s; setup {:.1} s", setup.as_secs_f64());
    for (minute, took, sweeps, big_o, fail_o) in &minutes {
        println!("  minute {minute}: {sweeps:>3} sweep items, {took:>5.1} s; the large Hub {big_o}, the failing Hub {fail_o}");
    }
    println!(
        "  every other Hub done in minute {} (target ≤ 2); the large Hub in minute {}; the failing Hub: {} attempt(s), backing off to {}",
        others_done,
        done_in.get(&large).map_or("-".to_owned(), |m| m.to_string()),
        retry.as_ref().map_or(0, |r| r.attempts),
        retry.as_ref().map_or("-".to_owned(), |r| r.next_attempt_at.to_string()),
    );
}

/// A Hub on its own org with `skills` skills granted to one group, its publish left pending.
async fn hub(env: &TestEnv, i: usize, skills: usize) -> (String, String) {
    let slug = format!("sweep{i:04}");
    let (org_id, key) = env.sim_org(&format!("Sweep {i}")).await;
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{org_id}/groups"),
        json!({"id": "grp_engineering", "name": "Engineering"}),
    )
    .await;
    let (s, b) = env.connect(&slug, &key).await;
    assert_eq!(s, 201, "{b}");
    let hub = TenantSlug::parse(&slug).unwrap();
    let ids = env.put_bench_skills(&hub, skills).await;
    let archetype = Archetype {
        skills: ids,
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
    env.app.hub.mark_pending(&hub, "bench").await.unwrap();
    (slug, org_id)
}
