//! `fleet-bench [tenants] [latency_ms] [dispatch_tenants]`: the fan-out end to end on moto's SQS and the
//! simulator, with the deployed defaults (batches of 10, `WorkerMaxConcurrency` = 50 invocations at once,
//! a 60 s worker timeout): the time until every tenant has been polled once, each item's cost, items per
//! second per concurrent worker; the same fleet with one org answering in 10 s (the noisy neighbour); and
//! the dispatcher's own cost at `dispatch_tenants` connected tenants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use claresia_aws::LedgerEntry;
use claresia_domain::{AdminKey, TenantSlug};
use claresia_tests::fanout::{now_unix, Fanout};
use claresia_tests::TestEnv;
use futures::stream::{self, StreamExt};
use serde_json::json;

/// The template's `WorkerMaxConcurrency` default.
const WORKER_CONCURRENCY: usize = 50;
/// Tenants of the light fleet that measures one item's cost.
const LIGHT: usize = 50;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tenants: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(150);
    let dispatch_tenants: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    // Client-side pacing is per sandbox (ANTHROPIC_MAX_RPS per worker instance); here every "invocation"
    // shares one process, so it is off and each org's own latency is what an item waits on.
    let env = TestEnv::start_with(|c| c.anthropic_max_rps = 0.0).await;

    // The first tenant connects through the API; the others are seeded from its records (moto copies a
    // whole table on every transaction, so a thousand connects would measure moto, not the fan-out).
    let t = Instant::now();
    let first = tenant(&env, 0, None).await;
    let model = connection_item(&env, &first.0).await;
    let mut orgs = vec![first];
    let seed = |range: std::ops::Range<usize>| {
        stream::iter(range)
            .map(|i| tenant(&env, i, Some(&model)))
            .buffer_unordered(8)
            .collect::<Vec<_>>()
    };
    // A light fleet first, so one item's cost is measured where moto is not the bottleneck.
    let light = LIGHT.min(tenants);
    orgs.extend(seed(1..light).await);
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": latency_ms}),
    )
    .await;
    let mut fanout = env.fanout().await;
    fanout.polls.max_concurrency = WORKER_CONCURRENCY;
    println!("fleet-bench: {tenants} tenants, one pending event each, {latency_ms} ms per Anthropic call, moto SQS + simulator on loopback");
    println!("  (batches of 10, {WORKER_CONCURRENCY} invocations at once; each line is printed as its run ends)");
    run(&env, &fanout, &orgs, None).await;
    let unloaded = run(&env, &fanout, &orgs, None).await;
    unloaded.print(
        &format!("{LIGHT} tenants (moto not saturated), warm"),
        LIGHT,
    );
    orgs.extend(seed(light..tenants).await);
    println!(
        "  setup of {tenants} tenants: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cold = run(&env, &fanout, &orgs, None).await;
    cold.print("first minute (cold: keys read)", tenants);
    let warm = run(&env, &fanout, &orgs, None).await;
    warm.print("next minute (warm)", tenants);
    let slow = &orgs[tenants / 2];
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{}", slow.1),
        json!({"latency_ms": 10_000}),
    )
    .await;
    let noisy = run(&env, &fanout, &orgs, Some(&slow.0)).await;
    noisy.print(&format!("one org at 10 s per call ({})", slow.0), tenants);
    let others = noisy.all_polled_but_slow;
    println!(
        "  noisy neighbour: every other tenant polled after {others:.2} s vs {:.2} s without it: {:+.2} s; one item takes {:.3} s (p50), {:.3} s (p99)",
        warm.all_polled,
        others - warm.all_polled,
        warm.item_p(0.5),
        warm.item_p(0.99),
    );
    println!(
        "  the slow org's item: {:.1} s (its own slot; outcome {:?})",
        noisy.slow_item.map_or(0.0, |s| s.1),
        noisy.slow_item.map(|s| s.0).unwrap_or("-")
    );

    dispatcher_cost(&env, &fanout, &orgs[0].0, dispatch_tenants).await;
}

/// One org, one key, one connected tenant with a published skill in its ledger. The first connects
/// through the API; the others get their secret from the key store and a copy of the first one's
/// connection item, with their own tenant, org and key.
async fn tenant(
    env: &TestEnv,
    i: usize,
    model: Option<&HashMap<String, AttributeValue>>,
) -> (String, String, String) {
    let slug = format!("fleet{i:04}");
    let (org_id, key) = env.sim_org(&format!("Fleet {i}")).await;
    let t = TenantSlug::parse(&slug).unwrap();
    match model {
        None => {
            let (s, b) = env.connect(&slug, &key).await;
            assert_eq!(s, 201, "{b}");
        }
        Some(model) => {
            let admin = AdminKey::parse(&key).unwrap();
            let version = env.app.keys.put(&t, &admin).await.unwrap();
            let mut item = model.clone();
            let text = |v: &str| AttributeValue::S(v.to_owned());
            item.insert("pk".into(), text(&format!("TENANT#{slug}")));
            item.insert("gsi1sk".into(), text(&slug));
            item.insert("tenant".into(), text(&slug));
            item.insert("org_id".into(), text(&org_id));
            item.insert("org_name".into(), text(&format!("Fleet {i}")));
            item.insert(
                "key_fingerprint".into(),
                text(&admin.fingerprint().to_string()),
            );
            item.insert("secret_version_id".into(), text(&version));
            env.dynamo()
                .put_item()
                .table_name(&env.app.config.hub_table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
    }
    let name = format!("claresia-{slug}-fleet");
    env.app
        .hub
        .put_ledger(
            &t,
            &LedgerEntry {
                name: name.clone(),
                target: t.clone(),
                skill_id: "fleet".into(),
                remote_id: "skill_x".into(),
                removed_at: None,
                content_hash: None,
                claimed_at: None,
                applied_access: None,
            },
        )
        .await
        .unwrap();
    (slug, org_id, name)
}

/// A tenant's connection item as stored.
async fn connection_item(env: &TestEnv, slug: &str) -> HashMap<String, AttributeValue> {
    env.dynamo()
        .get_item()
        .table_name(&env.app.config.hub_table)
        .key("pk", AttributeValue::S(format!("TENANT#{slug}")))
        .key("sk", AttributeValue::S("CONNECTION".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

struct Run {
    dispatch: f64,
    all_polled: f64,
    all_polled_but_slow: f64,
    items: Vec<f64>,
    ok: usize,
    /// Tenants whose item ran (fewer than the fleet when the dispatcher's budget ended first).
    ran: usize,
    /// Items delivered again (after a visibility timeout): no-ops.
    copies: usize,
    slow_item: Option<(&'static str, f64)>,
}

impl Run {
    fn item_p(&self, q: f64) -> f64 {
        let mut v = self.items.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 * q).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    }

    fn print(&self, name: &str, tenants: usize) {
        let tenants = self.ran.min(tenants);
        let per_worker = tenants as f64 / self.all_polled / WORKER_CONCURRENCY as f64;
        println!(
            "  {name:<44} dispatch {:.2} s, {tenants} tenants polled after {:>6.2} s ({} ok, {} copies delivered again); item p50 {:.3} s p99 {:.3} s; {:.2} items/s per concurrent worker ({:.1} tenants/s)",
            self.dispatch,
            self.all_polled,
            self.ok,
            self.copies,
            self.item_p(0.5),
            self.item_p(0.99),
            per_worker,
            tenants as f64 / self.all_polled,
        );
    }
}

/// An item: tenant, outcome, finish (seconds after the dispatch began), its own time.
type Finish = (String, String, f64, f64);

/// One tick: a pending event per tenant, the dispatch, and the workers until the queue is empty; each
/// item's finish time is the start of its batch plus its own time.
async fn run(
    env: &TestEnv,
    fanout: &Fanout,
    orgs: &[(String, String, String)],
    slow: Option<&str>,
) -> Run {
    stream::iter(orgs)
        .map(|(_, org_id, name)| async move {
            env.sim_send(
                "POST",
                &format!("/_sim/orgs/{org_id}/audit_events"),
                json!({"invoke": {"skill_name": name, "count": 1}}),
            )
            .await;
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let t0 = Instant::now();
    // A tick scheduled after every earlier poll (a poll since an item's scheduled time supersedes it).
    fanout.dispatcher.dispatch(now_unix() + 1).await.unwrap();
    let dispatch = t0.elapsed().as_secs_f64();
    let finishes: Arc<Mutex<Vec<Finish>>> = Arc::default();
    let handler = {
        let app = env.app.clone();
        let finishes = finishes.clone();
        move |event, deadline_ms| {
            let (app, finishes) = (app.clone(), finishes.clone());
            async move {
                let start = t0.elapsed().as_secs_f64();
                let batch = app.handle_work(event, deadline_ms).await;
                let mut f = finishes.lock().unwrap();
                for i in &batch.items {
                    f.push((
                        i.tenant.clone().unwrap_or_default(),
                        i.outcome.as_str().to_owned(),
                        start + i.seconds,
                        i.seconds,
                    ));
                }
                batch
            }
        }
    };
    fanout.polls.drain(&handler).await.unwrap();
    let all = finishes.lock().unwrap().clone();
    // Each tenant's first item (SQS delivers at least once: a copy comes back busy or superseded).
    let mut first: HashMap<String, Finish> = HashMap::new();
    for x in &all {
        let e = first.entry(x.0.clone()).or_insert_with(|| x.clone());
        if x.2 < e.2 {
            *e = x.clone();
        }
    }
    if first.len() < orgs.len() {
        // The dispatcher's budget ended before it had enqueued every tenant (on moto, at this size): the
        // next minute's dispatch puts the rest first. Reported, not hidden.
        println!(
            "  ! {} of {} tenants were enqueued and polled this minute (dispatch took {dispatch:.1} s)",
            first.len(),
            orgs.len()
        );
    }
    let max = |skip: Option<&str>| {
        first
            .values()
            .filter(|x| Some(x.0.as_str()) != skip)
            .map(|x| x.2)
            .fold(0.0, f64::max)
    };
    Run {
        dispatch,
        all_polled: max(None),
        all_polled_but_slow: max(slow),
        items: first.values().map(|x| x.3).collect(),
        ok: first.values().filter(|x| x.1 == "ok").count(),
        ran: first.len(),
        copies: all.len() - first.len(),
        slow_item: slow
            .and_then(|s| first.get(s))
            .map(|x| (if x.1 == "ok" { "ok" } else { "not ok" }, x.3)),
    }
}

/// The dispatcher alone at `n` connected tenants (copies of one real connection record), its items then
/// purged: the time to read the tenants and their poll items and to enqueue them.
async fn dispatcher_cost(env: &TestEnv, fanout: &Fanout, model: &str, n: usize) {
    let dynamo = env.dynamo();
    let table = env.app.config.hub_table.clone();
    let item = connection_item(env, model).await;
    let t = Instant::now();
    let writes: Vec<WriteRequest> = (0..n)
        .map(|i| {
            let slug = format!("disp{i:05}");
            let mut it = item.clone();
            it.insert("pk".into(), AttributeValue::S(format!("TENANT#{slug}")));
            it.insert("gsi1sk".into(), AttributeValue::S(slug.clone()));
            it.insert("tenant".into(), AttributeValue::S(slug));
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(it)).build().unwrap())
                .build()
        })
        .collect();
    stream::iter(writes.chunks(25).map(|c| {
        let (dynamo, table) = (dynamo.clone(), table.clone());
        let c = c.to_vec();
        async move {
            dynamo
                .batch_write_item()
                .request_items(table, c)
                .send()
                .await
                .unwrap();
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let seeded = t.elapsed();
    let mut times = Vec::new();
    for round in 0..3 {
        let t = Instant::now();
        let r = fanout
            .dispatcher
            .dispatch(now_unix() + 600 + round * 60)
            .await
            .unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert!(r.polls_enqueued >= n);
        fanout
            .polls
            .queue
            .client()
            .purge_queue()
            .queue_url(fanout.polls.queue.url())
            .send()
            .await
            .unwrap();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[1];
    let total = env.app.hub.live_connections().await.unwrap().len();
    println!(
        "  dispatcher at {total} connected tenants (seeded in {:.1} s): {median:.2} s median of 3 (of its 55 s); {:.0} µs per tenant → about {:.0} s at 100,000",
        seeded.as_secs_f64(),
        median / total as f64 * 1e6,
        median / total as f64 * 100_000.0
    );
}
