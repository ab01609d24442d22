//! The OpenAPI document (`lib/api/openapi.yaml`) against everything else that says what the API is: the
//! template's routes, the router, the error codes, the sample events, and an OpenAPI validator. Every
//! response of every integration test is also checked against it (`claresia_tests::answer`).

use std::collections::BTreeSet;

use claresia_tests::contract::{contract, Operation};
use claresia_tests::*;
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../../../template.yaml");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The template's routes by API Gateway's route key (`GET /tenants/{tenant}/connection`), and `$default`
/// for the catch-all (SAM: an `HttpApi` event with neither `Path` nor `Method`).
fn template_route_keys() -> BTreeSet<String> {
    let doc: serde_norway::Value = serde_norway::from_str(TEMPLATE).unwrap();
    let mut routes = BTreeSet::new();
    for resource in doc["Resources"].as_mapping().unwrap().values() {
        for e in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            if e.1["Type"].as_str() == Some("HttpApi") {
                let p = &e.1["Properties"];
                routes.insert(match (p["Method"].as_str(), p["Path"].as_str()) {
                    (None, None) => "$default".to_owned(),
                    (Some(m), Some(path)) => format!("{} {path}", m.to_uppercase()),
                    other => {
                        panic!("an HttpApi event names both Method and Path, or neither: {other:?}")
                    }
                });
            }
        }
    }
    routes
}

/// The template's routes but the catch-all: one per documented operation.
fn template_routes() -> BTreeSet<String> {
    let mut routes = template_route_keys();
    assert!(
        routes.remove("$default"),
        "template.yaml has no catch-all ($default) route"
    );
    routes
}

/// The route API Gateway picks for `method path` among `routes` (route keys). An HTTP API picks a full match
/// of method and path (a `{var}` segment matches one non-empty segment; an explicit method wins over `ANY`),
/// then a greedy `{proxy+}` route, then `$default`; with none, it answers its own `{"message":"Not Found"}`
/// (`None` here). The template has no `ANY` and no greedy route (template.rs checks), so: the full match,
/// else `$default`. Segments are not trimmed: API Gateway matches no route on a trailing slash.
fn gateway_route<'a>(routes: &'a BTreeSet<String>, method: &str, path: &str) -> Option<&'a str> {
    let got: Vec<&str> = path.split('/').skip(1).collect();
    let full = routes.iter().find(|key| {
        let Some((m, pattern)) = key.split_once(' ') else {
            return false;
        };
        let want: Vec<&str> = pattern.split('/').skip(1).collect();
        m == method
            && want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(w, g)| (w.starts_with('{') && !g.is_empty()) || w == g)
    });
    full.or_else(|| routes.get("$default")).map(String::as_str)
}

/// `env`'s app with its store unreachable (nothing listens there; no retries): what it answers other than
/// 503 it answered without reading anything.
async fn offline_app(env: &TestEnv) -> claresia_api::App {
    let dead = claresia_local::sdk_config("http://127.0.0.1:9")
        .await
        .to_builder()
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    claresia_api::App::new(env.app.config.clone(), &dead).unwrap()
}

/// A concrete path for an operation, on `tenant`.
fn concrete(op: &Operation, tenant: &str) -> String {
    op.path
        .replace("{tenant}", tenant)
        .replace("{skill_id}", "incident-postmortem")
        .replace("{archetype}", "engineer")
        .replace("{sub_tenant}", &format!("{tenant}-eng"))
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    assert_eq!(contract().doc["openapi"], "3.1.0");
    let out = std::process::Command::new("openapi-spec-validator")
        .arg(format!("{ROOT}/lib/api/openapi.yaml"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openapi-spec-validator is required (make test puts the pinned .venv on PATH): {e}"
            )
        });
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn its_operations_are_the_templates_routes() {
    let documented: BTreeSet<String> = contract().operations.iter().map(Operation::key).collect();
    let routed = template_routes();
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not in template.yaml"
    );
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in template.yaml but not documented"
    );
}

#[test]
fn its_error_codes_are_exactly_the_apis() {
    let documented: BTreeSet<String> = contract().error_codes().into_iter().collect();
    let produced: BTreeSet<String> = claresia_api::ApiError::CODES
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(documented, produced);
}

/// The router answers every documented operation, and only those: any other method on a documented path
/// is 405, whatever the handler's own table says.
#[tokio::test]
async fn the_router_answers_exactly_the_documented_operations() {
    let env = TestEnv::start().await;
    let c = contract();
    let paths: BTreeSet<&str> = c.operations.iter().map(|o| o.path.as_str()).collect();
    for path in paths {
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let op = Operation {
                method: method.into(),
                path: path.into(),
            };
            let url = concrete(&op, "dainese");
            let a = env.send(As::Operator, method, &url, None, &[]).await;
            let code = a.body["error"]["code"].as_str();
            let message = a.body["error"]["message"].as_str().unwrap_or_default();
            if c.operation(method, &url).is_some() {
                assert!(
                    code != Some("method_not_allowed") && !message.starts_with("no route for"),
                    "{method} {path} is documented but not routed: {}",
                    a.body
                );
            } else {
                assert_eq!(
                    code,
                    Some("method_not_allowed"),
                    "{method} {path}: {}",
                    a.body
                );
                // Allow names exactly the documented methods of the path.
                let allow = a.header("allow");
                for m in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
                    assert_eq!(
                        allow.split(", ").any(|x| x == m),
                        c.operation(m, &url).is_some(),
                        "{path}: Allow is {allow:?}"
                    );
                }
            }
        }
    }
}

/// Deployed, API Gateway answers only what a route matches itself; the catch-all (`$default`, on the
/// connection API) brings every other request to the handler. So each method a documented path lacks is the
/// handler's 405 with `Allow` (exactly the path's documented methods), and an unknown path its 404, both in
/// the error envelope with `x-request-id`, as the dev gateway answers them. Each is answered before any I/O:
/// an app whose store is unreachable answers them all the same, and Anthropic is never asked.
#[tokio::test]
async fn what_no_route_matches_reaches_the_catch_all_and_is_answered_before_any_io() {
    let routes = template_route_keys();
    let c = contract();
    let env = TestEnv::start().await;
    let offline = offline_app(&env).await;
    let mut requests: Vec<(&str, String)> = Vec::new();
    let paths: BTreeSet<&str> = c.operations.iter().map(|o| o.path.as_str()).collect();
    for path in paths {
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"] {
            let op = Operation {
                method: method.into(),
                path: path.into(),
            };
            requests.push((method, concrete(&op, "dainese")));
        }
    }
    for path in [
        "/",
        "/nope",
        "/tenants",
        "/tenants/dainese",
        "/tenants/dainese/connection/test/again",
        "/v1/organizations/me",
    ] {
        for method in ["GET", "POST"] {
            requests.push((method, path.to_owned()));
        }
    }
    let mut caught = 0;
    for (method, url) in &requests {
        let route = gateway_route(&routes, method, url);
        if let Some(op) = c.operation(method, url) {
            let key = op.key();
            assert_eq!(route, Some(key.as_str()), "{method} {url}: its own route");
            continue;
        }
        assert_eq!(
            route,
            Some("$default"),
            "{method} {url}: no route; API Gateway would answer its own bare 404"
        );
        caught += 1;
        let req = request(As::Tenant("dainese"), method, url, None, &[]);
        let a = answer(&offline, req, method, url).await;
        let documented: BTreeSet<&str> = ["GET", "PUT", "POST", "DELETE", "PATCH"]
            .into_iter()
            .filter(|m| c.operation(m, url).is_some())
            .collect();
        if documented.is_empty() {
            assert_eq!(
                (a.status, a.body["error"]["code"].as_str()),
                (404, Some("not_found")),
                "{method} {url}: {}",
                a.body
            );
        } else {
            assert_eq!(
                (a.status, a.body["error"]["code"].as_str()),
                (405, Some("method_not_allowed")),
                "{method} {url}: {}",
                a.body
            );
            let allow: BTreeSet<&str> = a.header("allow").split(", ").collect();
            assert_eq!(allow, documented, "{method} {url}: Allow");
        }
        assert_eq!(
            a.body["error"]["request_id"],
            a.header("x-request-id"),
            "{method} {url}"
        );
    }
    assert_eq!(
        caught,
        requests.len() - c.operations.len(),
        "every operation was asked once, every other request reached the catch-all"
    );
    assert!(env.sim_requests().await.is_empty());
}

/// Whatever the handler's own table says, a request API Gateway hands its catch-all is no route there (a
/// trailing slash, or a route the template lacks): 404, even on a documented method, before any I/O, so
/// the catch-all never does a route's work under the connection API's role.
#[tokio::test]
async fn the_catch_all_answers_but_never_works() {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let env = TestEnv::start().await;
    let offline = offline_app(&env).await;
    for op in &contract().operations {
        let url = concrete(op, "dainese");
        let payload = (op.method == "PUT" || op.method == "POST").then_some("{}");
        let req = request(As::Operator, &op.method, &url, payload, &[]);
        let Some(RequestContext::ApiGatewayV2(mut ctx)) = req.request_context_ref().cloned() else {
            panic!("a test request carries API Gateway's context");
        };
        ctx.route_key = Some("$default".into());
        let resp = offline
            .handle(req.with_request_context(RequestContext::ApiGatewayV2(ctx)))
            .await;
        let body: Value = match resp.body() {
            lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{}: unexpected body {other:?}", op.key()),
        };
        assert_eq!(
            (resp.status().as_u16(), body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{}: {body}",
            op.key()
        );
    }
    assert!(env.sim_requests().await.is_empty());
}

/// Every sample event of a route is a documented operation, and its body is the operation's example of
/// the same name, valid against the request schema (and every documented example is an event).
#[test]
fn the_sample_events_are_the_documented_examples() {
    let c = contract();
    let mut examples_seen = BTreeSet::new();
    for entry in std::fs::read_dir(format!("{ROOT}/events")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(route_key) = event["routeKey"].as_str() else {
            continue; // a schedule's event
        };
        if route_key == "$default" {
            // The catch-all's event: a request no route matches (so no documented operation either).
            let method = event["requestContext"]["http"]["method"].as_str().unwrap();
            let raw_path = event["rawPath"].as_str().unwrap();
            assert_eq!(
                gateway_route(&template_route_keys(), method, raw_path),
                Some("$default"),
                "{}: {method} {raw_path} has a route of its own",
                path.display()
            );
            continue;
        }
        let (method, route) = route_key.split_once(' ').unwrap();
        let op = c
            .operations
            .iter()
            .find(|o| o.method == method && o.path == route)
            .unwrap_or_else(|| panic!("{}: {route_key} is not documented", path.display()));
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let body = event["body"].as_str().unwrap_or_default();
        if body.trim().is_empty() {
            continue;
        }
        let body: Value = serde_json::from_str(body).unwrap();
        let content = &c.doc["paths"][&op.path][op.method.to_lowercase()]["requestBody"]["content"]
            ["application/json"];
        let example = &content["examples"][&stem]["value"];
        assert_eq!(
            example, &body,
            "{stem}: the document's example differs from events/{stem}.json"
        );
        c.validate(&content["schema"], &body, &stem, &mut Vec::new())
            .unwrap_or_else(|e| panic!("events/{stem}.json is not a valid request: {e}"));
        examples_seen.insert(stem);
    }
    for op in &c.operations {
        let examples = &c.doc["paths"][&op.path][op.method.to_lowercase()]["requestBody"]
            ["content"]["application/json"]["examples"];
        for name in examples.as_object().into_iter().flatten().map(|(k, _)| k) {
            assert!(
                examples_seen.contains(name),
                "{}: example {name} has no events/{name}.json",
                op.key()
            );
        }
    }
}

/// Every documented response example is valid against its response's schema.
#[test]
fn the_documented_response_examples_are_valid() {
    let c = contract();
    let mut checked = 0;
    for op in &c.operations {
        let responses = &c.doc["paths"][&op.path][op.method.to_lowercase()]["responses"];
        for (status, response) in responses.as_object().into_iter().flatten() {
            let content = &c.resolve(response)["content"]["application/json"];
            for (name, example) in content["examples"].as_object().into_iter().flatten() {
                c.validate(&content["schema"], &example["value"], name, &mut Vec::new())
                    .unwrap_or_else(|e| panic!("{} {status} example {name}: {e}", op.key()));
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "the usage page's example at least");
}

/// The answers every operation shares, each one asked of every operation: a malformed tenant (400), no
/// verified identity (401), another tenant's token (403), and the store unreachable (503, Retry-After).
/// Each answer is checked against the document like any other.
#[tokio::test]
async fn every_operation_documents_its_common_refusals() {
    let env = TestEnv::start().await;
    // Nothing listens there; no retries, so the 20 operations' 503s come quickly.
    let dead = claresia_local::sdk_config("http://127.0.0.1:9")
        .await
        .to_builder()
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let offline = claresia_api::App::new(env.app.config.clone(), &dead).unwrap();
    for op in &contract().operations {
        let body = (op.method == "PUT" || op.method == "POST").then_some("{}");
        let m = op.method.as_str();
        let a = env
            .send(
                As::Tenant("dainese"),
                m,
                &concrete(op, "Not_A_Slug"),
                body,
                &[],
            )
            .await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (400, Some("invalid_tenant")),
            "{}",
            op.key()
        );
        let a = env
            .send(As::Anonymous, m, &concrete(op, "dainese"), body, &[])
            .await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{}",
            op.key()
        );
        let a = env
            .send(As::Tenant("globex"), m, &concrete(op, "dainese"), body, &[])
            .await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{}",
            op.key()
        );
        let path = concrete(op, "dainese");
        // The namespace routes are an operator's: anyone else is refused before any read.
        let who = if op.path.ends_with("/top-level") || op.path.ends_with("/release") {
            As::Operator
        } else {
            As::Tenant("dainese")
        };
        let req = request(who, m, &path, body, &[]);
        let a = answer(&offline, req, m, &path).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "{}",
            op.key()
        );
        assert_eq!(a.header("retry-after"), "5");
    }
}

/// Creates answer 201 with where the resource is; every response carries its request id in a header and
/// in error bodies, and is never cached.
#[tokio::test]
async fn creates_say_where_and_every_answer_names_its_request() {
    let env = TestEnv::start().await;
    let put = |path: &'static str, body: Value| {
        let env = &env;
        async move {
            env.send(
                As::Tenant("dainese"),
                "PUT",
                path,
                Some(&body.to_string()),
                &[],
            )
            .await
        }
    };
    let a = put(
        "/tenants/dainese/connection",
        json!({"admin_api_key": GOOD_KEY}),
    )
    .await;
    assert_eq!(
        (a.status, a.header("location")),
        (201, "/tenants/dainese/connection")
    );
    let a = put(
        "/tenants/dainese/connection",
        json!({"admin_api_key": GOOD_KEY}),
    )
    .await;
    assert_eq!(a.status, 200, "reconnecting replaces: {}", a.body);
    assert!(a.headers.get("location").is_none());
    let skill = example("skill-incident-postmortem.json");
    let a = put("/tenants/dainese/skills/incident-postmortem", skill.clone()).await;
    assert_eq!(
        (a.status, a.header("location")),
        (201, "/tenants/dainese/skills/incident-postmortem")
    );
    let a = put("/tenants/dainese/skills/incident-postmortem", skill).await;
    assert_eq!(a.status, 200);
    let a = put(
        "/tenants/dainese/archetypes/engineer",
        json!({"skills": ["incident-postmortem"], "group_ids": ["grp_engineering"]}),
    )
    .await;
    assert_eq!(
        (a.status, a.header("location")),
        (201, "/tenants/dainese/archetypes/engineer")
    );
    let a = put("/tenants/dainese/sub-tenants/dainese-eng", json!({})).await;
    assert_eq!(
        (a.status, a.header("location")),
        (201, "/tenants/dainese/sub-tenants/dainese-eng")
    );
    let a = put("/tenants/dainese/sub-tenants/dainese-eng", json!({})).await;
    assert_eq!(a.status, 200);
    let a = env
        .send(
            As::Tenant("dainese"),
            "GET",
            "/tenants/dainese/skills/nope",
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.header("cache-control"), "no-store");
    assert_eq!(a.body["error"]["request_id"], a.header("x-request-id"));
}

/// Every list route pages the same way: `limit`, an opaque `next_cursor`, null on the last page; a cursor
/// from another list or tenant is refused.
#[tokio::test]
async fn every_list_route_pages_with_limit_and_next_cursor() {
    let env = TestEnv::start().await;
    env.connect("dainese", GOOD_KEY).await;
    env.load_examples("dainese").await;
    for sub in ["dainese-eng", "dainese-ops", "dainese-sales"] {
        env.register_sub_tenant("dainese", sub).await;
    }
    for (list, key, total) in [
        ("skills", "skills", 3),
        ("archetypes", "archetypes", 2),
        ("sub-tenants", "sub_tenants", 3),
    ] {
        let mut seen = Vec::new();
        let mut url = format!("/tenants/dainese/{list}?limit=1");
        loop {
            let a = env
                .send(As::Tenant("dainese"), "GET", &url, None, &[])
                .await;
            assert_eq!(a.status, 200, "{url}: {}", a.body);
            let items = a.body[key].as_array().unwrap();
            assert!(items.len() <= 1, "{url}");
            seen.extend(items.iter().cloned());
            match a.body["next_cursor"].as_str() {
                Some(c) => url = format!("/tenants/dainese/{list}?limit=1&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), total, "{list}: {seen:?}");
        let other = if list == "skills" {
            "archetypes"
        } else {
            "skills"
        };
        let first = env
            .send(
                As::Tenant("dainese"),
                "GET",
                &format!("/tenants/dainese/{list}?limit=1"),
                None,
                &[],
            )
            .await;
        let cursor = first.body["next_cursor"].as_str().unwrap();
        let a = env
            .send(
                As::Tenant("dainese"),
                "GET",
                &format!("/tenants/dainese/{other}?cursor={cursor}"),
                None,
                &[],
            )
            .await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (400, Some("invalid_query"))
        );
    }
}

/// The 409s every catalog, registry and connection operation documents, on a sub-tenant's path (removed,
/// so even the catalog refuses), and the 502s of the operations that call Anthropic and get a refusal that
/// is not a verdict.
#[tokio::test]
async fn every_operation_documents_its_conflicts_and_upstream_refusals() {
    let env = TestEnv::start().await;
    assert_eq!(env.connect("dainese", GOOD_KEY).await.0, 201);
    env.load_examples("dainese").await;
    env.register_sub_tenant("dainese", "dainese-eng").await;
    let a = env
        .send(
            As::Tenant("dainese"),
            "DELETE",
            "/tenants/dainese/sub-tenants/dainese-eng",
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    for op in &contract().operations {
        let readable = op.method == "GET"
            && (op.path.ends_with("/connection")
                || op.path.ends_with("/telemetry")
                || op.path.ends_with("/usage"));
        // The namespace routes are an operator's, and their 409s are the namespace's (held, in use):
        // tests/tests/api/isolation.rs sees them.
        let namespace = op.path.ends_with("/top-level") || op.path.ends_with("/release");
        if readable || namespace {
            continue;
        }
        let body = (op.method == "PUT" || op.method == "POST").then_some("{}");
        let a = env
            .send(
                As::Tenant("dainese"),
                &op.method,
                &concrete(op, "dainese-eng"),
                body,
                &[],
            )
            .await;
        let want = if op.path.contains("/connection") {
            "sub_tenant_shares_connection"
        } else if op.path.contains("/sub-tenants") {
            "nested_sub_tenant"
        } else {
            "sub_tenant_removed"
        };
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (409, Some(want)),
            "{}",
            op.key()
        );
    }

    let refuse = |route: &str| json!({"route": route, "fail": {"status": 400, "count": 50}});
    let cases = [
        (
            "GET /v1/organizations/workspaces",
            "PUT",
            "/tenants/dainese/workspaces",
            Some(json!({"mappings": []})),
            "anthropic_error",
        ),
        (
            "GET /v1/organizations/{org_id}/skills",
            "POST",
            "/tenants/dainese/republish",
            None,
            "anthropic_error",
        ),
        (
            "DELETE /v1/organizations/{org_id}/skills/{skill_id}",
            "DELETE",
            "/tenants/dainese/connection",
            None,
            "cleanup_failed",
        ),
    ];
    for (route, method, path, body, code) in cases {
        env.sim_send("PUT", "/_sim/faults", refuse(route)).await;
        let body = body.map(|b| b.to_string());
        let a = env
            .send(As::Tenant("dainese"), method, path, body.as_deref(), &[])
            .await;
        env.sim_send("DELETE", "/_sim/faults", json!({})).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (502, Some(code)),
            "{method} {path}: {}",
            a.body
        );
    }
}
