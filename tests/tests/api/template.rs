//! template.yaml and the code agree: table keys, secret path, routes, runtime, one resource per function.

use claresia_aws::hub;
use claresia_local::tables::{table_defs, TEMPLATE};
use serde_norway::Value;

fn doc() -> Value {
    serde_norway::from_str(TEMPLATE).unwrap()
}

/// An `HttpApi` event's route key as API Gateway names it: `METHOD /path`, or `$default` for the catch-all
/// (SAM makes an `HttpApi` event with neither `Path` nor `Method` the API's `$default` route). `None` for
/// other events (schedules).
fn route_key(event: &Value) -> Option<String> {
    if event["Type"].as_str() != Some("HttpApi") {
        return None;
    }
    let p = &event["Properties"];
    Some(match (p["Method"].as_str(), p["Path"].as_str()) {
        (None, None) => "$default".to_owned(),
        (Some(m), Some(path)) => format!("{} {path}", m.to_uppercase()),
        other => panic!("an HttpApi event names both Method and Path, or neither: {other:?}"),
    })
}

/// The route keys of a function's events, sorted.
fn routes_of(d: &Value, function: &str) -> Vec<String> {
    let mut routes: Vec<String> = d["Resources"][function]["Properties"]["Events"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(route_key)
        .collect();
    routes.sort();
    routes
}

#[test]
fn hub_table_has_the_keys_the_store_uses() {
    let defs = table_defs().unwrap();
    let hub_def = defs.iter().find(|d| d.logical_id == "HubTable").unwrap();
    assert_eq!(hub_def.name("prod"), "prod-claresia-hub");
    assert_eq!(
        hub_def.key_schema,
        vec![
            (hub::PK.into(), "HASH".into()),
            (hub::SK.into(), "RANGE".into())
        ]
    );
    let gsi = hub_def
        .indexes
        .iter()
        .find(|i| i.name == hub::GSI1)
        .unwrap();
    assert_eq!(
        gsi.key_schema,
        vec![
            (hub::GSI1_PK.into(), "HASH".into()),
            (hub::GSI1_SK.into(), "RANGE".into())
        ]
    );
}

#[test]
fn every_function_crate_is_deployed_arm64_al2023_with_cargo_lambda() {
    let d = doc();
    let globals = &d["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    let root = claresia_local::workspace_root().join("functions");
    let mut crates: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    crates.sort();
    let resources = d["Resources"].as_mapping().unwrap();
    let mut deployed: Vec<String> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|r| {
            assert_eq!(
                r["Metadata"]["BuildMethod"].as_str(),
                Some("rust-cargolambda")
            );
            r["Properties"]["CodeUri"]
                .as_str()
                .unwrap()
                .trim_start_matches("functions/")
                .to_owned()
        })
        .collect();
    deployed.sort();
    assert_eq!(crates, deployed);
}

#[test]
fn secrets_are_limited_to_the_stage_tenant_path() {
    let text = TEMPLATE;
    assert!(text.contains(":secret:claresia/${Stage}/tenants/*"));
    assert!(!text.contains("secretsmanager:*"));
    assert!(!text.contains("dynamodb:*"));
    // The only wildcard resource is the batch read's, which has no resource type and still needs
    // GetSecretValue on each secret (granted on the tenant path only).
    let d = doc();
    for (id, res) in d["Resources"].as_mapping().unwrap() {
        let statements = res["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|p| p["Statement"].as_sequence().into_iter().flatten());
        for st in statements {
            if st["Resource"].as_str() == Some("*") {
                let actions: Vec<&str> = st["Action"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(
                    actions,
                    ["secretsmanager:BatchGetSecretValue"],
                    "{id:?}: wildcard resource"
                );
            }
        }
    }
}

#[test]
fn connection_routes_and_the_catch_all_are_in_the_template() {
    assert_eq!(
        routes_of(&doc(), "ConnectionApiFunction"),
        vec![
            "$default",
            "DELETE /tenants/{tenant}/connection",
            "GET /tenants/{tenant}/connection",
            "POST /tenants/{tenant}/connection/test",
            "POST /tenants/{tenant}/release",
            "PUT /tenants/{tenant}/connection",
            "PUT /tenants/{tenant}/top-level",
        ]
    );
}

/// The catch-all: exactly one `$default` route, on the connection API (128 MB; the handler answers 404 and
/// 405 before any I/O), behind the API's JWT authorizer like every route (it names no `Auth`, so SAM gives
/// it `DefaultAuthorizer`), and nothing competes with it: no route takes several methods (`ANY`) or a
/// subtree (`{proxy+}`), so API Gateway hands it exactly the requests no route matches
/// (`tests/tests/api/openapi.rs` sends each of them through the handler).
#[test]
fn the_catch_all_is_the_apis_default_route_behind_the_jwt_authorizer() {
    let d = doc();
    let api = &d["Resources"]["HttpApi"]["Properties"];
    assert_eq!(api["Auth"]["DefaultAuthorizer"].as_str(), Some("PortalJwt"));
    // With CORS configured, a browser's preflight (no token) would reach $default and get the authorizer's
    // 401: CORS then needs an `OPTIONS /{proxy+}` route with `Auth: {Authorizer: NONE}`.
    assert!(
        api["CorsConfiguration"].is_null(),
        "CORS: add an unauthenticated OPTIONS route"
    );
    let mut catch_alls = Vec::new();
    for (id, r) in d["Resources"].as_mapping().unwrap() {
        let events = r["Properties"]["Events"].as_mapping().into_iter().flatten();
        for (_, e) in events {
            let Some(key) = route_key(e) else { continue };
            assert!(
                !key.starts_with("ANY ") && !key.contains("+}"),
                "{key}: only the catch-all takes more than one method or path"
            );
            if key == "$default" {
                assert!(
                    e["Properties"]["Auth"].is_null(),
                    "the catch-all keeps the JWT authorizer"
                );
                catch_alls.push(id.as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(catch_alls, ["ConnectionApiFunction"]);
}

#[test]
fn catalog_routes_are_in_the_template() {
    let d = doc();
    assert_eq!(
        routes_of(&d, "CatalogApiFunction"),
        vec![
            "DELETE /tenants/{tenant}/archetypes/{archetype}",
            "DELETE /tenants/{tenant}/skills/{skill_id}",
            "DELETE /tenants/{tenant}/sub-tenants/{sub_tenant}",
            "GET /tenants/{tenant}/archetypes",
            "GET /tenants/{tenant}/archetypes/{archetype}",
            "GET /tenants/{tenant}/skills",
            "GET /tenants/{tenant}/skills/{skill_id}",
            "GET /tenants/{tenant}/sub-tenants",
            "GET /tenants/{tenant}/sub-tenants/{sub_tenant}",
            "GET /tenants/{tenant}/telemetry",
            "GET /tenants/{tenant}/usage",
            "GET /tenants/{tenant}/workspaces",
            "POST /tenants/{tenant}/republish",
            "PUT /tenants/{tenant}/archetypes/{archetype}",
            "PUT /tenants/{tenant}/skills/{skill_id}",
            "PUT /tenants/{tenant}/sub-tenants/{sub_tenant}",
            "PUT /tenants/{tenant}/workspaces",
        ]
    );
}

/// Issue 18: each worker consumes its FIFO queue through an event source mapping: batches of at most 10,
/// partial failures reported, concurrency capped (and reserved to match), a visibility timeout of at least
/// 6 times its timeout, and a dead-letter queue with an alarm; each queue's age is alarmed.
#[test]
fn the_workers_consume_fifo_queues_with_dead_letters_and_alarms() {
    let d = doc();
    let r = &d["Resources"];
    for (function, event, queue, dlq) in [
        (
            "AuditPollerFunction",
            "PollItems",
            "PollQueue",
            "PollDeadLetterQueue",
        ),
        (
            "PublishSweeperFunction",
            "SweepItems",
            "SweepQueue",
            "SweepDeadLetterQueue",
        ),
    ] {
        let f = &r[function]["Properties"];
        let e = &f["Events"][event];
        assert_eq!(e["Type"].as_str(), Some("SQS"), "{function}");
        let p = &e["Properties"];
        assert_eq!(
            p["Queue"].as_str(),
            Some(format!("{queue}.Arn").as_str()),
            "{function}"
        );
        assert!(p["BatchSize"].as_u64().unwrap() <= 10, "{function}");
        assert_eq!(
            p["FunctionResponseTypes"][0].as_str(),
            Some("ReportBatchItemFailures")
        );
        assert_eq!(
            p["ScalingConfig"]["MaximumConcurrency"].as_str(),
            Some("WorkerMaxConcurrency")
        );
        assert_eq!(
            f["ReservedConcurrentExecutions"].as_str(),
            Some("WorkerMaxConcurrency")
        );
        let q = &r[queue]["Properties"];
        assert_eq!(q["FifoQueue"].as_bool(), Some(true), "{queue}");
        assert!(
            q["VisibilityTimeout"].as_u64().unwrap() >= 6 * f["Timeout"].as_u64().unwrap(),
            "{queue}: visibility timeout under 6 x {function}'s timeout"
        );
        assert_eq!(
            q["RedrivePolicy"]["deadLetterTargetArn"].as_str(),
            Some(format!("{dlq}.Arn").as_str())
        );
        assert_eq!(r[dlq]["Properties"]["FifoQueue"].as_bool(), Some(true));
        let watches = |metric: &str, name: &str| {
            r.as_mapping().unwrap().values().any(|a| {
                let p = &a["Properties"];
                a["Type"].as_str() == Some("AWS::CloudWatch::Alarm")
                    && p["MetricName"].as_str() == Some(metric)
                    && p["Dimensions"][0]["Value"].as_str() == Some(name)
            })
        };
        assert!(
            watches(
                "ApproximateAgeOfOldestMessage",
                &format!("{queue}.QueueName")
            ),
            "{queue} age"
        );
        assert!(
            watches(
                "ApproximateNumberOfMessagesVisible",
                &format!("{dlq}.QueueName")
            ),
            "{dlq} depth"
        );
    }
}

#[test]
fn the_dispatcher_runs_every_minute_without_retries_and_the_polls_are_alarmed() {
    let d = doc();
    let dispatcher = &d["Resources"]["PollDispatcherFunction"]["Properties"];
    let schedule = &dispatcher["Events"]["EveryMinute"];
    assert_eq!(schedule["Type"].as_str(), Some("ScheduleV2"));
    let p = &schedule["Properties"];
    assert_eq!(p["ScheduleExpression"].as_str(), Some("rate(1 minute)"));
    assert_eq!(p["FlexibleTimeWindow"]["Mode"].as_str(), Some("OFF"));
    assert_eq!(p["RetryPolicy"]["MaximumRetryAttempts"].as_u64(), Some(0));
    assert!(dispatcher["Timeout"].as_u64().unwrap() < 60);
    // The Input is the event shape the handler takes, its scheduled time naming the minute.
    let input: serde_json::Value = serde_json::from_str(p["Input"].as_str().unwrap()).unwrap();
    assert_eq!(input["detail-type"], "Scheduled Event");
    assert_eq!(input["time"], "<aws.scheduler.scheduled-time>");
    for alarm in [
        "AuditPollerErrorsAlarm",
        "AuditPollerCrashAlarm",
        "DispatcherCrashAlarm",
        "TenantNotPolledAlarm",
    ] {
        assert_eq!(
            d["Resources"][alarm]["Type"].as_str(),
            Some("AWS::CloudWatch::Alarm"),
            "{alarm}"
        );
    }
    let stale = &d["Resources"]["TenantNotPolledAlarm"]["Properties"];
    assert_eq!(
        stale["MetricName"].as_str(),
        Some("OldestSuccessfulPollAgeSeconds")
    );
    assert_eq!(stale["Threshold"].as_u64(), Some(300));
}

#[test]
fn hardening_a_careful_reviewer_expects_is_in_place() {
    let d = doc();
    let resources = d["Resources"].as_mapping().unwrap();
    assert!(
        !TEMPLATE.contains("secretsmanager:DescribeSecret"),
        "unused grant"
    );
    let format = d["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]["Format"]
        .as_str()
        .unwrap();
    for var in [
        "$context.requestId",
        "$context.authorizer.claims.claresia:tenant",
    ] {
        assert!(format.contains(var), "access log lacks {var}");
    }
    for (id, r) in resources {
        let id = id.as_str().unwrap();
        let p = &r["Properties"];
        match r["Type"].as_str().unwrap() {
            "AWS::Serverless::Function" => {
                assert!(
                    !p["ReservedConcurrentExecutions"].is_null(),
                    "{id}: reserved concurrency"
                );
                if !p["Events"]["EveryMinute"].is_null() {
                    assert_eq!(p["DeadLetterQueue"]["Type"].as_str(), Some("SQS"), "{id}");
                }
                for skip in r["Metadata"]["checkov"]["skip"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    let why = skip["comment"].as_str().unwrap_or_default();
                    assert!(
                        why.len() > 20,
                        "{id}: skip {:?} needs its reason",
                        skip["id"]
                    );
                }
            }
            "AWS::Logs::LogGroup" => assert!(!p["KmsKeyId"].is_null(), "{id}: KMS option"),
            "AWS::DynamoDB::Table" => {
                assert!(
                    !p["SSESpecification"]["KMSMasterKeyId"].is_null(),
                    "{id}: KMS option"
                )
            }
            _ => {}
        }
    }
    assert!(d["Parameters"]["KmsKeyArn"]["Default"].as_str() == Some(""));
}
