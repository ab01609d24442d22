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
    // The victim: a real tenant with telemetry (a hyphenated slug, so an operator provisioned it), then
    // offboarded (telemetry kept by design).
    let (s, b) = env
        .call(As::Operator, "PUT", "/tenants/acme-corp/top-level", None)
        .await;
    assert_eq!(s, 201, "{b}");
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
    let (s, b) = call(
        &env,
        "acme-new",
        "PUT",
        "/tenants/acme-new/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!((s, code(&b)), (409, "namespace_held"), "{b}");
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
        // Its own connection routes: the slug is held by its parent, and the answer says so.
        let want = if path.starts_with("/tenants/dainese-eng/connection") {
            (409, "namespace_held")
        } else {
            (403, "forbidden")
        };
        assert_eq!((s, code(&b)), want, "{method} {path}: {b}");
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
    // Its own view, built from its own state: nothing of the parent's record.
    let mut keys: Vec<&str> = st.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active",
            "archetypes",
            "connected",
            "drift",
            "group_ids",
            "last_publish",
            "parent",
            "publishing",
            "surface",
            "tenant",
            "workspace_ids"
        ],
        "{st}"
    );
    assert_eq!(st["workspace_ids"], json!([WS_ENGINEERING]));
    assert_eq!(st["publishing"]["allowed"], true, "{st}");
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

    // Another parent cannot take it; a slug with a connection of its own (a hyphenated customer an
    // operator provisioned) cannot become one.
    let (s, b) = env
        .call(As::Operator, "PUT", "/tenants/dainese-solo/top-level", None)
        .await;
    assert_eq!(s, 201, "{b}");
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
    // Still nobody else's: the slug stays its parent's (only an operator's release gives it away).
    let (s, b) = call(
        &env,
        "dainese-eng",
        "PUT",
        "/tenants/dainese-eng/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!((s, code(&b)), (409, "namespace_held"), "{b}");

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

async fn operator(env: &TestEnv, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    env.call(As::Operator, method, path, body.as_deref()).await
}

/// The namespace rule: a hyphenated slug is a sub-tenant's name until an operator provisions it as a
/// customer of its own; once provisioned, no tenant can register it, nor anything in its namespace, and
/// the customer connects under it. An unprovisioned hyphenated slug cannot connect, and says why.
#[tokio::test]
async fn no_tenant_can_take_an_unrelated_customers_slug() {
    let env = TestEnv::start().await;
    connected_with_skill(&env, "acme").await;

    // Not provisioned: a connect is refused before the key is tested or anything is stored.
    let before = env.footprint().await;
    let sent = env.sim_requests().await.len();
    let (s, b) = call(
        &env,
        "acme-eu",
        "PUT",
        "/tenants/acme-eu/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!((s, code(&b)), (403, "tenant_not_provisioned"), "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("PUT /tenants/acme-eu/top-level"), "{b}");
    assert_unchanged(&before, &env.footprint().await, "an unprovisioned connect");
    assert_eq!(env.sim_requests().await.len(), sent, "no key was tested");

    // acme registers a slug below it while it is unclaimed (acme's namespace then).
    env.register_sub_tenant("acme", "acme-eu-ops").await;

    // An operator provisions it (audited: who and when); again, nothing changes.
    let (s, b) = operator(
        &env,
        "PUT",
        "/tenants/acme-eu/top-level",
        Some(json!({"reason": "contract 2026-114"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["top_level"]["provisioned_by"], "op-1");
    assert_eq!(b["top_level"]["reason"], "contract 2026-114");
    let (s, b) = operator(&env, "PUT", "/tenants/acme-eu/top-level", None).await;
    assert_eq!((s, &b["created"]), (200, &json!(false)), "{b}");

    // Now acme can take neither the slug nor anything below it; the customer connects under it.
    let before = env.footprint().await;
    for sub in ["acme-eu", "acme-eu-eng"] {
        let (s, b) = call(
            &env,
            "acme",
            "PUT",
            &format!("/tenants/acme/sub-tenants/{sub}"),
            None,
        )
        .await;
        assert_eq!((s, code(&b)), (409, "sub_tenant_unavailable"), "{sub}: {b}");
    }
    assert_unchanged(
        &before,
        &env.footprint().await,
        "claims on a provisioned slug",
    );
    // A sub-tenant acme registered below it before the provisioning can still be removed by acme.
    let (s, b) = call(
        &env,
        "acme",
        "DELETE",
        "/tenants/acme/sub-tenants/acme-eu-ops",
        None,
    )
    .await;
    assert_eq!((s, &b["removed"]), (200, &json!(true)), "{b}");
    assert_eq!(env.connect("acme-eu", GOOD_KEY).await.0, 201);
    env.register_sub_tenant("acme-eu", "acme-eu-eng").await;

    // A hyphenated tenant connected before the rule (a connection record, no provisioning) keeps its
    // slug and its namespace.
    let legacy = claresia_domain::TenantSlug::parse("acme-old").unwrap();
    assert!(env.app.hub.save_connection(&record(&legacy)).await.unwrap());
    for sub in ["acme-old", "acme-old-eng"] {
        let (s, b) = call(
            &env,
            "acme",
            "PUT",
            &format!("/tenants/acme/sub-tenants/{sub}"),
            None,
        )
        .await;
        assert_eq!((s, code(&b)), (409, "sub_tenant_unavailable"), "{sub}: {b}");
    }

    // Only an operator provisions or releases; nobody else, whatever its token.
    for who in ["acme", "acme-eu"] {
        for (method, route) in [("PUT", "top-level"), ("POST", "release")] {
            let (s, b) = call(
                &env,
                who,
                method,
                &format!("/tenants/acme-eu/{route}"),
                None,
            )
            .await;
            assert_eq!((s, code(&b)), (403, "forbidden"), "{who} {route}: {b}");
        }
    }
}

/// A slug a parent registered before its customer onboarded: the customer is told who holds it and how to
/// get it back; an operator releases it (refused while the parent still names it or it holds the parent's
/// telemetry), audited, and the customer connects. Nothing of the parent's follows the slug.
#[tokio::test]
async fn an_operator_releases_a_wrongly_held_slug_and_the_customer_connects() {
    let env = TestEnv::start().await;
    connected_with_skill(&env, "acme").await;
    env.register_sub_tenant("acme", "acme-eu").await;
    let (s, b) = call(
        &env,
        "acme",
        "PUT",
        "/tenants/acme/archetypes/eu",
        Some(json!({"skills": ["standup-notes"], "sub_tenant": "acme-eu"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    let before = env.footprint().await;
    let (s, b) = call(
        &env,
        "acme-eu",
        "PUT",
        "/tenants/acme-eu/connection",
        Some(json!({"admin_api_key": GOOD_KEY})),
    )
    .await;
    assert_eq!((s, code(&b)), (409, "namespace_held"), "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /tenants/acme-eu/release"),
        "{b}"
    );
    let (s, b) = operator(&env, "PUT", "/tenants/acme-eu/top-level", None).await;
    assert_eq!((s, code(&b)), (409, "namespace_held"), "{b}");
    // Still granted skills by acme's archetype: the release is refused, naming it.
    let (s, b) = operator(&env, "POST", "/tenants/acme-eu/release", None).await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_in_use"), "{b}");
    assert!(b.to_string().contains("archetype eu"), "{b}");
    assert_unchanged(&before, &env.footprint().await, "refused claims");

    // A poller tick builds (and caches) acme's routing while the slug is still acme's.
    env.app.poll_all(deadline()).await.unwrap();
    // The operator removes the grant on acme's Hub, then releases.
    let (s, _) = operator(&env, "DELETE", "/tenants/acme/archetypes/eu", None).await;
    assert_eq!(s, 200);
    let (s, b) = operator(
        &env,
        "POST",
        "/tenants/acme-eu/release",
        Some(json!({"reason": "registered before the customer onboarded (OPS-231)"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["released"], true);
    let record = &b["top_level"];
    assert_eq!(
        (&record["released_from"], &record["provisioned_by"]),
        (&json!("acme"), &json!("op-1"))
    );
    assert!(record["provisioned_at"].is_string());
    let (s, b) = operator(&env, "POST", "/tenants/acme-eu/release", None).await;
    assert_eq!((s, &b["released"]), (200, &json!(false)), "{b}");

    // acme lost it: no listing, no reads, no way back; the customer connects under it.
    let (_, list) = call(&env, "acme", "GET", "/tenants/acme/sub-tenants", None).await;
    assert!(!list.to_string().contains("acme-eu"), "{list}");
    let (s, _) = call(&env, "acme", "GET", "/tenants/acme-eu/telemetry", None).await;
    assert_eq!(s, 403);
    let (s, b) = call(
        &env,
        "acme",
        "PUT",
        "/tenants/acme/sub-tenants/acme-eu",
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_unavailable"), "{b}");
    assert_eq!(env.connect("acme-eu", GOOD_KEY).await.0, 201);
    let (s, st) = call(&env, "acme-eu", "GET", "/tenants/acme-eu/connection", None).await;
    assert_eq!((s, &st["connected"]), (200, &json!(true)), "{st}");
    assert!(st.get("parent").is_none(), "its own tenant now: {st}");

    // Runs of the name acme published for the slug (still resolvable for a week) are acme's, never the
    // new owner's, even on a poller that had cached acme's routing.
    emit(&env, "claresia-acme-eu-standup-notes", 2).await;
    let tick = env.app.poll_all(deadline()).await.unwrap();
    assert!(tick.events_ingested >= 2, "{tick:?}");
    let (_, own) = call(&env, "acme-eu", "GET", "/tenants/acme-eu/telemetry", None).await;
    assert_eq!(own["events"], json!([]), "nothing of acme's: {own}");
    let (_, hub) = call(&env, "acme", "GET", "/tenants/acme/telemetry", None).await;
    assert_eq!(hub["events"].as_array().unwrap().len(), 2, "{hub}");

    // A slug that holds its parent's telemetry is not released: whoever connects next would read it.
    env.register_sub_tenant("acme", "acme-lab").await;
    let row = claresia_domain::enterprise_feed::UsageRow {
        tenant: claresia_domain::TenantSlug::parse("acme-lab").unwrap(),
        skill_id: "standup-notes".into(),
        skill_name: "claresia-acme-lab-standup-notes".into(),
        date: "2026-11-20".into(),
        rbac_group_id: "g".into(),
        rbac_group_name: None,
        invocation_count: Some(1),
        distinct_user_count: Some(1),
        estimated_overage_spend: None,
        attributed_list_price: None,
        currency: None,
        polled_at: "2026-11-21T00:00:00Z".into(),
    };
    let acme = claresia_domain::TenantSlug::parse("acme").unwrap();
    env.app.telemetry.write_usage(&acme, &[row]).await.unwrap();
    let (s, b) = operator(&env, "POST", "/tenants/acme-lab/release", None).await;
    assert_eq!((s, code(&b)), (409, "sub_tenant_in_use"), "{b}");
    assert!(b.to_string().contains("telemetry"), "{b}");
}

/// Every claim on a slug is one conditional write of its namespace item: a provisioning racing a
/// registration, twenty times over, lands exactly one of them; and a first connection record is never
/// written for a slug a parent holds (the registration checks for a connection in the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_on_one_slug_exclude_each_other() {
    let env = TestEnv::start().await;
    // As a client does: a 503 is retried (moto answers a transaction that races a write with a 500).
    let until_answered = |who: As<'static>, path: String| {
        let env = &env;
        async move {
            loop {
                let a = env.call(who, "PUT", &path, None).await;
                if a.0 != 503 {
                    return a;
                }
            }
        }
    };
    for i in 0..20 {
        let sub = format!("acme-r{i}");
        let (a, b) = tokio::join!(
            until_answered(
                As::Tenant("acme"),
                format!("/tenants/acme/sub-tenants/{sub}")
            ),
            until_answered(As::Operator, format!("/tenants/{sub}/top-level")),
        );
        let won = [a.0, b.0].iter().filter(|s| **s == 201).count();
        assert_eq!(won, 1, "round {i}: {a:?} {b:?}");
        assert!(
            matches!(a.0, 201 | 409) && matches!(b.0, 201 | 409),
            "{a:?} {b:?}"
        );
    }
    env.register_sub_tenant("acme", "acme-held").await;
    let held = claresia_domain::TenantSlug::parse("acme-held").unwrap();
    let before = env.footprint().await;
    assert!(!env.app.hub.save_connection(&record(&held)).await.unwrap());
    assert_unchanged(
        &before,
        &env.footprint().await,
        "a first connect of a held slug",
    );
    assert!(env.app.hub.connection(&held).await.unwrap().is_none());
}

/// A first connection record of `tenant`, as connect writes it.
fn record(tenant: &claresia_domain::TenantSlug) -> claresia_domain::ConnectionRecord {
    let now = time::OffsetDateTime::now_utc();
    claresia_domain::ConnectionRecord {
        tenant: tenant.clone(),
        state: claresia_domain::ConnectionState::Connected,
        state_reason: None,
        org_id: "org".into(),
        org_name: "Org".into(),
        workspace_count: 0,
        zero_retention: claresia_domain::ZeroRetention::Enabled,
        scopes_verified: vec![],
        key_fingerprint: "…ABCD sha256:00000000".into(),
        key_created_at: now,
        connected_at: now,
        updated_at: now,
        secret_version_id: None,
        last_test: None,
        disconnected_at: None,
        secret_deletion_date: None,
        surface: claresia_domain::Surface::Preview,
        group_count: None,
        organization_note: None,
        attestation: None,
        version: 0,
    }
}

/// Two targets of one Hub never publish under one name: the grant that would share a name with another
/// target's skill is refused with 409 naming both, and nothing is written or published.
#[tokio::test]
async fn two_targets_of_one_hub_never_publish_one_name() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("acme", GOOD_KEY).await.0, 201);
    for id in ["eng-standup", "standup"] {
        let mut doc = example("skill-standup-notes.json");
        doc["id"] = json!(id);
        let (s, b) = env.put_doc("acme", &format!("/skills/{id}"), &doc).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = env
        .put_doc(
            "acme",
            "/archetypes/eng",
            &json!({"skills": ["eng-standup"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    env.register_sub_tenant("acme", "acme-eng").await;
    let before = env.footprint().await;
    let sent = env.sim_requests().await.len();
    let (s, b) = env
        .put_doc(
            "acme",
            "/archetypes/oncall",
            &json!({"skills": ["standup"], "sub_tenant": "acme-eng"}),
        )
        .await;
    assert_eq!((s, code(&b)), (409, "published_name_conflict"), "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    for part in [
        "eng-standup of acme",
        "standup of acme-eng",
        "claresia-acme-eng-standup",
    ] {
        assert!(message.contains(part), "{part}: {b}");
    }
    assert_unchanged(&before, &env.footprint().await, "a clashing grant");
    assert_eq!(
        env.sim_requests().await.len(),
        sent,
        "nothing was published"
    );
    // Another skill for the sub-tenant is fine.
    let (s, b) = env
        .put_doc(
            "acme",
            "/archetypes/oncall",
            &json!({"skills": ["eng-standup"], "sub_tenant": "acme-eng"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

/// A sub-tenant's status shows its own publish report and the drift of its own plugins, never its parent's
/// other targets, its siblings', the poll cursor, the key or the attestation.
#[tokio::test]
async fn a_sub_tenant_status_shows_only_its_own_state() {
    let env = TestEnv::start().await;
    connected_with_skill(&env, "dainese").await;
    for sub in ["dainese-eng", "dainese-ops"] {
        env.register_sub_tenant("dainese", sub).await;
        let (s, b) = call(
            &env,
            "dainese",
            "PUT",
            &format!("/tenants/dainese/archetypes/{sub}"),
            Some(json!({"skills": ["standup-notes"], "sub_tenant": sub})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    // Drift of both siblings' plugins and the parent's, as the enterprise poller records it.
    let dainese = claresia_domain::TenantSlug::parse("dainese").unwrap();
    let note = |target: &str| claresia_domain::enterprise_feed::DriftNote {
        activity_id: format!("activity_{target}"),
        activity_type: "plugin_installation_preference_updated".into(),
        plugin_name: format!("claresia-{target}-standup-notes"),
        actor: "user_actor user_1".into(),
        at: "2026-11-20T10:00:00.000Z".into(),
        target: Some(claresia_domain::TenantSlug::parse(target).unwrap()),
    };
    let status = claresia_aws::PollStatus {
        cursor: Some("cursor-of-the-parent".into()),
        drift: vec![note("dainese-ops"), note("dainese-eng"), note("dainese")],
        ..Default::default()
    };
    env.app
        .hub
        .record_poll_status(&dainese, &status)
        .await
        .unwrap();

    for who in [
        As::Tenant("dainese-eng"),
        As::Tenant("dainese"),
        As::Operator,
    ] {
        let (s, st) = env
            .call(who, "GET", "/tenants/dainese-eng/connection", None)
            .await;
        assert_eq!(s, 200, "{st}");
        assert_eq!(st["last_publish"]["tenant"], "dainese-eng", "{st}");
        assert_eq!(
            st["last_publish"]["created"],
            json!(["claresia-dainese-eng-standup-notes"])
        );
        assert_eq!(st["drift"].as_array().unwrap().len(), 1, "{st}");
        assert_eq!(
            st["drift"][0]["plugin_name"],
            "claresia-dainese-eng-standup-notes"
        );
        assert_eq!(st["archetypes"], json!(["dainese-eng"]));
        let text = st.to_string();
        for foreign in [
            "dainese-ops",
            "claresia-dainese-standup-notes",
            "cursor-of-the-parent",
            "fingerprint",
            "Dainese S.p.A.",
        ] {
            assert!(!text.contains(foreign), "{foreign} leaked: {st}");
        }
    }
}
