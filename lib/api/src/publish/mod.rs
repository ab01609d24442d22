//! Capability 3: publish the Hub catalog to Anthropic, in kube-runtime's reconciler shape: plan (pure, in
//! `claresia_domain::catalog`), execute the actions against the port, finalize (reports stored, the
//! pending marker cleared or left for the sweep). One publish of a Hub at a time, under its lease.
//!
//! - `mod.rs` (here): the entry points, the lease, the loop `publish_leased` (inputs → plan → execute →
//!   finalize);
//! - `plan.rs`: what a run adds to the pure plan (narrowing first, actions held back, the ETA);
//! - `executor.rs`: each action against the port with its ledger bookkeeping; the ledger healed;
//! - `report.rs`: the reports (per target, per publish, what the status stores);
//! - `intent.rs`: a change's write-ahead marker (`begin_change` / `abandon_change`) and its publish;
//! - `unpublish.rs`: offboarding; `sweep.rs`: the pending sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use claresia_anthropic::{AnthropicError, Deadline, ErrorKind};
use claresia_domain::catalog::{
    desired_state, Archetype, RemoteSkill, TargetState, WorkspaceMapping,
};
use claresia_domain::skill_ir::SkillIr;
use claresia_domain::{AdminKey, ConnectionRecord, ConnectionState, TenantSlug};
use time::OffsetDateTime;

use crate::lease::LeaseKind;
use crate::{ApiError, App};
use executor::Ctx;

mod executor;
mod intent;
mod plan;
mod report;
mod sweep;
mod unpublish;

pub use intent::Intent;
pub use report::{Eta, OutcomeCounts, PublishReport, SkillFailure, StoredReport, TargetReport};
pub use sweep::{Sweep, SweepOutcome};

/// Below this much time left, an action is not started (it is left for the sweep).
const MIN_ACTION_BUDGET: Duration = Duration::from_millis(1500);
/// Access recorded less than this before an outside change the feed reported is not trusted (clock skew
/// between Anthropic's `created_at` and ours).
const DRIFT_SKEW_SECONDS: i64 = 60;

/// The target (the hub tenant or one of its sub-tenants) a remote skill was published for, if it is ours:
/// our metadata names this hub (or the hub itself as tenant) and the name matches that target exactly.
fn owner_target(hub: &TenantSlug, r: &RemoteSkill) -> Option<TenantSlug> {
    let t = TenantSlug::parse(r.metadata.get("tenant")?).ok()?;
    let ours = r.metadata.get("hub_tenant").map(String::as_str) == Some(hub.as_str()) || &t == hub;
    (ours && r.owned_by(&t)).then_some(t)
}

/// Why a publish was refused before anything was written.
pub fn refusal(record: Option<&ConnectionRecord>) -> Option<String> {
    match record {
        None => Some("the tenant is not connected; connect an Anthropic Admin key first".into()),
        Some(r) => r.publish_refusal(),
    }
}

impl App {
    /// Publishes `hub`'s catalog: every target, or only `scope`'s skill ids. Refuses (writing nothing) when
    /// the tenant is not connected or zero-retention is not confirmed. One publish of a Hub at a time (a
    /// lease): another waits for it while its budget allows, else leaves a pending marker for the sweep,
    /// which plans from the catalog as it is then — so whatever finishes last, Anthropic ends up matching
    /// the catalog's last state.
    pub async fn publish(
        &self,
        hub: &TenantSlug,
        scope: Option<&BTreeSet<String>>,
        deadline: Deadline,
    ) -> Result<PublishReport, ApiError> {
        self.publish_with(hub, scope, deadline, None, true).await
    }

    /// [`App::publish`], finishing the change whose pending marker is `intent`: that marker is cleared when
    /// the publish completes (and only if it is still that one — a later change keeps its own).
    async fn publish_with(
        &self,
        hub: &TenantSlug,
        scope: Option<&BTreeSet<String>>,
        deadline: Deadline,
        intent: Option<&str>,
        wait_for_lease: bool,
    ) -> Result<PublishReport, ApiError> {
        // A refusal is decided before anything is written (the lease included).
        if let Some(reason) = refusal(self.hub.connection(hub).await?.as_ref()) {
            return Err(ApiError::PublishRefused(reason));
        }
        let lease = self.lease(hub, LeaseKind::Publish, "publish");
        let leased = if wait_for_lease {
            // Waits for a running publish while enough budget is left to do anything after it.
            lease.wait(deadline, MIN_ACTION_BUDGET * 2).await?
        } else {
            lease.take(deadline).await?
        };
        if !leased {
            // A sweep leaves the Hub's marker as it is (the next item tries again); a request leaves one.
            if wait_for_lease {
                tracing::info!(tenant = %hub, "another publish of this Hub is running; left to the sweep");
                self.hub.mark_pending(hub, &new_token()).await?;
            }
            return Ok(PublishReport {
                tenant: hub.clone(),
                complete: false,
                pending: true,
                surface: self
                    .hub
                    .connection(hub)
                    .await?
                    .map(|r| r.surface)
                    .unwrap_or_default(),
                writes: 0,
                eta: None,
                targets: Vec::new(),
            });
        }
        let result = self.publish_leased(hub, scope, deadline, intent).await;
        lease.release().await;
        result
    }

    /// The publish itself, under the lease: its inputs read, planned, executed, finalized.
    async fn publish_leased(
        &self,
        hub: &TenantSlug,
        scope: Option<&BTreeSet<String>>,
        deadline: Deadline,
        intent: Option<&str>,
    ) -> Result<PublishReport, ApiError> {
        let (record, key) = self.publishing_key(hub).await?;
        let pending_token = self.hub.pending_token(hub).await?;
        let mut desired = self.desired_targets(hub).await?;
        let ctx = Ctx {
            app: self,
            hub,
            publisher: self
                .surfaces
                .get(record.surface)
                .publisher(hub, &record, &key, deadline),
            deadline,
        };
        for d in desired.values_mut().flat_map(|t| t.skills.values_mut()) {
            d.acl = ctx.publisher.expressible(std::mem::take(&mut d.acl));
        }
        let remote = self.read_remote(&ctx, &key, scope).await?;
        let planned = ctx.plan(desired, remote, scope).await?;
        let eta = planned.eta.clone();
        let mut done = ctx.execute(planned, scope).await;
        if !done.missing_workspaces.is_empty() {
            self.name_workspaces(
                &record,
                &key,
                deadline,
                &done.missing_workspaces,
                &mut done.reports,
            )
            .await;
        }
        let complete = self
            .finish_publish(hub, &done.reports, scope, pending_token.as_deref(), intent)
            .await?;
        Ok(PublishReport {
            tenant: hub.clone(),
            complete,
            pending: !complete,
            surface: record.surface,
            writes: done.writes,
            eta,
            targets: done.reports,
        })
    }

    /// The connection and the key a publish uses, or why it is refused.
    async fn publishing_key(
        &self,
        hub: &TenantSlug,
    ) -> Result<(ConnectionRecord, AdminKey), ApiError> {
        let record = self.hub.connection(hub).await?;
        if let Some(reason) = refusal(record.as_ref()) {
            return Err(ApiError::PublishRefused(reason));
        }
        let Some(record) = record else {
            return Err(ApiError::NotConnected(hub.to_string()));
        };
        let Some(key) = self
            .keys
            .get_version(hub, record.secret_version_id.as_deref())
            .await?
        else {
            return Err(ApiError::NotConnected(hub.to_string()));
        };
        Ok((record, key))
    }

    /// What the catalog says each target should have.
    async fn desired_targets(
        &self,
        hub: &TenantSlug,
    ) -> Result<BTreeMap<TenantSlug, TargetState>, ApiError> {
        let skills: BTreeMap<String, SkillIr> = self.hub.skills(hub).await?;
        let mut archetypes: BTreeMap<String, Archetype> = self.hub.archetypes(hub).await?;
        let mut mappings: Vec<WorkspaceMapping> = self.hub.workspace_mappings(hub).await?;
        // Only registered sub-tenants are published to (writes are validated; this also covers links made
        // before the registry existed): anything naming another slug publishes nothing for it.
        let subs = self.active_sub_tenants(hub).await?;
        let registered = |s: &Option<TenantSlug>| s.as_ref().is_none_or(|s| subs.contains(s));
        archetypes.retain(|_, a| registered(&a.sub_tenant));
        mappings.retain(|m| registered(&m.sub_tenant));
        Ok(desired_state(hub, &archetypes, &skills, &mappings))
    }

    /// What the org holds. A failed or partial listing is "unknown", never "empty": nothing is planned
    /// from it (unavailable: left pending; the key refused: recorded on the connection).
    async fn read_remote(
        &self,
        ctx: &Ctx<'_>,
        key: &AdminKey,
        scope: Option<&BTreeSet<String>>,
    ) -> Result<Vec<RemoteSkill>, ApiError> {
        let e = match ctx.list_remote(scope).await? {
            Ok(remote) => return Ok(remote),
            Err(e) => e,
        };
        let refusal = e.is_deterministic() && !ctx.publisher.pends_on_final_answers();
        if e.is_unavailable() && !refusal {
            self.hub.mark_pending(ctx.hub, &new_token()).await?;
        } else if matches!(e.kind(), ErrorKind::Authentication | ErrorKind::Permission) {
            let reason = format!(
                "Anthropic refused the stored key while publishing ({})",
                e.summary()
            );
            self.key_refused(ctx.hub, key, reason).await?;
        }
        Err(anthropic_error(e))
    }

    /// Names the workspaces a 403 was about, as the troubleshooting table tells the admin to fix them
    /// (best effort: the ids stay if the names cannot be read).
    async fn name_workspaces(
        &self,
        record: &ConnectionRecord,
        key: &AdminKey,
        deadline: Deadline,
        missing: &BTreeSet<String>,
        reports: &mut [TargetReport],
    ) {
        let surface = self.surfaces.get(record.surface);
        let Ok(names) = surface.mapping_targets(key, deadline).await else {
            return;
        };
        for f in reports.iter_mut().flat_map(|r| r.failed.iter_mut()) {
            for (id, name) in names.iter().filter(|(id, _)| missing.contains(*id)) {
                if f.reason.ends_with(id.as_str()) {
                    f.reason = format!("Add the Admin key's principal to workspace {name} ({id})");
                }
            }
        }
    }

    /// Stores what changed, then clears the pending marker (complete) or leaves one for the sweep;
    /// answers whether the publish is complete.
    async fn finish_publish(
        &self,
        hub: &TenantSlug,
        reports: &[TargetReport],
        scope: Option<&BTreeSet<String>>,
        pending_token: Option<&str>,
        intent: Option<&str>,
    ) -> Result<bool, ApiError> {
        let complete = reports.iter().all(|r| r.complete);
        for r in reports {
            if scope.is_none()
                || !r.created.is_empty()
                || !r.updated.is_empty()
                || !r.deleted.is_empty()
                || !r.failed.is_empty()
                || !r.complete
            {
                self.hub
                    .put_publish_report(hub, &r.tenant, &r.stored())
                    .await?;
            }
        }
        if complete {
            // A full publish finishes whatever was pending; a scoped one, only its own change.
            if let (Some(token), None) = (pending_token, scope) {
                self.hub.clear_pending(hub, token).await?;
            }
            if let Some(token) = intent {
                self.hub.clear_pending(hub, token).await?;
            }
        } else {
            self.hub.mark_pending(hub, &new_token()).await?;
        }
        let counts = |f: fn(&TargetReport) -> usize| reports.iter().map(f).sum::<usize>();
        tracing::info!(
            tenant = %hub,
            created = counts(|r| r.created.len()),
            updated = counts(|r| r.updated.len()),
            deleted = counts(|r| r.deleted.len()),
            unchanged = counts(|r| r.unchanged.len()),
            failed = counts(|r| r.failed.len()),
            pending = counts(|r| r.pending.len()),
            "catalog published"
        );
        Ok(complete)
    }

    pub(crate) fn live(record: Option<ConnectionRecord>) -> Option<ConnectionRecord> {
        record.filter(|r| r.state != ConnectionState::Disconnected)
    }
}

pub(crate) fn new_token() -> String {
    OffsetDateTime::now_utc().unix_timestamp_nanos().to_string()
}

pub(crate) fn anthropic_error(e: AnthropicError) -> ApiError {
    if e.is_unavailable() {
        ApiError::AnthropicUnavailable(Box::new(claresia_domain::TestOutcome::unavailable(
            &e.summary(),
            e.request_id().map(str::to_owned),
        )))
    } else {
        ApiError::AnthropicRejected(Box::new(e))
    }
}
