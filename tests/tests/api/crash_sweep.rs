//! Crashes and Anthropic failures everywhere, with no hook in the product. The crash sweeps: a publish or a poll runs as a task while every
//! Anthropic call takes a few milliseconds, and the task is aborted — the function dies — after 0, δ, 2δ, …
//! until a run finishes on its own. The cut lands before and after each DynamoDB write and each Anthropic
//! call in turn. After each crash the crashed holder's lease lapses (its deadline passes), recovery runs as
//! the schedule would run it, and the result must be whole: Anthropic matches the catalog (a full reconcile
//! finds nothing to do), the ledger matches Anthropic, every emitted event is stored exactly once.
//! The failure matrix: each kind of failure (500, 529, 429 with and without `retry-after`, a timeout, a
//! dropped connection) on each Anthropic call a publish or a poll makes, then the same recovery and checks.

use claresia_aws::Expect;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use claresia_anthropic::Deadline;
use claresia_domain::TenantSlug;
use claresia_tests::*;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Between two crash points: short next to a simulated Anthropic call (15 ms), so every call and the
/// DynamoDB writes around it are cut before, during and after.
const STEP: Duration = Duration::from_millis(6);
/// The crash points: every STEP up to `n` steps, then one far past the end of any run (so the sweep
/// always reaches past the end, however slow the machine).
fn cuts(n: u32) -> impl Iterator<Item = Duration> {
    (0..n)
        .map(|k| STEP * k)
        .chain(std::iter::once(Duration::from_secs(10)))
}

/// The crashing run's budget: its lease lapses this long after it starts (slack 0 in these worlds).
const CRASH_BUDGET: Duration = Duration::from_millis(2500);

fn dainese() -> TenantSlug {
    TenantSlug::parse("dainese").unwrap()
}

async fn world() -> TestEnv {
    let env = TestEnv::start_with(|c| {
        c.poll_lease_slack = Duration::ZERO;
        c.request_budget = CRASH_BUDGET;
        // A timeout is an attempt slower than this (the matrix's timeout case holds a route for longer).
        c.anthropic_attempt_timeout = Duration::from_millis(400);
    })
    .await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.load_examples("dainese").await;
    env
}

/// Changes the catalog as the routes do (intent first), without their publish, so the next publish has
/// every kind of action: an update, a create, a delete, ACL changes.
async fn change_catalog(env: &TestEnv) {
    // As every catalog route does before it writes (so a crash right after still gets published).
    env.app.begin_change(&dainese()).await.unwrap();
    let hub = &env.app.hub;
    let mut ir = example("skill-incident-postmortem.json");
    ir["title"] = json!("Incident Postmortem v2");
    hub.put_skill(&dainese(), "incident-postmortem", &ir, &Expect::Any)
        .await
        .unwrap();
    let mut new = example("skill-standup-notes.json");
    new["id"] = json!("retro-notes");
    hub.put_skill(&dainese(), "retro-notes", &new, &Expect::Any)
        .await
        .unwrap();
    hub.delete_archetype::<Value>(&dainese(), "product-manager", &Expect::Any)
        .await
        .unwrap();
    hub.put_archetype(
        &dainese(),
        "oncall",
        &json!({"skills": ["incident-postmortem", "retro-notes"], "group_ids": ["grp_oncall"]}),
        &Expect::Any,
    )
    .await
    .unwrap();
}

/// Anthropic matches the catalog (a full reconcile writes nothing), nothing is left pending, and the
/// ledger's live entries are exactly our skills in Anthropic, under their remote ids.
async fn assert_whole(env: &TestEnv, case: &str) {
    let report = env
        .app
        .publish(&dainese(), None, Deadline::after(Duration::from_secs(20)))
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    for t in &report.targets {
        assert!(
            t.created.is_empty()
                && t.updated.is_empty()
                && t.deleted.is_empty()
                && t.failed.is_empty()
                && t.pending.is_empty(),
            "{case}: Anthropic did not match the catalog: {t:?}"
        );
    }
    let remote: BTreeMap<String, String> = env
        .sim_skills()
        .await
        .iter()
        .filter(|s| s["metadata"]["managed_by"] == "claresia")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let ledger: BTreeMap<String, String> = env
        .app
        .hub
        .ledger(&dainese())
        .await
        .unwrap()
        .into_values()
        .filter(|e| e.removed_at.is_none())
        .map(|e| (e.name, e.remote_id))
        .collect();
    assert_eq!(ledger, remote, "{case}: the ledger must match Anthropic");
    let mut names: Vec<&String> = remote.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "claresia-dainese-incident-postmortem",
            "claresia-dainese-retro-notes",
            "claresia-dainese-standup-notes"
        ],
        "{case}"
    );
}

/// Waits for every case: how many were cut (`false`) and how many finished before their cut.
async fn tally(mut cases: tokio::task::JoinSet<bool>) -> (usize, usize) {
    let (mut crashed, mut finished) = (0, 0);
    while let Some(r) = cases.join_next().await {
        if r.unwrap() {
            finished += 1;
        } else {
            crashed += 1;
        }
    }
    (crashed, finished)
}

/// Runs `work` as a task and aborts it after `after`; `true` if it finished first.
async fn crash_after<F>(work: F, after: Duration) -> bool
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(work);
    tokio::time::sleep(after).await;
    let finished = task.is_finished();
    task.abort();
    let _ = task.await;
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_crashed_anywhere_converges() {
    let limit = Arc::new(Semaphore::new(6));
    let mut cases = tokio::task::JoinSet::new();
    // Crash points until one run finishes before its cut (found by the cases themselves).
    for cut in cuts(80) {
        let limit = limit.clone();
        cases.spawn(async move {
            let _p = limit.acquire_owned().await.unwrap();
            let env = world().await;
            change_catalog(&env).await;
            env.sim_send(
                "PUT",
                "/_sim/faults",
                json!({"route": "*", "latency_ms": 15}),
            )
            .await;
            let app = env.app.clone();
            let finished = crash_after(
                async move {
                    let _ = app
                        .publish(&dainese(), None, Deadline::after(CRASH_BUDGET))
                        .await;
                },
                cut,
            )
            .await;
            env.sim_send("DELETE", "/_sim/faults", json!({})).await;
            // Recovery as the schedule runs it: minute after minute the crashed run's lease has lapsed
            // (a write it had in flight may still land after the cut) and the sweep finishes the change
            // its marker names; then the check's reconcile.
            sweep_until_done(&env).await;
            assert_whole(&env, &format!("crash after {:?}", cut)).await;
            finished
        });
    }
    let started = Instant::now();
    let (crashed, finished) = tally(cases).await;
    println!(
        "publish crash sweep: {crashed} runs cut at {:?} steps, {finished} finished uncut, all converged, in {:?}",
        STEP,
        started.elapsed()
    );
    assert!(
        crashed >= 20,
        "the sweep must cut the publish at many points: {crashed}"
    );
    assert!(
        finished >= 1,
        "the sweep must reach past the end of a publish"
    );
}

/// A connected tenant with its catalog published and 60 runs waiting in the audit log (3 pages of 20);
/// answers the runs' event ids.
async fn poll_world() -> (TestEnv, Vec<String>) {
    let env = TestEnv::start_with(|c| {
        c.poll_lease_slack = Duration::ZERO;
        c.poll_page_limit = 20;
        c.anthropic_attempt_timeout = Duration::from_millis(400);
    })
    .await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.load_examples("dainese").await;
    let out = env
        .sim_send(
            "POST",
            &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events"),
            json!({"invoke": {"skill_name": "claresia-dainese-prd-review", "count": 60}}),
        )
        .await;
    let ids = out["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (env, ids)
}

/// event_id → how many items hold it (quarantine excluded).
async fn stored(env: &TestEnv) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for item in env.app.telemetry.scan_all().await.unwrap() {
        if let (Some(AttributeValue::S(t)), Some(AttributeValue::S(id))) =
            (item.get("tenant"), item.get("event_id"))
        {
            if !t.starts_with("quarantine:") {
                *m.entry(id.clone()).or_insert(0) += 1;
            }
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_crashed_anywhere_loses_and_doubles_nothing() {
    let limit = Arc::new(Semaphore::new(6));
    let mut cases = tokio::task::JoinSet::new();
    for cut in cuts(60) {
        let limit = limit.clone();
        cases.spawn(async move {
            let _p = limit.acquire_owned().await.unwrap();
            let (env, ids) = poll_world().await;
            env.sim_send(
                "PUT",
                "/_sim/faults",
                json!({"route": "*", "latency_ms": 15}),
            )
            .await;
            let app = env.app.clone();
            let finished = crash_after(
                async move {
                    let _ = app.poll_all(Deadline::after(CRASH_BUDGET)).await;
                },
                cut,
            )
            .await;
            env.sim_send("DELETE", "/_sim/faults", json!({})).await;
            // The next scheduled ticks, once the crashed run's lease has lapsed.
            tokio::time::sleep(CRASH_BUDGET).await;
            for _ in 0..3 {
                env.app
                    .poll_all(Deadline::after(Duration::from_secs(20)))
                    .await
                    .unwrap();
            }
            let stored = stored(&env).await;
            let want: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
            assert_eq!(stored, want, "crash after {:?}", cut);
            finished
        });
    }
    let (crashed, finished) = tally(cases).await;
    println!("poll crash sweep: {crashed} runs cut at {STEP:?} steps, {finished} finished uncut, every event stored once");
    assert!(
        crashed >= 20 && finished >= 1,
        "{crashed} cut, {finished} uncut"
    );
}

/// The same sweep over a catalog request through the real handler: wherever `PUT …/archetypes/…` dies —
/// before its catalog write, between it and its publish, or inside the publish — its pending marker was
/// written first, so the next sweep leaves Anthropic matching the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_request_crashed_anywhere_is_finished_by_the_sweep() {
    let limit = Arc::new(Semaphore::new(6));
    let mut cases = tokio::task::JoinSet::new();
    for cut in cuts(50) {
        let limit = limit.clone();
        cases.spawn(async move {
            let _p = limit.acquire_owned().await.unwrap();
            let env = Arc::new(world().await);
            env.sim_send("PUT", "/_sim/faults", json!({"route": "*", "latency_ms": 15}))
                .await;
            let request = {
                let env = env.clone();
                async move {
                    let body = json!({"skills": ["incident-postmortem", "standup-notes"], "group_ids": ["grp_oncall"]});
                    env.put_doc("dainese", "/archetypes/product-manager", &body).await
                }
            };
            let finished = crash_after(request, cut).await;
            env.sim_send("DELETE", "/_sim/faults", json!({})).await;
            // The schedule's sweeps until nothing is pending (the first may find the crashed request's
            // lease still held and leave the work to the next).
            sweep_until_done(&env).await;
            let report = env
                .app
                .publish(&dainese(), None, Deadline::after(Duration::from_secs(20)))
                .await
                .unwrap();
            let t = &report.targets[0];
            if !(t.created.is_empty() && t.updated.is_empty() && t.deleted.is_empty()) {
                let log: Vec<String> = env
                    .sim_requests()
                    .await
                    .iter()
                    .filter(|r| r["path"].as_str().unwrap_or("").contains("/skills"))
                    .map(|r| format!("{} {}", r["method"], r["path"]))
                    .collect();
                // What Anthropic was asked, and the ledger, say where the change was lost.
                panic!(
                    "crash after {cut:?}: Anthropic did not match the catalog: {t:?}\nrequests: {log:#?}\nledger: {:?}",
                    env.app.hub.ledger(&dainese()).await
                );
            }
            finished
        });
    }
    let (crashed, finished) = tally(cases).await;
    println!("catalog request crash sweep: {crashed} requests cut at {STEP:?} steps, {finished} finished uncut, all converged");
    assert!(
        crashed >= 10 && finished >= 1,
        "{crashed} cut, {finished} uncut"
    );
}

/// The failures, as simulator faults on one route.
fn failures(route: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "500",
            json!({"route": route, "fail": {"status": 500, "count": 1}}),
        ),
        (
            "529",
            json!({"route": route, "fail": {"status": 529, "count": 1}}),
        ),
        (
            "429 + retry-after",
            json!({"route": route, "rate_limit_rps": 1}),
        ),
        (
            "429 without retry-after",
            json!({"route": route, "spend_cap": 1}),
        ),
        ("timeout", json!({"route": route, "latency_ms": 1500})),
        (
            "dropped connection",
            json!({"route": route, "drop_connections": 1}),
        ),
    ]
}

/// Sweeps until nothing is pending (the schedule, minute after minute), bounded.
async fn sweep_until_done(env: &TestEnv) {
    for _ in 0..4 {
        if env
            .app
            .hub
            .pending_token(&dainese())
            .await
            .unwrap()
            .is_none()
        {
            return;
        }
        // A minute later, as the schedule's next item: the crashed run's lease has lapsed.
        env.lapse_publish_lease("dainese").await;
        env.app
            .sweep_pending(Deadline::after(Duration::from_secs(20)))
            .await
            .unwrap();
    }
    assert_eq!(env.app.hub.pending_token(&dainese()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_on_every_publish_call_converges() {
    let routes = [
        "GET /v1/organizations/{org_id}/skills",
        "POST /v1/organizations/{org_id}/skills",
        "PUT /v1/organizations/{org_id}/skills/{skill_id}",
        "PUT /v1/organizations/{org_id}/skills/{skill_id}/acl",
        "DELETE /v1/organizations/{org_id}/skills/{skill_id}",
    ];
    let limit = Arc::new(Semaphore::new(6));
    let mut cases = tokio::task::JoinSet::new();
    for route in routes {
        for (kind, fault) in failures(route) {
            let limit = limit.clone();
            cases.spawn(async move {
                let _p = limit.acquire_owned().await.unwrap();
                let env = world().await;
                change_catalog(&env).await;
                env.sim_send("PUT", "/_sim/faults", fault).await;
                let _ = env
                    .app
                    .publish(&dainese(), None, Deadline::after(CRASH_BUDGET))
                    .await;
                env.sim_send("DELETE", "/_sim/faults", json!({})).await;
                sweep_until_done(&env).await;
                assert_whole(&env, &format!("{kind} on {route}")).await;
            });
        }
    }
    let mut n = 0;
    while let Some(r) = cases.join_next().await {
        r.unwrap();
        n += 1;
    }
    println!(
        "publish failure matrix: {} calls × 6 failures = {n} cases, all converged",
        routes.len()
    );
    assert_eq!(n, routes.len() * 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_on_the_audit_call_loses_and_doubles_nothing() {
    let route = "GET /v1/organizations/{org_id}/audit_logs";
    let limit = Arc::new(Semaphore::new(6));
    let mut cases = tokio::task::JoinSet::new();
    for (kind, fault) in failures(route) {
        let limit = limit.clone();
        cases.spawn(async move {
            let _p = limit.acquire_owned().await.unwrap();
            let (env, ids) = poll_world().await;
            env.sim_send("PUT", "/_sim/faults", fault).await;
            let first = env
                .app
                .poll_all(Deadline::after(CRASH_BUDGET))
                .await
                .unwrap();
            env.sim_send("DELETE", "/_sim/faults", json!({})).await;
            for _ in 0..3 {
                env.app
                    .poll_all(Deadline::after(Duration::from_secs(20)))
                    .await
                    .unwrap();
            }
            let stored = stored(&env).await;
            let want: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
            assert_eq!(stored, want, "{kind}: first tick {:?}", first.results);
        });
    }
    let mut n = 0;
    while let Some(r) = cases.join_next().await {
        r.unwrap();
        n += 1;
    }
    println!("poll failure matrix: 1 call × 6 failures = {n} cases, every event stored once");
    assert_eq!(n, 6);
}
