//! The key never reaches a log line: every log line the connect, test, rotate and disconnect flows write
//! (preview and enterprise: publish and poll too) is captured (at trace level for our crates, the shipped filter for dependencies) and searched for the keys.

use std::io::Write;
use std::sync::{Arc, Mutex};

use claresia_tests::*;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn no_key_in_any_log_line() {
    let capture = Capture::default();
    // Production's filter, with our own crates and the HTTP client turned all the way up.
    let filter = format!(
        "{},claresia_api=trace,claresia_anthropic=trace,claresia_aws=trace,reqwest=trace",
        claresia_api::logging::DEFAULT_FILTER
    );
    // The functions' own subscriber (JSON lines through the redacting writer), capturing what they log.
    // It is the process's default, as in a function, which is why this test is a binary of its own: a
    // thread's default (`set_default`) lost the debug and trace lines while other tests ran beside it.
    tracing::subscriber::set_global_default(claresia_api::logging::json_subscriber(
        tracing_subscriber::EnvFilter::new(filter),
        capture.clone(),
    ))
    .unwrap();

    let env = TestEnv::start().await;
    let test = |key: &'static str| {
        let env = &env;
        async move {
            let body = json!({"admin_api_key": key}).to_string();
            env.call(
                As::Tenant("dainese"),
                "POST",
                "/tenants/dainese/connection/test",
                Some(&body),
            )
            .await
        }
    };
    assert_eq!(env.connect("dainese", &format!("{GOOD_KEY} ")).await.0, 201);
    for key in [
        GOOD_KEY,
        NO_AUDIT_KEY,
        NO_ZR_KEY,
        UNKNOWN_ZR_KEY,
        REVOKED_KEY,
    ] {
        assert_eq!(test(key).await.0, 200);
    }
    assert_eq!(env.connect("dainese", NO_AUDIT_KEY).await.0, 400);
    assert_eq!(env.connect("dainese", REVOKED_KEY).await.0, 400);
    assert_eq!(env.connect("dainese", ROTATED_KEY).await.0, 200);
    // A key pasted into the wrong field, a malformed body quoting it.
    let wrong = format!(r#"{{"admin_api_key": "{GOOD_KEY}", "extra": "{GOOD_KEY}"}}"#);
    env.call(
        As::Tenant("dainese"),
        "PUT",
        "/tenants/dainese/connection",
        Some(&wrong),
    )
    .await;
    let broken = format!(r#"{{"admin_api_key": 1, "x": "{GOOD_KEY}""#);
    env.call(
        As::Tenant("dainese"),
        "PUT",
        "/tenants/dainese/connection",
        Some(&broken),
    )
    .await;
    env.sim_send(
        "PUT",
        "/_sim/faults",
        json!({"route": "GET /v1/organizations/me", "fail": {"status": 529, "count": 4}}),
    )
    .await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 503);
    env.sim_send("POST", "/_sim/keys/revoke", json!({"key": ROTATED_KEY}))
        .await;
    env.call(
        As::Tenant("dainese"),
        "POST",
        "/tenants/dainese/connection/test",
        None,
    )
    .await;
    assert_eq!(
        env.call(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/connection",
            None
        )
        .await
        .0,
        200
    );

    // The enterprise flows: a refused key, an attested connect, a publish, a poll, offboarding.
    assert_eq!(
        env.connect_enterprise("ducati", ENTERPRISE_PARTIAL_KEY, None)
            .await
            .0,
        400
    );
    assert_eq!(
        env.connect_enterprise("ducati", ENTERPRISE_KEY, Some("DPA-1"))
            .await
            .0,
        201
    );
    env.put_example_skills("ducati").await;
    let grant = json!({"skills": ["prd-review"], "group_ids": [GROUP_PRODUCT]});
    assert_eq!(env.put_archetype("ducati", "pm", grant).await.0, 201);
    env.app
        .poll_tenant(
            claresia_domain::TenantSlug::parse("ducati").unwrap(),
            claresia_anthropic::Deadline::after(std::time::Duration::from_secs(20)),
        )
        .await;
    let (s, _) = env
        .call(
            As::Tenant("ducati"),
            "DELETE",
            "/tenants/ducati/connection",
            None,
        )
        .await;
    assert_eq!(s, 200);

    // A key in every position of a request where none belongs: the path, a query value and name, a
    // header, a body value and a body field name. Handlers quote such input in what they log (the
    // request span's path, a refusal's reason); no line may carry the key.
    let k = GOOD_KEY;
    let field_name = format!(r#"{{"{k}": 1}}"#);
    let value = json!({"skills": [k]}).to_string();
    let positions = [
        ("GET", format!("/tenants/{k}/connection"), None, vec![]),
        ("GET", format!("/tenants/dainese/skills/{k}"), None, vec![]),
        (
            "GET",
            format!("/tenants/dainese/telemetry?since={k}"),
            None,
            vec![],
        ),
        ("GET", format!("/tenants/dainese/usage?{k}=1"), None, vec![]),
        (
            "PUT",
            "/tenants/dainese/archetypes/eng".into(),
            Some(field_name.as_str()),
            vec![],
        ),
        (
            "PUT",
            "/tenants/dainese/archetypes/eng".into(),
            Some(value.as_str()),
            vec![],
        ),
        (
            "PUT",
            "/tenants/dainese/archetypes/eng".into(),
            Some(value.as_str()),
            vec![("if-match", k), ("x-api-key", k)],
        ),
    ];
    for (method, path, body, headers) in &positions {
        let a = env
            .send(As::Tenant("dainese"), method, path, *body, headers)
            .await;
        assert!(
            (400..500).contains(&a.status),
            "{method} {path}: {} {}",
            a.status,
            a.body
        );
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("[redacted key]"),
        "the key positions were logged, redacted: {logs}"
    );
    assert!(logs.lines().count() > 20, "the flows were logged: {logs}");
    assert!(logs.contains("tenant connected"), "{logs}");
    for key in [
        GOOD_KEY,
        ROTATED_KEY,
        NO_AUDIT_KEY,
        NO_ZR_KEY,
        UNKNOWN_ZR_KEY,
        REVOKED_KEY,
    ] {
        let secret_part = &key["sk-ant-admin01-".len()..key.len() - 4];
        assert!(
            !logs.contains(secret_part),
            "a key reached the logs:\n{logs}"
        );
    }
    assert!(logs.contains("catalog published"), "{logs}");
    for key in [ENTERPRISE_KEY, ENTERPRISE_PARTIAL_KEY] {
        let secret_part = &key["sk-ant-api01-".len()..key.len() - 4];
        assert!(
            !logs.contains(secret_part),
            "an Enterprise key reached the logs:\n{logs}"
        );
    }
}
