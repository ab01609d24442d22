//! Capabilities 1 and 2: connect (and rotate), test, status and disconnect a tenant's Anthropic org.

use claresia_anthropic::{Deadline, ErrorKind};
use claresia_domain::connection::PublishingStatus;
use claresia_domain::connection::{LastTest, Organization};
use claresia_domain::{
    AdminKey, Attestation, ConnectionRecord, ConnectionState, ConnectionStatus, KeyKind, Surface,
    TenantSlug, TestOutcome, TestVerdict, ZeroRetention,
};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::Grant;
use crate::{ApiError, App, RecordError};

/// The tenant's status lists the first page of `GET …/sub-tenants` (`sub_tenants_next_cursor` continues
/// there) and only those targets' publish reports, each trimmed: about 2.5 MB at worst, whatever the number
/// of sub-tenants, far under Lambda's 6 MB. A sub-tenant's whole report is on its own status.
const STATUS_SUB_TENANTS: i32 = 100;
const STATUS_VIEW_BYTES: usize = 1024 * 1024;
const STATUS_NAMES: usize = 20;
const STATUS_REASON_BYTES: usize = 300;

/// A stored report as the tenant's status shows it: at most [`STATUS_NAMES`] names of each kind, reasons
/// of at most [`STATUS_REASON_BYTES`] (`counts` stay whole; `names_truncated` says names were left out).
/// Unix seconds as the status shows times (RFC 3339, UTC).
fn utc_seconds(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn trim_report(report: &mut serde_json::Value) {
    let mut cut = false;
    for kind in ["created", "updated", "deleted", "failed", "pending"] {
        if let Some(list) = report
            .get_mut(kind)
            .and_then(serde_json::Value::as_array_mut)
        {
            cut |= list.len() > STATUS_NAMES;
            list.truncate(STATUS_NAMES);
        }
    }
    if let Some(failed) = report
        .get_mut("failed")
        .and_then(serde_json::Value::as_array_mut)
    {
        for f in failed {
            let short = f["reason"]
                .as_str()
                .filter(|r| r.len() > STATUS_REASON_BYTES)
                .map(|r| claresia_domain::telemetry::truncate_marked(r, STATUS_REASON_BYTES));
            if let Some(short) = short {
                f["reason"] = serde_json::json!(short);
            }
        }
    }
    if cut {
        report["names_truncated"] = serde_json::json!(true);
    }
}

/// What a connect request asks for besides the key.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// An explicit surface; `None`: the one the key's kind belongs to.
    pub surface: Option<Surface>,
    /// The zero-retention attestation's reference (enterprise), with the caller's JWT subject.
    pub attestation: Option<(String, Option<String>)>,
}

/// The surface a key is used on: a Console Admin key speaks `preview`, a Claude Enterprise key
/// `enterprise` (Anthropic's key table: neither reaches the other's APIs). An explicit surface that does
/// not match the key is refused, naming the key that was recognized.
pub(crate) fn surface_for(key: &AdminKey, requested: Option<Surface>) -> Result<Surface, ApiError> {
    let natural = match key.kind() {
        KeyKind::Console => Surface::Preview,
        KeyKind::Enterprise => Surface::Enterprise,
    };
    match requested {
        Some(s) if s != natural => Err(ApiError::WrongKeyForSurface(format!(
            "surface {} needs {}, but this is {}; paste the other kind of key or drop \"surface\"",
            s.as_str(),
            match s {
                Surface::Preview => KeyKind::Console.describe(),
                Surface::Enterprise => KeyKind::Enterprise.describe(),
            },
            key.kind().describe()
        ))),
        _ => Ok(natural),
    }
}

#[derive(Debug, Serialize)]
pub struct ConnectResult {
    pub tenant: TenantSlug,
    pub connected: bool,
    /// The tenant had no live connection before this request (201 Created).
    pub created: bool,
    pub rotated: bool,
    pub test: TestOutcome,
    pub status: ConnectionStatus,
    /// The publish that follows a connect, or why it was skipped.
    pub publish: serde_json::Value,
}

/// `GET /tenants/{sub}/connection` on a sub-tenant's path: its own state, nothing of its parent's other
/// targets or its siblings.
#[derive(Debug, Serialize)]
pub struct SubTenantStatus {
    pub tenant: TenantSlug,
    pub parent: TenantSlug,
    /// The link is active (a removed sub-tenant keeps its status and telemetry readable).
    pub active: bool,
    /// The shared connection is live.
    pub connected: bool,
    pub surface: Option<Surface>,
    /// Whether its skills may be published now, or why not.
    pub publishing: PublishingStatus,
    /// Workspaces (preview) and RBAC groups (enterprise) mapped to it.
    pub workspace_ids: Vec<String>,
    pub group_ids: Vec<String>,
    /// Archetypes that grant it skills.
    pub archetypes: Vec<String>,
    /// Its own last publish report (null before its first publish).
    pub last_publish: Option<serde_json::Value>,
    /// Changes to its own plugins made outside the connector (enterprise), newest first.
    pub drift: Vec<claresia_domain::enterprise_feed::DriftNote>,
}

#[derive(Debug, Serialize)]
pub struct DisconnectResult {
    pub tenant: TenantSlug,
    pub disconnected: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub secret_deletion_date: Option<OffsetDateTime>,
    pub telemetry_kept: bool,
    /// Skills Claresia had published for the tenant and its sub-tenants, now removed from Anthropic.
    pub skills_removed: usize,
    /// Set when Anthropic refused the stored key, so the skills could not be removed by us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skills_cleanup_warning: Option<String>,
}

impl App {
    async fn test_key(
        &self,
        key: &AdminKey,
        surface: Surface,
        attestation: Option<&Attestation>,
        deadline: Deadline,
    ) -> Result<TestOutcome, ApiError> {
        self.surfaces
            .get(surface)
            .test(key, attestation, deadline)
            .await
            .map_err(|e| ApiError::AnthropicRejected(Box::new(e)))
    }

    /// `PUT /tenants/{tenant}/connection`: test the candidate key, and only if Anthropic accepts it store it
    /// (a new secret version on rotation) and record the connection.
    pub async fn connect(
        &self,
        tenant: &TenantSlug,
        key: AdminKey,
        options: ConnectOptions,
        deadline: Deadline,
    ) -> Result<ConnectResult, ApiError> {
        // Everything refusable is refused before anything is sent or written.
        let surface = surface_for(&key, options.surface)?;
        let now = OffsetDateTime::now_utc();
        let attested = attestation_of(options.attestation, surface, now)?;
        // One budget for the test and the publish that follows: API Gateway stops waiting at 30 s.
        let (stored, attestation) = self.stored_for_connect(tenant, surface, attested).await?;
        let outcome = self
            .test_key(&key, surface, attestation.as_ref(), deadline)
            .await?;
        let org = accepted_org(&outcome, surface)?;
        let read_version = stored.as_ref().map_or(0, |r| r.version);
        let had_record = stored.is_some();
        let existing = stored.filter(|r| r.state != ConnectionState::Disconnected);
        if let Some(current) = &existing {
            may_replace(tenant, current, surface, &org, &key)?;
        }
        let fingerprint = key.fingerprint().to_string();
        let same_key = existing
            .as_ref()
            .is_some_and(|r| r.key_fingerprint == fingerprint);
        if let Some(current) = existing.as_ref().filter(|_| !same_key) {
            // An unnamed enterprise org is compared by what the new key can reach.
            if current.surface == Surface::Enterprise
                && (current.org_id.is_empty() || org.id.is_empty())
            {
                self.same_enterprise_org(tenant, current, &key, deadline)
                    .await?;
            }
        }
        let secret_version_id = self
            .store_key(
                tenant,
                &key,
                had_record,
                existing.as_ref().filter(|_| same_key),
            )
            .await?;
        let mut record = accepted_record(tenant, &outcome, org, surface, now);
        record.key_fingerprint = fingerprint;
        record.secret_version_id = secret_version_id;
        record.attestation = attestation;
        record.version = read_version;
        if let Some(current) = &existing {
            record.connected_at = current.connected_at;
            if same_key {
                record.key_created_at = current.key_created_at;
            }
        }
        self.save_connect(&mut record, now).await?;
        let rotated = existing.is_some() && !same_key;
        tracing::info!(
            tenant = %tenant,
            org_id = %record.org_id,
            key = %record.key_fingerprint,
            rotated,
            zero_retention = ?record.zero_retention,
            "tenant connected"
        );
        let publish = self.publish_connected(tenant, deadline).await?;
        Ok(ConnectResult {
            tenant: tenant.clone(),
            connected: true,
            created: existing.is_none(),
            rotated,
            status: ConnectionStatus::of(tenant, Some(&record), now),
            test: outcome,
            publish,
        })
    }

    /// The record a connect replaces (a first connect must be allowed for the slug), and the attestation
    /// it records: the one given, else the one recorded for a live connection on the same surface.
    async fn stored_for_connect(
        &self,
        tenant: &TenantSlug,
        surface: Surface,
        attested: Option<Attestation>,
    ) -> Result<(Option<ConnectionRecord>, Option<Attestation>), ApiError> {
        let stored = self.hub.connection(tenant).await?;
        if stored.is_none() {
            self.check_may_connect(tenant).await?;
        }
        let attestation = attested.or_else(|| {
            stored
                .as_ref()
                .filter(|r| r.surface == surface && r.state != ConnectionState::Disconnected)
                .and_then(|r| r.attestation.clone())
        });
        Ok((stored, attestation))
    }

    /// The publish after a connect. A disconnect that landed between the save and the publish wins, and
    /// says so.
    async fn publish_connected(
        &self,
        tenant: &TenantSlug,
        deadline: Deadline,
    ) -> Result<serde_json::Value, ApiError> {
        match self.publish_after_change(tenant, None, deadline, None).await {
            Err(ApiError::NotConnected(_)) => Err(ApiError::Conflict(format!(
                "{tenant} was disconnected while this request ran; check the status, then connect again"
            ))),
            other => other,
        }
    }

    /// Stores a connect's key (or keeps the stored one, `same`, with no new secret version) and answers
    /// the secret version the record names.
    async fn store_key(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        had_record: bool,
        same: Option<&ConnectionRecord>,
    ) -> Result<Option<String>, ApiError> {
        if had_record {
            // The secret may be in its recovery window: offboarded, or an offboarding cut short between
            // scheduling the deletion and recording it. Bring it back before using it or writing a new
            // version (a secret that is not scheduled for deletion is left as it is).
            self.keys.restore(tenant).await?;
        }
        match same {
            Some(r) => Ok(r.secret_version_id.clone()),
            None => Ok(Some(self.keys.put(tenant, key).await?)),
        }
    }

    /// Saves a connect's record. The key is stored; the record must say so. Another writer (a stored-key
    /// test, the poller) may have bumped the record since it was read: this connect is carried onto what
    /// is there now, unless a disconnect or another org's connect landed meanwhile.
    async fn save_connect(
        &self,
        record: &mut ConnectionRecord,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let tenant = &record.tenant.clone();
        let org_id = record.org_id.clone();
        let mut attempts = 0;
        while !self.hub.save_connection(record).await? {
            attempts += 1;
            let current = self.hub.connection(tenant).await?;
            if current.is_none() {
                // A first connect loses only to a registration of the slug that landed meanwhile.
                self.check_may_connect(tenant).await?;
            }
            // A disconnect that landed meanwhile has scheduled the secret's deletion: this connect must not
            // bring the record back on top of it.
            let disconnected = current
                .as_ref()
                .is_some_and(|r| r.state == ConnectionState::Disconnected);
            let live = current
                .as_ref()
                .filter(|r| r.state != ConnectionState::Disconnected);
            if attempts >= 5 || disconnected || live.is_some_and(|r| r.org_id != org_id) {
                return Err(ApiError::Conflict(format!(
                    "the connection of {tenant} changed while this request ran (another admin connected, rotated or disconnected it); check the status, then retry"
                )));
            }
            record.version = current.as_ref().map_or(0, |r| r.version);
            record.connected_at = live.map_or(now, |r| r.connected_at);
        }
        Ok(())
    }

    /// An Enterprise key that cannot name its org rotates in only if it reaches the org the tenant's
    /// plugins live in: a plugin of the ledger read with it (404: another org). The ledger and the feed
    /// cursor belong to one org; moving to another is a disconnect, then a connect.
    async fn same_enterprise_org(
        &self,
        tenant: &TenantSlug,
        current: &ConnectionRecord,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<(), ApiError> {
        let ledger = self.hub.ledger(tenant).await?;
        let probes: Vec<&str> = ledger
            .values()
            .filter(|e| e.removed_at.is_none() && !e.remote_id.is_empty())
            .map(|e| e.remote_id.as_str())
            .take(3)
            .collect();
        let mut missing = None;
        for id in &probes {
            match self
                .surfaces
                .enterprise
                .reaches_plugin(key, id, deadline)
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => missing = Some(*id),
                Err(e) => return Err(crate::publish::anthropic_error(e)),
            }
        }
        match missing {
            None => Ok(()),
            Some(id) => Err(ApiError::OrganizationMismatch {
                tenant: tenant.to_string(),
                current_org: if current.org_name.is_empty() {
                    format!("the Claude Enterprise organization holding plugin {id}")
                } else {
                    format!("{} ({})", current.org_name, current.org_id)
                },
                new_org: format!(
                    "\"unknown\" (plugin {id}, published for this tenant, does not exist for it)"
                ),
            }),
        }
    }

    /// `POST /tenants/{tenant}/connection/test`: a candidate key (nothing stored) or the stored key (the
    /// record learns what the test saw: zero-retention, workspaces, a revoked key).
    pub(crate) async fn test_connection(
        &self,
        tenant: &TenantSlug,
        candidate: Option<(AdminKey, Option<Surface>)>,
        deadline: Deadline,
    ) -> Result<TestOutcome, ApiError> {
        if let Some((key, surface)) = candidate {
            let surface = surface_for(&key, surface)?;
            let outcome = self.test_key(&key, surface, None, deadline).await?;
            return match outcome.code {
                TestVerdict::AnthropicUnavailable => {
                    Err(ApiError::AnthropicUnavailable(Box::new(outcome)))
                }
                _ => Ok(outcome),
            };
        }
        let record = self
            .hub
            .connection(tenant)
            .await?
            .filter(|r| r.state != ConnectionState::Disconnected);
        let Some(record) = record else {
            return Err(ApiError::NotConnected(tenant.to_string()));
        };
        let version = record.secret_version_id.as_deref();
        let Some(key) = self.keys.get_version(tenant, version).await? else {
            return Err(ApiError::NotConnected(tenant.to_string()));
        };
        let outcome = self
            .test_key(&key, record.surface, record.attestation.as_ref(), deadline)
            .await?;
        if outcome.code == TestVerdict::AnthropicUnavailable {
            return Err(ApiError::AnthropicUnavailable(Box::new(outcome)));
        }
        let tested = key.fingerprint().to_string();
        self.update_connection(tenant, |record| {
            // The key was rotated while we tested the old one: that verdict is not the connection's.
            if record.key_fingerprint != tested || record.state == ConnectionState::Disconnected {
                return false;
            }
            apply_test(record, &outcome);
            true
        })
        .await?;
        Ok(outcome)
    }

    /// Anthropic refused `key` (401, or 403 where a scope is gone): the connection needs an admin, and
    /// publishing is refused until a test or a new key sees it working. Only if `key` is still the stored
    /// one: a rotation that landed meanwhile stays as it is.
    pub(crate) async fn key_refused(
        &self,
        tenant: &TenantSlug,
        key: &AdminKey,
        reason: String,
    ) -> Result<(), RecordError> {
        let refused = key.fingerprint().to_string();
        self.update_connection(tenant, |r| {
            if r.state == ConnectionState::Disconnected || r.key_fingerprint != refused {
                return false;
            }
            r.state = ConnectionState::NeedsAttention;
            r.state_reason = Some(reason.clone());
            true
        })
        .await?;
        Ok(())
    }

    /// Re-reads the record and applies `change` to it until the conditional write lands (another writer
    /// may bump the version in between); `change` answers `false` to write nothing. `None`: no record.
    pub(crate) async fn update_connection(
        &self,
        tenant: &TenantSlug,
        mut change: impl FnMut(&mut ConnectionRecord) -> bool,
    ) -> Result<Option<ConnectionRecord>, RecordError> {
        for _ in 0..5 {
            let Some(mut record) = self.hub.connection(tenant).await? else {
                return Ok(None);
            };
            if !change(&mut record) {
                return Ok(Some(record));
            }
            record.updated_at = OffsetDateTime::now_utc();
            if self.hub.save_connection(&record).await? {
                return Ok(Some(record));
            }
        }
        Err(RecordError::Contended(tenant.clone()))
    }

    /// `GET /tenants/{tenant}/connection`: the connection, the last publish per target, sub-tenants. On a
    /// sub-tenant's path, [`SubTenantStatus`] instead: built from that sub-tenant's own state.
    pub async fn connection_status(&self, grant: &Grant) -> Result<serde_json::Value, ApiError> {
        if grant.sub_tenant {
            return serde_json::to_value(self.sub_tenant_status(grant).await?)
                .map_err(|e| ApiError::Internal(e.to_string()));
        }
        let hub = &grant.hub;
        let record = self.hub.connection(hub).await?;
        let status = ConnectionStatus::of(hub, record.as_ref(), OffsetDateTime::now_utc());
        let mut out =
            serde_json::to_value(&status).map_err(|e| ApiError::Internal(e.to_string()))?;
        out["publish_pending"] = serde_json::json!(self.hub.pending_token(hub).await?.is_some());
        out["publish_retry"] = match self.hub.pending_retry(hub).await? {
            Some(r) => serde_json::json!({
                "attempts": r.attempts,
                "next_attempt_at": utc_seconds(r.next_attempt_at),
                "last_error": r.last_error,
            }),
            None => serde_json::Value::Null,
        };
        out["last_poll"] = serde_json::json!(self.hub.poll_status(hub).await?);
        let (subs, next) = self
            .sub_tenant_views_page(hub, STATUS_SUB_TENANTS, None, STATUS_VIEW_BYTES)
            .await?;
        let mut targets = vec![hub.clone()];
        targets.extend(
            subs.iter()
                .filter_map(|s| s["tenant"].as_str())
                .filter_map(|s| TenantSlug::parse(s).ok()),
        );
        // At most 101 point reads, never the whole PUBLISH# partition.
        let found: Vec<(TenantSlug, Option<serde_json::Value>)> = stream::iter(targets)
            .map(|t| async move { self.hub.publish_report(hub, &t).await.map(|r| (t, r)) })
            .buffered(16)
            .try_collect()
            .await?;
        let mut reports = serde_json::Map::new();
        for (target, report) in found {
            if let Some(mut report) = report {
                trim_report(&mut report);
                reports.insert(target.to_string(), report);
            }
        }
        out["sub_tenants"] = serde_json::json!(subs);
        out["sub_tenants_next_cursor"] =
            serde_json::json!(crate::paging::next_cursor(hub, "sub-tenants", next));
        out["last_publish"] = serde_json::Value::Object(reports);
        Ok(out)
    }

    /// A sub-tenant's own view: only what is its own (its link, its mappings and archetypes, its publish
    /// report, drift of its plugins) and, of the shared connection, the surface and whether publishing is
    /// allowed. Nothing of its parent's other targets, its siblings, the poll cursor or the attestation.
    async fn sub_tenant_status(&self, grant: &Grant) -> Result<SubTenantStatus, ApiError> {
        let (sub, hub) = (&grant.tenant, &grant.hub);
        let record = App::live(self.hub.connection(hub).await?);
        let link = self
            .hub
            .sub_tenant_record(sub)
            .await?
            .filter(|r| &r.parent == hub)
            .ok_or_else(|| ApiError::NotFound(format!("{hub} has no sub-tenant {sub}")))?;
        let (archetypes, mappings) = self.references(hub).await?;
        let publishing = match (&record, link.active) {
            (_, false) => PublishingStatus {
                allowed: false,
                reason: Some(format!(
                    "{sub} was removed from {hub}; nothing is published for it"
                )),
            },
            (None, true) => PublishingStatus {
                allowed: false,
                reason: Some(format!("{hub} is not connected to Anthropic")),
            },
            // Why not is the parent's connection's business (its key, its org): say only that.
            (Some(r), true) => {
                let refused = r.publish_refusal().is_some();
                PublishingStatus {
                    allowed: !refused,
                    reason: refused.then(|| format!("the shared connection of {hub} does not allow publishing right now; an admin of {hub} sees why on its status")),
                }
            }
        };
        let drift = self
            .hub
            .poll_status(hub)
            .await?
            .map(|p| p.drift)
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.target.as_ref() == Some(sub))
            .collect();
        Ok(SubTenantStatus {
            tenant: sub.clone(),
            parent: hub.clone(),
            active: link.active,
            connected: record.is_some(),
            surface: record.as_ref().map(|r| r.surface),
            publishing,
            workspace_ids: mappings
                .iter()
                .filter(|m| m.sub_tenant.as_ref() == Some(sub) && !m.workspace_id.is_empty())
                .map(|m| m.workspace_id.clone())
                .collect(),
            group_ids: mappings
                .iter()
                .filter(|m| m.sub_tenant.as_ref() == Some(sub))
                .filter_map(|m| m.group_id.clone())
                .collect(),
            archetypes: archetypes
                .iter()
                .filter(|(_, a)| a.sub_tenant.as_ref() == Some(sub))
                .map(|(name, _)| name.clone())
                .collect(),
            last_publish: self.hub.publish_report(hub, sub).await?,
            drift,
        })
    }

    /// `DELETE /tenants/{tenant}/connection`: stop using the key, schedule the secret's deletion after the
    /// recovery window, keep the telemetry. Repeating it answers the same result.
    pub async fn disconnect(
        &self,
        tenant: &TenantSlug,
        deadline: Deadline,
    ) -> Result<DisconnectResult, ApiError> {
        // One budget for every step: removing the skills, the last poll, the secret, the record.
        let Some(mut record) = self.hub.connection(tenant).await? else {
            return Err(ApiError::NotConnected(tenant.to_string()));
        };
        let mut skills_removed = 0;
        let mut skills_cleanup_warning = None;
        if record.state != ConnectionState::Disconnected {
            // Remove what we published while the key still works. If Anthropic is unavailable nothing is
            // disconnected (retry); if it refuses the key (revoked first, a common offboarding order),
            // blocking offboarding forever helps no one: disconnect and say what is left to remove.
            let version = record.secret_version_id.as_deref();
            if let Some(key) = self.keys.get_version(tenant, version).await? {
                match self.unpublish_all(tenant, &record, &key, deadline).await {
                    Ok(n) => {
                        skills_removed = n;
                        // A last poll while the key still works: runs already visible in the audit log
                        // are stored (their names resolve through the ledger's tombstones) before polling
                        // stops for good.
                        let last = self.poll_tenant(tenant.clone(), deadline).await;
                        tracing::info!(tenant = %tenant, outcome = %last.outcome, events = last.events_ingested, "final poll before offboarding");
                    }
                    Err(ApiError::AnthropicRejected(e))
                        if matches!(
                            e.kind(),
                            ErrorKind::Authentication | ErrorKind::Permission
                        ) =>
                    {
                        tracing::warn!(tenant = %tenant, error = %e, "could not remove published skills");
                        skills_cleanup_warning = Some(format!(
                            "Anthropic refused the stored key ({}), so Claresia could not remove its published skills: delete the skills named claresia-{tenant}-… in the Anthropic Console.",
                            e.summary()
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            let deletion = self
                .keys
                .schedule_deletion(tenant, self.config.secret_recovery_window_days)
                .await?;
            let now = OffsetDateTime::now_utc();
            let offboard = |r: &mut ConnectionRecord| {
                r.state = ConnectionState::Disconnected;
                r.state_reason = Some("offboarded".into());
                r.disconnected_at = Some(now);
                r.secret_deletion_date = deletion;
                true
            };
            if let Some(r) = self.update_connection(tenant, offboard).await? {
                record = r;
            }
            tracing::info!(tenant = %tenant, secret_deletion_date = ?deletion, "tenant disconnected");
        }
        Ok(DisconnectResult {
            tenant: tenant.clone(),
            disconnected: true,
            secret_deletion_date: record.secret_deletion_date,
            telemetry_kept: true,
            skills_removed,
            skills_cleanup_warning,
        })
    }
}

/// What a stored-key test teaches the record.
fn apply_test(record: &mut ConnectionRecord, outcome: &TestOutcome) {
    match outcome.code {
        TestVerdict::Unauthorized => {
            record.state = ConnectionState::NeedsAttention;
            record.state_reason = Some("Anthropic answered 401 to the stored key".into());
        }
        TestVerdict::MissingScopes => {
            record.state = ConnectionState::NeedsAttention;
            record.state_reason = Some(outcome.message.clone());
            record.scopes_verified = outcome.scopes.verified.clone();
        }
        _ => {
            record.state = ConnectionState::Connected;
            record.state_reason = None;
            record.scopes_verified = outcome.scopes.verified.clone();
            record.zero_retention = outcome.zero_retention;
            if let Some(org) = &outcome.organization {
                record.org_name = org.name.clone();
            }
            if let Some(n) = outcome.workspace_count {
                record.workspace_count = n;
            }
            if outcome.group_count.is_some() {
                record.group_count = outcome.group_count;
            }
            if record.surface == Surface::Enterprise {
                // The attestation is the record's; the test only echoes it.
                record.zero_retention = if record.attestation.is_some() {
                    ZeroRetention::Attested
                } else {
                    ZeroRetention::Unknown
                };
            }
        }
    }
    record.last_test = Some(LastTest {
        at: OffsetDateTime::now_utc(),
        code: outcome.code,
        message: outcome.message.clone(),
    });
}

/// The record of a connection whose key the test accepted, as a first connect writes it (a reconnect
/// then keeps what it already had).
fn accepted_record(
    tenant: &TenantSlug,
    outcome: &TestOutcome,
    org: Organization,
    surface: Surface,
    now: OffsetDateTime,
) -> ConnectionRecord {
    ConnectionRecord {
        tenant: tenant.clone(),
        state: ConnectionState::Connected,
        state_reason: None,
        org_id: org.id,
        org_name: org.name,
        workspace_count: outcome.workspace_count.unwrap_or(0),
        zero_retention: outcome.zero_retention,
        scopes_verified: outcome.scopes.verified.clone(),
        key_fingerprint: String::new(),
        key_created_at: now,
        connected_at: now,
        updated_at: now,
        secret_version_id: None,
        last_test: Some(LastTest {
            at: now,
            code: outcome.code,
            message: outcome.message.clone(),
        }),
        disconnected_at: None,
        secret_deletion_date: None,
        surface,
        group_count: outcome.group_count,
        organization_note: outcome.organization_note.clone(),
        attestation: None,
        version: 0,
    }
}

/// The zero-retention attestation a connect records: Claude Enterprise only, with a reference and the
/// caller's identity.
fn attestation_of(
    given: Option<(String, Option<String>)>,
    surface: Surface,
    now: OffsetDateTime,
) -> Result<Option<Attestation>, ApiError> {
    let attested = match (given, surface) {
        (None, _) => None,
        (Some(_), Surface::Preview) => return Err(ApiError::InvalidBody(
            "zero_retention_attestation applies to Claude Enterprise connections only: on the preview surface Anthropic reports zero retention itself".into(),
        )),
        (Some((reference, subject)), Surface::Enterprise) => {
            let reference = reference.trim().to_owned();
            if reference.is_empty() || reference.chars().count() > 500 {
                return Err(ApiError::InvalidBody(
                    "zero_retention_attestation.reference: 1 to 500 characters naming the basis (e.g. a contract addendum id)".into(),
                ));
            }
            let Some(by) = subject else {
                return Err(ApiError::InvalidBody(
                    "zero_retention_attestation needs the caller's identity, and the token carries no sub claim".into(),
                ));
            };
            Some(Attestation { by, at: now, reference })
        }
    };
    Ok(attested)
}

/// The org a tested key reaches, if the test accepted it.
fn accepted_org(outcome: &TestOutcome, surface: Surface) -> Result<Organization, ApiError> {
    match outcome.code {
        TestVerdict::AnthropicUnavailable => {
            return Err(ApiError::AnthropicUnavailable(Box::new(outcome.clone())))
        }
        v if !v.key_accepted() => return Err(ApiError::KeyRejected(Box::new(outcome.clone()))),
        _ => {}
    }
    let org = match (&outcome.organization, surface) {
        (Some(org), _) => org.clone(),
        // Enterprise keys may not learn their org's name: the record says why instead.
        (None, Surface::Enterprise) => Organization {
            id: String::new(),
            name: String::new(),
        },
        (None, Surface::Preview) => return Err(ApiError::KeyRejected(Box::new(outcome.clone()))),
    };
    Ok(org)
}

/// Whether a key of `org` on `surface` may replace the live connection `current`: the same surface, and
/// the same org where both are named.
fn may_replace(
    tenant: &TenantSlug,
    current: &ConnectionRecord,
    surface: Surface,
    org: &Organization,
    key: &AdminKey,
) -> Result<(), ApiError> {
    if current.surface != surface {
        return Err(ApiError::Conflict(format!(
            "tenant {tenant} is connected on the {} surface; disconnect it first to connect {}",
            current.surface.as_str(),
            key.kind().describe()
        )));
    }
    // An enterprise org may be unnamed (empty id): nothing to compare then.
    if current.org_id != org.id && !(current.org_id.is_empty() || org.id.is_empty()) {
        return Err(ApiError::OrganizationMismatch {
            tenant: tenant.to_string(),
            current_org: format!("{} ({})", current.org_name, current.org_id),
            new_org: format!("{} ({})", org.name, org.id),
        });
    }
    Ok(())
}
