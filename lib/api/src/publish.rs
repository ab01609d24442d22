//! Capability 3: publish the Hub catalog to Anthropic. The plan is pure (`claresia_domain::catalog`); this
//! executes it with bounded concurrency, adopts skills a crashed run already created (409), records what was
//! published in the ledger, and leaves a pending marker for whatever the time budget did not cover.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use claresia_anthropic::{AnthropicError, Deadline, ErrorKind};
use claresia_aws::catalog::ALL_PLUGINS;
use claresia_aws::{AppliedAccess, LedgerEntry, StoreError};
use claresia_domain::catalog::{
    desired_state, plan, Acl, Action, Archetype, DesiredSkill, RemoteSkill, WorkspaceMapping,
};
use claresia_domain::skill_ir::SkillIr;
use claresia_domain::{AdminKey, ConnectionRecord, ConnectionState, Surface, TenantSlug};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::surface::enterprise::{ACCESS_READ_AT, ACCESS_UNKNOWN, EXPOSURE, PINNED};
use crate::surface::{Ownership, Publisher};
use crate::{ApiError, App};

/// Below this much time left, an action is not started (it is left for the sweep).
const MIN_ACTION_BUDGET: Duration = Duration::from_millis(1500);
/// Access recorded less than this before an outside change the feed reported is not trusted (clock skew
/// between Anthropic's `created_at` and ours).
const DRIFT_SKEW_SECONDS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillFailure {
    pub skill_id: String,
    pub name: String,
    pub reason: String,
}

/// The publish report of one target (the tenant or a sub-tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub tenant: TenantSlug,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub complete: bool,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<SkillFailure>,
    /// Actions left for the scheduled sweep (time budget spent or Anthropic unavailable).
    pub pending: Vec<String>,
}

/// Names of each kind kept in a stored report: the item stays far inside DynamoDB's 400 KB whatever the
/// catalog's size (the full lists are in the publish's own answer).
const STORED_NAMES: usize = 200;

/// How many skills each outcome had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub pending: usize,
}

/// What the status keeps of a target's last publish (`last_publish`): the counts, and the names that
/// changed, failed or wait (at most [`STORED_NAMES`] of each; `names_truncated` says when some were left
/// out). Unchanged names are not kept: they are the bulk of a large catalog and say nothing new.
#[derive(Debug, Serialize)]
pub struct StoredReport<'a> {
    pub tenant: &'a TenantSlug,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub complete: bool,
    pub counts: OutcomeCounts,
    pub created: &'a [String],
    pub updated: &'a [String],
    pub deleted: &'a [String],
    pub failed: &'a [SkillFailure],
    pub pending: &'a [String],
    pub names_truncated: bool,
}

impl TargetReport {
    pub fn counts(&self) -> OutcomeCounts {
        OutcomeCounts {
            created: self.created.len(),
            updated: self.updated.len(),
            deleted: self.deleted.len(),
            unchanged: self.unchanged.len(),
            failed: self.failed.len(),
            pending: self.pending.len(),
        }
    }

    pub fn stored(&self) -> StoredReport<'_> {
        fn cap<T>(v: &[T]) -> &[T] {
            &v[..v.len().min(STORED_NAMES)]
        }
        StoredReport {
            tenant: &self.tenant,
            at: self.at,
            complete: self.complete,
            counts: self.counts(),
            created: cap(&self.created),
            updated: cap(&self.updated),
            deleted: cap(&self.deleted),
            failed: cap(&self.failed),
            pending: cap(&self.pending),
            names_truncated: [
                self.created.len(),
                self.updated.len(),
                self.deleted.len(),
                self.failed.len(),
                self.pending.len(),
            ]
            .iter()
            .any(|n| *n > STORED_NAMES),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub tenant: TenantSlug,
    pub complete: bool,
    pub pending: bool,
    /// The Anthropic surface published to.
    pub surface: Surface,
    /// The write calls this publish made to Anthropic (creates, replacements, access settings, deletes):
    /// 0 when nothing changed.
    pub writes: u32,
    /// Where the org's write limit paces the publish (enterprise): how long its writes take at it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<Eta>,
    pub targets: Vec<TargetReport>,
}

/// The time a publish's writes take at the org's write limit, estimated when it was planned. What the
/// request's time budget does not cover is finished by the pending sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Eta {
    pub writes_planned: u32,
    pub writes_per_minute: f64,
    /// Skills whose installation settings are still to be read (a large org's first publish reads them
    /// across several runs), paced by `reads_per_minute`.
    pub settings_to_read: u32,
    pub reads_per_minute: f64,
    pub seconds: u64,
}

enum Outcome {
    Created(String),
    Updated(String),
    Deleted(String),
    Failed(SkillFailure, Option<String>),
    /// Done in Anthropic (or not), but the store failed to record it.
    Unrecorded(SkillFailure, StoreError),
    Pending(String),
}

impl Outcome {
    fn name(&self) -> &str {
        match self {
            Outcome::Created(n)
            | Outcome::Updated(n)
            | Outcome::Deleted(n)
            | Outcome::Pending(n) => n,
            Outcome::Failed(f, _) | Outcome::Unrecorded(f, _) => &f.name,
        }
    }
}

/// Why one step of an action failed: Anthropic's answer, or the store's record of it.
enum StepError {
    Anthropic(AnthropicError),
    Store(StoreError),
}

/// What publishing works with: the surface's publisher for this connection, and where the deadline is.
struct Ctx<'a> {
    app: &'a App,
    hub: &'a TenantSlug,
    publisher: Box<dyn Publisher + 'a>,
    deadline: Deadline,
}

impl Ctx<'_> {
    /// What the org holds, read with the ledger as it is now (ledger surfaces own by it). The outer
    /// error is the store's, the inner Anthropic's.
    async fn list_remote(
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
    async fn contain(
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

    fn refused(skill_id: &str, name: &str, reason: String) -> Outcome {
        Outcome::Failed(
            SkillFailure {
                skill_id: skill_id.to_owned(),
                name: name.to_owned(),
                reason,
            },
            None,
        )
    }

    async fn run(&self, target: &TenantSlug, action: Action) -> Outcome {
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
}

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

/// The write-ahead marker of one change: its token, and the marker it replaced.
#[derive(Debug)]
pub struct Intent {
    pub token: String,
    previous: Option<String>,
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
        let owner = format!(
            "publish-{}-{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos(),
            std::process::id()
        );
        let leased = if wait_for_lease {
            self.wait_for_publish_lease(hub, &owner, deadline).await?
        } else {
            self.take_publish_lease(hub, &owner, deadline).await?
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
        if let Err(e) = self.hub.release_publish_lease(hub, &owner).await {
            // Not fatal: the lease lapses a few seconds after this request's deadline.
            tracing::warn!(tenant = %hub, error = %e, "could not release the publish lease");
        }
        result
    }

    /// Takes the Hub's publish lease if it is free (until the deadline plus a margin, so a holder that
    /// dies lets it lapse).
    async fn take_publish_lease(
        &self,
        hub: &TenantSlug,
        owner: &str,
        deadline: Deadline,
    ) -> Result<bool, ApiError> {
        let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let until = now_ms
            + deadline.remaining().as_millis() as i128
            + self.config.poll_lease_slack.as_millis() as i128;
        Ok(self
            .hub
            .acquire_publish_lease(hub, owner, now_ms, until)
            .await?)
    }

    /// [`App::take_publish_lease`], waiting for a running publish while enough budget is left to do
    /// anything after it.
    async fn wait_for_publish_lease(
        &self,
        hub: &TenantSlug,
        owner: &str,
        deadline: Deadline,
    ) -> Result<bool, ApiError> {
        let mut wait = Duration::from_millis(50);
        loop {
            if self.take_publish_lease(hub, owner, deadline).await? {
                return Ok(true);
            }
            if deadline.remaining() < MIN_ACTION_BUDGET * 2 + wait {
                return Ok(false);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    async fn publish_leased(
        &self,
        hub: &TenantSlug,
        scope: Option<&BTreeSet<String>>,
        deadline: Deadline,
        intent: Option<&str>,
    ) -> Result<PublishReport, ApiError> {
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
        let pending_token = self.hub.pending_token(hub).await?;
        let skills: BTreeMap<String, SkillIr> = self.hub.skills(hub).await?;
        let mut archetypes: BTreeMap<String, Archetype> = self.hub.archetypes(hub).await?;
        let mut mappings: Vec<WorkspaceMapping> = self.hub.workspace_mappings(hub).await?;
        // Only registered sub-tenants are published to (writes are validated; this also covers links made
        // before the registry existed): anything naming another slug publishes nothing for it.
        let subs = self.active_sub_tenants(hub).await?;
        let registered = |s: &Option<TenantSlug>| s.as_ref().is_none_or(|s| subs.contains(s));
        archetypes.retain(|_, a| registered(&a.sub_tenant));
        mappings.retain(|m| registered(&m.sub_tenant));
        let ctx = Ctx {
            app: self,
            hub,
            publisher: self
                .surfaces
                .get(record.surface)
                .publisher(hub, &record, &key, deadline),
            deadline,
        };
        let mut desired = desired_state(hub, &archetypes, &skills, &mappings);
        for d in desired.values_mut().flat_map(|t| t.skills.values_mut()) {
            d.acl = ctx.publisher.expressible(std::mem::take(&mut d.acl));
        }

        // A failed or partial listing is "unknown", never "empty": nothing is planned from it.
        let remote = match ctx.list_remote(scope).await? {
            Ok(r) => r,
            Err(e) => {
                let refusal = e.is_deterministic() && !ctx.publisher.pends_on_final_answers();
                if e.is_unavailable() && !refusal {
                    self.hub.mark_pending(hub, &new_token()).await?;
                } else if matches!(e.kind(), ErrorKind::Authentication | ErrorKind::Permission) {
                    let reason = format!(
                        "Anthropic refused the stored key while publishing ({})",
                        e.summary()
                    );
                    self.key_refused(hub, &key, reason).await?;
                }
                return Err(anthropic_error(e));
            }
        };
        // Sub-tenants that lost all their mappings and archetypes still own skills to remove.
        let mut targets: BTreeMap<TenantSlug, _> = desired;
        for r in &remote {
            if let Some(t) = owner_target(hub, r) {
                targets.entry(t).or_default();
            }
        }
        self.heal_ledger(hub, &remote).await?;
        let mut remote = remote;
        // Before anything else: no skill of ours stays open beyond its grants.
        let (contained, mut held) = ctx
            .contain(&mut remote, self.config.publish_concurrency)
            .await;
        // Skills whose settings this run could not read wait for the run that can.
        let unknown: BTreeSet<String> = remote
            .iter()
            .filter(|r| r.metadata.contains_key(ACCESS_UNKNOWN))
            .map(|r| r.id.clone())
            .collect();

        let mut plans: Vec<_> = targets
            .iter()
            .map(|(target, state)| (target, state, plan(target, state, &remote, scope)))
            .collect();
        for (target, _, p) in plans.iter_mut() {
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
                    t == *target && o.name() == a.name() && !matches!(o, Outcome::Updated(_))
                });
                if waits && !contained_failed {
                    held.push(((*target).clone(), Outcome::Pending(a.name().to_owned())));
                }
                !waits && !contained_failed
            });
        }
        // A version an admin pinned keeps being served: reported on every publish (no API unpins it),
        // after the plan is trimmed, as it blocks none of its actions.
        for r in remote.iter().filter(|r| {
            scope.is_none_or(|s| r.metadata.get("skill_id").is_some_and(|id| s.contains(id)))
        }) {
            let (Some(served), Some(target)) = (r.metadata.get(PINNED), owner_target(hub, r))
            else {
                continue;
            };
            let skill_id = r.metadata.get("skill_id").cloned().unwrap_or_default();
            let reason = format!(
                "an org admin pinned the served version in claude.ai (irreversible through the API): members get version {served}; Claresia's version is uploaded as the plugin's latest and is served only once an admin serves it there"
            );
            held.push((target, Ctx::refused(&skill_id, &r.name, reason)));
        }
        // Where the org's limits pace the publish, say up front how long it will take.
        let writes: u32 = plans
            .iter()
            .flat_map(|(_, _, p)| p.actions.iter())
            .map(|a| ctx.publisher.writes_of(a))
            .sum();
        let reads = unknown.len() as u32;
        let eta = ctx.publisher.writes_per_minute().map(|per_minute| {
            let reads_per_minute = ctx.publisher.reads_per_minute().unwrap_or(per_minute);
            let seconds =
                f64::from(writes) * 60.0 / per_minute + f64::from(reads) * 60.0 / reads_per_minute;
            Eta {
                writes_planned: writes,
                writes_per_minute: per_minute,
                settings_to_read: reads,
                reads_per_minute,
                seconds: seconds.ceil() as u64,
            }
        });
        if let Some(eta) = &eta {
            tracing::info!(tenant = %hub, writes = eta.writes_planned, settings_to_read = reads, eta_seconds = eta.seconds, "publish planned");
        }

        let mut reports = Vec::new();
        let mut writes_made = contained;
        let mut missing_workspaces = BTreeSet::new();
        for (target, state, p) in plans {
            let mut report = TargetReport {
                tenant: target.clone(),
                at: OffsetDateTime::now_utc(),
                complete: true,
                created: vec![],
                updated: vec![],
                deleted: vec![],
                unchanged: p.unchanged.clone(),
                failed: p
                    .conflicts
                    .iter()
                    .map(|(id, reason)| SkillFailure {
                        skill_id: id.clone(),
                        name: format!("claresia-{target}-{id}"),
                        reason: reason.clone(),
                    })
                    .chain(
                        state
                            .problems
                            .iter()
                            .filter(|(id, _)| scope.is_none_or(|s| s.contains(id)))
                            .map(|(id, reason)| SkillFailure {
                                skill_id: id.clone(),
                                name: format!("claresia-{target}-{id}"),
                                reason: reason.clone(),
                            }),
                    )
                    .collect(),
                pending: vec![],
            };
            let outcomes: Vec<(u32, Outcome)> = stream::iter(p.actions)
                .map(|a| {
                    let ctx = &ctx;
                    let calls = ctx.publisher.writes_of(&a);
                    async move { (calls, ctx.run(target, a).await) }
                })
                .buffer_unordered(self.config.publish_concurrency)
                .collect()
                .await;
            let (here, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(t, _)| t == target);
            held = rest;
            let held_here = here.into_iter().map(|(_, o)| (0, o));
            for (calls, o) in outcomes.into_iter().chain(held_here) {
                // An action left for the sweep sent nothing; any other was sent (a failure included).
                if !matches!(o, Outcome::Pending(_)) {
                    writes_made += calls;
                }
                match o {
                    Outcome::Created(n) => report.created.push(n),
                    Outcome::Updated(n) => report.updated.push(n),
                    Outcome::Deleted(n) => report.deleted.push(n),
                    Outcome::Pending(n) => report.pending.push(n),
                    Outcome::Failed(f, ws) => {
                        missing_workspaces.extend(ws);
                        report.failed.push(f);
                    }
                    Outcome::Unrecorded(f, _) => report.failed.push(f),
                }
            }
            for list in [
                &mut report.created,
                &mut report.updated,
                &mut report.deleted,
                &mut report.pending,
            ] {
                list.sort();
                list.dedup();
            }
            // A skill narrowed before the plan ran is reported updated, whatever else was done to it.
            let touched: BTreeSet<&String> = report
                .updated
                .iter()
                .chain(&report.created)
                .chain(report.failed.iter().map(|f| &f.name))
                .collect();
            report.unchanged.retain(|n| !touched.contains(n));
            report.updated.retain(|n| !report.created.contains(n));
            report.failed.sort_by(|a, b| a.name.cmp(&b.name));
            report.complete = report.pending.is_empty();
            reports.push(report);
        }

        // Name the workspaces a 403 was about, as the troubleshooting table tells the admin to fix them.
        if !missing_workspaces.is_empty() {
            let surface = self.surfaces.get(record.surface);
            if let Ok(names) = surface.mapping_targets(&key, deadline).await {
                for f in reports.iter_mut().flat_map(|r| r.failed.iter_mut()) {
                    for (id, name) in names
                        .iter()
                        .filter(|(id, _)| missing_workspaces.contains(*id))
                    {
                        if f.reason.ends_with(id.as_str()) {
                            f.reason =
                                format!("Add the Admin key's principal to workspace {name} ({id})");
                        }
                    }
                }
            }
        }

        let complete = reports.iter().all(|r| r.complete);
        for r in &reports {
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
            if let (Some(token), None) = (&pending_token, scope) {
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
        Ok(PublishReport {
            tenant: hub.clone(),
            complete,
            pending: !complete,
            surface: record.surface,
            writes: writes_made,
            eta,
            targets: reports,
        })
    }

    /// Marks `hub` as needing a publish before a change is written (write-ahead): if the function dies
    /// anywhere between the change and the end of its publish, the sweep finishes the work.
    pub async fn begin_change(&self, hub: &TenantSlug) -> Result<Intent, ApiError> {
        let token = new_token();
        let previous = self.hub.swap_pending(hub, &token).await?;
        Ok(Intent { token, previous })
    }

    /// Takes back the marker of a change that wrote nothing (its precondition failed at the write): the
    /// marker it replaced comes back, so a refused request leaves the store as it found it.
    pub async fn abandon_change(&self, hub: &TenantSlug, intent: Intent) -> Result<(), ApiError> {
        self.hub
            .restore_pending(hub, &intent.token, intent.previous.as_deref())
            .await?;
        Ok(())
    }

    /// Publishes after a change (`intent`: the marker [`App::begin_change`] left before it, or one made
    /// now) if publishing is allowed; otherwise says why it was skipped.
    pub async fn publish_after_change(
        &self,
        hub: &TenantSlug,
        scope: Option<&BTreeSet<String>>,
        deadline: Deadline,
        intent: Option<Intent>,
    ) -> Result<Value, ApiError> {
        let intent = match intent {
            Some(i) => i,
            None => self.begin_change(hub).await?,
        };
        // The marker this change replaced was earlier work still pending (a publish the budget cut short):
        // a scoped publish does not cover it, so the marker stays for the sweep's full publish.
        let finishes = scope.is_none() || intent.previous.is_none();
        let intent = intent.token;
        let clear_on_success = finishes.then_some(intent.as_str());
        match self
            .publish_with(hub, scope, deadline, clear_on_success, true)
            .await
        {
            Ok(report) => Ok(json!(report)),
            Err(ApiError::AnthropicUnavailable(_)) => {
                self.hub.mark_pending(hub, &new_token()).await?;
                Ok(json!({"skipped": true, "pending": true,
                          "reason": "Anthropic is unavailable; the change is saved and will be published by the next sweep"}))
            }
            // Refused — not connected, zero-retention off, or Anthropic's 401/403/400: retrying will not
            // help until an admin acts, so this change's marker goes (the next change or Republish all
            // publishes everything).
            Err(ApiError::PublishRefused(reason)) => {
                self.hub.clear_pending(hub, &intent).await?;
                Ok(json!({"skipped": true, "pending": false, "reason": reason}))
            }
            Err(ApiError::AnthropicRejected(e)) => {
                self.hub.clear_pending(hub, &intent).await?;
                Ok(json!({"skipped": true, "pending": false,
                    "reason": format!("Anthropic refused the publish ({}); the change is saved — fix the key, then Republish all", e.summary())}))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes every skill Claresia published for `hub` and its sub-tenants (offboarding). Zero-retention
    /// does not matter here: cleaning up must work even when publishing is refused.
    pub async fn unpublish_all(
        &self,
        hub: &TenantSlug,
        record: &ConnectionRecord,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<usize, ApiError> {
        // Not while a publish of this Hub may still be creating skills.
        let owner = format!(
            "unpublish-{}-{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos(),
            std::process::id()
        );
        if !self.wait_for_publish_lease(hub, &owner, deadline).await? {
            // Not a failure of Anthropic's: another request holds the Hub for now.
            return Err(ApiError::Conflict(
                "a publish of this tenant's catalog is still running; nothing was disconnected, retry in a minute".into(),
            ));
        }
        let removed = self.unpublish_leased(hub, record, key, deadline).await;
        if let Err(e) = self.hub.release_publish_lease(hub, &owner).await {
            tracing::warn!(tenant = %hub, error = %e, "could not release the publish lease");
        }
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

    /// Every pending Hub swept in this process, `POLL_CONCURRENCY` at a time, each for its own time slice
    /// ([`App::sweep_hub`]). The deployed stack never runs this (its dispatcher enqueues one sweep item
    /// per pending Hub for the workers); tests and benchmarks do.
    pub async fn sweep_pending(&self, deadline: Deadline) -> Result<Vec<PublishReport>, ApiError> {
        let sweeps: Vec<_> = self
            .hub
            .pending_tenants()
            .await?
            .into_iter()
            .map(|hub| async move { self.sweep_hub(&hub, self.sweep_slice(deadline)).await })
            .collect();
        let swept: Vec<Result<Sweep, ApiError>> = stream::iter(sweeps)
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
    pub async fn sweep_hub(&self, hub: &TenantSlug, deadline: Deadline) -> Result<Sweep, ApiError> {
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
            Err(e @ ApiError::Store(_)) => Err(e),
            Err(e) => {
                tracing::warn!(tenant = %hub, error = %e, "pending publish failed; retried after a back-off");
                self.back_off(hub, retry.as_ref(), now, e.to_string())
                    .await?;
                Ok(Sweep::Failed(e.to_string()))
            }
        }
    }

    async fn clear_pending_marker(&self, hub: &TenantSlug) -> Result<(), ApiError> {
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
    ) -> Result<(), ApiError> {
        let Some(token) = self.hub.pending_token(hub).await? else {
            return Ok(());
        };
        let retry = claresia_aws::PendingRetry::after(previous, now, error);
        self.hub.back_off_pending(hub, &token, &retry).await?;
        Ok(())
    }

    /// The ledger is derived from what Anthropic holds: every skill we own there gets its entry, so a
    /// ledger write lost to a crash (after the skill was created) is repaired by the next publish or sweep
    /// instead of leaving its runs unresolvable for ever. Writes only what is missing or different.
    async fn heal_ledger(&self, hub: &TenantSlug, remote: &[RemoteSkill]) -> Result<(), ApiError> {
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

    pub(crate) fn live(record: Option<ConnectionRecord>) -> Option<ConnectionRecord> {
        record.filter(|r| r.state != ConnectionState::Disconnected)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_report_stays_small_whatever_the_catalog() {
        let names = |n: usize, kind: &str| -> Vec<String> {
            (0..n)
                .map(|i| {
                    format!(
                        "claresia-a-very-long-tenant-name-{kind}-{i:05}-{}",
                        "x".repeat(20)
                    )
                })
                .collect()
        };
        let failures = (0..5_000)
            .map(|i| SkillFailure {
                skill_id: format!("s{i}"),
                name: format!("claresia-t-s{i}"),
                reason: "Add the Admin key's principal to workspace dainese-sales (wrkspc_01DemoSales00000000000000)".into(),
            })
            .collect();
        let report = TargetReport {
            tenant: TenantSlug::parse("t").unwrap(),
            at: OffsetDateTime::UNIX_EPOCH,
            complete: false,
            created: names(10_000, "c"),
            updated: names(10_000, "u"),
            deleted: names(10_000, "d"),
            unchanged: names(50_000, "n"),
            failed: failures,
            pending: names(10_000, "p"),
        };
        let stored = serde_json::to_string(&report.stored()).unwrap();
        assert!(stored.len() < 200 * 1024, "{} bytes", stored.len());
        let v: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["counts"]["unchanged"], 50_000);
        assert_eq!(v["counts"]["failed"], 5_000);
        assert_eq!(v["names_truncated"], true);
        assert!(v.get("unchanged").is_none());
        assert_eq!(v["created"].as_array().unwrap().len(), STORED_NAMES);
    }
}
