//! `/_sim/…`: the controls a test or a person uses to shape and inspect the simulator. The real API has
//! no such prefix.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::faults::{RouteFaults, TokenBucket};
use crate::ids;
use crate::state::{now_rfc3339, Group, Key, Org, Sim, Workspace, ALL_SCOPES};

pub fn routes(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/reset", post(reset))
        .route("/_sim/state", get(state))
        .route("/_sim/requests", get(requests))
        .route("/_sim/orgs", post(create_org))
        .route("/_sim/orgs/{org_id}", patch(update_org))
        .route("/_sim/orgs/{org_id}/workspaces", post(create_workspace))
        .route("/_sim/orgs/{org_id}/groups", post(create_group))
        .route("/_sim/orgs/{org_id}/keys", post(create_key))
        .route("/_sim/keys/revoke", post(revoke_key))
        .route("/_sim/orgs/{org_id}/audit_events", post(emit_events))
        .route(
            "/_sim/orgs/{org_id}/audit_events/redeliver",
            post(redeliver_events),
        )
        .route(
            "/_sim/orgs/{org_id}/audit_events/expire",
            post(expire_events),
        )
        .route("/_sim/faults", put(set_faults))
        .route("/_sim/faults", delete(clear_faults))
        .route("/_sim/orgs/{org_id}/rbac_groups", post(create_rbac_group))
        .route("/_sim/orgs/{org_id}/usage", post(record_usage))
        .route("/_sim/orgs/{org_id}/ui_change", post(ui_change))
        .with_state(sim)
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

fn no_org(org: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no organization {org}")})),
    )
        .into_response()
}

async fn reset(State(sim): State<Sim>) -> Response {
    sim.reset();
    Json(json!({"reset": true})).into_response()
}

/// Everything a test may want to assert on: orgs, skills with ACLs, event counts, per-route counters.
async fn state(State(sim): State<Sim>) -> Response {
    let st = sim.lock();
    let orgs: Vec<Value> = st
        .orgs
        .values()
        .map(|o| {
            json!({
                "id": o.id,
                "name": o.name,
                "zero_retention": o.zero_retention,
                "workspaces": o.workspaces.iter().map(|w| json!({
                    "id": w.id, "name": w.name, "archived": w.archived_at.is_some(),
                    "principal_member": w.principal_member})).collect::<Vec<_>>(),
                "groups": o.groups,
                "skills": o.skills.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
                "audit_event_count": o.audit.len(),
                "kind": if o.enterprise.is_some() { "enterprise" } else { "preview" },
                "enterprise": o.enterprise.as_ref().map(|e| json!({
                    "rbac_groups": e.groups.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
                    "plugins": e.plugins.iter().map(|p| json!({
                        "id": p.id, "name": p.name, "versions": p.versions.len(),
                        "files": p.versions.last().map(|v| v.files.clone()),
                        "settings": p.settings.iter().map(|(t, s)| (t.clone(), s.preference.clone()))
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    })).collect::<Vec<_>>(),
                    "visibility": e.visibility(),
                    "activity_count": e.activities.len(),
                })),
            })
        })
        .collect();
    Json(json!({"orgs": orgs, "routes": st.counters})).into_response()
}

#[derive(Deserialize)]
struct RequestsQuery {
    route: Option<String>,
}

async fn requests(State(sim): State<Sim>, Query(q): Query<RequestsQuery>) -> Response {
    let st = sim.lock();
    let list: Vec<&crate::state::ReceivedRequest> = st
        .received
        .iter()
        .filter(|r| q.route.as_ref().is_none_or(|want| &r.route == want))
        .collect();
    Json(json!({"requests": list})).into_response()
}

#[derive(Deserialize)]
struct NewOrg {
    id: Option<String>,
    name: String,
    /// `"enterprise"` for a Claude Enterprise organization; absent or `"preview"` otherwise.
    kind: Option<String>,
    /// The enterprise Plugins write and read limits per minute (60 and 300 as documented).
    writes_per_minute: Option<f64>,
    reads_per_minute: Option<f64>,
    /// `true`, `false`, or `null`/absent for "the field is missing from /organizations/me".
    #[serde(default)]
    zero_retention: Option<bool>,
}

async fn create_org(State(sim): State<Sim>, Json(body): Json<NewOrg>) -> Response {
    let enterprise = match body.kind.as_deref() {
        None | Some("preview") => None,
        Some("enterprise") => Some(crate::enterprise::Enterprise::new(
            body.writes_per_minute.unwrap_or(60.0),
            body.reads_per_minute.unwrap_or(300.0),
        )),
        Some(other) => return bad(format!("kind {other:?}: preview or enterprise")),
    };
    let kind = if enterprise.is_some() {
        "enterprise"
    } else {
        "preview"
    };
    let id = body.id.unwrap_or_else(ids::org_id);
    let mut st = sim.lock();
    if st.orgs.contains_key(&id) {
        return bad(format!("organization {id} exists"));
    }
    st.orgs.insert(
        id.clone(),
        Org {
            id: id.clone(),
            name: body.name.clone(),
            zero_retention: body.zero_retention,
            workspaces: vec![],
            groups: vec![],
            skills: vec![],
            audit: vec![],
            audit_expired_through: None,
            latency: std::time::Duration::ZERO,
            fail_status: None,
            audit_page_cap: None,
            enterprise,
        },
    );
    Json(json!({"id": id, "name": body.name, "zero_retention": body.zero_retention, "kind": kind}))
        .into_response()
}

#[derive(Deserialize)]
struct OrgPatch {
    name: Option<String>,
    /// Present with `null` makes the field absent (unknown).
    #[serde(default, with = "double_option")]
    zero_retention: Option<Option<bool>>,
    /// Delay added to every request on this org's routes.
    latency_ms: Option<u64>,
    /// Every request on this org's routes answers this status (0 removes it).
    fail_status: Option<u16>,
    /// Audit pages shorter than asked (0 removes the cap).
    audit_page_cap: Option<u32>,
    /// Enterprise: Plugins write / read limits per minute, plugin list pages shorter than asked (0
    /// removes the cap), and whether `/v1/organizations/me` answers the org's Enterprise keys.
    writes_per_minute: Option<f64>,
    reads_per_minute: Option<f64>,
    plugin_page_cap: Option<usize>,
    me_answers: Option<bool>,
    /// The library marketplace's default installation preference.
    marketplace_default: Option<String>,
    /// Feed pages hold at most this many (0: no cap).
    feed_page_cap: Option<usize>,
    /// The feed answers `has_more: true` without a position.
    feed_no_position: Option<bool>,
    /// The next this many plugin creates are stored but answer 503 `registration_pending`.
    registration_pending: Option<u32>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
        Ok(Some(Option::<bool>::deserialize(d)?))
    }
}

async fn update_org(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<OrgPatch>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get_mut(&org_id) else {
        return no_org(&org_id);
    };
    if let Some(n) = body.name {
        org.name = n;
    }
    if let Some(zr) = body.zero_retention {
        org.zero_retention = zr;
    }
    if let Some(ms) = body.latency_ms {
        org.latency = std::time::Duration::from_millis(ms);
    }
    if let Some(status) = body.fail_status {
        org.fail_status = (status > 0).then_some(status);
    }
    if let Some(cap) = body.audit_page_cap {
        org.audit_page_cap = (cap > 0).then_some(cap);
    }
    let enterprise_only = body.writes_per_minute.is_some()
        || body.reads_per_minute.is_some()
        || body.plugin_page_cap.is_some()
        || body.me_answers.is_some()
        || body.marketplace_default.is_some()
        || body.feed_page_cap.is_some()
        || body.feed_no_position.is_some()
        || body.registration_pending.is_some();
    match org.enterprise.as_mut() {
        Some(e) => {
            e.set_limits(body.writes_per_minute, body.reads_per_minute);
            if let Some(cap) = body.plugin_page_cap {
                e.plugin_page_cap = (cap > 0).then_some(cap);
            }
            if let Some(m) = body.me_answers {
                e.me_answers = m;
            }
            if let Some(cap) = body.feed_page_cap {
                e.feed_page_cap = (cap > 0).then_some(cap);
            }
            if let Some(n) = body.feed_no_position {
                e.feed_no_position = n;
            }
            if let Some(n) = body.registration_pending {
                e.registration_pending = n;
            }
            if let Some(d) = body.marketplace_default {
                if !crate::enterprise::PREFERENCES.contains(&d.as_str()) {
                    return bad(format!(
                        "marketplace_default must be one of {:?}",
                        crate::enterprise::PREFERENCES
                    ));
                }
                e.marketplace_default = d;
            }
        }
        None if enterprise_only => {
            return bad(format!("{org_id} is not an enterprise organization"))
        }
        None => {}
    }
    Json(
        json!({"id": org.id, "name": org.name, "zero_retention": org.zero_retention,
                "latency_ms": org.latency.as_millis() as u64, "fail_status": org.fail_status}),
    )
    .into_response()
}

#[derive(Deserialize)]
struct NewWorkspace {
    id: Option<String>,
    name: String,
    #[serde(default = "yes")]
    principal_member: bool,
    #[serde(default)]
    archived: bool,
}

fn yes() -> bool {
    true
}

async fn create_workspace(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<NewWorkspace>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get_mut(&org_id) else {
        return no_org(&org_id);
    };
    let now = now_rfc3339();
    let ws = Workspace {
        id: body.id.unwrap_or_else(ids::workspace_id),
        name: body.name,
        created_at: now.clone(),
        archived_at: body.archived.then_some(now),
        display_color: "#6C5BB9".into(),
        principal_member: body.principal_member,
    };
    let out = json!({"id": ws.id, "name": ws.name, "principal_member": ws.principal_member, "archived": body.archived});
    org.workspaces.push(ws);
    Json(out).into_response()
}

#[derive(Deserialize)]
struct NewGroup {
    id: String,
    name: Option<String>,
}

async fn create_group(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<NewGroup>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get_mut(&org_id) else {
        return no_org(&org_id);
    };
    let g = Group {
        name: body.name.unwrap_or_else(|| body.id.clone()),
        id: body.id,
    };
    let out = json!({"id": g.id, "name": g.name});
    org.groups.push(g);
    Json(out).into_response()
}

#[derive(Deserialize)]
struct NewKey {
    key: Option<String>,
    scopes: Option<Vec<String>>,
}

async fn create_key(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<NewKey>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get(&org_id) else {
        return no_org(&org_id);
    };
    // An enterprise org's keys are Claude Enterprise keys, with its scopes.
    let (known, prefix): (&[&str], &str) = match org.enterprise {
        Some(_) => (&crate::enterprise::ENTERPRISE_SCOPES, "sk-ant-api01-sim"),
        None => (&ALL_SCOPES, "sk-ant-admin01-sim"),
    };
    let scopes: BTreeSet<String> = body
        .scopes
        .unwrap_or_else(|| known.iter().map(|s| s.to_string()).collect())
        .into_iter()
        .collect();
    if let Some(bad_scope) = scopes.iter().find(|s| !known.contains(&s.as_str())) {
        return bad(format!("unknown scope {bad_scope}"));
    }
    let key = body
        .key
        .unwrap_or_else(|| format!("{prefix}{}", ids::request_id().trim_start_matches("req_")));
    st.keys.insert(
        key.clone(),
        Key {
            org_id: org_id.clone(),
            scopes: scopes.clone(),
            revoked: false,
            api_key_id: ids::api_key_id(),
        },
    );
    Json(json!({"key": key, "org_id": org_id, "scopes": scopes})).into_response()
}

#[derive(Deserialize)]
struct RevokeKey {
    key: String,
}

async fn revoke_key(State(sim): State<Sim>, Json(body): Json<RevokeKey>) -> Response {
    let mut st = sim.lock();
    match st.keys.get_mut(&body.key) {
        Some(k) => {
            k.revoked = true;
            Json(json!({"revoked": true})).into_response()
        }
        None => bad("no such key"),
    }
}

/// Either raw `events` (ids and timestamps filled in when missing) or `invoke`: generate `count` events
/// as if users ran a published skill.
#[derive(Deserialize)]
struct EmitEvents {
    #[serde(default)]
    events: Vec<Value>,
    invoke: Option<Invoke>,
}

#[derive(Deserialize)]
struct Invoke {
    skill_name: String,
    #[serde(default = "one")]
    count: usize,
    workspace_id: Option<String>,
    #[serde(default)]
    failed: bool,
    #[serde(default)]
    api_actor: bool,
    record_id: Option<String>,
}

fn one() -> usize {
    1
}

async fn emit_events(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<EmitEvents>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get_mut(&org_id) else {
        return no_org(&org_id);
    };
    let mut emitted = Vec::new();
    for mut e in body.events {
        let Some(obj) = e.as_object_mut() else {
            return bad("events: every event must be an object");
        };
        let id = ids::audit_event_id();
        obj.entry("id").or_insert_with(|| json!(id));
        obj.entry("created_at")
            .or_insert_with(|| json!(now_rfc3339()));
        obj.entry("organization_id")
            .or_insert_with(|| json!(org_id));
        emitted.push(obj.get("id").cloned().unwrap_or(Value::Null));
        org.audit.push(e);
    }
    if let Some(inv) = body.invoke {
        let ws = inv
            .workspace_id
            .or_else(|| org.workspaces.first().map(|w| w.id.clone()))
            .unwrap_or_default();
        let skill = org.skills.iter().find(|s| s.name() == inv.skill_name);
        let skill_json = json!({
            "id": skill.map(|s| s.id.clone()).unwrap_or_else(ids::skill_id),
            "name": inv.skill_name,
            "version": skill.map(|s| s.latest_version.clone()).unwrap_or_else(|| "1".into()),
        });
        for i in 0..inv.count {
            let id = ids::audit_event_id();
            let actor = if inv.api_actor {
                json!({"type": "api_actor", "api_key_id": "apikey_01SimulatedKey"})
            } else {
                json!({"type": "user_actor", "user_id": ids::user_id(), "email_address": format!("user{i}@example.com")})
            };
            let details = if inv.failed {
                json!({"duration_ms": 900 + (i % 100) as u64, "error": {"type": "tool_error", "message": "The tool call failed"}})
            } else {
                let mut d = json!({"duration_ms": 2300 + (i % 100) as u64, "cost_usd": 0.04,
                                   "input_tokens": 1840, "output_tokens": 912});
                if let Some(r) = &inv.record_id {
                    d["record_id"] = json!(r);
                }
                d
            };
            org.audit.push(json!({
                "id": id,
                "type": if inv.failed { "skill.failed" } else { "skill.invoked" },
                "created_at": now_rfc3339(),
                "organization_id": org_id,
                "workspace_id": ws,
                "actor": actor,
                "skill": skill_json,
                "details": details,
            }));
            emitted.push(json!(id));
        }
    }
    Json(json!({"ids": emitted})).into_response()
}

#[derive(Deserialize)]
struct IdList {
    ids: Vec<String>,
}

/// At-least-once delivery: the named events appear again at the end of the log, same ids.
async fn redeliver_events(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<IdList>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get_mut(&org_id) else {
        return no_org(&org_id);
    };
    let again: Vec<Value> = body
        .ids
        .iter()
        .filter_map(|id| {
            org.audit
                .iter()
                .find(|e| e.get("id").and_then(Value::as_str) == Some(id))
                .cloned()
        })
        .collect();
    let n = again.len();
    org.audit.extend(again);
    Json(json!({"redelivered": n})).into_response()
}

#[derive(Deserialize)]
struct Expire {
    through_id: String,
}

/// Ages events out of the 30-day window: everything up to and including `through_id` disappears.
async fn expire_events(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<Expire>,
) -> Response {
    let mut st = sim.lock();
    let Some(org) = st.orgs.get_mut(&org_id) else {
        return no_org(&org_id);
    };
    let before = org.audit.len();
    org.audit.retain(|e| {
        e.get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| id > body.through_id.as_str())
    });
    org.audit_expired_through = Some(body.through_id);
    Json(json!({"expired": before - org.audit.len()})).into_response()
}

/// Faults for one route (`"GET /v1/organizations/me"`, the route template with `{org_id}`) or `"*"`.
#[derive(Deserialize)]
struct FaultSpec {
    route: String,
    latency_ms: Option<u64>,
    /// Requests per second before 429s (with `retry-after`); `0` or absent removes the limit.
    rate_limit_rps: Option<f64>,
    fail: Option<FailSpec>,
    drop_connections: Option<u32>,
    /// 429 answers without `retry-after` (a spend cap).
    spend_cap: Option<u32>,
}

#[derive(Deserialize)]
struct FailSpec {
    status: u16,
    count: u32,
    /// The `x-should-retry` header the failures carry (absent: none).
    should_retry: Option<bool>,
}

async fn set_faults(State(sim): State<Sim>, Json(spec): Json<FaultSpec>) -> Response {
    let mut st = sim.lock();
    let f = st
        .faults
        .entry(spec.route.clone())
        .or_insert_with(RouteFaults::default);
    if let Some(ms) = spec.latency_ms {
        f.latency = Duration::from_millis(ms);
    }
    if let Some(rps) = spec.rate_limit_rps {
        f.rate_limit = (rps > 0.0).then(|| TokenBucket::new(rps, rps.max(1.0)));
    }
    if let Some(fail) = spec.fail {
        if !(400..=599).contains(&fail.status) {
            return bad("fail.status must be an HTTP error status");
        }
        f.fail.extend(std::iter::repeat_n(
            (fail.status, fail.should_retry),
            fail.count as usize,
        ));
    }
    if let Some(n) = spec.drop_connections {
        f.drop_connections += n;
    }
    if let Some(n) = spec.spend_cap {
        f.spend_cap += n;
    }
    Json(
        json!({"route": spec.route, "pending_failures": f.fail.len(),
                "pending_drops": f.drop_connections}),
    )
    .into_response()
}

async fn clear_faults(State(sim): State<Sim>) -> Response {
    sim.lock().faults.clear();
    Json(json!({"cleared": true})).into_response()
}

fn enterprise_of<'a>(
    st: &'a mut crate::state::State,
    org_id: &str,
) -> Result<&'a mut crate::enterprise::Enterprise, Response> {
    match st.orgs.get_mut(org_id) {
        None => Err(no_org(org_id)),
        Some(o) => o
            .enterprise
            .as_mut()
            .ok_or_else(|| bad(format!("{org_id} is not an enterprise organization"))),
    }
}

#[derive(Deserialize)]
struct NewRbacGroup {
    id: Option<String>,
    name: String,
}

async fn create_rbac_group(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<NewRbacGroup>,
) -> Response {
    let mut st = sim.lock();
    let e = match enterprise_of(&mut st, &org_id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let id = body.id.unwrap_or_else(ids::rbac_group_id);
    if !id.starts_with("rbac_group_") || e.groups.iter().any(|g| g.id == id) {
        return bad(format!("group id {id:?}: rbac_group_… and unique"));
    }
    e.groups.push(crate::enterprise::RbacGroup {
        id: id.clone(),
        name: body.name.clone(),
        created_at: now_rfc3339(),
    });
    Json(json!({"id": id, "name": body.name})).into_response()
}

/// One day of use of a skill by a group, as the Analytics API will report it (a later call for the same
/// day, skill and group is a revision: it replaces the figures).
#[derive(Deserialize)]
struct NewUsage {
    skill_name: String,
    rbac_group_id: String,
    date: String,
    invocations: u64,
    #[serde(default = "one_u64")]
    users: u64,
}

fn one_u64() -> u64 {
    1
}

async fn record_usage(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<NewUsage>,
) -> Response {
    let mut st = sim.lock();
    let e = match enterprise_of(&mut st, &org_id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if time::Date::parse(
        &body.date,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .is_err()
    {
        return bad("date: YYYY-MM-DD");
    }
    e.usage.insert(
        (
            body.date.clone(),
            body.skill_name.clone(),
            body.rbac_group_id.clone(),
        ),
        crate::enterprise::Usage {
            invocations: body.invocations,
            users: body.users,
        },
    );
    Json(
        json!({"recorded": true, "date": body.date, "skill_name": body.skill_name,
                "rbac_group_id": body.rbac_group_id, "invocations": body.invocations}),
    )
    .into_response()
}

/// What an org admin does by hand in claude.ai: change (or, with `null`, remove) a plugin's installation
/// setting, or delete the plugin. Recorded as activities by a `user_actor`: drift for the connector.
#[derive(Deserialize)]
struct UiChange {
    plugin_name: String,
    target: Option<String>,
    #[serde(default)]
    installation_preference: Option<String>,
    #[serde(default)]
    delete_plugin: bool,
    user_email: Option<String>,
    /// The feed indexes the change late: its activity says it happened this many seconds ago, behind
    /// activities already listed after it.
    #[serde(default)]
    indexed_late_seconds: Option<i64>,
    /// Pins the version the plugin serves now (irreversible), as an admin can in claude.ai.
    #[serde(default)]
    pin_served_version: bool,
}

async fn ui_change(
    State(sim): State<Sim>,
    Path(org_id): Path<String>,
    Json(body): Json<UiChange>,
) -> Response {
    let mut st = sim.lock();
    let e = match enterprise_of(&mut st, &org_id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(i) = e.plugins.iter().position(|p| p.name == body.plugin_name) else {
        return bad(format!("no plugin named {}", body.plugin_name));
    };
    let actor = json!({"type": "user_actor", "user_id": ids::user_id(),
        "email_address": body.user_email.unwrap_or_else(|| "admin@example.com".into()),
        "ip_address": "198.51.100.23", "user_agent": "Mozilla/5.0"});
    if body.delete_plugin {
        let p = e.plugins.remove(i);
        let id = e.record(
            "claude_plugin_deleted",
            actor,
            json!({"plugin_id": p.id, "plugin_name": p.name}),
        );
        return Json(json!({"activity_id": id})).into_response();
    }
    if body.pin_served_version {
        let served = e.plugins[i].served().map(|v| v.id.clone());
        e.plugins[i].pinned = served.clone();
        let (pid, pname) = (e.plugins[i].id.clone(), e.plugins[i].name.clone());
        let id = e.record(
            "claude_plugin_served_version_updated",
            actor,
            json!({"plugin_id": pid, "plugin_name": pname, "plugin_version_id": served}),
        );
        return Json(json!({"activity_id": id, "pinned": served})).into_response();
    }
    let target = body.target.unwrap_or_else(|| "organization".into());
    if target != "organization" && !e.groups.iter().any(|g| g.id == target) {
        return bad(format!(
            "target {target:?}: organization or a group of the org"
        ));
    }
    let pref = body.installation_preference.as_deref();
    if pref.is_some_and(|p| !crate::enterprise::PREFERENCES.contains(&p)) {
        return bad("installation_preference: required, auto_install, available or not_available");
    }
    if !e.set_preference(i, &target, pref) {
        return Json(json!({"changed": false})).into_response();
    }
    e.preference_activity(i, &target, pref, actor);
    if let (Some(late), Some(a)) = (body.indexed_late_seconds, e.activities.last_mut()) {
        let at = time::OffsetDateTime::now_utc() - time::Duration::seconds(late);
        a["created_at"] = json!(at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default());
    }
    Json(json!({"changed": true, "activity_id": e.activities.last().map(|a| a["id"].clone())}))
        .into_response()
}
