//! Capability 3, 5, 6 end to end: catalog API → transpile → reconcile against the simulator.

use claresia_tests::*;
use serde_json::{json, Value};

fn names(skills: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = skills
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

fn skill<'a>(skills: &'a [Value], name: &str) -> &'a Value {
    skills
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not published"))
}

async fn connected() -> TestEnv {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env
}

#[tokio::test]
async fn catalog_changes_publish_with_rbac_acls_and_a_rerun_writes_nothing() {
    let env = connected().await;
    env.load_examples("dainese").await;
    let skills = env.sim_skills().await;
    assert_eq!(
        names(&skills),
        vec![
            "claresia-dainese-incident-postmortem",
            "claresia-dainese-prd-review",
            "claresia-dainese-standup-notes"
        ]
    );
    // standup-notes is granted by both archetypes: its ACL is the union of both groups.
    assert_eq!(
        skill(&skills, "claresia-dainese-standup-notes")["acl"]["group_ids"],
        json!(["grp_engineering", "grp_product"])
    );
    assert_eq!(
        skill(&skills, "claresia-dainese-prd-review")["acl"]["group_ids"],
        json!(["grp_product"])
    );
    let pm = skill(&skills, "claresia-dainese-incident-postmortem");
    assert_eq!(
        pm["metadata"]["picker_label"],
        "@claresia.gatespic.incident-postmortem"
    );
    assert_eq!(pm["metadata"]["managed_by"], "claresia");

    // Republish with nothing changed: zero writes.
    let before = env.sim_skill_writes().await;
    let (s, report) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["complete"], true);
    assert_eq!(
        report["targets"][0]["unchanged"].as_array().unwrap().len(),
        3
    );
    assert_eq!(
        env.sim_skill_writes().await,
        before,
        "a no-change republish writes nothing"
    );

    // The status shows the last publish.
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["last_publish"]["dainese"]["counts"]["unchanged"], 3);
    assert_eq!(st["last_publish"]["dainese"]["names_truncated"], false);
    assert_eq!(st["publish_pending"], false);
}

#[tokio::test]
async fn a_changed_skill_updates_only_that_skill() {
    let env = connected().await;
    env.load_examples("dainese").await;
    let before = env.sim_skill_writes().await;
    let mut doc = example("skill-prd-review.json");
    doc["instructions"] = json!("Review the PRD. Be brief.");
    let (s, b) = env.put_doc("dainese", "/skills/prd-review", &doc).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["publish"]["targets"][0]["updated"],
        json!(["claresia-dainese-prd-review"])
    );
    assert_eq!(
        env.sim_skill_writes().await,
        before + 1,
        "one PUT, no ACL write (unchanged)"
    );
    let skills = env.sim_skills().await;
    let content = skill(&skills, "claresia-dainese-prd-review")["files"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content.contains("Be brief."));
}

#[tokio::test]
async fn troubleshooting_stale_skill_is_removed_when_the_grant_goes() {
    let env = connected().await;
    env.load_examples("dainese").await;
    // The product-manager archetype loses prd-review: it must disappear from the picker.
    let (s, b) = env
        .put_doc(
            "dainese",
            "/archetypes/product-manager",
            &json!({"skills": ["standup-notes"], "group_ids": ["grp_product"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["publish"]["targets"][0]["deleted"],
        json!(["claresia-dainese-prd-review"])
    );
    let skills = env.sim_skills().await;
    assert!(skills
        .iter()
        .all(|s| s["name"] != "claresia-dainese-prd-review"));
    // standup-notes keeps the product group through the remaining grant.
    assert_eq!(
        skill(&skills, "claresia-dainese-standup-notes")["acl"]["group_ids"],
        json!(["grp_engineering", "grp_product"])
    );
}

#[tokio::test]
async fn troubleshooting_403_on_publish_names_the_workspace() {
    let env = connected().await;
    env.load_examples("dainese").await;
    // dainese-sales does not have the key's principal as a member.
    let (s, b) = env
        .put_doc("dainese", "/archetypes/sales", &json!({"skills": ["standup-notes"], "group_ids": ["grp_sales"], "workspace_ids": [WS_SALES]}))
        .await;
    assert_eq!(s, 201, "{b}");
    let failed = &b["publish"]["targets"][0]["failed"];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{b}");
    assert_eq!(failed[0]["name"], "claresia-dainese-standup-notes");
    assert_eq!(
        failed[0]["reason"],
        format!("Add the Admin key's principal to workspace dainese-sales ({WS_SALES})")
    );
    // The other skills are unaffected.
    let (_, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(r["targets"][0]["unchanged"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn foreign_skills_with_similar_names_are_never_touched() {
    let env = connected().await;
    let foreign = |name: &str, meta: Value| {
        json!({"name": name, "description": "hand made", "metadata": meta,
               "files": [{"path": format!("{name}/SKILL.md"), "content": format!("---\nname: {name}\ndescription: hand made\n---\n")}]})
    };
    let http = reqwest::Client::new();
    for (name, meta) in [
        ("claresia-dainese-handmade", json!({})),
        (
            "claresia-dainese-spoofed",
            json!({"managed_by": "claresia", "tenant": "acme"}),
        ),
        (
            "claresia-dainese-prd-review",
            json!({"managed_by": "someone-else"}),
        ),
    ] {
        let r = http
            .post(format!(
                "{}/v1/organizations/{DAINESE_ORG_ID}/skills",
                env.sim.base_url()
            ))
            .header("x-api-key", GOOD_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&foreign(name, meta))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let before: Vec<Value> = env.sim_skills().await;
    env.load_examples("dainese").await;
    let (_, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    let after = env.sim_skills().await;
    for f in &before {
        let now = skill(&after, f["name"].as_str().unwrap());
        assert_eq!(
            now["latest_version"], f["latest_version"],
            "{} was modified",
            f["name"]
        );
        assert_eq!(now["acl"], f["acl"]);
    }
    // The name held by a foreign skill is reported, not taken over.
    let failed = r["targets"][0]["failed"].as_array().unwrap();
    assert!(
        failed
            .iter()
            .any(|f| f["name"] == "claresia-dainese-prd-review"
                && f["reason"].as_str().unwrap().contains("does not manage")),
        "{r}"
    );
}

#[tokio::test]
async fn a_crash_after_create_is_recovered_by_adopting_the_skill() {
    let env = connected().await;
    env.load_examples("dainese").await;
    // Simulate a run that created a skill and died before the ledger/ACL: delete our ledger view by
    // removing the ACL and dropping the skill from the hub's records is not possible from outside, so we
    // recreate the situation directly: delete the skill in the sim, then re-create it "by a crashed run".
    let skills = env.sim_skills().await;
    let pm = skill(&skills, "claresia-dainese-incident-postmortem").clone();
    let http = reqwest::Client::new();
    let base = format!(
        "{}/v1/organizations/{DAINESE_ORG_ID}/skills",
        env.sim.base_url()
    );
    let send = |m: &str, url: String, body: Option<Value>| {
        let mut r = http
            .request(m.parse().unwrap(), url)
            .header("x-api-key", GOOD_KEY)
            .header("anthropic-version", "2023-06-01");
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    send(
        "DELETE",
        format!("{base}/{}", pm["id"].as_str().unwrap()),
        None,
    )
    .await
    .unwrap();
    let mut def = pm.clone();
    for k in [
        "id",
        "type",
        "created_at",
        "updated_at",
        "latest_version",
        "acl",
    ] {
        def.as_object_mut().unwrap().remove(k);
    }
    send("POST", base.clone(), Some(def)).await.unwrap();
    // Every POST of this skill now answers 409; the next publish must adopt it and set its ACL.
    let (s, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["targets"][0]["failed"].as_array().unwrap().is_empty(),
        "{r}"
    );
    let skills = env.sim_skills().await;
    assert_eq!(
        skill(&skills, "claresia-dainese-incident-postmortem")["acl"]["group_ids"],
        json!(["grp_engineering"])
    );
    let (_, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(
        r["targets"][0]["unchanged"].as_array().unwrap().len(),
        3,
        "converged: {r}"
    );
}

#[tokio::test]
async fn outage_mid_publish_leaves_a_pending_marker_and_the_sweep_converges() {
    let env = connected().await;
    env.load_examples("dainese").await;
    // Wipe the org's skills, then fail every create: the publish cannot finish.
    for s in env.sim_skills().await {
        reqwest::Client::new()
            .delete(format!(
                "{}/v1/organizations/{DAINESE_ORG_ID}/skills/{}",
                env.sim.base_url(),
                s["id"].as_str().unwrap()
            ))
            .header("x-api-key", GOOD_KEY)
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
    }
    env.sim_send("PUT", "/_sim/faults", json!({"route": "POST /v1/organizations/{org_id}/skills", "fail": {"status": 529, "count": 100}})).await;
    let (s, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["complete"], false);
    assert_eq!(r["targets"][0]["pending"].as_array().unwrap().len(), 3);
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["publish_pending"], true);

    // Anthropic recovers; the scheduled sweep finishes the work without anyone calling again.
    env.sim_send("DELETE", "/_sim/faults", json!({})).await;
    let deadline = claresia_anthropic::Deadline::after(std::time::Duration::from_secs(20));
    let swept = env.app.sweep_pending(deadline).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert!(swept[0].complete);
    assert_eq!(env.sim_skills().await.len(), 3);
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["publish_pending"], false);
}

#[tokio::test]
async fn publishing_rides_out_a_rate_limit_storm() {
    let env = connected().await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "rate_limit_rps": 5.0}),
    )
    .await;
    env.load_examples("dainese").await;
    let (s, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(env.sim_skills().await.len(), 3);
}

#[tokio::test]
async fn publishing_is_refused_without_zero_retention_and_nothing_is_written() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.sim_send(
        "PATCH",
        &format!("/_sim/orgs/{DAINESE_ORG_ID}"),
        json!({"zero_retention": false}),
    )
    .await;
    env.call(
        As::Tenant("dainese"),
        "POST",
        "/tenants/dainese/connection/test",
        None,
    )
    .await;
    let (s, b) = env
        .put_doc(
            "dainese",
            "/skills/prd-review",
            &example("skill-prd-review.json"),
        )
        .await;
    assert_eq!(s, 201, "the catalog change is saved");
    assert_eq!(b["publish"]["skipped"], true);
    assert!(b["publish"]["reason"]
        .as_str()
        .unwrap()
        .contains("Zero-retention"));
    let (s, b) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("publish_refused"))
    );
    assert_eq!(
        env.sim_skill_writes().await,
        2,
        "only the two connection tests' write-scope probes"
    );
}

#[tokio::test]
async fn sub_tenants_have_their_own_namespace_acl_and_report() {
    let env = connected().await;
    env.load_examples("dainese").await;
    env.register_sub_tenant("dainese", "dainese-eng").await;
    let (s, b) = env
        .put_doc(
            "dainese",
            "/workspaces",
            &json!({"mappings": [
            {"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"},
            {"workspace_id": WS_CORPORATE, "sub_tenant": null}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .put_doc("dainese", "/archetypes/eng-oncall", &json!({"skills": ["incident-postmortem"], "group_ids": ["grp_oncall"], "sub_tenant": "dainese-eng"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let skills = env.sim_skills().await;
    let sub = skill(&skills, "claresia-dainese-eng-incident-postmortem");
    assert_eq!(sub["metadata"]["tenant"], "dainese-eng");
    assert_eq!(
        sub["acl"],
        json!({"workspace_ids": [WS_ENGINEERING], "group_ids": ["grp_oncall"]})
    );
    // The tenant's own skills carry the tenant's mapped workspace.
    assert_eq!(
        skill(&skills, "claresia-dainese-prd-review")["acl"]["workspace_ids"],
        json!([WS_CORPORATE])
    );

    // Republishing the tenant never deletes the sub-tenant's skill (the prefix is shared).
    let (_, r) = env
        .call(
            As::Tenant("dainese"),
            "POST",
            "/tenants/dainese/republish",
            None,
        )
        .await;
    let targets: Vec<&str> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(targets, vec!["dainese", "dainese-eng"]);
    assert!(r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["deleted"].as_array().unwrap().is_empty()));
    // The parent's token works on the sub-tenant's routes; another tenant's does not.
    let (s, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese-eng/connection",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(st["tenant"], "dainese-eng");
    assert_eq!(st["parent"], "dainese");
    assert_eq!(st["workspace_ids"], json!([WS_ENGINEERING]));
    assert_eq!(
        st["last_publish"]["tenant"], "dainese-eng",
        "a sub-tenant's status shows only its own publish report: {st}"
    );
    assert!(st.get("sub_tenants").is_none(), "{st}");
    assert_eq!(
        env.call(
            As::Tenant("acme"),
            "GET",
            "/tenants/dainese-eng/connection",
            None
        )
        .await
        .0,
        403
    );

    // Unknown workspaces and double mappings are refused with every problem named.
    let (s, b) = env
        .put_doc(
            "dainese",
            "/workspaces",
            &json!({"mappings": [
            {"workspace_id": "wrkspc_nope", "sub_tenant": null},
            {"workspace_id": WS_ENGINEERING, "sub_tenant": "dainese-eng"},
            {"workspace_id": WS_ENGINEERING, "sub_tenant": null}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["problems"].as_array().unwrap().len(), 2, "{b}");

    // Offboarding removes every skill we published, the sub-tenant's too, and nothing else.
    let (s, d) = env
        .call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["skills_removed"], 4);
    assert!(env.sim_skills().await.is_empty());
}

#[tokio::test]
async fn catalog_input_is_validated_whole() {
    let env = connected().await;
    let mut doc = example("skill-prd-review.json");
    doc["titel"] = json!("typo");
    doc["description"] = json!("<b>bold</b>");
    let (s, b) = env.put_doc("dainese", "/skills/prd-review", &doc).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_skill"))
    );
    let paths: Vec<&str> = b["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"$.titel") && paths.contains(&"$.description"),
        "{paths:?}"
    );
    let (s, b) = env
        .put_doc(
            "dainese",
            "/archetypes/engineer",
            &json!({"skills": ["nope"], "group_ids": []}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_archetype"))
    );
    assert!(b["error"]["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no skill \"nope\""));
    let (s, _) = env
        .put_doc("dainese", "/archetypes/engineer", &json!({"skils": []}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        env.call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/skills/prd-review",
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        env.call(As::Tenant("acme"), "GET", "/tenants/dainese/skills", None)
            .await
            .0,
        403
    );
    assert!(env.sim_skills().await.is_empty());
}

/// Issue 11: a 401/403 from Anthropic during a publish is a refusal with its reason, not "Anthropic
/// unavailable" with a pending marker that the sweep retries every minute for ever.
#[tokio::test]
async fn a_refused_publish_is_reported_and_never_retried() {
    let env = connected().await;
    env.load_examples("dainese").await;
    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": GOOD_KEY}))
        .await;
    let mut doc = example("skill-prd-review.json");
    doc["title"] = json!("PRD Review v2");
    let (s, b) = env.put_doc("dainese", "/skills/prd-review", &doc).await;
    assert_eq!(s, 200, "the catalog change is saved: {b}");
    assert_eq!(b["publish"]["skipped"], true);
    assert_eq!(b["publish"]["pending"], false, "{b}");
    assert!(
        b["publish"]["reason"].as_str().unwrap().contains("refused"),
        "{b}"
    );
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["publish_pending"], false);
    assert_eq!(st["state"], "needs_attention", "{st}");

    // A marker left from before (Anthropic was down, then the key was revoked): the sweep clears it
    // instead of retrying every minute.
    let hub = claresia_domain::TenantSlug::parse("dainese").unwrap();
    env.app.hub.mark_pending(&hub, "earlier").await.unwrap();
    let deadline = claresia_anthropic::Deadline::after(std::time::Duration::from_secs(20));
    env.app.sweep_pending(deadline).await.unwrap();
    assert_eq!(env.app.hub.pending_token(&hub).await.unwrap(), None);
    let before = env.sim_requests().await.len();
    env.app.sweep_pending(deadline).await.unwrap();
    assert_eq!(
        env.sim_requests().await.len(),
        before,
        "nothing left to retry"
    );
}

/// Issue 11: the skill list is paged summaries (whole documents, up to 100 KiB each, would pass Lambda's
/// 6 MB response at a few dozen skills); the full document comes from the per-skill route.
#[tokio::test]
async fn the_skill_list_is_paged_summaries() {
    let env = TestEnv::start().await;
    let mut doc = example("skill-standup-notes.json");
    doc["instructions"] = json!("step\n".repeat(20_000));
    for i in 0..5 {
        doc["id"] = json!(format!("skill-{i}"));
        let (s, b) = env
            .put_doc("dainese", &format!("/skills/skill-{i}"), &doc)
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (s, page) = env
            .call(
                As::Tenant("dainese"),
                "GET",
                &format!("/tenants/dainese/skills?{query}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        for skill in page["skills"].as_array().unwrap() {
            assert!(skill.get("instructions").is_none(), "a summary: {skill}");
            assert_eq!(skill["title"], "Standup Notes");
            seen.push(skill["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["skill-0", "skill-1", "skill-2", "skill-3", "skill-4"]
    );
    let (_, first) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/skills?limit=1",
            None,
        )
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    for bad in [
        format!("acme/skills?cursor={cursor}"),
        "dainese/skills?limit=101".into(),
        "dainese/skills?cursor=xyz".into(),
    ] {
        let who = bad.split('/').next().unwrap().to_owned();
        let (s, b) = env
            .call(As::Tenant(&who), "GET", &format!("/tenants/{bad}"), None)
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {b}"
        );
    }
}

/// Issue 11: catalog body errors quote the input back; a key pasted into the wrong place must not be.
#[tokio::test]
async fn catalog_errors_never_echo_a_key() {
    let env = TestEnv::start().await;
    let secret_part = "demo-dainese-good";
    let mut skill = example("skill-standup-notes.json");
    skill["owner"] = json!(GOOD_KEY);
    for (path, body) in [
        ("/skills/standup-notes", skill.to_string()),
        ("/skills/standup-notes", format!("{{\"id\": \"{GOOD_KEY}\"")),
        ("/archetypes/eng", json!({"skils": [GOOD_KEY]}).to_string()),
        ("/archetypes/eng", json!({"skills": [GOOD_KEY]}).to_string()),
        (
            "/workspaces",
            json!({"mappings": [{"workspace_id": 1, "sub_tenant": GOOD_KEY}]}).to_string(),
        ),
    ] {
        let (s, b) = env
            .call(
                As::Tenant("dainese"),
                "PUT",
                &format!("/tenants/dainese{path}"),
                Some(&body),
            )
            .await;
        assert!((400..500).contains(&s), "{path}: {s} {b}");
        assert!(!b.to_string().contains(secret_part), "{path}: {b}");
    }
}

/// Issue 11: one deadline per request. `PUT …/workspaces` used to spend its budget listing workspaces and
/// then a fresh budget publishing, past the function's timeout; now the publish gets what is left, and
/// what it cannot finish is left to the sweep with a pending marker.
#[tokio::test]
async fn a_request_shares_one_deadline_between_its_steps() {
    let env =
        TestEnv::start_with(|c| c.request_budget = std::time::Duration::from_millis(2500)).await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.load_examples("dainese").await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/workspaces", "latency_ms": 1500}),
    )
    .await;
    let (s, b) = env
        .put_doc(
            "dainese",
            "/workspaces",
            &json!({"mappings": [{"workspace_id": WS_CORPORATE, "sub_tenant": null}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["publish"]["pending"], true, "left to the sweep: {b}");
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["publish_pending"], true);
}

/// Issue 11: publishes of one Hub are serialized. A grant and a revoke of the same skill issued at once,
/// 20 rounds: after each (and the sweep, for what was left pending), Anthropic matches the catalog —
/// skills and group ACLs — whichever request's write landed last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_racing_a_revoke_leaves_anthropic_matching_the_catalog() {
    let env = connected().await;
    for id in ["incident-postmortem", "prd-review"] {
        let (s, b) = env
            .put_doc(
                "dainese",
                &format!("/skills/{id}"),
                &example(&format!("skill-{id}.json")),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    // Latency on every call, so one request's plan and writes overlap the other's.
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": 40}),
    )
    .await;
    let grant =
        json!({"skills": ["incident-postmortem", "prd-review"], "group_ids": ["grp_engineering"]});
    let revoke = json!({"skills": ["prd-review"], "group_ids": ["grp_product"]});
    let deadline = || claresia_anthropic::Deadline::after(std::time::Duration::from_secs(20));
    for round in 0..20 {
        let (a, b) = if round % 2 == 0 {
            (&grant, &revoke)
        } else {
            (&revoke, &grant)
        };
        // The second lands at a different point of the first one's publish each round.
        let stagger = std::time::Duration::from_millis(10 * (round % 10) as u64 + 20);
        let (ra, rb) = tokio::join!(env.put_doc("dainese", "/archetypes/eng", a), async {
            tokio::time::sleep(stagger).await;
            env.put_doc("dainese", "/archetypes/eng", b).await
        });
        // Unconditional writes (no If-Match): both land; the first of all creates the archetype.
        let mut got = [ra.0, rb.0];
        got.sort();
        let want = if round == 0 { [200, 201] } else { [200, 200] };
        assert_eq!(got, want, "round {round}: {} {}", ra.1, rb.1);
        env.app.sweep_pending(deadline()).await.unwrap();

        let (_, stored) = env
            .call(
                As::Tenant("dainese"),
                "GET",
                "/tenants/dainese/archetypes/eng",
                None,
            )
            .await;
        let mut want: Vec<String> = stored["skills"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("claresia-dainese-{}", s.as_str().unwrap()))
            .collect();
        want.sort();
        let skills = env.sim_skills().await;
        assert_eq!(names(&skills), want, "round {round}");
        for s in &skills {
            assert_eq!(
                s["acl"]["group_ids"], stored["group_ids"],
                "round {round}: {s}"
            );
        }
    }
}

/// A change published by scope must not clear the marker of earlier work a publish left pending (its
/// budget ran out): only a full publish covers that, so the marker stays for the sweep.
#[tokio::test]
async fn a_scoped_change_keeps_the_marker_of_earlier_pending_work() {
    let env = connected().await;
    env.load_examples("dainese").await;
    let hub = claresia_domain::TenantSlug::parse("dainese").unwrap();
    // Earlier work a cut-short publish left for the sweep: a new skill granted, not yet in Anthropic.
    let mut retro = example("skill-standup-notes.json");
    retro["id"] = json!("retro-notes");
    env.app
        .hub
        .put_skill(&hub, "retro-notes", &retro, &claresia_aws::Expect::Any)
        .await
        .unwrap();
    env.app
        .hub
        .put_archetype(
            &hub,
            "oncall",
            &json!({"skills": ["retro-notes"], "group_ids": ["grp_oncall"]}),
            &claresia_aws::Expect::Any,
        )
        .await
        .unwrap();
    env.app
        .hub
        .mark_pending(&hub, "earlier-cut-short")
        .await
        .unwrap();

    // A later change of another skill, published by its scope, completes...
    let mut prd = example("skill-prd-review.json");
    prd["title"] = json!("PRD review v2");
    let (s, b) = env.put_doc("dainese", "/skills/prd-review", &prd).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["publish"]["complete"], true, "{b}");
    assert!(!names(&env.sim_skills().await).contains(&"claresia-dainese-retro-notes".to_owned()));
    // ...and the earlier work is still pending, so the sweep publishes it.
    let (_, st) = env
        .call(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/connection",
            None,
        )
        .await;
    assert_eq!(st["publish_pending"], true, "{st}");
    env.app
        .sweep_pending(claresia_anthropic::Deadline::after(
            std::time::Duration::from_secs(20),
        ))
        .await
        .unwrap();
    assert!(names(&env.sim_skills().await).contains(&"claresia-dainese-retro-notes".to_owned()));
    assert_eq!(env.app.hub.pending_token(&hub).await.unwrap(), None);
}
