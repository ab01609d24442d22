//! Hourly, where the surface reports usage: the last three complete days of our skills' usage (by name,
//! as many a request as the report takes), upserted page by page. A day Anthropic has not aggregated yet
//! (400 naming the latest day) is read again next hour; a pull the time cuts short keeps the days it
//! finished and does the rest next poll.

use claresia_anthropic::{Deadline, ErrorKind};
use claresia_aws::PollStatus;
use claresia_domain::enterprise_feed::{complete_days, normalize_usage};
use claresia_domain::telemetry::{utc_millis, Routing};
use claresia_domain::{AdminKey, TenantSlug};
use time::OffsetDateTime;

use super::LEAST_TIME_FOR_A_PAGE;
use crate::surface::UsageReport;
use crate::{App, WorkError};

/// Complete days of usage re-read each time (Anthropic revises them for a few days).
const USAGE_DAYS: u32 = 3;

/// How one day of a usage pull ended.
enum DayUsage {
    /// Every page stored: this many rows.
    Stored(u64),
    /// Anthropic has not aggregated the day yet.
    NotYet,
    /// The time ran out after `chunks` whole requests of names (their `rows` stored); the next poll goes
    /// on from there.
    OutOfTime {
        chunks: usize,
        rows: u64,
    },
    Failed(String),
}

/// One pull's fixed inputs.
struct Pull<'a> {
    tenant: &'a TenantSlug,
    report: &'a dyn UsageReport,
    key: &'a AdminKey,
    routing: &'a Routing,
    deadline: Deadline,
}

impl App {
    pub(super) async fn pull_usage(
        &self,
        tenant: &TenantSlug,
        report: &dyn UsageReport,
        key: &AdminKey,
        routing: &Routing,
        deadline: Deadline,
        status: &mut PollStatus,
    ) -> Result<(), WorkError> {
        let now = OffsetDateTime::now_utc();
        if !self.usage_due(status, now) {
            return Ok(());
        }
        let pull = Pull {
            tenant,
            report,
            key,
            routing,
            deadline,
        };
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
            // `{day}@{n}`: the day's first n requests of names are stored.
            let partial = format!("{day}@");
            let from = status
                .usage_days_done
                .iter()
                .find_map(|d| d.strip_prefix(&partial).and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            status.usage_days_done.retain(|d| !d.starts_with(&partial));
            let skip = (from * report.names_per_request()).min(names.len());
            match self.usage_of_day(&pull, &names[skip..], &day).await? {
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

    /// A round under way, or an hour (`USAGE_POLL_INTERVAL`) since the last one finished.
    fn usage_due(&self, status: &PollStatus, now: OffsetDateTime) -> bool {
        !status.usage_days_done.is_empty()
            || status
                .usage_polled_at
                .as_deref()
                .and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_none_or(|last| (now - last).unsigned_abs() >= self.config.usage_poll_interval)
    }

    /// One day's usage of our skills, each page stored as it arrives (memory holds one page).
    async fn usage_of_day(
        &self,
        pull: &Pull<'_>,
        names: &[&str],
        day: &str,
    ) -> Result<DayUsage, WorkError> {
        let mut stored = 0u64;
        for (done, chunk) in names.chunks(pull.report.names_per_request()).enumerate() {
            let out_of_time = DayUsage::OutOfTime {
                chunks: done,
                rows: stored,
            };
            let mut page: Option<String> = None;
            loop {
                if pull.deadline.remaining() < LEAST_TIME_FOR_A_PAGE {
                    return Ok(out_of_time);
                }
                let data = match pull
                    .report
                    .page(pull.key, day, chunk, page.as_deref())
                    .await
                {
                    Ok(d) => d,
                    Err(e) if e.kind() == ErrorKind::InvalidRequest => {
                        tracing::info!(tenant = %pull.tenant, day, error = %e, "usage of the day not available yet");
                        return Ok(DayUsage::NotYet);
                    }
                    Err(e) if e.is_timeout() => return Ok(out_of_time),
                    Err(e) => return Ok(DayUsage::Failed(e.to_string())),
                };
                let now = OffsetDateTime::now_utc();
                let rows: Vec<_> = data
                    .data
                    .iter()
                    .filter_map(|r| normalize_usage(r, day, pull.routing, now))
                    .collect();
                self.telemetry.write_usage(pull.tenant, &rows).await?;
                stored += rows.len() as u64;
                match data.next_page {
                    Some(next) if Some(&next) != page.as_ref() => page = Some(next),
                    _ => break,
                }
            }
        }
        Ok(DayUsage::Stored(stored))
    }
}
