//! The integration-test harness: one moto per test binary (started here, failing loudly if it cannot),
//! a fresh stage (tables and secret names) and a fresh Anthropic simulator per test, and the real
//! `App::handle` fed API Gateway v2 requests.

use std::sync::Arc;
use std::time::Duration;

use anthropic_sim::{demo, Sim, SimServer};
use aws_config::SdkConfig;
use claresia_api::{App, Config};
use claresia_local::{gateway, moto::Moto, sdk_config, tables};
use rand::Rng;
use serde_json::{json, Value};

pub use anthropic_sim::demo::*;

pub mod contract;
pub mod enterprise;
pub mod fanout;

/// A response as the client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: http::HeaderMap,
}

impl Answer {
    /// A response header as text (panics if absent, naming it).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?} {}", self.headers, self.body))
    }
}

/// A crash as the store sees it, injected from outside the production code: an SDK interceptor on the
/// app's DynamoDB client that, once armed with `n`, lets `n` more writes through and fails every write
/// after them before it is sent — whatever the function does next (error handling, status, lease
/// release), nothing more of it lands, as when the process stops dead.
#[derive(Debug, Clone, Default)]
pub struct StoreCutoff(Arc<std::sync::Mutex<Cutoff>>);

#[derive(Debug, Default)]
struct Cutoff {
    /// Writes still allowed; `None`: not armed.
    left: Option<u64>,
    tripped: bool,
}

impl StoreCutoff {
    /// Lets `writes` more writes through, then cuts the store off.
    pub fn arm(&self, writes: u64) {
        *self.0.lock().unwrap() = Cutoff {
            left: Some(writes),
            tripped: false,
        };
    }

    /// Back to normal; answers whether the cut happened (a write was refused) since `arm`.
    pub fn disarm(&self) -> bool {
        std::mem::take(&mut *self.0.lock().unwrap()).tripped
    }
}

impl aws_sdk_dynamodb::config::Intercept for StoreCutoff {
    fn name(&self) -> &'static str {
        "StoreCutoff"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<
            '_,
        >,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use aws_sdk_dynamodb::operation::{
            batch_write_item::BatchWriteItemInput, delete_item::DeleteItemInput,
            put_item::PutItemInput, transact_write_items::TransactWriteItemsInput,
            update_item::UpdateItemInput,
        };
        let input = context.input();
        let write = input.downcast_ref::<PutItemInput>().is_some()
            || input.downcast_ref::<UpdateItemInput>().is_some()
            || input.downcast_ref::<DeleteItemInput>().is_some()
            || input.downcast_ref::<BatchWriteItemInput>().is_some()
            || input.downcast_ref::<TransactWriteItemsInput>().is_some();
        let mut c = self.0.lock().unwrap();
        match c.left {
            Some(0) if write => {
                c.tripped = true;
                Err("the function died here (StoreCutoff)".into())
            }
            Some(n) if write => {
                c.left = Some(n - 1);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The API Gateway (payload v2) request a caller `who` sends.
pub fn request(
    who: As<'_>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> lambda_http::Request {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://api.example.com{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (parts, ()) = req.body(()).unwrap().into_parts();
    let claims = match who {
        As::Tenant(t) => json!({"sub": "user-1", "claresia:tenant": t}),
        As::Operator => json!({"sub": "op-1", "claresia:role": "operator"}),
        As::Anonymous => json!({}),
        As::Claims(c) => c.clone(),
    };
    let req = gateway::to_lambda_request(
        parts,
        body.unwrap_or_default().as_bytes().to_vec(),
        claims.as_object().cloned().unwrap(),
    );
    if matches!(who, As::Anonymous) {
        // No authorizer at all, as when a route is misconfigured without one.
        strip_authorizer(req)
    } else {
        req
    }
}

/// Hands `req` to `app` and checks the answer against the OpenAPI document.
pub async fn answer(app: &App, req: lambda_http::Request, method: &str, path: &str) -> Answer {
    let path = path.split('?').next().unwrap_or(path).to_owned();
    let resp = app.handle(req).await;
    let status = resp.status().as_u16();
    let text = match resp.body() {
        lambda_http::Body::Text(t) => t.clone(),
        lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let headers = resp.headers().clone();
    if let Err(e) = contract::contract().check(method, &path, status, &headers, &body) {
        panic!("the response disagrees with lib/api/openapi.yaml: {e}");
    }
    Answer {
        status,
        body,
        headers,
    }
}

pub struct TestEnv {
    pub sim: SimServer,
    pub app: Arc<App>,
    /// Cuts the app off DynamoDB after a chosen number of writes (a crash, as the store sees it).
    pub cutoff: StoreCutoff,
    pub sdk: SdkConfig,
    pub stage: String,
    pub http: reqwest::Client,
    /// What the app (and a fan-out's dispatcher) emitted as CloudWatch metrics.
    pub metrics: fanout::CollectedMetrics,
}

/// Who the request claims to be (the JWT claims API Gateway verified).
#[derive(Clone, Copy)]
pub enum As<'a> {
    Tenant(&'a str),
    Operator,
    Anonymous,
    /// Exactly these claims (e.g. an empty or non-string `claresia:tenant`).
    Claims(&'a Value),
}

impl TestEnv {
    /// moto (shared by the test binary) + tables for a fresh stage + a seeded simulator + the app.
    pub async fn start() -> TestEnv {
        TestEnv::start_with(|_| {}).await
    }

    /// Like `start`, with the app's configuration adjusted first (benchmarks tune concurrency).
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestEnv {
        let motos = Moto::pool().unwrap_or_else(|e| panic!("moto is required for this test: {e}"));
        // Round-robin over the binary's motos; the stage keeps each test's tables its own in any of them.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let moto = &motos[NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % motos.len()];
        let stage = format!("t{:08x}", rand::thread_rng().gen::<u32>());
        let sdk = sdk_config(moto.endpoint()).await;
        let names = tables::create_all(&aws_sdk_dynamodb::Client::new(&sdk), &stage)
            .await
            .expect("create tables in moto");
        let sim = Sim::new();
        demo::seed(&sim);
        let sim = SimServer::start("127.0.0.1:0".parse().unwrap(), sim)
            .await
            .expect("start simulator");
        let mut config =
            Config::from_lookup(|k| (k == "STAGE").then(|| stage.clone())).expect("config");
        config.hub_table = names["HubTable"].clone();
        config.telemetry_table = names["TelemetryTable"].clone();
        config.anthropic_base_url = sim.base_url();
        config.request_budget = Duration::from_secs(20);
        tune(&mut config);
        let cutoff = StoreCutoff::default();
        let dynamo = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(cutoff.clone())
                .build(),
        );
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let mut app = App::with_clients(config, dynamo, secrets).expect("app");
        let metrics = fanout::CollectedMetrics::default();
        app.metrics = claresia_api::metrics::Metrics::new(stage.clone(), Arc::new(metrics.clone()));
        TestEnv {
            sim,
            app: Arc::new(app),
            cutoff,
            sdk,
            stage,
            http: reqwest::Client::new(),
            metrics,
        }
    }

    /// A new simulated Anthropic org (zero retention on) and a key of it: (org id, key).
    pub async fn sim_org(&self, name: &str) -> (String, String) {
        let org = self
            .sim_send(
                "POST",
                "/_sim/orgs",
                json!({"name": name, "zero_retention": true}),
            )
            .await;
        let org_id = org["id"].as_str().unwrap().to_owned();
        let key = self
            .sim_send("POST", &format!("/_sim/orgs/{org_id}/keys"), json!({}))
            .await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        (org_id, key)
    }

    /// Lets a crashed run's publish lease on `hub` lapse, as time would (a sweep skips a held lease and
    /// tries again the next minute; tests do not wait that minute).
    pub async fn lapse_publish_lease(&self, hub: &str) {
        let res = self
            .dynamo()
            .update_item()
            .table_name(&self.app.config.hub_table)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("TENANT#{hub}")),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("PUBLISH_LEASE".into()),
            )
            .update_expression("SET lease_until = :zero")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":zero",
                aws_sdk_dynamodb::types::AttributeValue::N("0".into()),
            )
            .send()
            .await;
        if let Err(e) = res {
            let lapsed = e
                .as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception());
            assert!(lapsed, "lapse the publish lease: {e:?}");
        }
    }

    /// Sends a request through the real handler, as API Gateway would deliver it.
    pub async fn call(
        &self,
        who: As<'_>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let a = self.send(who, method, path, body, &[]).await;
        (a.status, a.body)
    }

    /// Like [`TestEnv::call`], with request headers, answering the response headers too. Every answer is
    /// checked against the API's OpenAPI document (see [`contract`]).
    pub async fn send(
        &self,
        who: As<'_>,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let req = request(who, method, path, body, headers);
        answer(&self.app, req, method, path).await
    }

    pub async fn connect(&self, tenant: &str, key: &str) -> (u16, Value) {
        let body = json!({"admin_api_key": key}).to_string();
        self.call(
            As::Tenant(tenant),
            "PUT",
            &format!("/tenants/{tenant}/connection"),
            Some(&body),
        )
        .await
    }

    /// PUTs a JSON document as tenant `tenant` (path relative to `/tenants/{tenant}`).
    pub async fn put_doc(&self, tenant: &str, rel: &str, doc: &Value) -> (u16, Value) {
        self.call(
            As::Tenant(tenant),
            "PUT",
            &format!("/tenants/{tenant}{rel}"),
            Some(&doc.to_string()),
        )
        .await
    }

    /// Registers `sub` as a sub-tenant of `parent` (with the parent's token), asserting it worked.
    pub async fn register_sub_tenant(&self, parent: &str, sub: &str) {
        let (s, b) = self
            .call(
                As::Tenant(parent),
                "PUT",
                &format!("/tenants/{parent}/sub-tenants/{sub}"),
                None,
            )
            .await;
        assert!(matches!(s, 200 | 201), "{s}: {b}");
    }

    /// Loads the product page's catalog (three skills, two archetypes) for `tenant`.
    pub async fn load_examples(&self, tenant: &str) {
        self.put_example_skills(tenant).await;
        for a in ["engineer", "product-manager"] {
            let (s, b) = self
                .put_doc(
                    tenant,
                    &format!("/archetypes/{a}"),
                    &example(&format!("archetype-{a}.json")),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    }

    /// `n` copies of an example skill (`bench-skill-0000`, …) written straight into `hub`'s catalog (a
    /// benchmark measures publishing, not n catalog calls); answers their ids.
    pub async fn put_bench_skills(
        &self,
        hub: &claresia_domain::TenantSlug,
        n: usize,
    ) -> Vec<String> {
        let base = example("skill-incident-postmortem.json");
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("bench-skill-{i:04}");
            let mut doc = base.clone();
            doc["id"] = json!(id);
            doc["title"] = json!(format!("Bench skill {i}"));
            self.app
                .hub
                .put_skill(hub, &id, &doc, &claresia_aws::Expect::Any)
                .await
                .expect("bench skill");
            ids.push(id);
        }
        ids
    }

    /// The simulator's skills of the Dainese org.
    pub async fn sim_skills(&self) -> Vec<Value> {
        let state = self.sim_get("/_sim/state").await;
        state["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == DAINESE_ORG_ID)
            .unwrap()["skills"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Writes (non-GET requests) the simulator has taken on skill routes so far.
    pub async fn sim_skill_writes(&self) -> u64 {
        let state = self.sim_get("/_sim/state").await;
        state["routes"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(route, _)| route.contains("/skills"))
            .map(|(_, c)| c["writes"].as_u64().unwrap_or(0))
            .sum()
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn sim_send(&self, method: &str, path: &str, body: Value) -> Value {
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

    /// Requests the simulator received on the real API (not the controls).
    pub async fn sim_requests(&self) -> Vec<Value> {
        self.sim_get("/_sim/requests").await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
    }

    pub fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    pub fn secret_name(&self, tenant: &str) -> String {
        format!(
            "claresia/{}/tenants/{tenant}/anthropic-admin-key",
            self.stage
        )
    }

    /// The tenant's current secret value, or `None` if there is none (or it is scheduled for deletion).
    pub async fn secret_value(&self, tenant: &str) -> Option<String> {
        self.secrets()
            .get_secret_value()
            .secret_id(self.secret_name(tenant))
            .send()
            .await
            .ok()
            .and_then(|o| o.secret_string)
    }

    /// Every item of the hub table, as JSON text (to search for things that must not be there).
    pub async fn hub_dump(&self) -> String {
        let out = self
            .dynamo()
            .scan()
            .table_name(&self.app.config.hub_table)
            .send()
            .await
            .unwrap();
        format!("{:?}", out.items.unwrap_or_default())
    }
}

/// Everything a request could have changed: every item of both tables, every secret of the stage with its
/// versions and deletion date, and how many requests the simulator's real API took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub hub: std::collections::BTreeSet<String>,
    pub telemetry: std::collections::BTreeSet<String>,
    pub secrets: std::collections::BTreeMap<String, String>,
    pub anthropic_requests: usize,
}

impl Footprint {
    /// What changed between `self` (before) and `after`, or `None`: readable when a refusal wrote something.
    pub fn changes(&self, after: &Footprint) -> Option<String> {
        let mut out = Vec::new();
        for (what, a, b) in [
            ("hub", &self.hub, &after.hub),
            ("telemetry", &self.telemetry, &after.telemetry),
        ] {
            out.extend(b.difference(a).map(|i| format!("{what} item written: {i}")));
            out.extend(a.difference(b).map(|i| format!("{what} item removed: {i}")));
        }
        if self.secrets != after.secrets {
            out.push(format!(
                "secrets: {:?} -> {:?}",
                self.secrets, after.secrets
            ));
        }
        if self.anthropic_requests != after.anthropic_requests {
            out.push(format!(
                "Anthropic requests: {} -> {}",
                self.anthropic_requests, after.anthropic_requests
            ));
        }
        (!out.is_empty()).then(|| out.join("\n"))
    }
}

/// An attribute value as text with map keys sorted, so equal items print equally.
fn canonical(v: &aws_sdk_dynamodb::types::AttributeValue) -> String {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::M(m) => {
            let sorted: std::collections::BTreeMap<_, _> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            format!("{sorted:?}")
        }
        A::L(l) => format!("{:?}", l.iter().map(canonical).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

/// Asserts that nothing changed between two footprints, naming what did.
#[track_caller]
pub fn assert_unchanged(before: &Footprint, after: &Footprint, context: &str) {
    if let Some(changes) = before.changes(after) {
        panic!("{context}: a refused request changed something:\n{changes}");
    }
}

impl TestEnv {
    pub async fn footprint(&self) -> Footprint {
        Footprint {
            hub: self.items(&self.app.config.hub_table).await,
            telemetry: self.items(&self.app.config.telemetry_table).await,
            secrets: self.stage_secrets().await,
            anthropic_requests: self.sim_requests().await.len(),
        }
    }

    async fn items(&self, table: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo()
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            for item in page.items.unwrap_or_default() {
                out.insert(canonical(&aws_sdk_dynamodb::types::AttributeValue::M(item)));
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }

    async fn stage_secrets(&self) -> std::collections::BTreeMap<String, String> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let prefix = format!("claresia/{}/", self.stage);
        let list = self
            .secrets()
            .list_secrets()
            .include_planned_deletion(true)
            .filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(&prefix)
                    .build(),
            )
            .send()
            .await
            .expect("list secrets");
        let mut out = std::collections::BTreeMap::new();
        for s in list.secret_list() {
            let name = s.name().unwrap_or_default().to_owned();
            if !name.starts_with(&prefix) {
                continue;
            }
            let versions = self
                .secrets()
                .list_secret_version_ids()
                .secret_id(&name)
                .include_deprecated(true)
                .send()
                .await
                .expect("list versions");
            let mut ids: Vec<String> = versions
                .versions()
                .iter()
                .map(|v| {
                    format!(
                        "{}{:?}",
                        v.version_id().unwrap_or_default(),
                        v.version_stages()
                    )
                })
                .collect();
            ids.sort();
            out.insert(name, format!("{ids:?} deleted={:?}", s.deleted_date()));
        }
        out
    }
}

/// A document from `lib/domain/tests/fixtures/examples` (the spec's example catalog).
pub fn example(name: &str) -> Value {
    let path = claresia_local::workspace_root()
        .join("lib/domain/tests/fixtures/examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strip_authorizer(req: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let ctx = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => {
            let mut c = c.clone();
            c.authorizer = None;
            c
        }
        _ => return req,
    };
    req.with_request_context(RequestContext::ApiGatewayV2(ctx))
}
