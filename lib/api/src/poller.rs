//! Capability 4: the audit poller. For every connected tenant, concurrently with a bound: page the audit
//! log from the stored cursor, write the normalized events (idempotent by key), then move the cursor with a
//! condition on the value read, all under the tick lease. A crash, a retry, or two runs at once never lose an
//! event or store one twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claresia_anthropic::{AnthropicError, Deadline, ErrorKind, Page};
use claresia_aws::telemetry::Quarantined;
use claresia_aws::PollState;
use claresia_domain::catalog::WorkspaceMapping;
use claresia_domain::telemetry::{
    checked_utc_millis, normalize, utc_millis, Normalized, Routing, SkipReason, TelemetryEvent,
    MAX_ID_BYTES,
};
use claresia_domain::{AdminKey, ConnectionState, LiveConnection, TenantSlug};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::{metrics, ApiError, App};

/// A stable id for a quarantined event that has none (FNV-1a of its raw text).
pub(crate) fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The stored key, cached in memory so a tick does not call Secrets Manager for every tenant. A rotation
/// is picked up within the TTL, and at once when Anthropic answers 401 to the cached key.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<TenantSlug, (AdminKey, Instant)>>,
}

impl KeyCache {
    fn get(&self, tenant: &TenantSlug, ttl: Duration) -> Option<AdminKey> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(tenant)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(k, _)| k.clone())
    }

    fn put(&self, tenant: &TenantSlug, key: AdminKey) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone(), (key, Instant::now()));
    }

    pub(crate) fn forget(&self, tenant: &TenantSlug) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }
}

/// A routing, the revision it was read under, and when.
type CachedRouting = (Option<String>, Arc<Routing>, Instant);

/// Each tenant's routing (publish ledger, workspace mappings) as last read, with the routing revision it was
/// read under: a tick reads it again when the revision on the poll item has moved, and at the latest after
/// the cache TTL (a writer that died between its ledger write and the revision stamp is not stale for ever).
#[derive(Default)]
pub struct RoutingCache {
    entries: Mutex<HashMap<TenantSlug, CachedRouting>>,
}

impl RoutingCache {
    fn get(
        &self,
        tenant: &TenantSlug,
        rev: &Option<String>,
        ttl: Duration,
    ) -> Option<Arc<Routing>> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(tenant)
            .filter(|(r, _, at)| r == rev && at.elapsed() < ttl)
            .map(|(_, routing, _)| routing.clone())
    }

    fn put(&self, tenant: &TenantSlug, rev: Option<String>, routing: Arc<Routing>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone(), (rev, routing, Instant::now()));
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantPoll {
    pub tenant: String,
    pub outcome: String,
    pub events_ingested: u64,
    pub events_skipped: u64,
    pub events_quarantined: u64,
    pub pages: u64,
    pub lag_seconds: Option<f64>,
    pub error: Option<String>,
    /// Seconds since this tenant was last polled successfully (0 when this tick succeeded).
    pub seconds_since_success: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PollSummary {
    pub tenants: usize,
    pub ok: usize,
    pub failed: usize,
    pub busy: usize,
    /// Tenants the tick's budget did not reach (slow orgs ahead of them): not a success, polled first next
    /// time.
    pub deferred: usize,
    /// What the "tenant not polled for 5 minutes" alarm watches: the longest time any connected tenant
    /// has gone without a successful poll.
    pub oldest_success_age_seconds: f64,
    /// Another run held the tick lease (an overlapping or duplicated schedule delivery): this one did
    /// nothing.
    pub overlapped: bool,
    pub events_ingested: u64,
    pub events_skipped: u64,
    pub events_quarantined: u64,
    pub results: Vec<TenantPoll>,
}

impl App {
    /// The key `record` names: cached (or batch-read) when it is that key, else read from the secret
    /// version the record names (a concurrent rotation may have made another version current).
    pub(crate) async fn cached_key(
        &self,
        record: &LiveConnection,
        fresh: bool,
    ) -> Result<Option<AdminKey>, ApiError> {
        let tenant = &record.tenant;
        let ttl = self.config.key_cache_ttl;
        let named = |k: &AdminKey| {
            record.key_fingerprint.is_empty()
                || k.fingerprint().to_string() == record.key_fingerprint
        };
        if !fresh {
            if let Some(k) = self.key_cache.get(tenant, ttl).filter(named) {
                return Ok(Some(k));
            }
        }
        let key = self
            .keys
            .get_version(tenant, record.secret_version_id.as_deref())
            .await?;
        match &key {
            Some(k) => self.key_cache.put(tenant, k.clone()),
            None => self.key_cache.forget(tenant),
        }
        Ok(key)
    }

    /// One tick: polls every connected tenant within `deadline`.
    pub async fn poll_all(&self, deadline: Deadline) -> Result<PollSummary, ApiError> {
        let records = self.hub.live_connections().await?;
        let (results, overlapped) = match self.tick(records, deadline).await? {
            Tick::Ran(results) => (results, false),
            Tick::Overlapped => (Vec::new(), true),
        };
        let mut s = PollSummary {
            tenants: results.len(),
            overlapped,
            ..PollSummary::default()
        };
        for r in &results {
            match r.outcome.as_str() {
                "ok" => s.ok += 1,
                "busy" | "skipped" => s.busy += 1,
                // Behind: the enterprise feed's catch-up ran out of time, its cursor saved per page.
                "deferred" | "behind" => s.deferred += 1,
                _ => s.failed += 1,
            }
            s.events_ingested += r.events_ingested;
            s.events_skipped += r.events_skipped;
            s.events_quarantined += r.events_quarantined;
        }
        let max_lag = results
            .iter()
            .filter_map(|r| r.lag_seconds)
            .fold(0.0, f64::max);
        let oldest_success = results
            .iter()
            .filter_map(|r| r.seconds_since_success)
            .fold(0.0, f64::max);
        metrics::emit(
            &self.config.stage,
            &[
                ("EventsIngested", s.events_ingested as f64, "Count"),
                ("EventsSkipped", s.events_skipped as f64, "Count"),
                ("EventsQuarantined", s.events_quarantined as f64, "Count"),
                ("TenantsPolled", s.ok as f64, "Count"),
                ("ApiErrors", s.failed as f64, "Count"),
                ("PollLagSeconds", max_lag, "Seconds"),
                ("OldestSuccessfulPollAgeSeconds", oldest_success, "Seconds"),
                ("TenantsDeferred", s.deferred as f64, "Count"),
                ("OverlappingTicks", u8::from(overlapped) as f64, "Count"),
            ],
        );
        s.oldest_success_age_seconds = oldest_success;
        s.results = results;
        Ok(s)
    }

    /// Polls one tenant (a tick of one); every failure is recorded on its status.
    pub async fn poll_tenant(&self, tenant: TenantSlug, deadline: Deadline) -> TenantPoll {
        let alone = |outcome: &str, error: Option<String>| TenantPoll {
            tenant: tenant.to_string(),
            outcome: outcome.into(),
            error,
            ..TenantPoll::default()
        };
        match self.hub.connection(&tenant).await {
            Ok(Some(record)) => match self
                .tick(vec![LiveConnection::from(&record)], deadline)
                .await
            {
                Ok(Tick::Ran(mut results)) => {
                    results.pop().unwrap_or_else(|| alone("skipped", None))
                }
                Ok(Tick::Overlapped) => alone("busy", None),
                Err(e) => alone("error", Some(e.to_string())),
            },
            Ok(None) => alone("skipped", None),
            Err(e) => alone("error", Some(e.to_string())),
        }
    }

    /// Takes the tick lease, reads every tenant's cursor (100 per round trip) and the keys not cached (20
    /// per round trip), polls the tenants concurrently with a bound, and gives the lease back.
    async fn tick(
        &self,
        records: Vec<LiveConnection>,
        deadline: Deadline,
    ) -> Result<Tick, ApiError> {
        let (connected, idle): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| r.state == ConnectionState::Connected);
        let mut results: Vec<TenantPoll> = idle
            .iter()
            .map(|r| TenantPoll {
                tenant: r.tenant.to_string(),
                outcome: "skipped".into(),
                ..TenantPoll::default()
            })
            .collect();
        if connected.is_empty() {
            return Ok(Tick::Ran(results));
        }
        let owner = format!(
            "tick-{}-{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos(),
            std::process::id()
        );
        let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let lease_until = now_ms
            + deadline.remaining().as_millis() as i128
            + self.config.poll_lease_slack.as_millis() as i128;
        if !self
            .hub
            .acquire_tick_lease(&owner, now_ms, lease_until)
            .await?
        {
            tracing::info!("another poller run holds the tick lease; this delivery does nothing");
            return Ok(Tick::Overlapped);
        }
        let polled = match self.poll_under_lease(connected, deadline).await {
            Ok(p) => p,
            Err(e) => {
                self.release_tick_lease(&owner).await;
                return Err(e);
            }
        };
        self.release_tick_lease(&owner).await;
        results.extend(polled);
        Ok(Tick::Ran(results))
    }

    async fn poll_under_lease(
        &self,
        connected: Vec<LiveConnection>,
        deadline: Deadline,
    ) -> Result<Vec<TenantPoll>, ApiError> {
        let tenants: Vec<TenantSlug> = connected.iter().map(|r| r.tenant.clone()).collect();
        let mut states = self.hub.poll_states(&tenants).await?;
        self.prefetch_keys(&tenants).await;
        // Fairness: the start order rotates tick to tick (by the minute, and by this sandbox's tick count
        // when ticks come faster), so a slow org never keeps the same tenants at the back of every tick.
        let mut connected = connected;
        connected.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        if !connected.is_empty() {
            let minute = (OffsetDateTime::now_utc().unix_timestamp() / 60) as usize;
            let turn = self.tick_turn.fetch_add(1, Ordering::Relaxed) as usize;
            let n = connected.len();
            connected.rotate_left(minute.wrapping_add(turn) % n);
        }
        let polls: Vec<_> = connected
            .into_iter()
            .map(|r| {
                let state = states.remove(&r.tenant).unwrap_or_default();
                self.poll_connection(r, state, deadline)
            })
            .collect();
        Ok(stream::iter(polls)
            .buffer_unordered(self.config.poll_concurrency)
            .collect()
            .await)
    }

    async fn release_tick_lease(&self, owner: &str) {
        if let Err(e) = self.hub.release_tick_lease(owner).await {
            // Not fatal: the lease lapses at its deadline, before the next scheduled tick.
            tracing::warn!(error = %e, "could not release the poller's tick lease");
        }
    }

    /// Reads the keys the cache lacks in batches (a cold sandbox's first tick); a tenant the batch did
    /// not answer is read alone later, with its own error.
    async fn prefetch_keys(&self, tenants: &[TenantSlug]) {
        let ttl = self.config.key_cache_ttl;
        let missing: Vec<TenantSlug> = tenants
            .iter()
            .filter(|t| self.key_cache.get(t, ttl).is_none())
            .cloned()
            .collect();
        if missing.len() < 2 {
            return;
        }
        match self.keys.get_many(&missing).await {
            Ok(keys) => {
                for (t, k) in keys {
                    self.key_cache.put(&t, k);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "batch read of keys failed; reading them one by one")
            }
        }
    }

    async fn poll_connection(
        &self,
        record: LiveConnection,
        state: PollState,
        deadline: Deadline,
    ) -> TenantPoll {
        let tenant = record.tenant.clone();
        let mut result = TenantPoll {
            tenant: tenant.to_string(),
            ..TenantPoll::default()
        };
        let last_success = state.status.last_success_at.clone();
        let mut failed_status = state.status.clone();
        match self.poll_inner(&record, state, deadline, &mut result).await {
            Ok(outcome) => result.outcome = outcome.into(),
            Err(e) => {
                result.outcome = "error".into();
                result.error = Some(e.to_string());
                tracing::warn!(tenant = %tenant, error = %e, "poll failed");
                // Whatever failed, the status says so (never the previous success with no error).
                failed_status.last_poll_at = Some(utc_millis(OffsetDateTime::now_utc()));
                failed_status.error = Some(e.to_string());
                if let Err(w) = self.hub.record_poll_status(&tenant, &failed_status).await {
                    tracing::warn!(tenant = %tenant, error = %w, "could not record the failed poll's status");
                }
            }
        }
        result.seconds_since_success = match result.outcome.as_str() {
            "ok" => Some(0.0),
            "skipped" => None,
            _ => Some(seconds_since(last_success.as_deref(), &record)),
        };
        result
    }

    async fn poll_inner(
        &self,
        record: &LiveConnection,
        state: PollState,
        deadline: Deadline,
        out: &mut TenantPoll,
    ) -> Result<&'static str, ApiError> {
        if record.surface == claresia_domain::Surface::Enterprise {
            return self.poll_enterprise(record, state, deadline, out).await;
        }
        let tenant = &record.tenant;
        let (mut cursor, mut status) = (state.cursor, state.status);
        status.last_poll_at = Some(utc_millis(OffsetDateTime::now_utc()));
        status.error = None;

        let routing = self.routing(tenant, state.routing_rev).await?;
        let audit_path = format!("/v1/organizations/{}/audit_logs", record.org_id);
        let query = [("event_types", "skill.invoked,skill.failed".to_owned())];
        let limit = self.config.poll_page_limit;
        let mut key = self
            .cached_key(record, false)
            .await?
            .ok_or_else(|| ApiError::NotConnected(tenant.to_string()))?;
        let mut refreshed = false;
        let mut newest: Option<OffsetDateTime> = None;
        // The last page's cursor move, made by the finishing write (one write instead of two).
        let mut last_move: Option<String> = None;
        let outcome = loop {
            if deadline.remaining() < Duration::from_secs(2) {
                // Reached too late to read a page: not a success (the stale-tenant alarm keeps counting),
                // and the rotation puts it earlier next tick.
                if out.pages == 0 {
                    status.error = Some(
                        "deferred: the tick's time ran out before this tenant's turn (slow organizations ahead of it)".into(),
                    );
                    break "deferred";
                }
                break "ok";
            }
            let page_res = self
                .anthropic
                .list_page(
                    &key,
                    &audit_path,
                    &query,
                    cursor.as_deref(),
                    limit,
                    deadline,
                )
                .await;
            let page: Page<Value> = match page_res {
                Ok(p) => p,
                Err(e) if e.kind() == ErrorKind::Authentication && !refreshed => {
                    // Maybe rotated since we cached it: try the stored key once before giving up.
                    refreshed = true;
                    match self.cached_key(record, true).await? {
                        Some(k) if k != key => {
                            key = k;
                            continue;
                        }
                        _ => {
                            self.mark_needs_attention(tenant, &key, &e).await?;
                            status.error = Some(format!("Anthropic answered 401: {}", e.summary()));
                            break "unauthorized";
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Authentication => {
                    self.mark_needs_attention(tenant, &key, &e).await?;
                    status.error = Some(format!("Anthropic answered 401: {}", e.summary()));
                    break "unauthorized";
                }
                Err(e)
                    if e.kind() == ErrorKind::InvalidRequest
                        && cursor.is_some()
                        && e.upstream_message().is_some_and(|m| m.contains("after_id")) =>
                {
                    // The cursor aged out of the 30-day window: restart from the oldest event, say so.
                    let expired = cursor.clone().unwrap_or_default();
                    if !self
                        .hub
                        .reset_cursor(tenant, &expired)
                        .await
                        .map_err(ApiError::from)?
                    {
                        break "busy";
                    }
                    status.gap = Some(format!(
                        "cursor {expired} had expired at {}; polling restarted from the oldest available event",
                        utc_millis(OffsetDateTime::now_utc())
                    ));
                    metrics::emit(&self.config.stage, &[("CursorGaps", 1.0, "Count")]);
                    tracing::warn!(tenant = %tenant, cursor = %expired, "audit cursor expired; restarting from the oldest event");
                    cursor = None;
                    continue;
                }
                Err(e) => {
                    metrics::emit(&self.config.stage, &[(error_metric(&e), 1.0, "Count")]);
                    status.error = Some(e.to_string());
                    break "error";
                }
            };
            out.pages += 1;
            let now = OffsetDateTime::now_utc();
            let mut events: Vec<TelemetryEvent> = Vec::new();
            let mut quarantined = Vec::new();
            for raw in &page.data {
                match normalize(raw, &routing, now) {
                    Normalized::Event(e) => {
                        if let Ok(t) = OffsetDateTime::parse(
                            &e.occurred_at,
                            &time::format_description::well_known::Rfc3339,
                        ) {
                            newest = Some(newest.map_or(t, |n| n.max(t)));
                        }
                        events.push(*e);
                    }
                    Normalized::Skipped(SkipReason::NotOurs)
                    | Normalized::Skipped(SkipReason::UnknownType) => out.events_skipped += 1,
                    Normalized::Quarantined(reason) => {
                        let text = raw.to_string();
                        let id = raw
                            .get("id")
                            .and_then(Value::as_str)
                            .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES)
                            .map(str::to_owned)
                            .unwrap_or_else(|| short_hash(&text));
                        quarantined.push(Quarantined {
                            key: id,
                            raw: text,
                            reason,
                        });
                    }
                }
            }
            // Durably write the page (its batches at once), then (and only then) move the cursor past it.
            let chunks: Vec<&[TelemetryEvent]> = events.chunks(25).collect();
            let written = futures::future::join_all(chunks.iter().map(|c| async move {
                let _permit = self.telemetry_writes.acquire().await;
                self.telemetry.write_events(&record.org_id, c).await
            }))
            .await;
            for w in written {
                w.map_err(ApiError::from)?;
            }
            if !quarantined.is_empty() {
                self.telemetry
                    .write_quarantined(&record.org_id, tenant, &quarantined)
                    .await
                    .map_err(ApiError::from)?;
                tracing::warn!(tenant = %tenant, count = quarantined.len(), "audit events quarantined");
            }
            out.events_ingested += events.len() as u64;
            out.events_quarantined += quarantined.len() as u64;
            // `has_more` is the contract's word on whether more follow (a page may be short and not the
            // last). A page that says "more" but gives no position to continue from ends the run: the next
            // tick asks again from the same cursor instead of spinning on it.
            let moved_to = page.last_id.clone().filter(|_| !page.data.is_empty());
            let final_page = !page.has_more || moved_to.is_none();
            if final_page {
                last_move = moved_to;
                break "ok";
            }
            if let Some(last) = moved_to {
                if !self
                    .hub
                    .advance_cursor(tenant, cursor.as_deref(), &last)
                    .await
                    .map_err(ApiError::from)?
                {
                    // Another run took over: it will carry on from where the cursor is.
                    break "busy";
                }
                cursor = Some(last);
            }
        };
        let lag = newest.map(|n| (OffsetDateTime::now_utc() - n).as_seconds_f64().max(0.0));
        out.lag_seconds = lag;
        status.cursor = last_move.clone().or_else(|| cursor.clone());
        status.events_ingested = out.events_ingested;
        status.events_skipped = out.events_skipped;
        status.events_quarantined = out.events_quarantined;
        status.lag_seconds = lag.or(status.lag_seconds);
        if outcome == "ok" {
            status.last_success_at = status.last_poll_at.clone();
        }
        let finished = self
            .hub
            .finish_poll(tenant, &status, cursor.as_deref(), last_move.as_deref())
            .await
            .map_err(ApiError::from)?;
        // The cursor moved under us: a run that outlived its lease met the one that took it over, which
        // records its own status and carries on from the cursor.
        Ok(if finished { outcome } else { "busy" })
    }

    pub(crate) async fn routing(
        &self,
        tenant: &TenantSlug,
        rev: Option<String>,
    ) -> Result<Arc<Routing>, ApiError> {
        if let Some(r) = self
            .routing_cache
            .get(tenant, &rev, self.config.key_cache_ttl)
        {
            return Ok(r);
        }
        let ledger = self.hub.ledger(tenant).await?;
        let ledger_ids: BTreeMap<String, String> = ledger
            .values()
            .filter(|e| !e.remote_id.is_empty())
            .map(|e| (e.remote_id.clone(), e.name.clone()))
            .collect();
        let mappings: Vec<WorkspaceMapping> = self.hub.workspace_mappings(tenant).await?;
        // A target that is no longer a registered sub-tenant (an operator released its slug to a customer
        // of its own) is not this Hub's to report to: what its names still bring in is the Hub's own.
        let registered = self.hub.sub_tenants(tenant).await?;
        let owner = |target: TenantSlug| {
            if &target == tenant || registered.contains_key(&target) {
                target
            } else {
                tenant.clone()
            }
        };
        let routing = Arc::new(Routing {
            hub: Some(tenant.clone()),
            published: {
                let now = OffsetDateTime::now_utc().unix_timestamp();
                ledger
                    .into_values()
                    .filter(|e| e.resolves_at(now))
                    .map(|e| (e.name, (owner(e.target), e.skill_id)))
                    .collect()
            },
            remote_ids: ledger_ids,
            groups: mappings
                .iter()
                .filter_map(|m| Some((m.group_id.clone()?, m.sub_tenant.clone()?)))
                .collect(),
            workspaces: mappings
                .into_iter()
                .filter(|m| !m.workspace_id.is_empty())
                .filter_map(|m| m.sub_tenant.map(|s| (m.workspace_id, s)))
                .collect::<BTreeMap<_, _>>(),
        });
        self.routing_cache.put(tenant, rev, routing.clone());
        Ok(routing)
    }

    async fn mark_needs_attention(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        e: &AnthropicError,
    ) -> Result<(), ApiError> {
        self.key_cache.forget(tenant);
        let reason = format!("the audit poller got 401 from Anthropic ({})", e.summary());
        self.key_refused(tenant, key, reason).await?;
        metrics::emit(&self.config.stage, &[("AnthropicErrors401", 1.0, "Count")]);
        Ok(())
    }

    /// `GET /tenants/{tenant}/telemetry?since=&limit=&cursor=`: newest first, paginated.
    pub async fn telemetry(&self, tenant: &TenantSlug, query: &str) -> Result<Value, ApiError> {
        let mut since = None;
        let mut limit = 50i32;
        let mut cursor = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "since" => {
                    let t =
                        OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                            .map_err(|e| {
                            ApiError::InvalidQuery(format!(
                                "since={v:?} is not an RFC 3339 time: {e}"
                            ))
                        })?;
                    since = Some(checked_utc_millis(t).ok_or_else(|| {
                        ApiError::InvalidQuery(format!(
                            "since={v:?} is past the end of the calendar in UTC"
                        ))
                    })?);
                }
                "limit" => {
                    limit = v
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (1..=500).contains(n))
                        .ok_or_else(|| {
                            ApiError::InvalidQuery(format!(
                                "limit={v:?} must be a whole number from 1 to 500"
                            ))
                        })?;
                }
                "cursor" => cursor = Some(v.into_owned()),
                other => {
                    return Err(ApiError::InvalidQuery(format!(
                        "unknown parameter {other:?}; use since, limit, cursor"
                    )))
                }
            }
        }
        let start = cursor
            .map(|c| TelemetryCursor::open(&c, tenant, since.as_deref()))
            .transpose()?;
        let (events, next) = self
            .telemetry
            .events_keyed(
                tenant,
                since.as_deref(),
                limit,
                start.as_ref().map(|(k, u)| (k.as_str(), u.as_str())),
            )
            .await?;
        // An event may carry 16 KB of error message: a full page is cut to stay under 4 MiB.
        let items = events
            .into_iter()
            .map(|(key, mut e)| {
                // Activities stored before `detail` existed carry it in `error_message` alone.
                if e.detail.is_none() && !e.event_type.starts_with("skill.") {
                    e.detail = e.error_message.clone();
                }
                (key, serde_json::json!(e))
            })
            .collect();
        let (events, next) = crate::paging::fit(items, next, crate::paging::MAX_PAGE_BYTES);
        Ok(serde_json::json!({
            "tenant": tenant,
            "events": events,
            "next_cursor": next.map(|key| TelemetryCursor::seal(tenant, since.as_deref(), key)),
        }))
    }
}

/// For the "tenant not polled for 5 minutes" alarm: since the last success, else since connecting.
fn seconds_since(last_success: Option<&str>, record: &LiveConnection) -> f64 {
    let rfc = &time::format_description::well_known::Rfc3339;
    let since = last_success
        .and_then(|l| OffsetDateTime::parse(l, rfc).ok())
        .unwrap_or(record.connected_at);
    (OffsetDateTime::now_utc() - since)
        .as_seconds_f64()
        .max(0.0)
}

/// What a tick did: polled its tenants, or nothing because another run holds the tick lease.
enum Tick {
    Ran(Vec<TenantPoll>),
    Overlapped,
}

fn error_metric(e: &AnthropicError) -> &'static str {
    match e.status() {
        Some(429) => "AnthropicErrors429",
        Some(529) => "AnthropicErrors529",
        Some(s) if s >= 500 => "AnthropicErrors5xx",
        Some(_) => "AnthropicErrors4xx",
        None => "AnthropicErrorsTransport",
    }
}

/// A telemetry page's `next_cursor`: where the page stopped, bound to the tenant and the `since` it was
/// read with, so a cursor from another query (or made up) is refused rather than answered wrongly.
#[derive(Serialize, serde::Deserialize)]
struct TelemetryCursor {
    t: String,
    s: Option<String>,
    k: String,
    u: String,
}

impl TelemetryCursor {
    fn seal(tenant: &TenantSlug, since: Option<&str>, (key, uid): (String, String)) -> String {
        let c = TelemetryCursor {
            t: tenant.to_string(),
            s: since.map(str::to_owned),
            k: key,
            u: uid,
        };
        base64_url_encode(&serde_json::to_string(&c).unwrap_or_default())
    }

    /// The position (event key, item key) to continue after, or 400 naming `cursor` and why.
    fn open(
        raw: &str,
        tenant: &TenantSlug,
        since: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let bad = |why: &str| {
            ApiError::InvalidQuery(format!(
                "cursor is not a next_cursor this API returned for this query ({why}); start again without it"
            ))
        };
        let c: TelemetryCursor = base64_url_decode(raw)
            .and_then(|text| serde_json::from_str(&text).ok())
            .ok_or_else(|| bad("unreadable"))?;
        if c.t != tenant.as_str() {
            return Err(bad("it belongs to another tenant"));
        }
        if c.s.as_deref() != since {
            return Err(bad("it was returned for another since"));
        }
        // An event key is "{RFC 3339 time}#{event id}", within `since` and DynamoDB's key size.
        let event_id = c.k.split_once('#').and_then(|(at, id)| {
            OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|_| id)
        });
        let well_formed = c.k.len() <= 1024
            && c.u.len() <= 1024
            && event_id.is_some_and(|id| !id.is_empty() && c.u.ends_with(&format!("#{id}")));
        if !well_formed || since.is_some_and(|s| c.k.as_str() < s) {
            return Err(bad("its position is not an event of this query"));
        }
        Ok((c.k, c.u))
    }
}

fn base64_url_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn base64_url_decode(s: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl App {
    /// One scheduled tick. It stops 5 s before the invocation's deadline (`deadline_ms`, ms since the epoch),
    /// so a tick never runs into the next.
    pub async fn handle_poll_tick(
        &self,
        event: &aws_lambda_events::eventbridge::EventBridgeEvent<Value>,
        deadline_ms: u64,
    ) -> Result<Value, ApiError> {
        let budget = crate::tick_budget(deadline_ms);
        let summary = self.poll_all(Deadline::after(budget)).await?;
        tracing::info!(
            tick = event.id.as_deref().unwrap_or_default(),
            tenants = summary.tenants,
            ok = summary.ok,
            failed = summary.failed,
            busy = summary.busy,
            events = summary.events_ingested,
            "audit poll tick finished"
        );
        Ok(serde_json::json!(summary))
    }
}
