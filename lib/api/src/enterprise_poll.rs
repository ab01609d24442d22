//! The poller's enterprise side, every 60 s per enterprise connection: the Compliance Activity Feed's
//! documented catch-up loop (newest first, `before_id` = cursor, the cursor saved after each stored page),
//! a re-read of the last five minutes for activities indexed late (deduplicated by id), our plugins'
//! lifecycle stored as the tenant's audit events (idempotent by activity id), drift flagged and handed to
//! the reconcile; and, hourly, the Analytics usage of the last three complete days upserted per (skill,
//! day, RBAC group).

use std::collections::BTreeSet;
use std::time::Duration;

use claresia_anthropic::{Deadline, ErrorKind};
use claresia_aws::telemetry::Quarantined;
use claresia_aws::PollState;
use claresia_domain::enterprise_feed::{
    complete_days, connector_keys, normalize_activity, normalize_usage, Activity, DriftNote,
};
use claresia_domain::telemetry::{utc_millis, Routing, TelemetryEvent};
use claresia_domain::{AdminKey, LiveConnection, TenantSlug};
use time::OffsetDateTime;

use crate::poller::{PollOutcome, TenantPoll};
use crate::surface::enterprise::{FeedPosition, USAGE_NAMES_PER_REQUEST};
use crate::{ApiError, App};

/// Activities per feed page (the documented maximum).
const FEED_PAGE: u32 = 5000;
/// Drift notes the status keeps.
const DRIFT_KEPT: usize = 20;
/// Complete days of usage re-read each time (Anthropic revises them for a few days).
const USAGE_DAYS: u32 = 3;
/// The feed's trailing window re-read each tick for activities indexed late (the spec's advice: overlap
/// and dedupe by id).
const OVERLAP: time::Duration = time::Duration::minutes(5);

/// How one day of a usage pull ended.
enum DayUsage {
    /// Every page stored: this many rows.
    Stored(u64),
    /// Anthropic has not aggregated the day yet.
    NotYet,
    /// The tick's time ran out after `chunks` whole requests of names (their `rows` stored); the next
    /// tick goes on from there.
    OutOfTime {
        chunks: usize,
        rows: u64,
    },
    Failed(String),
}

/// How a tick's read of the feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Every page up to the newest was stored, and the cursor saved after each.
    CaughtUp,
    /// Pages were stored and the cursor saved after each, but the tick's time ran out first (or the
    /// feed gave no position to go on from): the next tick continues.
    Behind,
    /// The key was refused (401).
    Unauthorized,
    /// Anthropic failed; nothing after the last saved page was read.
    Failed,
    /// Another run moved the cursor: this one stops.
    Busy,
    /// The feed refused the saved cursor: the catch-up restarts from the newest activity.
    Restart,
}

/// What one tenant's feed read carries along.
struct FeedRun<'a> {
    tenant: &'a TenantSlug,
    org: String,
    key: AdminKey,
    routing: std::sync::Arc<Routing>,
    own: BTreeSet<String>,
    /// The cursor as last written (or read).
    saved: Option<String>,
    drift: Vec<DriftNote>,
    deadline: Deadline,
}

impl App {
    pub(crate) async fn poll_enterprise(
        &self,
        record: &LiveConnection,
        state: PollState,
        deadline: Deadline,
        out: &mut TenantPoll,
    ) -> Result<PollOutcome, ApiError> {
        let tenant = &record.tenant;
        let mut status = state.status;
        status.last_poll_at = Some(utc_millis(OffsetDateTime::now_utc()));
        status.error = None;
        let routing = self.routing(tenant, state.routing_rev).await?;
        let key = self
            .cached_key(record, false)
            .await?
            .ok_or_else(|| ApiError::NotConnected(tenant.to_string()))?;
        let mut run = FeedRun {
            tenant,
            // Activity ids are unique within the org; an unnamed org is keyed by its tenant.
            org: if record.org_id.is_empty() {
                format!("enterprise:{tenant}")
            } else {
                record.org_id.clone()
            },
            key,
            routing,
            own: status.connector_api_key_ids.iter().cloned().collect(),
            saved: state.cursor,
            drift: Vec::new(),
            deadline,
        };
        let first_poll = run.saved.is_none();
        let mut feed = self.catch_up(&mut run, &mut status, out).await?;
        if feed == Feed::CaughtUp && !first_poll {
            feed = self.reread_overlap(&mut run, &mut status, out).await?;
        }
        if feed == Feed::Busy {
            return Ok(PollOutcome::Busy);
        }
        if !run.drift.is_empty() {
            let mut drift = std::mem::take(&mut run.drift);
            drift.reverse();
            drift.append(&mut status.drift);
            drift.truncate(DRIFT_KEPT);
            status.drift = drift;
        }
        status.connector_api_key_ids = run.own.iter().cloned().collect();
        if matches!(feed, Feed::CaughtUp | Feed::Behind) {
            self.poll_usage(tenant, &run.key, &run.routing, deadline, &mut status)
                .await?;
        }
        status.cursor = run.saved.clone();
        status.events_ingested = out.events_ingested;
        status.events_skipped = out.events_skipped;
        status.events_quarantined = out.events_quarantined;
        // Only a tick that caught up counts as a success (a bounded catch-up is behind, for the alarms).
        if feed == Feed::CaughtUp && status.error.is_none() {
            status.last_success_at = status.last_poll_at.clone();
        }
        let outcome = match feed {
            Feed::CaughtUp => PollOutcome::Ok,
            Feed::Behind if out.pages == 0 => PollOutcome::Deferred,
            Feed::Behind => PollOutcome::Behind,
            Feed::Unauthorized => PollOutcome::Unauthorized,
            Feed::Failed | Feed::Busy | Feed::Restart => PollOutcome::Error,
        };
        out.last_success_at = status.last_success_at.clone();
        let finished = self
            .hub
            .finish_poll(tenant, &status, run.saved.as_deref(), None)
            .await?;
        Ok(if finished { outcome } else { PollOutcome::Busy })
    }

    /// The documented catch-up: `before_id = cursor`, newest first, page by page toward the newest, the
    /// cursor saved after each stored page (a backlog of N pages takes ⌈N / pages per tick⌉ ticks). The
    /// first poll starts at the newest activity: the connection's history before it is not ours.
    async fn catch_up(
        &self,
        run: &mut FeedRun<'_>,
        status: &mut claresia_aws::PollStatus,
        out: &mut TenantPoll,
    ) -> Result<Feed, ApiError> {
        let first_poll = run.saved.is_none();
        let mut next = run.saved.clone();
        loop {
            if run.deadline.remaining() < Duration::from_secs(2) {
                status.error = Some(format!(
                    "the feed's catch-up was cut short by the tick's time after {} page(s); it continues from the saved cursor",
                    out.pages
                ));
                return Ok(Feed::Behind);
            }
            let at = next
                .as_deref()
                .map_or(FeedPosition::Newest, FeedPosition::NewerThan);
            let page = match self.feed_page(run, at, status).await? {
                Ok(p) => p,
                Err(Feed::Restart) => {
                    next = None;
                    continue;
                }
                Err(f) => return Ok(f),
            };
            out.pages += 1;
            self.store_page(run, &page.data, out).await?;
            let Some(first) = page.first_id.clone() else {
                if page.has_more {
                    status.error = Some(
                        "the feed answered has_more without a first_id to go on from; the next tick asks again".into(),
                    );
                    return Ok(Feed::Behind);
                }
                return Ok(Feed::CaughtUp);
            };
            if Some(&first) != run.saved.as_ref() {
                let moved = self
                    .hub
                    .advance_cursor(run.tenant, run.saved.as_deref(), &first)
                    .await?;
                if !moved {
                    return Ok(Feed::Busy);
                }
                run.saved = Some(first.clone());
            }
            next = Some(first);
            if first_poll || !page.has_more {
                return Ok(Feed::CaughtUp);
            }
        }
    }

    /// Re-reads the last [`OVERLAP`] of the feed: an activity indexed late sorts behind the cursor, where
    /// the catch-up never looks. What is already stored is skipped by id.
    async fn reread_overlap(
        &self,
        run: &mut FeedRun<'_>,
        status: &mut claresia_aws::PollStatus,
        out: &mut TenantPoll,
    ) -> Result<Feed, ApiError> {
        let since = OffsetDateTime::now_utc() - OVERLAP;
        let mut older_than: Option<String> = None;
        loop {
            if run.deadline.remaining() < Duration::from_secs(2) {
                // Caught up all the same: the next tick re-reads the same five minutes.
                tracing::warn!(tenant = %run.tenant, "the re-read of the feed's last five minutes was cut short by the tick's time");
                return Ok(Feed::CaughtUp);
            }
            let at = FeedPosition::Since {
                since,
                older_than: older_than.as_deref(),
            };
            let page = match self.feed_page(run, at, status).await? {
                Ok(p) => p,
                Err(f) => return Ok(f),
            };
            let ids: Vec<String> = page
                .data
                .iter()
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect();
            let stored = self.telemetry.stored_event_ids(&run.org, &ids).await?;
            let late: Vec<serde_json::Value> = page
                .data
                .into_iter()
                .filter(|a| a["id"].as_str().is_some_and(|id| !stored.contains(id)))
                .collect();
            if !late.is_empty() {
                let mut scratch = TenantPoll::default();
                self.store_page(run, &late, &mut scratch).await?;
                out.events_ingested += scratch.events_ingested;
                out.events_quarantined += scratch.events_quarantined;
            }
            match page.last_id {
                Some(last) if page.has_more => older_than = Some(last),
                _ => return Ok(Feed::CaughtUp),
            }
        }
    }

    /// One feed request, its refusals turned into how the read ends.
    async fn feed_page(
        &self,
        run: &FeedRun<'_>,
        at: FeedPosition<'_>,
        status: &mut claresia_aws::PollStatus,
    ) -> Result<Result<claresia_anthropic::Page<serde_json::Value>, Feed>, ApiError> {
        let tenant = run.tenant;
        match self
            .surfaces
            .enterprise
            .activities(&run.key, at, FEED_PAGE, run.deadline)
            .await
        {
            Ok(p) => Ok(Ok(p)),
            Err(e) if e.kind() == ErrorKind::Authentication => {
                self.key_cache.forget(tenant);
                let reason = format!("the poller got 401 from Anthropic ({})", e.summary());
                self.key_refused(tenant, &run.key, reason).await?;
                status.error = Some(format!("Anthropic answered 401: {}", e.summary()));
                Ok(Err(Feed::Unauthorized))
            }
            Err(e)
                if e.kind() == ErrorKind::InvalidRequest
                    && matches!(at, FeedPosition::NewerThan(c) if Some(c) == run.saved.as_deref()) =>
            {
                // A cursor the feed cannot read (say, one left by a preview connection): start from the
                // newest activity and say that older ones were not read.
                status.gap = Some(format!(
                    "the feed refused cursor {} ({}); polling restarted from the newest activity",
                    run.saved.as_deref().unwrap_or_default(),
                    e.summary()
                ));
                Ok(Err(Feed::Restart))
            }
            Err(e) => {
                status.error = Some(e.to_string());
                Ok(Err(Feed::Failed))
            }
        }
    }

    /// Stores one page and, before the cursor moves past it, marks its drift (a crash in between finds the
    /// drift again rather than losing it).
    async fn store_page(
        &self,
        run: &mut FeedRun<'_>,
        page: &[serde_json::Value],
        out: &mut TenantPoll,
    ) -> Result<(), ApiError> {
        run.own.extend(connector_keys(page, &run.routing));
        let mut drift = Vec::new();
        self.store_activities(
            run.tenant,
            &run.org,
            page,
            &run.routing,
            &run.own,
            &mut drift,
            out,
        )
        .await?;
        if drift.is_empty() {
            return Ok(());
        }
        tracing::warn!(tenant = %run.tenant, changes = drift.len(), "drift on the enterprise surface; a reconcile is scheduled");
        self.hub
            .mark_pending(run.tenant, &crate::publish::new_token())
            .await?;
        // The ledger's record of those plugins' settings is no longer trusted: the reconcile reads them.
        for d in &drift {
            let at = OffsetDateTime::parse(&d.at, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| OffsetDateTime::now_utc())
                .unix_timestamp();
            self.hub.mark_drift(run.tenant, &d.plugin_name, at).await?;
        }
        run.drift.extend(drift);
        Ok(())
    }

    /// Stores a feed page's activities about our plugins (idempotent by activity id) and collects drift.
    #[allow(clippy::too_many_arguments)]
    async fn store_activities(
        &self,
        tenant: &TenantSlug,
        org: &str,
        page: &[serde_json::Value],
        routing: &Routing,
        own: &BTreeSet<String>,
        drift: &mut Vec<DriftNote>,
        out: &mut TenantPoll,
    ) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        let mut events: Vec<TelemetryEvent> = Vec::new();
        let mut quarantined = Vec::new();
        for raw in page {
            match normalize_activity(raw, routing, own, now) {
                Activity::Ours { event, drift: d } => {
                    drift.extend(d);
                    events.push(*event);
                }
                Activity::NotOurs => out.events_skipped += 1,
                Activity::Quarantined(reason) => {
                    let text = raw.to_string();
                    quarantined.push(Quarantined {
                        key: crate::poller::short_hash(&text),
                        raw: text,
                        reason,
                    });
                }
            }
        }
        for chunk in events.chunks(25) {
            self.telemetry.write_events(org, chunk).await?;
        }
        if !quarantined.is_empty() {
            self.telemetry
                .write_quarantined(org, tenant, &quarantined)
                .await?;
        }
        out.events_ingested += events.len() as u64;
        out.events_quarantined += quarantined.len() as u64;
        Ok(())
    }

    /// Hourly: the last three complete days of Analytics usage of our skills (by name, 100 a request),
    /// upserted page by page. A day Anthropic has not aggregated yet (400 naming the latest day) is read
    /// again next hour; a pull the tick's time cuts short keeps the days it finished and does the rest
    /// next tick.
    async fn poll_usage(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        routing: &Routing,
        deadline: Deadline,
        status: &mut claresia_aws::PollStatus,
    ) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        let due = !status.usage_days_done.is_empty()
            || status
                .usage_polled_at
                .as_deref()
                .and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_none_or(|last| (now - last).unsigned_abs() >= self.config.usage_poll_interval);
        if !due {
            return Ok(());
        }
        let names: Vec<&str> = routing.published.keys().map(String::as_str).collect();
        let days = complete_days(now, USAGE_DAYS);
        // A round started on other days (a day has passed) starts over.
        status.usage_days_done.retain(|d| days.contains(d));
        let mut rows = status
            .usage_rows
            .filter(|_| !status.usage_days_done.is_empty())
            .unwrap_or(0);
        for day in days {
            if status.usage_days_done.contains(&day) {
                continue;
            }
            // `{day}@{n}`: the day's first n requests (100 names each) are stored.
            let partial = format!("{day}@");
            let from = status
                .usage_days_done
                .iter()
                .find_map(|d| d.strip_prefix(&partial).and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            status.usage_days_done.retain(|d| !d.starts_with(&partial));
            let day_usage = self
                .usage_of_day(
                    tenant,
                    key,
                    routing,
                    &names[(from * USAGE_NAMES_PER_REQUEST).min(names.len())..],
                    &day,
                    deadline,
                )
                .await?;
            match day_usage {
                DayUsage::Stored(n) => rows += n,
                DayUsage::NotYet => {}
                DayUsage::OutOfTime { chunks, rows: n } => {
                    if from + chunks > 0 {
                        status
                            .usage_days_done
                            .push(format!("{day}@{}", from + chunks));
                    }
                    status.usage_rows = Some(rows + n);
                    return Ok(());
                }
                DayUsage::Failed(e) => {
                    status.error = Some(format!("usage: {e}"));
                    return Ok(());
                }
            }
            status.usage_days_done.push(day);
            status.usage_rows = Some(rows);
        }
        status.usage_days_done.clear();
        status.usage_polled_at = Some(utc_millis(now));
        status.usage_rows = Some(rows);
        Ok(())
    }

    /// One day's usage of our skills, each page stored as it arrives (memory holds one page).
    async fn usage_of_day(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        routing: &Routing,
        names: &[&str],
        day: &str,
        deadline: Deadline,
    ) -> Result<DayUsage, ApiError> {
        let mut stored = 0u64;
        for (done, chunk) in names.chunks(USAGE_NAMES_PER_REQUEST).enumerate() {
            let out_of_time = || DayUsage::OutOfTime {
                chunks: done,
                rows: stored,
            };
            let mut page: Option<String> = None;
            let mut chunk_rows = 0u64;
            loop {
                if deadline.remaining() < Duration::from_secs(2) {
                    return Ok(out_of_time());
                }
                let answer = self
                    .surfaces
                    .enterprise
                    .skill_usage_page(key, day, chunk, page.as_deref(), deadline)
                    .await;
                let data = match answer {
                    Ok(d) => d,
                    Err(e) if e.kind() == ErrorKind::InvalidRequest => {
                        tracing::info!(tenant = %tenant, day, error = %e, "usage of the day not available yet");
                        return Ok(DayUsage::NotYet);
                    }
                    Err(e) if e.is_timeout() => return Ok(out_of_time()),
                    Err(e) => return Ok(DayUsage::Failed(e.to_string())),
                };
                let now = OffsetDateTime::now_utc();
                let rows: Vec<_> = data
                    .data
                    .iter()
                    .filter_map(|r| normalize_usage(r, day, routing, now))
                    .collect();
                self.telemetry.write_usage(tenant, &rows).await?;
                chunk_rows += rows.len() as u64;
                match data.next_page {
                    Some(next) if Some(&next) != page.as_ref() => page = Some(next),
                    _ => break,
                }
            }
            stored += chunk_rows;
        }
        Ok(DayUsage::Stored(stored))
    }
}
