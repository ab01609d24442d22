//! Capabilities 1 and 2 end to end: the real handler, moto's Secrets Manager and DynamoDB, the simulator.

use claresia_tests::*;
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn connect_trims_the_key_stores_it_and_reports_status() {
    let env = TestEnv::start().await;
    let (status, body) = env.connect("dainese", &format!("  {GOOD_KEY} \n")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["connected"], true);
    assert_eq!(body["rotated"], false);
    assert_eq!(body["test"]["code"], "success");
    assert_eq!(body["test"]["organization"]["name"], "Dainese S.p.A.");
    assert_eq!(
        body["test"]["workspace_count"], 3,
        "archived workspaces do not count"
    );
    assert_eq!(
        body["test"]["scopes"]["verified"],
        json!([
            "Skills:write",
            "Skills:read",
            "Audit:read",
            "Workspaces:read"
        ])
    );

    // The trimmed key is the secret's value, under the spec's name, tagged with the tenant.
    assert_eq!(env.secret_value("dainese").await.as_deref(), Some(GOOD_KEY));
    let described = env
        .secrets()
        .describe_secret()
        .secret_id(env.secret_name("dainese"))
        .send()
        .await
        .unwrap();
    let tags: Vec<(String, String)> = described
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().into(),
                t.value().unwrap_or_default().into(),
            )
        })
        .collect();
    assert!(
        tags.contains(&("claresia:tenant".into(), "dainese".into())),
        "{tags:?}"
    );

    // The key is nowhere in DynamoDB or the response; the fingerprint is.
    let dump = env.hub_dump().await;
    assert!(
        !dump.contains(GOOD_KEY) && !dump.contains("demo-dainese-good"),
        "{dump}"
    );
    assert!(!body.to_string().contains("demo-dainese-good"));

    let (status, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(st["connected"], true);
    assert_eq!(st["state"], "connected");
    assert_eq!(st["organization"]["id"], DAINESE_ORG_ID);
    assert_eq!(st["workspace_count"], 3);
    assert_eq!(st["zero_retention"], "enabled");
    assert_eq!(st["key"]["age_days"], 0);
    assert_eq!(st["key"]["rotation_due"], false);
    let fp = st["key"]["fingerprint"].as_str().unwrap();
    assert!(fp.starts_with("…GOOD sha256:"), "{fp}");
    assert_eq!(st["publishing"]["allowed"], true);

    // What Anthropic received: the contract's headers, the trimmed key.
    let reqs = env.sim_requests().await;
    let me = reqs
        .iter()
        .find(|r| r["route"] == "GET /v1/organizations/me")
        .expect("called /organizations/me");
    assert_eq!(me["api_key_last4"], "GOOD");
    assert_eq!(me["anthropic_version"], "2023-06-01");
    assert!(me["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("claresia-connector/"));
    assert!(reqs
        .iter()
        .any(|r| r["route"] == "GET /v1/organizations/workspaces"));
}

#[tokio::test]
async fn candidate_key_tests_give_each_verdict_and_store_nothing() {
    let env = TestEnv::start().await;
    let test = |key: &str| {
        let body = json!({"admin_api_key": key}).to_string();
        let env = &env;
        async move {
            env.call(
                As::Tenant("dainese"),
                "POST",
                "/tenants/dainese/connection/test",
                Some(&body),
            )
            .await
        }
    };

    let (s, ok) = test(&format!("{GOOD_KEY} ")).await;
    assert_eq!((s, ok["code"].as_str()), (200, Some("success")), "{ok}");
    assert_eq!(ok["ok"], true);

    let (s, noaudit) = test(NO_AUDIT_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(noaudit["code"], "missing_scopes");
    assert_eq!(noaudit["scopes"]["missing"], json!(["Audit:read"]));
    let msg = noaudit["message"].as_str().unwrap();
    assert!(
        msg.contains("Audit:read")
            && msg.contains("Skills:write, Skills:read, Audit:read, Workspaces:read"),
        "{msg}"
    );

    let (s, nozr) = test(NO_ZR_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(nozr["code"], "zero_retention_disabled");
    assert_eq!(nozr["zero_retention"], "disabled");
    assert_eq!(
        nozr["message"],
        "Zero-retention not enabled — Claresia refuses to publish. Enable zero-retention in Anthropic Console → Settings → Privacy."
    );

    let (s, unknown) = test(UNKNOWN_ZR_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(unknown["code"], "zero_retention_disabled");
    assert_eq!(unknown["zero_retention"], "unknown");
    assert!(unknown["message"]
        .as_str()
        .unwrap()
        .contains("could not be confirmed"));

    let (s, bad) = test(REVOKED_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(bad["code"], "unauthorized");
    assert!(bad["message"]
        .as_str()
        .unwrap()
        .contains("Re-paste the key"));
    assert!(bad["request_id"].as_str().unwrap().starts_with("req_"));

    // Nothing was stored by any of it.
    assert_eq!(env.secret_value("dainese").await, None);
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["connected"], false);
    assert_eq!(env.hub_dump().await, "[]");
}

#[tokio::test]
async fn connect_refuses_bad_keys_and_writes_nothing() {
    let env = TestEnv::start().await;
    let (s, b) = env.connect("dainese", NO_AUDIT_KEY).await;
    assert_eq!((s, code(&b)), (400, "missing_scopes"), "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Audit:read"));
    let (s, b) = env.connect("dainese", REVOKED_KEY).await;
    assert_eq!((s, code(&b)), (400, "unauthorized"), "{b}");
    let (s, b) = env.connect("dainese", "sk-ant-api03-regular-key").await;
    assert_eq!((s, code(&b)), (400, "invalid_admin_key"));
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Admin API key"));
    let (s, b) = env.connect("dainese", "hello").await;
    assert_eq!((s, code(&b)), (400, "invalid_admin_key"));
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sk-ant-admin01-"));
    assert_eq!(env.secret_value("dainese").await, None);
    assert_eq!(env.hub_dump().await, "[]");
}

#[tokio::test]
async fn zero_retention_off_saves_the_connection_but_refuses_publishing() {
    let env = TestEnv::start().await;
    let (s, b) = env.connect("retention", NO_ZR_KEY).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["test"]["code"], "zero_retention_disabled");
    assert_eq!(b["status"]["publishing"]["allowed"], false);
    assert!(b["status"]["publishing"]["reason"]
        .as_str()
        .unwrap()
        .contains("Zero-retention not enabled"));
    // A later test that sees it enabled lifts the refusal.
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{NO_ZR_ORG_ID}"),
        json!({"zero_retention": true}),
    )
    .await;
    let (s, t) = env
        .call(
            As::Tenant("retention"),
            "POST",
            "/tenants/retention/connection/test",
            None,
        )
        .await;
    assert_eq!((s, t["code"].as_str()), (200, Some("success")), "{t}");
    let (_, st) = env
        .call(
            As::Tenant("retention"),
            "GET",
            "/tenants/retention/connection",
            None,
        )
        .await;
    assert_eq!(st["publishing"]["allowed"], true);
    assert_eq!(st["last_test"]["code"], "success");
}

#[tokio::test]
async fn rotation_tests_first_and_keeps_the_old_key_when_the_new_one_fails() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    let (s, b) = env.connect("dainese", ROTATED_KEY).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rotated"], true);
    assert_eq!(
        env.secret_value("dainese").await.as_deref(),
        Some(ROTATED_KEY)
    );
    let versions = env
        .secrets()
        .list_secret_version_ids()
        .secret_id(env.secret_name("dainese"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.versions().len(),
        2,
        "a new version, the old one kept"
    );

    // A failing new key changes nothing.
    let (s, b) = env.connect("dainese", REVOKED_KEY).await;
    assert_eq!((s, code(&b)), (400, "unauthorized"));
    assert_eq!(
        env.secret_value("dainese").await.as_deref(),
        Some(ROTATED_KEY)
    );
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert!(st["key"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("…ROTA"));
    assert_eq!(st["state"], "connected");

    // Reconnecting with the same key writes no new secret version.
    assert_eq!(
        env.connect("dainese", ROTATED_KEY).await.1["rotated"],
        false
    );
    let versions = env
        .secrets()
        .list_secret_version_ids()
        .secret_id(env.secret_name("dainese"))
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2);

    // A key of another organization is refused: the tenant must be disconnected first.
    let (s, b) = env.connect("dainese", NO_ZR_KEY).await;
    assert_eq!((s, code(&b)), (409, "organization_mismatch"), "{b}");
    assert_eq!(
        env.secret_value("dainese").await.as_deref(),
        Some(ROTATED_KEY)
    );
}

#[tokio::test]
async fn stored_key_test_marks_a_revoked_key_needs_attention() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    let (s, t) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/connection/test",
            None,
        )
        .await;
    assert_eq!((s, t["code"].as_str()), (200, Some("success")));
    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": GOOD_KEY}))
        .await;
    let (s, t) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/connection/test",
            Some(""),
        )
        .await;
    assert_eq!((s, t["code"].as_str()), (200, Some("unauthorized")), "{t}");
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["state"], "needs_attention");
    assert_eq!(st["publishing"]["allowed"], false);
    // Rotating to a working key clears it.
    assert_eq!(env.connect("dainese", ROTATED_KEY).await.0, 200);
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["state"], "connected");
}

#[tokio::test]
async fn disconnect_schedules_the_secret_deletion_and_can_be_repeated() {
    let env = TestEnv::start().await;
    let (s, b) = env
        .call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (404, "not_connected"));
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    let (s, b) = env
        .call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["disconnected"], true);
    assert_eq!(b["telemetry_kept"], true);
    let when = time::OffsetDateTime::parse(
        b["secret_deletion_date"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (when - time::OffsetDateTime::now_utc()).whole_hours() as f64 / 24.0;
    assert!((6.9..=7.1).contains(&days), "{days}");
    let described = env
        .secrets()
        .describe_secret()
        .secret_id(env.secret_name("dainese"))
        .send()
        .await
        .unwrap();
    assert!(described.deleted_date().is_some(), "scheduled for deletion");
    assert_eq!(env.secret_value("dainese").await, None);

    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["connected"], false);
    assert_eq!(st["state"], "disconnected");
    let (s, t) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/connection/test",
            None,
        )
        .await;
    assert_eq!((s, code(&t)), (404, "not_connected"));
    let (s, again) = env
        .call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["secret_deletion_date"], b["secret_deletion_date"]);

    // Reconnecting restores the secret and stores the new key.
    let (s, b) = env.connect("dainese", ROTATED_KEY).await;
    assert_eq!(s, 201, "a new live connection: {b}");
    assert_eq!(
        env.secret_value("dainese").await.as_deref(),
        Some(ROTATED_KEY)
    );
}

#[tokio::test]
async fn anthropic_outage_answers_503_with_the_request_id_and_stores_nothing() {
    let env = TestEnv::start().await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/me", "fail": {"status": 529, "count": 8}}),
    )
    .await;
    let (s, b) = env.connect("dainese", GOOD_KEY).await;
    assert_eq!((s, code(&b)), (503, "anthropic_unavailable"), "{b}");
    let rid = b["error"]["anthropic_request_id"].as_str().unwrap();
    assert!(rid.starts_with("req_"));
    assert!(b["error"]["message"].as_str().unwrap().contains(rid));
    assert!(b["error"]["message"].as_str().unwrap().contains("529"));
    assert_eq!(env.secret_value("dainese").await, None);
    // Exactly the contract's four attempts.
    let me = env
        .sim_requests()
        .await
        .into_iter()
        .filter(|r| r["route"] == "GET /v1/organizations/me")
        .count();
    assert_eq!(me, 4);
    // Once Anthropic recovers, the same call succeeds.
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
}

#[tokio::test]
async fn tenant_isolation_is_enforced_before_any_io() {
    let env = TestEnv::start().await;
    let body = json!({"admin_api_key": GOOD_KEY}).to_string();
    let (s, b) = env
        .call(
            As::Tenant("acme"),
            "PUT",
            "/tenants/dainese/connection",
            Some(&body),
        )
        .await;
    assert_eq!((s, code(&b)), (403, "forbidden"));
    let (s, _) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese-sales/connection",
            None,
        )
        .await;
    assert_eq!(s, 403, "a prefix is not a parent");
    let (s, b) = env
        .call(As::Anonymous, "GET", "/tenants/dainese/connection", None)
        .await;
    assert_eq!((s, code(&b)), (401, "unauthenticated"));
    assert!(
        env.sim_requests().await.is_empty(),
        "Anthropic was not called"
    );
    assert_eq!(env.hub_dump().await, "[]");
    assert_eq!(env.secret_value("dainese").await, None);

    // An operator may act on any tenant.
    let (s, _) = env
        .call(
            As::Operator,
            "PUT",
            "/tenants/dainese/connection",
            Some(&body),
        )
        .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn malformed_input_gets_a_clear_400() {
    let env = TestEnv::start().await;
    let put = |path: &'static str, body: String| {
        let env = &env;
        async move { env.call(As::Operator, "PUT", path, Some(&body)).await }
    };
    for bad in ["Dainese", "dai--nese", "-x", "a_b", &"a".repeat(33)] {
        let (s, b) = env
            .call(
                As::Operator,
                "GET",
                &format!("/tenants/{bad}/connection"),
                None,
            )
            .await;
        assert_eq!((s, code(&b)), (400, "invalid_tenant"), "{bad}");
    }
    let (s, b) = put("/tenants/dainese/connection", "{".into()).await;
    assert_eq!((s, code(&b)), (400, "invalid_body"));
    let (s, b) = put("/tenants/dainese/connection", "".into()).await;
    assert_eq!((s, code(&b)), (400, "invalid_body"));
    let (s, b) = put(
        "/tenants/dainese/connection",
        json!({"admin_api_kye": GOOD_KEY}).to_string(),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_body"));
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("admin_api_kye"), "{msg}");
    assert!(
        !b.to_string().contains("demo-dainese-good"),
        "the key is not echoed"
    );
    let (s, b) = put(
        "/tenants/dainese/connection",
        json!({"admin_api_key": 42}).to_string(),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_body"));
    let big = json!({"admin_api_key": "x".repeat(300 * 1024)}).to_string();
    let (s, b) = put("/tenants/dainese/connection", big).await;
    assert_eq!((s, code(&b)), (400, "body_too_large"));
    let (s, b) = env.call(As::Operator, "GET", "/nope", None).await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = env
        .call(As::Operator, "PATCH", "/tenants/dainese/connection", None)
        .await;
    assert_eq!((s, code(&b)), (405, "method_not_allowed"));
    assert!(env.sim_requests().await.is_empty());
    assert_eq!(env.hub_dump().await, "[]");
}

/// Issue 11: a DELETE …/connection that died after scheduling the secret's deletion (before recording the
/// disconnect) is retried successfully, as often as the portal likes.
#[tokio::test]
async fn a_retried_disconnect_finishes_whatever_step_the_first_one_died_after() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    let tenant = claresia_domain::TenantSlug::parse("dainese").unwrap();
    // The first attempt got as far as scheduling the deletion.
    env.app.keys.schedule_deletion(&tenant, 7).await.unwrap();
    for attempt in 0..3 {
        let (s, b) = env
            .call(
                As::Tenant("dainese"),
                "DELETE",
                "/tenants/dainese/connection",
                None,
            )
            .await;
        assert_eq!(s, 200, "attempt {attempt}: {b}");
        assert_eq!(b["disconnected"], true);
        assert!(b["secret_deletion_date"].is_string(), "{b}");
    }
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["state"], "disconnected", "{st}");
    assert_eq!(env.secret_value("dainese").await, None);
}

/// Issue 11: the connection record is written only at the version it was read at. A stored-key test racing
/// a rotation used to write the old key's record back; now the record always describes the stored key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_racing_a_rotation_never_writes_the_old_key_back() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    for round in 0..20 {
        let next = if round % 2 == 0 {
            ROTATED_KEY
        } else {
            GOOD_KEY
        };
        let body = json!({"admin_api_key": next}).to_string();
        let (rotate, test) = tokio::join!(
            env.call(
                As::Tenant("dainese"),
                "PUT",
                "/tenants/dainese/connection",
                Some(&body)
            ),
            env.call(
                As::Tenant("dainese"),
                "POST",
                "/tenants/dainese/connection/test",
                None
            ),
        );
        assert!(
            [200, 409].contains(&rotate.0),
            "round {round}: {}",
            rotate.1
        );
        assert!([200, 409].contains(&test.0), "round {round}: {}", test.1);
        let stored = env.secret_value("dainese").await.unwrap();
        let fingerprint = claresia_domain::AdminKey::parse(&stored)
            .unwrap()
            .fingerprint()
            .to_string();
        let (_, st) = env
            .call(
                As::Tenant("dainese"),
                "GET",
                "/tenants/dainese/connection",
                None,
            )
            .await;
        assert_eq!(
            st["key"]["fingerprint"],
            fingerprint.as_str(),
            "round {round}: {st}"
        );
        assert_eq!(st["state"], "connected", "round {round}: {st}");
    }
}
