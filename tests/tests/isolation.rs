//! Tenant isolation through the real handlers against moto and the simulator: the attacks issue 10 found,
//! each as a regression test, the sub-tenant registry's rules, and authorization with the store down.
//! The route × caller × target matrix is in `authorization_matrix.rs`.

use std::time::Duration;

use claresia_anthropic::Deadline;
use claresia_tests::*;
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn call(
    env: &TestEnv,
    who: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    env.call(As::Tenant(who), method, path, body.as_deref())
        .await
}

/// `tenant` connected to the Dainese org with one skill granted to one archetype (so it is published).
async fn connected_with_skill(env: &TestEnv, tenant: &str) {
    assert_eq!(env.connect(tenant, GOOD_KEY).await.0, 201);
    let (s, b) = env
        .put_doc(
            tenant,
            "/skills/standup-notes",
            &example("skill-standup-notes.json"),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .put_doc(
            tenant,
            "/archetypes/eng",
            &json!({"skills": ["standup-notes"], "group_ids": ["grp_engineering"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

async fn emit(env: &TestEnv, skill_name: &str, count: u32) {
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}/audit_events"),
        json!({"invoke": {"skill_name": skill_name, "count": count, "workspace_id": WS_ENGINEERING}}),
    )
    .await;
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

/// Why 1: a tenant cannot claim another customer's slug — not an offboarded one with telemetry, not one
/// outside its own namespace — and a slug registered later as a sub-tenant cannot write its parent's Hub.
#[tokio::test]
async fn nobody_claims_another_tenants_slug() {
    let env = TestEnv::start().await;
    // The victim: a real tenant with telemetry, then offboarded (telemetry kept by design).
    connected_with_skill(&env, "acme-corp").await;
    emit(&env, "claresia-acme-corp-standup-notes", 3).await;
    let tick = env.app.poll_all(deadline()).await.unwrap();
    assert_eq!(tick.events_ingested, 3);
    let (s, _) = call(
        &env,
        "acme-corp",
        "DELETE",
        "/tenants/acme-corp/connection",
        None,
    )
    .await;
    assert_eq!(s, 200);

    // The claimer.
    connected_with_skill(&env, "acme").await;
    // Mappings are checked against the org's live workspace list (a read), then refused whole.
    let before = env.footprint().await;
    for slug in ["acme-corp", "dainese"] {
        let (s, b) = call(
            &env,
            "acme",
            "PUT",
            "/tenants/acme/workspaces",
            Some(json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": slug}]})),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(
            b["error"]["problems"][0]["path"],
            "$.mappings[0].sub_tenant"
        );
    }
    let after = env.footprint().await;
    assert_eq!((&before.hub, &before.secrets), (&after.hub, &after.secrets));
    let before = env.footprint().await;
    let (s, b) = call(
        &env,
        "acme",
        "PUT",
        "/tenants/acme/sub-tenants/acme-corp",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_unavailable"), "{b}");
    assert!(!b.to_string().contains("telemetry history"), "{b}");
    for slug in ["acme-corp", "dainese"] {
        let (s, b) = call(
            &env,
            "acme",
            "PUT",
            "/tenants/acme/archetypes/eng",
            Some(json!({"skills": ["standup-notes"], "sub_tenant": slug})),
        )
        .await;
        assert_eq!((s, code(&b)), (400, "invalid_archetype"), "{b}");
        assert_eq!(b["error"]["problems"][0]["path"], "$.sub_tenant");
    }
    let (s, b) = call(
        &env,
        "acme",
        "PUT",
        "/tenants/acme/sub-tenants/dainese",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_sub_tenant"), "{b}");
    let (s, _) = call(&env, "acme", "GET", "/tenants/acme-corp/telemetry", None).await;
    assert_eq!(s, 403, "the victim's telemetry stays the victim's");
    let (s, _) = call(
        &env,
        "acme",
        "PUT",
        "/tenants/acme-corp/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!(s, 403);
    assert_unchanged(&before, &env.footprint().await, "claims");

    // The offboarded tenant's own token and operators still read its telemetry; it can come back.
    let (s, t) = call(
        &env,
        "acme-corp",
        "GET",
        "/tenants/acme-corp/telemetry",
        None,
    )
    .await;
    assert_eq!((s, t["events"].as_array().unwrap().len()), (200, 3));
    let (s, _) = env
        .call(As::Operator, "GET", "/tenants/acme-corp/telemetry", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(env.connect("acme-corp", GOOD_KEY).await.0, 201);

    // A slug onboarding later as a sub-tenant, created explicitly by its parent: its own token never
    // writes the parent's Hub or connects a key of its own.
    env.register_sub_tenant("acme", "acme-new").await;
    let before = env.footprint().await;
    let (s, _) = call(
        &env,
        "acme-new",
        "PUT",
        "/tenants/acme-new/skills/standup-notes",
        Some(example("skill-standup-notes.json")),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        &env,
        "acme-new",
        "PUT",
        "/tenants/acme-new/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!(s, 403);
    assert_unchanged(&before, &env.footprint().await, "refusal");
}

/// Why 2: a sub-tenant's own token reads its status and telemetry, and writes nothing of its parent's.
#[tokio::test]
async fn a_sub_tenant_token_cannot_write_its_parents_hub() {
    let env = TestEnv::start().await;
    connected_with_skill(&env, "dainese").await;
    env.register_sub_tenant("dainese", "dainese-eng").await;
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/workspaces",
        Some(json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let published = env.sim_skills().await.len();
    let before = env.footprint().await;
    let sub = "dainese-eng";
    for (method, path, body) in [
        ("DELETE", "/tenants/dainese-eng/skills/standup-notes", None),
        (
            "PUT",
            "/tenants/dainese-eng/skills/standup-notes",
            Some(example("skill-standup-notes.json")),
        ),
        (
            "PUT",
            "/tenants/dainese-eng/archetypes/eng",
            Some(json!({"skills": []})),
        ),
        ("DELETE", "/tenants/dainese-eng/archetypes/eng", None),
        (
            "PUT",
            "/tenants/dainese-eng/workspaces",
            Some(
                json!({"mappings": [{"workspace_id": WS_CORPORATE, "sub_tenant": "dainese-eng"}]}),
            ),
        ),
        ("POST", "/tenants/dainese-eng/republish", None),
        ("GET", "/tenants/dainese-eng/skills", None),
        (
            "PUT",
            "/tenants/dainese-eng/connection",
            Some(json!({"admin_api_key": GOOD_KEY})),
        ),
        ("DELETE", "/tenants/dainese-eng/connection", None),
        ("POST", "/tenants/dainese-eng/connection/test", None),
        ("PUT", "/tenants/dainese/sub-tenants/dainese-eng-x", None),
        ("DELETE", "/tenants/dainese/skills/standup-notes", None),
        ("GET", "/tenants/dainese/telemetry", None),
        ("GET", "/tenants/dainese-ops/telemetry", None),
    ] {
        let (s, b) = call(&env, sub, method, path, body).await;
        assert_eq!((s, code(&b)), (403, "forbidden"), "{method} {path}: {b}");
    }
    assert_unchanged(&before, &env.footprint().await, "sub-tenant token");
    assert_eq!(env.sim_skills().await.len(), published);

    let (s, st) = call(&env, sub, "GET", "/tenants/dainese-eng/connection", None).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (st["tenant"].as_str(), st["parent"].as_str()),
        (Some(sub), Some("dainese"))
    );
    assert!(
        st.get("sub_tenants").is_none(),
        "siblings are not shown: {st}"
    );
    let (s, _) = call(&env, sub, "GET", "/tenants/dainese-eng/telemetry", None).await;
    assert_eq!(s, 200);
}

/// Why 3: connection routes on a sub-tenant's path never create a second connection for it.
#[tokio::test]
async fn connection_routes_on_a_sub_tenant_path_are_refused() {
    let env = TestEnv::start().await;
    connected_with_skill(&env, "dainese").await;
    env.register_sub_tenant("dainese", "dainese-eng").await;
    let before = env.footprint().await;
    for who in [As::Tenant("dainese"), As::Operator] {
        for (method, path, body) in [
            (
                "PUT",
                "/tenants/dainese-eng/connection",
                Some(json!({"admin_api_key": GOOD_KEY}).to_string()),
            ),
            ("DELETE", "/tenants/dainese-eng/connection", None),
            ("POST", "/tenants/dainese-eng/connection/test", None),
        ] {
            let (s, b) = env.call(who, method, path, body.as_deref()).await;
            assert_eq!(
                (s, code(&b)),
                (409, "sub_tenant_shares_connection"),
                "{method} {path}: {b}"
            );
            assert!(b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/tenants/dainese/connection"));
        }
    }
    assert_unchanged(&before, &env.footprint().await, "refusal");
    assert_eq!(env.secret_value("dainese-eng").await, None);
    // The parent's skills are all still published.
    assert!(env
        .sim_skills()
        .await
        .iter()
        .any(|s| s["name"] == "claresia-dainese-standup-notes"));
}

/// Why 4: a caller that can never be allowed is refused before any I/O: with the store unreachable it is
/// still 403 (a read would have failed); an allowed caller gets 503 `store_unavailable`, never 500.
#[tokio::test]
async fn authorization_needs_no_store_and_a_store_outage_is_503() {
    let env = TestEnv::start().await;
    let dead = claresia_local::sdk_config("http://127.0.0.1:9").await;
    let app = claresia_api::App::new(env.app.config.clone(), &dead).unwrap();
    let request = |who: Value, path: &str| {
        let (parts, ()) = http::Request::builder()
            .method("GET")
            .uri(format!("https://api.example.com{path}"))
            .body(())
            .unwrap()
            .into_parts();
        claresia_local::gateway::to_lambda_request(
            parts,
            Vec::new(),
            who.as_object().cloned().unwrap(),
        )
    };
    for (claims, path) in [
        (
            json!({"claresia:tenant": "other"}),
            "/tenants/dainese/connection",
        ),
        (
            json!({"claresia:tenant": "dainese-eng"}),
            "/tenants/dainese/skills",
        ),
        (
            json!({"claresia:tenant": "dainese-eng"}),
            "/tenants/dainese-ops/telemetry",
        ),
        (
            json!({"claresia:tenant": ""}),
            "/tenants/dainese/connection",
        ),
        (
            json!({"claresia:tenant": ["dainese"]}),
            "/tenants/dainese/connection",
        ),
    ] {
        let resp = app.handle(request(claims.clone(), path)).await;
        assert_eq!(resp.status(), 403, "{claims} {path}");
    }
    let resp = app
        .handle(request(
            json!({"claresia:tenant": "dainese"}),
            "/tenants/dainese/connection",
        ))
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(code(&body), "store_unavailable");
    assert!(env.sim_requests().await.is_empty());
}

/// The registry's rules: naming, a slug with data of its own, another parent, removal while named,
/// removal keeping telemetry readable by the parent, and bringing a removed sub-tenant back.
#[tokio::test]
async fn sub_tenants_are_created_and_removed_by_their_parent_only() {
    let env = TestEnv::start().await;
    connected_with_skill(&env, "dainese").await;
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/sub-tenants/dainese-eng",
        Some(json!({})),
    )
    .await;
    assert_eq!((s, b["created"].as_bool()), (201, Some(true)), "{b}");
    assert_eq!(b["sub_tenant"]["created_by"], "user-1");
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/sub-tenants/dainese-eng",
        None,
    )
    .await;
    assert_eq!(
        (s, b["created"].as_bool()),
        (200, Some(false)),
        "idempotent: {b}"
    );
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/sub-tenants/dainese-eng",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_body"));
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/sub-tenants/Dainese-Eng",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_tenant"));

    // Another parent cannot take it; a slug with a connection of its own cannot become one.
    assert_eq!(env.connect("dainese-solo", GOOD_KEY).await.0, 201);
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/sub-tenants/dainese-solo",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_unavailable"), "{b}");
    // A sub-tenant has no sub-tenants, and its slug cannot be registered under a second parent.
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese-eng/sub-tenants/dainese-eng-x",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (409, "nested_sub_tenant"), "{b}");

    // Named by an archetype and a mapping: removal is refused, naming both.
    let (s, b) = call(&env, "dainese", "PUT", "/tenants/dainese/archetypes/oncall",
        Some(json!({"skills": ["standup-notes"], "group_ids": ["grp_oncall"], "sub_tenant": "dainese-eng"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/workspaces",
        Some(json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    emit(&env, "claresia-dainese-eng-standup-notes", 2).await;
    assert_eq!(
        env.app.poll_all(deadline()).await.unwrap().events_ingested,
        2
    );
    let (s, list) = call(&env, "dainese", "GET", "/tenants/dainese/sub-tenants", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["sub_tenants"][0]["archetypes"], json!(["oncall"]));
    assert_eq!(
        list["sub_tenants"][0]["workspace_ids"],
        json!([WS_ENGINEERING])
    );
    let before = env.footprint().await;
    let (s, b) = call(
        &env,
        "dainese",
        "DELETE",
        "/tenants/dainese/sub-tenants/dainese-eng",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_in_use"), "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("archetype oncall") && message.contains(WS_ENGINEERING),
        "{message}"
    );
    assert_unchanged(&before, &env.footprint().await, "refusal");

    // Once nothing names it: removed; its skill was already unpublished by the archetype change; its
    // telemetry stays readable by the parent and operators, not by its own token.
    let (s, _) = call(
        &env,
        "dainese",
        "DELETE",
        "/tenants/dainese/archetypes/oncall",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/workspaces",
        Some(json!({"mappings": []})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(!env
        .sim_skills()
        .await
        .iter()
        .any(|s| s["name"] == "claresia-dainese-eng-standup-notes"));
    let (s, b) = call(
        &env,
        "dainese",
        "DELETE",
        "/tenants/dainese/sub-tenants/dainese-eng",
        None,
    )
    .await;
    assert_eq!((s, b["removed"].as_bool()), (200, Some(true)), "{b}");
    let (s, t) = call(
        &env,
        "dainese",
        "GET",
        "/tenants/dainese-eng/telemetry",
        None,
    )
    .await;
    assert_eq!((s, t["events"].as_array().map(Vec::len)), (200, Some(2)));
    let (s, _) = env
        .call(As::Operator, "GET", "/tenants/dainese-eng/telemetry", None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &env,
        "dainese-eng",
        "GET",
        "/tenants/dainese-eng/telemetry",
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/archetypes/oncall",
        Some(json!({"skills": ["standup-notes"], "sub_tenant": "dainese-eng"})),
    )
    .await;
    assert_eq!(s, 400, "a removed sub-tenant cannot be named: {b}");
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese-eng/skills/standup-notes",
        Some(example("skill-standup-notes.json")),
    )
    .await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_removed"));
    // Still nobody else's: its telemetry is its own data now.
    let (s, _) = call(
        &env,
        "dainese-eng",
        "PUT",
        "/tenants/dainese-eng/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!(s, 403);

    // Its parent can bring it back.
    let (s, b) = call(
        &env,
        "dainese",
        "PUT",
        "/tenants/dainese/sub-tenants/dainese-eng",
        None,
    )
    .await;
    assert_eq!((s, b["restored"].as_bool()), (200, Some(true)), "{b}");
    let (s, _) = call(
        &env,
        "dainese-eng",
        "GET",
        "/tenants/dainese-eng/telemetry",
        None,
    )
    .await;
    assert_eq!(s, 200);
}
