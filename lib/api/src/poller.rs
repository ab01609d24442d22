//! Capability 4: the audit poller's per-tenant shell. One tenant's poll runs under its own poll lease
//! ([`App::poll_one`], what a queue worker calls), reads its key (cached) and routing (cached by revision),
//! hands the feed to the one ingest loop (`crate::ingest`), and reports a typed [`PollOutcome`]. Also the
//! in-process fleet pass tests and benchmarks drive, and the `GET …/telemetry` read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claresia_anthropic::Deadline;
use claresia_aws::{PollState, StoreError};
use claresia_domain::catalog::WorkspaceMapping;
use claresia_domain::telemetry::{utc_millis, Routing};
use claresia_domain::{AdminKey, ConnectionState, LiveConnection, TenantSlug};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use time::OffsetDateTime;

use crate::lease::LeaseKind;
use crate::{App, WorkError};

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

/// What one tenant's poll came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PollOutcome {
    /// Read to the end of what Anthropic had; a success.
    Ok,
    /// Another run polls the tenant (its lease is held, or the cursor moved under this one).
    Busy,
    /// Not connected (disconnected, or needing an admin's attention): not polled.
    #[default]
    Skipped,
    /// Already polled since the item's scheduled time (a late or repeated item).
    Superseded,
    /// Reached too late to read a page: not a success.
    Deferred,
    /// Read some pages, then ran out of time (the enterprise catch-up): not a success.
    Behind,
    /// Anthropic answered 401: the connection needs attention.
    Unauthorized,
    Error,
}

impl PollOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            PollOutcome::Ok => "ok",
            PollOutcome::Busy => "busy",
            PollOutcome::Skipped => "skipped",
            PollOutcome::Superseded => "superseded",
            PollOutcome::Deferred => "deferred",
            PollOutcome::Behind => "behind",
            PollOutcome::Unauthorized => "unauthorized",
            PollOutcome::Error => "error",
        }
    }
}

impl std::fmt::Display for PollOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for PollOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantPoll {
    pub tenant: String,
    pub outcome: PollOutcome,
    pub events_ingested: u64,
    pub events_skipped: u64,
    pub events_quarantined: u64,
    pub pages: u64,
    pub lag_seconds: Option<f64>,
    pub error: Option<String>,
    /// Seconds since this tenant's stored `last_success_at` (else since it connected), after this poll.
    pub seconds_since_success: Option<f64>,
    /// The stored `last_success_at` this poll left.
    #[serde(skip)]
    pub last_success_at: Option<String>,
    /// The poll could not run or record its status (the store failed): its item is delivered again.
    #[serde(skip)]
    pub retry: bool,
}

impl TenantPoll {
    pub(crate) fn alone(
        tenant: &TenantSlug,
        outcome: PollOutcome,
        error: Option<String>,
    ) -> TenantPoll {
        TenantPoll {
            tenant: tenant.to_string(),
            outcome,
            error,
            ..TenantPoll::default()
        }
    }

    /// The store failed before the poll could run.
    fn unrun(tenant: &TenantSlug, e: claresia_aws::StoreError) -> TenantPoll {
        TenantPoll {
            retry: true,
            ..TenantPoll::alone(tenant, PollOutcome::Error, Some(e.to_string()))
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PollSummary {
    pub tenants: usize,
    pub ok: usize,
    pub failed: usize,
    pub busy: usize,
    /// Tenants the run's budget did not reach (slow orgs ahead of them): not a success, so they are among
    /// the longest-waiting and go first next time.
    pub deferred: usize,
    /// What the "tenant not polled for 5 minutes" alarm watches: the longest time any connected tenant
    /// has gone without a successful poll.
    pub oldest_success_age_seconds: f64,
    pub events_ingested: u64,
    pub events_skipped: u64,
    pub events_quarantined: u64,
    pub results: Vec<TenantPoll>,
}

impl PollSummary {
    pub(crate) fn of(results: Vec<TenantPoll>) -> PollSummary {
        let mut s = PollSummary {
            tenants: results.len(),
            ..PollSummary::default()
        };
        for r in &results {
            match r.outcome {
                PollOutcome::Ok => s.ok += 1,
                PollOutcome::Busy | PollOutcome::Skipped | PollOutcome::Superseded => s.busy += 1,
                // Behind: the enterprise feed's catch-up ran out of time, its cursor saved per page.
                PollOutcome::Deferred | PollOutcome::Behind => s.deferred += 1,
                PollOutcome::Unauthorized | PollOutcome::Error => s.failed += 1,
            }
            s.events_ingested += r.events_ingested;
            s.events_skipped += r.events_skipped;
            s.events_quarantined += r.events_quarantined;
        }
        s.oldest_success_age_seconds = results
            .iter()
            .filter_map(|r| r.seconds_since_success)
            .fold(0.0, f64::max);
        s.results = results;
        s
    }
}

impl App {
    /// The key `record` names: cached (or batch-read) when it is that key, else read from the secret
    /// version the record names (a concurrent rotation may have made another version current).
    pub(crate) async fn cached_key(
        &self,
        record: &LiveConnection,
        fresh: bool,
    ) -> Result<Option<AdminKey>, StoreError> {
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

    /// The whole fleet in this process: every live tenant, the longest-waiting first, each through the
    /// per-tenant path a queue worker runs ([`App::poll_one`]), `POLL_CONCURRENCY` at a time. The deployed
    /// stack never runs this (its dispatcher enqueues one item per tenant for the workers); tests and
    /// benchmarks do, to drive many tenants without a queue.
    pub async fn poll_all(&self, deadline: Deadline) -> Result<PollSummary, WorkError> {
        let records = self.hub.live_connections().await?;
        let (connected, idle): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| r.state == ConnectionState::Connected);
        let mut results: Vec<TenantPoll> = idle
            .iter()
            .map(|r| TenantPoll::alone(&r.tenant, PollOutcome::Skipped, None))
            .collect();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (plan, mut by_tenant) = crate::dispatch::plan_polls(&self.hub, connected, now).await?;
        let tenants: Vec<TenantSlug> = by_tenant.keys().cloned().collect();
        self.prefetch_keys(&tenants).await;
        let polls: Vec<_> = plan
            .items
            .iter()
            .filter_map(|item| by_tenant.remove(item.tenant()))
            .map(|record| self.poll_one(record, None, deadline))
            .collect();
        let polled: Vec<TenantPoll> = stream::iter(polls)
            .buffer_unordered(self.config.poll_concurrency)
            .collect()
            .await;
        results.extend(polled);
        let summary = PollSummary::of(results);
        self.emit_poll_metrics(&summary.results);
        self.metrics.emit(&[(
            "OldestSuccessfulPollAgeSeconds",
            summary.oldest_success_age_seconds,
            "Seconds",
        )]);
        Ok(summary)
    }

    /// What the polls of a batch (or a fleet pass) did, as CloudWatch metrics: one line per call.
    pub(crate) fn emit_poll_metrics(&self, results: &[TenantPoll]) {
        let s = PollSummary::of(results.to_vec());
        let max_lag = results
            .iter()
            .filter_map(|r| r.lag_seconds)
            .fold(0.0, f64::max);
        self.metrics.emit(&[
            ("EventsIngested", s.events_ingested as f64, "Count"),
            ("EventsSkipped", s.events_skipped as f64, "Count"),
            ("EventsQuarantined", s.events_quarantined as f64, "Count"),
            ("TenantsPolled", s.ok as f64, "Count"),
            ("PollErrors", s.failed as f64, "Count"),
            ("PollLagSeconds", max_lag, "Seconds"),
            ("TenantsDeferred", s.deferred as f64, "Count"),
            ("TenantsBusy", s.busy as f64, "Count"),
        ]);
    }

    /// Polls one tenant by its slug (the final poll of an offboarding), under the tenant's own lease.
    pub async fn poll_tenant(&self, tenant: TenantSlug, deadline: Deadline) -> TenantPoll {
        match self.hub.connection(&tenant).await {
            Ok(Some(record)) => {
                self.poll_one(LiveConnection::from(&record), None, deadline)
                    .await
            }
            Ok(None) => TenantPoll::alone(&tenant, PollOutcome::Skipped, None),
            Err(e) => TenantPoll::alone(&tenant, PollOutcome::Error, Some(e.to_string())),
        }
    }

    /// One tenant's poll under its poll lease: another run polling it makes this one `busy` (a duplicated
    /// item is a no-op). With `scheduled_at`, a poll already made since that scheduled time is
    /// `superseded`: a late or repeated item does not poll twice.
    pub(crate) async fn poll_one(
        &self,
        record: LiveConnection,
        scheduled_at: Option<i64>,
        deadline: Deadline,
    ) -> TenantPoll {
        let tenant = record.tenant.clone();
        if record.state != ConnectionState::Connected {
            return TenantPoll::alone(&tenant, PollOutcome::Skipped, None);
        }
        let lease = self.lease(&tenant, LeaseKind::Poll, "poll");
        match lease.take(deadline).await {
            Ok(true) => {}
            Ok(false) => return TenantPoll::alone(&tenant, PollOutcome::Busy, None),
            Err(e) => return TenantPoll::unrun(&tenant, e),
        }
        let result = match self.hub.poll_states(std::slice::from_ref(&tenant)).await {
            Ok(mut states) => {
                let state = states.remove(&tenant).unwrap_or_default();
                if scheduled_at.is_some_and(|at| polled_since(&state, at)) {
                    TenantPoll::alone(&tenant, PollOutcome::Superseded, None)
                } else {
                    self.poll_connection(record, state, deadline).await
                }
            }
            Err(e) => TenantPoll::unrun(&tenant, e),
        };
        lease.release().await;
        result
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
        let mut last_success = state.status.last_success_at.clone();
        let mut failed_status = state.status.clone();
        match self.ingest(&record, state, deadline, &mut result).await {
            Ok(outcome) => {
                result.outcome = outcome;
                last_success = result.last_success_at.clone().or(last_success);
            }
            Err(e) => {
                result.outcome = PollOutcome::Error;
                result.error = Some(e.to_string());
                tracing::warn!(tenant = %tenant, error = %e, "poll failed");
                // Whatever failed, the status says so (never the previous success with no error).
                failed_status.last_poll_at = Some(utc_millis(OffsetDateTime::now_utc()));
                failed_status.error = Some(e.to_string());
                if let Err(w) = self.hub.record_poll_status(&tenant, &failed_status).await {
                    // Its status still shows the last success: the item is delivered again.
                    result.retry = true;
                    tracing::warn!(tenant = %tenant, error = %w, "could not record the failed poll's status");
                }
            }
        }
        // From the stored success, never from the outcome: a poll reported `ok` that did not record a
        // success (its usage pull failed, say) still ages.
        result.seconds_since_success = Some(seconds_since(last_success.as_deref(), &record));
        result
    }

    pub(crate) async fn routing(
        &self,
        tenant: &TenantSlug,
        rev: Option<String>,
    ) -> Result<Arc<Routing>, StoreError> {
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

/// The tenant was polled (successfully or not) at or after `scheduled_at`.
fn polled_since(state: &PollState, scheduled_at: i64) -> bool {
    let rfc = &time::format_description::well_known::Rfc3339;
    state
        .status
        .last_poll_at
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, rfc).ok())
        .is_some_and(|t| t.unix_timestamp() >= scheduled_at)
}
