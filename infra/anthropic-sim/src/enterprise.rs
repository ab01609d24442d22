//! The `enterprise` surface (`shared/spec/claude-enterprise-api.md`): what a Claude Enterprise key
//! reaches — the Plugins API (beta), RBAC groups, the Analytics skills report and the Compliance Activity
//! Feed — per enterprise organization, with its scopes, limits, envelopes and pagination. Every plugin
//! write is recorded as a Compliance activity by its `api_actor`; `/_sim/` controls add what users do in
//! the UI (usage, an installation setting changed by hand) as activities by a `user_actor`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Multipart, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use crate::api::error_response;
use crate::faults::{rate_limited, TokenBucket};
use crate::ids;
use crate::state::{now_rfc3339, Key, Sim, State as SimState};

/// The scopes an Enterprise key may be created with (immutable once created).
pub const ENTERPRISE_SCOPES: [&str; 14] = [
    "read:plugins",
    "write:plugins",
    "read:analytics",
    "read:compliance_activities",
    "read:compliance_org_data",
    "read:compliance_user_data",
    "delete:compliance_user_data",
    "read:members",
    "write:members",
    "read:rbac_groups",
    "write:rbac_groups",
    "read:spend_limits",
    "write:spend_limits",
    "read:org_audit",
];

pub const PLUGINS_BETA: &str = "ce-plugins-2026-09-01";
pub const PREFERENCES: [&str; 4] = ["required", "auto_install", "available", "not_available"];
const LIBRARY_MARKETPLACE: &str = "marketplace_01Library0000000000000000";
const MAX_NAME: usize = 64;

#[derive(Debug, Clone)]
pub struct RbacGroup {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct PluginVersion {
    pub id: String,
    pub files: BTreeMap<String, String>,
    pub manifest: Value,
    pub release_notes: Option<String>,
    pub created_at: String,
    pub created_by: Value,
}

#[derive(Debug, Clone)]
pub struct Setting {
    pub preference: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub id: String,
    pub name: String,
    /// Oldest first; the last one is served unless one is pinned.
    pub versions: Vec<PluginVersion>,
    /// The version an admin pinned as served (irreversible: no endpoint unpins).
    pub pinned: Option<String>,
    /// By target: `organization` or an `rbac_group_…` id.
    pub settings: BTreeMap<String, Setting>,
    pub created_at: String,
    pub updated_at: String,
}

/// One day's recorded use of a skill by one RBAC group.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub invocations: u64,
    pub users: u64,
}

/// An enterprise organization's own state.
#[derive(Debug, Clone)]
pub struct Enterprise {
    pub groups: Vec<RbacGroup>,
    /// In creation order (lists answer newest first).
    pub plugins: Vec<Plugin>,
    /// Compliance activities in the order they happened (ids increase).
    pub activities: Vec<Value>,
    /// (date, skill name, group id) → use.
    pub usage: BTreeMap<(String, String, String), Usage>,
    pub writes: TokenBucket,
    pub reads: TokenBucket,
    pub compliance: TokenBucket,
    /// Plugin list pages hold at most this many, whatever `limit` asks (`next_page` says whether more follow).
    pub plugin_page_cap: Option<usize>,
    /// Whether `/v1/organizations/me` answers this org's Enterprise keys (UNCONFIRMED in the docs: both).
    pub me_answers: bool,
    /// The next this many plugin creates are stored but answer 503 `registration_pending`.
    pub registration_pending: u32,
    /// Feed pages hold at most this many, whatever `limit` asks (to make backlogs of many pages).
    pub feed_page_cap: Option<usize>,
    /// The feed answers `has_more: true` with null `first_id`/`last_id` (a page with no position).
    pub feed_no_position: bool,
    /// The library marketplace's `default_installation_preference`: what a plugin without its own
    /// organization setting gets org-wide (reported `not_available` when never set).
    pub marketplace_default: String,
}

impl Enterprise {
    pub fn new(writes_per_minute: f64, reads_per_minute: f64) -> Enterprise {
        Enterprise {
            groups: vec![],
            plugins: vec![],
            activities: vec![],
            usage: BTreeMap::new(),
            writes: per_minute(writes_per_minute),
            reads: per_minute(reads_per_minute),
            compliance: per_minute(600.0),
            plugin_page_cap: None,
            me_answers: true,
            marketplace_default: "not_available".into(),
            feed_page_cap: None,
            feed_no_position: false,
            registration_pending: 0,
        }
    }

    pub fn set_limits(&mut self, writes: Option<f64>, reads: Option<f64>) {
        if let Some(w) = writes {
            self.writes = per_minute(w);
        }
        if let Some(r) = reads {
            self.reads = per_minute(r);
        }
    }

    fn group(&self, id: &str) -> Option<&RbacGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// Records an activity; answers its id.
    pub fn record(&mut self, kind: &str, actor: Value, fields: Value) -> String {
        let id = ids::activity_id();
        let mut a = json!({"id": id, "type": kind, "created_at": now_rfc3339(), "actor": actor,
                           "organization_id": null, "organization_uuid": null});
        if let (Some(obj), Some(extra)) = (a.as_object_mut(), fields.as_object()) {
            obj.extend(extra.clone());
        }
        self.activities.push(a);
        id
    }

    /// Sets (or, with `None`, deletes) an installation setting; answers whether anything changed.
    pub fn set_preference(&mut self, plugin: usize, target: &str, pref: Option<&str>) -> bool {
        let now = now_rfc3339();
        let settings = &mut self.plugins[plugin].settings;
        match pref {
            Some(p) => {
                if settings.get(target).is_some_and(|s| s.preference == p) {
                    return false;
                }
                let created_at = settings
                    .get(target)
                    .map_or(now.clone(), |s| s.created_at.clone());
                settings.insert(
                    target.to_owned(),
                    Setting {
                        preference: p.to_owned(),
                        created_at,
                        updated_at: now,
                    },
                );
                true
            }
            None => settings.remove(target).is_some(),
        }
    }

    /// The activity a setting change leaves.
    pub fn preference_activity(
        &mut self,
        plugin: usize,
        target: &str,
        pref: Option<&str>,
        actor: Value,
    ) {
        let group = self.group(target).map(|g| g.name.clone());
        let name = self.plugins[plugin].name.clone();
        let group_id = (target != "organization").then(|| target.to_owned());
        self.record(
            "plugin_installation_preference_updated",
            actor,
            json!({"marketplace_id": LIBRARY_MARKETPLACE, "plugin_name": name,
                   "installation_preference": pref, "action": if pref.is_some() { "updated" } else { "deleted" },
                   "group_id": group_id, "group_name": group}),
        );
    }

    /// What each group's members see of each plugin (the most-permissive rule): for the state view.
    pub fn visibility(&self) -> Value {
        let plugins: Vec<Value> = self
            .plugins
            .iter()
            .map(|p| {
                let org = p
                    .settings
                    .get("organization")
                    .map_or(self.marketplace_default.as_str(), |s| s.preference.as_str());
                let by_group: BTreeMap<&str, &str> = self
                    .groups
                    .iter()
                    .map(|g| {
                        let effective = match p.settings.get(&g.id) {
                            Some(s) => s.preference.as_str(),
                            None => org,
                        };
                        (g.id.as_str(), effective)
                    })
                    .collect();
                json!({"plugin": p.name, "organization": org, "groups": by_group})
            })
            .collect();
        json!(plugins)
    }
}

fn per_minute(n: f64) -> TokenBucket {
    let n = n.max(1.0);
    TokenBucket::new(n / 60.0, n)
}

/// The enterprise routes (the caller adds the state and the fault middleware with the preview ones).
pub fn routes() -> Router<Sim> {
    Router::new()
        .route(
            "/v1/organizations/plugins",
            get(list_plugins).post(create_plugin),
        )
        .route(
            "/v1/organizations/plugins/{plugin_id}",
            get(get_plugin).post(serve_version).delete(delete_plugin),
        )
        .route(
            "/v1/organizations/plugins/{plugin_id}/versions/{version}",
            get(get_version),
        )
        .route(
            "/v1/organizations/plugins/{plugin_id}/versions",
            get(list_versions).post(create_version),
        )
        .route(
            "/v1/organizations/plugins/{plugin_id}/installation_settings",
            get(list_settings),
        )
        .route(
            "/v1/organizations/plugins/{plugin_id}/installation_settings/{target}",
            post(set_setting).delete(delete_setting),
        )
        .route("/v1/organizations/rbac_groups", get(list_groups))
        .route("/v1/organizations/analytics/skills", get(analytics_skills))
        .route("/v1/compliance/activities", get(activities))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    Read,
    Write,
    Compliance,
}

/// Authenticates an Enterprise key for `scope` on its org: 401, 400 (not an enterprise org), 404 (the
/// Plugins beta header missing), 403 (scope), 429 (the org's limit). Answers the key.
fn authorize(
    st: &mut SimState,
    headers: &HeaderMap,
    scope: &str,
    plugins_beta: bool,
    limit: Limit,
) -> Result<Key, Response> {
    let raw = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let key = match raw.and_then(|k| st.keys.get(k)) {
        Some(k) if !k.revoked && st.orgs.contains_key(&k.org_id) => k.clone(),
        _ => {
            return Err(error_response(
                401,
                "authentication_error",
                "The API key provided is invalid or has been revoked.",
            ))
        }
    };
    let Some(ent) = st
        .orgs
        .get_mut(&key.org_id)
        .and_then(|o| o.enterprise.as_mut())
    else {
        return Err(error_response(
            400,
            "invalid_request_error",
            "this endpoint is not supported for this organization type",
        ));
    };
    if plugins_beta {
        let beta = headers
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|b| b.trim() == PLUGINS_BETA);
        if !beta {
            return Err(error_response(404, "not_found_error", "Not found"));
        }
    }
    if !key.scopes.contains(scope) {
        let got: Vec<&String> = key.scopes.iter().collect();
        return Err(error_response(
            403,
            "permission_error",
            &format!("Missing required scopes. Got: {got:?} Needed: ['{scope}']"),
        ));
    }
    let bucket = match limit {
        Limit::Read => &mut ent.reads,
        Limit::Write => &mut ent.writes,
        Limit::Compliance => &mut ent.compliance,
    };
    if let Err(wait) = bucket.take() {
        return Err(rate_limited(wait, bucket.burst, "Rate limit exceeded"));
    }
    Ok(key)
}

/// A handler's answer: `Err` is an error response, so `?` returns it.
type Handled = Result<Response, Response>;

fn invalid(message: impl AsRef<str>) -> Response {
    error_response(400, "invalid_request_error", message.as_ref())
}

fn not_found(message: impl AsRef<str>) -> Response {
    error_response(404, "not_found_error", message.as_ref())
}

fn ent<'a>(st: &'a mut SimState, key: &Key) -> &'a mut Enterprise {
    st.orgs
        .get_mut(&key.org_id)
        .and_then(|o| o.enterprise.as_mut())
        .expect("authorize checked the org is an enterprise one")
}

fn api_actor(key: &Key) -> Value {
    json!({"type": "api_actor", "api_key_id": key.api_key_id, "ip_address": "203.0.113.7", "user_agent": null})
}

/// `limit` and `page` of a `data`/`next_page` list: the page is an offset, opaque to clients.
fn page_params(
    q: &BTreeMap<String, String>,
    max: usize,
    default: usize,
) -> Result<(usize, usize), Response> {
    let limit = match q.get("limit") {
        None => default,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| invalid(format!("limit: must be an integer from 1 to {max}")))?,
    };
    let offset = match q.get("page") {
        None => 0,
        Some(p) => p
            .strip_prefix("page_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| invalid("page: not a page token this API returned"))?,
    };
    Ok((limit, offset))
}

/// One `data`/`next_page` page of `all`.
fn paged(all: Vec<Value>, limit: usize, offset: usize) -> Response {
    let next = (offset + limit < all.len()).then(|| format!("page_{}", offset + limit));
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    Json(json!({"data": page, "next_page": next})).into_response()
}

fn reject_unknown(q: &BTreeMap<String, String>, known: &[&str]) -> Result<(), Response> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{k}: unknown query parameter"))),
        None => Ok(()),
    }
}

fn plugin_index(e: &Enterprise, id: &str) -> Result<usize, Response> {
    if !id.starts_with("plugin_") {
        return Err(invalid(format!("plugin_id: {id:?} is not a plugin id")));
    }
    e.plugins
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(|| not_found(format!("plugin {id} not found")))
}

impl Plugin {
    /// The version members get: the pinned one, else the newest.
    pub fn served(&self) -> Option<&PluginVersion> {
        match &self.pinned {
            Some(id) => self.versions.iter().find(|v| &v.id == id),
            None => self.versions.last(),
        }
    }
}

fn plugin_json(p: &Plugin, marketplace_default: &str) -> Value {
    let served = p.served();
    let manifest = served.map(|v| v.manifest.clone()).unwrap_or_default();
    let components: Vec<Value> = served
        .map(|v| skill_names(&v.files))
        .unwrap_or_default()
        .into_iter()
        .map(|(name, description)| json!({"type": "skill", "name": name, "description": description}))
        .collect();
    json!({
        "type": "plugin",
        "id": p.id,
        "name": p.name,
        "display_name": manifest.get("displayName").cloned().unwrap_or(Value::Null),
        "description": manifest.get("description").cloned().unwrap_or(Value::Null),
        "manifest_version": manifest.get("version").and_then(Value::as_str).map(|v| v.trim_start_matches('v')),
        "served_version_id": served.map(|v| v.id.clone()),
        "latest_version_id": p.versions.last().map(|v| v.id.clone()),
        "served_version_pinned": p.pinned.is_some(),
        "owner": {"type": "organization"},
        "marketplace_id": LIBRARY_MARKETPLACE,
        "created_by": p.versions.first().map(|v| v.created_by.clone()),
        "organization_installation_preference": p.settings.get("organization")
            .map_or(marketplace_default, |s| s.preference.as_str()),
        "organization_installation_preference_inherited": !p.settings.contains_key("organization"),
        "content_scan": {"status": "completed", "assessment": "pass", "reason": null},
        "components": components,
        "reach": "contained",
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

fn version_json(plugin: &Plugin, v: &PluginVersion) -> Value {
    json!({
        "type": "plugin_version",
        "id": v.id,
        "plugin_id": plugin.id,
        "display_name": v.manifest.get("displayName").cloned().unwrap_or(Value::Null),
        "description": v.manifest.get("description").cloned().unwrap_or(Value::Null),
        "manifest_version": v.manifest.get("version").and_then(Value::as_str).map(|s| s.trim_start_matches('v')),
        "release_notes": v.release_notes,
        "created_by": v.created_by,
        "content_scan": {"status": "completed", "assessment": "pass", "reason": null},
        "components": skill_names(&v.files).into_iter()
            .map(|(n, d)| json!({"type": "skill", "name": n, "description": d})).collect::<Vec<_>>(),
        "reach": "contained",
        "created_at": v.created_at,
    })
}

fn setting_json(plugin: &Plugin, target: &str, s: &Setting) -> Value {
    let target_json = if target == "organization" {
        json!({"type": "organization"})
    } else {
        json!({"type": "rbac_group", "rbac_group_id": target})
    };
    json!({"type": "plugin_installation_setting", "plugin_id": plugin.id, "target": target_json,
           "installation_preference": s.preference, "created_at": s.created_at, "updated_at": s.updated_at})
}

async fn list_plugins(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:plugins", true, Limit::Read)?;
    reject_unknown(&q, &["limit", "page", "owner_type"])?;
    let (limit, offset) = page_params(&q, 100, 20)?;
    let e = ent(&mut st, &key);
    let owner_user = q.get("owner_type").is_some_and(|t| t == "user");
    let newest_first: Vec<&Plugin> = if owner_user {
        vec![]
    } else {
        e.plugins.iter().rev().collect()
    };
    let take = e.plugin_page_cap.map_or(limit, |cap| cap.min(limit));
    let page: Vec<Value> = newest_first
        .iter()
        .skip(offset)
        .take(take)
        .map(|p| plugin_json(p, &e.marketplace_default))
        .collect();
    let end = offset + take;
    let next = (end < newest_first.len()).then(|| format!("page_{end}"));
    Ok(Json(json!({"data": page, "next_page": next})).into_response())
}

/// The `files[]` parts of a plugin upload, by path, and its `release_notes`.
async fn read_upload(
    mut form: Multipart,
) -> Result<(BTreeMap<String, String>, Option<String>), Response> {
    let mut files = BTreeMap::new();
    let mut notes = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(invalid(format!("malformed multipart body: {e}"))),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let text = field
            .text()
            .await
            .map_err(|e| invalid(format!("unreadable part {name}: {e}")))?;
        match (name.as_str(), filename) {
            ("files[]", Some(path)) => {
                files.insert(path, text);
            }
            ("release_notes", _) => {
                if text.chars().count() > 5000 {
                    return Err(invalid("release_notes: at most 5,000 characters"));
                }
                notes = Some(text);
            }
            // A part named `files` (no brackets) is ignored, as documented.
            _ => {}
        }
    }
    Ok((files, notes))
}

/// The bundle rules the connector's uploads must meet; answers the manifest.
fn validate_bundle(files: &BTreeMap<String, String>) -> Result<Value, Response> {
    if files.is_empty() {
        return Err(invalid("files[]: at least one file is required"));
    }
    if files.len() > 5000 {
        return Err(invalid("files[]: at most 5,000 files"));
    }
    for path in files.keys() {
        let ok_chars = path
            .chars()
            .all(|c| c.is_alphanumeric() || " _.-/(),".contains(c));
        if path.starts_with('/') || path.split('/').any(|s| s == "..") || !ok_chars {
            return Err(invalid(format!("files[]: invalid path {path:?}")));
        }
        if path.len() > 472 || path.split('/').count() > 12 {
            return Err(invalid(format!("files[]: path too long {path:?}")));
        }
        if path == "bin" || path.starts_with("bin/") {
            return Err(invalid(
                "files[]: a top-level bin/ directory is not allowed",
            ));
        }
        if path.ends_with(".zip") {
            return Err(invalid("files[]: nested archives are not allowed"));
        }
    }
    let Some(raw) = files.get(".claude-plugin/plugin.json") else {
        return Err(invalid(
            "manifest not found: the plugin needs .claude-plugin/plugin.json (send each file with its path as the filename)",
        ));
    };
    let manifest: Value = serde_json::from_str(raw)
        .map_err(|e| invalid(format!(".claude-plugin/plugin.json: invalid JSON: {e}")))?;
    let name = manifest["name"].as_str().unwrap_or_default();
    if !valid_name(name) {
        return Err(invalid(format!(
            ".claude-plugin/plugin.json: name {name:?} must be 1-64 lowercase letters, digits and hyphens"
        )));
    }
    if manifest["displayName"]
        .as_str()
        .is_some_and(|d| d.chars().count() > 64)
    {
        return Err(invalid(
            ".claude-plugin/plugin.json: displayName is longer than 64",
        ));
    }
    if manifest["description"]
        .as_str()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(invalid(
            ".claude-plugin/plugin.json: description is longer than 500",
        ));
    }
    let mut seen = BTreeSet::new();
    for (path, text) in files {
        let Some(dir) = path
            .strip_prefix("skills/")
            .and_then(|p| p.strip_suffix("/SKILL.md"))
        else {
            continue;
        };
        let (fm_name, fm_description) = front_matter(text).ok_or_else(|| {
            invalid(format!(
                "{path}: SKILL.md needs YAML front matter with name and description"
            ))
        })?;
        if fm_name.is_empty() || fm_description.is_empty() {
            return Err(invalid(format!(
                "{path}: front matter needs name and description"
            )));
        }
        if fm_description.contains('<') {
            return Err(invalid(format!(
                "{path}: description may not contain XML tags"
            )));
        }
        if !seen.insert(fm_name.clone()) || dir.contains('/') {
            return Err(invalid(format!(
                "{path}: skill names must be unique, one directory deep"
            )));
        }
    }
    Ok(manifest)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name
            .chars()
            .all(|c| c == '-' || c.is_numeric() || (c.is_alphabetic() && !c.is_uppercase()))
}

/// `name` and `description` of a SKILL.md's front matter.
fn front_matter(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix("---\n")?;
    let end = rest.find("\n---")?;
    let mut name = String::new();
    let mut description = String::new();
    for line in rest[..end].lines() {
        if let Some(v) = line.strip_prefix("name:") {
            name = v.trim().trim_matches('"').to_owned();
        } else if let Some(v) = line.strip_prefix("description:") {
            description = v.trim().trim_matches('"').to_owned();
        }
    }
    Some((name, description))
}

fn skill_names(files: &BTreeMap<String, String>) -> Vec<(String, String)> {
    files
        .iter()
        .filter(|(p, _)| p.starts_with("skills/") && p.ends_with("/SKILL.md"))
        .filter_map(|(_, t)| front_matter(t))
        .collect()
}

async fn create_plugin(State(sim): State<Sim>, headers: HeaderMap, form: Multipart) -> Handled {
    let key = {
        let mut st = sim.lock();
        authorize(&mut st, &headers, "write:plugins", true, Limit::Write)?
    };
    let (files, notes) = read_upload(form).await?;
    let manifest = validate_bundle(&files)?;
    let name = manifest["name"].as_str().unwrap_or_default().to_owned();
    let mut st = sim.lock();
    let e = ent(&mut st, &key);
    if let Some(existing) = e.plugins.iter().find(|p| p.name == name) {
        let mut resp = error_response(
            409,
            "invalid_request_error",
            &format!("A plugin named {name} already exists in this marketplace."),
        );
        if let Ok(body) = serde_json::to_vec(&json!({
            "type": "error",
            "error": {"type": "invalid_request_error",
                      "message": format!("A plugin named {name} already exists in this marketplace."),
                      "details": {"error_code": "plugin_name_taken", "plugin_id": existing.id}},
            "request_id": ids::request_id(),
        })) {
            *resp.body_mut() = axum::body::Body::from(body);
        }
        return Err(resp);
    }
    let now = now_rfc3339();
    let version = PluginVersion {
        id: ids::plugin_version_id(),
        files,
        manifest,
        release_notes: notes,
        created_at: now.clone(),
        created_by: api_actor(&key),
    };
    let plugin = Plugin {
        id: ids::plugin_id(),
        name: name.clone(),
        versions: vec![version],
        pinned: None,
        settings: BTreeMap::new(),
        created_at: now.clone(),
        updated_at: now,
    };
    let out = plugin_json(&plugin, &e.marketplace_default);
    e.record(
        "claude_plugin_created",
        api_actor(&key),
        json!({"plugin_id": plugin.id, "plugin_name": name}),
    );
    let id = plugin.id.clone();
    e.plugins.push(plugin);
    if e.registration_pending > 0 {
        // Stored, not registered: the documented answer says not to resend the create.
        e.registration_pending -= 1;
        let message = "The plugin was stored but its registration has not completed; upload the same files as a new version.";
        let mut resp = error_response(503, "api_error", message);
        if let Ok(body) = serde_json::to_vec(&json!({
            "type": "error",
            "error": {"type": "api_error", "message": message,
                      "details": {"error_code": "registration_pending", "plugin_id": id}},
            "request_id": ids::request_id(),
        })) {
            *resp.body_mut() = axum::body::Body::from(body);
        }
        resp.headers_mut().insert(
            "x-should-retry",
            axum::http::HeaderValue::from_static("false"),
        );
        return Err(resp);
    }
    Ok((axum::http::StatusCode::OK, Json(out)).into_response())
}

async fn get_plugin(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(plugin_id): Path<String>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:plugins", true, Limit::Read)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    Ok(Json(plugin_json(&e.plugins[i], &e.marketplace_default)).into_response())
}

async fn delete_plugin(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(plugin_id): Path<String>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "write:plugins", true, Limit::Write)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    let p = e.plugins.remove(i);
    e.record(
        "claude_plugin_deleted",
        api_actor(&key),
        json!({"plugin_id": p.id, "plugin_name": p.name}),
    );
    Ok(Json(json!({"type": "plugin_deleted", "id": p.id})).into_response())
}

/// `{"served_version_id": "pluginver_…"}` exactly: serves that version and pins it (irreversible).
async fn serve_version(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(plugin_id): Path<String>,
    Json(body): Json<Value>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "write:plugins", true, Limit::Write)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    let obj = body.as_object().filter(|o| o.len() == 1);
    let Some(version) = obj
        .and_then(|o| o.get("served_version_id"))
        .and_then(Value::as_str)
        .filter(|v| v.starts_with("pluginver_"))
    else {
        return Err(invalid(
            "the body must be exactly {\"served_version_id\": \"pluginver_…\"}",
        ));
    };
    if !e.plugins[i].versions.iter().any(|v| v.id == version) {
        return Err(not_found(format!("plugin version {version} not found")));
    }
    e.plugins[i].pinned = Some(version.to_owned());
    e.plugins[i].updated_at = now_rfc3339();
    let (pid, pname) = (e.plugins[i].id.clone(), e.plugins[i].name.clone());
    e.record(
        "claude_plugin_served_version_updated",
        api_actor(&key),
        json!({"plugin_id": pid, "plugin_name": pname, "plugin_version_id": version}),
    );
    Ok(Json(plugin_json(&e.plugins[i], &e.marketplace_default)).into_response())
}

/// One version, by id or `latest`.
async fn get_version(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((plugin_id, version)): Path<(String, String)>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:plugins", true, Limit::Read)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    let p = &e.plugins[i];
    let found = if version == "latest" {
        p.versions.last()
    } else if version.starts_with("pluginver_") {
        p.versions.iter().find(|v| v.id == version)
    } else {
        return Err(invalid("version: a pluginver_ id or latest"));
    };
    match found {
        Some(v) => Ok(Json(version_json(p, v)).into_response()),
        None => Err(not_found(format!("plugin version {version} not found"))),
    }
}

async fn list_versions(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(plugin_id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:plugins", true, Limit::Read)?;
    let (limit, offset) = page_params(&q, 1000, 20)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    let p = &e.plugins[i];
    let all: Vec<Value> = p
        .versions
        .iter()
        .rev()
        .map(|v| version_json(p, v))
        .collect();
    Ok(paged(all, limit, offset))
}

async fn create_version(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(plugin_id): Path<String>,
    form: Multipart,
) -> Handled {
    let key = {
        let mut st = sim.lock();
        authorize(&mut st, &headers, "write:plugins", true, Limit::Write)?
    };
    let (files, notes) = read_upload(form).await?;
    let manifest = validate_bundle(&files)?;
    let mut st = sim.lock();
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    if manifest["name"].as_str() != Some(e.plugins[i].name.as_str()) {
        return Err(invalid(format!(
            ".claude-plugin/plugin.json: name must be {} (a plugin's name is fixed)",
            e.plugins[i].name
        )));
    }
    let now = now_rfc3339();
    let v = PluginVersion {
        id: ids::plugin_version_id(),
        files,
        manifest,
        release_notes: notes,
        created_at: now.clone(),
        created_by: api_actor(&key),
    };
    let out = version_json(&e.plugins[i], &v);
    let (pid, pname) = (e.plugins[i].id.clone(), e.plugins[i].name.clone());
    e.plugins[i].versions.push(v);
    e.plugins[i].updated_at = now;
    e.record(
        "claude_plugin_updated",
        api_actor(&key),
        json!({"plugin_id": pid, "plugin_name": pname}),
    );
    Ok(Json(out).into_response())
}

async fn list_settings(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(plugin_id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:plugins", true, Limit::Read)?;
    reject_unknown(&q, &["limit", "page", "target_type"])?;
    let (limit, offset) = page_params(&q, 100, 20)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    let p = &e.plugins[i];
    let want = q.get("target_type").map(String::as_str);
    let all: Vec<Value> = p
        .settings
        .iter()
        .filter(|(t, _)| match want {
            Some("organization") => t.as_str() == "organization",
            Some("rbac_group") => t.as_str() != "organization",
            _ => true,
        })
        .map(|(t, s)| setting_json(p, t, s))
        .collect();
    Ok(paged(all, limit, offset))
}

/// Checks a setting's target: `organization` or a visible group (404), anything else 400.
fn check_target(e: &Enterprise, target: &str) -> Result<(), Response> {
    if target == "organization" {
        return Ok(());
    }
    if !target.starts_with("rbac_group_") {
        return Err(invalid(format!(
            "target: {target:?} is neither organization nor an rbac_group_ id"
        )));
    }
    match e.group(target) {
        Some(_) => Ok(()),
        None => Err(not_found(format!("RBAC group {target} not found"))),
    }
}

async fn set_setting(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((plugin_id, target)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "write:plugins", true, Limit::Write)?;
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Err(invalid(format!("invalid JSON body: {e}"))),
    };
    let pref = match body.as_object() {
        Some(o) if o.len() == 1 => o.get("installation_preference").and_then(Value::as_str),
        _ => None,
    };
    let Some(pref) = pref.filter(|p| PREFERENCES.contains(p)) else {
        return Err(invalid(format!(
            "installation_preference: one of {PREFERENCES:?}, and no other field"
        )));
    };
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    check_target(e, &target)?;
    // Writing the value already there is a no-op: no event.
    if e.set_preference(i, &target, Some(pref)) {
        e.preference_activity(i, &target, Some(pref), api_actor(&key));
    }
    let p = &e.plugins[i];
    Ok(Json(setting_json(p, &target, &p.settings[&target])).into_response())
}

async fn delete_setting(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((plugin_id, target)): Path<(String, String)>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "write:plugins", true, Limit::Write)?;
    let e = ent(&mut st, &key);
    let i = plugin_index(e, &plugin_id)?;
    check_target(e, &target)?;
    if !e.set_preference(i, &target, None) {
        return Err(not_found(format!(
            "plugin {plugin_id} has no own setting for {target}"
        )));
    }
    e.preference_activity(i, &target, None, api_actor(&key));
    let target_json = if target == "organization" {
        json!({"type": "organization"})
    } else {
        json!({"type": "rbac_group", "rbac_group_id": target})
    };
    Ok(Json(json!({"type": "plugin_installation_setting_deleted", "plugin_id": plugin_id, "target": target_json}))
        .into_response())
}

async fn list_groups(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:rbac_groups", false, Limit::Read)?;
    let (limit, offset) = page_params(&q, 1000, 20)?;
    let e = ent(&mut st, &key);
    let page: Vec<Value> = e
        .groups
        .iter()
        .skip(offset)
        .take(limit)
        .map(|g| {
            json!({"type": "rbac_group", "id": g.id, "name": g.name, "source_type": "direct",
                        "roles": null, "created_at": g.created_at, "updated_at": g.created_at})
        })
        .collect();
    let more = offset + limit < e.groups.len();
    Ok(Json(json!({"data": page, "has_more": more, "next_page": more.then(|| format!("page_{}", offset + limit))}))
        .into_response())
}

/// `GET /v1/compliance/activities`: newest first; `before_id` walks toward newer activities,
/// `after_id` toward older ones; `first_id`/`last_id` are the page's newest and oldest.
async fn activities(State(sim): State<Sim>, headers: HeaderMap, uri: axum::http::Uri) -> Handled {
    let mut st = sim.lock();
    let key = authorize(
        &mut st,
        &headers,
        "read:compliance_activities",
        false,
        Limit::Compliance,
    )?;
    let mut types = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    let (mut after, mut before, mut limit) = (None, None, 100usize);
    let mut bounds: Vec<(String, String)> = Vec::new();
    for (k, v) in url_pairs(uri.query().unwrap_or_default()) {
        match k.as_str() {
            "created_at.gte" | "created_at.gt" | "created_at.lte" | "created_at.lt" => {
                bounds.push((k["created_at.".len()..].to_owned(), v));
            }
            "activity_types[]" => {
                types.insert(v);
            }
            "exclude_activity_types[]" => {
                excluded.insert(v);
            }
            "after_id" => after = Some(v),
            "before_id" => before = Some(v),
            "limit" => match v.parse::<usize>().ok().filter(|n| (1..=5000).contains(n)) {
                Some(n) => limit = n,
                None => return Err(invalid("limit: must be an integer from 1 to 5000")),
            },
            "order" if v == "desc" => {}
            other => return Err(invalid(format!("{other}: unsupported query parameter"))),
        }
    }
    if !types.is_empty() && !excluded.is_empty() {
        return Err(invalid(
            "activity_types[] cannot be combined with exclude_activity_types[]",
        ));
    }
    if after.is_some() && before.is_some() {
        return Err(invalid("send at most one of after_id and before_id"));
    }
    let seq = |id: &str| {
        id.strip_prefix("activity_")
            .and_then(|n| n.parse::<u64>().ok())
    };
    let cursor = match after.as_deref().or(before.as_deref()) {
        None => None,
        Some(c) => match seq(c) {
            Some(n) => Some((c.to_owned(), n)),
            None => return Err(invalid(format!("{c:?} is not a valid activity id"))),
        },
    };
    let mut window: Vec<(&str, time::OffsetDateTime)> = Vec::new();
    for (bound, raw) in &bounds {
        match time::OffsetDateTime::parse(raw, &Rfc3339) {
            Ok(t) => window.push((bound.as_str(), t)),
            Err(_) => {
                return Err(invalid(format!(
                    "created_at.{bound}: {raw:?} is not an RFC 3339 timestamp with a time zone"
                )))
            }
        }
    }
    let e = ent(&mut st, &key);
    let limit = e.feed_page_cap.map_or(limit, |cap| cap.min(limit));
    let at = |a: &Value| {
        a["created_at"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let n_of = |a: &Value| a["id"].as_str().and_then(seq).unwrap_or(0);
    // The feed's order: `created_at`, ties broken by id (a late-indexed activity sorts by when it happened).
    let order = |a: &Value| (at(a), n_of(a));
    let in_window = |a: &Value| {
        let t = at(a);
        window.iter().all(|(bound, w)| match *bound {
            "gte" => t >= *w,
            "gt" => t > *w,
            "lte" => t <= *w,
            _ => t < *w,
        })
    };
    // Oldest first, filtered.
    let mut chosen: Vec<&Value> = e
        .activities
        .iter()
        .filter(|a| {
            let t = a["type"].as_str().unwrap_or_default();
            (types.is_empty() || types.contains(t)) && !excluded.contains(t) && in_window(a)
        })
        .collect();
    chosen.sort_by_key(|a| order(a));
    // Where the cursor sits in that order (an id not recorded sits where the one before it does).
    let cursor_key = cursor.map(|(id, n)| {
        let exact = e.activities.iter().find(|a| a["id"] == id.as_str());
        let before = || {
            e.activities
                .iter()
                .filter(|a| n_of(a) <= n)
                .max_by_key(|a| n_of(a))
        };
        exact
            .or_else(before)
            .map_or((time::OffsetDateTime::UNIX_EPOCH, n), |a| (at(a), n))
    });
    let (page, has_more): (Vec<&Value>, bool) = match (before.is_some(), cursor_key) {
        // Newer than the cursor: the `limit` just after it, walking toward the newest.
        (true, Some(c)) => {
            let newer: Vec<&Value> = chosen.iter().copied().filter(|a| order(a) > c).collect();
            let page: Vec<&Value> = newer.iter().take(limit).copied().collect();
            (page, newer.len() > limit)
        }
        // Older than the cursor (or from the newest): the `limit` just before it.
        (_, c) => {
            let older: Vec<&Value> = chosen
                .iter()
                .copied()
                .filter(|a| c.is_none_or(|c| order(a) < c))
                .collect();
            let start = older.len().saturating_sub(limit);
            (older[start..].to_vec(), start > 0)
        }
    };
    let data: Vec<Value> = page.into_iter().rev().cloned().collect();
    if e.feed_no_position {
        return Ok(
            Json(json!({"data": [], "has_more": true, "first_id": null, "last_id": null}))
                .into_response(),
        );
    }
    Ok(Json(json!({
        "data": data,
        "has_more": has_more,
        "first_id": data.first().map(|a| a["id"].clone()),
        "last_id": data.last().map(|a| a["id"].clone()),
    }))
    .into_response())
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /v1/organizations/analytics/skills`: daily rows from recorded usage (`date`, or `starting_date`
/// and `ending_date` rolled up), filtered by `skill_name` / `rbac_group_id`, optionally one row per group.
async fn analytics_skills(
    State(sim): State<Sim>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Handled {
    let mut st = sim.lock();
    let key = authorize(&mut st, &headers, "read:analytics", false, Limit::Read)?;
    let (mut date, mut start, mut end) = (None, None, None);
    let (mut names, mut groups, mut by_group) = (BTreeSet::new(), BTreeSet::new(), false);
    let (mut limit, mut offset) = (100usize, 0usize);
    for (k, v) in url_pairs(uri.query().unwrap_or_default()) {
        match k.as_str() {
            "date" => date = Some(v),
            "starting_date" => start = Some(v),
            "ending_date" => end = Some(v),
            "filter[]" => match v.split_once(':') {
                Some(("skill_name", n)) => {
                    names.insert(n.to_lowercase());
                }
                Some(("rbac_group_id", g)) => {
                    groups.insert(g.to_owned());
                }
                _ => return Err(invalid(format!("filter[]: unsupported filter {v:?}"))),
            },
            "group_by[]" if v == "rbac_group_id" => by_group = true,
            "group_by[]" => {
                return Err(invalid(format!("group_by[]: unsupported dimension {v:?}")))
            }
            "limit" => match v.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)) {
                Some(n) => limit = n,
                None => return Err(invalid("limit: must be an integer from 1 to 1000")),
            },
            "page" => match v.strip_prefix("page_").and_then(|n| n.parse().ok()) {
                Some(n) => offset = n,
                None => return Err(invalid("page: not a page token this API returned")),
            },
            other => return Err(invalid(format!("{other}: unsupported query parameter"))),
        }
    }
    if names.len() + groups.len() > 100 {
        return Err(invalid("filter[]: at most 100 values"));
    }
    let today = time::OffsetDateTime::now_utc().date();
    let latest = (today - time::Duration::days(1)).to_string();
    let days: Vec<String> = match (date, start, end) {
        (Some(_), Some(_), _) => return Err(invalid("date cannot be combined with starting_date")),
        (Some(d), None, None) => vec![d],
        (None, Some(s), e) => {
            let (Some(s), Some(e)) = (
                parse_day(&s),
                parse_day(e.as_deref().unwrap_or(&today.to_string())),
            ) else {
                return Err(invalid("starting_date / ending_date: YYYY-MM-DD"));
            };
            if e <= s || e > today {
                return Err(invalid(
                    "ending_date: after starting_date and not after today",
                ));
            }
            let mut out = vec![];
            let mut d = s;
            while d < e {
                out.push(d.to_string());
                d += time::Duration::days(1);
            }
            out
        }
        _ => {
            return Err(invalid(
                "send date, or starting_date (with an optional ending_date)",
            ))
        }
    };
    for d in &days {
        if parse_day(d).is_none() {
            return Err(invalid(format!("date: {d:?} is not YYYY-MM-DD")));
        }
        if d.as_str() > latest.as_str() {
            return Err(invalid(format!(
                "date: {d} is not available yet; the latest available date is {latest}"
            )));
        }
    }
    let e = ent(&mut st, &key);
    let group_name = |id: &str| e.group(id).map(|g| g.name.clone());
    // (skill, group if grouped) → summed use.
    let mut rows: BTreeMap<(String, Option<String>), Usage> = BTreeMap::new();
    for ((day, skill, group), u) in &e.usage {
        if !days.contains(day)
            || (!names.is_empty() && !names.contains(&skill.to_lowercase()))
            || (!groups.is_empty() && !groups.contains(group))
        {
            continue;
        }
        let r = rows
            .entry((skill.clone(), by_group.then(|| group.clone())))
            .or_default();
        r.invocations += u.invocations;
        r.users += u.users;
    }
    let all: Vec<Value> = rows
        .into_iter()
        .map(|((skill, group), u)| {
            let mut row = json!({
                "skill_name": skill, "skill_display_name": null, "share_status": "organization",
                "distinct_user_count": u.users, "invocation_count": u.invocations, "enable_count": null,
                "estimated_overage_spend": format!("{}", u.invocations * 4), "attributed_list_price": format!("{}", u.invocations * 4),
                "currency": "USD",
                "chat_metrics": {"distinct_conversation_skill_used_count": u.invocations},
                "claude_code_metrics": {"distinct_session_skill_used_count": 0},
                "cowork_metrics": {"distinct_session_skill_used_count": 0},
                "office_metrics": {"excel": {"distinct_session_skill_used_count": null},
                    "outlook": {"distinct_session_skill_used_count": null},
                    "powerpoint": {"distinct_session_skill_used_count": null},
                    "word": {"distinct_session_skill_used_count": null}},
            });
            if let Some(g) = group {
                row["rbac_group_name"] = json!(group_name(&g));
                row["rbac_group_id"] = json!(g);
            }
            row
        })
        .collect();
    Ok(paged(all, limit, offset))
}

fn parse_day(s: &str) -> Option<time::Date> {
    time::Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}
