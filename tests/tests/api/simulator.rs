//! The simulator is a product part: its contract is checked here with raw HTTP, independent of our client.

use anthropic_sim::{demo, Sim, SimServer};
use serde_json::{json, Value};

struct Raw {
    sim: SimServer,
    http: reqwest::Client,
}

impl Raw {
    async fn start() -> Raw {
        let sim = Sim::new();
        demo::seed(&sim);
        Raw {
            sim: SimServer::start("127.0.0.1:0".parse().unwrap(), sim)
                .await
                .unwrap(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Option<String>, Value) {
        let mut req = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.sim.base_url()),
            )
            .header("anthropic-version", "2023-06-01");
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let rid = resp
            .headers()
            .get("request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, rid, resp.json().await.unwrap_or(Value::Null))
    }

    async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        self.http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.sim.base_url()),
            )
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn skill(name: &str) -> Value {
    json!({
        "name": name,
        "display_title": "X",
        "description": "Does x",
        "files": [{"path": format!("{name}/SKILL.md"), "content": format!("---\nname: {name}\ndescription: Does x\n---\n\n# X\n")}],
        "input_schema": {"type": "object", "properties": {}},
        "metadata": {"managed_by": "claresia", "tenant": "dainese"}
    })
}

#[tokio::test]
async fn errors_use_the_envelope_and_the_header_request_id() {
    let r = Raw::start().await;
    let (s, rid, body) = r.send("GET", "/v1/organizations/me", None, None).await;
    assert_eq!(s, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["request_id"].as_str(), rid.as_deref());
    assert!(rid.unwrap().starts_with("req_"));
    let no_version = r
        .http
        .get(format!("{}/v1/organizations/me", r.sim.base_url()))
        .header("x-api-key", demo::GOOD_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status().as_u16(), 400);
    let (s, _, body) = r
        .send(
            "GET",
            "/v1/organizations/workspaces",
            Some(demo::REVOKED_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"]["type"].as_str()),
        (401, Some("authentication_error"))
    );
}

#[tokio::test]
async fn me_reports_zero_retention_on_off_or_absent() {
    let r = Raw::start().await;
    let (_, _, on) = r
        .send("GET", "/v1/organizations/me", Some(demo::GOOD_KEY), None)
        .await;
    assert_eq!(
        on,
        json!({"id": demo::DAINESE_ORG_ID, "type": "organization", "name": "Dainese S.p.A.", "zero_retention": true})
    );
    let (_, _, off) = r
        .send("GET", "/v1/organizations/me", Some(demo::NO_ZR_KEY), None)
        .await;
    assert_eq!(off["zero_retention"], false);
    let (_, _, absent) = r
        .send(
            "GET",
            "/v1/organizations/me",
            Some(demo::UNKNOWN_ZR_KEY),
            None,
        )
        .await;
    assert!(absent.get("zero_retention").is_none());
}

#[tokio::test]
async fn scopes_are_checked_per_endpoint() {
    let r = Raw::start().await;
    let org = demo::DAINESE_ORG_ID;
    let (s, _, b) = r
        .send(
            "GET",
            &format!("/v1/organizations/{org}/audit_logs"),
            Some(demo::NO_AUDIT_KEY),
            None,
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(b["error"]["type"], "permission_error");
    assert_eq!(
        b["error"]["message"],
        "API key is missing required scope: Audit:read"
    );
    let (s, _, _) = r
        .send(
            "GET",
            &format!("/v1/organizations/{org}/skills"),
            Some(demo::NO_AUDIT_KEY),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // Another org's id is not reachable with this key.
    let (s, _, _) = r
        .send(
            "GET",
            &format!("/v1/organizations/{}/skills", demo::NO_ZR_ORG_ID),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn lists_paginate_with_the_shared_envelope() {
    let r = Raw::start().await;
    let (s, _, p1) = r
        .send(
            "GET",
            "/v1/organizations/workspaces?limit=2",
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1["has_more"], true);
    assert_eq!(p1["first_id"], demo::WS_ENGINEERING);
    assert_eq!(p1["last_id"], demo::WS_CORPORATE);
    let (_, _, p2) = r
        .send(
            "GET",
            &format!(
                "/v1/organizations/workspaces?limit=2&after_id={}",
                demo::WS_CORPORATE
            ),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(p2["data"][0]["id"], demo::WS_SALES);
    assert_eq!(
        p2["has_more"], false,
        "the archived workspace is hidden by default"
    );
    let (_, _, all) = r
        .send(
            "GET",
            "/v1/organizations/workspaces?include_archived=true",
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4);
    let (s, _, _) = r
        .send(
            "GET",
            "/v1/organizations/workspaces?limit=0",
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _, _) = r
        .send(
            "GET",
            "/v1/organizations/workspaces?limit=1001",
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn skills_validate_conflict_and_acl_rules() {
    let r = Raw::start().await;
    let base = format!("/v1/organizations/{}/skills", demo::DAINESE_ORG_ID);
    let (s, _, created) = r
        .send(
            "POST",
            &base,
            Some(demo::GOOD_KEY),
            Some(skill("claresia-dainese-x")),
        )
        .await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(created["type"], "skill");
    assert_eq!(
        created["acl"],
        json!({"workspace_ids": [], "group_ids": []})
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (s, _, dup) = r
        .send(
            "POST",
            &base,
            Some(demo::GOOD_KEY),
            Some(skill("claresia-dainese-x")),
        )
        .await;
    assert_eq!(
        (s, dup["error"]["type"].as_str()),
        (409, Some("conflict_error"))
    );
    let (s, _, _) = r
        .send(
            "POST",
            &base,
            Some(demo::GOOD_KEY),
            Some(skill("my-claude-helper")),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _, _) = r
        .send(
            "POST",
            &base,
            Some(demo::NO_AUDIT_KEY),
            Some(skill("ok-skill")),
        )
        .await;
    assert_eq!(s, 200, "the no-audit key can still write skills");

    let acl = format!("{base}/{id}/acl");
    let (s, _, b) = r
        .send(
            "PUT",
            &acl,
            Some(demo::GOOD_KEY),
            Some(json!({"workspace_ids": [demo::WS_SALES], "group_ids": []})),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(
        b["error"]["message"],
        format!(
            "Admin key principal is not a member of workspace {}",
            demo::WS_SALES
        )
    );
    let (s, _, _) = r
        .send(
            "PUT",
            &acl,
            Some(demo::GOOD_KEY),
            Some(json!({"workspace_ids": ["wrkspc_nope"], "group_ids": []})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _, b) = r
        .send(
            "PUT",
            &acl,
            Some(demo::GOOD_KEY),
            Some(
                json!({"workspace_ids": [demo::WS_ENGINEERING], "group_ids": ["grp_engineering"]}),
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["group_ids"], json!(["grp_engineering"]));
    let (_, _, one) = r
        .send("GET", &format!("{base}/{id}"), Some(demo::GOOD_KEY), None)
        .await;
    assert_eq!(one["acl"]["workspace_ids"], json!([demo::WS_ENGINEERING]));
    let (s, _, del) = r
        .send(
            "DELETE",
            &format!("{base}/{id}"),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!((s, del["type"].as_str()), (200, Some("skill_deleted")));
    let (s, _, _) = r
        .send(
            "DELETE",
            &format!("{base}/{id}"),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let state = r.control("GET", "/_sim/state", json!({})).await;
    assert_eq!(
        state["routes"]["POST /v1/organizations/{org_id}/skills"]["writes"],
        4
    );
}

#[tokio::test]
async fn audit_log_is_oldest_first_exclusive_after_id_and_expires() {
    let r = Raw::start().await;
    let org = demo::DAINESE_ORG_ID;
    let ids = r
        .control("POST", &format!("/_sim/orgs/{org}/audit_events"), json!({"invoke": {"skill_name": "claresia-dainese-x", "count": 5, "record_id": "rec_1"}}))
        .await["ids"]
        .clone();
    let path = format!(
        "/v1/organizations/{org}/audit_logs?event_types=skill.invoked,skill.failed&limit=2"
    );
    let (_, _, p1) = r.send("GET", &path, Some(demo::GOOD_KEY), None).await;
    assert_eq!(p1["data"][0]["id"], ids[0]);
    assert_eq!(p1["has_more"], true);
    assert_eq!(p1["data"][0]["details"]["record_id"], "rec_1");
    let (_, _, p2) = r
        .send(
            "GET",
            &format!("{path}&after_id={}", ids[1].as_str().unwrap()),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(p2["data"][0]["id"], ids[2], "after_id is exclusive");
    // At-least-once: a redelivered event comes again, same id, after the cursor.
    r.control(
        "POST",
        &format!("/_sim/orgs/{org}/audit_events/redeliver"),
        json!({"ids": [ids[0]]}),
    )
    .await;
    let (_, _, tail) = r
        .send(
            "GET",
            &format!("{path}&after_id={}", ids[4].as_str().unwrap()),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(tail["data"][0]["id"], ids[0]);
    // Expired cursor: 400 naming after_id.
    r.control(
        "POST",
        &format!("/_sim/orgs/{org}/audit_events/expire"),
        json!({"through_id": ids[2]}),
    )
    .await;
    let (s, _, b) = r
        .send(
            "GET",
            &format!("{path}&after_id={}", ids[1].as_str().unwrap()),
            Some(demo::GOOD_KEY),
            None,
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("after_id"));
}
