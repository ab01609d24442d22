//! The simulator's `enterprise` surface (`claude-enterprise-api.md`), checked with raw HTTP and
//! hand-built multipart bodies, independent of any client: keys and scopes, the Plugins beta header,
//! plugins and their versions, installation settings, RBAC groups, the Compliance feed and analytics.

use anthropic_sim::{Sim, SimServer};
use serde_json::{json, Value};

const BETA: &str = "ce-plugins-2026-09-01";
const CONNECTOR_SCOPES: [&str; 5] = [
    "write:plugins",
    "read:plugins",
    "read:analytics",
    "read:compliance_activities",
    "read:rbac_groups",
];

struct Ent {
    sim: SimServer,
    http: reqwest::Client,
    org: String,
    key: String,
    groups: Vec<String>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Ent {
    /// An enterprise org with two RBAC groups and a key holding the connector's five scopes.
    async fn start() -> Ent {
        let sim = SimServer::start("127.0.0.1:0".parse().unwrap(), Sim::new())
            .await
            .unwrap();
        let mut e = Ent {
            sim,
            http: reqwest::Client::new(),
            org: String::new(),
            key: String::new(),
            groups: vec![],
        };
        let org = e
            .control(
                "POST",
                "/_sim/orgs",
                json!({"name": "Acme Enterprise", "kind": "enterprise"}),
            )
            .await;
        assert_eq!(org["kind"], "enterprise");
        e.org = org["id"].as_str().unwrap().to_owned();
        e.key = e.new_key(&CONNECTOR_SCOPES).await;
        for name in ["Engineering", "Sales"] {
            let g = e
                .control(
                    "POST",
                    &format!("/_sim/orgs/{}/rbac_groups", e.org),
                    json!({"name": name}),
                )
                .await;
            e.groups.push(g["id"].as_str().unwrap().to_owned());
        }
        e
    }

    async fn new_key(&self, scopes: &[&str]) -> String {
        let k = self
            .control(
                "POST",
                &format!("/_sim/orgs/{}/keys", self.org),
                json!({"scopes": scopes}),
            )
            .await;
        let key = k["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("sk-ant-api01-"), "{key}");
        key
    }

    async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.sim.base_url()),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        beta: bool,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut req = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.sim.base_url()),
            )
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", key);
        if beta {
            req = req.header("anthropic-beta", BETA);
        }
        if let Some((ct, bytes)) = body {
            req = req.header("content-type", ct).body(bytes);
        }
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.json().await.unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &self.key, true, None).await
    }

    async fn json(&self, method: &str, path: &str, body: Value) -> Answer {
        let bytes = body.to_string().into_bytes();
        self.call(
            method,
            path,
            &self.key,
            true,
            Some(("application/json", bytes)),
        )
        .await
    }

    async fn upload(&self, path: &str, files: &[(&str, String)]) -> Answer {
        let (ct, body) = multipart(files, "files[]");
        self.call("POST", path, &self.key, true, Some((&ct, body)))
            .await
    }

    /// Uploads a one-skill plugin named `name`; answers its id.
    async fn plugin(&self, name: &str) -> String {
        let a = self
            .upload("/v1/organizations/plugins", &bundle(name, "1"))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    async fn activities(&self, query: &str) -> Answer {
        self.call(
            "GET",
            &format!("/v1/compliance/activities?{query}"),
            &self.key,
            false,
            None,
        )
        .await
    }
}

/// A `multipart/form-data` body with one part per file, named `part`, whose filename is its path.
fn multipart(files: &[(&str, String)], part: &str) -> (String, Vec<u8>) {
    let boundary = "----claresia-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (path, text) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{path}\"\r\nContent-Type: application/octet-stream\r\n\r\n{text}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn bundle(name: &str, version: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            ".claude-plugin/plugin.json",
            json!({"name": name, "displayName": "Incident Postmortem", "description": "Drafts postmortems",
                   "version": version, "author": {"name": "Claresia"}})
            .to_string(),
        ),
        (
            "skills/incident-postmortem/SKILL.md",
            format!("---\nname: {name}\ndescription: Drafts a blameless postmortem.\n---\n\nYou write postmortems.\n"),
        ),
    ]
}

fn code_of(a: &Answer) -> (u16, String) {
    (
        a.status,
        a.body["error"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn keys_scopes_org_type_and_the_beta_header_are_enforced() {
    let e = Ent::start().await;
    let list = "/v1/organizations/plugins";
    assert_eq!(e.get(list).await.status, 200);
    // Without the beta header the Plugins API reads as nonexistent.
    let a = e.call("GET", list, &e.key, false, None).await;
    assert_eq!(code_of(&a), (404, "not_found_error".into()));
    // A key without write:plugins: 403 naming what it has and what it needs.
    let read_only = e.new_key(&["read:plugins"]).await;
    let (ct, body) = multipart(&bundle("claresia-acme-x", "1"), "files[]");
    let a = e
        .call("POST", list, &read_only, true, Some((&ct, body)))
        .await;
    assert_eq!(code_of(&a), (403, "permission_error".into()));
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Missing required scopes") && msg.contains("write:plugins"),
        "{msg}"
    );
    // An unknown key: 401; a Console (preview) org's key: 400, not an enterprise organization.
    let a = e.call("GET", list, "sk-ant-api01-nope", true, None).await;
    assert_eq!(code_of(&a), (401, "authentication_error".into()));
    let preview = e
        .control("POST", "/_sim/orgs", json!({"name": "Console org"}))
        .await;
    let pk = e
        .control(
            "POST",
            &format!("/_sim/orgs/{}/keys", preview["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    let a = e
        .call("GET", list, pk["key"].as_str().unwrap(), true, None)
        .await;
    assert_eq!(code_of(&a), (400, "invalid_request_error".into()));
    // Enterprise scopes only for enterprise keys.
    let resp = e
        .http
        .post(format!("{}/_sim/orgs/{}/keys", e.sim.base_url(), e.org))
        .json(&json!({"scopes": ["Skills:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // /organizations/me: both documented readings can be played.
    let me = e
        .call("GET", "/v1/organizations/me", &e.key, false, None)
        .await;
    assert_eq!(
        (me.status, me.body["name"].clone()),
        (200, json!("Acme Enterprise"))
    );
    assert!(
        me.body.get("zero_retention").is_none(),
        "no enterprise API reports it"
    );
    e.control(
        "PATCH",
        &format!("/_sim/orgs/{}", e.org),
        json!({"me_answers": false}),
    )
    .await;
    let me = e
        .call("GET", "/v1/organizations/me", &e.key, false, None)
        .await;
    assert_eq!(me.status, 404);
}

#[tokio::test]
async fn a_plugin_is_uploaded_versioned_listed_and_deleted() {
    let e = Ent::start().await;
    let created = e
        .upload(
            "/v1/organizations/plugins",
            &bundle("claresia-acme-postmortem", "abc123"),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let p = &created.body;
    assert_eq!(
        (p["type"].clone(), p["name"].clone()),
        (json!("plugin"), json!("claresia-acme-postmortem"))
    );
    assert_eq!(p["display_name"], "Incident Postmortem");
    assert_eq!(p["manifest_version"], "abc123");
    assert_eq!(p["components"][0]["name"], "claresia-acme-postmortem");
    assert_eq!(p["organization_installation_preference_inherited"], true);
    let id = p["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("plugin_"));

    // The same name again: 409 plugin_name_taken, naming the holder.
    let again = e
        .upload(
            "/v1/organizations/plugins",
            &bundle("claresia-acme-postmortem", "abc123"),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(
        again.body["error"]["details"]["error_code"],
        "plugin_name_taken"
    );
    assert_eq!(again.body["error"]["details"]["plugin_id"], id);

    // A change is a new version; the manifest name is fixed.
    let v = e
        .upload(
            &format!("/v1/organizations/plugins/{id}/versions"),
            &bundle("claresia-acme-postmortem", "def456"),
        )
        .await;
    assert_eq!(
        (v.status, v.body["type"].clone()),
        (200, json!("plugin_version")),
        "{}",
        v.body
    );
    let renamed = e
        .upload(
            &format!("/v1/organizations/plugins/{id}/versions"),
            &bundle("claresia-acme-other", "1"),
        )
        .await;
    assert_eq!(renamed.status, 400);
    let got = e.get(&format!("/v1/organizations/plugins/{id}")).await;
    assert_eq!(got.body["manifest_version"], "def456");
    assert_eq!(got.body["served_version_id"], v.body["id"]);
    let versions = e
        .get(&format!("/v1/organizations/plugins/{id}/versions"))
        .await;
    assert_eq!(versions.body["data"].as_array().unwrap().len(), 2);

    // Ids: no prefix 400, unknown 404.
    assert_eq!(e.get("/v1/organizations/plugins/12345").await.status, 400);
    assert_eq!(
        e.get("/v1/organizations/plugins/plugin_01nope")
            .await
            .status,
        404
    );

    let gone = e
        .call(
            "DELETE",
            &format!("/v1/organizations/plugins/{id}"),
            &e.key,
            true,
            None,
        )
        .await;
    assert_eq!(gone.body, json!({"type": "plugin_deleted", "id": id}));
    assert_eq!(
        e.get(&format!("/v1/organizations/plugins/{id}"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn bundles_are_validated() {
    let e = Ent::start().await;
    let path = "/v1/organizations/plugins";
    let mut cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "no manifest",
            vec![(
                "skills/a/SKILL.md",
                "---\nname: a\ndescription: d\n---\n".into(),
            )],
        ),
        (
            "manifest sent under its base name",
            vec![("plugin.json", json!({"name": "a"}).to_string())],
        ),
        ("uppercase name", bundle("Claresia-Acme", "1")),
        (
            "no front matter",
            vec![
                (
                    ".claude-plugin/plugin.json",
                    json!({"name": "claresia-a"}).to_string(),
                ),
                ("skills/a/SKILL.md", "just text".into()),
            ],
        ),
    ];
    let mut with_bin = bundle("claresia-acme-bin", "1");
    with_bin.push(("bin/run.sh", "echo".into()));
    cases.push(("a top-level bin/", with_bin));
    for (why, files) in cases {
        let a = e.upload(path, &files).await;
        assert_eq!(
            code_of(&a),
            (400, "invalid_request_error".into()),
            "{why}: {}",
            a.body
        );
    }
    // A part named `files` (no brackets) is ignored: nothing was sent.
    let (ct, body) = multipart(&bundle("claresia-acme-x", "1"), "files");
    let a = e.call("POST", path, &e.key, true, Some((&ct, body))).await;
    assert_eq!(a.status, 400);
    assert_eq!(e.get(path).await.body["data"], json!([]));
}

#[tokio::test]
async fn installation_settings_follow_the_documented_rules() {
    let e = Ent::start().await;
    let id = e.plugin("claresia-acme-postmortem").await;
    let base = format!("/v1/organizations/plugins/{id}/installation_settings");
    let set = |target: String, pref: &'static str| {
        let (e, base) = (&e, base.clone());
        async move {
            e.json(
                "POST",
                &format!("{base}/{target}"),
                json!({"installation_preference": pref}),
            )
            .await
        }
    };
    let a = set("organization".into(), "not_available").await;
    assert_eq!(
        (a.status, a.body["target"]["type"].clone()),
        (200, json!("organization")),
        "{}",
        a.body
    );
    let a = set(e.groups[0].clone(), "auto_install").await;
    assert_eq!(
        a.body["target"],
        json!({"type": "rbac_group", "rbac_group_id": e.groups[0]})
    );
    assert_eq!(
        set("rbac_group_01nope".into(), "available").await.status,
        404
    );
    assert_eq!(set("everyone".into(), "available").await.status, 400);
    assert_eq!(set(e.groups[1].clone(), "sometimes").await.status, 400);

    let groups = e.get(&format!("{base}?target_type=rbac_group")).await;
    assert_eq!(groups.body["data"].as_array().unwrap().len(), 1);
    let state = e.control("GET", "/_sim/state", json!({})).await;
    let vis = &state["orgs"][0]["enterprise"]["visibility"][0];
    assert_eq!(vis["groups"][&e.groups[0]], "auto_install");
    assert_eq!(
        vis["groups"][&e.groups[1]], "not_available",
        "the org value: {vis}"
    );

    // Writing the same value records nothing; deleting a setting does; deleting it twice is 404.
    let before = e.activities("limit=5000").await.body["data"]
        .as_array()
        .unwrap()
        .len();
    set(e.groups[0].clone(), "auto_install").await;
    assert_eq!(
        e.activities("limit=5000").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        before
    );
    let del = e
        .call(
            "DELETE",
            &format!("{base}/{}", e.groups[0]),
            &e.key,
            true,
            None,
        )
        .await;
    assert_eq!(del.body["type"], "plugin_installation_setting_deleted");
    let del = e
        .call(
            "DELETE",
            &format!("{base}/{}", e.groups[0]),
            &e.key,
            true,
            None,
        )
        .await;
    assert_eq!(del.status, 404);
}

#[tokio::test]
async fn the_compliance_feed_records_every_write_and_pages_newest_first() {
    let e = Ent::start().await;
    let id = e.plugin("claresia-acme-postmortem").await;
    e.json(
        "POST",
        &format!(
            "/v1/organizations/plugins/{id}/installation_settings/{}",
            e.groups[0]
        ),
        json!({"installation_preference": "auto_install"}),
    )
    .await;
    // An admin changes it by hand in claude.ai: the same kind of activity, by a user.
    e.control(
        "POST",
        &format!("/_sim/orgs/{}/ui_change", e.org),
        json!({"plugin_name": "claresia-acme-postmortem", "target": e.groups[0], "installation_preference": "required"}),
    )
    .await;
    e.upload(
        &format!("/v1/organizations/plugins/{id}/versions"),
        &bundle("claresia-acme-postmortem", "2"),
    )
    .await;

    let all = e.activities("limit=100").await;
    let data = all.body["data"].as_array().unwrap();
    let types: Vec<&str> = data.iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "claude_plugin_updated",
            "plugin_installation_preference_updated",
            "plugin_installation_preference_updated",
            "claude_plugin_created"
        ],
        "newest first"
    );
    assert_eq!(data[1]["actor"]["type"], "user_actor");
    assert_eq!(data[1]["installation_preference"], "required");
    assert_eq!(data[2]["actor"]["type"], "api_actor");
    assert!(data[2]["actor"]["api_key_id"]
        .as_str()
        .unwrap()
        .starts_with("apikey_"));
    assert_eq!(data[2]["group_id"], e.groups[0]);
    assert_eq!(data[2]["group_name"], "Engineering");
    assert_eq!(
        (all.body["first_id"].clone(), all.body["has_more"].clone()),
        (data[0]["id"].clone(), json!(false))
    );

    // The documented catch-up loop from a cursor at the oldest: pages of 1 walking newer, exactly once.
    let mut cursor = data[3]["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    loop {
        let page = e.activities(&format!("before_id={cursor}&limit=1")).await;
        let got = page.body["data"].as_array().unwrap();
        seen.extend(got.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        if let Some(first) = page.body["first_id"].as_str() {
            cursor = first.to_owned();
        }
        if page.body["has_more"] == false {
            break;
        }
    }
    let mut want: Vec<String> = data[..3]
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    want.reverse();
    assert_eq!(seen, want);
    // Older than an id; filters; bad input.
    let older = e
        .activities(&format!(
            "after_id={}&limit=2",
            data[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(older.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(older.body["has_more"], true);
    let only = e.activities("activity_types[]=claude_plugin_created").await;
    assert_eq!(only.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(e.activities("limit=5001").await.status, 400);
    assert_eq!(e.activities("after_id=nope").await.status, 400);
    assert_eq!(
        e.activities(&format!("after_id={cursor}&before_id={cursor}"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn analytics_reports_recorded_use_by_day_and_group() {
    let e = Ent::start().await;
    let today = time::OffsetDateTime::now_utc().date();
    let yesterday = (today - time::Duration::days(1)).to_string();
    let before = (today - time::Duration::days(2)).to_string();
    let usage = format!("/_sim/orgs/{}/usage", e.org);
    for (date, group, n) in [(&yesterday, 0, 5), (&yesterday, 1, 2), (&before, 0, 7)] {
        e.control(
            "POST",
            &usage,
            json!({"skill_name": "claresia-acme-postmortem",
            "rbac_group_id": e.groups[group], "date": date, "invocations": n, "users": 1}),
        )
        .await;
    }
    let path = |q: String| format!("/v1/organizations/analytics/skills?{q}");
    let a = e.get(&path(format!("date={today}"))).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&yesterday),
        "{}",
        a.body
    );
    let a = e
        .get(&path(format!("date={yesterday}&group_by[]=rbac_group_id&filter[]=skill_name:claresia-acme-postmortem")))
        .await;
    let rows = a.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", a.body);
    let eng = rows
        .iter()
        .find(|r| r["rbac_group_id"] == e.groups[0].as_str())
        .unwrap();
    assert_eq!(
        (
            eng["invocation_count"].clone(),
            eng["rbac_group_name"].clone()
        ),
        (json!(5), json!("Engineering"))
    );
    // A revision replaces the day's figures.
    e.control(
        "POST",
        &usage,
        json!({"skill_name": "claresia-acme-postmortem",
        "rbac_group_id": e.groups[0], "date": yesterday, "invocations": 6, "users": 2}),
    )
    .await;
    let a = e
        .get(&path(format!(
            "date={yesterday}&filter[]=rbac_group_id:{}",
            e.groups[0]
        )))
        .await;
    assert_eq!(a.body["data"][0]["invocation_count"], 6);
    // A range rolls up.
    let a = e
        .get(&path(format!("starting_date={before}&ending_date={today}")))
        .await;
    assert_eq!(a.body["data"][0]["invocation_count"], 6 + 2 + 7);
    assert_eq!(e.get(&path("filter[]=colour:red".into())).await.status, 400);
    let key = e.new_key(&["read:plugins"]).await;
    let a = e
        .call("GET", &path(format!("date={yesterday}")), &key, false, None)
        .await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn writes_are_limited_per_org_per_minute_and_the_limit_can_be_raised() {
    let e = Ent::start().await;
    e.control(
        "PATCH",
        &format!("/_sim/orgs/{}", e.org),
        json!({"writes_per_minute": 3}),
    )
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..4 {
        let a = e
            .upload(
                "/v1/organizations/plugins",
                &bundle(&format!("claresia-acme-s{i}"), "1"),
            )
            .await;
        statuses.push(a.status);
        if a.status == 429 {
            limited = Some(a);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let a = limited.unwrap();
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(a.headers["anthropic-ratelimit-requests-limit"], "3");
    // Reads have their own budget.
    assert_eq!(e.get("/v1/organizations/plugins").await.status, 200);
    e.control(
        "PATCH",
        &format!("/_sim/orgs/{}", e.org),
        json!({"writes_per_minute": 600}),
    )
    .await;
    let a = e
        .upload(
            "/v1/organizations/plugins",
            &bundle("claresia-acme-s9", "1"),
        )
        .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn lists_page_with_next_page_and_may_be_short() {
    let e = Ent::start().await;
    e.control(
        "PATCH",
        &format!("/_sim/orgs/{}", e.org),
        json!({"writes_per_minute": 600, "plugin_page_cap": 2}),
    )
    .await;
    for i in 0..5 {
        e.upload(
            "/v1/organizations/plugins",
            &bundle(&format!("claresia-acme-p{i}"), "1"),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut url = "/v1/organizations/plugins?limit=100".to_owned();
    loop {
        let page = e.get(&url).await;
        let data = page.body["data"].as_array().unwrap();
        assert!(data.len() <= 2, "short pages");
        names.extend(data.iter().map(|p| p["name"].as_str().unwrap().to_owned()));
        match page.body["next_page"].as_str() {
            Some(n) => url = format!("/v1/organizations/plugins?limit=100&page={n}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..5)
        .rev()
        .map(|i| format!("claresia-acme-p{i}"))
        .collect();
    assert_eq!(names, want, "newest first, each once");
    assert_eq!(
        e.get("/v1/organizations/plugins?colour=red").await.status,
        400
    );
    let groups = e
        .call(
            "GET",
            "/v1/organizations/rbac_groups?limit=1",
            &e.key,
            false,
            None,
        )
        .await;
    assert_eq!(
        (
            groups.body["data"].as_array().unwrap().len(),
            groups.body["has_more"].clone()
        ),
        (1, json!(true))
    );
}

#[tokio::test]
async fn concurrent_writes_to_one_plugin_get_503_to_retry_and_serial_ones_do_not() {
    let e = Ent::start().await;
    let id = e.plugin("claresia-acme-postmortem").await;
    let other = e.plugin("claresia-acme-standup").await;
    e.control(
        "PUT",
        "/_sim/faults",
        json!({"route": "*", "latency_ms": 200}),
    )
    .await;
    let path =
        |id: &str| format!("/v1/organizations/plugins/{id}/installation_settings/organization");
    let body = json!({"installation_preference": "not_available"});
    let (mine, theirs) = (path(&id), path(&other));
    let (a, b, c) = tokio::join!(
        e.json("POST", &mine, body.clone()),
        e.json("POST", &mine, body.clone()),
        e.json("POST", &theirs, body.clone()),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 503], "{} {}", a.body, b.body);
    let refused = if a.status == 503 { &a } else { &b };
    assert_eq!(refused.headers["x-should-retry"], "true");
    assert_eq!(c.status, 200, "another plugin is not held up: {}", c.body);
    // Once the first write is answered, the next one to the same plugin goes through.
    let again = e.json("POST", &mine, body).await;
    assert_eq!(again.status, 200, "{}", again.body);
}
