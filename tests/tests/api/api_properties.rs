//! Two properties of every route, under generated requests and a store that fails on demand ("client
//! mistakes are 4xx; the store's are 503"):
//!
//! 1. No 5xx but `503 store_unavailable` with a `Retry-After`, that 503 only when a store call really
//!    failed, and any store failure before the first write lands answered exactly so.
//! 2. Nothing written on a refusal: a 4xx leaves no DynamoDB item, no secret version and no Anthropic write
//!    behind.
//!
//! The requests: every operation of `lib/api/openapi.yaml` with generated path items (valid, malformed,
//! another tenant's, a sub-tenant's, a removed one's), callers (own token, parent, sub-tenant, another tenant,
//! operator, none, broken claims), bodies (the spec's example documents, then truncated, retyped, bloated,
//! nested, with unknown fields), queries (limits out of range, unknown parameters, garbage `since` / `from` /
//! `to`) and cursors for every list (garbage, another list's, another tenant's, another query's, forged
//! positions). A seeded generator: a failure names its seed (`CLARESIA_PROPERTY_SEED` reproduces it), its
//! request and what was chosen.
//!
//! The store: an SDK interceptor on both of the app's clients (DynamoDB and Secrets Manager, one call count)
//! fails the k-th call — only it, or it and every later one — for every k a request reaches, the way the
//! services fail: a throttle, a 500, an endpoint that cannot be reached. It also applies the DynamoDB rules
//! moto does not (a start key outside the query's key condition is a `ValidationException` there), and it
//! counts the writes that land, so "nothing written" is known per request without scanning the tables.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use base64::Engine;
use claresia_api::App;
use claresia_domain::enterprise_feed::UsageRow;
use claresia_domain::telemetry::TelemetryEvent;
use claresia_domain::TenantSlug;
use claresia_tests::contract::{contract, Operation};
use claresia_tests::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use time::Date;

/// The default seed; `CLARESIA_PROPERTY_SEED=…` runs another (and reproduces a reported failure).
const SEED: u64 = 20261125;
/// Generated requests: this many worlds, each this many requests (`CLARESIA_PROPERTY_REQUESTS` per world).
const EPISODES: usize = 4;
const REQUESTS_PER_EPISODE: usize = 300;
/// The k-sweep: routes split over this many worlds; per route the deepest valid request and this many
/// generated ones, each with a failure at every call it makes, in both modes.
const LANES: usize = 2;
const SWEEP_GENERATED_PER_ROUTE: usize = 1;
/// A request making more store calls than this is not swept past it (none does today).
const MAX_K: u32 = 150;
/// Each request's budget, as in the crash sweeps: short enough that a publish never waits for a lease
/// (it leaves the work to the sweep instead), so a lease a failure left behind costs no time.
const BUDGET: Duration = Duration::from_millis(2500);
/// A 503 that says "nothing was written" must be true (writes counted by the interceptor).
const HONEST_503: bool = true;

const PARENT: &str = "acme";
const SUB: &str = "acme-eng";
/// A registered sub-tenant nothing names: the one DELETE can remove (and PUT brings back).
const IDLE_SUB: &str = "acme-ops";
const REMOVED_SUB: &str = "acme-old";
/// Shaped like a sub-tenant of `acme`, but nobody registered it.
const GHOST: &str = "acme-ghost";
const OTHER: &str = "globex";
const OFFBOARDED: &str = "initech";
const PARENT_SKILLS: [&str; 3] = ["incident-postmortem", "standup-notes", "prd-review"];
const OTHER_SKILLS: [&str; 2] = ["standup-notes", "prd-review"];
/// The organization the seeded telemetry came from.
const ORG: &str = "org-demo";
/// Splits the seeded telemetry: events of Jan 3rd on are after it.
const SINCE: &str = "2026-01-03T00:00:00.000Z";

/// `since` values a client may send that are not a usable time (the second-to-last is a legal RFC 3339
/// time whose UTC is past year 9999).
const JUNK_SINCE: [&str; 8] = [
    "yesterday",
    "",
    "2026-13-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00+23:59",
    "2016-12-31T23:59:60Z",
    "2026-01-03T00:00:00+01:00",
    "2026-01-03",
];
/// `from` / `to` values: impossible dates, the ends of the calendar `time` parses, not dates.
const JUNK_DATES: [&str; 8] = [
    "2026-02-30",
    "-9999-01-01",
    "0000-01-01",
    "9999-12-31",
    "yesterday",
    "",
    "2026-1-1",
    "+2026-01-01",
];
const JUNK_LIMITS: [&str; 7] = ["0", "-1", "abc", "1.5", "", "99999999999999999999", " 1"];

// ---------------------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------------------

/// A real `next_cursor` of the world: of which list, for which tenant, for which query (`since`, or the
/// usage range as `from:to`).
struct RealCursor {
    list: &'static str,
    tenant: &'static str,
    context: String,
    cursor: String,
}

/// Every kind of path item in place: `acme` connected with the example catalog, an archetype granted to
/// its sub-tenant `acme-eng` (also mapped to a workspace), an idle sub-tenant and a removed one; `globex`
/// connected with two skills; `initech` offboarded; telemetry and usage rows for `acme` and `acme-eng`;
/// the real cursors of every list and the ETags of the conditional documents.
struct World {
    env: TestEnv,
    cursors: Vec<RealCursor>,
    etags: Vec<String>,
    yesterday: Date,
    /// The usage route's default range (`from:to`), and an explicit one.
    default_range: String,
    explicit: (String, String),
}

fn slug(s: &str) -> TenantSlug {
    TenantSlug::parse(s).unwrap()
}

fn oncall_archetype() -> Value {
    json!({"skills": ["incident-postmortem"], "sub_tenant": SUB})
}

fn archetype_doc(name: &str) -> Option<Value> {
    match name {
        "engineer" | "product-manager" => Some(example(&format!("archetype-{name}.json"))),
        "eng-oncall" => Some(oncall_archetype()),
        _ => None,
    }
}

fn event(tenant: &str, day: u32) -> TelemetryEvent {
    TelemetryEvent {
        event_id: format!("auditevt_{tenant}_{day:02}"),
        tenant: slug(tenant),
        skill_id: "incident-postmortem".into(),
        event_type: "skill.invoked".into(),
        status: "succeeded".into(),
        occurred_at: format!("2026-01-{day:02}T10:00:00.000Z"),
        ingested_at: format!("2026-01-{day:02}T10:00:01.000Z"),
        workspace_id: None,
        actor_id: None,
        duration_ms: Some(1200),
        cost_usd: Some(0.01),
        input_tokens: None,
        output_tokens: None,
        error_type: None,
        error_message: None,
        detail: None,
        record_url: None,
    }
}

fn usage_row(tenant: &str, date: Date, skill: &str) -> UsageRow {
    UsageRow {
        tenant: slug(tenant),
        skill_id: skill.into(),
        skill_name: format!("claresia-{tenant}-{skill}"),
        date: date.to_string(),
        rbac_group_id: "grp_engineering".into(),
        rbac_group_name: Some("Engineering".into()),
        invocation_count: Some(3),
        distinct_user_count: Some(2),
        estimated_overage_spend: Some("1.25".into()),
        attributed_list_price: None,
        currency: Some("USD".into()),
        polled_at: "2026-01-01T00:00:00Z".into(),
    }
}

impl World {
    async fn build() -> World {
        let env = TestEnv::enterprise_with(|c| {
            c.request_budget = BUDGET;
            c.poll_lease_slack = Duration::ZERO;
        })
        .await;
        let ok = |what: &str, (s, b): (u16, Value)| {
            assert!(matches!(s, 200 | 201), "world: {what}: {s} {b}");
        };
        ok("connect acme", env.connect(PARENT, GOOD_KEY).await);
        env.load_examples(PARENT).await;
        for sub in [SUB, IDLE_SUB, REMOVED_SUB] {
            env.register_sub_tenant(PARENT, sub).await;
        }
        ok(
            "eng-oncall",
            env.put_doc(PARENT, "/archetypes/eng-oncall", &oncall_archetype())
                .await,
        );
        let mapped = json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": SUB}]});
        ok(
            "mappings",
            env.put_doc(PARENT, "/workspaces", &mapped).await,
        );
        ok(
            "remove acme-old",
            env.call(
                As::Tenant(PARENT),
                "DELETE",
                &format!("/tenants/{PARENT}/sub-tenants/{REMOVED_SUB}"),
                None,
            )
            .await,
        );
        ok("connect globex", env.connect(OTHER, ROTATED_KEY).await);
        for id in OTHER_SKILLS {
            let doc = example(&format!("skill-{id}.json"));
            ok(
                "globex skill",
                env.put_doc(OTHER, &format!("/skills/{id}"), &doc).await,
            );
        }
        ok("connect initech", env.connect(OFFBOARDED, NO_ZR_KEY).await);
        ok(
            "offboard initech",
            env.call(
                As::Tenant(OFFBOARDED),
                "DELETE",
                &format!("/tenants/{OFFBOARDED}/connection"),
                None,
            )
            .await,
        );

        // Telemetry and usage go straight into the store: the lists need pages, not a poll.
        let mut events: Vec<TelemetryEvent> = (1..=6).map(|d| event(PARENT, d)).collect();
        events.extend((1..=3).map(|d| event(SUB, d)));
        env.app
            .telemetry
            .write_events(ORG, &events)
            .await
            .expect("seed telemetry");
        let yesterday = time::OffsetDateTime::now_utc().date() - time::Duration::days(1);
        let day = |n: i64| yesterday - time::Duration::days(n);
        let mut rows = Vec::new();
        for n in 1..=4 {
            rows.push(usage_row(PARENT, day(n), "incident-postmortem"));
            rows.push(usage_row(PARENT, day(n), "standup-notes"));
        }
        rows.push(usage_row(SUB, day(1), "incident-postmortem"));
        rows.push(usage_row(SUB, day(2), "incident-postmortem"));
        env.app
            .telemetry
            .write_usage(&slug(PARENT), &rows)
            .await
            .expect("seed usage");

        let default_range = format!("{}:{}", day(29), yesterday);
        let explicit = (day(10).to_string(), day(1).to_string());
        let mut cursors = Vec::new();
        for (list, tenant, context, extra) in [
            ("skills", PARENT, String::new(), String::new()),
            ("skills", OTHER, String::new(), String::new()),
            ("archetypes", PARENT, String::new(), String::new()),
            ("sub-tenants", PARENT, String::new(), String::new()),
            ("telemetry", PARENT, String::new(), String::new()),
            (
                "telemetry",
                PARENT,
                SINCE.to_owned(),
                format!("&since={}", enc(SINCE)),
            ),
            ("telemetry", SUB, String::new(), String::new()),
            ("usage", PARENT, default_range.clone(), String::new()),
            (
                "usage",
                PARENT,
                format!("{}:{}", explicit.0, explicit.1),
                format!("&from={}&to={}", explicit.0, explicit.1),
            ),
            ("usage", SUB, default_range.clone(), String::new()),
        ] {
            let url = format!("/tenants/{tenant}/{list}?limit=1{extra}");
            let (s, b) = env.call(As::Tenant(tenant), "GET", &url, None).await;
            assert_eq!(s, 200, "world: {url}: {b}");
            let cursor = b["next_cursor"]
                .as_str()
                .unwrap_or_else(|| panic!("world: {url} has a single page: {b}"))
                .to_owned();
            cursors.push(RealCursor {
                list,
                tenant,
                context,
                cursor,
            });
        }
        let mut etags = Vec::new();
        for rel in [
            "/skills/incident-postmortem",
            "/archetypes/engineer",
            "/workspaces",
        ] {
            let a = env
                .send(
                    As::Tenant(PARENT),
                    "GET",
                    &format!("/tenants/{PARENT}{rel}"),
                    None,
                    &[],
                )
                .await;
            etags.push(a.header("etag").to_owned());
        }
        World {
            env,
            cursors,
            etags,
            yesterday,
            default_range,
            explicit,
        }
    }

    fn real_cursor(&self, list: &str, tenant: &str, context: &str) -> Option<String> {
        self.cursors
            .iter()
            .find(|c| c.list == list && c.tenant == tenant && c.context == context)
            .map(|c| c.cursor.clone())
    }

    /// Requests the simulator took that changed something: the non-GETs of the real API it answered 2xx
    /// (a key test's scope probe deletes a skill that cannot exist: a 404 that changes nothing).
    fn anthropic_writes(&self) -> u64 {
        self.env
            .sim
            .sim()
            .lock()
            .counters
            .values()
            .map(|c| c.applied)
            .sum()
    }

    /// Puts the world back after a request, so every request meets the same world: a publish lease a
    /// failure left held is let go (else the next offboarding is refused while it lapses), and what a
    /// DELETE removed — wholly, or partly before a failure — is put back, through the fault-free app.
    async fn after(&self, case: &Case, outcome: &Outcome, ledger: &Ledger, report: &mut Report) {
        if !ledger.injected.is_empty() && case.method != "GET" {
            self.let_go_of_the_lease(case).await;
        }
        let status = outcome.status().unwrap_or(500);
        if case.method == "DELETE" && !(400..500).contains(&status) {
            if let Some(restore) = restore_case(case) {
                let out = send(&self.env.app, &restore).await;
                if !matches!(out.status(), Some(200 | 201)) {
                    report.fail(
                        case,
                        "putting back what it removed failed (after a failure, the PUT that repairs it must work)",
                        format!("{} → {out:?}", restore.describe()),
                        "after",
                    );
                }
            }
        }
    }

    /// Takes the Hub's publish lease as if far in the future (any holder has lapsed by then), then releases
    /// it: what `wait_for_publish_lease` would see once the crashed holder's deadline passed.
    async fn let_go_of_the_lease(&self, case: &Case) {
        let Ok(hub) = TenantSlug::parse(&owner_of(&case.tenant)) else {
            return;
        };
        let store = &self.env.app.hub;
        let far = i128::from(i64::MAX);
        if store
            .acquire_publish_lease(&hub, "property-heal", far, 0)
            .await
            .unwrap_or(false)
        {
            let _ = store.release_publish_lease(&hub, "property-heal").await;
        }
    }
}

/// The PUT that puts back what `case` (a DELETE) removed, when it is a thing of the world.
fn restore_case(case: &Case) -> Option<Case> {
    let t = case.tenant.as_str();
    let item = case.item.as_deref();
    let (template, body) = match (case.template.rsplit('/').next()?, item) {
        ("connection", _) if t == PARENT || t == OTHER => (
            "/tenants/{tenant}/connection",
            json!({"admin_api_key": key_of(t)}),
        ),
        ("{skill_id}", Some(id))
            if (t == PARENT && PARENT_SKILLS.contains(&id))
                || (t == OTHER && OTHER_SKILLS.contains(&id)) =>
        {
            (
                "/tenants/{tenant}/skills/{skill_id}",
                example(&format!("skill-{id}.json")),
            )
        }
        ("{archetype}", Some(a)) if t == PARENT => (
            "/tenants/{tenant}/archetypes/{archetype}",
            archetype_doc(a)?,
        ),
        ("{sub_tenant}", Some(s)) if t == PARENT && (s == IDLE_SUB || s == SUB) => {
            ("/tenants/{tenant}/sub-tenants/{sub_tenant}", json!({}))
        }
        _ => return None,
    };
    Some(Case::plain(
        Who::Tenant(t.to_owned()),
        "PUT",
        template,
        t,
        item,
        "",
        Some(body.to_string()),
    ))
}

// ---------------------------------------------------------------------------------------------------------
// The failing store
// ---------------------------------------------------------------------------------------------------------

/// Only the k-th call fails (the SDK gave up on it; the store is fine before and after), or the k-th and
/// every later one (an outage starting mid-request: compensations and cleanups fail too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Blip,
    Down,
}

/// How the call fails: as the services do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// HTTP 400 `ProvisionedThroughputExceededException` (DynamoDB) / `ThrottlingException` (Secrets
    /// Manager), from a stand-in endpoint: nothing reaches moto.
    Throttled,
    /// HTTP 500 `InternalServerError` / `InternalServiceError`, likewise.
    ServerError,
    /// The connection cannot be made: the SDK's dispatch failure, before anything is sent.
    Unreachable,
}

impl FaultKind {
    const ALL: [FaultKind; 3] = [
        FaultKind::Throttled,
        FaultKind::ServerError,
        FaultKind::Unreachable,
    ];

    /// Every kind in turn along a sweep.
    fn nth(k: u32) -> FaultKind {
        FaultKind::ALL[k as usize % FaultKind::ALL.len()]
    }

    fn header(self) -> &'static str {
        match self {
            FaultKind::Throttled => "throttled",
            FaultKind::ServerError => "server-error",
            FaultKind::Unreachable => "unreachable",
        }
    }
}

/// What one request did to the store, as the interceptor saw it.
#[derive(Debug, Default)]
struct Ledger {
    armed: Option<(Mode, u32, FaultKind)>,
    /// Every call, in order (`GetItem`, `Query`, `PutSecretValue`, …): one per SDK execution, not attempt.
    calls: Vec<String>,
    /// The calls made to fail: (1-based call number, operation).
    injected: Vec<(u32, String)>,
    /// Writes that landed (the call succeeded).
    writes: Vec<&'static str>,
    /// How many writes had landed when the first failure was injected.
    writes_before_fault: Option<usize>,
    /// Calls DynamoDB itself would have refused (its rules moto does not apply), with its message.
    refused: Vec<String>,
}

/// The interceptor: on both of the app's clients, so DynamoDB and Secrets Manager share one call count.
#[derive(Debug, Clone)]
struct StoreFaults {
    ledger: Arc<Mutex<Ledger>>,
    /// The stand-in endpoint answering the failing calls.
    server: SocketAddr,
}

/// Marks a call that must fail (set once per execution, seen by every attempt).
const FAULT_HEADER: &str = "x-claresia-fault";

impl StoreFaults {
    fn new() -> StoreFaults {
        StoreFaults {
            ledger: Arc::default(),
            server: fault_server(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arm(&self, mode: Mode, k: u32, kind: FaultKind) {
        *self.lock() = Ledger {
            armed: Some((mode, k, kind)),
            ..Ledger::default()
        };
    }

    fn disarm(&self) {
        *self.lock() = Ledger::default();
    }

    /// What happened since `arm` / `disarm`; disarms.
    fn take(&self) -> Ledger {
        std::mem::take(&mut *self.lock())
    }
}

impl Intercept for StoreFaults {
    fn name(&self) -> &'static str {
        "StoreFaults"
    }

    /// Once per call: count it, and decide whether it fails (or whether DynamoDB would refuse it).
    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let op = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_owned();
        let refusal = request
            .body()
            .bytes()
            .and_then(|b| dynamo_would_refuse(&op, b));
        let verdict = {
            let mut l = self.lock();
            l.calls.push(op.clone());
            let n = l.calls.len() as u32;
            let fault = match l.armed {
                Some((Mode::Blip, k, kind)) if n == k => Some(kind),
                Some((Mode::Down, k, kind)) if n >= k => Some(kind),
                _ => None,
            };
            if let Some(kind) = fault {
                if l.writes_before_fault.is_none() {
                    l.writes_before_fault = Some(l.writes.len());
                }
                l.injected.push((n, op.clone()));
                Some(kind.header().to_owned())
            } else if let Some(why) = refusal {
                l.refused.push(format!("{op}: {why}"));
                Some(format!("validation:{why}"))
            } else {
                None
            }
        };
        if let Some(v) = verdict {
            context.request_mut().headers_mut().insert(FAULT_HEADER, v);
        }
        Ok(())
    }

    /// Every attempt of a marked call: refused before it is sent, or sent to the stand-in endpoint (after
    /// signing, so nothing about the request changes but where it goes).
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(fault) = context
            .request()
            .headers()
            .get(FAULT_HEADER)
            .map(str::to_owned)
        else {
            return Ok(());
        };
        if fault == FaultKind::Unreachable.header() {
            return Err("connection refused: the store cannot be reached (StoreFaults)".into());
        }
        context
            .request_mut()
            .set_uri(format!("http://{}/", self.server))?;
        Ok(())
    }

    /// A write that succeeded landed (a conditional write whose condition failed is an error: it did not).
    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation as d;
        use aws_sdk_secretsmanager::operation as s;
        let Some(Ok(out)) = context.output_or_error() else {
            return Ok(());
        };
        let landed = [
            (
                "PutItem",
                out.downcast_ref::<d::put_item::PutItemOutput>().is_some(),
            ),
            (
                "UpdateItem",
                out.downcast_ref::<d::update_item::UpdateItemOutput>()
                    .is_some(),
            ),
            (
                "DeleteItem",
                out.downcast_ref::<d::delete_item::DeleteItemOutput>()
                    .is_some(),
            ),
            (
                "BatchWriteItem",
                out.downcast_ref::<d::batch_write_item::BatchWriteItemOutput>()
                    .is_some(),
            ),
            (
                "TransactWriteItems",
                out.downcast_ref::<d::transact_write_items::TransactWriteItemsOutput>()
                    .is_some(),
            ),
            (
                "CreateSecret",
                out.downcast_ref::<s::create_secret::CreateSecretOutput>()
                    .is_some(),
            ),
            (
                "PutSecretValue",
                out.downcast_ref::<s::put_secret_value::PutSecretValueOutput>()
                    .is_some(),
            ),
            (
                "UpdateSecret",
                out.downcast_ref::<s::update_secret::UpdateSecretOutput>()
                    .is_some(),
            ),
            (
                "DeleteSecret",
                out.downcast_ref::<s::delete_secret::DeleteSecretOutput>()
                    .is_some(),
            ),
            (
                "RestoreSecret",
                out.downcast_ref::<s::restore_secret::RestoreSecretOutput>()
                    .is_some(),
            ),
            (
                "TagResource",
                out.downcast_ref::<s::tag_resource::TagResourceOutput>()
                    .is_some(),
            ),
            (
                "UpdateSecretVersionStage",
                out.downcast_ref::<s::update_secret_version_stage::UpdateSecretVersionStageOutput>(
                )
                .is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(op, hit)| hit.then_some(op));
        if let Some(op) = landed {
            self.lock().writes.push(op);
        }
        Ok(())
    }
}

/// What DynamoDB answers with a `ValidationException` where moto answers: a `Query` whose start key lies
/// outside its key condition, or has an empty or oversized key value. Only the key-condition forms this
/// codebase writes (`#a = :v`, then `BETWEEN`, a comparison or `begins_with`); anything else is let through.
fn dynamo_would_refuse(op: &str, body: &[u8]) -> Option<String> {
    if op != "Query" {
        return None;
    }
    let q: Value = serde_json::from_slice(body).ok()?;
    let start = q.get("ExclusiveStartKey")?.as_object()?;
    for (name, v) in start {
        if let Some(s) = v.get("S").and_then(Value::as_str) {
            if s.is_empty() {
                return Some(format!("One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: {name}"));
            }
            if s.len() > 1024 {
                return Some(format!(
                    "One or more parameter values were invalid: the key {name} is over 1024 bytes"
                ));
            }
        }
    }
    let outside = || {
        Some(
            "The provided starting key is outside query boundaries based on provided key conditions"
                .to_owned(),
        )
    };
    let names = &q["ExpressionAttributeNames"];
    let values = &q["ExpressionAttributeValues"];
    let attr = |n: &str| names.get(n).and_then(Value::as_str).unwrap_or(n).to_owned();
    let value = |v: &str| {
        values
            .get(v)
            .and_then(|x| x.get("S"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let key = |n: &str| {
        start
            .get(&attr(n))
            .and_then(|x| x.get("S"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let expr = q.get("KeyConditionExpression")?.as_str()?;
    let (partition, sort) = match expr.split_once(" AND ") {
        Some((p, s)) => (p, Some(s)),
        None => (expr, None),
    };
    let p: Vec<&str> = partition.split_whitespace().collect();
    if let [n, "=", v] = p.as_slice() {
        if key(n) != value(v) {
            return outside();
        }
    }
    let sort = sort?;
    let t: Vec<&str> = sort.split_whitespace().collect();
    let inside = match t.as_slice() {
        [n, "BETWEEN", lo, "AND", hi] => {
            let (k, lo, hi) = (key(n)?, value(lo)?, value(hi)?);
            lo <= k && k <= hi
        }
        [n, ">=", v] => key(n)? >= value(v)?,
        [n, ">", v] => key(n)? > value(v)?,
        [n, "<=", v] => key(n)? <= value(v)?,
        [n, "<", v] => key(n)? < value(v)?,
        [n, "=", v] => key(n)? == value(v)?,
        _ => {
            let args = sort.strip_prefix("begins_with(")?.strip_suffix(')')?;
            let (n, p) = args.split_once(',')?;
            key(n.trim())?.starts_with(&value(p.trim())?)
        }
    };
    if inside {
        None
    } else {
        outside()
    }
}

/// The stand-in for DynamoDB and Secrets Manager that the failing calls reach: it answers every request
/// with the error its `x-claresia-fault` header names, in the services' own JSON error shape. One per test
/// binary, on a free port; a thread per connection (the SDK keeps connections alive).
fn fault_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault server");
        let addr = listener.local_addr().expect("fault server address");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve_faults(conn);
                });
            }
        });
        addr
    })
}

fn serve_faults(conn: TcpStream) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            headers.push(line.to_owned());
        }
        let header = |name: &str| {
            headers.iter().find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let (status, answer) = fault_answer(
            &header("x-amz-target").unwrap_or_default(),
            &header(FAULT_HEADER).unwrap_or_default(),
        );
        let answer = answer.to_string();
        write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: store-faults\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
        out.flush()?;
    }
}

fn fault_answer(target: &str, fault: &str) -> (&'static str, Value) {
    let dynamo = target.starts_with("DynamoDB");
    let throttle = "400 Bad Request";
    let server = "500 Internal Server Error";
    match fault {
        "throttled" if dynamo => (
            throttle,
            json!({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                   "message": "The level of configured provisioned throughput for the table was exceeded (StoreFaults)"}),
        ),
        "throttled" => (
            throttle,
            json!({"__type": "ThrottlingException", "message": "Rate exceeded (StoreFaults)"}),
        ),
        "server-error" if dynamo => (
            server,
            json!({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                   "message": "Internal server error (StoreFaults)"}),
        ),
        "server-error" => (
            server,
            json!({"__type": "InternalServiceError", "message": "An error occurred on the server side (StoreFaults)"}),
        ),
        other => (
            throttle,
            json!({"__type": "com.amazon.coral.validate#ValidationException",
                   "message": other.strip_prefix("validation:").unwrap_or(other)}),
        ),
    }
}

/// The app under test: the world's configuration, tables and simulator, with AWS clients of its own that
/// carry the failing store, and no SDK retries — a failed call is one the SDK gave up on, and nothing
/// sleeps in back-off.
fn faulty_app(world: &World, faults: &StoreFaults) -> Arc<App> {
    let sdk = world
        .env
        .sdk
        .to_builder()
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(faults.clone())
            .build(),
    );
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .interceptor(faults.clone())
            .build(),
    );
    Arc::new(App::with_clients(world.env.app.config.clone(), dynamo, secrets).expect("app"))
}

// ---------------------------------------------------------------------------------------------------------
// The requests
// ---------------------------------------------------------------------------------------------------------

/// Who the request claims to be.
#[derive(Debug, Clone)]
enum Who {
    Tenant(String),
    Operator,
    Anonymous,
    Claims(Value),
}

impl Who {
    fn caller(&self) -> As<'_> {
        match self {
            Who::Tenant(t) => As::Tenant(t),
            Who::Operator => As::Operator,
            Who::Anonymous => As::Anonymous,
            Who::Claims(c) => As::Claims(c),
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    who: Who,
    method: String,
    /// The operation's path (`/tenants/{tenant}/skills/{skill_id}`).
    template: String,
    /// The path items as generated (before percent-encoding).
    tenant: String,
    item: Option<String>,
    /// The concrete path, every item percent-encoded.
    path: String,
    query: String,
    body: Option<String>,
    headers: Vec<(String, String)>,
    /// What the generator chose, for the report.
    notes: Vec<String>,
}

impl Case {
    fn plain(
        who: Who,
        method: &str,
        template: &str,
        tenant: &str,
        item: Option<&str>,
        query: &str,
        body: Option<String>,
    ) -> Case {
        let mut path = template.replace("{tenant}", &enc(tenant));
        if let (Some(param), Some(item)) = (item_param(template), item) {
            path = path.replace(param, &enc(item));
        }
        Case {
            who,
            method: method.to_owned(),
            template: template.to_owned(),
            tenant: tenant.to_owned(),
            item: item.map(str::to_owned),
            path,
            query: query.to_owned(),
            body,
            headers: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn uri(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The route key, as the contract and the matrix name it.
    fn route(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    fn describe(&self) -> String {
        format!(
            "{} {} as {:?}; headers {:?}; body {:?}; generated: {}",
            self.method,
            short(&self.uri(), 400),
            self.who,
            self.headers,
            self.body.as_deref().map(|b| short(b, 240)),
            self.notes.join("; ")
        )
    }
}

fn short(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut cut = n;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

/// Percent-encodes everything but the unreserved characters: any generated text makes a valid URI.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// The Hub a path tenant belongs to: its parent for `acme-…`, else itself.
fn owner_of(tenant: &str) -> String {
    if tenant.starts_with("acme-") {
        PARENT.to_owned()
    } else {
        tenant.to_owned()
    }
}

fn key_of(tenant: &str) -> &'static str {
    if tenant == OTHER {
        ROTATED_KEY
    } else {
        GOOD_KEY
    }
}

/// The operation's item parameter (`{skill_id}`, `{archetype}`, `{sub_tenant}`), if it has one.
fn item_param(template: &str) -> Option<&str> {
    template
        .rsplit('/')
        .next()
        .filter(|s| s.starts_with('{') && *s != "{tenant}")
}

/// The list an operation is, if it is one.
fn list_of(op: &Operation) -> Option<&'static str> {
    if op.method != "GET" {
        return None;
    }
    ["skills", "archetypes", "sub-tenants", "telemetry", "usage"]
        .into_iter()
        .find(|l| op.path.ends_with(&format!("/{l}")))
}

/// The deepest valid request's path tenant: `globex` for offboarding (a small catalog to put back).
fn deep_tenant(op: &Operation) -> &'static str {
    if op.method == "DELETE" && op.path.ends_with("/connection") {
        OTHER
    } else if op.path.ends_with("/top-level") {
        // Unclaimed: the first run provisions it.
        GHOST
    } else if op.path.ends_with("/release") {
        // A removed sub-tenant nothing names and with no telemetry: the first run releases it.
        REMOVED_SUB
    } else {
        PARENT
    }
}

/// The namespace routes are an operator's alone.
fn operator_only(op: &Operation) -> bool {
    op.path.ends_with("/top-level") || op.path.ends_with("/release")
}

fn deep_item(param: &str) -> &'static str {
    match param {
        "{skill_id}" => "incident-postmortem",
        "{archetype}" => "engineer",
        _ => IDLE_SUB,
    }
}

/// Well-formed cursors of `list` (bound to `tenant` and the query's `context`) whose position is made up:
/// past the end, before the start, outside the query's range, empty, oversized, not a key at all. The
/// cursors are not signed, so anyone can make one.
fn forged_cursors(list: &str, tenant: &str, context: &str) -> Vec<String> {
    match list {
        "telemetry" => {
            let since = (!context.is_empty()).then_some(context);
            let floor = since.unwrap_or("2026-01-01T00:00:00.000Z");
            let id = "auditevt_forged";
            let (long_k, long_u) = ("i".repeat(990), "i".repeat(1020));
            [
                (format!("{floor}#{id}"), format!("{ORG}#{id}")),
                (
                    format!("2000-01-01T00:00:00.000Z#{id}"),
                    format!("{ORG}#{id}"),
                ),
                ("not-a-time#x".to_owned(), format!("{ORG}#x")),
                (format!("{floor}#"), format!("{ORG}#")),
                (format!("{floor}#{long_k}"), format!("{ORG}#{long_k}")),
                (format!("{floor}#{long_u}"), format!("{ORG}#x")),
                (format!("{floor}#{id}"), String::new()),
                (
                    format!("9999-12-31T23:59:59.999Z#{id}"),
                    format!("other-org#{id}"),
                ),
            ]
            .into_iter()
            .map(|(k, u)| b64(&json!({"t": tenant, "s": since, "k": k, "u": u}).to_string()))
            .collect()
        }
        "usage" => {
            let (from, to) = context
                .split_once(':')
                .unwrap_or(("2026-01-01", "2026-01-31"));
            let skill = format!("claresia-{tenant}-incident-postmortem");
            [
                format!("{from}#{skill}#grp_engineering\u{1f}usage#{tenant}#{skill}#{from}#grp_engineering"),
                "0000-00-00#x\u{1f}x".to_owned(),
                "9999-99-99#x\u{1f}x".to_owned(),
                format!("{from}#x\u{1f}"),
                "\u{1f}".to_owned(),
                "no separator".to_owned(),
                // The range's last key (`{to}$`) is inside; `%` sorts right after `$`: outside.
                format!("{to}$\u{1f}x"),
                format!("{to}%\u{1f}x"),
            ]
            .into_iter()
            .map(|a| b64(&json!({"t": tenant, "l": format!("usage:{from}:{to}"), "a": a}).to_string()))
            .collect()
        }
        _ => {
            let (l128, l129) = ("a".repeat(128), "a".repeat(129));
            let positions = [
                "zzzz",
                "",
                "A",
                "a b",
                "é",
                "incident-postmortem",
                "\u{1f}",
                l128.as_str(),
                l129.as_str(),
            ];
            let mut out: Vec<String> = positions
                .iter()
                .map(|a| b64(&json!({"t": tenant, "l": list, "a": a}).to_string()))
                .collect();
            // Cursors from before lists were named carry no `l` (read as the skills list's).
            out.extend(
                positions
                    .iter()
                    .map(|a| b64(&json!({"t": tenant, "a": a}).to_string())),
            );
            out
        }
    }
}

fn garbage_cursors() -> Vec<String> {
    vec![
        "!!".to_owned(),
        "%".to_owned(),
        "AAAA".to_owned(),
        b64("null"),
        b64("[]"),
        b64("{\"t\":1}"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xffu8, 0xfe, 0x00]),
        // Standard base64 (`+`, `/`, padding) of an otherwise good cursor.
        base64::engine::general_purpose::STANDARD
            .encode(json!({"t": PARENT, "l": "skills", "a": "zz?>"}).to_string()),
        "a".repeat(5000),
        String::new(),
    ]
}

/// The seeded generator.
struct Gen<'w> {
    rng: StdRng,
    world: &'w World,
}

impl<'w> Gen<'w> {
    fn new(seed: u64, world: &'w World) -> Gen<'w> {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            world,
        }
    }

    fn pick<T: Clone>(&mut self, options: &[T]) -> T {
        options
            .choose(&mut self.rng)
            .expect("something to choose from")
            .clone()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    /// A request for `op`. `deep`: the valid, authorized request that reaches furthest (every call a
    /// success path makes), for the k-sweep.
    fn case(&mut self, op: &Operation, deep: bool) -> Case {
        let mut notes = Vec::new();
        let tenant = if deep {
            deep_tenant(op).to_owned()
        } else {
            self.tenant()
        };
        let item = item_param(&op.path).map(|p| {
            if deep {
                deep_item(p).to_owned()
            } else {
                self.item(p)
            }
        });
        let who = if deep && operator_only(op) {
            Who::Operator
        } else if deep {
            Who::Tenant(owner_of(&tenant))
        } else {
            self.caller(&tenant)
        };
        let query = self.query(op, &tenant, deep, &mut notes);
        let body = self.body(op, &tenant, item.as_deref(), deep, &mut notes);
        let mut case = Case::plain(
            who,
            &op.method,
            &op.path,
            &tenant,
            item.as_deref(),
            &query,
            body,
        );
        if !deep {
            case.headers = self.preconditions(&mut notes);
        }
        case.notes = notes;
        case
    }

    fn tenant(&mut self) -> String {
        let long = "a".repeat(33);
        match self.rng.gen_range(0..100) {
            0..=34 => PARENT.to_owned(),
            35..=46 => SUB.to_owned(),
            47..=51 => IDLE_SUB.to_owned(),
            52..=56 => REMOVED_SUB.to_owned(),
            57..=60 => GHOST.to_owned(),
            61..=71 => OTHER.to_owned(),
            72..=77 => OFFBOARDED.to_owned(),
            _ => self
                .pick(&[
                    "Acme",
                    "a_b",
                    "-acme",
                    "acme-",
                    "acme--eng",
                    long.as_str(),
                    "..",
                    "acme\0",
                    "ＡＣＭＥ",
                    "acme.eng",
                    "acme/eng",
                    "",
                    " acme",
                ])
                .to_owned(),
        }
    }

    fn item(&mut self, param: &str) -> String {
        let long = "x".repeat(200);
        if self.chance(0.2) {
            return self
                .pick(&[
                    "Bad_Id",
                    long.as_str(),
                    "..",
                    "x y",
                    "",
                    "é",
                    "a--b",
                    "-a",
                    "a/b",
                ])
                .to_owned();
        }
        let options: &[&str] = match param {
            "{skill_id}" => &[
                "incident-postmortem",
                "standup-notes",
                "prd-review",
                "retro-notes",
            ],
            "{archetype}" => &["engineer", "product-manager", "eng-oncall", "oncall"],
            _ => &[
                SUB,
                IDLE_SUB,
                REMOVED_SUB,
                "acme-new",
                GHOST,
                OTHER,
                "acme-eng-x",
            ],
        };
        self.pick(options).to_owned()
    }

    fn caller(&mut self, tenant: &str) -> Who {
        match self.rng.gen_range(0..100) {
            0..=44 => Who::Tenant(owner_of(tenant)),
            45..=54 => Who::Tenant(tenant.to_owned()),
            55..=64 => Who::Operator,
            65..=71 => Who::Tenant(SUB.to_owned()),
            72..=77 => Who::Tenant(OTHER.to_owned()),
            78..=82 => Who::Anonymous,
            83..=85 => Who::Claims(json!({})),
            86..=88 => Who::Claims(json!({"sub": "user-1", "claresia:tenant": ""})),
            89..=91 => Who::Claims(json!({"sub": "user-1", "claresia:tenant": [PARENT]})),
            92..=94 => Who::Claims(json!({"sub": "user-1", "claresia:tenant": "ACME"})),
            95..=97 => Who::Claims(json!({"sub": "user-1", "claresia:role": "admin"})),
            _ => Who::Claims(
                json!({"sub": "op-1", "claresia:role": "operator", "claresia:tenant": OTHER}),
            ),
        }
    }

    fn query(
        &mut self,
        op: &Operation,
        tenant: &str,
        deep: bool,
        notes: &mut Vec<String>,
    ) -> String {
        let Some(list) = list_of(op) else {
            if !deep && self.chance(0.05) {
                let q = self.pick(&["x=1", "limit=5", "cursor=abc", "&&", "="]);
                notes.push(format!("a query where none is expected: {q}"));
                return q.to_owned();
            }
            return String::new();
        };
        let world = self.world;
        let mut pairs: Vec<(String, String)> = Vec::new();
        // What a cursor of this query is bound to, besides the list and the tenant.
        let context = match list {
            "telemetry" => {
                let since = match (deep, self.rng.gen_range(0..10)) {
                    (true, _) | (false, 0..=4) => None,
                    (false, 5..=6) => Some(SINCE.to_owned()),
                    (false, 7) => Some("2026-01-01T00:00:00.000Z".to_owned()),
                    _ => Some(self.pick(&JUNK_SINCE).to_owned()),
                };
                if let Some(s) = &since {
                    notes.push(format!("since={s}"));
                    pairs.push(("since".into(), s.clone()));
                }
                since.unwrap_or_default()
            }
            "usage" => {
                let day = |n: i64| (world.yesterday - time::Duration::days(n)).to_string();
                let (from, to) = match (deep, self.rng.gen_range(0..10)) {
                    (true, _) | (false, 0..=3) => (None, None),
                    (false, 4..=5) => (
                        Some(world.explicit.0.clone()),
                        Some(world.explicit.1.clone()),
                    ),
                    (false, 6) => (Some(day(200)), Some(day(0))),
                    (false, 7) => (Some(day(0)), Some(day(5))),
                    _ => {
                        let from = self.chance(0.5).then(|| self.pick(&JUNK_DATES).to_owned());
                        let to = self.chance(0.7).then(|| self.pick(&JUNK_DATES).to_owned());
                        (from, to)
                    }
                };
                let context = match (&from, &to) {
                    (None, None) => world.default_range.clone(),
                    _ => format!(
                        "{}:{}",
                        from.clone().unwrap_or_default(),
                        to.clone().unwrap_or_default()
                    ),
                };
                for (k, v) in [("from", from), ("to", to)] {
                    if let Some(v) = v {
                        notes.push(format!("{k}={v}"));
                        pairs.push((k.into(), v));
                    }
                }
                context
            }
            _ => String::new(),
        };
        let max = match list {
            "telemetry" => 500,
            "usage" => 1000,
            _ => 100,
        };
        let limit = match (deep, self.rng.gen_range(0..10)) {
            (true, _) | (false, 4..=5) => Some("1".to_owned()),
            (false, 0..=3) => None,
            (false, 6) => Some(max.to_string()),
            (false, 7) => Some((max + 1).to_string()),
            (false, 8) => Some(self.pick(&JUNK_LIMITS).to_owned()),
            _ => Some("2".to_owned()),
        };
        if let Some(l) = limit {
            pairs.push(("limit".into(), l));
        }
        // Catalog lists bind their cursors to the Hub; telemetry and usage to the path's own tenant.
        let bound_to = if matches!(list, "telemetry" | "usage") {
            tenant.to_owned()
        } else {
            owner_of(tenant)
        };
        let cursor = if deep {
            world.real_cursor(list, &bound_to, &context)
        } else {
            self.cursor(list, &bound_to, &context, notes)
        };
        if let Some(c) = cursor {
            pairs.push(("cursor".into(), c));
        }
        let mut query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        if !deep {
            match self.rng.gen_range(0..20) {
                0 => {
                    query.push("page=2".into());
                    notes.push("an unknown parameter".into());
                }
                1 => {
                    query.push("limit=1".into());
                    notes.push("limit twice".into());
                }
                2 => {
                    query.push("cursor".into());
                    notes.push("a cursor without a value".into());
                }
                _ => {}
            }
            query.shuffle(&mut self.rng);
        }
        query.join("&")
    }

    /// A cursor for `list` bound to `tenant` and `context`: none, its own, another list's, another
    /// tenant's, another query's, a forged position, or garbage.
    fn cursor(
        &mut self,
        list: &str,
        tenant: &str,
        context: &str,
        notes: &mut Vec<String>,
    ) -> Option<String> {
        let world = self.world;
        let real = |keep: &dyn Fn(&RealCursor) -> bool| -> Vec<String> {
            world
                .cursors
                .iter()
                .filter(|&c| keep(c))
                .map(|c| c.cursor.clone())
                .collect()
        };
        let (why, options) = match self.rng.gen_range(0..10) {
            0..=3 => return None,
            4..=5 => (
                "its own next_cursor",
                real(&|c: &RealCursor| {
                    c.list == list && c.tenant == tenant && c.context == context
                }),
            ),
            6 => (
                "another list's cursor",
                real(&|c: &RealCursor| c.list != list && c.tenant == tenant),
            ),
            7 => (
                "another tenant's cursor",
                real(&|c: &RealCursor| c.list == list && c.tenant != tenant),
            ),
            8 => (
                "another query's cursor",
                real(&|c: &RealCursor| {
                    c.list == list && c.tenant == tenant && c.context != context
                }),
            ),
            _ => ("", Vec::new()),
        };
        let cursor = if !options.is_empty() {
            notes.push(format!("cursor: {why}"));
            self.pick(&options)
        } else if self.chance(0.6) {
            notes.push("cursor: a forged position".into());
            self.forged(list, tenant, context)
        } else {
            notes.push("cursor: garbage".into());
            self.garbage_cursor()
        };
        Some(cursor)
    }

    fn forged(&mut self, list: &str, tenant: &str, context: &str) -> String {
        self.pick(&forged_cursors(list, tenant, context))
    }

    fn garbage_cursor(&mut self) -> String {
        self.pick(&garbage_cursors())
    }

    fn body(
        &mut self,
        op: &Operation,
        tenant: &str,
        item: Option<&str>,
        deep: bool,
        notes: &mut Vec<String>,
    ) -> Option<String> {
        let valid = self.valid_body(op, tenant, item, deep);
        if deep {
            return valid.map(|v| v.to_string());
        }
        let Some(doc) = valid else {
            return self.chance(0.1).then(|| {
                notes.push("a body where none is expected".into());
                self.pick(&["{}", "garbage", "[1,2]", "{\"admin_api_key\": 1}"])
                    .to_owned()
            });
        };
        if self.chance(0.45) {
            Some(doc.to_string())
        } else {
            Some(self.mutate(doc, notes))
        }
    }

    /// The body a valid request of `op` carries (`None`: none); not deep, some variety among valid ones
    /// (other keys, sub-tenants, workspaces) that the route then judges.
    fn valid_body(
        &mut self,
        op: &Operation,
        tenant: &str,
        item: Option<&str>,
        deep: bool,
    ) -> Option<Value> {
        let last = op.path.rsplit('/').next().unwrap_or_default();
        match (op.method.as_str(), last) {
            ("PUT", "connection") => {
                if deep {
                    return Some(json!({"admin_api_key": key_of(tenant)}));
                }
                let spaced = format!(" {GOOD_KEY} ");
                let key = self
                    .pick(&[
                        GOOD_KEY,
                        ROTATED_KEY,
                        NO_AUDIT_KEY,
                        NO_ZR_KEY,
                        UNKNOWN_ZR_KEY,
                        REVOKED_KEY,
                        ENTERPRISE_KEY,
                        ENTERPRISE_PARTIAL_KEY,
                        "",
                        "sk-ant-api03-workspace-0000000000000000000000000000",
                        "not a key",
                        spaced.as_str(),
                    ])
                    .to_owned();
                let mut body = json!({"admin_api_key": key});
                if self.chance(0.2) {
                    body["surface"] =
                        self.pick(&[json!("preview"), json!("enterprise"), json!("bogus"), json!(42)]);
                }
                if self.chance(0.2) {
                    body["zero_retention_attestation"] = self.pick(&[
                        json!({"reference": "DPA-1"}),
                        json!({"reference": ""}),
                        json!({"reference": "r".repeat(501)}),
                        json!({"reference": 42}),
                        json!("DPA-1"),
                    ]);
                }
                Some(body)
            }
            ("POST", "test") => (!deep && self.chance(0.5)).then(|| {
                json!({"admin_api_key": self.pick(&[GOOD_KEY, REVOKED_KEY, NO_AUDIT_KEY, ENTERPRISE_KEY, "nope"])})
            }),
            ("PUT", "{skill_id}") => {
                let id = item.unwrap_or("retro-notes");
                let mut doc = if PARENT_SKILLS.contains(&id) {
                    example(&format!("skill-{id}.json"))
                } else {
                    let mut d = example("skill-standup-notes.json");
                    d["id"] = json!(id);
                    d
                };
                if deep {
                    // A change every time, so every run publishes an update.
                    doc["title"] = json!(format!("Incident Postmortem {}", self.rng.gen::<u16>()));
                } else if self.chance(0.1) {
                    doc["id"] = json!("prd-review");
                }
                Some(doc)
            }
            ("PUT", "{archetype}") => {
                if deep {
                    let mut a = example("archetype-engineer.json");
                    if self.chance(0.5) {
                        a["group_ids"] = json!(["grp_engineering", "grp_oncall"]);
                    }
                    return Some(a);
                }
                Some(self.pick(&[
                    example("archetype-engineer.json"),
                    oncall_archetype(),
                    json!({"skills": ["nope"]}),
                    json!({"skills": [], "group_ids": []}),
                    json!({"skills": ["standup-notes"], "sub_tenant": REMOVED_SUB}),
                    json!({"skills": ["standup-notes"], "sub_tenant": OTHER}),
                    json!({"skills": ["standup-notes"], "sub_tenant": GHOST}),
                    json!({"skills": ["standup-notes"], "workspace_ids": [WS_SALES]}),
                ]))
            }
            ("PUT", "workspaces") => {
                let mapped =
                    json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": SUB}]});
                if deep {
                    return Some(mapped);
                }
                Some(self.pick(&[
                    mapped,
                    json!({"mappings": []}),
                    json!({"mappings": [{"workspace_id": WS_CORPORATE, "sub_tenant": null}]}),
                    json!({"mappings": [{"workspace_id": "wrkspc_nope", "sub_tenant": SUB}]}),
                    json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": REMOVED_SUB}]}),
                    json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": SUB},
                                        {"workspace_id": WS_ENGINEERING, "sub_tenant": IDLE_SUB}]}),
                    json!({"mappings": [{"workspace_id": WS_LEGACY, "sub_tenant": IDLE_SUB}]}),
                    json!({"mappings": [{"group_id": GROUP_ENGINEERING, "sub_tenant": SUB}]}),
                ]))
            }
            ("PUT", "{sub_tenant}") if !deep => self.pick(&[
                None,
                Some(json!({})),
                Some(json!({"name": "x"})),
                Some(json!([])),
                Some(Value::Null),
            ]),
            _ => None,
        }
    }

    /// A valid document made invalid one way.
    fn mutate(&mut self, doc: Value, notes: &mut Vec<String>) -> String {
        let text = doc.to_string();
        if !doc.is_object() {
            notes.push("body: as is".into());
            return text;
        }
        let keys: Vec<String> = doc
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let key = if keys.is_empty() {
            "x".to_owned()
        } else {
            self.pick(&keys)
        };
        // `{extra, …the document's fields}`, textually (for what serde_json cannot build).
        let splice = |extra: &str| match text.strip_prefix('{') {
            Some(rest) if rest != "}" => format!("{{{extra},{rest}"),
            _ => format!("{{{extra}}}"),
        };
        let (what, body) = match self.rng.gen_range(0..11) {
            0 => {
                let mut cut = self.rng.gen_range(0..text.len().max(1));
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                ("truncated", text[..cut].to_owned())
            }
            1 => (
                "not JSON",
                self.pick(&["not json", "{", "", "   ", "\u{feff}{}", "{}}", "nul"])
                    .to_owned(),
            ),
            2 => (
                "another JSON type",
                self.pick(&["null", "42", "\"text\"", "[]", "true"])
                    .to_owned(),
            ),
            3 => {
                let mut d = doc.clone();
                d[key.as_str()] = self.pick(&[
                    Value::Null,
                    json!(42),
                    json!("s"),
                    json!([]),
                    json!({}),
                    json!(true),
                    json!(-1),
                    json!(1.5),
                ]);
                ("a field of another type", d.to_string())
            }
            4 => {
                let mut d = doc.clone();
                d["surprise"] = json!(1);
                ("an unknown field", d.to_string())
            }
            5 => {
                let mut d = doc.clone();
                if let Some(o) = d.as_object_mut() {
                    o.remove(&key);
                }
                ("a field missing", d.to_string())
            }
            6 => {
                let n = self.pick(&[10_000usize, 200_000, 300_000]);
                let mut d = doc.clone();
                d[key.as_str()] = json!("x".repeat(n));
                ("a huge string", d.to_string())
            }
            7 => {
                let n = self.pick(&[200usize, 5_000]);
                (
                    "deep nesting",
                    format!("{}{}", "[".repeat(n), "]".repeat(n)),
                )
            }
            8 => ("a number out of range", splice("\"n\":1e400")),
            9 => ("a lone surrogate", splice("\"s\":\"\\ud800\"")),
            _ => ("a duplicate key", splice(&format!("\"{key}\":null"))),
        };
        notes.push(format!("body: {what}"));
        body
    }

    /// Now and then `If-Match` / `If-None-Match`: a real ETag, `*`, a wrong one, a list, empty, both.
    fn preconditions(&mut self, notes: &mut Vec<String>) -> Vec<(String, String)> {
        if !self.chance(0.12) {
            return Vec::new();
        }
        let world = self.world;
        let etag = world
            .etags
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_default();
        let value = self.pick(&[
            etag,
            "*".to_owned(),
            "\"nope\"".to_owned(),
            "W/\"x\"".to_owned(),
            "\"a\", \"b\"".to_owned(),
            String::new(),
            "   ".to_owned(),
        ]);
        let headers = match self.rng.gen_range(0..3) {
            0 => vec![("if-match".to_owned(), value)],
            1 => vec![("if-none-match".to_owned(), value)],
            _ => vec![
                ("if-match".to_owned(), value),
                ("if-none-match".to_owned(), "*".to_owned()),
            ],
        };
        notes.push(format!("preconditions {headers:?}"));
        headers
    }
}

// ---------------------------------------------------------------------------------------------------------
// The invariant
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Outcome {
    Answered {
        status: u16,
        headers: http::HeaderMap,
        body: Value,
    },
    /// The handler panicked: in Lambda (`panic = "abort"`) the sandbox dies and API Gateway answers 502.
    Panicked(String),
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answered { status, .. } => Some(*status),
            Outcome::Panicked(_) => None,
        }
    }
}

/// Hands the request to `app` in a task of its own, so a panic is an answer like any other.
async fn send(app: &Arc<App>, case: &Case) -> Outcome {
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let req = request(
        case.who.caller(),
        &case.method,
        &case.uri(),
        case.body.as_deref(),
        &headers,
    );
    let app = Arc::clone(app);
    match tokio::spawn(async move { app.handle(req).await }).await {
        Ok(resp) => {
            let text = match resp.body() {
                lambda_http::Body::Text(t) => t.clone(),
                lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            Outcome::Answered {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            }
        }
        Err(e) => Outcome::Panicked(match e.try_into_panic() {
            Ok(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into()),
            Err(e) => e.to_string(),
        }),
    }
}

/// One request under test: armed (or not), sent, and what the store and Anthropic saw of it.
async fn run(
    world: &World,
    app: &Arc<App>,
    faults: &StoreFaults,
    case: &Case,
    fault: Option<(Mode, u32, FaultKind)>,
) -> (Outcome, Ledger, u64) {
    match fault {
        Some((mode, k, kind)) => faults.arm(mode, k, kind),
        None => faults.disarm(),
    }
    let before = world.anthropic_writes();
    let outcome = send(app, case).await;
    let ledger = faults.take();
    let anthropic_writes = world.anthropic_writes().saturating_sub(before);
    (outcome, ledger, anthropic_writes)
}

#[derive(Default)]
struct Report {
    requests: usize,
    statuses: BTreeMap<u16, usize>,
    ok_by_route: BTreeMap<String, usize>,
    unavailable_by_route: BTreeMap<String, usize>,
    /// Requests with a failure injected.
    faults: usize,
    /// Calls DynamoDB would have refused.
    refused_by_dynamo: usize,
    /// Broken rules by (route, rule): how many times, and the first time in full.
    failures: BTreeMap<(String, &'static str), (usize, String)>,
}

impl Report {
    fn fail(&mut self, case: &Case, rule: &'static str, detail: String, at: &str) {
        let entry = self
            .failures
            .entry((case.route(), rule))
            .or_insert((0, String::new()));
        entry.0 += 1;
        if entry.0 == 1 {
            entry.1 = format!("{at}: {detail}\n      request: {}", case.describe());
        }
    }

    /// The invariant, for one request.
    fn judge(
        &mut self,
        case: &Case,
        outcome: &Outcome,
        ledger: &Ledger,
        anthropic_writes: u64,
        at: &str,
    ) {
        self.requests += 1;
        self.faults += usize::from(!ledger.injected.is_empty());
        self.refused_by_dynamo += ledger.refused.len();
        let (status, headers, body) = match outcome {
            Outcome::Panicked(message) => {
                self.fail(case, "the handler panicked", message.clone(), at);
                return;
            }
            Outcome::Answered {
                status,
                headers,
                body,
            } => (*status, headers, body),
        };
        *self.statuses.entry(status).or_default() += 1;
        if let Err(e) = contract().check(&case.method, &case.path, status, headers, body) {
            self.fail(
                case,
                "the answer disagrees with lib/api/openapi.yaml",
                e,
                at,
            );
        }
        let code = body["error"]["code"].as_str();
        let unavailable = status == 503 && code == Some("store_unavailable");
        let injected = !ledger.injected.is_empty();
        let story = format!(
            "{status} {code:?}; store calls {:?}; made to fail {:?}; writes landed {:?}; refused by DynamoDB's rules {:?}; Anthropic writes {anthropic_writes}; body {}",
            ledger.calls,
            ledger.injected,
            ledger.writes,
            ledger.refused,
            short(&body.to_string(), 300)
        );
        if (200..300).contains(&status) {
            *self.ok_by_route.entry(case.route()).or_default() += 1;
        }
        if unavailable {
            *self.unavailable_by_route.entry(case.route()).or_default() += 1;
            if !injected && !ledger.refused.is_empty() {
                self.fail(case, "a client mistake reached the store, which refused it, and was answered as an outage (it must be a 4xx, refused before the store)", story.clone(), at);
            } else if !injected {
                self.fail(
                    case,
                    "503 store_unavailable, but no store call failed",
                    story.clone(),
                    at,
                );
            }
            let retry = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            if retry.is_none_or(|s| s == 0) {
                self.fail(
                    case,
                    "a 503 without a Retry-After in whole seconds",
                    story.clone(),
                    at,
                );
            }
            let says_nothing_written = body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nothing was written"));
            if HONEST_503 && says_nothing_written && !ledger.writes.is_empty() {
                self.fail(
                    case,
                    "a 503 says nothing was written, but writes landed",
                    story.clone(),
                    at,
                );
            }
        } else if status >= 500 {
            let rule = if !ledger.refused.is_empty() {
                "a client mistake reached the store, which refused it: a 5xx (it must be a 4xx, refused before the store)"
            } else if injected {
                "a store failure answered with a 5xx other than 503 store_unavailable"
            } else {
                "a 5xx with the store and Anthropic healthy"
            };
            self.fail(case, rule, story.clone(), at);
        }
        if injected && ledger.writes_before_fault == Some(0) && !unavailable {
            self.fail(case, "the store failed before anything was written, and the answer was not 503 store_unavailable", story.clone(), at);
        }
        if (400..500).contains(&status) && (!ledger.writes.is_empty() || anthropic_writes > 0) {
            self.fail(case, "a refusal wrote", story, at);
        }
    }

    fn merge(&mut self, other: Report) {
        self.requests += other.requests;
        self.faults += other.faults;
        self.refused_by_dynamo += other.refused_by_dynamo;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.ok_by_route {
            *self.ok_by_route.entry(k).or_default() += v;
        }
        for (k, v) in other.unavailable_by_route {
            *self.unavailable_by_route.entry(k).or_default() += v;
        }
        for (k, (n, first)) in other.failures {
            self.failures.entry(k).or_insert((0, first)).0 += n;
        }
    }

    /// Prints the figures; fails naming every broken rule once per route, with its first request.
    fn finish(self, what: &str, seed: u64, started: Instant) {
        println!(
            "{what}: {} requests (seed {seed}) in {:.1} s; statuses {:?}; {} with a store failure injected; {} store calls DynamoDB itself would have refused",
            self.requests,
            started.elapsed().as_secs_f64(),
            self.statuses,
            self.faults,
            self.refused_by_dynamo,
        );
        if self.failures.is_empty() {
            return;
        }
        let total: usize = self.failures.values().map(|(n, _)| n).sum();
        let mut text = String::new();
        for ((route, rule), (n, first)) in &self.failures {
            text.push_str(&format!(
                "\n- {route}: {rule} ({n}×); first:\n      {first}\n"
            ));
        }
        panic!(
            "{what}: {total} request(s) broke {} rule(s) on some route (CLARESIA_PROPERTY_SEED={seed} reproduces):{text}",
            self.failures.len()
        );
    }
}

fn property_seed() -> u64 {
    std::env::var("CLARESIA_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

fn requests_per_episode() -> usize {
    std::env::var("CLARESIA_PROPERTY_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(REQUESTS_PER_EPISODE)
}

/// Every junk value and every forged, garbage or misplaced cursor once, on every list (the random mix may
/// miss a rare one), as `acme`'s own token so that each reaches the code that judges it.
fn edge_cases(world: &World) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |list: &str, tenant: &str, query: String, note: String| {
        let template = format!("/tenants/{{tenant}}/{list}");
        let who = Who::Tenant(owner_of(tenant));
        let mut case = Case::plain(who, "GET", &template, tenant, None, &query, None);
        case.notes.push(note);
        cases.push(case);
    };
    let default = |list: &str| match list {
        "usage" => world.default_range.clone(),
        _ => String::new(),
    };
    for list in ["skills", "archetypes", "sub-tenants", "telemetry", "usage"] {
        let context = default(list);
        let mut cursors: Vec<(String, String)> = Vec::new();
        for c in forged_cursors(list, PARENT, &context) {
            cursors.push(("a forged position".to_owned(), c));
        }
        for c in garbage_cursors() {
            cursors.push(("garbage".to_owned(), c));
        }
        for c in &world.cursors {
            let its_own = c.list == list && c.tenant == PARENT && c.context == context;
            if !its_own {
                let note = format!("the {} cursor of {} ({:?})", c.list, c.tenant, c.context);
                cursors.push((note, c.cursor.clone()));
            }
        }
        for (note, cursor) in cursors {
            push(
                list,
                PARENT,
                format!("cursor={}", enc(&cursor)),
                format!("cursor: {note}"),
            );
        }
        let edges = ["1", "100", "101", "500", "501", "1000", "1001"];
        for limit in JUNK_LIMITS.iter().chain(edges.iter()) {
            push(
                list,
                PARENT,
                format!("limit={}", enc(limit)),
                format!("limit={limit:?}"),
            );
        }
    }
    for since in JUNK_SINCE.iter().chain([SINCE].iter()) {
        for tenant in [PARENT, SUB] {
            push(
                "telemetry",
                tenant,
                format!("since={}", enc(since)),
                format!("since={since:?}"),
            );
        }
    }
    for c in forged_cursors("telemetry", PARENT, SINCE) {
        let query = format!("since={}&cursor={}", enc(SINCE), enc(&c));
        push(
            "telemetry",
            PARENT,
            query,
            "a forged position after since".into(),
        );
    }
    for d in JUNK_DATES {
        for (query, note) in [
            (format!("from={}", enc(d)), format!("from={d:?}")),
            (format!("to={}", enc(d)), format!("to={d:?}")),
            (format!("from={0}&to={0}", enc(d)), format!("from=to={d:?}")),
        ] {
            push("usage", PARENT, query, note);
        }
    }
    let (from, to) = &world.explicit;
    for c in forged_cursors("usage", PARENT, &format!("{from}:{to}")) {
        let query = format!("from={from}&to={to}&cursor={}", enc(&c));
        push(
            "usage",
            PARENT,
            query,
            "a forged position of an explicit range".into(),
        );
    }
    cases
}

/// Generated requests, round-robin over every operation, in a world of their own; no failure injected.
/// After each, the world is put back (`World::after`), so a successful DELETE does not starve the rest.
async fn episode(n: usize, seed: u64, requests: usize) -> Report {
    let world = World::build().await;
    let faults = StoreFaults::new();
    let app = faulty_app(&world, &faults);
    let mut generator = Gen::new(seed, &world);
    let ops = &contract().operations;
    let mut report = Report::default();
    if n == 0 {
        for (i, case) in edge_cases(&world).iter().enumerate() {
            let (outcome, ledger, anthropic_writes) = run(&world, &app, &faults, case, None).await;
            let at = format!("edge case {i}");
            report.judge(case, &outcome, &ledger, anthropic_writes, &at);
        }
    }
    for i in 0..requests {
        // One in ten is the deepest valid request: success paths, between the refusals, in any order.
        let deep = generator.chance(0.1);
        let case = generator.case(&ops[i % ops.len()], deep);
        let (outcome, ledger, anthropic_writes) = run(&world, &app, &faults, &case, None).await;
        let at = format!("seed {seed}, episode {n}, request {i}");
        report.judge(&case, &outcome, &ledger, anthropic_writes, &at);
        world.after(&case, &outcome, &ledger, &mut report).await;
    }
    report
}

/// For each of `ops`: the deepest valid request and a few generated ones, each first without a failure
/// (to count its calls, N), then with the k-th call failing for every k in 1..=N, in both modes.
async fn sweep(lane: usize, seed: u64, ops: Vec<Operation>) -> Report {
    let world = World::build().await;
    let faults = StoreFaults::new();
    let app = faulty_app(&world, &faults);
    let mut generator = Gen::new(seed, &world);
    let mut report = Report::default();
    for op in &ops {
        let mut cases = vec![generator.case(op, true)];
        for _ in 0..SWEEP_GENERATED_PER_ROUTE {
            cases.push(generator.case(op, false));
        }
        for (c, case) in cases.iter().enumerate() {
            let at =
                |what: String| format!("seed {seed}, lane {lane}, {} case {c}, {what}", op.key());
            let (outcome, ledger, writes) = run(&world, &app, &faults, case, None).await;
            report.judge(case, &outcome, &ledger, writes, &at("no failure".into()));
            let calls = (ledger.calls.len() as u32).min(MAX_K);
            world.after(case, &outcome, &ledger, &mut report).await;
            for mode in [Mode::Blip, Mode::Down] {
                for k in 1..=calls {
                    let kind = FaultKind::nth(k);
                    let (outcome, ledger, writes) =
                        run(&world, &app, &faults, case, Some((mode, k, kind))).await;
                    let what = format!("{mode:?} at call {k} of {calls} ({kind:?})");
                    report.judge(case, &outcome, &ledger, writes, &at(what));
                    world.after(case, &outcome, &ledger, &mut report).await;
                }
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------------------

/// The DynamoDB rules the failing store applies where moto does not, on the query shapes this codebase
/// sends: the usage range (`BETWEEN`), the telemetry feed (`>=`), the catalog lists (`begins_with`).
#[test]
fn dynamodb_refuses_a_start_key_outside_the_query_where_moto_does_not() {
    let usage = |key: &str, uid: &str| {
        json!({
            "TableName": "t", "IndexName": "by_tenant",
            "KeyConditionExpression": "#t = :t AND #k BETWEEN :from AND :to",
            "ExpressionAttributeNames": {"#t": "tenant", "#k": "event_key"},
            "ExpressionAttributeValues": {":t": {"S": "usage:acme"}, ":from": {"S": "2026-01-01"}, ":to": {"S": "2026-01-31$"}},
            "ExclusiveStartKey": {"tenant": {"S": "usage:acme"}, "event_key": {"S": key}, "event_uid": {"S": uid}},
        })
        .to_string()
    };
    let refuse = |body: String| dynamo_would_refuse("Query", body.as_bytes());
    assert_eq!(
        refuse(usage("2026-01-10#s#g", "usage#acme#s#2026-01-10#g")),
        None
    );
    assert_eq!(
        refuse(usage("2026-01-31$", "x")),
        None,
        "the range's own end"
    );
    for key in ["0000-00-00#x", "2025-12-31#x", "2026-01-31%", "9999"] {
        let why = refuse(usage(key, "x")).unwrap_or_else(|| panic!("{key}"));
        assert!(why.contains("outside query boundaries"), "{why}");
    }
    assert!(refuse(usage("2026-01-10#s#g", ""))
        .unwrap()
        .contains("empty string"));
    let feed = |key: &str| {
        json!({
            "KeyConditionExpression": "#t = :t AND #k >= :s",
            "ExpressionAttributeNames": {"#t": "tenant", "#k": "event_key"},
            "ExpressionAttributeValues": {":t": {"S": "acme"}, ":s": {"S": "2026-01-03T00:00:00.000Z"}},
            "ExclusiveStartKey": {"tenant": {"S": "acme"}, "event_key": {"S": key}, "event_uid": {"S": "org#e"}},
        })
        .to_string()
    };
    assert_eq!(refuse(feed("2026-01-04T00:00:00.000Z#e")), None);
    assert!(refuse(feed("2026-01-02T00:00:00.000Z#e")).is_some());
    let list = |pk: &str, sk: &str| {
        json!({
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :p)",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": {":pk": {"S": "TENANT#acme"}, ":p": {"S": "SKILL#"}},
            "ExclusiveStartKey": {"pk": {"S": pk}, "sk": {"S": sk}},
        })
        .to_string()
    };
    assert_eq!(refuse(list("TENANT#acme", "SKILL#zzzz")), None);
    assert!(refuse(list("TENANT#acme", "ARCHETYPE#x")).is_some());
    assert!(refuse(list("TENANT#globex", "SKILL#x")).is_some());
    assert_eq!(
        dynamo_would_refuse("GetItem", list("TENANT#globex", "x").as_bytes()),
        None
    );
}

/// The failing store itself: it counts every call of both services, fails exactly the k-th (Blip) or
/// every call from the k-th on (Down), each way a service fails — and each is already a 503 where the
/// code maps the first read today — and it sees the writes that land, not the reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_store_fails_the_kth_call_the_way_the_services_fail_and_sees_every_write() {
    let world = World::build().await;
    let faults = StoreFaults::new();
    let app = faulty_app(&world, &faults);
    let as_parent = || Who::Tenant(PARENT.to_owned());
    let list = Case::plain(
        as_parent(),
        "GET",
        "/tenants/{tenant}/skills",
        PARENT,
        None,
        "",
        None,
    );

    let (outcome, ledger, _) = run(&world, &app, &faults, &list, None).await;
    assert_eq!(outcome.status(), Some(200), "{outcome:?}");
    assert!(ledger.calls.len() >= 2, "{ledger:?}");
    assert!(
        ledger.writes.is_empty() && ledger.injected.is_empty(),
        "{ledger:?}"
    );
    let calls = ledger.calls.len();

    // The first call (is the path's tenant a sub-tenant?) is already answered 503 when it fails.
    for kind in FaultKind::ALL {
        let (outcome, ledger, _) =
            run(&world, &app, &faults, &list, Some((Mode::Blip, 1, kind))).await;
        assert_eq!(ledger.injected.len(), 1, "{kind:?}: {ledger:?}");
        assert_eq!(ledger.injected[0], (1, ledger.calls[0].clone()), "{kind:?}");
        let Outcome::Answered {
            status,
            headers,
            body,
        } = &outcome
        else {
            panic!("{kind:?}: the handler panicked: {outcome:?}");
        };
        assert_eq!(
            (*status, body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "{kind:?}: {body}"
        );
        assert_eq!(headers["retry-after"], "5");
    }
    // Blip fails only its call; Down every call from it on.
    let (_, ledger, _) = run(
        &world,
        &app,
        &faults,
        &list,
        Some((Mode::Blip, 2, FaultKind::Throttled)),
    )
    .await;
    assert_eq!(ledger.injected.len(), 1, "{ledger:?}");
    assert_eq!(ledger.injected[0].0, 2);
    let (_, ledger, _) = run(
        &world,
        &app,
        &faults,
        &list,
        Some((Mode::Down, 2, FaultKind::ServerError)),
    )
    .await;
    assert_eq!(ledger.injected.len(), ledger.calls.len() - 1, "{ledger:?}");
    // Past the request's last call: nothing fails.
    let (outcome, ledger, _) = run(
        &world,
        &app,
        &faults,
        &list,
        Some((Mode::Down, calls as u32 + 1, FaultKind::Throttled)),
    )
    .await;
    assert!(ledger.injected.is_empty(), "{ledger:?}");
    assert_eq!(outcome.status(), Some(200));

    // Writes that land are seen; Secrets Manager calls are counted with DynamoDB's.
    let doc = example("skill-standup-notes.json").to_string();
    let put = Case::plain(
        as_parent(),
        "PUT",
        "/tenants/{tenant}/skills/{skill_id}",
        PARENT,
        Some("standup-notes"),
        "",
        Some(doc),
    );
    let (outcome, ledger, _) = run(&world, &app, &faults, &put, None).await;
    assert_eq!(outcome.status(), Some(200), "{outcome:?}");
    assert!(ledger.writes.contains(&"PutItem"), "{ledger:?}");
    let test = Case::plain(
        as_parent(),
        "POST",
        "/tenants/{tenant}/connection/test",
        PARENT,
        None,
        "",
        None,
    );
    let (outcome, ledger, _) = run(&world, &app, &faults, &test, None).await;
    assert_eq!(outcome.status(), Some(200), "{outcome:?}");
    assert!(
        ledger.calls.iter().any(|c| c == "GetSecretValue"),
        "{ledger:?}"
    );
}

/// Generated requests on every route, no failure injected: client mistakes are 4xx (never a 5xx, never a
/// panic), every answer is the documented one, and a refusal writes nothing — no item, no secret, no
/// Anthropic write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_on_every_route_get_4xx_for_client_mistakes_and_refusals_write_nothing()
{
    let started = Instant::now();
    let seed = property_seed();
    let requests = requests_per_episode();
    // Two worlds at a time: moto is one process, and the sweep runs beside this test.
    let limit = Arc::new(tokio::sync::Semaphore::new(2));
    let mut jobs = tokio::task::JoinSet::new();
    for n in 0..EPISODES {
        let limit = Arc::clone(&limit);
        jobs.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            episode(n, seed.wrapping_add(n as u64), requests).await
        });
    }
    let mut report = Report::default();
    while let Some(done) = jobs.join_next().await {
        report.merge(done.unwrap());
    }
    // Not vacuous: every operation was answered 2xx at least once (and the refusals are most of the rest).
    let never_ok: Vec<String> = contract()
        .operations
        .iter()
        .map(Operation::key)
        .filter(|k| !report.ok_by_route.contains_key(k))
        .collect();
    report.finish("generated requests", seed, started);
    assert!(
        never_ok.is_empty(),
        "never answered 2xx (the generator or the world drifted): {never_ok:?}"
    );
}

/// The store failing at every call every route makes — only that call, or it and all later ones; a
/// throttle, a 500, an unreachable endpoint — on the deepest valid request and on generated ones: the only
/// 5xx is 503 store_unavailable with a Retry-After, a failure before the first write is exactly that, and a
/// refusal still writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_at_any_call_of_any_route_is_a_503_store_unavailable_never_a_500() {
    let started = Instant::now();
    let seed = property_seed();
    let ops = contract().operations.clone();
    let mut jobs = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let mine: Vec<Operation> = ops.iter().skip(lane).step_by(LANES).cloned().collect();
        jobs.spawn(sweep(lane, seed ^ 0x5eed, mine));
    }
    let mut report = Report::default();
    while let Some(done) = jobs.join_next().await {
        report.merge(done.unwrap());
    }
    // Not vacuous: on every route some injected failure came back as the 503.
    let never: Vec<String> = ops
        .iter()
        .map(Operation::key)
        .filter(|k| !report.unavailable_by_route.contains_key(k))
        .collect();
    let faults = report.faults;
    report.finish("store failing at every call", seed, started);
    assert!(
        never.is_empty(),
        "no failure ever answered 503 store_unavailable on {never:?}"
    );
    assert!(
        faults >= ops.len() * 4,
        "only {faults} requests had a failure injected"
    );
}
