//! The poller on the `enterprise` surface, through the real handlers against moto and the simulator:
//! Analytics usage upserted per (skill, day, group) and routed to sub-tenants, the Compliance feed's
//! catch-up storing our plugins' lifecycle exactly once (redelivery, a crash before the cursor save), and
//! drift flagged in the status and repaired by the sweep.

use std::time::Duration;

use claresia_anthropic::Deadline;
use claresia_tests::*;
use serde_json::{json, Value};

const TENANT: &str = "dainese";

fn day(back: i64) -> String {
    (time::OffsetDateTime::now_utc().date() - time::Duration::days(back)).to_string()
}

/// Connected with an attestation, three skills: prd-review for Product, standup-notes for the Sales group
/// (mapped to the sub-tenant dainese-sales, which has its own copy of it).
async fn published() -> TestEnv {
    // A crashed tick's lease lapses with its own deadline.
    let env =
        TestEnv::enterprise_connected_with(TENANT, |c| c.poll_lease_slack = Duration::ZERO).await;
    env.register_sub_tenant(TENANT, "dainese-sales").await;
    for (name, doc) in [
        (
            "pm",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        ),
        (
            "eng",
            json!({"skills": ["standup-notes"], "group_ids": [GROUP_ENGINEERING]}),
        ),
        (
            "sales",
            json!({"skills": ["standup-notes"], "sub_tenant": "dainese-sales"}),
        ),
    ] {
        let (s, b) = env.put_archetype(TENANT, name, doc).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = env
        .put_doc(
            TENANT,
            "/workspaces",
            &json!({"mappings": [{"group_id": GROUP_SALES, "sub_tenant": "dainese-sales"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    env
}

async fn usage(env: &TestEnv, skill: &str, group: &str, date: &str, invocations: u64) {
    let r = env
        .sim_send(
            "POST",
            &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/usage"),
            json!({"skill_name": skill, "rbac_group_id": group, "date": date,
                   "invocations": invocations, "users": 2}),
        )
        .await;
    assert_eq!(r["recorded"], true, "{r}");
}

async fn tick(env: &TestEnv) -> Value {
    let s = env
        .app
        .poll_all(Deadline::after(Duration::from_secs(20)))
        .await
        .unwrap();
    serde_json::to_value(&s.results).unwrap()
}

async fn get(env: &TestEnv, path: &str) -> (u16, Value) {
    env.call(As::Tenant(TENANT), "GET", path, None).await
}

#[tokio::test]
async fn usage_of_the_last_three_days_is_upserted_per_skill_day_and_group_and_routed() {
    let env = published().await;
    usage(
        &env,
        "claresia-dainese-prd-review",
        GROUP_PRODUCT,
        &day(1),
        5,
    )
    .await;
    usage(
        &env,
        "claresia-dainese-prd-review",
        GROUP_PRODUCT,
        &day(3),
        2,
    )
    .await;
    // Outside the three days read: not polled.
    usage(
        &env,
        "claresia-dainese-prd-review",
        GROUP_PRODUCT,
        &day(5),
        100,
    )
    .await;
    // A hub skill used by the Sales group goes to the sub-tenant the group is mapped to; the
    // sub-tenant's own skill is its own whatever the group.
    usage(
        &env,
        "claresia-dainese-standup-notes",
        GROUP_SALES,
        &day(2),
        4,
    )
    .await;
    usage(
        &env,
        "claresia-dainese-sales-standup-notes",
        GROUP_ENGINEERING,
        &day(2),
        6,
    )
    .await;
    // Not one of ours.
    usage(&env, "team-made-skill", GROUP_PRODUCT, &day(1), 9).await;

    let results = tick(&env).await;
    assert_eq!(results[0]["outcome"], "ok", "{results}");
    let range = format!("from={}&to={}", day(6), day(1));
    let (s, b) = get(&env, &format!("/tenants/{TENANT}/usage?{range}")).await;
    assert_eq!(s, 200, "{b}");
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{b}");
    assert_eq!(rows[0]["date"], day(3).as_str(), "oldest first");
    assert_eq!(rows[1]["invocation_count"], 5);
    assert_eq!(rows[1]["rbac_group_id"], GROUP_PRODUCT);
    assert_eq!(rows[1]["rbac_group_name"], "Product");
    assert_eq!(rows[1]["skill_id"], "prd-review");
    assert_eq!(rows[1]["estimated_overage_spend"], "20.00");
    assert_eq!(b["totals"][0]["invocation_count"], 7);
    assert_eq!(b["totals"][0]["days_with_use"], 2);
    let (s, sales) = get(&env, &format!("/tenants/dainese-sales/usage?{range}")).await;
    assert_eq!(s, 200, "{sales}");
    let names: Vec<&str> = sales["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["skill_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "claresia-dainese-sales-standup-notes",
            "claresia-dainese-standup-notes"
        ]
    );

    // A revision overwrites the row; polling again never duplicates it.
    usage(
        &env,
        "claresia-dainese-prd-review",
        GROUP_PRODUCT,
        &day(1),
        8,
    )
    .await;
    tick(&env).await;
    tick(&env).await;
    let (_, b) = get(&env, &format!("/tenants/{TENANT}/usage?{range}")).await;
    assert_eq!(b["rows"].as_array().unwrap().len(), 2, "{b}");
    assert_eq!(b["rows"][1]["invocation_count"], 8);
    assert_eq!(b["totals"][0]["invocation_count"], 10);
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert_eq!(st["last_poll"]["usage_rows"], 4, "{st}");
    assert!(st["last_poll"]["usage_polled_at"].is_string());

    // Paging: one row a page, the cursor bound to the range.
    let (_, p1) = get(&env, &format!("/tenants/{TENANT}/usage?{range}&limit=1")).await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = get(
        &env,
        &format!("/tenants/{TENANT}/usage?{range}&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(p2["rows"][0]["date"], day(1).as_str(), "{p1} {p2}");
    assert_eq!(p2["next_cursor"], Value::Null);
    // Totals are each page's own (a request never reads the whole range); over the pages of a range
    // they add up to the range's.
    let n = |p: &Value| p["totals"][0]["invocation_count"].as_u64().unwrap();
    assert_eq!(n(&p1) + n(&p2), 10, "{p1} {p2}");
    // A forged cursor (this tenant and range, a position outside it) is the client's mistake, not a 500.
    let list = range.replace("from=", "usage:").replace("&to=", ":");
    for a in [
        "9999-12-31#x\u{1f}usage#x",
        "\u{1f}usage#x",
        "2000-01-01#x\u{1f}",
    ] {
        use base64::Engine;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"t": TENANT, "l": list, "a": a}).to_string());
        let (s, b) = get(
            &env,
            &format!("/tenants/{TENANT}/usage?{range}&cursor={forged}"),
        )
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{a:?}: {b}"
        );
    }
    let other = format!("from={}&to={}", day(7), day(1));
    for (bad, names) in [
        (format!("{other}&cursor={cursor}"), "cursor"),
        (format!("from={}&to={}", day(1), day(2)), "after"),
        ("from=2026-01-01&to=2026-12-01".to_owned(), "92 days"),
        ("from=yesterday".to_owned(), "from"),
        ("since=2026-01-01".to_owned(), "since"),
    ] {
        let (s, b) = get(&env, &format!("/tenants/{TENANT}/usage?{bad}")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {b}"
        );
        assert!(
            b["error"]["message"].as_str().unwrap().contains(names),
            "{bad}: {b}"
        );
    }
}

/// The tenant's stored audit events of the enterprise feed.
async fn audit(env: &TestEnv) -> Vec<Value> {
    let (s, b) = get(env, &format!("/tenants/{TENANT}/telemetry?limit=500")).await;
    assert_eq!(s, 200, "{b}");
    b["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_feed_stores_our_plugin_lifecycle_once_and_drift_is_shown_and_repaired() {
    let env = published().await;
    let results = tick(&env).await;
    assert_eq!(results[0]["outcome"], "ok", "{results}");
    let first = audit(&env).await;
    // Ours only: creates and installation settings of our three plugins, all by the connector.
    assert!(first.len() >= 6, "{first:?}");
    assert!(
        first.iter().all(|e| e["status"] == "by_connector"),
        "{first:?}"
    );
    assert!(first
        .iter()
        .any(|e| e["event_type"] == "claude_plugin_created" && e["skill_id"] == "prd-review"));
    // The sub-tenant's own plugin's lifecycle is the sub-tenant's.
    let (_, sales) = get(&env, "/tenants/dainese-sales/telemetry").await;
    assert!(
        sales["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["skill_id"] == "standup-notes" && e["event_type"] == "claude_plugin_created"),
        "{sales}"
    );
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert_eq!(
        st["last_poll"]["connector_api_key_ids"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{st}"
    );
    assert_eq!(st["publish_pending"], false);

    // A redelivered feed (the cursor back where it was) stores nothing twice.
    let hub = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    tick(&env).await;
    assert_eq!(audit(&env).await.len(), first.len());

    // An admin widens a plugin to the whole org in the UI: drift.
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
        json!({"plugin_name": "claresia-dainese-prd-review", "target": "organization",
               "installation_preference": "auto_install", "user_email": "it@dainese.example"}),
    )
    .await;
    // A crash after the page's events were written, before the cursor save: the next tick reads the
    // same page again and stores each activity once.
    let before = env.app.hub.poll_status(&hub).await.unwrap().unwrap();
    // (The first write let through is the tick lease; the events' batch write is cut off.)
    env.cutoff.arm(1);
    let crashed = env
        .app
        .poll_all(Deadline::after(Duration::from_millis(2500)))
        .await
        .unwrap();
    assert!(env.cutoff.disarm(), "the cut-off was reached");
    assert_eq!(crashed.results[0].outcome, "error", "{:?}", crashed.results);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let after_crash = env.app.hub.poll_status(&hub).await.unwrap().unwrap();
    assert_eq!(after_crash.cursor, before.cursor, "the cursor did not move");
    tick(&env).await;
    let events = audit(&env).await;
    assert_eq!(events.len(), first.len() + 1, "{events:?}");
    let drift_event = &events[0];
    assert_eq!(drift_event["status"], "drift");
    assert_eq!(
        drift_event["event_type"],
        "plugin_installation_preference_updated"
    );
    assert_eq!(
        drift_event["detail"],
        "organization installation preference auto_install"
    );
    // The deprecated field still carries it for clients that read it there.
    assert_eq!(drift_event["error_message"], drift_event["detail"]);
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    let drift = &st["last_poll"]["drift"][0];
    assert_eq!(drift["plugin_name"], "claresia-dainese-prd-review", "{st}");
    assert!(drift["actor"].as_str().unwrap().starts_with("user_actor"));
    assert_eq!(st["publish_pending"], true, "a reconcile is scheduled");

    // The sweep repairs it.
    let swept = env
        .app
        .sweep_pending(Deadline::after(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(
        env.plugin_settings().await["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    // The repair is the connector's own write: not drift.
    tick(&env).await;
    let events = audit(&env).await;
    assert_eq!(events[0]["status"], "by_connector", "{:?}", events[0]);
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert_eq!(st["last_poll"]["drift"].as_array().unwrap().len(), 1);
    assert_eq!(st["publish_pending"], false);

    // A plugin deleted in the UI comes back with the next reconcile.
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
        json!({"plugin_name": "claresia-dainese-prd-review", "delete_plugin": true}),
    )
    .await;
    tick(&env).await;
    env.app
        .sweep_pending(Deadline::after(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(env
        .plugin_settings()
        .await
        .contains_key("claresia-dainese-prd-review"));
}

#[tokio::test]
async fn recorded_settings_are_trusted_until_the_feed_reports_a_change_or_an_admin_republishes_all()
{
    let env = published().await;
    let hub = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    let full = || {
        env.app
            .publish(&hub, None, Deadline::after(Duration::from_secs(20)))
    };
    // The ledger holds what was applied: a no-change publish reads the plugin list and nothing else.
    let (reads, writes) = (env.settings_reads().await, env.enterprise_writes().await);
    let r = full().await.unwrap();
    assert_eq!(r.writes, 0, "{r:?}");
    assert_eq!(
        env.settings_reads().await,
        reads,
        "no plugin's settings were read"
    );
    assert_eq!(env.enterprise_writes().await, writes);
    let ledger = env.app.hub.ledger(&hub).await.unwrap();
    let pm = &ledger["claresia-dainese-prd-review"];
    assert_eq!(
        pm.applied_access.as_ref().map(|a| a.acl.group_ids.clone()),
        Some(vec![GROUP_PRODUCT.to_owned()])
    );
    // An admin opens prd-review to Engineering in claude.ai; the feed reports it on the next tick.
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
        json!({"plugin_name": "claresia-dainese-prd-review", "target": GROUP_ENGINEERING,
               "installation_preference": "auto_install"}),
    )
    .await;
    tick(&env).await;
    let reads = env.settings_reads().await;
    let r = full().await.unwrap();
    assert_eq!(
        r.targets[0].updated,
        vec!["claresia-dainese-prd-review".to_owned()],
        "{r:?}"
    );
    // Its settings were read (once to plan, once before the change), and no other plugin's.
    assert_eq!(env.settings_reads().await - reads, 2);
    let s = env.plugin_settings().await;
    assert_eq!(
        s["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    // The repair is recorded: the next publish writes nothing and reads no other plugin's settings (the
    // repaired one's only while the drift is inside the minute of clock skew allowed for).
    let reads = env.settings_reads().await;
    assert_eq!(full().await.unwrap().writes, 0);
    assert!(env.settings_reads().await - reads <= 1);
    let reads = env.settings_reads().await;
    // "Republish all" checks every plugin's settings.
    let (s, b) = env.republish(TENANT).await;
    assert_eq!(s, 200, "{b}");
    let plugins = env.enterprise_state().await["plugins"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(env.settings_reads().await - reads, plugins);
}

#[tokio::test]
async fn a_large_org_without_recorded_settings_reads_them_across_runs_saying_how_long_it_takes() {
    let env = published().await;
    let hub = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    // As after an upgrade: nothing recorded.
    for e in env.app.hub.ledger(&hub).await.unwrap().into_values() {
        env.app
            .hub
            .set_applied_access(&hub, &e.name, None)
            .await
            .unwrap();
    }
    // And someone widened one of them meanwhile.
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
        json!({"plugin_name": "claresia-dainese-prd-review", "target": GROUP_SALES,
               "installation_preference": "required"}),
    )
    .await;
    // Settings answer slower than the part of a 5.2 s run that reads may take (the last third is left
    // for the writes): none is read this run.
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/plugins/{plugin_id}/installation_settings",
               "latency_ms": 4000}),
    )
    .await;
    let r = env
        .app
        .publish(&hub, None, Deadline::after(Duration::from_millis(5200)))
        .await
        .unwrap();
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    assert!(!r.complete, "{r:?}");
    let eta = r.eta.as_ref().unwrap();
    assert!(eta.settings_to_read >= 2, "{r:?}");
    assert!(eta.seconds >= 1, "{r:?}");
    let pending: usize = r.targets.iter().map(|t| t.pending.len()).sum();
    assert!(pending >= 1, "{r:?}");
    // The sweep finishes: everything read once, recorded, the widened one put back.
    env.app
        .sweep_pending(Deadline::after(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(
        env.plugin_settings().await["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    let ledger = env.app.hub.ledger(&hub).await.unwrap();
    assert!(ledger
        .values()
        .filter(|e| e.removed_at.is_none())
        .all(|e| e.applied_access.is_some()));
    let reads = env.settings_reads().await;
    assert_eq!(
        env.app
            .publish(&hub, None, Deadline::after(Duration::from_secs(20)))
            .await
            .unwrap()
            .writes,
        0
    );
    assert_eq!(env.settings_reads().await, reads);
}

/// Feed requests the simulator received.
async fn asked(env: &TestEnv) -> usize {
    env.sim_requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/v1/compliance/activities")
        .count()
}

/// The cursor as the tenant's status shows it.
async fn cursor(env: &TestEnv) -> Value {
    let (_, st) = get(env, &format!("/tenants/{TENANT}/connection")).await;
    st["last_poll"]["cursor"].clone()
}

/// Twelve installation changes of standup-notes by the connector's own key (audit events, not drift).
async fn backlog(env: &TestEnv) {
    for i in 0..6 {
        for pref in ["available", "auto_install"] {
            let (s, b) = env
                .put_archetype(
                    TENANT,
                    "eng",
                    json!({"skills": ["standup-notes"], "group_ids": [GROUP_ENGINEERING],
                           "installation_preference": pref}),
                )
                .await;
            assert!(s == 200 || s == 201, "{i}: {b}");
        }
    }
}

#[tokio::test]
async fn a_feed_backlog_longer_than_a_tick_converges_the_cursor_saved_after_every_page() {
    let env = published().await;
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    backlog(&env).await;
    // Two activities a page, each page 700 ms: a tick with 3.5 s reads two pages, then stops with 2 s left.
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"feed_page_cap": 2}),
    )
    .await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/compliance/activities", "latency_ms": 700}),
    )
    .await;
    let before = audit(&env).await.len();
    let mut cursors = vec![cursor(&env).await];
    let mut ticks = 0;
    loop {
        ticks += 1;
        assert!(ticks <= 10, "the backlog never converged: {cursors:?}");
        let r = env
            .app
            .poll_all(Deadline::after(Duration::from_millis(3500)))
            .await
            .unwrap();
        let outcome = serde_json::to_value(&r.results).unwrap()[0]["outcome"].clone();
        let now = cursor(&env).await;
        assert_ne!(
            Some(&now),
            cursors.last(),
            "tick {ticks} saved no page: {outcome}"
        );
        cursors.push(now);
        if outcome == "ok" {
            break;
        }
        assert_eq!(outcome, "behind");
        assert_eq!(r.deferred, 1, "a bounded catch-up is not a success");
        let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
        assert!(
            st["last_poll"]["error"]
                .as_str()
                .unwrap()
                .contains("cut short"),
            "{st}"
        );
    }
    assert!(ticks >= 2, "the backlog fit in one tick: {cursors:?}");
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    // Every activity of the backlog stored once.
    let after = audit(&env).await;
    let ids: std::collections::BTreeSet<&str> = after
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), after.len());
    assert!(after.len() >= before + 12, "{} → {}", before, after.len());
}

#[tokio::test]
async fn an_activity_indexed_late_is_read_by_the_overlap_once_and_repaired() {
    let env = published().await;
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    // prd-review's settings were last applied at t0; an admin changes them a second later, but the feed
    // indexes that change only after the connector's later writes (to standup-notes) moved the cursor.
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    backlog(&env).await;
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    let late = (t0.elapsed() - Duration::from_secs(1)).as_secs();
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
        json!({"plugin_name": "claresia-dainese-prd-review", "target": GROUP_SALES,
               "installation_preference": "required", "indexed_late_seconds": late}),
    )
    .await;
    let before = audit(&env).await.len();
    let results = tick(&env).await;
    assert_eq!(results[0]["outcome"], "ok", "{results}");
    assert_eq!(results[0]["events_ingested"], 1, "{results}");
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert_eq!(st["publish_pending"], true, "{st}");
    assert_eq!(
        st["last_poll"]["drift"][0]["activity_type"],
        "plugin_installation_preference_updated"
    );
    assert_eq!(audit(&env).await.len(), before + 1);
    // The sweep puts it back; later ticks re-read the window and store, count and flag nothing again.
    env.app
        .sweep_pending(Deadline::after(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(
        env.plugin_settings().await["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    let results = tick(&env).await;
    assert_eq!(
        results[0]["events_ingested"], 1,
        "only the sweep's own write: {results}"
    );
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert_eq!(st["publish_pending"], false, "{st}");
    let results = tick(&env).await;
    assert_eq!(results[0]["events_ingested"], 0, "{results}");
    // Only documented activity types are asked for.
    let documented = [
        "claude_plugin_created",
        "claude_plugin_deleted",
        "claude_plugin_replaced",
        "claude_plugin_updated",
        "claude_plugin_enabled",
        "claude_plugin_disabled",
        "plugin_installation_preference_updated",
        "claude_skill_created",
        "claude_skill_deleted",
        "claude_skill_replaced",
        "claude_skill_enabled",
        "claude_skill_disabled",
    ];
    for r in env.sim_requests().await {
        if r["path"] != "/v1/compliance/activities" {
            continue;
        }
        for pair in r["query"].as_str().unwrap().split('&') {
            if let Some(t) = pair
                .strip_prefix("activity_types%5B%5D=")
                .or(pair.strip_prefix("activity_types[]="))
            {
                assert!(documented.contains(&t), "undocumented type asked for: {t}");
            }
        }
    }
}

#[tokio::test]
async fn a_feed_page_without_a_position_ends_the_run_instead_of_repeating_it() {
    let env = published().await;
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    let saved = cursor(&env).await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"feed_no_position": true}),
    )
    .await;
    let n = asked(&env).await;
    let results = tick(&env).await;
    assert_eq!(results[0]["outcome"], "behind", "{results}");
    assert_eq!(
        asked(&env).await - n,
        1,
        "asked once, not until the deadline"
    );
    assert_eq!(cursor(&env).await, saved);
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert!(
        st["last_poll"]["error"]
            .as_str()
            .unwrap()
            .contains("has_more without a first_id"),
        "{st}"
    );
}

#[tokio::test]
async fn usage_is_pulled_for_our_skills_only_a_page_at_a_time_and_a_cut_pull_resumes() {
    let env = published().await;
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    usage(
        &env,
        "claresia-dainese-prd-review",
        GROUP_PRODUCT,
        &day(1),
        5,
    )
    .await;
    usage(&env, "someone-elses-skill", GROUP_PRODUCT, &day(1), 50).await;
    // Usage is due again; each Analytics request takes 1.5 s: a 3.2 s tick stores one day, then stops.
    env.app
        .hub
        .record_poll_status(&claresia_domain::TenantSlug::parse(TENANT).unwrap(), &{
            let mut st = env
                .app
                .hub
                .poll_status(&claresia_domain::TenantSlug::parse(TENANT).unwrap())
                .await
                .unwrap()
                .unwrap();
            st.usage_polled_at = None;
            st
        })
        .await
        .unwrap();
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/analytics/skills", "latency_ms": 1500}),
    )
    .await;
    env.app
        .poll_all(Deadline::after(Duration::from_millis(3200)))
        .await
        .unwrap();
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    let done = st["last_poll"]["usage_days_done"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!done.is_empty(), "the cut pull kept its progress: {st}");
    assert!(st["last_poll"]["usage_polled_at"].is_null(), "{st}");
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    let seen = env
        .sim_requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/v1/organizations/analytics/skills")
        .count();
    tick(&env).await;
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert!(st["last_poll"]["usage_polled_at"].is_string(), "{st}");
    assert!(st["last_poll"].get("usage_days_done").is_none(), "{st}");
    let requests = env.sim_requests().await;
    let resumed: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "/v1/organizations/analytics/skills")
        .skip(seen)
        .collect();
    // Fewer than 100 names: a day is one request, so progress is whole days.
    assert!(
        done.iter().all(|d| !d.as_str().unwrap().contains('@')),
        "{done:?}"
    );
    assert_eq!(
        resumed.len(),
        3 - done.len(),
        "only the days not yet stored"
    );
    // Every request names our skills, never the org's others.
    for r in &resumed {
        let q = r["query"].as_str().unwrap();
        assert!(
            q.contains("skill_name%3Aclaresia-dainese-prd-review")
                || q.contains("skill_name:claresia-dainese-prd-review"),
            "{q}"
        );
        assert!(!q.contains("someone-elses-skill"));
    }
    let (_, b) = get(
        &env,
        &format!("/tenants/{TENANT}/usage?from={}&to={}", day(3), day(1)),
    )
    .await;
    let rows = b["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["skill_id"] != Value::Null));
    assert!(rows
        .iter()
        .any(|r| r["skill_id"] == "prd-review" && r["invocation_count"] == 5));
}

/// Issue 18: both surfaces' polls are one ingest loop, so the enterprise feed refuses, fails and is
/// refused the way the audit log is: a refused cursor is forgotten in the store (with the gap recorded and
/// counted), a 5xx is counted by status and recorded, a 401 marks the connection and is counted.
#[tokio::test]
async fn the_feed_fails_the_way_the_audit_log_does_counted_recorded_and_its_cursor_forgotten() {
    let env = published().await;
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    let tenant = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    let saved = cursor(&env).await;
    let saved = saved.as_str().unwrap();
    // A cursor the feed cannot read (say, left by a preview connection).
    assert!(env
        .app
        .hub
        .advance_cursor(&tenant, Some(saved), "activity_notafeedcursor")
        .await
        .unwrap());
    assert_eq!(tick(&env).await[0]["outcome"], "ok");
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    let gap = st["last_poll"]["gap"].as_str().unwrap_or_default();
    assert!(
        gap.contains("refused cursor activity_notafeedcursor"),
        "{st}"
    );
    assert_eq!(env.metrics.values("CursorGaps"), vec![1.0]);
    // Restarted from the newest activity: the cursor is a real one again.
    let now = cursor(&env).await;
    assert!(
        now.as_str().is_some_and(|c| c != "activity_notafeedcursor"),
        "{st}"
    );

    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/compliance/activities", "fail": {"status": 503, "count": 50}}),
    )
    .await;
    assert_eq!(tick(&env).await[0]["outcome"], "error");
    assert_eq!(cursor(&env).await, now, "the cursor did not move");
    assert!(!env.metrics.values("AnthropicErrors5xx").is_empty());
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert!(
        st["last_poll"]["error"].as_str().unwrap().contains("503"),
        "{st}"
    );
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;

    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": ENTERPRISE_KEY}))
        .await;
    assert_eq!(tick(&env).await[0]["outcome"], "unauthorized");
    assert_eq!(env.metrics.values("AnthropicErrors401"), vec![1.0]);
    let (_, st) = get(&env, &format!("/tenants/{TENANT}/connection")).await;
    assert_eq!(st["state"], "needs_attention", "{st}");
    assert!(st["state_reason"].as_str().unwrap().contains("401"), "{st}");
}
