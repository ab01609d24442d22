//! Optimistic concurrency on the catalog, through the real handlers against moto: `ETag` on reads and
//! writes, `If-Match` / `If-None-Match: *` enforced by DynamoDB's conditional write, and a refused write
//! leaves nothing behind (no item, no pending marker, no Anthropic call).

use claresia_aws::Expect;
use claresia_domain::TenantSlug;
use claresia_tests::*;
use serde_json::{json, Value};

const ARCHETYPE: &str = "/tenants/dainese/archetypes/engineer";

async fn connected_catalog() -> TestEnv {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.load_examples("dainese").await;
    env
}

async fn get(env: &TestEnv, path: &str) -> Answer {
    let a = env
        .send(As::Tenant("dainese"), "GET", path, None, &[])
        .await;
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    a
}

async fn put(env: &TestEnv, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    env.send(
        As::Tenant("dainese"),
        "PUT",
        path,
        Some(&body.to_string()),
        headers,
    )
    .await
}

fn code(a: &Answer) -> Option<&str> {
    a.body["error"]["code"].as_str()
}

fn dainese() -> TenantSlug {
    TenantSlug::parse("dainese").unwrap()
}

/// The case: two admins read the same archetype, then both save with the ETag they read. One
/// write lands; the other gets 412 and writes nothing — the grant of one is not silently lost to the
/// revocation of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_puts_with_the_same_if_match_give_one_200_and_one_412() {
    let env = connected_catalog().await;
    let read = get(&env, ARCHETYPE).await;
    let etag = read.header("etag").to_owned();
    let grant = json!({"skills": ["incident-postmortem", "standup-notes", "prd-review"], "group_ids": ["grp_engineering"]});
    let revoke = json!({"skills": ["standup-notes"], "group_ids": ["grp_engineering"]});
    let if_match = [("if-match", etag.as_str())];
    let (a, b) = tokio::join!(
        put(&env, ARCHETYPE, &grant, &if_match),
        put(&env, ARCHETYPE, &revoke, &if_match),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{} / {}", a.body, b.body);
    let (won, lost, won_doc) = if a.status == 200 {
        (&a, &b, &grant)
    } else {
        (&b, &a, &revoke)
    };
    assert_eq!(code(lost), Some("precondition_failed"), "{}", lost.body);
    let now = get(&env, ARCHETYPE).await;
    assert_eq!(
        now.body["skills"], won_doc["skills"],
        "the winner's document is stored"
    );
    assert_eq!(now.header("etag"), won.header("etag"));
    assert_ne!(now.header("etag"), etag);
    // Nothing of the loser is left. Its write-ahead marker went back to the winner's; in the rare order
    // where the winner finished first, that marker outlives it and the next sweep finds nothing to do.
    let writes = env.sim_skill_writes().await;
    let deadline = claresia_anthropic::Deadline::after(std::time::Duration::from_secs(20));
    env.app.sweep_pending(deadline).await.unwrap();
    assert_eq!(env.app.hub.pending_token(&dainese()).await.unwrap(), None);
    assert_eq!(
        env.sim_skill_writes().await,
        writes,
        "Anthropic already matched the catalog"
    );

    // Sending the stale ETag again is refused before anything is touched, Anthropic included.
    let before = env.footprint().await;
    let again = put(&env, ARCHETYPE, &revoke, &[("if-match", &etag)]).await;
    assert_eq!(
        (again.status, code(&again)),
        (412, Some("precondition_failed"))
    );
    assert_unchanged(&before, &env.footprint().await, "stale If-Match");
}

/// The race the pre-check cannot see (the document changes between the read and the write) is caught by
/// the conditional write itself, and the change's write-ahead marker goes back to what it replaced.
#[tokio::test]
async fn the_condition_is_enforced_by_the_write_and_the_marker_is_restored() {
    let env = connected_catalog().await;
    let hub = &env.app.hub;
    let read = hub
        .catalog_text(&dainese(), claresia_aws::CatalogDoc::Archetype("engineer"))
        .await
        .unwrap()
        .unwrap();
    let other = json!({"skills": ["standup-notes"]});
    hub.put_archetype(&dainese(), "engineer", &other, &Expect::Any)
        .await
        .unwrap()
        .unwrap();
    let mine = json!({"skills": ["prd-review"]});
    let written = hub
        .put_archetype(&dainese(), "engineer", &mine, &Expect::Doc(read.clone()))
        .await
        .unwrap();
    assert_eq!(written, None, "the write expected the old text");
    let deleted = hub
        .delete_archetype::<Value>(&dainese(), "engineer", &Expect::Doc(read))
        .await
        .unwrap();
    assert!(deleted.is_none(), "the delete expected the old text");
    let now: Value = hub
        .archetype(&dainese(), "engineer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now, other);

    // A marker left by an earlier unfinished change survives an abandoned one.
    hub.mark_pending(&dainese(), "earlier").await.unwrap();
    let intent = env.app.begin_change(&dainese()).await.unwrap();
    env.app.abandon_change(&dainese(), intent).await.unwrap();
    assert_eq!(
        hub.pending_token(&dainese()).await.unwrap().as_deref(),
        Some("earlier")
    );
    let intent = env.app.begin_change(&dainese()).await.unwrap();
    hub.clear_pending(&dainese(), "earlier").await.unwrap();
    env.app.abandon_change(&dainese(), intent).await.unwrap();
    assert_eq!(
        hub.pending_token(&dainese()).await.unwrap().as_deref(),
        Some("earlier")
    );
}

#[tokio::test]
async fn if_none_match_star_creates_only_if_absent() {
    let env = connected_catalog().await;
    let mut doc = example("skill-standup-notes.json");
    doc["id"] = json!("retro-notes");
    let path = "/tenants/dainese/skills/retro-notes";
    let a = put(&env, path, &doc, &[("if-none-match", "*")]).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.header("location"), path);
    let etag = a.header("etag").to_owned();
    assert_eq!(
        get(&env, path).await.header("etag"),
        etag,
        "PUT answers the ETag GET will show"
    );

    let before = env.footprint().await;
    doc["title"] = json!("Someone else's retro");
    let again = put(&env, path, &doc, &[("if-none-match", "*")]).await;
    assert_eq!(
        (again.status, code(&again)),
        (412, Some("precondition_failed"))
    );
    assert_unchanged(
        &before,
        &env.footprint().await,
        "If-None-Match: * on an existing skill",
    );

    // With the ETag it read, the same admin replaces it.
    let a = put(&env, path, &doc, &[("if-match", &etag)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_ne!(a.header("etag"), etag);
}

#[tokio::test]
async fn a_delete_with_a_stale_etag_deletes_nothing() {
    let env = connected_catalog().await;
    let path = "/tenants/dainese/skills/standup-notes";
    let stale = get(&env, path).await.header("etag").to_owned();
    let mut doc = example("skill-standup-notes.json");
    doc["title"] = json!("Standup notes, edited");
    let edited = put(&env, path, &doc, &[("if-match", &stale)]).await;
    assert_eq!(edited.status, 200);

    let before = env.footprint().await;
    let a = env
        .send(
            As::Tenant("dainese"),
            "DELETE",
            path,
            None,
            &[("if-match", &stale)],
        )
        .await;
    assert_eq!(
        (a.status, code(&a)),
        (412, Some("precondition_failed")),
        "{}",
        a.body
    );
    assert_unchanged(&before, &env.footprint().await, "stale If-Match on DELETE");

    let fresh = edited.header("etag").to_owned();
    let a = env
        .send(
            As::Tenant("dainese"),
            "DELETE",
            path,
            None,
            &[("if-match", &fresh)],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let gone = env
        .send(As::Tenant("dainese"), "GET", path, None, &[])
        .await;
    assert_eq!(gone.status, 404);

    // The same for an archetype.
    let stale = get(&env, ARCHETYPE).await.header("etag").to_owned();
    let edited = put(&env, ARCHETYPE, &json!({"skills": ["prd-review"]}), &[]).await;
    let before = env.footprint().await;
    let a = env
        .send(
            As::Tenant("dainese"),
            "DELETE",
            ARCHETYPE,
            None,
            &[("if-match", &stale)],
        )
        .await;
    assert_eq!((a.status, code(&a)), (412, Some("precondition_failed")));
    assert_unchanged(
        &before,
        &env.footprint().await,
        "stale If-Match on an archetype DELETE",
    );
    let a = env
        .send(
            As::Tenant("dainese"),
            "DELETE",
            ARCHETYPE,
            None,
            &[("if-match", edited.header("etag"))],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// The mappings always exist (an empty list until set): their ETag works from the first edit on.
#[tokio::test]
async fn the_workspace_mappings_carry_an_etag_from_the_start() {
    let env = connected_catalog().await;
    let path = "/tenants/dainese/workspaces";
    let empty = get(&env, path).await;
    assert_eq!(empty.body["mappings"], json!([]));
    let etag = empty.header("etag").to_owned();
    let doc = json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": null}]});
    let a = put(&env, path, &doc, &[("if-match", &etag)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let before = env.footprint().await;
    let again = put(&env, path, &json!({"mappings": []}), &[("if-match", &etag)]).await;
    assert_eq!(
        (again.status, code(&again)),
        (412, Some("precondition_failed"))
    );
    assert_unchanged(
        &before,
        &env.footprint().await,
        "stale If-Match on the mappings",
    );
    assert_eq!(get(&env, path).await.header("etag"), a.header("etag"));
}

/// Malformed preconditions, and preconditions where there is no ETag, are refused, not ignored: a client
/// that believes it is protected must not be silently unprotected.
#[tokio::test]
async fn preconditions_that_cannot_be_honoured_are_refused() {
    let env = connected_catalog().await;
    let before = env.footprint().await;
    let skill = example("skill-standup-notes.json");
    for (path, body, header) in [
        (
            "/tenants/dainese/skills/standup-notes",
            skill.clone(),
            ("if-match", "no-quotes"),
        ),
        (
            "/tenants/dainese/skills/standup-notes",
            skill.clone(),
            ("if-none-match", "\"abc\""),
        ),
        (
            "/tenants/dainese/connection",
            json!({"admin_api_key": GOOD_KEY}),
            ("if-match", "\"abc\""),
        ),
        (
            "/tenants/dainese/sub-tenants/dainese-eng",
            json!({}),
            ("if-none-match", "*"),
        ),
    ] {
        let a = put(&env, path, &body, &[header]).await;
        assert_eq!(
            (a.status, code(&a)),
            (400, Some("invalid_precondition")),
            "{path} {header:?}: {}",
            a.body
        );
    }
    // A weak ETag never matches (If-Match compares strongly).
    let strong = get(&env, "/tenants/dainese/skills/standup-notes")
        .await
        .header("etag")
        .to_owned();
    let weak = format!("W/{strong}");
    let a = put(
        &env,
        "/tenants/dainese/skills/standup-notes",
        &skill,
        &[("if-match", &weak)],
    )
    .await;
    assert_eq!((a.status, code(&a)), (412, Some("precondition_failed")));
    assert_unchanged(&before, &env.footprint().await, "refused preconditions");
}

/// Without a precondition the write is unconditional, as before ETags (documented).
#[tokio::test]
async fn without_a_precondition_the_last_write_wins() {
    let env = connected_catalog().await;
    let first = get(&env, ARCHETYPE).await.header("etag").to_owned();
    let a = put(&env, ARCHETYPE, &json!({"skills": ["standup-notes"]}), &[]).await;
    assert_eq!(a.status, 200);
    let b = put(&env, ARCHETYPE, &json!({"skills": ["prd-review"]}), &[]).await;
    assert_eq!(b.status, 200);
    assert_ne!(a.header("etag"), first);
    assert_eq!(
        get(&env, ARCHETYPE).await.body["skills"],
        json!(["prd-review"])
    );
}

/// RFC 9110: `If-Match: *` matches any current version. A change landing between the handler's read and
/// its write does not fail it (the store checks only that the document exists); an absent document fails
/// with 412 and nothing written.
#[tokio::test]
async fn if_match_star_matches_any_existing_version_and_only_an_absent_one_fails() {
    let env = connected_catalog().await;
    let hub = &env.app.hub;
    let mine = json!({"skills": ["prd-review"]});
    let a = put(&env, ARCHETYPE, &mine, &[("if-match", "*")]).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // The write's own condition: any stored text passes, whatever changed since it was read.
    let other = json!({"skills": ["standup-notes"]});
    hub.put_archetype(&dainese(), "engineer", &other, &Expect::Any)
        .await
        .unwrap()
        .unwrap();
    let written = hub
        .put_archetype(&dainese(), "engineer", &mine, &Expect::Exists)
        .await
        .unwrap();
    assert!(written.is_some(), "If-Match: * matched the changed version");
    let absent = hub
        .put_archetype(&dainese(), "nobody", &mine, &Expect::Exists)
        .await
        .unwrap();
    assert!(absent.is_none(), "If-Match: * never creates");

    let before = env.footprint().await;
    let a = put(
        &env,
        "/tenants/dainese/archetypes/nobody",
        &mine,
        &[("if-match", "*")],
    )
    .await;
    assert_eq!((a.status, code(&a)), (412, Some("precondition_failed")));
    assert_unchanged(
        &before,
        &env.footprint().await,
        "If-Match: * on an absent archetype",
    );

    // The workspace mappings always read as a document, so `*` matches them from the start.
    let a = put(
        &env,
        "/tenants/dainese/workspaces",
        &json!({"mappings": []}),
        &[("if-match", "*")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}
