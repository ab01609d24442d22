//! Every file in `events/` goes through the real handler; a new event file without a case here fails.

use claresia_tests::TestEnv;
use serde_json::Value;

const CASES: &[(&str, u16, &str, &str)] = &[
    ("put-connection.json", 200, "/connected", "true"),
    ("get-connection.json", 200, "/state", "\"connected\""),
    ("post-connection-test.json", 200, "/code", "\"success\""),
    (
        "post-connection-test-candidate.json",
        200,
        "/code",
        "\"missing_scopes\"",
    ),
    ("delete-connection.json", 200, "/disconnected", "true"),
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
    let mut covered: Vec<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
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
}
