//! The `enterprise` surface end to end, through the real handlers against moto and the simulator's
//! Claude Enterprise org: connect with an Enterprise key and an attestation, publish plugins per RBAC
//! group, reruns that write nothing, access following the archetypes, foreign plugins left alone, a crash
//! between a create and its ledger write, offboarding.

use claresia_tests::*;
use serde_json::{json, Value};

const TENANT: &str = "dainese";

#[tokio::test]
async fn enterprise_flow_connect_attest_publish_per_group_rerun_change_revoke_offboard() {
    let env = TestEnv::enterprise().await;
    // Plugin lists come in short pages: the listing must follow next_page to the end.
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"plugin_page_cap": 2}),
    )
    .await;

    // Connect without an attestation: the key is good and stored, publishing is refused.
    let (s, b) = env.connect_enterprise(TENANT, ENTERPRISE_KEY, None).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["test"]["code"], "zero_retention_unattested", "{b}");
    assert_eq!(b["test"]["surface"], "enterprise");
    assert_eq!(b["test"]["group_count"], 3);
    assert_eq!(b["test"]["organization"]["name"], "Ducati Motor Holding");
    assert_eq!(
        b["test"]["scopes"]["verified"],
        json!([
            "write:plugins",
            "read:plugins",
            "read:analytics",
            "read:compliance_activities",
            "read:rbac_groups"
        ])
    );
    assert_eq!(b["status"]["surface"], "enterprise");
    assert_eq!(b["status"]["publishing"]["allowed"], false);
    assert!(b["status"]["publishing"]["reason"]
        .as_str()
        .unwrap()
        .contains("not attested"));
    assert_eq!(b["publish"]["skipped"], true);
    assert_eq!(
        env.secret_value(TENANT).await.as_deref(),
        Some(ENTERPRISE_KEY)
    );

    env.put_example_skills(TENANT).await;
    let (s, b) = env.put_archetype(
        TENANT,
        "engineer",
        json!({"skills": ["incident-postmortem", "standup-notes"], "group_ids": [GROUP_ENGINEERING],
               "installation_preference": "required"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["publish"]["skipped"], true, "{b}");
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review", "standup-notes"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        env.enterprise_writes().await,
        1,
        "only the connect test's write probe"
    );

    // Reconnect with the attestation: recorded with the JWT subject, and the catalog is published.
    let (s, b) = env
        .connect_enterprise(
            TENANT,
            ENTERPRISE_KEY,
            Some("DPA-2026-117 zero-retention addendum"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["test"]["code"], "success", "{b}");
    let evidence = &b["status"]["zero_retention_evidence"];
    assert_eq!(evidence["source"], "attested");
    assert_eq!(evidence["by"], "user-1");
    assert_eq!(
        evidence["reference"],
        "DPA-2026-117 zero-retention addendum"
    );
    assert_eq!(b["status"]["zero_retention"], "attested");
    let report = &b["publish"];
    assert_eq!(report["surface"], "enterprise");
    assert_eq!(report["complete"], true, "{report}");
    let created = &report["targets"][0]["created"];
    assert_eq!(
        created,
        &json!([
            "claresia-dainese-incident-postmortem",
            "claresia-dainese-prd-review",
            "claresia-dainese-standup-notes"
        ])
    );
    // 3 creates + 3 organization settings + 4 group settings.
    assert_eq!(report["eta"]["writes_planned"], 10, "{report}");

    let s = env.plugin_settings().await;
    assert_eq!(
        s["claresia-dainese-incident-postmortem"],
        json!({"organization": "not_available", GROUP_ENGINEERING: "required"})
    );
    assert_eq!(
        s["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    assert_eq!(
        s["claresia-dainese-standup-notes"],
        json!({"organization": "not_available", GROUP_ENGINEERING: "required", GROUP_PRODUCT: "auto_install"})
    );
    // What each group's members see: only what their archetypes grant.
    let vis = env.enterprise_state().await["visibility"].clone();
    let seen = |plugin: &str, group: &str| -> String {
        vis.as_array()
            .unwrap()
            .iter()
            .find(|v| v["plugin"] == plugin)
            .unwrap()["groups"][group]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        seen("claresia-dainese-prd-review", GROUP_SALES),
        "not_available"
    );
    assert_eq!(
        seen("claresia-dainese-prd-review", GROUP_ENGINEERING),
        "not_available"
    );
    assert_eq!(
        seen("claresia-dainese-standup-notes", GROUP_ENGINEERING),
        "required"
    );

    // The bundle: the manifest and the same transpiled SKILL.md, footer included.
    let plugins = env.enterprise_state().await["plugins"].clone();
    let standup = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "claresia-dainese-standup-notes")
        .unwrap()
        .clone();
    let manifest: Value = serde_json::from_str(
        standup["files"][".claude-plugin/plugin.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["name"], "claresia-dainese-standup-notes");
    assert_eq!(manifest["author"]["name"], "Claresia");
    assert_eq!(manifest["version"].as_str().unwrap().len(), 12);
    let md = standup["files"]["skills/claresia-dainese-standup-notes/SKILL.md"]
        .as_str()
        .unwrap();
    assert!(
        md.starts_with("---\nname: claresia-dainese-standup-notes\n"),
        "{md}"
    );
    assert!(
        md.contains("Claresia"),
        "the footer travels with the skill: {md}"
    );

    // Rerun: nothing written to Anthropic.
    let before = env.enterprise_writes().await;
    let (s, b) = env.republish(TENANT).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["targets"][0]["unchanged"].as_array().unwrap().len(),
        3,
        "{b}"
    );
    assert_eq!(b["eta"]["writes_planned"], 0);
    assert_eq!(
        env.enterprise_writes().await,
        before,
        "an unchanged rerun writes nothing"
    );

    // Change: product managers lose standup-notes, sales gets prd-review on request.
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env.put_archetype(
        TENANT,
        "sales",
        json!({"skills": ["prd-review"], "group_ids": [GROUP_SALES], "installation_preference": "available"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let s = env.plugin_settings().await;
    assert_eq!(
        s["claresia-dainese-standup-notes"],
        json!({"organization": "not_available", GROUP_ENGINEERING: "required"})
    );
    assert_eq!(
        s["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install", GROUP_SALES: "available"})
    );

    // A content change is a new version of the same plugin.
    let mut skill = example("skill-prd-review.json");
    skill["instructions"] = json!("Review the PRD for scope, metrics and risks. Be brief.");
    let (s, b) = env.put_doc(TENANT, "/skills/prd-review", &skill).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["publish"]["targets"][0]["updated"],
        json!(["claresia-dainese-prd-review"]),
        "{b}"
    );
    let plugins = env.enterprise_state().await["plugins"].clone();
    let prd = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "claresia-dainese-prd-review")
        .unwrap();
    assert_eq!(prd["versions"], 2);

    // Revoke: no archetype grants incident-postmortem any more → its plugin is deleted.
    let (s, b) = env
        .call(
            As::Tenant(TENANT),
            "DELETE",
            &format!("/tenants/{TENANT}/archetypes/engineer"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let s = env.plugin_settings().await;
    assert!(
        !s.contains_key("claresia-dainese-incident-postmortem"),
        "{s:?}"
    );
    assert!(!s.contains_key("claresia-dainese-standup-notes"), "{s:?}");

    // Status: surface, scopes, group count, attestation, last publish.
    let (s, st) = env
        .call(
            As::Tenant(TENANT),
            "GET",
            &format!("/tenants/{TENANT}/connection"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(st["surface"], "enterprise");
    assert_eq!(st["group_count"], 3);
    assert_eq!(st["workspace_count"], Value::Null);
    assert_eq!(st["zero_retention_evidence"]["source"], "attested");
    assert_eq!(st["scopes_verified"].as_array().unwrap().len(), 5);

    // Offboarding deletes our plugins.
    let (s, b) = env
        .call(
            As::Tenant(TENANT),
            "DELETE",
            &format!("/tenants/{TENANT}/connection"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["skills_removed"], 1, "{b}");
    assert!(env.plugin_settings().await.is_empty());
}

#[tokio::test]
async fn every_missing_enterprise_scope_is_named_and_nothing_is_stored() {
    let env = TestEnv::enterprise().await;
    for missing in CONNECTOR_ENTERPRISE_SCOPES {
        let scopes: Vec<&str> = CONNECTOR_ENTERPRISE_SCOPES
            .iter()
            .copied()
            .filter(|s| *s != missing)
            .collect();
        let k = env
            .sim_send(
                "POST",
                &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/keys"),
                json!({"scopes": scopes}),
            )
            .await;
        let (s, b) = env
            .connect_enterprise(TENANT, k["key"].as_str().unwrap(), Some("DPA-1"))
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("missing_scopes")),
            "{b}"
        );
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(missing), "{missing}: {message}");
        assert!(
            message.contains("claude.ai"),
            "says where to make a new key: {message}"
        );
        assert_eq!(b["error"]["test"]["scopes"]["missing"], json!([missing]));
    }
    let (s, b) = env
        .connect_enterprise(TENANT, ENTERPRISE_PARTIAL_KEY, None)
        .await;
    assert_eq!(s, 400, "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("read:analytics, read:compliance_activities"),
        "{message}"
    );
    assert_eq!(env.secret_value(TENANT).await, None);
    assert_eq!(env.hub_dump().await, "[]");
}

#[tokio::test]
async fn keys_and_surfaces_that_do_not_match_are_refused_naming_the_key() {
    let env = TestEnv::enterprise().await;
    let path = format!("/tenants/{TENANT}/connection");
    let attest =
        |key: &str| json!({"admin_api_key": key, "zero_retention_attestation": {"reference": "x"}});
    // Without a subject claim there is no one to record as the attester.
    let no_subject = json!({"claresia:tenant": TENANT});
    let cases = [
        (
            As::Tenant(TENANT),
            json!({"admin_api_key": GOOD_KEY, "surface": "enterprise"}),
            "invalid_admin_key",
            "Claude Console Admin key",
        ),
        (
            As::Tenant(TENANT),
            json!({"admin_api_key": ENTERPRISE_KEY, "surface": "preview"}),
            "invalid_admin_key",
            "Claude Enterprise Admin API key",
        ),
        (
            As::Tenant(TENANT),
            json!({"admin_api_key": "sk-ant-api03-workspace-key-0000"}),
            "invalid_admin_key",
            "workspace API key",
        ),
        // An attestation means nothing on preview, where Anthropic reports zero retention.
        (
            As::Tenant(TENANT),
            attest(GOOD_KEY),
            "invalid_body",
            "Claude Enterprise connections only",
        ),
        (
            As::Claims(&no_subject),
            attest(ENTERPRISE_KEY),
            "invalid_body",
            "no sub claim",
        ),
    ];
    for (who, body, code, says) in cases {
        let (s, b) = env.call(who, "PUT", &path, Some(&body.to_string())).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {b}"
        );
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    // A candidate test says which surface it tested.
    let (s, b) = env
        .call(
            As::Tenant(TENANT),
            "POST",
            &format!("/tenants/{TENANT}/connection/test"),
            Some(&json!({"admin_api_key": ENTERPRISE_KEY}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["surface"], "enterprise");
    assert_eq!(b["code"], "zero_retention_unattested");
    assert_eq!(env.secret_value(TENANT).await, None);
    assert_eq!(env.hub_dump().await, "[]");
    assert_eq!(
        env.enterprise_writes().await,
        1,
        "only the test's write probe"
    );
}

#[tokio::test]
async fn an_unnamed_org_is_shown_as_unknown_with_the_reason() {
    let env = TestEnv::enterprise().await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"me_answers": false}),
    )
    .await;
    let (s, b) = env
        .connect_enterprise(TENANT, ENTERPRISE_KEY, Some("DPA-1"))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["test"]["organization"], Value::Null);
    assert!(b["test"]["organization_note"]
        .as_str()
        .unwrap()
        .contains("/v1/organizations/me"));
    assert_eq!(b["status"]["organization"], Value::Null);
    assert!(b["status"]["organization_note"]
        .as_str()
        .unwrap()
        .starts_with("unknown"));
    assert!(b["test"]["message"]
        .as_str()
        .unwrap()
        .contains("the Claude Enterprise organization"));
    let (s, st) = env
        .call(
            As::Tenant(TENANT),
            "GET",
            &format!("/tenants/{TENANT}/connection"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        st["organization_note"]
            .as_str()
            .unwrap()
            .starts_with("unknown"),
        "{st}"
    );
}

/// Uploads a plugin straight to the simulator, as someone else in the org would.
async fn foreign_plugin(env: &TestEnv, name: &str) -> String {
    let manifest = json!({"name": name, "description": "made by hand"}).to_string();
    let md = format!("---\nname: {name}\ndescription: by hand\n---\n\nHello\n");
    let form = reqwest::multipart::Form::new()
        .part(
            "files[]",
            reqwest::multipart::Part::text(manifest).file_name(".claude-plugin/plugin.json"),
        )
        .part(
            "files[]",
            reqwest::multipart::Part::text(md).file_name(format!("skills/{name}/SKILL.md")),
        );
    let v: Value = env
        .http
        .post(format!("{}/v1/organizations/plugins", env.sim.base_url()))
        .header("x-api-key", ENTERPRISE_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "ce-plugins-2026-09-01")
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_foreign_plugin_with_our_name_is_reported_and_never_touched() {
    let env = TestEnv::enterprise_connected(TENANT).await;
    let foreign = foreign_plugin(&env, "claresia-dainese-prd-review").await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review", "standup-notes"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let t = &b["publish"]["targets"][0];
    assert_eq!(
        t["created"],
        json!(["claresia-dainese-standup-notes"]),
        "{b}"
    );
    assert_eq!(t["failed"][0]["name"], "claresia-dainese-prd-review");
    assert!(
        t["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not manage"),
        "{b}"
    );
    let plugins = env.enterprise_state().await["plugins"].clone();
    let theirs = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == foreign.as_str())
        .unwrap();
    assert_eq!(theirs["versions"], 1, "never a new version");
    assert_eq!(
        theirs["settings"],
        json!({}),
        "never an installation setting"
    );
    // Offboarding leaves it too.
    let (s, b) = env
        .call(
            As::Tenant(TENANT),
            "DELETE",
            &format!("/tenants/{TENANT}/connection"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["skills_removed"], 1);
    let left: Vec<String> = env.plugin_settings().await.into_keys().collect();
    assert_eq!(left, vec!["claresia-dainese-prd-review".to_owned()]);
}

#[tokio::test]
async fn a_crash_between_the_create_and_its_ledger_write_adopts_the_plugin() {
    let env = TestEnv::enterprise_connected(TENANT).await;
    // The crashed run: its claim landed, then Anthropic created the plugin, then it died.
    let hub = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    let claimed_at = time::OffsetDateTime::now_utc().unix_timestamp();
    env.app
        .hub
        .put_ledger(
            &hub,
            &claresia_aws::LedgerEntry {
                name: "claresia-dainese-prd-review".into(),
                target: hub.clone(),
                skill_id: "prd-review".into(),
                remote_id: String::new(),
                removed_at: None,
                content_hash: None,
                claimed_at: Some(claimed_at),
                applied_access: None,
            },
        )
        .await
        .unwrap();
    let ours = foreign_plugin(&env, "claresia-dainese-prd-review").await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let t = &b["publish"]["targets"][0];
    assert_eq!(t["failed"], json!([]), "{b}");
    let plugins = env.enterprise_state().await["plugins"].clone();
    let list = plugins.as_array().unwrap();
    assert_eq!(list.len(), 1, "adopted, not duplicated: {plugins}");
    assert_eq!(list[0]["id"], ours.as_str());
    assert_eq!(
        list[0]["settings"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    let ledger = env.app.hub.ledger(&hub).await.unwrap();
    assert_eq!(ledger["claresia-dainese-prd-review"].remote_id, ours);
    assert!(ledger["claresia-dainese-prd-review"].content_hash.is_some());
}

#[tokio::test]
async fn groups_and_workspaces_are_checked_against_the_enterprise_org() {
    let env = TestEnv::enterprise_connected(TENANT).await;
    // Workspaces do not exist on Claude Enterprise.
    let (s, b) = env
        .put_archetype(
            TENANT,
            "engineer",
            json!({"skills": ["prd-review"], "workspace_ids": [WS_ENGINEERING]}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_archetype")),
        "{b}"
    );
    assert!(b["error"]["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("group_ids"));
    // A group the org does not have: the skill fails by name, nothing is written for it.
    let before = env.enterprise_writes().await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "engineer",
            json!({"skills": ["prd-review"], "group_ids": ["rbac_group_01NoSuchGroup00000000000"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let failed = &b["publish"]["targets"][0]["failed"][0];
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("rbac_group_01NoSuchGroup"),
        "{b}"
    );
    assert_eq!(env.enterprise_writes().await, before);
    // Mappings name RBAC groups here; a group mapped to a sub-tenant gets that sub-tenant's skills.
    env.register_sub_tenant(TENANT, "dainese-sales").await;
    let (s, b) = env
        .put_doc(
            TENANT,
            "/workspaces",
            &json!({"mappings": [{"workspace_id": WS_SALES}]}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_document")),
        "{b}"
    );
    let (s, b) = env
        .put_doc(
            TENANT,
            "/workspaces",
            &json!({"mappings": [{"group_id": "rbac_group_01Nope000000000000000000"}]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = env
        .put_archetype(
            TENANT,
            "sales-sub",
            json!({"skills": ["standup-notes"], "sub_tenant": "dainese-sales"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .put_doc(
            TENANT,
            "/workspaces",
            &json!({"mappings": [{"group_id": GROUP_SALES, "sub_tenant": "dainese-sales"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let s = env.plugin_settings().await;
    assert_eq!(
        s["claresia-dainese-sales-standup-notes"],
        json!({"organization": "not_available", GROUP_SALES: "auto_install"})
    );
}

#[tokio::test]
async fn a_setting_changed_in_the_ui_is_put_back_by_the_next_reconcile() {
    let env = TestEnv::enterprise_connected(TENANT).await;
    let (s, _) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201);
    // An admin makes it visible to everyone and hides it from product.
    for (target, pref) in [
        ("organization", "auto_install"),
        (GROUP_PRODUCT, "not_available"),
    ] {
        env.sim_send(
            "POST",
            &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
            json!({"plugin_name": "claresia-dainese-prd-review", "target": target, "installation_preference": pref}),
        )
        .await;
    }
    let (s, b) = env.republish(TENANT).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["targets"][0]["updated"],
        json!(["claresia-dainese-prd-review"]),
        "{b}"
    );
    assert_eq!(
        env.plugin_settings().await["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
}

#[tokio::test]
async fn the_publish_is_paced_to_the_org_write_limit_and_says_how_long_it_takes() {
    // 120 writes a minute: one every 0.5 s.
    let env = TestEnv::enterprise_with(|c| c.enterprise_limits.writes_per_minute = 120.0).await;
    // The org refuses anything faster.
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"writes_per_minute": 120}),
    )
    .await;
    let (s, _) = env
        .connect_enterprise(TENANT, ENTERPRISE_KEY, Some("DPA-1"))
        .await;
    assert_eq!(s, 201);
    env.put_example_skills(TENANT).await;
    let before = env.enterprise_writes().await;
    let started = std::time::Instant::now();
    let (s, b) = env
        .put_archetype(
            TENANT,
            "everyone",
            json!({"skills": ["incident-postmortem", "prd-review", "standup-notes"],
               "group_ids": [GROUP_ENGINEERING, GROUP_PRODUCT]}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(s, 201, "{b}");
    let p = &b["publish"];
    assert_eq!(p["complete"], true, "{p}");
    // 3 × (create + organization + 2 groups) = 12 writes at 2 a second.
    assert_eq!(p["eta"]["writes_planned"], 12);
    assert_eq!(p["eta"]["seconds"], 6);
    assert!(took.as_secs_f64() >= 5.0, "paced, not burst: {took:?}");
    // Paced below the limit, no write was refused and sent again.
    assert_eq!(env.enterprise_writes().await - before, 12);
}

#[tokio::test]
async fn an_org_without_the_plugins_api_is_refused_saying_so() {
    let env = TestEnv::enterprise().await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/plugins", "fail": {"status": 404, "count": 1}}),
    )
    .await;
    let (s, b) = env
        .connect_enterprise(TENANT, ENTERPRISE_KEY, Some("DPA-1"))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (502, Some("anthropic_error")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Plugins API"),
        "{b}"
    );
    // The same said by a candidate test.
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/plugins", "fail": {"status": 404, "count": 1}}),
    )
    .await;
    let (s, b) = env
        .call(
            As::Tenant(TENANT),
            "POST",
            &format!("/tenants/{TENANT}/connection/test"),
            Some(&json!({"admin_api_key": ENTERPRISE_KEY}).to_string()),
        )
        .await;
    assert_eq!(s, 502, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not enabled"),
        "{b}"
    );
    assert_eq!(env.secret_value(TENANT).await, None);
    assert_eq!(env.hub_dump().await, "[]");
}

/// Every plugin of the org is hidden org-wide and reaches no group but `granted` (the simulator's
/// effective access per group, the most-permissive rule and the marketplace default applied).
async fn assert_contained(env: &TestEnv, granted: &str, case: &str) {
    let state = env.enterprise_state().await;
    for p in state["visibility"].as_array().unwrap() {
        assert_eq!(
            p["organization"], "not_available",
            "{case}: open to the org: {p}"
        );
        for (group, effective) in p["groups"].as_object().unwrap() {
            if group != granted {
                assert_eq!(effective, "not_available", "{case}: open to {group}: {p}");
            }
        }
    }
}

/// A world where the marketplace default installs every new plugin for everyone, writes go one every
/// 50 ms on both sides, and an attempt is cut at 400 ms.
async fn open_marketplace() -> (TestEnv, claresia_domain::TenantSlug) {
    let env = TestEnv::enterprise_with(|c| {
        c.enterprise_limits.writes_per_minute = 1200.0;
        c.anthropic_attempt_timeout = std::time::Duration::from_millis(400);
        c.poll_lease_slack = std::time::Duration::ZERO;
    })
    .await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"writes_per_minute": 1200, "marketplace_default": "auto_install"}),
    )
    .await;
    let (s, b) = env
        .connect_enterprise(TENANT, ENTERPRISE_KEY, Some("DPA-1"))
        .await;
    assert_eq!(s, 201, "{b}");
    (env, claresia_domain::TenantSlug::parse(TENANT).unwrap())
}

/// Adds `n` skills granted to product (as the routes write them, without their publish).
async fn add_granted_skills(env: &TestEnv, hub: &claresia_domain::TenantSlug, k: u32, n: u32) {
    env.app.begin_change(hub).await.unwrap();
    let mut ids = Vec::new();
    for part in 0..n {
        let id = format!("cut{k}-{part}");
        let mut ir = example("skill-standup-notes.json");
        ir["id"] = json!(id);
        env.app
            .hub
            .put_skill(hub, &id, &ir, &claresia_aws::Expect::Any)
            .await
            .unwrap();
        ids.push(id);
    }
    env.app
        .hub
        .put_archetype(
            hub,
            &format!("cut{k}"),
            &json!({"skills": ids, "group_ids": [GROUP_PRODUCT]}),
            &claresia_aws::Expect::Any,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_publish_cut_by_its_deadline_at_every_point_never_opens_a_plugin_beyond_its_groups() {
    let (env, hub) = open_marketplace().await;
    // Each cut finds two new skills to create and whatever the cuts before it left.
    let mut cut_mid_way = 0;
    // Every Anthropic call takes 60 ms: six creates do not fit in one cut.
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": 60}),
    )
    .await;
    for k in 0..16u32 {
        add_granted_skills(&env, &hub, k, 6).await;
        let budget = std::time::Duration::from_millis(100 * u64::from(k) + 1500);
        if let Ok(r) = env
            .app
            .publish(&hub, None, claresia_anthropic::Deadline::after(budget))
            .await
        {
            let created: usize = r.targets.iter().map(|t| t.created.len()).sum();
            cut_mid_way += usize::from(!r.complete && created > 0);
        }
        assert_contained(&env, GROUP_PRODUCT, &format!("cut at {budget:?}")).await;
    }
    assert!(cut_mid_way > 0, "no deadline fell amid the creates");
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    // And the sweep finishes the rest, every plugin reaching product.
    let report = env.full_publish(TENANT).await;
    assert!(report.complete, "{report:?}");
    let state = env.enterprise_state().await;
    assert_eq!(state["plugins"].as_array().unwrap().len(), 96);
    for p in state["visibility"].as_array().unwrap() {
        assert_eq!(p["groups"][GROUP_PRODUCT], "auto_install", "{p}");
    }
    assert_contained(&env, GROUP_PRODUCT, "after the sweep").await;
}

/// One kill: the function dies `cut` into a publish of two new skills (its lease lapses 2 s after it
/// started), then the next publish runs. Answers whether a plugin was left open by the kill.
async fn kill_and_recover(cut: std::time::Duration) -> bool {
    let (env, hub) = open_marketplace().await;
    add_granted_skills(&env, &hub, 0, 2).await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": 15}),
    )
    .await;
    let app = env.app.clone();
    let h = hub.clone();
    let started = std::time::Instant::now();
    let run = tokio::spawn(async move {
        let deadline = claresia_anthropic::Deadline::after(std::time::Duration::from_millis(2000));
        let _ = app.publish(&h, None, deadline).await;
    });
    tokio::time::sleep(cut).await;
    run.abort();
    let _ = run.await;
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300).saturating_sub(started.elapsed()))
        .await;
    let state = env.enterprise_state().await;
    let exposed: Vec<String> = state["visibility"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["organization"] != "not_available")
        .map(|p| p["plugin"].as_str().unwrap().to_owned())
        .collect();
    let ids: std::collections::BTreeMap<String, String> = state["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let seen = env.sim_requests().await.len();
    let report = env.full_publish(TENANT).await;
    assert!(report.complete, "cut {cut:?}: {report:?}");
    assert_contained(&env, GROUP_PRODUCT, &format!("after the cut at {cut:?}")).await;
    // Before anything else, the next publish hid every exposed plugin.
    let writes: Vec<Value> = env.sim_requests().await[seen..]
        .iter()
        .filter(|r| r["method"] != "GET")
        .cloned()
        .collect();
    for name in &exposed {
        let path = format!(
            "/v1/organizations/plugins/{}/installation_settings/organization",
            ids[name]
        );
        assert!(
            writes[..exposed.len()]
                .iter()
                .any(|w| w["path"] == path.as_str()),
            "cut {cut:?}: the recovery's first writes are not the hiding of {name}: {writes:?}"
        );
    }
    !exposed.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_killed_at_every_point_is_contained_first_by_the_next() {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(6));
    let mut cases = tokio::task::JoinSet::new();
    for k in 0..48u64 {
        let limit = limit.clone();
        cases.spawn(async move {
            let _p = limit.acquire_owned().await.unwrap();
            kill_and_recover(std::time::Duration::from_millis(12 * k)).await
        });
    }
    let mut exposed_cases = 0;
    while let Some(r) = cases.join_next().await {
        exposed_cases += usize::from(r.unwrap());
    }
    assert!(
        exposed_cases > 0,
        "no cut fell between a create and its hiding"
    );
}

#[tokio::test]
async fn an_unnamed_orgs_key_rotates_in_only_if_it_reaches_the_org_of_the_tenants_plugins() {
    let env = TestEnv::enterprise().await;
    let hub = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    // Neither org is named to its keys by /organizations/me.
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"me_answers": false}),
    )
    .await;
    let other = env
        .sim_send(
            "POST",
            "/_sim/orgs",
            json!({"name": "Other Motors", "kind": "enterprise"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{other}"),
        json!({"me_answers": false}),
    )
    .await;
    let (s, b) = env
        .connect_enterprise(TENANT, ENTERPRISE_KEY, Some("DPA-1"))
        .await;
    assert_eq!(s, 201, "{b}");
    env.put_example_skills(TENANT).await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // A key of the other org: its plugin list is not this tenant's, so it is refused, nothing stored.
    let foreign = env
        .sim_send("POST", &format!("/_sim/orgs/{other}/keys"), json!({}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = env.connect_enterprise(TENANT, &foreign, None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("organization_mismatch")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disconnect the tenant first"),
        "{b}"
    );
    let record = env.app.hub.connection(&hub).await.unwrap().unwrap();
    let original = claresia_domain::AdminKey::parse(ENTERPRISE_KEY).unwrap();
    assert_eq!(record.key_fingerprint, original.fingerprint().to_string());
    assert_eq!(env.app.keys.get(&hub).await.unwrap(), Some(original));
    // Another key of the same org rotates in.
    let same = env
        .sim_send(
            "POST",
            &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/keys"),
            json!({}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = env.connect_enterprise(TENANT, &same, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rotated"], true, "{b}");
}

/// The record names its key, and the secret version it names holds that key.
async fn assert_record_and_secret_agree(
    env: &TestEnv,
    hub: &claresia_domain::TenantSlug,
    round: u32,
) {
    let record = env.app.hub.connection(hub).await.unwrap().unwrap();
    if record.state == claresia_domain::ConnectionState::Disconnected {
        return;
    }
    let key = env
        .app
        .keys
        .get_version(hub, record.secret_version_id.as_deref())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("round {round}: the record's secret version is gone"));
    assert_eq!(
        key.fingerprint().to_string(),
        record.key_fingerprint,
        "round {round}: the record and the secret name different keys"
    );
    let secret = env
        .secrets()
        .describe_secret()
        .secret_id(env.secret_name(hub.as_str()))
        .send()
        .await
        .unwrap();
    assert!(
        secret.deleted_date().is_none(),
        "round {round}: a connected record over a secret scheduled for deletion"
    );
}

#[tokio::test]
async fn concurrent_rotations_and_disconnects_leave_the_record_and_the_secret_consistent() {
    let env = TestEnv::start().await;
    let hub = claresia_domain::TenantSlug::parse(TENANT).unwrap();
    assert_eq!(env.connect(TENANT, GOOD_KEY).await.0, 201);
    for round in 0..20u32 {
        // Two admins rotate at once.
        let (a, b) = tokio::join!(
            env.connect(TENANT, GOOD_KEY),
            env.connect(TENANT, ROTATED_KEY)
        );
        assert!(a.0 < 500 && b.0 < 500, "round {round}: {a:?} {b:?}");
        assert_record_and_secret_agree(&env, &hub, round).await;
        // A rotation races an offboarding.
        let path = format!("/tenants/{TENANT}/connection");
        let key = if round % 2 == 0 {
            ROTATED_KEY
        } else {
            GOOD_KEY
        };
        let (c, d) = tokio::join!(
            env.connect(TENANT, key),
            env.call(As::Tenant(TENANT), "DELETE", &path, None)
        );
        assert!(c.0 < 500 && d.0 < 500, "round {round}: {c:?} {d:?}");
        assert_record_and_secret_agree(&env, &hub, round).await;
        let (s, b) = env.connect(TENANT, GOOD_KEY).await;
        assert!(s == 200 || s == 201, "round {round}: {b}");
    }
}

#[tokio::test]
async fn answers_anthropic_says_not_to_repeat_are_refusals_and_a_pending_registration_becomes_a_version(
) {
    let env = TestEnv::enterprise_connected(TENANT).await;
    const CREATE: &str = "POST /v1/organizations/plugins";
    const VERSION: &str = "POST /v1/organizations/plugins/{plugin_id}/versions";
    // A 500 with x-should-retry: false is deterministic: sent once, reported with its reason.
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": CREATE, "fail": {"status": 500, "count": 1, "should_retry": false}}),
    )
    .await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let t = &b["publish"]["targets"][0];
    assert_eq!(t["pending"], json!([]), "not an outage: {b}");
    assert!(
        t["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("retrying will not help"),
        "{b}"
    );
    assert_eq!(env.route_requests(CREATE).await, 1, "never repeated");
    // A 429 without retry-after is a spend cap: a refusal naming it.
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": CREATE, "spend_cap": 1}),
    )
    .await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "engineer",
            json!({"skills": ["standup-notes"], "group_ids": [GROUP_ENGINEERING]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let failed = &b["publish"]["targets"][0]["failed"];
    assert!(
        failed
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["reason"].as_str().unwrap().contains("spend cap")),
        "{b}"
    );
    assert_eq!(b["publish"]["pending"], false, "{b}");
    // A create stored but not registered: the same files go up as a version, the create is never resent.
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
        json!({"registration_pending": 1}),
    )
    .await;
    let creates = env.route_requests(CREATE).await;
    let (s, b) = env.republish(TENANT).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["complete"], true, "{b}");
    assert_eq!(
        env.route_requests(CREATE).await - creates,
        2,
        "one create per skill"
    );
    assert_eq!(env.route_requests(VERSION).await, 1);
    let plugins = env.enterprise_state().await["plugins"].clone();
    assert_eq!(plugins.as_array().unwrap().len(), 2, "{plugins}");
    let s = env.plugin_settings().await;
    assert_eq!(
        s["claresia-dainese-prd-review"],
        json!({"organization": "not_available", GROUP_PRODUCT: "auto_install"})
    );
    assert_eq!(
        s["claresia-dainese-standup-notes"],
        json!({"organization": "not_available", GROUP_ENGINEERING: "auto_install"})
    );
}

#[tokio::test]
async fn a_version_pinned_in_the_ui_is_reported_per_skill_and_new_content_is_uploaded_once() {
    let env = TestEnv::enterprise_connected(TENANT).await;
    const VERSION: &str = "POST /v1/organizations/plugins/{plugin_id}/versions";
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // An admin pins the version served now.
    env.sim_send(
        "POST",
        &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}/ui_change"),
        json!({"plugin_name": "claresia-dainese-prd-review", "pin_served_version": true}),
    )
    .await;
    // The skill changes: its new content is uploaded once, and the report says members keep the pinned one.
    let mut ir = example("skill-prd-review.json");
    ir["title"] = json!("PRD review v2");
    let (s, b) = env.put_doc(TENANT, "/skills/prd-review", &ir).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(env.route_requests(VERSION).await, 1, "{b}");
    for run in 0..2 {
        let (s, b) = env.republish(TENANT).await;
        assert_eq!(s, 200, "{b}");
        let t = &b["targets"][0];
        assert_eq!(
            t["updated"],
            json!([]),
            "run {run}: never uploaded again: {b}"
        );
        assert!(
            t["failed"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("pinned the served version"),
            "run {run}: {b}"
        );
        assert_eq!(t["failed"][0]["skill_id"], "prd-review");
    }
    assert_eq!(env.route_requests(VERSION).await, 1);
}

/// `GET /tenants/{TENANT}/connection`.
async fn connection_status(env: &TestEnv) -> Value {
    let path = format!("/tenants/{TENANT}/connection");
    env.call(As::Tenant(TENANT), "GET", &path, None).await.1
}

#[tokio::test]
async fn a_hub_whose_sweep_keeps_failing_backs_off_and_its_status_says_why() {
    let env = TestEnv::enterprise_connected(TENANT).await;
    const LIST: &str = "GET /v1/organizations/plugins";
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": LIST, "fail": {"status": 503, "count": 1000}}),
    )
    .await;
    // The change is saved; its publish waits for the sweep.
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(connection_status(&env).await["publish_retry"], Value::Null);
    let sweep = || {
        env.app.sweep_pending(claresia_anthropic::Deadline::after(
            std::time::Duration::from_secs(20),
        ))
    };
    sweep().await.unwrap();
    let st = connection_status(&env).await;
    assert_eq!(st["publish_pending"], true, "{st}");
    assert_eq!(st["publish_retry"]["attempts"], 1, "{st}");
    assert!(
        st["publish_retry"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{st}"
    );
    let next = time::OffsetDateTime::parse(
        st["publish_retry"]["next_attempt_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        next > time::OffsetDateTime::now_utc() + time::Duration::seconds(30),
        "{st}"
    );
    // The next sweeps leave it alone until then: the org's budget is not spent every minute.
    let listed = env.route_requests(LIST).await;
    sweep().await.unwrap();
    assert_eq!(env.route_requests(LIST).await, listed);
    // A new change is tried at once.
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    let (s, b) = env
        .put_archetype(
            TENANT,
            "product-manager",
            json!({"skills": ["prd-review", "standup-notes"], "group_ids": [GROUP_PRODUCT]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let st = connection_status(&env).await;
    assert_eq!(st["publish_retry"], Value::Null, "{st}");
    // And the very next sweep finishes what the failed ones left.
    sweep().await.unwrap();
    assert_eq!(connection_status(&env).await["publish_pending"], false);
}
