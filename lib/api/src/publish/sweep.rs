//! The pending sweep: a Hub whose publish is unfinished is published again, a slice at a time, backing
//! off while it keeps failing; a refused one has its marker cleared.

use claresia_anthropic::Deadline;
use claresia_domain::TenantSlug;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use time::OffsetDateTime;

use super::report::PublishReport;
use claresia_aws::StoreError;

use crate::{ApiError, App, WorkError};

impl App {
    /// Every pending Hub swept in this process, `POLL_CONCURRENCY` at a time, each for its own time slice
    /// ([`App::sweep_hub`]). The deployed stack never runs this (its dispatcher enqueues one sweep item
    /// per pending Hub for the workers); tests and benchmarks do.
    pub async fn sweep_pending(&self, deadline: Deadline) -> Result<Vec<PublishReport>, WorkError> {
        let sweeps: Vec<_> = self
            .hub
            .pending_tenants()
            .await?
            .into_iter()
            .map(|hub| async move { self.sweep_hub(&hub, self.sweep_slice(deadline)).await })
            .collect();
        let swept: Vec<Result<Sweep, WorkError>> = stream::iter(sweeps)
            .buffer_unordered(self.config.poll_concurrency)
            .collect()
            .await;
        let mut done = Vec::new();
        for s in swept {
            if let Sweep::Published(r) = s? {
                done.push(*r);
            }
        }
        Ok(done)
    }

    /// One Hub's slice of a sweep: the run's deadline, or `SWEEP_SLICE_SECONDS` if sooner, so a large
    /// Hub's backlog is worked through a slice a minute while it holds one worker slot.
    pub(crate) fn sweep_slice(&self, deadline: Deadline) -> Deadline {
        Deadline::after(deadline.remaining().min(self.config.sweep_slice))
    }

    /// Finishes `hub`'s pending publish within `deadline`. A Hub backing off waits its turn; a publish
    /// lease held by another run is skipped, not waited on (that run plans from the catalog as it is).
    pub(crate) async fn sweep_hub(
        &self,
        hub: &TenantSlug,
        deadline: Deadline,
    ) -> Result<Sweep, WorkError> {
        if self.hub.pending_token(hub).await?.is_none() {
            return Ok(Sweep::NothingPending);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let retry = self.hub.pending_retry(hub).await?;
        // A Hub that keeps failing waits its turn (1, 2, 4 … minutes, at most an hour).
        if retry.as_ref().is_some_and(|r| r.next_attempt_at > now) {
            return Ok(Sweep::BackingOff);
        }
        match self.publish_with(hub, None, deadline, None, false).await {
            Ok(r) if r.pending && r.writes == 0 && r.targets.is_empty() => Ok(Sweep::Busy),
            // Nothing moved (and no other publish held the lease): retried later, not every minute.
            Ok(r) if !r.complete && r.writes == 0 && !r.targets.is_empty() => {
                let why = r
                    .targets
                    .iter()
                    .flat_map(|t| t.failed.iter().map(|f| f.reason.clone()))
                    .next()
                    .unwrap_or_else(|| "the sweep made no progress".into());
                self.back_off(hub, retry.as_ref(), now, why).await?;
                Ok(Sweep::Published(Box::new(r)))
            }
            Ok(r) => Ok(Sweep::Published(Box::new(r))),
            Err(ApiError::PublishRefused(reason)) => {
                // Nothing can be published until an admin acts; the status says why.
                tracing::warn!(tenant = %hub, %reason, "pending publish refused; clearing the marker");
                self.clear_pending_marker(hub).await?;
                Ok(Sweep::Refused(reason))
            }
            Err(ApiError::AnthropicRejected(e)) => {
                // Refused, not unavailable: retrying every minute changes nothing. The connection's
                // status says what to fix; the next change or Republish all publishes again.
                tracing::warn!(tenant = %hub, error = %e, "pending publish refused by Anthropic; clearing the marker");
                self.clear_pending_marker(hub).await?;
                Ok(Sweep::Refused(e.to_string()))
            }
            Err(ApiError::Store(e)) => Err(WorkError::Store(e)),
            Err(e) => {
                tracing::warn!(tenant = %hub, error = %e, "pending publish failed; retried after a back-off");
                self.back_off(hub, retry.as_ref(), now, e.to_string())
                    .await?;
                Ok(Sweep::Failed(e.to_string()))
            }
        }
    }

    async fn clear_pending_marker(&self, hub: &TenantSlug) -> Result<(), StoreError> {
        if let Some(token) = self.hub.pending_token(hub).await? {
            self.hub.clear_pending(hub, &token).await?;
        }
        Ok(())
    }

    /// Records a failed sweep on the Hub's marker, so the next one waits (shown as `publish_retry`).
    async fn back_off(
        &self,
        hub: &TenantSlug,
        previous: Option<&claresia_aws::PendingRetry>,
        now: i64,
        error: String,
    ) -> Result<(), StoreError> {
        let Some(token) = self.hub.pending_token(hub).await? else {
            return Ok(());
        };
        let retry = claresia_aws::PendingRetry::after(previous, now, error);
        self.hub.back_off_pending(hub, &token, &retry).await?;
        Ok(())
    }
}

/// What one Hub's sweep slice did.
#[derive(Debug)]
pub enum Sweep {
    /// No pending marker (finished meanwhile, or a repeated item).
    NothingPending,
    /// Its back-off has not run out.
    BackingOff,
    /// Another publish of the Hub holds its lease.
    Busy,
    /// Ran (complete, or progressed and still pending for the next slice).
    Published(Box<PublishReport>),
    /// Nothing can be published until an admin acts; the marker is cleared.
    Refused(String),
    /// Failed; the Hub backs off.
    Failed(String),
}

/// What a sweep slice came to, without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepOutcome {
    NothingPending,
    BackingOff,
    Busy,
    Complete,
    Progressed,
    Refused,
    Failed,
}

impl SweepOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            SweepOutcome::NothingPending => "nothing_pending",
            SweepOutcome::BackingOff => "backing_off",
            SweepOutcome::Busy => "busy",
            SweepOutcome::Complete => "complete",
            SweepOutcome::Progressed => "progressed",
            SweepOutcome::Refused => "refused",
            SweepOutcome::Failed => "failed",
        }
    }
}

impl Sweep {
    pub fn outcome(&self) -> SweepOutcome {
        match self {
            Sweep::NothingPending => SweepOutcome::NothingPending,
            Sweep::BackingOff => SweepOutcome::BackingOff,
            Sweep::Busy => SweepOutcome::Busy,
            Sweep::Published(r) if r.complete => SweepOutcome::Complete,
            Sweep::Published(_) => SweepOutcome::Progressed,
            Sweep::Refused(_) => SweepOutcome::Refused,
            Sweep::Failed(_) => SweepOutcome::Failed,
        }
    }
}
