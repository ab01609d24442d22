//! Offboarding: every skill Claresia published for a Hub and its sub-tenants removed, under the Hub's
//! publish lease, all or an error (nothing is half-disconnected).

use std::collections::BTreeSet;

use claresia_anthropic::Deadline;
use claresia_domain::catalog::{Action, RemoteSkill};
use claresia_domain::{AdminKey, ConnectionRecord, TenantSlug};
use futures::stream::{self, StreamExt};

use super::executor::Ctx;
use super::report::Outcome;
use super::{anthropic_error, owner_target, MIN_ACTION_BUDGET};
use crate::lease::LeaseKind;
use crate::{ApiError, App};

impl App {
    /// Removes every skill Claresia published for `hub` and its sub-tenants (offboarding). Zero-retention
    /// does not matter here: cleaning up must work even when publishing is refused.
    pub(crate) async fn unpublish_all(
        &self,
        hub: &TenantSlug,
        record: &ConnectionRecord,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<usize, ApiError> {
        // Not while a publish of this Hub may still be creating skills.
        let lease = self.lease(hub, LeaseKind::Publish, "unpublish");
        if !lease.wait(deadline, MIN_ACTION_BUDGET * 2).await? {
            // Not a failure of Anthropic's: another request holds the Hub for now.
            return Err(ApiError::Conflict(
                "a publish of this tenant's catalog is still running; nothing was disconnected, retry in a minute".into(),
            ));
        }
        let removed = self.unpublish_leased(hub, record, key, deadline).await;
        lease.release().await;
        removed
    }

    async fn unpublish_leased(
        &self,
        hub: &TenantSlug,
        record: &ConnectionRecord,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<usize, ApiError> {
        let ctx = Ctx {
            app: self,
            hub,
            publisher: self
                .surfaces
                .get(record.surface)
                .publisher(hub, record, key, deadline),
            deadline,
        };
        let remote = ctx
            .list_remote(Some(&BTreeSet::new()))
            .await?
            .map_err(anthropic_error)?;
        let ours: Vec<(TenantSlug, RemoteSkill)> = remote
            .into_iter()
            .filter_map(|r| Some((owner_target(hub, &r)?, r)))
            .collect();
        let ctx = &ctx;
        let outcomes: Vec<Outcome> = stream::iter(ours)
            .map(|(target, r)| async move {
                let skill_id = r.metadata.get("skill_id").cloned().unwrap_or_default();
                let delete = Action::Delete {
                    remote_id: r.id,
                    skill_id,
                    name: r.name,
                };
                ctx.run(&target, delete).await
            })
            .buffer_unordered(self.config.publish_concurrency)
            .collect()
            .await;
        let mut removed = 0;
        for o in outcomes {
            match o {
                Outcome::Deleted(_) => removed += 1,
                Outcome::Failed(f, _) => {
                    return Err(ApiError::CleanupFailed(format!("{}: {}", f.name, f.reason)))
                }
                // The store failed, not Anthropic: retry the whole offboarding (503).
                Outcome::Unrecorded(_, e) => return Err(ApiError::Store(e)),
                Outcome::Pending(n) => {
                    return Err(ApiError::CleanupFailed(format!(
                        "{n}: Anthropic is unavailable or the time budget ran out"
                    )))
                }
                _ => {}
            }
        }
        Ok(removed)
    }
}
