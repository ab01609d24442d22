//! Capabilities 1 and 2: connect (and rotate), test, status and disconnect a tenant's Anthropic org.

use claresia_anthropic::{AnthropicClient, AnthropicError, Deadline, ErrorKind};
use claresia_domain::connection::{LastTest, Organization};
use claresia_domain::{
    AdminKey, ConnectionRecord, ConnectionState, ConnectionStatus, Scope, ScopeReport, TenantSlug,
    TestOutcome, TestVerdict, ZeroRetention,
};
use http::Method;
use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::Grant;
use crate::{ApiError, App};

tokio::task_local! {
    /// The deadline of the request this task is handling (see [`App::request_deadline`]).
    pub(crate) static REQUEST_DEADLINE: Deadline;
}

/// An id no skill can have: deleting it proves `Skills:write` (404) without changing anything.
const SKILLS_WRITE_PROBE_ID: &str = "skill_claresia_scope_probe_0000000000";

/// Runs the connection test with `key`: `/organizations/me`, then one harmless call per required scope.
/// `Err` only for answers that are neither a verdict nor unavailability (e.g. a 400 from Anthropic).
pub async fn run_test(
    client: &AnthropicClient,
    key: &AdminKey,
    deadline: Deadline,
) -> Result<TestOutcome, AnthropicError> {
    let org = match client.organization(key, deadline).await {
        Ok(org) => org,
        Err(e) => return verdict_from_error(e),
    };
    let org_path = format!("/v1/organizations/{}", org.id);
    let skills_path = format!("{org_path}/skills");
    let audit_path = format!("{org_path}/audit_logs");
    let probe_path = format!("{skills_path}/{SKILLS_WRITE_PROBE_ID}");
    let (workspaces, skills_read, audit_read, skills_write) = tokio::join!(
        client.workspaces(key, deadline),
        client.list_page::<serde_json::Value>(key, &skills_path, &[], None, 1, deadline),
        client.list_page::<serde_json::Value>(key, &audit_path, &[], None, 1, deadline),
        client.send::<serde_json::Value>(key, Method::DELETE, &probe_path, &[], None, deadline),
    );

    let mut scopes = ScopeReport::default();
    let mut workspace_count = None;
    let mut classify = |scope: Scope, res: Result<(), AnthropicError>| -> Option<AnthropicError> {
        match res {
            Ok(()) => scopes.verified.push(scope),
            Err(e) if e.kind() == ErrorKind::Permission => {
                match e
                    .upstream_message()
                    .and_then(Scope::from_missing_scope_message)
                {
                    Some(s) if s == scope => scopes.missing.push(scope),
                    _ => scopes.unverified.push(scope),
                }
            }
            // The write probe targets a skill that cannot exist: "not found" means the write was allowed.
            Err(e) if scope == Scope::SkillsWrite && e.kind() == ErrorKind::NotFound => {
                scopes.verified.push(scope)
            }
            Err(e) if matches!(e.kind(), ErrorKind::Authentication) || e.is_unavailable() => {
                return Some(e)
            }
            Err(_) => scopes.unverified.push(scope),
        }
        None
    };
    let ws_res = workspaces.map(|list| {
        workspace_count = Some(list.len() as u32);
    });
    let fatal = [
        classify(Scope::SkillsWrite, skills_write.map(|_| ())),
        classify(Scope::SkillsRead, skills_read.map(|_| ())),
        classify(Scope::AuditRead, audit_read.map(|_| ())),
        classify(Scope::WorkspacesRead, ws_res),
    ]
    .into_iter()
    .flatten()
    .next();
    if let Some(e) = fatal {
        return verdict_from_error(e);
    }
    Ok(TestOutcome::decide(
        Organization {
            id: org.id,
            name: org.name,
        },
        workspace_count,
        ZeroRetention::from(org.zero_retention),
        scopes,
    ))
}

fn verdict_from_error(e: AnthropicError) -> Result<TestOutcome, AnthropicError> {
    let rid = e.request_id().map(str::to_owned);
    match e.kind() {
        ErrorKind::Authentication => Ok(TestOutcome::unauthorized(rid)),
        ErrorKind::Permission => Ok(TestOutcome::forbidden(
            rid,
            e.upstream_message()
                .and_then(Scope::from_missing_scope_message),
        )),
        _ if e.is_unavailable() => Ok(TestOutcome::unavailable(&e.summary(), rid)),
        _ => Err(e),
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
    /// The deadline of the request being handled: one for every step of it (key test, listing, publish,
    /// final poll), set by [`App::handle`] from the Lambda invocation's own deadline. Outside a request
    /// (tests calling a service directly), a fresh budget.
    pub fn request_deadline(&self) -> Deadline {
        REQUEST_DEADLINE
            .try_with(|d| *d)
            .unwrap_or_else(|_| Deadline::after(self.config.request_budget))
    }

    async fn test_key(&self, key: &AdminKey, deadline: Deadline) -> Result<TestOutcome, ApiError> {
        run_test(&self.anthropic, key, deadline)
            .await
            .map_err(ApiError::AnthropicRejected)
    }

    /// `PUT /tenants/{tenant}/connection`: test the candidate key, and only if Anthropic accepts it store it
    /// (a new secret version on rotation) and record the connection.
    pub async fn connect(
        &self,
        tenant: &TenantSlug,
        key: AdminKey,
    ) -> Result<ConnectResult, ApiError> {
        // One budget for the test and the publish that follows: API Gateway stops waiting at 30 s.
        let deadline = self.request_deadline();
        let outcome = self.test_key(&key, deadline).await?;
        match outcome.code {
            TestVerdict::AnthropicUnavailable => {
                return Err(ApiError::AnthropicUnavailable(Box::new(outcome)))
            }
            v if !v.key_accepted() => return Err(ApiError::KeyRejected(Box::new(outcome))),
            _ => {}
        }
        let Some(org) = outcome.organization.clone() else {
            return Err(ApiError::KeyRejected(Box::new(outcome)));
        };
        let stored = self.hub.connection(tenant).await?;
        let read_version = stored.as_ref().map_or(0, |r| r.version);
        let offboarded = stored
            .as_ref()
            .is_some_and(|r| r.state == ConnectionState::Disconnected);
        let existing = stored.filter(|r| r.state != ConnectionState::Disconnected);
        if let Some(current) = &existing {
            if current.org_id != org.id {
                return Err(ApiError::OrganizationMismatch {
                    tenant: tenant.to_string(),
                    current_org: format!("{} ({})", current.org_name, current.org_id),
                    new_org: format!("{} ({})", org.name, org.id),
                });
            }
        }
        let fingerprint = key.fingerprint().to_string();
        let same_key = existing
            .as_ref()
            .is_some_and(|r| r.key_fingerprint == fingerprint);
        let now = OffsetDateTime::now_utc();
        if offboarded {
            // The secret is in its recovery window: bring it back before writing the new version.
            self.keys.restore(tenant).await?;
        }
        // Reconnecting with the key already stored writes no new secret version.
        let secret_version_id = if same_key {
            existing.as_ref().and_then(|r| r.secret_version_id.clone())
        } else {
            Some(self.keys.put(tenant, &key).await?)
        };
        let mut record = ConnectionRecord {
            tenant: tenant.clone(),
            state: ConnectionState::Connected,
            state_reason: None,
            org_id: org.id.clone(),
            org_name: org.name.clone(),
            workspace_count: outcome.workspace_count.unwrap_or(0),
            zero_retention: outcome.zero_retention,
            scopes_verified: outcome.scopes.verified.clone(),
            key_fingerprint: fingerprint.clone(),
            key_created_at: match &existing {
                Some(r) if same_key => r.key_created_at,
                _ => now,
            },
            connected_at: existing.as_ref().map_or(now, |r| r.connected_at),
            updated_at: now,
            secret_version_id,
            last_test: Some(LastTest {
                at: now,
                code: outcome.code,
                message: outcome.message.clone(),
            }),
            disconnected_at: None,
            secret_deletion_date: None,
            version: read_version,
        };
        // The key is stored; the record must say so. Another writer (a stored-key test, the poller) may
        // have bumped the record since we read it: carry this connect onto what is there now.
        let mut attempts = 0;
        while !self.hub.save_connection(&record).await? {
            attempts += 1;
            let current = self.hub.connection(tenant).await?;
            let live = current
                .as_ref()
                .filter(|r| r.state != ConnectionState::Disconnected);
            if attempts >= 5 || live.is_some_and(|r| r.org_id != org.id) {
                return Err(ApiError::Conflict(format!(
                    "the connection of {tenant} changed while this request ran (another admin connected, rotated or disconnected it); check the status, then retry"
                )));
            }
            record.version = current.as_ref().map_or(0, |r| r.version);
            record.connected_at = live.map_or(now, |r| r.connected_at);
        }
        let rotated = existing.is_some() && !same_key;
        tracing::info!(
            tenant = %tenant,
            org_id = %record.org_id,
            key = %record.key_fingerprint,
            rotated,
            zero_retention = ?record.zero_retention,
            "tenant connected"
        );
        let publish = self
            .publish_after_change(tenant, None, deadline, None)
            .await?;
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

    /// `POST /tenants/{tenant}/connection/test`: a candidate key (nothing stored) or the stored key (the
    /// record learns what the test saw: zero-retention, workspaces, a revoked key).
    pub async fn test_connection(
        &self,
        tenant: &TenantSlug,
        candidate: Option<AdminKey>,
    ) -> Result<TestOutcome, ApiError> {
        if let Some(key) = candidate {
            let outcome = self.test_key(&key, self.request_deadline()).await?;
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
        let (Some(_), Some(key)) = (record, self.keys.get(tenant).await?) else {
            return Err(ApiError::NotConnected(tenant.to_string()));
        };
        let outcome = self.test_key(&key, self.request_deadline()).await?;
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
    ) -> Result<(), ApiError> {
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
    ) -> Result<Option<ConnectionRecord>, ApiError> {
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
        Err(ApiError::Conflict(format!(
            "the connection of {tenant} kept changing while this request ran; retry"
        )))
    }

    /// `GET /tenants/{tenant}/connection`: the connection, the last publish per target, sub-tenants. On a
    /// sub-tenant's path: the shared connection, and only that sub-tenant's own publish report and
    /// workspaces (nothing of its parent's other targets or its siblings).
    pub async fn connection_status(&self, grant: &Grant) -> Result<serde_json::Value, ApiError> {
        let hub = &grant.hub;
        let record = self.hub.connection(hub).await?;
        let status = ConnectionStatus::of(hub, record.as_ref(), OffsetDateTime::now_utc());
        let mut out = serde_json::to_value(&status).unwrap_or_default();
        let mut reports = self.hub.publish_reports(hub).await?;
        out["publish_pending"] = serde_json::json!(self.hub.pending_token(hub).await?.is_some());
        out["last_poll"] = serde_json::json!(self.hub.poll_status(hub).await?);
        let subs = self.sub_tenant_views(hub).await?;
        if grant.sub_tenant {
            reports.retain(|target, _| target == grant.tenant.as_str());
            out["tenant"] = serde_json::json!(grant.tenant);
            out["parent"] = serde_json::json!(hub);
            out["sub_tenant"] = subs
                .into_iter()
                .find(|s| s["tenant"] == grant.tenant.as_str())
                .unwrap_or_default();
        } else {
            out["sub_tenants"] = serde_json::json!(subs);
        }
        out["last_publish"] = serde_json::json!(reports);
        Ok(out)
    }

    /// `DELETE /tenants/{tenant}/connection`: stop using the key, schedule the secret's deletion after the
    /// recovery window, keep the telemetry. Repeating it answers the same result.
    pub async fn disconnect(&self, tenant: &TenantSlug) -> Result<DisconnectResult, ApiError> {
        // One budget for every step: removing the skills, the last poll, the secret, the record.
        let deadline = self.request_deadline();
        let Some(mut record) = self.hub.connection(tenant).await? else {
            return Err(ApiError::NotConnected(tenant.to_string()));
        };
        let mut skills_removed = 0;
        let mut skills_cleanup_warning = None;
        if record.state != ConnectionState::Disconnected {
            // Remove what we published while the key still works. If Anthropic is unavailable nothing is
            // disconnected (retry); if it refuses the key (revoked first, a common offboarding order),
            // blocking offboarding forever helps no one: disconnect and say what is left to remove.
            if let Some(key) = self.keys.get(tenant).await? {
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
        }
    }
    record.last_test = Some(LastTest {
        at: OffsetDateTime::now_utc(),
        code: outcome.code,
        message: outcome.message.clone(),
    });
}
