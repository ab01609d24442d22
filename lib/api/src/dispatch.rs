//! The dispatcher (`poll-dispatcher`), scheduling only: each 60 s schedule delivery enqueues one poll item
//! per connected tenant (the longest without a successful poll first) and one sweep item per Hub with a
//! pending publish, and reports the oldest success age for the stale-tenant alarm. It polls nothing and
//! publishes nothing; the workers ([`crate::worker`]) do, one tenant per item.

use std::collections::HashMap;
use std::time::Instant;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use claresia_aws::{HubStore, WorkQueue};
use claresia_domain::work::{self, PollCandidate, PollPlan, WorkItem};
use claresia_domain::{ConnectionState, LiveConnection, TenantSlug};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::{Config, StartupError, WorkError};

pub struct Dispatcher {
    pub config: Config,
    pub hub: HubStore,
    pub polls: WorkQueue,
    pub sweeps: WorkQueue,
    pub metrics: Metrics,
}

/// What one dispatch enqueued.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DispatchReport {
    /// The scheduled time (Unix seconds) the items carry; a repeated delivery names the same one.
    pub scheduled_at: i64,
    pub polls_enqueued: usize,
    pub sweeps_enqueued: usize,
    /// Live tenants not polled (disconnected, or needing an admin's attention).
    pub tenants_not_connected: usize,
    /// The longest any connected tenant has gone without a successful poll, from the stored
    /// `last_success_at` (else since connecting).
    pub oldest_success_age_seconds: i64,
    pub seconds: f64,
}

impl Dispatcher {
    /// From the environment: the app's configuration plus `POLL_QUEUE_URL` and `SWEEP_QUEUE_URL`. Builds
    /// only the clients it uses (DynamoDB, SQS).
    pub async fn from_env() -> Result<Dispatcher, StartupError> {
        let config = Config::from_env()?;
        let queue_url = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Invalid {
                    name,
                    reason: "is not set (the work queue's URL)".into(),
                })
        };
        let (polls, sweeps) = (queue_url("POLL_QUEUE_URL")?, queue_url("SWEEP_QUEUE_URL")?);
        let sdk = claresia_aws::load_sdk_config(config.tls_native_roots).await;
        // Built on first use, like the app's (see `claresia_aws::Lazy`).
        let for_sqs = sdk.clone();
        let sqs = claresia_aws::Lazy::new(move || aws_sdk_sqs::Client::new(&for_sqs));
        Ok(Dispatcher {
            hub: HubStore::new(
                claresia_aws::Lazy::new(move || aws_sdk_dynamodb::Client::new(&sdk)),
                config.hub_table.clone(),
            ),
            polls: WorkQueue::new(sqs.clone(), polls),
            sweeps: WorkQueue::new(sqs, sweeps),
            metrics: Metrics::stdout(config.stage.clone()),
            config,
        })
    }

    /// One schedule delivery. Its `time` is the scheduled time, the same in a duplicated delivery, so that
    /// one enqueues the same deduplication ids and the queue drops them.
    pub async fn handle(
        &self,
        event: &EventBridgeEvent<Value>,
    ) -> Result<DispatchReport, WorkError> {
        let scheduled = event
            .time
            .map(|t| t.timestamp())
            .unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp());
        let report = self.dispatch(scheduled).await?;
        tracing::info!(
            delivery = event.id.as_deref().unwrap_or_default(),
            scheduled_at = report.scheduled_at,
            polls = report.polls_enqueued,
            sweeps = report.sweeps_enqueued,
            oldest_success_age_seconds = report.oldest_success_age_seconds,
            "work dispatched"
        );
        Ok(report)
    }

    pub async fn dispatch(&self, scheduled_unix: i64) -> Result<DispatchReport, WorkError> {
        let started = Instant::now();
        let (connected, idle): (Vec<_>, Vec<_>) = self
            .hub
            .live_connections()
            .await?
            .into_iter()
            .partition(|r| r.state == ConnectionState::Connected);
        let (plan, _) = plan_polls(&self.hub, connected, scheduled_unix).await?;
        let polls_enqueued = self.polls.enqueue(&plan.items).await?;
        let sweeps: Vec<WorkItem> = self
            .hub
            .pending_tenants()
            .await?
            .into_iter()
            .map(|hub| WorkItem::Sweep {
                hub,
                scheduled_at: scheduled_unix,
            })
            .collect();
        let sweeps_enqueued = self.sweeps.enqueue(&sweeps).await?;
        let report = DispatchReport {
            scheduled_at: scheduled_unix,
            polls_enqueued,
            sweeps_enqueued,
            tenants_not_connected: idle.len(),
            oldest_success_age_seconds: plan.oldest_success_age_seconds,
            seconds: started.elapsed().as_secs_f64(),
        };
        self.metrics.emit(&[
            (
                "OldestSuccessfulPollAgeSeconds",
                report.oldest_success_age_seconds as f64,
                "Seconds",
            ),
            ("PollItemsEnqueued", polls_enqueued as f64, "Count"),
            ("SweepItemsEnqueued", sweeps_enqueued as f64, "Count"),
            ("DispatchSeconds", report.seconds, "Seconds"),
        ]);
        Ok(report)
    }
}

/// The connected tenants in the order they are due (the longest without a successful poll first, as
/// their stored `last_success_at` says), their poll items read 100 per call.
pub(crate) async fn plan_polls(
    hub: &HubStore,
    connected: Vec<LiveConnection>,
    scheduled_at: i64,
) -> Result<(PollPlan, HashMap<TenantSlug, LiveConnection>), WorkError> {
    let tenants: Vec<TenantSlug> = connected.iter().map(|r| r.tenant.clone()).collect();
    let states = hub.poll_states(&tenants).await?;
    let rfc = &time::format_description::well_known::Rfc3339;
    let candidates = connected
        .iter()
        .map(|r| PollCandidate {
            tenant: r.tenant.clone(),
            connected_at: r.connected_at.unix_timestamp(),
            last_success_at: states
                .get(&r.tenant)
                .and_then(|s| s.status.last_success_at.as_deref())
                .and_then(|t| OffsetDateTime::parse(t, rfc).ok())
                .map(OffsetDateTime::unix_timestamp),
        })
        .collect();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let by_tenant = connected
        .into_iter()
        .map(|r| (r.tenant.clone(), r))
        .collect();
    Ok((work::plan_polls(candidates, now, scheduled_at), by_tenant))
}
