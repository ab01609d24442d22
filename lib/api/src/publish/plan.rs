//! Planning a publish. The plan itself is pure (`claresia_domain::catalog::plan`, one per target); here
//! is what this run adds to it: targets that only own skills to remove, the ledger healed and skills open
//! beyond their grants narrowed first, the actions held back (settings not read yet, a skill that could
//! not be narrowed, a version an admin pinned) and the ETA where the org's limits pace the writes.

use std::collections::{BTreeMap, BTreeSet};

use claresia_domain::catalog::{plan, Action, Plan, RemoteSkill, TargetState};
use claresia_domain::TenantSlug;

use super::executor::Ctx;
use super::owner_target;
use super::report::{Eta, Outcome};
use crate::surface::enterprise::{ACCESS_UNKNOWN, PINNED};
use crate::ApiError;

/// Every target's plan, with what is already decided without running it.
pub(super) struct Planned {
    pub(super) targets: Vec<(TenantSlug, TargetState, Plan)>,
    /// Outcomes decided while planning (narrowing done or failed, actions held back), by target.
    pub(super) held: Vec<(TenantSlug, Outcome)>,
    /// Writes the narrowing made.
    pub(super) contained: u32,
    pub(super) eta: Option<Eta>,
}

impl Ctx<'_> {
    /// Plans every target of `desired` against `remote` (a complete listing), within `scope`.
    pub(super) async fn plan(
        &self,
        mut desired: BTreeMap<TenantSlug, TargetState>,
        mut remote: Vec<RemoteSkill>,
        scope: Option<&BTreeSet<String>>,
    ) -> Result<Planned, ApiError> {
        // Sub-tenants that lost all their mappings and archetypes still own skills to remove.
        for r in &remote {
            if let Some(t) = owner_target(self.hub, r) {
                desired.entry(t).or_default();
            }
        }
        self.app.heal_ledger(self.hub, &remote).await?;
        // Before anything else: no skill of ours stays open beyond its grants.
        let (contained, mut held) = self
            .contain(&mut remote, self.app.config.publish_concurrency)
            .await;
        // Skills whose settings this run could not read wait for the run that can.
        let unknown: BTreeSet<String> = remote
            .iter()
            .filter(|r| r.metadata.contains_key(ACCESS_UNKNOWN))
            .map(|r| r.id.clone())
            .collect();
        let mut targets: Vec<_> = desired
            .into_iter()
            .map(|(target, state)| {
                let p = plan(&target, &state, &remote, scope);
                (target, state, p)
            })
            .collect();
        hold_back(&mut targets, &unknown, &mut held);
        held.extend(pinned(self.hub, &remote, scope));
        let eta = self.eta(&targets, unknown.len() as u32);
        Ok(Planned {
            targets,
            held,
            contained,
            eta,
        })
    }

    /// Where the org's limits pace the publish, how long it will take (said up front, and logged).
    fn eta(&self, targets: &[(TenantSlug, TargetState, Plan)], reads: u32) -> Option<Eta> {
        let writes: u32 = targets
            .iter()
            .flat_map(|(_, _, p)| p.actions.iter())
            .map(|a| self.publisher.writes_of(a))
            .sum();
        let eta = self.publisher.writes_per_minute().map(|per_minute| {
            let reads_per_minute = self.publisher.reads_per_minute().unwrap_or(per_minute);
            let seconds =
                f64::from(writes) * 60.0 / per_minute + f64::from(reads) * 60.0 / reads_per_minute;
            Eta {
                writes_planned: writes,
                writes_per_minute: per_minute,
                settings_to_read: reads,
                reads_per_minute,
                seconds: seconds.ceil() as u64,
            }
        })?;
        tracing::info!(tenant = %self.hub, writes = eta.writes_planned, settings_to_read = reads, eta_seconds = eta.seconds, "publish planned");
        Some(eta)
    }
}

/// Drops the access changes to skills whose settings were not read (reported pending, for a later run)
/// and every action on a skill the narrowing could not fix (its failure is already held).
fn hold_back(
    targets: &mut [(TenantSlug, TargetState, Plan)],
    unknown: &BTreeSet<String>,
    held: &mut Vec<(TenantSlug, Outcome)>,
) {
    for (target, _, p) in targets.iter_mut() {
        p.actions.retain(|a| {
            let waits = match a {
                Action::SetAcl { remote_id, .. } => unknown.contains(remote_id),
                Action::Update {
                    remote_id,
                    acl: Some(_),
                    ..
                } => unknown.contains(remote_id),
                _ => false,
            };
            let contained_failed = held.iter().any(|(t, o)| {
                *t == *target && o.name() == a.name() && !matches!(o, Outcome::Updated(_))
            });
            if waits && !contained_failed {
                held.push((target.clone(), Outcome::Pending(a.name().to_owned())));
            }
            !waits && !contained_failed
        });
    }
}

/// A version an admin pinned keeps being served: reported on every publish (no API unpins it), after the
/// plan is trimmed, as it blocks none of its actions.
fn pinned(
    hub: &TenantSlug,
    remote: &[RemoteSkill],
    scope: Option<&BTreeSet<String>>,
) -> Vec<(TenantSlug, Outcome)> {
    remote
        .iter()
        .filter(|r| {
            scope.is_none_or(|s| r.metadata.get("skill_id").is_some_and(|id| s.contains(id)))
        })
        .filter_map(|r| {
            let (served, target) = (r.metadata.get(PINNED)?, owner_target(hub, r)?);
            let skill_id = r.metadata.get("skill_id").cloned().unwrap_or_default();
            let reason = format!(
                "an org admin pinned the served version in claude.ai (irreversible through the API): members get version {served}; Claresia's version is uploaded as the plugin's latest and is served only once an admin serves it there"
            );
            Some((target, Ctx::refused(&skill_id, &r.name, reason)))
        })
        .collect()
}
