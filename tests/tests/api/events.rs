//! Every file in `events/` goes through the real handler; a new event file without a case here fails.

use claresia_tests::TestEnv;
use serde_json::Value;

/// In order: each case's status and one JSON pointer's value in the answer.
const CASES: &[(&str, u16, &str, &str)] = &[
    ("put-connection.json", 201, "/connected", "true"),
    ("get-connection.json", 200, "/state", "\"connected\""),
    // No route has PATCH: the catch-all ($default) brings it to the handler, which refuses it with Allow.
    (
        "patch-connection.json",
        405,
        "/error/code",
        "\"method_not_allowed\"",
    ),
    ("post-connection-test.json", 200, "/code", "\"success\""),
    (
        "post-connection-test-candidate.json",
        200,
        "/code",
        "\"missing_scopes\"",
    ),
    ("put-skill.json", 201, "/created", "true"),
    ("get-skill.json", 200, "/id", "\"incident-postmortem\""),
    (
        "list-skills.json",
        200,
        "/skills/0/id",
        "\"incident-postmortem\"",
    ),
    (
        "put-archetype.json",
        201,
        "/publish/targets/0/created/0",
        "\"claresia-dainese-incident-postmortem\"",
    ),
    (
        "get-archetype.json",
        200,
        "/group_ids/0",
        "\"grp_engineering\"",
    ),
    (
        "list-archetypes.json",
        200,
        "/archetypes/0/definition/skills/0",
        "\"incident-postmortem\"",
    ),
    ("put-sub-tenant.json", 201, "/created", "true"),
    ("get-sub-tenant.json", 200, "/parent", "\"dainese\""),
    (
        "list-sub-tenants.json",
        200,
        "/sub_tenants/0/tenant",
        "\"dainese-eng\"",
    ),
    (
        "put-workspaces.json",
        200,
        "/mappings/0/sub_tenant",
        "\"dainese-eng\"",
    ),
    (
        "get-workspaces.json",
        200,
        "/mappings/1/workspace_id",
        "\"wrkspc_01DemoCorporate0000000000\"",
    ),
    ("post-republish.json", 200, "/complete", "true"),
    ("get-telemetry.json", 200, "/tenant", "\"dainese\""),
    ("get-usage.json", 200, "/from", "\"2026-11-01\""),
    (
        "delete-archetype.json",
        200,
        "/publish/targets/0/deleted/0",
        "\"claresia-dainese-incident-postmortem\"",
    ),
    (
        "delete-skill.json",
        200,
        "/deleted",
        "\"incident-postmortem\"",
    ),
    ("delete-connection.json", 200, "/disconnected", "true"),
    // Still mapped to a workspace: removal is refused, naming the mapping.
    (
        "delete-sub-tenant.json",
        409,
        "/error/code",
        "\"sub_tenant_in_use\"",
    ),
    // An operator provisions a hyphenated customer slug as a tenant of its own.
    ("put-top-level.json", 201, "/created", "true"),
    // Releasing a slug its parent still maps is refused, like its removal.
    (
        "post-release.json",
        409,
        "/error/code",
        "\"sub_tenant_in_use\"",
    ),
];

/// Events of scheduled functions: (file, JSON pointer, value) of the function's answer.
/// The schedule's delivery to the dispatcher, and a queue batch to each worker (after the cases above, so
/// dainese is disconnected: its poll item is skipped, its Hub has nothing pending).
const SCHEDULED: &[(&str, &str, &str)] = &[
    // The items carry the delivery's scheduled time (2026-11-23T10:16:00Z).
    (
        "poll-dispatcher-scheduled.json",
        "/scheduled_at",
        "1795428960",
    ),
    ("audit-poller-sqs.json", "/items/0/outcome", "\"skipped\""),
    (
        "publish-sweeper-sqs.json",
        "/items/0/outcome",
        "\"nothing_pending\"",
    ),
];

#[tokio::test]
async fn every_sample_event_is_answered_by_its_handler() {
    let dir = claresia_local::workspace_root().join("events");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let mut covered: Vec<String> = CASES
        .iter()
        .map(|c| c.0.to_owned())
        .chain(SCHEDULED.iter().map(|c| c.0.to_owned()))
        .collect();
    covered.sort();
    assert_eq!(
        files, covered,
        "every event file has a case, and every case a file"
    );

    let env = TestEnv::start().await;
    for (file, status, pointer, expected) in CASES {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let req = lambda_http::request::from_str(&text)
            .unwrap_or_else(|e| panic!("{file} is not an API Gateway event: {e}"));
        let resp = env.app.handle(req).await;
        // Every answer names its request: API Gateway's id, from the event.
        let event: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            resp.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            event["requestContext"]["requestId"].as_str(),
            "{file}"
        );
        if *status == 405 {
            assert_eq!(
                resp.headers().get("allow").and_then(|v| v.to_str().ok()),
                Some("GET, PUT, DELETE"),
                "{file}"
            );
        }
        let body: Value = match resp.body() {
            lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{file}: unexpected body {other:?}"),
        };
        assert_eq!(resp.status().as_u16(), *status, "{file}: {body}");
        assert_eq!(
            body.pointer(pointer).map(Value::to_string).as_deref(),
            Some(*expected),
            "{file}: {body}"
        );
    }
    let fanout = env.fanout().await;
    for (file, pointer, expected) in SCHEDULED {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let deadline_ms = (time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 55) * 1000;
        let answer = if file.ends_with("-scheduled.json") {
            let event: aws_lambda_events::eventbridge::EventBridgeEvent<Value> =
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{file} is not an EventBridge event: {e}"));
            serde_json::json!(fanout.dispatcher.handle(&event).await.unwrap())
        } else {
            let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not an SQS event: {e}"));
            let batch = env.app.handle_work(event, deadline_ms).await;
            assert!(batch.response.batch_item_failures.is_empty(), "{file}");
            serde_json::json!({"response": batch.response, "items": batch.items})
        };
        assert_eq!(
            answer.pointer(pointer).map(Value::to_string).as_deref(),
            Some(*expected),
            "{file}: {answer}"
        );
    }
}
