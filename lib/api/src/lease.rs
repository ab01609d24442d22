//! One lease type for every leased path: a tenant's poll, a Hub's publish (offboarding holds the publish
//! lease too). The holder's name and the expiry arithmetic live here, once: a lease runs to its holder's
//! deadline plus `POLL_LEASE_SLACK`, so a holder that dies lets it lapse before the next run needs it.

use std::time::Duration;

use claresia_anthropic::Deadline;
use claresia_aws::{HubStore, StoreError};
use claresia_domain::TenantSlug;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseKind {
    /// One poll of a tenant at a time.
    Poll,
    /// One publish (or offboarding) of a Hub at a time.
    Publish,
}

impl LeaseKind {
    fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Poll => "poll",
            LeaseKind::Publish => "publish",
        }
    }
}

/// A lease on one tenant, named for one holder (`take`, `wait`, `release`).
pub(crate) struct Lease<'a> {
    hub: &'a HubStore,
    tenant: &'a TenantSlug,
    kind: LeaseKind,
    owner: String,
    slack: Duration,
}

impl<'a> Lease<'a> {
    /// A lease `holder` (what it is for: "poll", "publish", "unpublish") may take; not taken yet.
    pub(crate) fn new(
        hub: &'a HubStore,
        tenant: &'a TenantSlug,
        kind: LeaseKind,
        holder: &str,
        slack: Duration,
    ) -> Self {
        let owner = format!(
            "{holder}-{}-{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos(),
            std::process::id()
        );
        Lease {
            hub,
            tenant,
            kind,
            owner,
            slack,
        }
    }

    /// Takes the lease if it is free (or lapsed), until `deadline` plus the slack.
    pub(crate) async fn take(&self, deadline: Deadline) -> Result<bool, StoreError> {
        let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let until = now_ms + (deadline.remaining() + self.slack).as_millis() as i128;
        let (tenant, owner) = (self.tenant, self.owner.as_str());
        match self.kind {
            LeaseKind::Poll => {
                self.hub
                    .acquire_poll_lease(tenant, owner, now_ms, until)
                    .await
            }
            LeaseKind::Publish => {
                self.hub
                    .acquire_publish_lease(tenant, owner, now_ms, until)
                    .await
            }
        }
    }

    /// [`Lease::take`], waiting for the holder while more than `keep` (plus the next wait) is left.
    pub(crate) async fn wait(
        &self,
        deadline: Deadline,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut wait = Duration::from_millis(50);
        loop {
            if self.take(deadline).await? {
                return Ok(true);
            }
            if deadline.remaining() < keep + wait {
                return Ok(false);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Gives the lease back. Not fatal if the store fails: it lapses a few seconds after the deadline.
    pub(crate) async fn release(self) {
        let (tenant, owner) = (self.tenant, self.owner.as_str());
        let released = match self.kind {
            LeaseKind::Poll => self.hub.release_poll_lease(tenant, owner).await,
            LeaseKind::Publish => self.hub.release_publish_lease(tenant, owner).await,
        };
        if let Err(e) = released {
            let lease = self.kind.as_str();
            tracing::warn!(tenant = %tenant, error = %e, lease, "could not release the lease");
        }
    }
}

impl crate::App {
    /// `kind`'s lease on `tenant` for `holder`, with the configured slack.
    pub(crate) fn lease<'a>(
        &'a self,
        tenant: &'a TenantSlug,
        kind: LeaseKind,
        holder: &str,
    ) -> Lease<'a> {
        Lease::new(
            &self.hub,
            tenant,
            kind,
            holder,
            self.config.poll_lease_slack,
        )
    }
}
