//! The simulator's state: organizations and everything in them, admin keys, faults and counters.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;

use crate::faults::RouteFaults;

pub const ALL_SCOPES: [&str; 4] = [
    "Skills:write",
    "Skills:read",
    "Audit:read",
    "Workspaces:read",
];

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub archived_at: Option<String>,
    pub display_color: String,
    /// Whether the admin key's principal is a member (ACL writes naming it are refused otherwise).
    #[serde(skip)]
    pub principal_member: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Acl {
    pub workspace_ids: Vec<String>,
    pub group_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Skill {
    pub id: String,
    /// The Claude Skill JSON as last written.
    pub definition: serde_json::Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
    pub latest_version: String,
    pub acl: Acl,
}

impl Skill {
    pub fn name(&self) -> &str {
        self.definition
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        let mut obj = self.definition.clone();
        obj.insert("id".into(), Value::String(self.id.clone()));
        obj.insert("type".into(), Value::String("skill".into()));
        obj.insert("created_at".into(), Value::String(self.created_at.clone()));
        obj.insert("updated_at".into(), Value::String(self.updated_at.clone()));
        obj.insert(
            "latest_version".into(),
            Value::String(self.latest_version.clone()),
        );
        obj.insert(
            "acl".into(),
            serde_json::to_value(&self.acl).unwrap_or(Value::Null),
        );
        Value::Object(obj)
    }
}

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// `None` means the field is absent from `/organizations/me` (status unknown).
    pub zero_retention: Option<bool>,
    pub workspaces: Vec<Workspace>,
    pub groups: Vec<Group>,
    pub skills: Vec<Skill>,
    /// Visible audit events, oldest first. A redelivered event appears again later with the same id.
    pub audit: Vec<Value>,
    /// Events up to and including this id have aged out of the 30-day window.
    pub audit_expired_through: Option<String>,
    /// Added to every `/v1/organizations/{this org}/…` request (a slow org among fast ones).
    pub latency: std::time::Duration,
    /// Every `/v1/organizations/{this org}/…` request answers this status (an org that fails for good).
    pub fail_status: Option<u16>,
    /// Audit pages hold at most this many events whatever `limit` asks (a short page that is not the last:
    /// `has_more` is what says whether more follow).
    pub audit_page_cap: Option<u32>,
    /// `Some` for a Claude Enterprise organization (the `enterprise` surface: plugins, RBAC groups,
    /// analytics, the Compliance feed); `None` for a `preview` one.
    pub enterprise: Option<crate::enterprise::Enterprise>,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub org_id: String,
    pub scopes: BTreeSet<String>,
    pub revoked: bool,
    /// The `apikey_…` id activities name as their `api_actor`.
    pub api_key_id: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteCounter {
    pub requests: u64,
    /// Every non-GET request.
    pub writes: u64,
    /// The non-GET requests answered 2xx: writes that changed something (a scope probe's DELETE of a skill
    /// that cannot exist answers 404 and changes nothing).
    pub applied: u64,
}

/// What the simulator received, for tests that assert on the wire (the key itself is not kept).
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedRequest {
    pub method: String,
    pub route: String,
    pub path: String,
    pub query: String,
    pub api_key_last4: Option<String>,
    pub anthropic_version: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Default)]
pub struct State {
    pub orgs: BTreeMap<String, Org>,
    pub keys: HashMap<String, Key>,
    pub faults: HashMap<String, RouteFaults>,
    pub counters: BTreeMap<String, RouteCounter>,
    pub received: VecDeque<ReceivedRequest>,
    /// Per-org native audit-log rate limit (600 requests per minute).
    pub audit_buckets: HashMap<String, crate::faults::TokenBucket>,
    /// Plugins with a write in flight: another write to one of them gets 503 + `x-should-retry: true`.
    pub writing_plugins: std::collections::HashSet<String>,
}

/// Shared handle to the simulator's state.
#[derive(Clone, Default)]
pub struct Sim(Arc<Mutex<State>>);

impl Sim {
    pub fn new() -> Sim {
        Sim::default()
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not take the whole simulator down with it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn reset(&self) {
        *self.lock() = State::default();
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
