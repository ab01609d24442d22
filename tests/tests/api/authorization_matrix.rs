//! The authorization matrix: every route in template.yaml × every kind of caller × every kind of target,
//! through the real handler against moto and the simulator. The expected answer of each cell comes from
//! the README's permission table, written out here independently of `claresia_api::auth`. Every refusal
//! (and every read) is proven to have changed nothing: no DynamoDB item, no secret, no Anthropic request
//! (one snapshot per world of such cells; a change replays them one by one to name the cell).
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
/// Shaped like a sub-tenant of `acme`, but nobody registered it (nor provisioned it).
const UNREGISTERED: &str = "acme-ghost";
/// A sub-tenant `acme` registered and then removed: its link stays, inactive.
const REMOVED: &str = "acme-old";
/// A slug held by another parent: `globex`'s sub-tenant.
const HELD: &str = "globex-eu";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    OwnTenant,
    Parent,
    SubTenant,
    SiblingSubTenant,
    UnrelatedTenant,
    RemovedSubTenant,
    Operator,
    NoClaims,
    EmptyTenantClaim,
    NonStringTenantClaim,
}

const CALLERS: [Caller; 10] = [
    Caller::OwnTenant,
    Caller::Parent,
    Caller::SubTenant,
    Caller::SiblingSubTenant,
    Caller::UnrelatedTenant,
    Caller::RemovedSubTenant,
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
    RemovedSubTenant,
    HeldByAnotherParent,
}

const TARGETS: [Target; 7] = [
    Target::Tenant,
    Target::ItsSubTenant,
    Target::UnrelatedTenant,
    Target::OffboardedTenant,
    Target::UnregisteredSlug,
    Target::RemovedSubTenant,
    Target::HeldByAnotherParent,
];

impl Target {
    fn slug(self) -> &'static str {
        match self {
            Target::Tenant => PARENT,
            Target::ItsSubTenant => SUB,
            Target::UnrelatedTenant => UNRELATED,
            Target::OffboardedTenant => OFFBOARDED,
            Target::UnregisteredSlug => UNREGISTERED,
            Target::RemovedSubTenant => REMOVED,
            Target::HeldByAnotherParent => HELD,
        }
    }

    /// The target's parent link: (parent, active).
    fn link(self) -> Option<(&'static str, bool)> {
        match self {
            Target::ItsSubTenant => Some((PARENT, true)),
            Target::RemovedSubTenant => Some((PARENT, false)),
            Target::HeldByAnotherParent => Some((UNRELATED, true)),
            _ => None,
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
            Caller::RemovedSubTenant => tenant(REMOVED),
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

    /// The tenant namespace's routes: an operator's alone.
    fn is_operator_only(&self) -> bool {
        self.path.ends_with("/top-level") || self.path.ends_with("/release")
    }

    /// What a sub-tenant's status and telemetry reads are (open on a removed link too).
    fn reads_status_or_telemetry(&self) -> bool {
        self.open_to_sub_tenant_token()
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
            _ => UNKNOWN_ZR_KEY,
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
            if e["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            // The catch-all ($default: neither Path nor Method) answers 404/405 before any caller check;
            // openapi.rs sends it every request no route matches.
            let p = &e["Properties"];
            let (Some(method), Some(path)) = (p["Method"].as_str(), p["Path"].as_str()) else {
                continue;
            };
            routes.push(Route {
                method: method.to_owned(),
                path: path.to_owned(),
            });
        }
    }
    routes.sort();
    routes
}

/// What an authorized caller gets, per target in `TARGETS` order (201: the call created the resource) (the sub-tenant's connection and registry
/// routes are decided by the permission table, so they have no entry here). A route missing from this
/// table fails the test: a new route needs its row.
fn allowed_status(route: &Route, target: Target) -> u16 {
    // Targets: acme, acme-eng, globex, initech (offboarded), acme-ghost (unregistered, unprovisioned),
    // acme-old (removed sub-tenant), globex-eu (globex's sub-tenant). 0: decided by the permission table.
    let row: [u16; 7] = match route.key().as_str() {
        "GET /tenants/{tenant}/connection" => [200; 7],
        "PUT /tenants/{tenant}/connection" => [200, 0, 200, 201, 403, 0, 0],
        "DELETE /tenants/{tenant}/connection" => [200, 0, 200, 200, 404, 0, 0],
        "POST /tenants/{tenant}/connection/test" => [200, 0, 200, 404, 404, 0, 0],
        "GET /tenants/{tenant}/skills" => [200, 200, 200, 200, 200, 0, 200],
        "GET /tenants/{tenant}/skills/{skill_id}" => [200, 200, 200, 404, 404, 0, 200],
        "PUT /tenants/{tenant}/skills/{skill_id}" => [200, 200, 200, 201, 201, 0, 200],
        "DELETE /tenants/{tenant}/skills/{skill_id}" => [200, 200, 200, 404, 404, 0, 200],
        "GET /tenants/{tenant}/archetypes" => [200, 200, 200, 200, 200, 0, 200],
        "GET /tenants/{tenant}/archetypes/{archetype}" => [200, 200, 200, 404, 404, 0, 200],
        "PUT /tenants/{tenant}/archetypes/{archetype}" => [200, 200, 200, 400, 400, 0, 200],
        "DELETE /tenants/{tenant}/archetypes/{archetype}" => [200, 200, 200, 404, 404, 0, 200],
        "GET /tenants/{tenant}/workspaces" => [200, 200, 200, 200, 200, 0, 200],
        "PUT /tenants/{tenant}/workspaces" => [200, 200, 200, 404, 404, 0, 200],
        "POST /tenants/{tenant}/republish" => [200, 200, 200, 409, 409, 0, 200],
        "GET /tenants/{tenant}/telemetry" => [200; 7],
        "GET /tenants/{tenant}/usage" => [200; 7],
        "GET /tenants/{tenant}/sub-tenants" => [200, 0, 200, 200, 200, 0, 0],
        "GET /tenants/{tenant}/sub-tenants/{sub_tenant}" => [200, 0, 404, 404, 404, 0, 0],
        "PUT /tenants/{tenant}/sub-tenants/{sub_tenant}" => [201, 0, 201, 201, 403, 0, 0],
        "DELETE /tenants/{tenant}/sub-tenants/{sub_tenant}" => [200, 0, 404, 404, 404, 0, 0],
        // A held slug (active or removed) is not provisioned over; the others are.
        "PUT /tenants/{tenant}/top-level" => [201, 409, 201, 201, 201, 409, 409],
        // Only a held slug is released: acme-eng is still named by acme's catalog; the others are free.
        "POST /tenants/{tenant}/release" => [404, 409, 404, 404, 404, 200, 200],
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
    if route.is_operator_only() {
        return match claim {
            None => (allowed_status(route, target), None),
            Some(_) => forbidden,
        };
    }
    let own = claim.as_deref() == Some(target.slug());
    let Some((parent, active)) = target.link() else {
        return if claim.is_none() || own {
            (allowed_status(route, target), None)
        } else {
            forbidden
        };
    };
    if own {
        // A held slug's own token: its status and telemetry while the link is active; its connection
        // is its parent's, and the answer says how an operator gives the slug back.
        if active && route.open_to_sub_tenant_token() {
            return (allowed_status(route, target), None);
        }
        if route.is_connection() && !(route.method == "GET" && route.path.ends_with("/connection"))
        {
            return (409, Some("namespace_held"));
        }
        return forbidden;
    }
    if !(claim.is_none() || claim.as_deref() == Some(parent)) {
        return forbidden;
    }
    if route.is_connection() && route.method != "GET" {
        return (409, Some("sub_tenant_shares_connection"));
    }
    if route.is_sub_tenant_registry() {
        return (409, Some("nested_sub_tenant"));
    }
    if !active && !route.reads_status_or_telemetry() {
        return (409, Some("sub_tenant_removed"));
    }
    (allowed_status(route, target), None)
}

/// Every target in place: `acme` connected with a catalog and two registered sub-tenants (one mapped and
/// granted an archetype) and a removed one (`acme-old`), `globex` connected with its own catalog and its
/// sub-tenant `globex-eu`, `initech` offboarded, `acme-ghost` nothing at all.
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
    env.register_sub_tenant(PARENT, REMOVED).await;
    ok(env
        .call(
            As::Tenant(PARENT),
            "DELETE",
            &format!("/tenants/{PARENT}/sub-tenants/{REMOVED}"),
            None,
        )
        .await);
    env.register_sub_tenant(UNRELATED, HELD).await;
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

/// The cells of `route` that changed something, each judged on its own in a fresh world.
async fn writers(route: &Route, cells: &[(Caller, Target)]) -> Vec<String> {
    let env = world().await;
    let mut before = env.footprint().await;
    let mut found = Vec::new();
    for (caller, target) in cells {
        let answer = send(&env, route, *caller, *target).await;
        let after = env.footprint().await;
        if let Some(changes) = before.changes(&after) {
            found.push(format!(
                "{} as {caller:?} on {target:?} ({}) changed something:\n{changes}",
                route.key(),
                answer.0
            ));
            before = after;
        }
    }
    found
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
            let before = env.footprint().await;
            let mut failures = Vec::new();
            for (caller, target) in &cells {
                let answer = send(&env, &route, *caller, *target).await;
                failures.extend(check(&route, *caller, *target, &answer).err());
            }
            // One snapshot for the whole world (none of these cells may write); only when something
            // changed are the cells replayed one by one in a fresh world to name which.
            if before.changes(&env.footprint().await).is_some() {
                failures.extend(writers(&route, &cells).await);
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
