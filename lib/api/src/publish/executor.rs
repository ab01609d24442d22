//! The actions against the port: each planned action run with its ledger bookkeeping (a create claimed
//! first on ledger surfaces, a 409 adopted when the skill is ours, access recorded only once it holds),
//! skills open beyond their grants narrowed first, and the ledger healed from what Anthropic holds.

use std::collections::{BTreeMap, BTreeSet};

use claresia_anthropic::{AnthropicError, Deadline, ErrorKind};
use claresia_aws::catalog::ALL_PLUGINS;
use claresia_aws::{AppliedAccess, LedgerEntry, StoreError};
use claresia_domain::catalog::{Acl, Action, DesiredSkill, RemoteSkill};
use claresia_domain::TenantSlug;
use futures::stream::{self, StreamExt};
use time::OffsetDateTime;

use super::plan::Planned;
use super::report::{Outcome, SkillFailure, TargetReport};
use super::{owner_target, DRIFT_SKEW_SECONDS, MIN_ACTION_BUDGET};
use crate::surface::enterprise::{ACCESS_READ_AT, EXPOSURE};
use crate::surface::{Ownership, Publisher};
use crate::{ApiError, App};

/// Why one step of an action failed: Anthropic's answer, or the store's record of it.
enum StepError {
    Anthropic(AnthropicError),
    Store(StoreError),
}

/// What publishing works with: the surface's publisher for this connection, and where the deadline is.
pub(super) struct Ctx<'a> {
    pub(super) app: &'a App,
    pub(super) hub: &'a TenantSlug,
    pub(super) publisher: Box<dyn Publisher + 'a>,
    pub(super) deadline: Deadline,
}

impl Ctx<'_> {
    /// What the org holds, read with the ledger as it is now (ledger surfaces own by it). The outer
    /// error is the store's, the inner Anthropic's.
    pub(super) async fn list_remote(
        &self,
        access_of: Option<&BTreeSet<String>>,
    ) -> Result<Result<Vec<RemoteSkill>, AnthropicError>, ApiError> {
        let ledger = match self.publisher.ownership() {
            Ownership::Ledger => {
                let mut ledger = self.app.hub.ledger(self.hub).await?;
                let mut marks = self.app.hub.drift_marks(self.hub).await?;
                // "Check everything" (our own clock) distrusts every record made before it.
                let all = marks.remove(ALL_PLUGINS);
                for e in ledger.values_mut() {
                    let drift_at = marks.get(&e.name).map(|at| at + DRIFT_SKEW_SECONDS);
                    let since = drift_at.max(all);
                    // An outside change after what we recorded: the settings are read again.
                    if e.applied_access
                        .as_ref()
                        .zip(since)
                        .is_some_and(|(a, s)| a.at <= s)
                    {
                        e.applied_access = None;
                    }
                }
                ledger
            }
            Ownership::Metadata => BTreeMap::new(),
        };
        Ok(self.publisher.list(&ledger, access_of).await)
    }

    /// Narrows every skill of ours that is open beyond its grants (see [`Publisher::contain`]): the
    /// writes made, and the skills it could not narrow (nothing else is done for them this run).
    pub(super) async fn contain(
        &self,
        remote: &mut [RemoteSkill],
        concurrency: usize,
    ) -> (u32, Vec<(TenantSlug, Outcome)>) {
        let hub = self.hub;
        let owned: Vec<(TenantSlug, &mut RemoteSkill)> = remote
            .iter_mut()
            .filter_map(|r| owner_target(hub, r).map(|t| (t, r)))
            .collect();
        let each: Vec<_> = owned
            .into_iter()
            .map(|(target, r)| self.contain_one(target, r))
            .collect();
        let results: Vec<(u32, Option<(TenantSlug, Outcome)>)> = stream::iter(each)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let writes = results.iter().map(|(w, _)| w).sum();
        (writes, results.into_iter().filter_map(|(_, o)| o).collect())
    }

    async fn contain_one(
        &self,
        target: TenantSlug,
        r: &mut RemoteSkill,
    ) -> (u32, Option<(TenantSlug, Outcome)>) {
        let name = r.name.clone();
        let skill_id = r.metadata.get("skill_id").cloned().unwrap_or_default();
        let exposure = r.metadata.get(EXPOSURE).cloned();
        match self.publisher.contain(r).await {
            Ok(false) => (0, None),
            Ok(true) => {
                tracing::warn!(tenant = %self.hub, name = %name, was = exposure.as_deref(), "a skill open beyond its grants was narrowed back to them");
                (1, Some((target, Outcome::Updated(name))))
            }
            Err(e) => (1, Some((target, self.failure(&skill_id, &name, &e)))),
        }
    }

    fn records_access(&self) -> bool {
        self.publisher.ownership() == Ownership::Ledger
    }

    /// Sets a skill's access, keeping the ledger's record of it true throughout: forgotten before the
    /// first setting changes (a crash mid-way leaves "unknown", never a stale "as planned"), recorded once
    /// all of it holds.
    async fn apply_access(
        &self,
        name: &str,
        remote_id: &str,
        acl: &Acl,
        fresh: bool,
    ) -> Result<Option<AppliedAccess>, StepError> {
        if self.records_access() && !fresh {
            self.app
                .hub
                .set_applied_access(self.hub, name, None)
                .await
                .map_err(StepError::Store)?;
        }
        let at = OffsetDateTime::now_utc().unix_timestamp();
        self.publisher
            .set_access(remote_id, acl, fresh)
            .await
            .map_err(StepError::Anthropic)?;
        let mut acl = acl.clone();
        acl.organization = None;
        Ok(self.records_access().then_some(AppliedAccess { acl, at }))
    }

    /// [`Ctx::apply_access`], then the record written (where nothing else writes the entry after it).
    async fn apply_and_record(
        &self,
        name: &str,
        remote_id: &str,
        acl: &Acl,
    ) -> Result<(), StepError> {
        if let Some(applied) = self.apply_access(name, remote_id, acl, false).await? {
            self.app
                .hub
                .set_applied_access(self.hub, name, Some(applied))
                .await
                .map_err(StepError::Store)?;
        }
        Ok(())
    }

    async fn ledger_put(
        &self,
        target: &TenantSlug,
        d: &DesiredSkill,
        remote_id: &str,
        applied_access: Option<AppliedAccess>,
    ) -> Result<(), StoreError> {
        let entry = LedgerEntry {
            name: d.skill.name.clone(),
            target: target.clone(),
            skill_id: d.skill_id.clone(),
            remote_id: remote_id.to_owned(),
            removed_at: None,
            content_hash: Some(d.skill.content_hash().to_owned()),
            claimed_at: None,
            applied_access,
        };
        self.app.hub.put_ledger(self.hub, &entry).await
    }

    /// On surfaces where ownership is the ledger, a create is claimed before it is sent: a crash after
    /// Anthropic created the plugin leaves a claim that makes it ours, not a foreign plugin.
    async fn claim(&self, target: &TenantSlug, d: &DesiredSkill) -> Result<(), StoreError> {
        if self.publisher.ownership() != Ownership::Ledger {
            return Ok(());
        }
        let entry = LedgerEntry {
            name: d.skill.name.clone(),
            target: target.clone(),
            skill_id: d.skill_id.clone(),
            remote_id: String::new(),
            removed_at: None,
            content_hash: None,
            claimed_at: Some(OffsetDateTime::now_utc().unix_timestamp()),
            applied_access: None,
        };
        self.app.hub.put_ledger(self.hub, &entry).await
    }

    fn failure(&self, skill_id: &str, name: &str, e: &AnthropicError) -> Outcome {
        let refusal = e.is_deterministic() && !self.publisher.pends_on_final_answers();
        if e.is_unavailable() && !refusal {
            return Outcome::Pending(name.to_owned());
        }
        let workspace = (e.kind() == ErrorKind::Permission)
            .then(|| e.upstream_message())
            .flatten()
            .filter(|m| m.contains("not a member of workspace"))
            .and_then(|m| m.split_whitespace().last())
            .map(str::to_owned);
        let reason = match &workspace {
            Some(ws) => format!("Add the Admin key's principal to workspace {ws}"),
            None => e.to_string(),
        };
        Outcome::Failed(
            SkillFailure {
                skill_id: skill_id.to_owned(),
                name: name.to_owned(),
                reason,
            },
            workspace,
        )
    }

    /// The action's bookkeeping could not be written: reported like a failure by a publish (the next one
    /// converges), and a store outage to offboarding, which must not half-finish.
    fn unrecorded(skill_id: &str, name: &str, e: StoreError) -> Outcome {
        Outcome::Unrecorded(
            SkillFailure {
                skill_id: skill_id.to_owned(),
                name: name.to_owned(),
                reason: e.to_string(),
            },
            e,
        )
    }

    fn step_failure(&self, skill_id: &str, name: &str, e: StepError) -> Outcome {
        match e {
            StepError::Anthropic(e) => self.failure(skill_id, name, &e),
            StepError::Store(e) => Self::unrecorded(skill_id, name, e),
        }
    }

    pub(super) fn refused(skill_id: &str, name: &str, reason: String) -> Outcome {
        Outcome::Failed(
            SkillFailure {
                skill_id: skill_id.to_owned(),
                name: name.to_owned(),
                reason,
            },
            None,
        )
    }

    pub(super) async fn run(&self, target: &TenantSlug, action: Action) -> Outcome {
        let name = action.name().to_owned();
        if self.deadline.remaining() < MIN_ACTION_BUDGET {
            return Outcome::Pending(name);
        }
        let access = match &action {
            Action::Create(d) => Some((&d.skill_id, &d.acl)),
            Action::Update {
                desired,
                acl: Some(acl),
                ..
            } => Some((&desired.skill_id, acl)),
            Action::SetAcl { skill_id, acl, .. } => Some((skill_id, acl)),
            _ => None,
        };
        if let Some((skill_id, acl)) = access {
            if let Err(reason) = self.publisher.check_access(acl).await {
                return Self::refused(skill_id, &name, reason);
            }
        }
        match action {
            Action::Create(d) => self.create(target, d).await,
            Action::Update {
                remote_id,
                desired,
                acl,
            } => {
                self.update(target, &remote_id, &desired, acl.as_ref())
                    .await
            }
            Action::SetAcl {
                remote_id,
                skill_id,
                name,
                acl,
            } => match self.apply_and_record(&name, &remote_id, &acl).await {
                Ok(()) => Outcome::Updated(name),
                Err(e) => self.step_failure(&skill_id, &name, e),
            },
            Action::Delete {
                remote_id,
                skill_id,
                name,
            } => {
                match self.publisher.delete(&remote_id).await {
                    Ok(()) => {}
                    // Already gone (a crashed run deleted it): the goal is reached.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return self.failure(&skill_id, &name, &e),
                }
                let tombstone = LedgerEntry {
                    name: name.clone(),
                    target: target.clone(),
                    skill_id: skill_id.clone(),
                    remote_id,
                    removed_at: None,
                    content_hash: None,
                    claimed_at: None,
                    applied_access: None,
                };
                let now = OffsetDateTime::now_utc().unix_timestamp();
                match self
                    .app
                    .hub
                    .tombstone_ledger(self.hub, &tombstone, now)
                    .await
                {
                    Ok(()) => Outcome::Deleted(name),
                    Err(e) => Self::unrecorded(&skill_id, &name, e),
                }
            }
        }
    }

    async fn create(&self, target: &TenantSlug, d: DesiredSkill) -> Outcome {
        let name = d.skill.name.clone();
        if let Err(e) = self.claim(target, &d).await {
            return Self::unrecorded(&d.skill_id, &name, e);
        }
        let remote_id = match self.publisher.create(&d).await {
            Ok(id) => id,
            // A run that crashed after its create: adopt the skill if it is ours, then converge it.
            Err(e) if e.kind() == ErrorKind::Conflict => return self.adopt(target, d).await,
            Err(e) => return self.failure(&d.skill_id, &name, &e),
        };
        // The ledger first: a crash between here and the access still leaves the name resolvable.
        if let Err(e) = self.ledger_put(target, &d, &remote_id, None).await {
            return Self::unrecorded(&d.skill_id, &name, e);
        }
        let applied = match self.apply_access(&name, &remote_id, &d.acl, true).await {
            Ok(a) => a,
            Err(e) => return self.step_failure(&d.skill_id, &name, e),
        };
        if applied.is_some() {
            if let Err(e) = self
                .app
                .hub
                .set_applied_access(self.hub, &name, applied)
                .await
            {
                return Self::unrecorded(&d.skill_id, &name, e);
            }
        }
        Outcome::Created(name)
    }

    /// The name is taken: ours (a crashed run's create, by its metadata or our claim) is converged,
    /// anything else is foreign and never touched.
    async fn adopt(&self, target: &TenantSlug, d: DesiredSkill) -> Outcome {
        let name = d.skill.name.clone();
        let only = BTreeSet::from([d.skill_id.clone()]);
        let existing = match self.list_remote(Some(&only)).await {
            Ok(Ok(list)) => list.into_iter().find(|r| r.name == name),
            Ok(Err(e)) => return self.failure(&d.skill_id, &name, &e),
            Err(e) => return Self::refused(&d.skill_id, &name, e.to_string()),
        };
        let Some(r) = existing.filter(|r| r.owned_by(target)) else {
            return Self::refused(
                &d.skill_id,
                &name,
                format!("the name {name} is taken by a skill Claresia does not manage; rename or remove that skill in Anthropic"),
            );
        };
        let acl = (r.acl.clone().normalized() != d.acl).then(|| d.acl.clone());
        if r.metadata.get("content_hash").map(String::as_str) != Some(d.skill.content_hash()) {
            return self.update(target, &r.id, &d, acl.as_ref()).await;
        }
        let mut applied = None;
        if let Some(acl) = acl {
            match self.apply_access(&name, &r.id, &acl, false).await {
                Ok(a) => applied = a,
                Err(e) => return self.step_failure(&d.skill_id, &name, e),
            }
        }
        match self.ledger_put(target, &d, &r.id, applied).await {
            Ok(()) => Outcome::Created(name),
            Err(e) => Self::unrecorded(&d.skill_id, &name, e),
        }
    }

    async fn update(
        &self,
        target: &TenantSlug,
        remote_id: &str,
        d: &DesiredSkill,
        acl: Option<&Acl>,
    ) -> Outcome {
        let name = d.skill.name.clone();
        if let Err(e) = self.publisher.replace(remote_id, d).await {
            return self.failure(&d.skill_id, &name, &e);
        }
        // A content-only update leaves the access unrecorded: the next full publish reads it back once.
        let mut applied = None;
        if let Some(acl) = acl {
            match self.apply_access(&name, remote_id, acl, false).await {
                Ok(a) => applied = a,
                Err(e) => return self.step_failure(&d.skill_id, &name, e),
            }
        }
        match self.ledger_put(target, d, remote_id, applied).await {
            Ok(()) => Outcome::Updated(name),
            Err(e) => Self::unrecorded(&d.skill_id, &name, e),
        }
    }

    /// Runs each target's plan, `PUBLISH_CONCURRENCY` actions at a time, into its report; the outcomes
    /// held back while planning join their target's report.
    pub(super) async fn execute(
        &self,
        planned: Planned,
        scope: Option<&BTreeSet<String>>,
    ) -> Executed {
        let Planned {
            targets,
            mut held,
            contained,
            ..
        } = planned;
        let mut done = Executed {
            reports: Vec::new(),
            writes: contained,
            missing_workspaces: BTreeSet::new(),
        };
        for (target, state, p) in targets {
            let mut report = TargetReport::planned(&target, &state, &p, scope);
            let outcomes: Vec<(u32, Outcome)> = stream::iter(p.actions)
                .map(|a| {
                    let target = &target;
                    let calls = self.publisher.writes_of(&a);
                    async move { (calls, self.run(target, a).await) }
                })
                .buffer_unordered(self.app.config.publish_concurrency)
                .collect()
                .await;
            let (here, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(t, _)| *t == target);
            held = rest;
            for (calls, o) in outcomes
                .into_iter()
                .chain(here.into_iter().map(|(_, o)| (0, o)))
            {
                // An action left for the sweep sent nothing; any other was sent (a failure included).
                if !matches!(o, Outcome::Pending(_)) {
                    done.writes += calls;
                }
                done.missing_workspaces.extend(report.record(o));
            }
            report.settle();
            done.reports.push(report);
        }
        done
    }
}

/// What running the plans came to: each target's report, the writes sent, and the workspaces a 403 named.
pub(super) struct Executed {
    pub(super) reports: Vec<TargetReport>,
    pub(super) writes: u32,
    pub(super) missing_workspaces: BTreeSet<String>,
}

impl App {
    /// The ledger is derived from what Anthropic holds: every skill we own there gets its entry, so a
    /// ledger write lost to a crash (after the skill was created) is repaired by the next publish or sweep
    /// instead of leaving its runs unresolvable for ever. Writes only what is missing or different.
    pub(super) async fn heal_ledger(
        &self,
        hub: &TenantSlug,
        remote: &[RemoteSkill],
    ) -> Result<(), ApiError> {
        let ledger = self.hub.ledger(hub).await?;
        // A live entry whose skill is gone (a crash between the delete and its tombstone): a tombstone now,
        // so its late runs still resolve and the ledger says what Anthropic holds.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for entry in ledger.values().filter(|e| e.removed_at.is_none()) {
            if !remote.iter().any(|r| r.name == entry.name) {
                self.hub.tombstone_ledger(hub, entry, now).await?;
            }
        }
        for r in remote {
            let Some(target) = owner_target(hub, r) else {
                continue;
            };
            let entry = LedgerEntry {
                name: r.name.clone(),
                target,
                skill_id: r.metadata.get("skill_id").cloned().unwrap_or_default(),
                remote_id: r.id.clone(),
                removed_at: None,
                content_hash: r
                    .metadata
                    .get("content_hash")
                    .filter(|h| !h.is_empty())
                    .cloned(),
                claimed_at: None,
                // Settings this listing read are known from then on; others keep their record.
                applied_access: match r
                    .metadata
                    .get(ACCESS_READ_AT)
                    .and_then(|t| t.parse().ok())
                    .filter(|_| r.acl.organization.as_ref() == r.metadata.get(EXPOSURE))
                {
                    Some(at) => Some(AppliedAccess {
                        acl: Acl {
                            organization: None,
                            ..r.acl.clone()
                        },
                        at,
                    }),
                    None => ledger.get(&r.name).and_then(|e| e.applied_access.clone()),
                },
            };
            if ledger.get(&r.name) != Some(&entry) {
                tracing::info!(tenant = %hub, name = %r.name, "ledger entry restored from Anthropic");
                self.hub.put_ledger(hub, &entry).await?;
            }
        }
        Ok(())
    }
}
