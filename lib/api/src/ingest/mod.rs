//! The one ingest loop both surfaces' polls run, through the [`Feed`] port: page from the stored cursor,
//! store each page (idempotent by event key) and mark its drift, then move the cursor with a condition on
//! the value read; a read that caught up re-reads the feed's late window; then the usage report, where the
//! surface has one, and one finishing write of the status (and the last page's cursor move). A crash, a
//! retry or two runs at once never lose an event or store one twice.
//!
//! - `mod.rs` (here): the loop — status stamping, 401 handling (the stored key tried once), a refused
//!   cursor, deferral when time runs out, quarantine, finishing the poll.
//! - `usage.rs`: the daily usage pull.

use std::time::Duration;

use claresia_anthropic::{AnthropicError, Deadline, ErrorKind};
use claresia_aws::telemetry::Quarantined;
use claresia_aws::{PollState, PollStatus};
use claresia_domain::enterprise_feed::DriftNote;
use claresia_domain::telemetry::{utc_millis, Routing, TelemetryEvent};
use claresia_domain::{AdminKey, LiveConnection, TenantSlug};
use time::OffsetDateTime;

use crate::poller::{PollOutcome, TenantPoll};
use crate::surface::{Feed, FeedAt, FeedItem, FeedPage, FeedSource};
use crate::{App, WorkError};

mod usage;

/// A tenant reached with less than this left reads no page: a page may take most of it.
const LEAST_TIME_FOR_A_PAGE: Duration = Duration::from_secs(2);
/// Drift notes the status keeps.
const DRIFT_KEPT: usize = 20;

/// How a read of the feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// Read to the end of what the feed had.
    CaughtUp,
    /// The time ran out first; every stored page's cursor is saved and the next poll goes on.
    OutOfTime,
    /// The feed said more follow but gave no position to go on from: the next poll asks again.
    Stuck,
    /// The key was refused (401), the stored one too.
    Unauthorized,
    /// Anthropic failed; nothing after the last stored page was read.
    Failed,
    /// Another run moved the cursor: it carries on from there.
    Busy,
}

/// How one page request ended.
enum Answer {
    Page(FeedPage),
    /// The cached key was refused and the stored one differs: ask again with it.
    Rekeyed,
    /// The feed refused the cursor: the read restarts at [`FeedAt::Start`].
    Restart,
    End(ReadEnd),
}

/// One tenant's poll in progress.
struct Ingest<'a> {
    app: &'a App,
    record: &'a LiveConnection,
    tenant: &'a TenantSlug,
    /// Where its events are stored: activity ids are unique within an org.
    org: String,
    feed: Box<dyn Feed + 'a>,
    key: AdminKey,
    rekeyed: bool,
    routing: std::sync::Arc<Routing>,
    /// The cursor as last read or written.
    cursor: Option<String>,
    /// The last page's cursor move, made by the finishing write (one write instead of two).
    last_move: Option<String>,
    newest: Option<OffsetDateTime>,
    drift: Vec<DriftNote>,
    status: PollStatus,
    deadline: Deadline,
}

impl App {
    /// One tenant's poll, on whichever surface its connection is.
    pub(crate) async fn ingest(
        &self,
        record: &LiveConnection,
        state: PollState,
        deadline: Deadline,
        out: &mut TenantPoll,
    ) -> Result<PollOutcome, WorkError> {
        let mut run = Ingest::start(self, record, state, deadline).await?;
        let first_read = run.cursor.is_none();
        let mut end = run.catch_up(out).await?;
        if end == ReadEnd::CaughtUp && !first_read {
            if let Some(window) = run.feed.late_window() {
                end = run.reread(window, out).await?;
            }
        }
        if end == ReadEnd::Busy {
            return Ok(PollOutcome::Busy);
        }
        run.finish(end, out).await
    }
}

impl<'a> Ingest<'a> {
    async fn start(
        app: &'a App,
        record: &'a LiveConnection,
        state: PollState,
        deadline: Deadline,
    ) -> Result<Ingest<'a>, WorkError> {
        let tenant = &record.tenant;
        let mut status = state.status;
        status.last_poll_at = Some(utc_millis(OffsetDateTime::now_utc()));
        status.error = None;
        let routing = app.routing(tenant, state.routing_rev).await?;
        let key = app
            .cached_key(record, false)
            .await?
            .ok_or_else(|| WorkError::NoKey(tenant.clone()))?;
        let feed = app.surfaces.get(record.surface).feed(FeedSource {
            org_id: record.org_id.clone(),
            routing: routing.clone(),
            connector_keys: status.connector_api_key_ids.iter().cloned().collect(),
            page_limit: app.config.poll_page_limit,
            deadline,
        });
        Ok(Ingest {
            app,
            record,
            tenant,
            org: if record.org_id.is_empty() {
                format!("enterprise:{tenant}")
            } else {
                record.org_id.clone()
            },
            feed,
            key,
            rekeyed: false,
            routing,
            cursor: state.cursor,
            last_move: None,
            newest: None,
            drift: Vec::new(),
            status,
            deadline,
        })
    }

    /// From the cursor to the end of the feed: each page stored, then the cursor moved past it (the last
    /// page's move is left to the finishing write).
    async fn catch_up(&mut self, out: &mut TenantPoll) -> Result<ReadEnd, WorkError> {
        loop {
            if self.deadline.remaining() < LEAST_TIME_FOR_A_PAGE {
                return Ok(ReadEnd::OutOfTime);
            }
            let cursor = self.cursor.clone();
            let at = cursor.as_deref().map_or(FeedAt::Start, FeedAt::After);
            let page = match self.request(at).await? {
                Answer::Page(p) => p,
                Answer::Rekeyed | Answer::Restart => continue,
                Answer::End(end) => return Ok(end),
            };
            out.pages += 1;
            self.store(page.items, out).await?;
            let moved = page.next.filter(|n| Some(n) != cursor.as_ref());
            if !page.more {
                self.last_move = moved;
                return Ok(ReadEnd::CaughtUp);
            }
            // More follow, but from where? Without a new position the read would spin on one page.
            let Some(to) = moved else {
                return Ok(ReadEnd::Stuck);
            };
            if !self.advance(&to).await? {
                return Ok(ReadEnd::Busy);
            }
        }
    }

    /// One page request, its refusals sorted: a 401 tries the stored key once, then marks the connection;
    /// a refused cursor is forgotten (with the gap recorded); any other failure ends the read.
    async fn request(&mut self, at: FeedAt<'_>) -> Result<Answer, WorkError> {
        let e = match self.feed.page(&self.key, at).await {
            Ok(page) => return Ok(Answer::Page(page)),
            Err(e) => e,
        };
        if e.kind() == ErrorKind::Authentication {
            if !self.rekeyed {
                // Maybe rotated since we cached it: try the stored key once before giving up.
                self.rekeyed = true;
                if let Some(k) = self.app.cached_key(self.record, true).await? {
                    if k != self.key {
                        self.key = k;
                        return Ok(Answer::Rekeyed);
                    }
                }
            }
            self.app
                .mark_needs_attention(self.tenant, &self.key, &e)
                .await?;
            self.status.error = Some(format!("Anthropic answered 401: {}", e.summary()));
            return Ok(Answer::End(ReadEnd::Unauthorized));
        }
        if let FeedAt::After(refused) = at {
            if self.feed.refuses_cursor(&e) {
                return self.forget_cursor(refused, &e).await;
            }
        }
        self.app.metrics.emit(&[(error_metric(&e), 1.0, "Count")]);
        self.status.error = Some(e.to_string());
        Ok(Answer::End(ReadEnd::Failed))
    }

    /// The feed refused the saved cursor (it aged out, or is not one of this feed's): forget it, if no
    /// other run moved it, and say what was not read.
    async fn forget_cursor(
        &mut self,
        refused: &str,
        e: &AnthropicError,
    ) -> Result<Answer, WorkError> {
        if !self.app.hub.reset_cursor(self.tenant, refused).await? {
            return Ok(Answer::End(ReadEnd::Busy));
        }
        self.status.gap = Some(self.feed.restart_gap(refused, e));
        self.app.metrics.emit(&[("CursorGaps", 1.0, "Count")]);
        tracing::warn!(tenant = %self.tenant, cursor = %refused, "the feed refused the cursor; polling restarts");
        self.cursor = None;
        Ok(Answer::Restart)
    }

    /// Moves the cursor from where this run last saw it; `false` when another run moved it first.
    async fn advance(&mut self, to: &str) -> Result<bool, WorkError> {
        let moved = self
            .app
            .hub
            .advance_cursor(self.tenant, self.cursor.as_deref(), to)
            .await?;
        if moved {
            self.cursor = Some(to.to_owned());
        }
        Ok(moved)
    }

    /// Re-reads the feed's late window: an item indexed late sorts behind the cursor, where the catch-up
    /// never looks. What is already stored is skipped by id; the cursor does not move.
    async fn reread(
        &mut self,
        window: time::Duration,
        out: &mut TenantPoll,
    ) -> Result<ReadEnd, WorkError> {
        let since = OffsetDateTime::now_utc() - window;
        let mut from: Option<String> = None;
        loop {
            if self.deadline.remaining() < LEAST_TIME_FOR_A_PAGE {
                // Caught up all the same: the next poll re-reads the same window.
                tracing::warn!(tenant = %self.tenant, "the re-read of the feed's late window was cut short by the time");
                return Ok(ReadEnd::CaughtUp);
            }
            let at = FeedAt::Window {
                since,
                from: from.as_deref(),
            };
            let page = match self.request(at).await? {
                Answer::Page(p) => p,
                Answer::Rekeyed | Answer::Restart => continue,
                Answer::End(end) => return Ok(end),
            };
            let ids: Vec<String> = page.items.iter().filter_map(|(id, _)| id.clone()).collect();
            let stored = self.app.telemetry.stored_event_ids(&self.org, &ids).await?;
            let late: Vec<_> = page
                .items
                .into_iter()
                .filter(|(id, item)| {
                    id.as_ref().is_some_and(|id| !stored.contains(id))
                        && !matches!(item, FeedItem::Skipped)
                })
                .collect();
            self.store(late, out).await?;
            match page.next {
                Some(next) if page.more => from = Some(next),
                _ => return Ok(ReadEnd::CaughtUp),
            }
        }
    }

    /// Stores a page's events (its batches at once) and quarantined items, then, before the cursor moves
    /// past the page, marks its drift (a crash in between finds the drift again rather than losing it).
    async fn store(
        &mut self,
        items: Vec<(Option<String>, FeedItem)>,
        out: &mut TenantPoll,
    ) -> Result<(), WorkError> {
        let mut events: Vec<TelemetryEvent> = Vec::new();
        let mut quarantined = Vec::new();
        let mut drift = Vec::new();
        for (_, item) in items {
            match item {
                FeedItem::Event { event, drift: d } => {
                    if let Ok(t) = OffsetDateTime::parse(
                        &event.occurred_at,
                        &time::format_description::well_known::Rfc3339,
                    ) {
                        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
                    }
                    drift.extend(d);
                    events.push(*event);
                }
                FeedItem::Skipped => out.events_skipped += 1,
                FeedItem::Quarantined { key, raw, reason } => {
                    quarantined.push(Quarantined { key, raw, reason })
                }
            }
        }
        self.write_events(&events).await?;
        if !quarantined.is_empty() {
            self.app
                .telemetry
                .write_quarantined(&self.org, self.tenant, &quarantined)
                .await?;
            tracing::warn!(tenant = %self.tenant, count = quarantined.len(), "feed items quarantined");
        }
        out.events_ingested += events.len() as u64;
        out.events_quarantined += quarantined.len() as u64;
        self.mark_drift(drift).await
    }

    async fn write_events(&self, events: &[TelemetryEvent]) -> Result<(), WorkError> {
        let chunks: Vec<&[TelemetryEvent]> = events.chunks(25).collect();
        let written = futures::future::join_all(chunks.iter().map(|c| async move {
            let _permit = self.app.telemetry_writes.acquire().await;
            self.app.telemetry.write_events(&self.org, c).await
        }))
        .await;
        for w in written {
            w?;
        }
        Ok(())
    }

    /// Our skills changed outside Claresia: a reconcile is scheduled, and the ledger's record of their
    /// settings is no longer trusted (the reconcile reads them).
    async fn mark_drift(&mut self, drift: Vec<DriftNote>) -> Result<(), WorkError> {
        if drift.is_empty() {
            return Ok(());
        }
        tracing::warn!(tenant = %self.tenant, changes = drift.len(), "drift on the enterprise surface; a reconcile is scheduled");
        let hub = &self.app.hub;
        hub.mark_pending(self.tenant, &crate::publish::new_token())
            .await?;
        for d in &drift {
            let at = OffsetDateTime::parse(&d.at, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| OffsetDateTime::now_utc())
                .unix_timestamp();
            hub.mark_drift(self.tenant, &d.plugin_name, at).await?;
        }
        self.drift.extend(drift);
        Ok(())
    }

    /// The usage report, then the status, success or not, in one write with the last page's cursor move.
    async fn finish(
        mut self,
        end: ReadEnd,
        out: &mut TenantPoll,
    ) -> Result<PollOutcome, WorkError> {
        self.keep_drift();
        if let Some(keys) = self.feed.connector_keys() {
            self.status.connector_api_key_ids = keys;
        }
        let read = matches!(end, ReadEnd::CaughtUp | ReadEnd::OutOfTime | ReadEnd::Stuck);
        if let (true, Some(report)) = (read, self.feed.usage()) {
            self.app
                .pull_usage(
                    self.tenant,
                    report,
                    &self.key,
                    &self.routing,
                    self.deadline,
                    &mut self.status,
                )
                .await?;
        }
        let outcome = match end {
            ReadEnd::CaughtUp => PollOutcome::Ok,
            ReadEnd::OutOfTime if out.pages == 0 => {
                self.status.error = Some(
                    "deferred: the tick's time ran out before this tenant's turn (slow organizations ahead of it)".into(),
                );
                PollOutcome::Deferred
            }
            ReadEnd::OutOfTime => {
                self.status.error = Some(format!(
                    "the catch-up was cut short by the tick's time after {} page(s); it continues from the saved cursor",
                    out.pages
                ));
                PollOutcome::Behind
            }
            ReadEnd::Stuck => {
                self.status.error = Some(format!(
                    "the feed answered has_more without a {} to go on from; the next poll asks again",
                    self.feed.position_field()
                ));
                PollOutcome::Behind
            }
            ReadEnd::Unauthorized => PollOutcome::Unauthorized,
            ReadEnd::Failed | ReadEnd::Busy => PollOutcome::Error,
        };
        let lag = self
            .newest
            .map(|n| (OffsetDateTime::now_utc() - n).as_seconds_f64().max(0.0));
        out.lag_seconds = lag;
        let status = &mut self.status;
        status.cursor = self.last_move.clone().or_else(|| self.cursor.clone());
        status.events_ingested = out.events_ingested;
        status.events_skipped = out.events_skipped;
        status.events_quarantined = out.events_quarantined;
        status.lag_seconds = lag.or(status.lag_seconds);
        // Only a read that caught up, with nothing failing after it, is a success (for the alarms).
        if end == ReadEnd::CaughtUp && status.error.is_none() {
            status.last_success_at = status.last_poll_at.clone();
        }
        out.last_success_at = status.last_success_at.clone();
        let finished = self
            .app
            .hub
            .finish_poll(
                self.tenant,
                status,
                self.cursor.as_deref(),
                self.last_move.as_deref(),
            )
            .await?;
        // The cursor moved under us: a run that outlived its lease met the one that took it over, which
        // records its own status and carries on from the cursor.
        Ok(if finished { outcome } else { PollOutcome::Busy })
    }

    /// This poll's drift notes first, then the ones kept before.
    fn keep_drift(&mut self) {
        if self.drift.is_empty() {
            return;
        }
        let mut drift = std::mem::take(&mut self.drift);
        drift.reverse();
        drift.append(&mut self.status.drift);
        drift.truncate(DRIFT_KEPT);
        self.status.drift = drift;
    }
}

impl App {
    /// The connection's key was refused: forget it and mark the connection as needing an admin.
    async fn mark_needs_attention(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        e: &AnthropicError,
    ) -> Result<(), WorkError> {
        self.key_cache.forget(tenant);
        let reason = format!("the audit poller got 401 from Anthropic ({})", e.summary());
        self.key_refused(tenant, key, reason).await?;
        self.metrics.emit(&[("AnthropicErrors401", 1.0, "Count")]);
        Ok(())
    }
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
