//! The poller's enterprise side, every 60 s per enterprise connection: the Compliance Activity Feed's
//! documented catch-up loop (newest first, `before_id` = cursor, the cursor saved only once `has_more` is
//! false), our plugins' lifecycle stored as the tenant's audit events (idempotent by activity id), drift
//! flagged and handed to the reconcile; and, hourly, the Analytics usage of the last three complete days
//! upserted per (skill, day, RBAC group).

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

use crate::poller::TenantPoll;
use crate::{ApiError, App};

/// Activities per feed page (the documented maximum).
const FEED_PAGE: u32 = 5000;
/// Drift notes the status keeps.
const DRIFT_KEPT: usize = 20;
/// Complete days of usage re-read each time (Anthropic revises them for a few days).
const USAGE_DAYS: u32 = 3;

impl App {
    pub(crate) async fn poll_enterprise(
        &self,
        record: &LiveConnection,
        state: PollState,
        deadline: Deadline,
        out: &mut TenantPoll,
    ) -> Result<&'static str, ApiError> {
        let tenant = &record.tenant;
        let (cursor, mut status) = (state.cursor, state.status);
        status.last_poll_at = Some(utc_millis(OffsetDateTime::now_utc()));
        status.error = None;
        let routing = self.routing(tenant, state.routing_rev).await?;
        let key = self
            .cached_key(tenant, false)
            .await?
            .ok_or_else(|| ApiError::NotConnected(tenant.to_string()))?;
        // Activity ids are unique within the org; an unnamed org is keyed by its tenant.
        let org = if record.org_id.is_empty() {
            format!("enterprise:{tenant}")
        } else {
            record.org_id.clone()
        };
        let mut own: BTreeSet<String> = status.connector_api_key_ids.iter().cloned().collect();
        let mut drift: Vec<DriftNote> = Vec::new();
        let mut next = cursor.clone();
        let mut caught_up = false;
        let outcome = loop {
            if deadline.remaining() < Duration::from_secs(2) {
                status.error = Some(
                    "the feed's catch-up was cut short by the tick's time; it continues from the saved cursor"
                        .into(),
                );
                break if out.pages == 0 { "deferred" } else { "ok" };
            }
            let page = match self
                .surfaces
                .enterprise
                .activities(&key, next.as_deref(), FEED_PAGE, deadline)
                .await
            {
                Ok(p) => p,
                Err(e) if e.kind() == ErrorKind::Authentication => {
                    self.key_cache.forget(tenant);
                    let reason = format!("the poller got 401 from Anthropic ({})", e.summary());
                    self.key_refused(tenant, &key, reason).await?;
                    status.error = Some(format!("Anthropic answered 401: {}", e.summary()));
                    break "unauthorized";
                }
                Err(e)
                    if e.kind() == ErrorKind::InvalidRequest
                        && next.is_some()
                        && next == cursor =>
                {
                    // A cursor the feed cannot read (say, one left by a preview connection): start from
                    // the newest activity and say that older ones were not read.
                    status.gap = Some(format!(
                        "the feed refused cursor {} ({}); polling restarted from the newest activity",
                        next.as_deref().unwrap_or_default(),
                        e.summary()
                    ));
                    next = None;
                    continue;
                }
                Err(e) => {
                    status.error = Some(e.to_string());
                    break "error";
                }
            };
            out.pages += 1;
            own.extend(connector_keys(&page.data, &routing));
            self.store_activities(tenant, &org, &page.data, &routing, &own, &mut drift, out)
                .await?;
            let first_poll = next.is_none();
            if let Some(first) = page.first_id.clone() {
                next = Some(first);
            }
            // The first poll starts at the newest activity: the connection's history before it is not ours.
            if first_poll || !page.has_more {
                caught_up = true;
                break "ok";
            }
        };
        if !drift.is_empty() {
            // The reconcile puts our plugins back as the catalog says; marked before the cursor moves, so a
            // crash in between finds the drift again rather than losing it.
            tracing::warn!(tenant = %tenant, changes = drift.len(), "drift on the enterprise surface; a reconcile is scheduled");
            self.hub
                .mark_pending(tenant, &crate::publish::new_token())
                .await?;
            // The ledger's record of those plugins' settings is no longer trusted: the reconcile reads them.
            for d in &drift {
                let at =
                    OffsetDateTime::parse(&d.at, &time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|_| OffsetDateTime::now_utc())
                        .unix_timestamp();
                self.hub.mark_drift(tenant, &d.plugin_name, at).await?;
            }
            drift.reverse();
            drift.append(&mut status.drift);
            drift.truncate(DRIFT_KEPT);
            status.drift = drift;
        }
        status.connector_api_key_ids = own.into_iter().collect();
        if outcome == "ok" {
            self.poll_usage(tenant, &key, &routing, deadline, &mut status)
                .await?;
        }
        status.cursor = if caught_up {
            next.clone()
        } else {
            cursor.clone()
        };
        status.events_ingested = out.events_ingested;
        status.events_skipped = out.events_skipped;
        status.events_quarantined = out.events_quarantined;
        if outcome == "ok" && status.error.is_none() {
            status.last_success_at = status.last_poll_at.clone();
        }
        let advance = next
            .as_deref()
            .filter(|n| caught_up && Some(*n) != cursor.as_deref());
        let finished = self
            .hub
            .finish_poll(tenant, &status, cursor.as_deref(), advance)
            .await?;
        Ok(if finished { outcome } else { "busy" })
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

    /// Hourly: the last three complete days of Analytics usage, upserted. A day Anthropic has not
    /// aggregated yet (400 naming the latest day) is simply read again next hour.
    async fn poll_usage(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        routing: &Routing,
        deadline: Deadline,
        status: &mut claresia_aws::PollStatus,
    ) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        let due = status
            .usage_polled_at
            .as_deref()
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_none_or(|last| (now - last).unsigned_abs() >= self.config.usage_poll_interval);
        if !due {
            return Ok(());
        }
        let mut rows = Vec::new();
        for day in complete_days(now, USAGE_DAYS) {
            match self
                .surfaces
                .enterprise
                .skill_usage(key, &day, deadline)
                .await
            {
                Ok(data) => rows.extend(
                    data.iter()
                        .filter_map(|r| normalize_usage(r, &day, routing, now)),
                ),
                Err(e) if e.kind() == ErrorKind::InvalidRequest => {
                    tracing::info!(tenant = %tenant, day, error = %e, "usage of the day not available yet");
                }
                Err(e) => {
                    status.error = Some(format!("usage: {e}"));
                    return Ok(());
                }
            }
        }
        self.telemetry.write_usage(tenant, &rows).await?;
        status.usage_polled_at = Some(utc_millis(now));
        status.usage_rows = Some(rows.len() as u64);
        Ok(())
    }
}
