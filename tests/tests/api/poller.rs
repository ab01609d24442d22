//! Capability 4 end to end: the audit poller against the simulator and moto, exactly-once under crashes,
//! redelivery, concurrent runs and storms; and the telemetry API.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use claresia_anthropic::Deadline;
use claresia_domain::TenantSlug;
use claresia_tests::*;
use serde_json::{json, Value};

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

async fn env_with_catalog(page_limit: u32) -> TestEnv {
    let env = TestEnv::start_with(|c| c.poll_page_limit = page_limit).await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.load_examples("dainese").await;
    env
}

async fn emit(env: &TestEnv, invoke: Value) -> Vec<String> {
    let out = env
        .sim_send(
            "POST",
            &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events"),
            json!({"invoke": invoke}),
        )
        .await;
    out["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
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

fn assert_exactly(stored: &BTreeMap<String, usize>, expected: &[String]) {
    let want: BTreeMap<String, usize> = expected.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(
        stored, &want,
        "telemetry must hold each simulator event exactly once"
    );
}

/// Lets a run's poll lease on dainese lapse, as time would.
async fn expire_lease(env: &TestEnv) {
    env.dynamo()
        .update_item()
        .table_name(&env.app.config.hub_table)
        .key("pk", AttributeValue::S("TENANT#dainese".into()))
        .key("sk", AttributeValue::S("POLL_LEASE".into()))
        .update_expression("REMOVE lease_owner, lease_until")
        .send()
        .await
        .unwrap();
}

/// dainese's connection status, as its portal reads it.
async fn dainese_status(env: &TestEnv) -> Value {
    let (status, body) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn cursor_of(env: &TestEnv) -> Option<String> {
    env.app
        .hub
        .poll_status(&TenantSlug::parse("dainese").unwrap())
        .await
        .unwrap()
        .and_then(|s| s.cursor)
}

#[tokio::test]
async fn events_are_normalized_routed_and_served_newest_first() {
    let env = env_with_catalog(1000).await;
    env.register_sub_tenant("dainese", "dainese-eng").await;
    env.put_doc(
        "dainese",
        "/workspaces",
        &json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"}]}),
    )
    .await;
    let (s, b) = env
        .put_doc("dainese", "/archetypes/eng", &json!({"skills": ["incident-postmortem"], "group_ids": ["grp_eng"], "sub_tenant": "dainese-eng"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let main = emit(&env, json!({"skill_name": "claresia-dainese-incident-postmortem", "count": 3, "workspace_id": WS_CORPORATE, "record_id": "rec_abc123"})).await;
    let failed = emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 1, "workspace_id": WS_CORPORATE, "failed": true, "api_actor": true})).await;
    let sub = emit(&env, json!({"skill_name": "claresia-dainese-eng-incident-postmortem", "count": 2, "workspace_id": WS_ENGINEERING})).await;
    emit(
        &env,
        json!({"skill_name": "claresia-dainese-handmade", "count": 1}),
    )
    .await;
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events"),
        json!({"events": [
            {"type": "skill.invoked", "created_at": "not a time", "skill": {"name": "claresia-dainese-prd-review"}},
            {"type": "skill.created", "skill": {"name": "claresia-dainese-prd-review"}}
        ]}),
    )
    .await;

    let summary = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(summary.ok, 1, "{summary:?}");
    assert_eq!(summary.events_ingested, 6);
    // The unknown type never arrives: we ask Anthropic for skill.invoked,skill.failed only.
    assert_eq!(summary.events_skipped, 1, "the foreign skill");
    assert_eq!(summary.events_quarantined, 1);
    let all: Vec<String> = main.iter().chain(&failed).chain(&sub).cloned().collect();
    assert_exactly(&stored(&env).await, &all);

    let (s, t) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/telemetry",
            None,
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let events = t["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["occurred_at"].as_str() >= w[1]["occurred_at"].as_str()),
        "newest first"
    );
    let ok = events.iter().find(|e| e["event_id"] == main[0]).unwrap();
    assert_eq!(ok["skill_id"], "incident-postmortem");
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["cost_usd"], 0.04);
    assert_eq!(
        ok["record_url"],
        "https://hub.dainese.claresia.com/records/rec_abc123"
    );
    assert!(ok["actor_id"].as_str().unwrap().starts_with("user_"));
    let bad = events.iter().find(|e| e["event_id"] == failed[0]).unwrap();
    assert_eq!(
        (bad["status"].as_str(), bad["error_type"].as_str()),
        (Some("failed"), Some("tool_error"))
    );
    assert!(bad.get("cost_usd").is_none(), "absent stays absent");
    assert_eq!(bad["actor_id"], "apikey_01SimulatedKey");
    assert!(
        !t.to_string().contains("@example.com"),
        "no e-mail addresses"
    );

    // The sub-tenant's events are its own, with the skill id from the ledger, not from a prefix.
    let (_, t) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese-eng/telemetry",
            None,
        )
        .await;
    let sub_events = t["events"].as_array().unwrap();
    assert_eq!(sub_events.len(), 2);
    assert!(sub_events
        .iter()
        .all(|e| e["skill_id"] == "incident-postmortem" && e["tenant"] == "dainese-eng"));

    // The status shows the last poll.
    let st = dainese_status(&env).await;
    assert_eq!(st["last_poll"]["events_ingested"], 6);
    assert_eq!(st["last_poll"]["events_quarantined"], 1);
    assert!(st["last_poll"]["cursor"]
        .as_str()
        .unwrap()
        .starts_with("auditevt_"));
    assert!(st["last_poll"]["lag_seconds"].as_f64().unwrap() < 60.0);

    // Nothing new: nothing written twice.
    let again = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(again.events_ingested, 0);
    assert_exactly(&stored(&env).await, &all);
}

#[tokio::test]
async fn routing_changes_between_ticks_are_picked_up_by_the_next_tick() {
    let env = env_with_catalog(1000).await;
    let tenant = |t: &str| TenantSlug::parse(t).unwrap();
    let before = emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 1, "workspace_id": WS_ENGINEERING})).await;
    emit(&env, json!({"skill_name": "claresia-dainese-eng-incident-postmortem", "count": 1, "workspace_id": WS_ENGINEERING})).await;
    let first = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(
        (first.events_ingested, first.events_skipped),
        (1, 1),
        "not published yet: not ours"
    );

    // The warm sandbox has this tenant's routing in memory; a new mapping and a new skill change it.
    env.register_sub_tenant("dainese", "dainese-eng").await;
    let (s, b) = env
        .put_doc(
            "dainese",
            "/workspaces",
            &json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .put_doc("dainese", "/archetypes/eng", &json!({"skills": ["incident-postmortem"], "group_ids": ["grp_eng"], "sub_tenant": "dainese-eng"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let mapped = emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 1, "workspace_id": WS_ENGINEERING})).await;
    let new_skill = emit(&env, json!({"skill_name": "claresia-dainese-eng-incident-postmortem", "count": 2, "workspace_id": WS_ENGINEERING})).await;
    let second = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(
        (second.events_ingested, second.events_skipped),
        (3, 0),
        "{second:?}"
    );

    let (hub_events, _) = env
        .app
        .telemetry
        .events(&tenant("dainese"), None, 50, None)
        .await
        .unwrap();
    let ids = |v: &[claresia_domain::telemetry::TelemetryEvent]| -> Vec<String> {
        let mut ids: Vec<String> = v.iter().map(|e| e.event_id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&hub_events), before, "before the mapping: the hub's");
    let (sub_events, _) = env
        .app
        .telemetry
        .events(&tenant("dainese-eng"), None, 50, None)
        .await
        .unwrap();
    let mut want: Vec<String> = mapped.into_iter().chain(new_skill).collect();
    want.sort();
    assert_eq!(
        ids(&sub_events),
        want,
        "after it: the sub-tenant's, the new skill included"
    );
}

#[tokio::test]
async fn a_crash_after_every_kth_write_loses_nothing_and_doubles_nothing() {
    // 3 pages per run (50 events a page, 25 per batch): the tick lease, 2 batches + the cursor on pages 1
    // and 2, 2 batches on page 3 whose cursor move records the status, the lease back. The run dies after
    // its k-th write for every k (nothing it does afterwards reaches the store), until a run gets through.
    let env = env_with_catalog(50).await;
    let mut all = Vec::new();
    let mut cuts = 0;
    for k in 0.. {
        assert!(k < 40, "a run never got through its writes");
        all.extend(
            emit(
                &env,
                json!({"skill_name": "claresia-dainese-prd-review", "count": 150}),
            )
            .await,
        );
        env.cutoff.arm(k);
        let run = env
            .app
            .poll_tenant(TenantSlug::parse("dainese").unwrap(), deadline())
            .await;
        if !env.cutoff.disarm() {
            assert_eq!(run.outcome, "ok", "k={k}: {run:?}");
            assert_exactly(&stored(&env).await, &all);
            break;
        }
        // (A run cut only at its lease release has done its work: it may say "ok".)
        cuts += 1;
        expire_lease(&env).await;
        let ok = env
            .app
            .poll_tenant(TenantSlug::parse("dainese").unwrap(), deadline())
            .await;
        assert_eq!(ok.outcome, "ok", "k={k}: {ok:?}");
        assert_exactly(&stored(&env).await, &all);
    }
    assert!(cuts >= 10, "only {cuts} write boundaries were cut");
}

#[tokio::test]
async fn redelivered_events_are_stored_once() {
    let env = env_with_catalog(1000).await;
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 10}),
    )
    .await;
    env.app.poll_all(deadline()).await.unwrap();
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events/redeliver"),
        json!({"ids": ids[..5]}),
    )
    .await;
    let more = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 2}),
    )
    .await;
    // Redelivered twice within the same page too.
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events/redeliver"),
        json!({"ids": [ids[0].clone()]}),
    )
    .await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(s.ok, 1, "{s:?}");
    let all: Vec<String> = ids.into_iter().chain(more).collect();
    assert_exactly(&stored(&env).await, &all);
}

#[tokio::test]
async fn two_runs_at_once_store_each_event_once_and_end_on_the_last_event() {
    let env = env_with_catalog(20).await;
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 200}),
    )
    .await;
    // Slow pages keep the first run busy for ≥ 2 s (10 pages of 20).
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/{org_id}/audit_logs", "latency_ms": 200}),
    )
    .await;
    let (a, (b, c)) = tokio::join!(env.app.poll_all(deadline()), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A duplicated item finds the tenant's poll lease held and does nothing.
        let b = env.app.poll_all(deadline()).await.unwrap();
        // A third run once the first's lease has lapsed (the first is paused, say): both now poll the
        // same tenant, and only the conditional cursor moves keep them apart.
        expire_lease(&env).await;
        let c = env.app.poll_all(deadline()).await.unwrap();
        (b, c)
    });
    let a = a.unwrap();
    assert_eq!((b.tenants, b.busy), (1, 1), "{b:?}");
    assert_eq!(b.events_ingested, 0);
    assert_eq!(
        a.busy + c.busy,
        1,
        "exactly one of the two runs found the cursor moved under it and stopped: {a:?} {c:?}"
    );
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    // Whatever the interleaving, one more tick finishes the job.
    env.app.poll_all(deadline()).await.unwrap();
    assert_exactly(&stored(&env).await, &ids);
    assert_eq!(
        cursor_of(&env).await.as_deref(),
        ids.last().map(String::as_str)
    );
}

#[tokio::test]
async fn storms_leave_the_cursor_and_everything_arrives_after() {
    let env = env_with_catalog(1000).await;
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 30}),
    )
    .await;
    let route = "GET /v1/organizations/{org_id}/audit_logs";
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": route, "fail": {"status": 529, "count": 50}}),
    )
    .await;
    let s = env
        .app
        .poll_all(Deadline::after(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(s.failed, 1, "{s:?}");
    assert!(stored(&env).await.is_empty());
    let st = dainese_status(&env).await;
    assert!(
        st["last_poll"]["error"].as_str().unwrap().contains("529"),
        "{st}"
    );
    assert!(
        st["last_poll"]["cursor"].is_null(),
        "the cursor did not move"
    );
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": route, "rate_limit_rps": 1.0}),
    )
    .await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(s.ok, 1, "{s:?}");
    assert_exactly(&stored(&env).await, &ids);
}

#[tokio::test]
async fn an_expired_cursor_restarts_from_the_oldest_event_and_records_the_gap() {
    let env = env_with_catalog(1000).await;
    let first = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 3}),
    )
    .await;
    env.app.poll_all(deadline()).await.unwrap();
    let later = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 2}),
    )
    .await;
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events/expire"),
        json!({"through_id": first[2]}),
    )
    .await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(s.ok, 1, "{s:?}");
    let all: Vec<String> = first.into_iter().chain(later).collect();
    assert_exactly(&stored(&env).await, &all);
    let st = dainese_status(&env).await;
    assert!(
        st["last_poll"]["gap"].as_str().unwrap().contains("expired"),
        "{st}"
    );
}

#[tokio::test]
async fn a_revoked_key_needs_attention_and_does_not_hold_up_other_tenants() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": GOOD_KEY}))
        .await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    let by: BTreeMap<&str, &str> = s
        .results
        .iter()
        .map(|r| (r.tenant.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(by.get("dainese"), Some(&"unauthorized"));
    assert_eq!(by.get("retention"), Some(&"ok"));
    let st = dainese_status(&env).await;
    assert_eq!(st["state"], "needs_attention");
    assert!(st["state_reason"].as_str().unwrap().contains("401"));
    // Not polled again until an admin fixes the key.
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert!(s
        .results
        .iter()
        .any(|r| r.tenant == "dainese" && r.outcome == "skipped"));
}

#[tokio::test]
async fn telemetry_api_paginates_filters_and_validates() {
    let env = env_with_catalog(1000).await;
    emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 5}),
    )
    .await;
    env.app.poll_all(deadline()).await.unwrap();
    let (s, p1) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/telemetry?limit=2",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p1["events"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            &format!("/tenants/dainese/telemetry?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(p2["events"].as_array().unwrap().len(), 2);
    assert_ne!(p1["events"][0]["event_id"], p2["events"][0]["event_id"]);
    let (_, future) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/telemetry?since=2099-01-01T00%3A00%3A00Z",
            None,
        )
        .await;
    assert!(future["events"].as_array().unwrap().is_empty());
    for bad in [
        "since=yesterday",
        "limit=0",
        "limit=9999",
        "cursor=%%%",
        "sort=asc",
    ] {
        let (s, b) = env
            .call(
                As::Tenant("dainese"),
                "GET",
                &format!("/tenants/dainese/telemetry?{bad}"),
                None,
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}"
        );
    }
    assert_eq!(
        env.call(
            As::Tenant("acme"),
            "GET",
            "/tenants/dainese/telemetry",
            None
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn the_stored_key_is_cached_and_rotation_is_picked_up() {
    let env = env_with_catalog(1000).await;
    env.app.poll_all(deadline()).await.unwrap();
    env.app.poll_all(deadline()).await.unwrap();
    // Rotate: the cached old key keeps working until revoked; after a 401 the poller re-reads the secret.
    assert_eq!(env.connect("dainese", ROTATED_KEY).await.0, 200);
    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": GOOD_KEY}))
        .await;
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 1}),
    )
    .await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(s.ok, 1, "{s:?}");
    assert_exactly(&stored(&env).await, &ids);
    let used: Vec<String> = env
        .sim_requests()
        .await
        .into_iter()
        .filter(|r| r["route"] == "GET /v1/organizations/{org_id}/audit_logs")
        .map(|r| r["api_key_last4"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(used.last().map(String::as_str), Some("ROTA"));
}

#[tokio::test]
async fn a_cold_sandbox_reads_stored_keys_in_batches() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    let slug = |t: &str| TenantSlug::parse(t).unwrap();
    // 25 names: two batches of at most 20; a tenant never connected is simply absent.
    let mut asked = vec![slug("dainese"), slug("retention")];
    asked.extend((0..23).map(|i| slug(&format!("nobody{i:02}"))));
    let keys = env.app.keys.get_many(&asked).await.unwrap();
    assert_eq!(keys.len(), 2, "{:?}", keys.keys().collect::<Vec<_>>());
    assert_eq!(keys[&slug("dainese")].expose(), GOOD_KEY);
    assert_eq!(keys[&slug("retention")].expose(), NO_ZR_KEY);
    // The first tick (nothing cached yet) polls both with the batch-read keys.
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 2}),
    )
    .await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(s.ok, 2, "{s:?}");
    assert_exactly(&stored(&env).await, &ids);
}

/// Issue 11: one oversized event used to exceed DynamoDB's 400 KB item, fail the batch and stall the tenant
/// for ever behind it, with the status still showing the previous success. Now every field is bounded:
/// the event is stored with its message cut (and says so), an event with an absurd id is quarantined
/// with its raw text capped, and everything after them arrives.
#[tokio::test]
async fn an_oversized_event_is_bounded_not_a_stall() {
    let env = env_with_catalog(1000).await;
    let huge = "stack frame\n".repeat(40_000); // ≈ 480 KB
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events"),
        json!({"events": [
            {"type": "skill.failed", "workspace_id": WS_CORPORATE,
             "actor": {"type": "user_actor", "user_id": "user_1"},
             "skill": {"id": "skill_x", "name": "claresia-dainese-incident-postmortem"},
             "details": {"error": {"type": "tool_error", "message": huge}}},
            {"id": format!("auditevt_{}", "9".repeat(400)), "type": "skill.invoked",
             "skill": {"id": "skill_x", "name": "claresia-dainese-incident-postmortem"},
             "details": {"padding": "p".repeat(200_000)}}
        ]}),
    )
    .await;
    let after = emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 3, "workspace_id": WS_CORPORATE})).await;
    let tick = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(tick.failed, 0, "{:?}", tick.results);
    assert_eq!((tick.events_ingested, tick.events_quarantined), (4, 1));
    assert_eq!(
        cursor_of(&env).await.as_deref(),
        after.last().map(String::as_str)
    );

    let (_, page) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/telemetry?limit=10",
            None,
        )
        .await;
    let failed = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == "failed")
        .unwrap();
    let message = failed["error_message"].as_str().unwrap();
    assert!(
        message.len() <= 16 * 1024 && message.contains("…[truncated "),
        "{}",
        message.len()
    );

    let quarantined: Vec<_> = env
        .app
        .telemetry
        .scan_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| matches!(i.get("tenant"), Some(AttributeValue::S(t)) if t.starts_with("quarantine:")))
        .collect();
    assert_eq!(quarantined.len(), 1);
    let raw = match &quarantined[0]["raw"] {
        AttributeValue::S(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        raw.len() <= 64 * 1024 && raw.ends_with("bytes]"),
        "{}",
        raw.len()
    );

    let st = dainese_status(&env).await;
    assert_eq!(st["last_poll"]["error"], Value::Null, "{st}");
}

/// Issue 11: a poll that fails on any path records the failure on the tenant's status (it used to keep
/// showing the previous success with `error: null`).
#[tokio::test]
async fn every_failed_poll_records_its_error_on_the_status() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.app.poll_all(deadline()).await.unwrap().failed, 0);
    // The key vanishes (deleted by hand); a cold sandbox cannot read it.
    env.secrets()
        .delete_secret()
        .secret_id(env.secret_name("dainese"))
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let cold = claresia_api::App::new(env.app.config.clone(), &env.sdk).unwrap();
    let tick = cold.poll_all(deadline()).await.unwrap();
    assert_eq!(tick.failed, 1, "{:?}", tick.results);
    let status = env
        .app
        .hub
        .poll_status(&TenantSlug::parse("dainese").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not connected")),
        "{status:?}"
    );
    assert_ne!(status.last_poll_at, status.last_success_at);
}

/// Issue 11: a cursor that is not this query's `next_cursor` is a 400 naming `cursor` — it used to answer
/// 200 with an empty page (the portal believed it had everything) or, outside the `since` range, a 500.
#[tokio::test]
async fn a_telemetry_cursor_works_only_for_the_query_it_came_from() {
    let env = env_with_catalog(1000).await;
    env.register_sub_tenant("dainese", "dainese-eng").await;
    emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 5, "workspace_id": WS_CORPORATE})).await;
    env.app.poll_all(deadline()).await.unwrap();
    let get = |query: String| {
        let env = &env;
        async move {
            env.call(
                As::Tenant("dainese"),
                "GET",
                &format!("/tenants/{query}"),
                None,
            )
            .await
        }
    };
    let since = "since=2020-01-01T00%3A00%3A00Z";
    let (s, p1) = get(format!("dainese/telemetry?limit=2&{since}")).await;
    assert_eq!(s, 200, "{p1}");
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (s, p2) = get(format!(
        "dainese/telemetry?limit=10&{since}&cursor={cursor}"
    ))
    .await;
    assert_eq!((s, p2["events"].as_array().unwrap().len()), (200, 3));

    use base64::Engine;
    let forge = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for (query, why) in [
        (
            format!("dainese/telemetry?cursor={cursor}"),
            "another since",
        ),
        (
            format!("dainese-eng/telemetry?{since}&cursor={cursor}"),
            "another tenant",
        ),
        (
            format!("dainese/telemetry?cursor={}", forge(json!("x"))),
            "unreadable",
        ),
        (
            format!(
                "dainese/telemetry?cursor={}",
                forge(json!({"t": "dainese", "s": null, "k": "garbage", "u": "org#garbage"}))
            ),
            "not an event",
        ),
        (
            format!(
                "dainese/telemetry?{since}&cursor={}",
                forge(
                    json!({"t": "dainese", "s": "2020-01-01T00:00:00.000Z", "k": "2019-01-01T00:00:00.000Z#e"})
                )
            ),
            "outside since",
        ),
    ] {
        let (s, b) = get(query.clone()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{why}: {b}"
        );
        assert!(
            b["error"]["message"].as_str().unwrap().contains("cursor"),
            "{b}"
        );
    }
}

/// Issue 11: a ledger write lost after the skill was created (a crash, a failed write) used to make every
/// run of that skill "not ours" for good. The next publish re-derives the ledger from Anthropic.
#[tokio::test]
async fn a_lost_ledger_entry_is_restored_by_the_next_publish() {
    let env = env_with_catalog(1000).await;
    let name = "claresia-dainese-incident-postmortem";
    env.dynamo()
        .delete_item()
        .table_name(&env.app.config.hub_table)
        .key("pk", AttributeValue::S("TENANT#dainese".into()))
        .key("sk", AttributeValue::S(format!("LEDGER#{name}")))
        .send()
        .await
        .unwrap();
    let writes = env.sim_skill_writes().await;
    let (s, _) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        env.sim_skill_writes().await,
        writes,
        "nothing to change in Anthropic"
    );
    let runs = emit(
        &env,
        json!({"skill_name": name, "count": 4, "workspace_id": WS_CORPORATE}),
    )
    .await;
    let tick = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!((tick.events_ingested, tick.events_skipped), (4, 0));
    let stored = stored(&env).await;
    assert!(runs.iter().all(|id| stored.get(id) == Some(&1)));
}

/// Issue 11: unpublishing a skill keeps its name as a tombstone (with a TTL), so runs that become visible
/// after it was removed are still stored — and offboarding polls once more before it stops.
#[tokio::test]
async fn late_runs_of_an_unpublished_skill_and_of_an_offboarded_tenant_are_kept() {
    let env = env_with_catalog(1000).await;
    // prd-review is granted only by the product-manager archetype.
    let (s, b) = env
        .call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/archetypes/product-manager",
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!env
        .sim_skills()
        .await
        .iter()
        .any(|s| s["name"] == "claresia-dainese-prd-review"));
    let late = emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 2, "workspace_id": WS_CORPORATE})).await;
    let tick = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(
        (tick.events_ingested, tick.events_skipped),
        (2, 0),
        "{:?}",
        tick.results
    );
    let tombstone = env
        .dynamo()
        .get_item()
        .table_name(&env.app.config.hub_table)
        .key("pk", AttributeValue::S("TENANT#dainese".into()))
        .key(
            "sk",
            AttributeValue::S("LEDGER#claresia-dainese-prd-review".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires: i64 = match &tombstone["expires_at"] {
        AttributeValue::N(n) => n.parse().unwrap(),
        other => panic!("{other:?}"),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 7 * 86_400 - 60..=now + 7 * 86_400).contains(&expires),
        "{expires}"
    );

    // Runs visible when the tenant offboards are stored by the final pass, with no tick in between.
    let last = emit(&env, json!({"skill_name": "claresia-dainese-incident-postmortem", "count": 3, "workspace_id": WS_CORPORATE})).await;
    let (s, b) = env
        .call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let stored = stored(&env).await;
    assert!(
        late.iter()
            .chain(&last)
            .all(|id| stored.get(id) == Some(&1)),
        "{stored:?}"
    );
}

/// Issue 11: with one slow org, the tenants behind it used to start with under 2 s left, read nothing and
/// be recorded as a success every tick, so the stale-tenant alarm never fired. Now such a tenant is
/// `deferred` (not a success: the alarm's value grows), and, the longest without a success, goes first next.
#[tokio::test]
async fn a_slow_org_cannot_starve_the_others_unnoticed() {
    // A tick is the slow call plus the 2 s a tenant needs to start a page: the slow org, first, leaves its
    // follower under 2 s (deferred) however fast moto answers, and on the next tick the slow call still fits
    // after dainese's poll. Each side keeps about 2 s of slack for a loaded CI machine.
    const SLOW_CALL_MS: u64 = 3000;
    let env = TestEnv::start_with(|c| c.poll_concurrency = 1).await;
    let slow_org = "99999999-0000-0000-0000-000000000001";
    let slow_key = "sk-ant-admin01-sim-slow-org-key-000000000000000000000000SLOW";
    env.sim_send(
        "POST",
        "/_sim/orgs",
        json!({"id": slow_org, "name": "Slow Co", "zero_retention": true}),
    )
    .await;
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{slow_org}/keys"),
        json!({"key": slow_key}),
    )
    .await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    assert_eq!(env.connect("slowco", slow_key).await.0, 201);
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{slow_org}"),
        json!({"latency_ms": SLOW_CALL_MS}),
    )
    .await;
    // Neither has been polled successfully since connecting: dainese ten minutes ago, slowco twenty, so
    // slowco is the longest-waiting and goes first.
    for (tenant, minutes) in [("dainese", 10), ("slowco", 20)] {
        let at = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes);
        env.dynamo()
            .update_item()
            .table_name(&env.app.config.hub_table)
            .key("pk", AttributeValue::S(format!("TENANT#{tenant}")))
            .key("sk", AttributeValue::S("CONNECTION".into()))
            .update_expression("SET connected_at = :t")
            .expression_attribute_values(
                ":t",
                AttributeValue::S(
                    at.format(&time::format_description::well_known::Rfc3339)
                        .unwrap(),
                ),
            )
            .send()
            .await
            .unwrap();
    }

    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let tick = env
            .app
            .poll_all(Deadline::after(Duration::from_millis(SLOW_CALL_MS + 2000)))
            .await
            .unwrap();
        let of = |t: &str| tick.results.iter().find(|r| r.tenant == t).unwrap().outcome;
        outcomes.push((
            of("dainese"),
            of("slowco"),
            tick.deferred,
            tick.oldest_success_age_seconds,
        ));
    }
    // First tick: the slow org went first and dainese was deferred — not a success, so the alarm's value
    // (its 10 minutes without one) is past the 300 s threshold.
    let starved = &outcomes[0];
    assert_eq!(
        (starved.0.as_str(), starved.1.as_str(), starved.2),
        ("deferred", "ok", 1),
        "{outcomes:?}"
    );
    assert!(starved.3 > 300.0, "{outcomes:?}");
    // Next tick: dainese, now the longest without a success, went first, and both were polled.
    assert_eq!(
        (outcomes[1].0.as_str(), outcomes[1].1.as_str()),
        ("ok", "ok"),
        "{outcomes:?}"
    );
    let status = env
        .app
        .hub
        .poll_status(&TenantSlug::parse("dainese").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(status.last_success_at.is_some());
}

/// Issue 11: an event id is stored once per org, whatever the routing or the timestamp when it arrives. A
/// redelivery after its workspace was re-mapped to a sub-tenant (or carrying another timestamp) used to be
/// stored a second time under another key.
#[tokio::test]
async fn an_event_is_one_item_whatever_the_routing_or_timestamp_of_its_redelivery() {
    let env = env_with_catalog(1000).await;
    let name = "claresia-dainese-incident-postmortem";
    let ids = emit(
        &env,
        json!({"skill_name": name, "count": 2, "workspace_id": WS_ENGINEERING}),
    )
    .await;
    env.app.poll_all(deadline()).await.unwrap();

    env.register_sub_tenant("dainese", "dainese-eng").await;
    let (s, b) = env
        .put_doc(
            "dainese",
            "/workspaces",
            &json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // The first event redelivered as is, and once more with another timestamp. (The cursor sits on the
    // second: the simulator resolves after_id to an id's latest delivery, so only what follows it counts.)
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events/redeliver"),
        json!({"ids": [ids[0]]}),
    )
    .await;
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events"),
        json!({"events": [{"id": ids[0], "type": "skill.invoked", "created_at": "2026-11-20T08:00:00Z",
                            "workspace_id": WS_ENGINEERING, "actor": {"type": "user_actor", "user_id": "user_1"},
                            "skill": {"id": "skill_x", "name": name}, "details": {}}]}),
    )
    .await;
    env.app.poll_all(deadline()).await.unwrap();
    let stored = stored(&env).await;
    for id in &ids {
        assert_eq!(stored.get(id), Some(&1), "{id}: {stored:?}");
    }
    // The redelivered event's one item follows the routing of its latest delivery; the other stays.
    let ids_of = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, sub) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese-eng/telemetry",
            None,
        )
        .await;
    assert_eq!(ids_of(&sub), [ids[0].clone()], "{sub}");
    assert_eq!(sub["events"][0]["occurred_at"], "2026-11-20T08:00:00.000Z");
    let (_, hub) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/telemetry",
            None,
        )
        .await;
    assert_eq!(ids_of(&hub), [ids[1].clone()], "{hub}");
}

/// Issue 11: paging follows `has_more`, not the page's length. An org that serves pages shorter than the
/// limit used to stop the poll after its first page every tick.
#[tokio::test]
async fn short_pages_that_say_more_are_followed() {
    let env = env_with_catalog(1000).await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}"),
        json!({"audit_page_cap": 7}),
    )
    .await;
    let ids = emit(&env, json!({"skill_name": "claresia-dainese-prd-review", "count": 30, "workspace_id": WS_CORPORATE})).await;
    let tick = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(tick.events_ingested, 30, "{:?}", tick.results);
    assert_eq!(tick.results[0].pages, 5, "7 + 7 + 7 + 7 + 2");
    assert_exactly(&stored(&env).await, &ids);
    assert_eq!(
        cursor_of(&env).await.as_deref(),
        ids.last().map(String::as_str)
    );
}

/// Issue 18: one ingest loop for both surfaces. A preview poll the time cuts short after some pages used to
/// be reported `ok` and recorded as a success (the enterprise one `behind`): now both are `behind`, not a
/// success, with the cursor saved after every stored page, and the next poll goes on from there.
#[tokio::test]
async fn a_backlog_longer_than_a_poll_is_behind_not_a_success_and_the_next_poll_goes_on() {
    let env = env_with_catalog(2).await;
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 12}),
    )
    .await;
    let route = "GET /v1/organizations/{org_id}/audit_logs";
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": route, "latency_ms": 700}),
    )
    .await;
    // Two events a page, 700 ms a page: 3.5 s reads two or three pages, then stops with under 2 s left.
    let s = env
        .app
        .poll_all(Deadline::after(Duration::from_millis(3500)))
        .await
        .unwrap();
    let r = &s.results[0];
    assert_eq!(r.outcome, "behind", "{s:?}");
    assert!((1..6).contains(&r.pages), "{s:?}");
    assert_eq!(s.deferred, 1, "a bounded catch-up is not a success");
    let st = dainese_status(&env).await;
    assert!(st["last_poll"]["last_success_at"].is_null(), "{st}");
    assert!(
        st["last_poll"]["error"]
            .as_str()
            .unwrap()
            .contains("cut short"),
        "{st}"
    );
    let read = 2 * r.pages as usize;
    assert_eq!(
        cursor_of(&env).await.as_deref(),
        Some(ids[read - 1].as_str()),
        "the cursor is saved after every stored page"
    );
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    let s = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(s.ok, 1, "{s:?}");
    assert_exactly(&stored(&env).await, &ids);
    let st = dainese_status(&env).await;
    assert!(st["last_poll"]["last_success_at"].is_string(), "{st}");
    assert!(st["last_poll"]["error"].is_null(), "{st}");
}

// ---- Issue 18: the fan-out on SQS (dispatcher → FIFO queues → workers), on moto's SQS ----

use claresia_tests::fanout::now_unix;

/// Makes the stage's poll queue hand an unfinished item back after 1 s instead of 6 minutes, as time would.
async fn short_visibility(queue: &claresia_aws::WorkQueue) {
    set_visibility(queue, 1).await;
}

async fn set_visibility(queue: &claresia_aws::WorkQueue, seconds: u32) {
    queue
        .client()
        .set_queue_attributes()
        .queue_url(queue.url())
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            seconds.to_string(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn each_connected_tenant_is_polled_once_a_minute_whatever_the_duplicates() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 3}),
    )
    .await;
    let fanout = env.fanout().await;
    let t = now_unix();
    // A duplicated schedule delivery before the workers ran: the queue drops the copies.
    let first = fanout.dispatcher.dispatch(t).await.unwrap();
    let again = fanout.dispatcher.dispatch(t).await.unwrap();
    assert_eq!((first.polls_enqueued, again.polls_enqueued), (2, 2));
    let m = fanout.minute(&env, t).await;
    for tenant in ["dainese", "retention"] {
        assert_eq!(m.outcomes(tenant), ["ok"], "{tenant}");
    }
    assert_exactly(&stored(&env).await, &ids);
    // The same minute delivered once more after its items were done: each is a no-op.
    let m = fanout.minute(&env, t).await;
    for tenant in ["dainese", "retention"] {
        assert_eq!(m.outcomes(tenant), ["superseded"], "{tenant}");
    }
    assert!(m
        .polls
        .iter()
        .all(|d| d.batch.response.batch_item_failures.is_empty()));
    // The next minute polls again.
    let more = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 2}),
    )
    .await;
    let m = fanout.minute(&env, t + 60).await;
    assert_eq!(m.outcomes("dainese"), ["ok"]);
    let all: Vec<String> = ids.into_iter().chain(more).collect();
    assert_exactly(&stored(&env).await, &all);
    // The stale-tenant alarm's value comes from the stored successes: just polled, so small.
    let age = env.metrics.values("OldestSuccessfulPollAgeSeconds");
    assert!(age.last().is_some_and(|a| *a < 120.0), "{age:?}");
}

#[tokio::test]
async fn the_longest_waiting_tenant_is_enqueued_first() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    let fanout = env.fanout().await;
    let t = now_unix();
    fanout.minute(&env, t).await;
    // dainese's last success was ten minutes ago (its polls failed since, say); retention's is fresh.
    let slug = TenantSlug::parse("dainese").unwrap();
    let mut status = env.app.hub.poll_status(&slug).await.unwrap().unwrap();
    let ten_minutes_ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    status.last_success_at = Some(
        ten_minutes_ago
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    env.app
        .hub
        .record_poll_status(&slug, &status)
        .await
        .unwrap();
    // Received in the order sent: dainese, its success the oldest, first; the alarm's age says so.
    let m = fanout.minute(&env, t + 60).await;
    assert!(
        m.dispatch.oldest_success_age_seconds >= 600,
        "{}",
        m.dispatch.oldest_success_age_seconds
    );
    let order: Vec<&str> = m
        .polls
        .iter()
        .flat_map(|d| d.batch.items.iter())
        .filter_map(|i| i.tenant.as_deref())
        .collect();
    assert_eq!(order.first(), Some(&"dainese"), "{order:?}");
}

#[tokio::test]
async fn an_item_the_store_refused_comes_back_with_every_item_after_it_and_then_runs() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    let ids = emit(
        &env,
        json!({"skill_name": "claresia-dainese-prd-review", "count": 3}),
    )
    .await;
    let fanout = env.fanout().await;
    short_visibility(&fanout.polls.queue).await;
    let t = now_unix();
    fanout.dispatcher.dispatch(t).await.unwrap();
    let handler = claresia_tests::fanout::worker(&env);
    // The store refuses every write: no lease can be taken, nothing runs.
    env.cutoff.arm(0);
    let d = fanout.polls.deliver_once(&handler).await.unwrap().unwrap();
    assert!(env.cutoff.disarm());
    assert_eq!(d.received, 2);
    let failed: Vec<&str> = d
        .batch
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let all: Vec<&str> = d
        .batch
        .items
        .iter()
        .map(|i| i.message_id.as_str())
        .collect();
    assert_eq!(
        failed, all,
        "from the first failure on, every item is named"
    );
    assert!(stored(&env).await.is_empty());
    // Delivered again once their visibility lapses, they run. Received now with a visibility longer
    // than a run (as in the stack), so a slow store does not hand them out twice meanwhile.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    set_visibility(&fanout.polls.queue, 30).await;
    let (polls, _) = fanout.drain(&env).await;
    let outcomes: Vec<&str> = polls
        .iter()
        .flat_map(|d| d.batch.items.iter())
        .map(|i| i.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "ok"]);
    assert_exactly(&stored(&env).await, &ids);
}

#[tokio::test]
async fn an_unreadable_item_is_dead_lettered_after_five_deliveries() {
    let env = TestEnv::start().await;
    let fanout = env.fanout().await;
    short_visibility(&fanout.polls.queue).await;
    let q = &fanout.polls.queue;
    q.client()
        .send_message()
        .queue_url(q.url())
        .message_body("{\"kind\":\"reboot\"}")
        .message_group_id("nobody")
        .message_deduplication_id("junk")
        .send()
        .await
        .unwrap();
    let handler = claresia_tests::fanout::worker(&env);
    for delivery in 1..=5 {
        let d = fanout.polls.deliver_once(&handler).await.unwrap();
        let d = d.unwrap_or_else(|| panic!("delivery {delivery}"));
        assert_eq!(d.batch.items[0].outcome, "malformed");
        assert!(d.batch.items[0]
            .error
            .as_deref()
            .unwrap()
            .contains("not a work item"));
        assert_eq!(d.batch.response.batch_item_failures.len(), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(fanout.polls.deliver_once(&handler).await.unwrap().is_none());
    let dlq = fanout
        .poll_dlq
        .client()
        .receive_message()
        .queue_url(fanout.poll_dlq.url())
        .send()
        .await
        .unwrap();
    let bodies: Vec<String> = dlq
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["{\"kind\":\"reboot\"}"]);
}

#[tokio::test]
async fn a_sweep_skips_a_hub_whose_publish_is_running_without_holding_up_the_others() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    let (dainese, retention) = (
        TenantSlug::parse("dainese").unwrap(),
        TenantSlug::parse("retention").unwrap(),
    );
    for hub in [&dainese, &retention] {
        env.app.hub.mark_pending(hub, "change-1").await.unwrap();
    }
    // Another publish of dainese holds its lease for a minute.
    let now_ms = (now_unix() as i128) * 1000;
    assert!(env
        .app
        .hub
        .acquire_publish_lease(&dainese, "a-request", now_ms, now_ms + 60_000)
        .await
        .unwrap());
    let fanout = env.fanout().await;
    let t = now_unix();
    let m = fanout.minute(&env, t).await;
    assert_eq!(m.dispatch.sweeps_enqueued, 2);
    assert_eq!(
        m.outcomes("dainese"),
        ["ok", "busy"],
        "polled, and its sweep not waited on"
    );
    // retention's org keeps data: its sweep is refused at once and its marker cleared (the status says why).
    assert_eq!(m.outcomes("retention"), ["ok", "refused"]);
    assert!(env.app.hub.pending_token(&dainese).await.unwrap().is_some());
    assert!(env
        .app
        .hub
        .pending_token(&retention)
        .await
        .unwrap()
        .is_none());
    env.app
        .hub
        .release_publish_lease(&dainese, "a-request")
        .await
        .unwrap();
    let m = fanout.minute(&env, t + 60).await;
    assert_eq!(m.dispatch.sweeps_enqueued, 1);
    assert_eq!(m.outcomes("dainese"), ["ok", "complete"]);
    assert!(env.app.hub.pending_token(&dainese).await.unwrap().is_none());
}

/// Issue 18: `AuditPollerErrorsAlarm` watched `PollErrors`, which nothing emitted. Every alarm on a metric of
/// ours must watch one a real run emits: a minute with one tenant failing, through the queue path.
#[tokio::test]
async fn every_alarm_on_a_custom_metric_watches_a_metric_the_code_emits() {
    let env = env_with_catalog(1000).await;
    assert_eq!(env.connect("retention", NO_ZR_KEY).await.0, 201);
    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": NO_ZR_KEY}))
        .await;
    let fanout = env.fanout().await;
    let m = fanout.minute(&env, now_unix()).await;
    assert_eq!(m.outcomes("retention"), ["unauthorized"]);
    assert_eq!(env.metrics.values("PollErrors").iter().sum::<f64>(), 1.0);
    let template: serde_norway::Value =
        serde_norway::from_str(claresia_local::tables::TEMPLATE).unwrap();
    let emitted = env.metrics.names();
    let mut watched = Vec::new();
    for (id, r) in template["Resources"].as_mapping().unwrap() {
        let p = &r["Properties"];
        if r["Type"].as_str() == Some("AWS::CloudWatch::Alarm")
            && p["Namespace"].as_str() == Some(claresia_api::metrics::NAMESPACE)
        {
            let metric = p["MetricName"].as_str().unwrap();
            assert!(
                emitted.contains(metric),
                "{id:?} watches {metric}, which the code never emitted: {emitted:?}"
            );
            watched.push(metric.to_owned());
        }
    }
    watched.sort();
    assert_eq!(watched, ["OldestSuccessfulPollAgeSeconds", "PollErrors"]);
}

#[tokio::test]
async fn the_queue_takes_items_ten_a_call_and_drops_a_repeated_tick() {
    let env = TestEnv::start().await;
    let fanout = env.fanout().await;
    let items: Vec<claresia_domain::work::WorkItem> = (0..25)
        .map(|i| claresia_domain::work::WorkItem::Poll {
            tenant: TenantSlug::parse(&format!("tenant{i:02}")).unwrap(),
            scheduled_at: 1_800_000_000,
        })
        .collect();
    let q = &fanout.dispatcher.polls;
    assert_eq!(q.enqueue(&items).await.unwrap(), 25);
    // The same tick again while the first copies wait: SQS accepts and drops them.
    assert_eq!(q.enqueue(&items).await.unwrap(), 25);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        move |event: aws_lambda_events::sqs::SqsEvent, _deadline_ms| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                for m in event.records {
                    let group = m.attributes.get("MessageGroupId").cloned();
                    seen.push((m.body.unwrap_or_default(), group));
                }
                claresia_api::worker::WorkBatch::default()
            }
        }
    };
    let deliveries = fanout.polls.drain(&handler).await.unwrap();
    assert!(deliveries.iter().all(|d| d.received <= 10));
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut want: Vec<(String, Option<String>)> = items
        .iter()
        .map(|i| (i.body(), Some(i.tenant().to_string())))
        .collect();
    want.sort();
    assert_eq!(seen, want, "each item once, grouped by its tenant");
}
