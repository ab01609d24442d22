//! Every store function at the real services' limits, against moto (which does not always enforce them):
//! 25 items per BatchWriteItem, 100 keys per BatchGetItem, 20 secrets per BatchGetSecretValue, 400 KB per
//! item — refused in our code, before any call, with nothing written.

use aws_sdk_dynamodb::types::AttributeValue;
use claresia_aws::telemetry::{Quarantined, EVENT_UID};
use claresia_aws::{PollStatus, StoreError};
use claresia_domain::telemetry::TelemetryEvent;
use claresia_domain::{AdminKey, TenantSlug};
use claresia_tests::*;
use serde_json::json;

fn tenant(i: usize) -> TenantSlug {
    TenantSlug::parse(&format!("t{i:03}")).unwrap()
}

fn event(i: usize, message: Option<String>) -> TelemetryEvent {
    TelemetryEvent {
        event_id: format!("auditevt_{i:06}"),
        tenant: tenant(0),
        skill_id: "s".into(),
        event_type: "skill.failed".into(),
        status: "failed".into(),
        occurred_at: "2026-11-25T10:00:00.000Z".into(),
        ingested_at: "2026-11-25T10:00:01.000Z".into(),
        workspace_id: None,
        actor_id: None,
        duration_ms: None,
        cost_usd: None,
        input_tokens: None,
        output_tokens: None,
        error_type: None,
        error_message: message,
        detail: None,
        record_url: None,
    }
}

#[tokio::test]
async fn telemetry_writes_go_25_per_batch_and_refuse_an_item_over_400_kb() {
    let env = TestEnv::start().await;
    let store = &env.app.telemetry;
    let events: Vec<TelemetryEvent> = (0..51).map(|i| event(i, None)).collect();
    assert_eq!(store.write_events("org", &events[..25]).await.unwrap(), 1);
    assert_eq!(
        store.write_events("org", &events).await.unwrap(),
        3,
        "25 + 25 + 1"
    );
    assert_eq!(store.scan_all().await.unwrap().len(), 51);

    // An item past 400 KB (the domain never makes one; this is the store's own guard): refused whole,
    // before any call — the valid events beside it are not half-written either.
    let mut batch: Vec<TelemetryEvent> = (100..110).map(|i| event(i, None)).collect();
    batch.push(event(999, Some("x".repeat(401 * 1024))));
    let err = store.write_events("org", &batch).await.unwrap_err();
    assert!(matches!(err, StoreError::ItemTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("auditevt_000999"), "{err}");
    assert_eq!(store.scan_all().await.unwrap().len(), 51);

    // Quarantine: raw text far past the limit is capped, so it is stored.
    let huge = Quarantined {
        key: "auditevt_q".into(),
        raw: "r".repeat(2 * 1024 * 1024),
        reason: "why".repeat(10_000),
    };
    assert_eq!(
        store
            .write_quarantined("org", &tenant(0), &[huge])
            .await
            .unwrap(),
        1
    );
    let q = store
        .scan_all()
        .await
        .unwrap()
        .into_iter()
        .find(|i| matches!(i.get(EVENT_UID), Some(AttributeValue::S(u)) if u.starts_with("quarantine#")))
        .unwrap();
    assert!(claresia_aws::batch::item_size(&q) < 70 * 1024);
}

#[tokio::test]
async fn hub_documents_over_400_kb_are_refused_before_sending() {
    let env = TestEnv::start().await;
    let hub = &env.app.hub;
    let err = hub
        .put_publish_report(
            &tenant(1),
            &tenant(1),
            &json!({"names": "n".repeat(410 * 1024)}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ItemTooLarge { .. }), "{err}");
    assert_eq!(env.hub_dump().await, "[]");
}

#[tokio::test]
async fn poll_states_are_read_100_per_batch_and_stay_small() {
    let env = TestEnv::start().await;
    let hub = &env.app.hub;
    let tenants: Vec<TenantSlug> = (0..250).map(tenant).collect();
    for t in &tenants {
        assert!(hub
            .advance_cursor(t, None, &format!("cursor-{t}"))
            .await
            .unwrap());
    }
    // A status with an upstream message of any size is stored cut, so 100 items stay far inside the
    // 16 MB a BatchGetItem answer may carry.
    let status = PollStatus {
        error: Some("e".repeat(1024 * 1024)),
        ..PollStatus::default()
    };
    hub.record_poll_status(&tenants[0], &status).await.unwrap();
    let states = hub.poll_states(&tenants).await.unwrap();
    assert_eq!(states.len(), 250, "three batches: 100 + 100 + 50");
    for t in &tenants {
        assert_eq!(
            states[t].cursor.as_deref(),
            Some(format!("cursor-{t}").as_str())
        );
    }
    let stored_error = states[&tenants[0]].status.error.clone().unwrap();
    assert!(stored_error.len() <= 1024, "{}", stored_error.len());
}

#[tokio::test]
async fn keys_are_read_20_per_batch() {
    let env = TestEnv::start().await;
    let tenants: Vec<TenantSlug> = (0..45).map(tenant).collect();
    for (i, t) in tenants.iter().enumerate() {
        let key = AdminKey::parse(&format!(
            "sk-ant-admin01-batch-{i:04}-0000000000000000000000KEY"
        ))
        .unwrap();
        env.app.keys.put(t, &key).await.unwrap();
    }
    let keys = env.app.keys.get_many(&tenants).await.unwrap();
    assert_eq!(keys.len(), 45, "three batches: 20 + 20 + 5");
    assert!(keys[&tenants[44]].expose().contains("batch-0044"));
}

/// Lambda answers at most 6 MB: the tenant's status with 1,000 sub-tenants, each whose last publish created
/// 100 skills of the longest names, stays far under it (the first page of sub-tenants and their trimmed
/// reports), and the list route it points to reaches every sub-tenant.
#[tokio::test]
async fn the_status_stays_far_under_6_mb_with_1000_sub_tenants() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    let hub = TenantSlug::parse("dainese").unwrap();
    let now = time::OffsetDateTime::now_utc();
    // The registry's listing items and the stored reports, as the store writes them, 25 to a batch (a
    // registration transaction each would cost moto a copy of the whole table every time).
    let item = |sk: String, doc: String, link: bool| {
        let mut item = std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S("TENANT#dainese".into())),
            ("sk".to_owned(), AttributeValue::S(sk)),
            ("doc".to_owned(), AttributeValue::S(doc)),
        ]);
        if link {
            item.insert("parent".into(), AttributeValue::S("dainese".into()));
            item.insert("active".into(), AttributeValue::Bool(true));
        }
        aws_sdk_dynamodb::types::WriteRequest::builder()
            .put_request(
                aws_sdk_dynamodb::types::PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let mut writes = Vec::new();
    for i in 0..1000 {
        let sub = TenantSlug::parse(&format!("dainese-s{i:04}")).unwrap();
        let link = claresia_domain::SubTenant {
            tenant: sub.clone(),
            parent: hub.clone(),
            active: true,
            created_at: now,
            created_by: Some("user-1".into()),
            removed_at: None,
        };
        writes.push(item(
            format!("SUBTENANT#{sub}"),
            serde_json::to_string(&link).unwrap(),
            true,
        ));
        // 63-character names, the longest a 13-character sub-tenant slug allows.
        let names = (0..100)
            .map(|j| format!("claresia-{sub}-{:-<40}", format!("skill-{j:03}")))
            .collect();
        let report = claresia_api::publish::TargetReport {
            tenant: sub.clone(),
            at: now,
            complete: true,
            created: names,
            updated: vec![],
            deleted: vec![],
            unchanged: vec![],
            failed: vec![],
            pending: vec![],
        };
        writes.push(item(
            format!("PUBLISH#{sub}"),
            serde_json::to_string(&report.stored()).unwrap(),
            false,
        ));
    }
    let dynamo = env.dynamo();
    for batch in writes.chunks(25) {
        let out = dynamo
            .batch_write_item()
            .request_items(env.app.config.hub_table.clone(), batch.to_vec())
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items.unwrap_or_default().is_empty());
    }

    let a = env
        .send(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // As API Gateway's proxy response carries it: the body JSON-encoded once more.
    let wire = serde_json::to_string(&serde_json::to_string(&a.body).unwrap())
        .unwrap()
        .len();
    assert!(wire < 4 * 1024 * 1024, "{wire} bytes");
    println!("status with 1,000 sub-tenants × 100 published names: {wire} bytes on the wire");
    assert_eq!(a.body["sub_tenants"].as_array().unwrap().len(), 100);
    let first = &a.body["last_publish"]["dainese-s0000"];
    assert_eq!(first["counts"]["created"], 100, "{first}");
    assert_eq!(first["created"].as_array().unwrap().len(), 20);
    assert_eq!(first["names_truncated"], true);
    // Following the cursor on the list route reaches all 1,000.
    let mut seen = 100;
    let mut cursor = a.body["sub_tenants_next_cursor"]
        .as_str()
        .map(str::to_owned);
    while let Some(c) = cursor {
        let p = env
            .send(
                As::Tenant("dainese"),
                "GET",
                &format!("/tenants/dainese/sub-tenants?limit=100&cursor={c}"),
                None,
                &[],
            )
            .await;
        assert_eq!(p.status, 200, "{}", p.body);
        seen += p.body["sub_tenants"].as_array().unwrap().len();
        cursor = p.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 1000);
}
