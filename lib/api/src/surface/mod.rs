//! The Anthropic port: what the services (connect/test, publish, poll) need from Anthropic, as traits they
//! own, with one adapter per surface. `preview` speaks the contract the product page imagines
//! (`anthropic-api.md`); `enterprise` what Claude Enterprise documents today (`claude-enterprise-api.md`).
//! A connection's surface is stored on its record; a third surface is a new adapter here and one arm in
//! [`Surfaces::get`], not an edit in every service.
//!
//! - `mod.rs` (here): the traits — [`AnthropicSurface`] (test a key, what a workspace mapping names and
//!   which exist, hand out the rest), [`Publisher`]
//!   (a connection's published skills), [`Feed`] and [`UsageReport`] (what the poller reads).
//! - `preview.rs`, `enterprise.rs`: each surface's key test and publisher.
//! - `audit_log.rs`, `compliance_feed.rs`: each surface's feed (the page call, normalization and the
//!   cursor-commit rule); the one ingest loop that runs them is `crate::ingest`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use claresia_anthropic::{AnthropicClient, AnthropicError, Deadline, ErrorKind, TokenPage};
use claresia_aws::LedgerEntry;
use claresia_domain::catalog::{
    Acl, Action, Archetype, DesiredSkill, RemoteSkill, WorkspaceMapping,
};
use claresia_domain::enterprise_feed::DriftNote;
use claresia_domain::telemetry::{Routing, TelemetryEvent};
use claresia_domain::{
    AdminKey, Attestation, ConnectionRecord, Scope, ScopeReport, Surface, TenantSlug, TestOutcome,
};
use serde_json::Value;
use time::OffsetDateTime;

pub mod audit_log;
pub mod compliance_feed;
pub mod enterprise;
pub mod preview;

/// What makes a published skill ours on a surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The published object carries our metadata (`managed_by`, `tenant`): the ledger is derived from it.
    Metadata,
    /// It carries none: our ledger of remote ids (plus the name prefix) is the only proof, so a create is
    /// claimed in the ledger before it is sent.
    Ledger,
}

/// One connection's published skills on its surface: list them, and change them one at a time.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// What the org holds under Claresia's names, as the plan reads it: ours carry our metadata (from the
    /// object or, on ledger surfaces, from `ledger`), others none. Access is read only for skills whose
    /// id is in `access_of` (`None`: all), as the plan compares nothing else.
    async fn list(
        &self,
        ledger: &BTreeMap<String, LedgerEntry>,
        access_of: Option<&BTreeSet<String>>,
    ) -> Result<Vec<RemoteSkill>, AnthropicError>;
    /// Creates the skill and answers its remote id (its access is set by [`Publisher::set_access`]).
    async fn create(&self, desired: &DesiredSkill) -> Result<String, AnthropicError>;
    /// Replaces its definition (a new version).
    async fn replace(&self, remote_id: &str, desired: &DesiredSkill) -> Result<(), AnthropicError>;
    /// Makes its access exactly `acl`; `fresh`: just created, so nothing is set yet.
    async fn set_access(
        &self,
        remote_id: &str,
        acl: &Acl,
        fresh: bool,
    ) -> Result<(), AnthropicError>;
    async fn delete(&self, remote_id: &str) -> Result<(), AnthropicError>;
    /// Narrows a skill of ours whose access is wider than its grants (a plugin open to the whole org)
    /// back to them, before anything else is written; `true` if it wrote.
    async fn contain(&self, _remote: &mut RemoteSkill) -> Result<bool, AnthropicError> {
        Ok(false)
    }
    /// Why `acl` cannot be applied (e.g. a group the org does not have), before anything is written.
    async fn check_access(&self, _acl: &Acl) -> Result<(), String> {
        Ok(())
    }
    /// The part of `acl` this surface can express: what `list` reports once `set_access(acl)` ran.
    fn expressible(&self, acl: Acl) -> Acl;
    fn ownership(&self) -> Ownership;
    /// The org's write limit when the plan must be paced to it (for the publish report's ETA).
    fn writes_per_minute(&self) -> Option<f64>;
    /// Whether an answer Anthropic says not to repeat (a spend cap, `x-should-retry: false`) still leaves
    /// the skill pending for the sweep (`false`: it is a refusal, reported with its reason).
    fn pends_on_final_answers(&self) -> bool {
        true
    }
    /// The org's read limit, where reads left for a later run pace it too (for the ETA).
    fn reads_per_minute(&self) -> Option<f64> {
        None
    }
    /// How many writes an action takes at most.
    fn writes_of(&self, action: &Action) -> u32;
}

/// One surface: test a key, and publish for a connection.
#[async_trait]
pub trait AnthropicSurface: Send + Sync {
    fn surface(&self) -> Surface;
    /// The connection test: identify the org and verify every required scope one by one.
    async fn test(
        &self,
        key: &AdminKey,
        attestation: Option<&Attestation>,
        deadline: Deadline,
    ) -> Result<TestOutcome, AnthropicError>;
    fn publisher<'a>(
        &'a self,
        hub: &'a TenantSlug,
        record: &'a ConnectionRecord,
        key: &'a AdminKey,
        deadline: Deadline,
    ) -> Box<dyn Publisher + 'a>;
    /// The connection's activity feed, for one poll.
    fn feed<'a>(&'a self, source: FeedSource) -> Box<dyn Feed + 'a>;
    /// What a workspace mapping names on this surface (for its validation messages).
    fn mapping(&self) -> MappingTarget;
    /// Every target a mapping may name in the connected org: id → name.
    async fn mapping_targets(
        &self,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<BTreeMap<String, String>, AnthropicError>;
    /// Why an archetype cannot be granted as written on this surface: (JSON path, reason).
    fn archetype_problems(&self, _archetype: &Archetype) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
}

/// What a workspace mapping names on a surface: workspaces (preview) or RBAC groups (enterprise).
#[derive(Debug, Clone, Copy)]
pub struct MappingTarget {
    /// The mapping's field that names it.
    pub field: &'static str,
    /// The field that belongs to the other surface (a stray one is refused).
    pub other: &'static str,
    /// What it is, in a message ("RBAC group").
    pub noun: &'static str,
    /// The target a mapping names here (empty if none), and whether it also sets `other`.
    pub pick: for<'m> fn(&'m WorkspaceMapping) -> (&'m str, bool),
}

/// Where a feed page is read from.
#[derive(Debug, Clone, Copy)]
pub enum FeedAt<'a> {
    /// Where a read with no cursor starts: the audit log's oldest event, the Compliance feed's newest
    /// activity (a connection's history before it is not ours).
    Start,
    /// The page past the saved cursor, in the feed's catch-up direction.
    After(&'a str),
    /// The trailing window since `since`, re-read for items indexed late; with `from`, the page past it.
    Window {
        since: OffsetDateTime,
        from: Option<&'a str>,
    },
}

/// One item of a feed page, normalized.
#[derive(Debug)]
pub enum FeedItem {
    /// Ours: stored as an event of its (sub-)tenant; with `drift` when it shows one of our skills changed
    /// outside Claresia.
    Event {
        event: Box<TelemetryEvent>,
        drift: Option<DriftNote>,
    },
    /// Not about our skills.
    Skipped,
    /// Unreadable: stored raw under `key` with the reason, never dropped in silence.
    Quarantined {
        key: String,
        raw: String,
        reason: String,
    },
}

/// A page as the ingest loop uses it, the surface's cursor-commit rule applied.
#[derive(Debug, Default)]
pub struct FeedPage {
    /// Each item with the id the feed gave it (a window's items already stored are skipped by it).
    pub items: Vec<(Option<String>, FeedItem)>,
    /// Where the read goes on from: the cursor to commit once the page is stored (`None`: it stays), or
    /// in a window the page to read next.
    pub next: Option<String>,
    /// Whether the feed has more past `next`.
    pub more: bool,
}

/// One connection's activity feed: the preview audit log, or the Compliance Activity Feed. Built per poll.
#[async_trait]
pub trait Feed: Send + Sync {
    async fn page(&mut self, key: &AdminKey, at: FeedAt<'_>) -> Result<FeedPage, AnthropicError>;
    /// Whether `e`, answered to a page [`FeedAt::After`] the saved cursor, refuses the cursor itself (it
    /// expired, or is not one of this feed's): the read restarts at [`FeedAt::Start`].
    fn refuses_cursor(&self, e: &AnthropicError) -> bool;
    /// The page field the cursor is taken from (for the status when a page gives none).
    fn position_field(&self) -> &'static str;
    /// What the status records as the gap when `cursor` was refused.
    fn restart_gap(&self, cursor: &str, e: &AnthropicError) -> String;
    /// How far back a read that caught up re-reads for items indexed late (`None`: the feed never
    /// indexes late).
    fn late_window(&self) -> Option<time::Duration> {
        None
    }
    /// The connector's own API key ids the feed has seen, carried on the poll status (`None`: the surface
    /// does not tell them).
    fn connector_keys(&self) -> Option<Vec<String>> {
        None
    }
    /// The surface's daily usage report of our skills, where it has one.
    fn usage(&self) -> Option<&dyn UsageReport> {
        None
    }
}

/// What a feed is built from.
pub struct FeedSource {
    pub org_id: String,
    pub routing: Arc<Routing>,
    /// The connector key ids the last poll recorded.
    pub connector_keys: BTreeSet<String>,
    /// Items per page, where the surface lets us choose (the Compliance feed reads its documented maximum).
    pub page_limit: u32,
    pub deadline: Deadline,
}

/// A surface's daily usage of our skills (enterprise: the Analytics API).
#[async_trait]
pub trait UsageReport: Send + Sync {
    /// How many skill names one request may carry.
    fn names_per_request(&self) -> usize;
    /// One page of `day`'s rows for `names`.
    async fn page(
        &self,
        key: &AdminKey,
        day: &str,
        names: &[&str],
        page: Option<&str>,
    ) -> Result<TokenPage<Value>, AnthropicError>;
}

/// A stable key for an unreadable item that has no usable id (FNV-1a of its raw text).
pub(crate) fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The enterprise surface's documented per-org limits (requests per minute), lowered or raised by configuration.
#[derive(Debug, Clone, Copy)]
pub struct EnterpriseLimits {
    pub writes_per_minute: f64,
    pub reads_per_minute: f64,
    pub compliance_per_minute: f64,
    pub analytics_per_minute: f64,
}

impl Default for EnterpriseLimits {
    fn default() -> Self {
        EnterpriseLimits {
            writes_per_minute: 60.0,
            reads_per_minute: 300.0,
            compliance_per_minute: 600.0,
            analytics_per_minute: 60.0,
        }
    }
}

/// Files one scope's probe answer: verified, missing (a 403 naming it), or unverified. A write probe
/// (`write_probe`) targets something that cannot exist, so its 404 means the write was allowed. Answers
/// the error that ends the test (401, unavailability).
pub(crate) fn classify_scope(
    scopes: &mut ScopeReport,
    scope: Scope,
    res: Result<(), AnthropicError>,
    write_probe: bool,
) -> Option<AnthropicError> {
    match res {
        Ok(()) => scopes.verified.push(scope),
        Err(e) if e.kind() == ErrorKind::Permission => {
            match e
                .upstream_message()
                .and_then(Scope::from_missing_scope_message)
            {
                Some(s) if s == scope => scopes.missing.push(scope),
                _ => scopes.unverified.push(scope),
            }
        }
        Err(e) if write_probe && e.kind() == ErrorKind::NotFound => scopes.verified.push(scope),
        Err(e) if matches!(e.kind(), ErrorKind::Authentication) || e.is_unavailable() => {
            return Some(e)
        }
        Err(_) => scopes.unverified.push(scope),
    }
    None
}

pub(crate) fn verdict_from_error(
    e: AnthropicError,
    surface: Surface,
) -> Result<TestOutcome, AnthropicError> {
    let rid = e.request_id().map(str::to_owned);
    match e.kind() {
        ErrorKind::Authentication => Ok(TestOutcome::unauthorized(rid).on(surface)),
        ErrorKind::Permission => Ok(TestOutcome::forbidden(
            rid,
            e.upstream_message()
                .and_then(Scope::from_missing_scope_message),
        )
        .on(surface)),
        _ if e.is_unavailable() => Ok(TestOutcome::unavailable(&e.summary(), rid).on(surface)),
        _ => Err(e),
    }
}

/// Every surface's adapter, built once per sandbox.
pub struct Surfaces {
    pub preview: preview::PreviewSurface,
    pub enterprise: enterprise::EnterpriseSurface,
}

impl Surfaces {
    pub fn new(client: AnthropicClient, limits: EnterpriseLimits) -> Self {
        Surfaces {
            preview: preview::PreviewSurface::new(client.clone()),
            enterprise: enterprise::EnterpriseSurface::new(client, limits),
        }
    }

    pub fn get(&self, surface: Surface) -> &dyn AnthropicSurface {
        match surface {
            Surface::Preview => &self.preview,
            Surface::Enterprise => &self.enterprise,
        }
    }
}
