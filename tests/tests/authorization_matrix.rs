//! The authorization matrix: every route in template.yaml × every kind of caller × every kind of target,
//! through the real handler against moto and the simulator. The expected answer of each cell comes from
//! the README's permission table, written out here independently of `claresia_api::auth`. Every refusal
//! (and every read) is proven to have changed nothing: no DynamoDB item, no secret, no Anthropic request.
//! A cell whose request is allowed to write runs in a world of its own, so cells never see each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use claresia_local::tables::TEMPLATE;
use claresia_tests::*;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const PARENT: &str = "acme";
const SUB: &str = "acme-eng";
const SIBLING: &str = "acme-ops";
const UNRELATED: &str = "globex";
const OFFBOARDED: &str = "initech";
/// Shaped like a sub-tenant of `acme`, but nobody registered it.
const UNREGISTERED: &str = "acme-ghost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    OwnTenant,
    Parent,
    SubTenant,
    SiblingSubTenant,
    UnrelatedTenant,
    Operator,
    NoClaims,
    EmptyTenantClaim,
    NonStringTenantClaim,
}

const CALLERS: [Caller; 9] = [
    Caller::OwnTenant,
    Caller::Parent,
    Caller::SubTenant,
    Caller::SiblingSubTenant,
    Caller::UnrelatedTenant,
    Caller::Operator,
    Caller::NoClaims,
    Caller::EmptyTenantClaim,
    Caller::NonStringTenantClaim,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Tenant,
    ItsSubTenant,
    UnrelatedTenant,
    OffboardedTenant,
    UnregisteredSlug,
}

const TARGETS: [Target; 5] = [
    Target::Tenant,
    Target::ItsSubTenant,
    Target::UnrelatedTenant,
    Target::OffboardedTenant,
    Target::UnregisteredSlug,
];

impl Target {
    fn slug(self) -> &'static str {
        match self {
            Target::Tenant => PARENT,
            Target::ItsSubTenant => SUB,
            Target::UnrelatedTenant => UNRELATED,
            Target::OffboardedTenant => OFFBOARDED,
            Target::UnregisteredSlug => UNREGISTERED,
        }
    }

    fn index(self) -> usize {
        TARGETS.iter().position(|t| *t == self).unwrap()
    }
}

impl Caller {
    /// The verified claims; `None` for a request API Gateway passed with no authorizer context.
    fn claims(self, target: Target) -> Option<Value> {
        let tenant = |t: &str| json!({"sub": "user-1", "claresia:tenant": t});
        Some(match self {
            Caller::OwnTenant => tenant(target.slug()),
            Caller::Parent => tenant(PARENT),
            Caller::SubTenant => tenant(SUB),
            Caller::SiblingSubTenant => tenant(SIBLING),
            Caller::UnrelatedTenant => tenant(UNRELATED),
            Caller::Operator => json!({"sub": "op-1", "claresia:role": "operator"}),
            Caller::NoClaims => return None,
            Caller::EmptyTenantClaim => json!({"sub": "user-1", "claresia:tenant": ""}),
            Caller::NonStringTenantClaim => json!({"sub": "user-1", "claresia:tenant": [PARENT]}),
        })
    }
}

/// A route as template.yaml declares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
}

impl Route {
    fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn is_connection(&self) -> bool {
        self.path.contains("/connection")
    }

    fn is_sub_tenant_registry(&self) -> bool {
        self.path.contains("/sub-tenants")
    }

    /// What a sub-tenant's own token may call: its status, its telemetry and its usage.
    fn open_to_sub_tenant_token(&self) -> bool {
        self.method == "GET"
            && (self.path.ends_with("/connection")
                || self.path.ends_with("/telemetry")
                || self.path.ends_with("/usage"))
    }

    /// The concrete request for `target`.
    fn request(&self, target: Target) -> (String, Option<String>) {
        let slug = target.slug();
        let sub = match self.method.as_str() {
            "PUT" => format!("{slug}-new"),
            "DELETE" => format!("{slug}-ops"),
            _ => format!("{slug}-eng"),
        };
        let path = self
            .path
            .replace("{tenant}", slug)
            .replace("{skill_id}", "standup-notes")
            .replace("{archetype}", "eng")
            .replace("{sub_tenant}", &sub);
        assert!(
            !path.contains('{'),
            "no value for a parameter of {}",
            self.key()
        );
        let key = match target {
            Target::Tenant | Target::ItsSubTenant => GOOD_KEY,
            Target::UnrelatedTenant => ROTATED_KEY,
            Target::OffboardedTenant => NO_ZR_KEY,
            Target::UnregisteredSlug => UNKNOWN_ZR_KEY,
        };
        let body = match (self.method.as_str(), self.path.rsplit('/').next().unwrap()) {
            ("PUT", "connection") => Some(json!({"admin_api_key": key})),
            ("PUT", "{skill_id}") => Some(example("skill-standup-notes.json")),
            ("PUT", "{archetype}") => {
                Some(json!({"skills": ["standup-notes"], "group_ids": ["grp_engineering"]}))
            }
            ("PUT", "workspaces") => {
                Some(json!({"mappings": [{"workspace_id": WS_CORPORATE, "sub_tenant": null}]}))
            }
            _ => None,
        };
        (path, body.map(|b| b.to_string()))
    }
}

fn template_routes() -> Vec<Route> {
    let doc: serde_norway::Value = serde_norway::from_str(TEMPLATE).unwrap();
    let mut routes = Vec::new();
    for resource in doc["Resources"].as_mapping().unwrap().values() {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for e in events.values() {
            if e["Type"].as_str() == Some("HttpApi") {
                routes.push(Route {
                    method: e["Properties"]["Method"].as_str().unwrap().to_owned(),
                    path: e["Properties"]["Path"].as_str().unwrap().to_owned(),
                });
            }
        }
    }
    routes.sort();
    routes
}

/// What an authorized caller gets, per target in `TARGETS` order (201: the call created the resource) (the sub-tenant's connection and registry
/// routes are decided by the permission table, so they have no entry here). A route missing from this
/// table fails the test: a new route needs its row.
fn allowed_status(route: &Route, target: Target) -> u16 {
    let row: [u16; 5] = match route.key().as_str() {
        "GET /tenants/{tenant}/connection" => [200; 5],
        "PUT /tenants/{tenant}/connection" => [200, 0, 200, 201, 201],
        "DELETE /tenants/{tenant}/connection" => [200, 0, 200, 200, 404],
        "POST /tenants/{tenant}/connection/test" => [200, 0, 200, 404, 404],
        "GET /tenants/{tenant}/skills" => [200; 5],
        "GET /tenants/{tenant}/skills/{skill_id}" => [200, 200, 200, 404, 404],
        "PUT /tenants/{tenant}/skills/{skill_id}" => [200, 200, 200, 201, 201],
        "DELETE /tenants/{tenant}/skills/{skill_id}" => [200, 200, 200, 404, 404],
        "GET /tenants/{tenant}/archetypes" => [200; 5],
        "GET /tenants/{tenant}/archetypes/{archetype}" => [200, 200, 200, 404, 404],
        "PUT /tenants/{tenant}/archetypes/{archetype}" => [200, 200, 200, 400, 400],
        "DELETE /tenants/{tenant}/archetypes/{archetype}" => [200, 200, 200, 404, 404],
        "GET /tenants/{tenant}/workspaces" => [200; 5],
        "PUT /tenants/{tenant}/workspaces" => [200, 200, 200, 404, 404],
        "POST /tenants/{tenant}/republish" => [200, 200, 200, 409, 409],
        "GET /tenants/{tenant}/telemetry" => [200; 5],
        "GET /tenants/{tenant}/usage" => [200; 5],
        "GET /tenants/{tenant}/sub-tenants" => [200, 0, 200, 200, 200],
        "GET /tenants/{tenant}/sub-tenants/{sub_tenant}" => [200, 0, 404, 404, 404],
        "PUT /tenants/{tenant}/sub-tenants/{sub_tenant}" => [201, 0, 201, 201, 201],
        "DELETE /tenants/{tenant}/sub-tenants/{sub_tenant}" => [200, 0, 404, 404, 404],
        other => panic!("the matrix has no expectations for {other}: add its row"),
    };
    row[target.index()]
}

/// The README's permission table.
fn expected(route: &Route, caller: Caller, target: Target) -> (u16, Option<&'static str>) {
    let forbidden = (403, Some("forbidden"));
    let claim = match caller {
        Caller::NoClaims => return (401, Some("unauthenticated")),
        Caller::EmptyTenantClaim | Caller::NonStringTenantClaim => return forbidden,
        Caller::Operator => None,
        other => other.claims(target).unwrap()["claresia:tenant"]
            .as_str()
            .map(str::to_owned),
    };
    let own = claim.as_deref() == Some(target.slug());
    let allowed = match (claim.as_deref(), target) {
        (None, _) => true,
        (Some(SUB), Target::ItsSubTenant) => route.open_to_sub_tenant_token(),
        (Some(PARENT), Target::ItsSubTenant) => true,
        _ => own,
    };
    if !allowed {
        return forbidden;
    }
    if target == Target::ItsSubTenant && !own {
        if route.is_connection() && route.method != "GET" {
            return (409, Some("sub_tenant_shares_connection"));
        }
        if route.is_sub_tenant_registry() {
            return (409, Some("nested_sub_tenant"));
        }
    }
    (allowed_status(route, target), None)
}

/// Every target in place: `acme` connected with a catalog and two registered sub-tenants (one mapped and
/// granted an archetype), `globex` connected with its own catalog, `initech` offboarded, `acme-ghost`
/// nothing at all.
async fn world() -> TestEnv {
    let env = TestEnv::start().await;
    let ok = |(s, b): (u16, Value)| assert!(matches!(s, 200 | 201), "{s}: {b}");
    for (tenant, key) in [(PARENT, GOOD_KEY), (UNRELATED, ROTATED_KEY)] {
        ok(env.connect(tenant, key).await);
        ok(env
            .put_doc(
                tenant,
                "/skills/standup-notes",
                &example("skill-standup-notes.json"),
            )
            .await);
        ok(env
            .put_doc(
                tenant,
                "/archetypes/eng",
                &json!({"skills": ["standup-notes"], "group_ids": ["grp_engineering"]}),
            )
            .await);
    }
    env.register_sub_tenant(PARENT, SUB).await;
    env.register_sub_tenant(PARENT, SIBLING).await;
    ok(env
        .put_doc(
            PARENT,
            "/archetypes/eng-oncall",
            &json!({"skills": ["standup-notes"], "sub_tenant": SUB}),
        )
        .await);
    ok(env
        .put_doc(
            PARENT,
            "/workspaces",
            &json!({"mappings": [{"workspace_id": WS_ENGINEERING, "sub_tenant": SUB}]}),
        )
        .await);
    ok(env.connect(OFFBOARDED, NO_ZR_KEY).await);
    ok(env
        .call(
            As::Tenant(OFFBOARDED),
            "DELETE",
            &format!("/tenants/{OFFBOARDED}/connection"),
            None,
        )
        .await);
    env
}

async fn send(env: &TestEnv, route: &Route, caller: Caller, target: Target) -> (u16, Value) {
    let (path, body) = route.request(target);
    match caller.claims(target) {
        Some(claims) => {
            env.call(As::Claims(&claims), &route.method, &path, body.as_deref())
                .await
        }
        None => {
            env.call(As::Anonymous, &route.method, &path, body.as_deref())
                .await
        }
    }
}

fn check(
    route: &Route,
    caller: Caller,
    target: Target,
    (status, body): &(u16, Value),
) -> Result<(), String> {
    let (want, code) = expected(route, caller, target);
    let got_code = body["error"]["code"].as_str();
    if *status != want || (code.is_some() && got_code != code) {
        return Err(format!(
            "{} as {caller:?} on {target:?}: want {want} {code:?}, got {status} {body}",
            route.key()
        ));
    }
    Ok(())
}

/// One request that may write, in a world of its own.
type Solo = (Route, Caller, Target);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_caller_and_target() {
    let routes = template_routes();
    assert!(routes.len() >= 20, "{routes:?}");
    let limit = Arc::new(Semaphore::new(6));
    let mut jobs = tokio::task::JoinSet::new();

    // One shared world per route for every cell that must not write: refusals, errors and reads.
    let mut solo: Vec<Solo> = Vec::new();
    for route in &routes {
        let mut cells = Vec::new();
        for target in TARGETS {
            for caller in CALLERS {
                let (status, _) = expected(route, caller, target);
                if route.method != "GET" && (200..300).contains(&status) {
                    solo.push((route.clone(), caller, target));
                } else {
                    cells.push((caller, target));
                }
            }
        }
        let (route, limit) = (route.clone(), limit.clone());
        jobs.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let env = world().await;
            let mut before = env.footprint().await;
            let mut failures = Vec::new();
            for (caller, target) in &cells {
                let answer = send(&env, &route, *caller, *target).await;
                failures.extend(check(&route, *caller, *target, &answer).err());
                let after = env.footprint().await;
                if let Some(changes) = before.changes(&after) {
                    failures.push(format!(
                        "{} as {caller:?} on {target:?} ({}) changed something:\n{changes}",
                        route.key(),
                        answer.0
                    ));
                    // Judge the next cell on its own.
                    before = after;
                }
            }
            (cells.len(), failures)
        });
    }

    // Each allowed write in a fresh world; identical requests (e.g. the own-tenant and the parent token on
    // the parent itself) run once and answer every cell they stand for.
    let mut by_request: BTreeMap<(String, String, Target), Vec<Solo>> = BTreeMap::new();
    for cell in solo {
        let claims = format!("{:?}", cell.1.claims(cell.2));
        by_request
            .entry((cell.0.key(), claims, cell.2))
            .or_default()
            .push(cell);
    }
    let solo_worlds = by_request.len();
    for cells in by_request.into_values() {
        let limit = limit.clone();
        jobs.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let env = world().await;
            let (route, caller, target) = &cells[0];
            let answer = send(&env, route, *caller, *target).await;
            let failures: Vec<String> = cells
                .iter()
                .filter_map(|(r, c, t)| check(r, *c, *t, &answer).err())
                .collect();
            (cells.len(), failures)
        });
    }

    let mut cells = 0;
    let mut failures = Vec::new();
    while let Some(done) = jobs.join_next().await {
        let (n, f) = done.unwrap();
        cells += n;
        failures.extend(f);
    }
    let size = routes.len() * CALLERS.len() * TARGETS.len();
    assert_eq!(cells, size, "every cell ran");
    let kinds: BTreeSet<_> = routes.iter().map(|r| r.key()).collect();
    println!(
        "authorization matrix: {} routes × {} callers × {} targets = {size} cells, {} passed ({} worlds of their own for allowed writes); routes: {kinds:?}",
        routes.len(),
        CALLERS.len(),
        TARGETS.len(),
        size - failures.len(),
        solo_worlds,
    );
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
