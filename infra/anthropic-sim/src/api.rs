//! The public surface: `/v1/organizations/…` with the contract's auth, scopes, envelopes and pagination.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::faults::{self, TokenBucket};
use crate::state::{now_rfc3339, Acl, Key, Org, Sim, Skill};
use crate::{ids, skills};

pub const REQUEST_ID: &str = "request-id";

tokio::task_local! {
    pub static REQUEST_ID_TL: String;
}

const AUDIT_REQUESTS_PER_MINUTE: f64 = 600.0;

pub fn routes(sim: Sim) -> Router {
    Router::new()
        .route("/v1/organizations/me", get(me))
        .route("/v1/organizations/workspaces", get(list_workspaces))
        .route(
            "/v1/organizations/{org_id}/skills",
            get(list_skills).post(create_skill),
        )
        .route(
            "/v1/organizations/{org_id}/skills/{skill_id}",
            get(get_skill).put(replace_skill).delete(delete_skill),
        )
        .route(
            "/v1/organizations/{org_id}/skills/{skill_id}/acl",
            put(put_acl),
        )
        .route("/v1/organizations/{org_id}/audit_logs", get(audit_logs))
        .merge(crate::enterprise::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            faults::middleware,
        ))
        // Skills may be up to 8 MiB; leave room for JSON escaping, answer 413 past that.
        .layer(DefaultBodyLimit::max(12 * 1024 * 1024))
        .with_state(sim)
}

/// The contract's error envelope, with the request id of the answer it belongs to.
pub fn error_response(status: u16, kind: &str, message: &str) -> Response {
    let request_id = REQUEST_ID_TL
        .try_with(|r| r.clone())
        .unwrap_or_else(|_| ids::request_id());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        })),
    )
        .into_response()
}

fn invalid(message: impl AsRef<str>) -> Response {
    error_response(400, "invalid_request_error", message.as_ref())
}

fn not_found_error(message: impl AsRef<str>) -> Response {
    error_response(404, "not_found_error", message.as_ref())
}

async fn not_found() -> Response {
    not_found_error("Not found")
}

/// Authenticates the admin key and checks its scope; answers the org the key belongs to.
fn authorize(sim: &Sim, headers: &HeaderMap, scope: Option<&str>) -> Result<Key, Response> {
    if headers.get("anthropic-version").is_none() {
        return Err(invalid("anthropic-version: header is required"));
    }
    let Some(raw) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
        return Err(error_response(
            401,
            "authentication_error",
            "x-api-key header is required",
        ));
    };
    let st = sim.lock();
    let key = match st.keys.get(raw) {
        Some(k) if !k.revoked && st.orgs.contains_key(&k.org_id) => k.clone(),
        _ => {
            return Err(error_response(
                401,
                "authentication_error",
                "invalid x-api-key",
            ))
        }
    };
    if let Some(scope) = scope {
        if !key.scopes.contains(scope) {
            return Err(error_response(
                403,
                "permission_error",
                &format!("API key is missing required scope: {scope}"),
            ));
        }
    }
    Ok(key)
}

fn check_org(key: &Key, org_id: &str) -> Result<(), Response> {
    if key.org_id == org_id {
        Ok(())
    } else {
        Err(not_found_error(format!("organization {org_id} not found")))
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    limit: Option<String>,
    after_id: Option<String>,
    before_id: Option<String>,
    include_archived: Option<String>,
    event_types: Option<String>,
}

fn parse_limit(raw: Option<&str>, default: usize) -> Result<usize, Response> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(invalid(format!(
                "limit: must be an integer between 1 and 1000, got {s:?}"
            ))),
        },
    }
}

/// The shared list envelope. `items` are `(id, json)` in list order; `after`/`before` are positions already
/// resolved by the caller.
fn page(items: &[(String, Value)], q: &ListQuery, default_limit: usize) -> Result<Value, Response> {
    let limit = parse_limit(q.limit.as_deref(), default_limit)?;
    if q.after_id.is_some() && q.before_id.is_some() {
        return Err(invalid("after_id and before_id cannot be combined"));
    }
    let position = |id: &str, name: &str| {
        items
            .iter()
            .rposition(|(i, _)| i == id)
            .ok_or_else(|| invalid(format!("{name}: no object with id {id}")))
    };
    let (slice, has_more) = if let Some(after) = q.after_id.as_deref() {
        let start = position(after, "after_id")? + 1;
        let end = (start + limit).min(items.len());
        (&items[start..end], end < items.len())
    } else if let Some(before) = q.before_id.as_deref() {
        let end = position(before, "before_id")?;
        let start = end.saturating_sub(limit);
        (&items[start..end], start > 0)
    } else {
        let end = limit.min(items.len());
        (&items[..end], end < items.len())
    };
    Ok(json!({
        "data": slice.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": slice.first().map(|(i, _)| i.clone()),
        "last_id": slice.last().map(|(i, _)| i.clone()),
    }))
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

fn with_org<T>(sim: &Sim, org_id: &str, f: impl FnOnce(&mut Org) -> T) -> Result<T, Response> {
    let mut st = sim.lock();
    let org = st
        .orgs
        .get_mut(org_id)
        .ok_or_else(|| not_found_error(format!("organization {org_id} not found")))?;
    Ok(f(org))
}

async fn me(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    let key = match authorize(&sim, &headers, None) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match with_org(&sim, &key.org_id, |org| {
        // Whether Enterprise keys reach it is UNCONFIRMED: an enterprise org says which reading it plays,
        // and reports no zero-retention (no enterprise API does).
        if let Some(e) = &org.enterprise {
            return e
                .me_answers
                .then(|| json!({"id": org.id, "type": "organization", "name": org.name}));
        }
        let mut body = json!({"id": org.id, "type": "organization", "name": org.name});
        if let Some(zr) = org.zero_retention {
            body["zero_retention"] = json!(zr);
        }
        Some(body)
    }) {
        Ok(Some(v)) => ok(v),
        Ok(None) => not_found_error("Not found"),
        Err(r) => r,
    }
}

async fn list_workspaces(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let key = match authorize(&sim, &headers, Some("Workspaces:read")) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let include_archived = match q.include_archived.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return invalid(format!(
                "include_archived: must be true or false, got {other:?}"
            ))
        }
    };
    let items = match with_org(&sim, &key.org_id, |org| {
        org.workspaces
            .iter()
            .filter(|w| include_archived || w.archived_at.is_none())
            .map(|w| {
                let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
                v["type"] = json!("workspace");
                (w.id.clone(), v)
            })
            .collect::<Vec<_>>()
    }) {
        Ok(i) => i,
        Err(r) => return r,
    };
    page(&items, &q, 20).map(ok).unwrap_or_else(|r| r)
}

async fn list_skills(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let key = match authorize(&sim, &headers, Some("Skills:read"))
        .and_then(|k| check_org(&k, &org_id).map(|_| k))
    {
        Ok(k) => k,
        Err(r) => return r,
    };
    let items = match with_org(&sim, &key.org_id, |org| {
        org.skills
            .iter()
            .map(|s| (s.id.clone(), s.to_json()))
            .collect::<Vec<_>>()
    }) {
        Ok(i) => i,
        Err(r) => return r,
    };
    page(&items, &q, 20).map(ok).unwrap_or_else(|r| r)
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("request body must be a JSON object")),
        Err(e) => Err(invalid(format!("request body is not valid JSON: {e}"))),
    }
}

fn version_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1000).to_string()
}

async fn create_skill(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) =
        authorize(&sim, &headers, Some("Skills:write")).and_then(|k| check_org(&k, &org_id))
    {
        return r;
    }
    let def = match parse_body(&body).and_then(|d| skills::validate(&d).map_err(invalid).map(|_| d))
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    let result = with_org(&sim, &org_id, |org| {
        let name = def.get("name").and_then(Value::as_str).unwrap_or_default();
        if org.skills.iter().any(|s| s.name() == name) {
            return Err(error_response(
                409,
                "conflict_error",
                "skill name already exists",
            ));
        }
        let now = now_rfc3339();
        let skill = Skill {
            id: ids::skill_id(),
            definition: def,
            created_at: now.clone(),
            updated_at: now,
            latest_version: version_now(),
            acl: Acl::default(),
        };
        let out = skill.to_json();
        org.skills.push(skill);
        Ok(out)
    });
    match result {
        Ok(Ok(v)) => ok(v),
        Ok(Err(r)) | Err(r) => r,
    }
}

fn skill_route(sim: &Sim, headers: &HeaderMap, org_id: &str, scope: &str) -> Result<(), Response> {
    authorize(sim, headers, Some(scope)).and_then(|k| check_org(&k, org_id))
}

fn missing_skill(id: &str) -> Response {
    not_found_error(format!("skill {id} not found"))
}

async fn get_skill(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((org_id, skill_id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = skill_route(&sim, &headers, &org_id, "Skills:read") {
        return r;
    }
    match with_org(&sim, &org_id, |org| {
        org.skills
            .iter()
            .find(|s| s.id == skill_id)
            .map(Skill::to_json)
    }) {
        Ok(Some(v)) => ok(v),
        Ok(None) => missing_skill(&skill_id),
        Err(r) => r,
    }
}

async fn replace_skill(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((org_id, skill_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = skill_route(&sim, &headers, &org_id, "Skills:write") {
        return r;
    }
    let def = match parse_body(&body).and_then(|d| skills::validate(&d).map_err(invalid).map(|_| d))
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    let result = with_org(&sim, &org_id, |org| {
        let name = def
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if org
            .skills
            .iter()
            .any(|s| s.name() == name && s.id != skill_id)
        {
            return Err(error_response(
                409,
                "conflict_error",
                "skill name already exists",
            ));
        }
        let Some(skill) = org.skills.iter_mut().find(|s| s.id == skill_id) else {
            return Err(missing_skill(&skill_id));
        };
        skill.definition = def;
        skill.updated_at = now_rfc3339();
        skill.latest_version = version_now();
        Ok(skill.to_json())
    });
    match result {
        Ok(Ok(v)) => ok(v),
        Ok(Err(r)) | Err(r) => r,
    }
}

async fn delete_skill(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((org_id, skill_id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = skill_route(&sim, &headers, &org_id, "Skills:write") {
        return r;
    }
    match with_org(&sim, &org_id, |org| {
        let before = org.skills.len();
        org.skills.retain(|s| s.id != skill_id);
        before != org.skills.len()
    }) {
        Ok(true) => ok(json!({"id": skill_id, "type": "skill_deleted"})),
        Ok(false) => missing_skill(&skill_id),
        Err(r) => r,
    }
}

async fn put_acl(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((org_id, skill_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = skill_route(&sim, &headers, &org_id, "Skills:write") {
        return r;
    }
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let strings = |field: &str| -> Result<Vec<String>, Response> {
        match body.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(format!("{field}: every item must be a string")))
                })
                .collect(),
            Some(_) => Err(invalid(format!("{field}: must be an array of strings"))),
            None => Err(invalid(format!("{field}: field required"))),
        }
    };
    let (workspace_ids, group_ids) = match (strings("workspace_ids"), strings("group_ids")) {
        (Ok(w), Ok(g)) => (w, g),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let Some(extra) = body
        .keys()
        .find(|k| *k != "workspace_ids" && *k != "group_ids")
    {
        return invalid(format!("{extra}: extra inputs are not permitted"));
    }
    let result = with_org(&sim, &org_id, |org| {
        if !org.skills.iter().any(|s| s.id == skill_id) {
            return Err(missing_skill(&skill_id));
        }
        for w in &workspace_ids {
            match org.workspaces.iter().find(|ws| &ws.id == w) {
                None => return Err(invalid(format!("workspace_ids: workspace {w} not found"))),
                Some(ws) if ws.archived_at.is_some() => {
                    return Err(invalid(format!("workspace_ids: workspace {w} is archived")))
                }
                Some(ws) if !ws.principal_member => {
                    return Err(error_response(
                        403,
                        "permission_error",
                        &format!("Admin key principal is not a member of workspace {w}"),
                    ))
                }
                Some(_) => {}
            }
        }
        let acl = Acl {
            workspace_ids: workspace_ids.clone(),
            group_ids: group_ids.clone(),
        };
        if let Some(skill) = org.skills.iter_mut().find(|s| s.id == skill_id) {
            skill.acl = acl.clone();
            skill.updated_at = now_rfc3339();
        }
        Ok(json!({"workspace_ids": acl.workspace_ids, "group_ids": acl.group_ids}))
    });
    match result {
        Ok(Ok(v)) => ok(v),
        Ok(Err(r)) | Err(r) => r,
    }
}

async fn audit_logs(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) =
        authorize(&sim, &headers, Some("Audit:read")).and_then(|k| check_org(&k, &org_id))
    {
        return r;
    }
    let mut st = sim.lock();
    let bucket = st.audit_buckets.entry(org_id.clone()).or_insert_with(|| {
        TokenBucket::new(AUDIT_REQUESTS_PER_MINUTE / 60.0, AUDIT_REQUESTS_PER_MINUTE)
    });
    if let Err(wait) = bucket.take() {
        return faults::rate_limited(
            wait,
            AUDIT_REQUESTS_PER_MINUTE,
            "Audit log rate limit exceeded (600 requests per minute per organization)",
        );
    }
    let Some(org) = st.orgs.get(&org_id) else {
        return not_found_error(format!("organization {org_id} not found"));
    };
    let types: Option<Vec<&str>> = q.event_types.as_deref().map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let id_of = |e: &Value| {
        e.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    // Resolve after_id against the full log (an id of a filtered-out type is still a valid cursor).
    let start = match q.after_id.as_deref() {
        None => 0,
        Some(after) => {
            if org
                .audit_expired_through
                .as_deref()
                .is_some_and(|exp| after <= exp)
                && !org.audit.iter().any(|e| id_of(e) == after)
            {
                return invalid(format!(
                    "after_id: event {after} is older than the 30-day retention window"
                ));
            }
            match org.audit.iter().rposition(|e| id_of(e) == after) {
                Some(p) => p + 1,
                None => return invalid(format!("after_id: no event with id {after}")),
            }
        }
    };
    let items: Vec<(String, Value)> = org.audit[start..]
        .iter()
        .filter(|e| {
            types.as_ref().is_none_or(|ts| {
                e.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| ts.contains(&t))
            })
        })
        .map(|e| (id_of(e), e.clone()))
        .collect();
    // An org may serve pages shorter than asked (`audit_page_cap`): only `has_more` says more follow.
    let limit = match parse_limit(q.limit.as_deref(), 100) {
        Ok(l) => org.audit_page_cap.map_or(l, |cap| l.min(cap as usize)),
        Err(r) => return r,
    };
    let q = ListQuery {
        after_id: None,
        limit: Some(limit.to_string()),
        ..q
    };
    page(&items, &q, 100).map(ok).unwrap_or_else(|r| r)
}
