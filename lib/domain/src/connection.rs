//! A tenant's connection to its Anthropic organization: the verdict of a connection test, the stored
//! record, and the status the portal reads.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::scope::{Scope, ScopeReport};
use crate::tenant::TenantSlug;

/// Keys older than this are due for rotation (the practice note's 90-day cycle).
pub const ROTATION_DUE_DAYS: i64 = 90;

const REMINT_HINT: &str =
    "Re-mint the Admin key with Skills:write, Skills:read, Audit:read, Workspaces:read.";
const ENTERPRISE_REMINT_HINT: &str = "Scopes are fixed when an Enterprise key is created: have the primary owner create a new key (claude.ai → Organization settings → API, for all linked organizations) with write:plugins, read:plugins, read:analytics, read:compliance_activities, read:rbac_groups.";

/// Which Anthropic API a connection speaks: `preview` is the contract the product page imagines (org
/// skills with ACLs, a per-run audit log), `enterprise` what Claude Enterprise documents today (plugins
/// per RBAC group, the Analytics API, the Compliance Activity Feed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    #[default]
    Preview,
    Enterprise,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Preview => "preview",
            Surface::Enterprise => "enterprise",
        }
    }

    /// The scopes a key must carry on this surface.
    pub fn required_scopes(self) -> &'static [Scope] {
        match self {
            Surface::Preview => &Scope::REQUIRED,
            Surface::Enterprise => &Scope::ENTERPRISE,
        }
    }

    fn remint_hint(self) -> &'static str {
        match self {
            Surface::Preview => REMINT_HINT,
            Surface::Enterprise => ENTERPRISE_REMINT_HINT,
        }
    }
}

/// A tenant admin's statement that the Claude Enterprise organization runs with zero data retention: no
/// Enterprise API reports it, so publishing there rests on this record (who, when, on what basis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The JWT subject of the admin who attested.
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Free text naming the basis, e.g. a contract addendum id.
    pub reference: String,
}

/// Whether the organization has zero-retention on. `Unknown` (Anthropic did not say) counts as off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroRetention {
    Enabled,
    /// Not reported by Anthropic (the enterprise surface) but attested by a tenant admin.
    Attested,
    Disabled,
    Unknown,
}

impl From<Option<bool>> for ZeroRetention {
    fn from(v: Option<bool>) -> Self {
        match v {
            Some(true) => ZeroRetention::Enabled,
            Some(false) => ZeroRetention::Disabled,
            None => ZeroRetention::Unknown,
        }
    }
}

/// The verdict of a connection test, with a stable machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestVerdict {
    Success,
    ZeroRetentionDisabled,
    /// Enterprise: the key is good, but no zero-retention attestation is recorded yet.
    ZeroRetentionUnattested,
    Unauthorized,
    MissingScopes,
    AnthropicUnavailable,
}

impl TestVerdict {
    pub fn code(self) -> &'static str {
        match self {
            TestVerdict::Success => "success",
            TestVerdict::ZeroRetentionDisabled => "zero_retention_disabled",
            TestVerdict::ZeroRetentionUnattested => "zero_retention_unattested",
            TestVerdict::Unauthorized => "unauthorized",
            TestVerdict::MissingScopes => "missing_scopes",
            TestVerdict::AnthropicUnavailable => "anthropic_unavailable",
        }
    }

    /// Whether the key itself is good enough to store (zero-retention is a property of the org, not the key).
    pub fn key_accepted(self) -> bool {
        matches!(
            self,
            TestVerdict::Success
                | TestVerdict::ZeroRetentionDisabled
                | TestVerdict::ZeroRetentionUnattested
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
}

/// Everything a connection test found out, and what it tells the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub code: TestVerdict,
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub surface: Surface,
    pub organization: Option<Organization>,
    /// Enterprise: why the organization's name is unknown (no API answered it to this key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_note: Option<String>,
    pub workspace_count: Option<u32>,
    /// Enterprise: how many RBAC groups the organization has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_count: Option<u32>,
    pub zero_retention: ZeroRetention,
    pub scopes: ScopeReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl TestOutcome {
    /// The verdict once Anthropic answered `/organizations/me`: missing scopes first (the key must be
    /// re-minted), then zero-retention (an org setting), else success.
    pub fn decide(
        organization: Organization,
        workspace_count: Option<u32>,
        zero_retention: ZeroRetention,
        scopes: ScopeReport,
    ) -> Self {
        let (code, message) = if !scopes.missing.is_empty() {
            let names: Vec<&str> = scopes.missing.iter().map(|s| s.as_str()).collect();
            (
                TestVerdict::MissingScopes,
                format!(
                    "403 Forbidden — the key lacks the required scope{} {}. {REMINT_HINT}",
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ),
            )
        } else {
            match zero_retention {
                ZeroRetention::Enabled => {
                    let mut m = format!(
                        "Connected to {} — {} workspace{}, zero-retention enabled.",
                        organization.name,
                        workspace_count.unwrap_or(0),
                        if workspace_count == Some(1) { "" } else { "s" }
                    );
                    if !scopes.unverified.is_empty() {
                        let names: Vec<&str> = scopes.unverified.iter().map(|s| s.as_str()).collect();
                        m.push_str(&format!(
                            " Could not confirm {}; the first publish will.",
                            names.join(", ")
                        ));
                    }
                    (TestVerdict::Success, m)
                }
                ZeroRetention::Disabled => (
                    TestVerdict::ZeroRetentionDisabled,
                    "Zero-retention not enabled — Claresia refuses to publish. Enable zero-retention in Anthropic Console → Settings → Privacy.".to_owned(),
                ),
                ZeroRetention::Unknown | ZeroRetention::Attested => (
                    TestVerdict::ZeroRetentionDisabled,
                    "Zero-retention could not be confirmed (Anthropic did not report it) — Claresia refuses to publish until it is confirmed. Enable zero-retention in Anthropic Console → Settings → Privacy, then test again.".to_owned(),
                ),
            }
        };
        TestOutcome {
            ok: code == TestVerdict::Success,
            code,
            message,
            surface: Surface::Preview,
            organization: Some(organization),
            organization_note: None,
            group_count: None,
            workspace_count,
            zero_retention,
            scopes,
            request_id: None,
        }
    }

    /// The verdict of an enterprise test: missing scopes first (a new key is needed), then the
    /// zero-retention attestation (the tenant admin's to give), else success.
    pub fn decide_enterprise(
        organization: Option<Organization>,
        organization_note: Option<String>,
        group_count: Option<u32>,
        scopes: ScopeReport,
        attestation: Option<&Attestation>,
    ) -> Self {
        let org_name = organization
            .as_ref()
            .map_or("the Claude Enterprise organization".to_owned(), |o| {
                o.name.clone()
            });
        let groups = match group_count {
            Some(n) => format!("{n} RBAC group{}", if n == 1 { "" } else { "s" }),
            None => "RBAC groups not counted".to_owned(),
        };
        let (code, mut message) = if !scopes.missing.is_empty() {
            let names: Vec<&str> = scopes.missing.iter().map(|s| s.as_str()).collect();
            (
                TestVerdict::MissingScopes,
                format!(
                    "403 Forbidden — the Enterprise key lacks the required scope{} {}. {ENTERPRISE_REMINT_HINT}",
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ),
            )
        } else if let Some(a) = attestation {
            (
                TestVerdict::Success,
                format!(
                    "Connected to {org_name} — {groups}, zero retention attested by {} ({}).",
                    a.by, a.reference
                ),
            )
        } else {
            (
                TestVerdict::ZeroRetentionUnattested,
                format!("Connected to {org_name} — {groups}. Zero retention is not reported by any Claude Enterprise API: Claresia refuses to publish until a tenant admin records an attestation (zero_retention_attestation in the connect body)."),
            )
        };
        if code != TestVerdict::MissingScopes && !scopes.unverified.is_empty() {
            let names: Vec<&str> = scopes.unverified.iter().map(|s| s.as_str()).collect();
            message.push_str(&format!(" Could not confirm {}.", names.join(", ")));
        }
        TestOutcome {
            ok: code == TestVerdict::Success,
            code,
            message,
            surface: Surface::Enterprise,
            organization,
            organization_note,
            workspace_count: None,
            group_count,
            zero_retention: if attestation.is_some() {
                ZeroRetention::Attested
            } else {
                ZeroRetention::Unknown
            },
            scopes,
            request_id: None,
        }
    }

    /// The same outcome, said of `surface` (whose re-mint advice a 403 message carries).
    pub fn on(mut self, surface: Surface) -> Self {
        if self.surface != surface {
            self.message = self
                .message
                .replace(self.surface.remint_hint(), surface.remint_hint());
            if self.code == TestVerdict::MissingScopes {
                self.scopes.unverified = surface
                    .required_scopes()
                    .iter()
                    .copied()
                    .filter(|s| !self.scopes.missing.contains(s))
                    .collect();
            }
            self.surface = surface;
        }
        self
    }

    /// Anthropic answered 401: the key is wrong, revoked or was pasted incompletely.
    pub fn unauthorized(request_id: Option<String>) -> Self {
        TestOutcome {
            code: TestVerdict::Unauthorized,
            ok: false,
            message: "401 Unauthorized — Anthropic rejected the key. Re-paste the key (most common: a trailing space or a partial copy; we trim spaces, so check the key was copied whole and not revoked).".to_owned(),
            surface: Surface::Preview,
            organization: None,
            organization_note: None,
            group_count: None,
            workspace_count: None,
            zero_retention: ZeroRetention::Unknown,
            scopes: ScopeReport::default(),
            request_id,
        }
    }

    /// Anthropic answered 403 on `/organizations/me` itself, which needs no scope: not an admin key's scope
    /// problem we can name, but still a permission problem the user must fix by re-minting.
    pub fn forbidden(request_id: Option<String>, scope: Option<Scope>) -> Self {
        let scopes = ScopeReport {
            missing: scope.into_iter().collect(),
            unverified: Scope::REQUIRED
                .into_iter()
                .filter(|s| Some(*s) != scope)
                .collect(),
            verified: vec![],
        };
        let what = match scope {
            Some(s) => format!("the key lacks the required scope {}", s.as_str()),
            None => "the key is not allowed to read the organization".to_owned(),
        };
        TestOutcome {
            code: TestVerdict::MissingScopes,
            ok: false,
            message: format!("403 Forbidden — {what}. {REMINT_HINT}"),
            surface: Surface::Preview,
            organization: None,
            organization_note: None,
            group_count: None,
            workspace_count: None,
            zero_retention: ZeroRetention::Unknown,
            scopes,
            request_id,
        }
    }

    /// Anthropic kept failing (5xx, 529, timeouts) after our retries.
    pub fn unavailable(detail: &str, request_id: Option<String>) -> Self {
        let rid = request_id
            .as_deref()
            .map(|r| format!(" (Anthropic request id {r})"))
            .unwrap_or_default();
        TestOutcome {
            code: TestVerdict::AnthropicUnavailable,
            ok: false,
            message: format!(
                "Anthropic is unavailable right now: {detail}{rid}. Nothing was changed; try again in a few minutes and check status.anthropic.com."
            ),
            surface: Surface::Preview,
            organization: None,
            organization_note: None,
            group_count: None,
            workspace_count: None,
            zero_retention: ZeroRetention::Unknown,
            scopes: ScopeReport::default(),
            request_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Connected,
    /// The stored key stopped working (a 401 while polling or testing): an admin must act.
    NeedsAttention,
    Disconnected,
}

/// The last connection test run with the stored key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastTest {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub code: TestVerdict,
    pub message: String,
}

/// What we store about a tenant's connection (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub tenant: TenantSlug,
    pub state: ConnectionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    pub org_id: String,
    pub org_name: String,
    pub workspace_count: u32,
    pub zero_retention: ZeroRetention,
    pub scopes_verified: Vec<Scope>,
    pub key_fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub key_created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub connected_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<LastTest>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub disconnected_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub secret_deletion_date: Option<OffsetDateTime>,
    #[serde(default)]
    pub surface: Surface,
    /// Enterprise: the organization's RBAC groups when last tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_count: Option<u32>,
    /// Enterprise: why the organization's name is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_note: Option<String>,
    /// Enterprise: the tenant admin's zero-retention attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// Bumped by every write; a write is conditioned on the version it read (0: no record yet), so a
    /// writer that read a stale record (a test or a 401 racing a rotation) cannot put it back.
    #[serde(default)]
    pub version: u64,
}

impl ConnectionRecord {
    /// Why publishing is refused right now, or `None` when it is allowed.
    pub fn publish_refusal(&self) -> Option<String> {
        match self.state {
            ConnectionState::Disconnected => {
                return Some("The tenant is disconnected; connect an Admin key first.".to_owned())
            }
            ConnectionState::NeedsAttention => {
                return Some(format!(
                    "The stored Admin key needs attention ({}); re-paste or rotate the key.",
                    self.state_reason
                        .as_deref()
                        .unwrap_or("Anthropic rejected it")
                ))
            }
            ConnectionState::Connected => {}
        }
        if self.surface == Surface::Enterprise {
            return match &self.attestation {
                Some(_) => None,
                None => Some("Zero retention is not attested — Claresia refuses to publish to Claude Enterprise until a tenant admin records zero_retention_attestation (reconnect with it in the body).".to_owned()),
            };
        }
        match self.zero_retention {
            ZeroRetention::Enabled => None,
            ZeroRetention::Attested => Some("Zero retention is attested, but this is a preview connection, where Anthropic must report it; test the connection again.".to_owned()),
            ZeroRetention::Disabled => Some("Zero-retention not enabled — Claresia refuses to publish. Enable zero-retention in Anthropic Console → Settings → Privacy.".to_owned()),
            ZeroRetention::Unknown => Some("Zero-retention could not be confirmed — Claresia refuses to publish until a test or republish sees it enabled.".to_owned()),
        }
    }

    pub fn key_age_days(&self, now: OffsetDateTime) -> i64 {
        (now - self.key_created_at).whole_days().max(0)
    }
}

/// What the poller needs of a live connection. The hub's index is read with a projection onto these
/// fields, so a tick does not fetch and parse every tenant's whole record (tests, scopes, key details).
/// Field names are the stored record's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveConnection {
    pub tenant: TenantSlug,
    pub state: ConnectionState,
    pub org_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub connected_at: OffsetDateTime,
    #[serde(default)]
    pub surface: Surface,
    /// The key the record names, and the secret version holding it: the poller uses that key, whatever
    /// version a concurrent rotation made current.
    #[serde(default)]
    pub key_fingerprint: String,
    #[serde(default)]
    pub secret_version_id: Option<String>,
}

impl LiveConnection {
    /// The stored attributes a `LiveConnection` is read from.
    pub const FIELDS: [&'static str; 7] = [
        "tenant",
        "state",
        "org_id",
        "connected_at",
        "surface",
        "key_fingerprint",
        "secret_version_id",
    ];
}

impl From<&ConnectionRecord> for LiveConnection {
    fn from(r: &ConnectionRecord) -> Self {
        LiveConnection {
            tenant: r.tenant.clone(),
            state: r.state,
            org_id: r.org_id.clone(),
            connected_at: r.connected_at,
            surface: r.surface,
            key_fingerprint: r.key_fingerprint.clone(),
            secret_version_id: r.secret_version_id.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyStatus {
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub age_days: i64,
    pub rotation_due: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishingStatus {
    pub allowed: bool,
    pub reason: Option<String>,
}

/// `{"source": "reported"}` or `{"source": "attested", "by", "at", "reference"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ZeroRetentionEvidence {
    Reported,
    Attested(Attestation),
}

/// The connection status the portal reads (`GET /tenants/{tenant}/connection`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionStatus {
    pub tenant: TenantSlug,
    pub connected: bool,
    pub state: Option<ConnectionState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// The Anthropic API the connection speaks (`None` when not connected).
    pub surface: Option<Surface>,
    pub organization: Option<Organization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_note: Option<String>,
    pub workspace_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_count: Option<u32>,
    pub zero_retention: Option<ZeroRetention>,
    /// Where the zero-retention answer comes from: reported by Anthropic, or attested (by whom, when).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_retention_evidence: Option<ZeroRetentionEvidence>,
    pub scopes_verified: Vec<Scope>,
    pub key: Option<KeyStatus>,
    pub publishing: PublishingStatus,
    pub last_test: Option<LastTest>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub disconnected_at: Option<OffsetDateTime>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub secret_deletion_date: Option<OffsetDateTime>,
}

impl ConnectionStatus {
    pub fn of(tenant: &TenantSlug, record: Option<&ConnectionRecord>, now: OffsetDateTime) -> Self {
        let Some(r) = record else {
            return ConnectionStatus {
                tenant: tenant.clone(),
                connected: false,
                state: None,
                state_reason: None,
                surface: None,
                organization: None,
                organization_note: None,
                workspace_count: None,
                group_count: None,
                zero_retention: None,
                zero_retention_evidence: None,
                scopes_verified: vec![],
                key: None,
                publishing: PublishingStatus {
                    allowed: false,
                    reason: Some("Not connected; connect an Anthropic Admin key first.".to_owned()),
                },
                last_test: None,
                disconnected_at: None,
                secret_deletion_date: None,
            };
        };
        let live = r.state != ConnectionState::Disconnected;
        let age = r.key_age_days(now);
        let refusal = r.publish_refusal();
        ConnectionStatus {
            tenant: tenant.clone(),
            connected: live,
            state: Some(r.state),
            state_reason: r.state_reason.clone(),
            surface: Some(r.surface),
            organization: (!r.org_id.is_empty()).then(|| Organization {
                id: r.org_id.clone(),
                name: r.org_name.clone(),
            }),
            organization_note: r.organization_note.clone(),
            workspace_count: (r.surface == Surface::Preview).then_some(r.workspace_count),
            group_count: r.group_count,
            zero_retention: Some(r.zero_retention),
            zero_retention_evidence: Some(match (&r.attestation, r.surface) {
                (Some(a), Surface::Enterprise) => ZeroRetentionEvidence::Attested(a.clone()),
                _ => ZeroRetentionEvidence::Reported,
            }),
            scopes_verified: r.scopes_verified.clone(),
            key: live.then(|| KeyStatus {
                fingerprint: r.key_fingerprint.clone(),
                created_at: r.key_created_at,
                age_days: age,
                rotation_due: age >= ROTATION_DUE_DAYS,
            }),
            publishing: PublishingStatus {
                allowed: refusal.is_none(),
                reason: refusal,
            },
            last_test: r.last_test.clone(),
            disconnected_at: r.disconnected_at,
            secret_deletion_date: r.secret_deletion_date,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn org() -> Organization {
        Organization {
            id: "org-1".into(),
            name: "Dainese S.p.A.".into(),
        }
    }

    fn all_verified() -> ScopeReport {
        ScopeReport {
            verified: Scope::REQUIRED.to_vec(),
            ..Default::default()
        }
    }

    fn record(zr: ZeroRetention, state: ConnectionState) -> ConnectionRecord {
        ConnectionRecord {
            tenant: TenantSlug::parse("dainese").unwrap(),
            state,
            state_reason: None,
            org_id: "org-1".into(),
            org_name: "Dainese S.p.A.".into(),
            workspace_count: 3,
            zero_retention: zr,
            scopes_verified: Scope::REQUIRED.to_vec(),
            key_fingerprint: "…WXYZ sha256:01234567".into(),
            key_created_at: datetime!(2026-08-01 00:00 UTC),
            connected_at: datetime!(2026-08-01 00:00 UTC),
            updated_at: datetime!(2026-08-01 00:00 UTC),
            secret_version_id: None,
            last_test: None,
            disconnected_at: None,
            secret_deletion_date: None,
            surface: Surface::Preview,
            group_count: None,
            organization_note: None,
            attestation: None,
            version: 1,
        }
    }

    #[test]
    fn success_needs_all_scopes_and_zero_retention() {
        let o = TestOutcome::decide(org(), Some(3), ZeroRetention::Enabled, all_verified());
        assert_eq!(o.code, TestVerdict::Success);
        assert!(o.ok);
        assert_eq!(
            o.message,
            "Connected to Dainese S.p.A. — 3 workspaces, zero-retention enabled."
        );
        let one = TestOutcome::decide(org(), Some(1), ZeroRetention::Enabled, all_verified());
        assert!(one.message.contains("1 workspace,"));
    }

    #[test]
    fn zero_retention_off_or_unknown_is_the_seed_warning() {
        let off = TestOutcome::decide(org(), Some(3), ZeroRetention::Disabled, all_verified());
        assert_eq!(off.code.code(), "zero_retention_disabled");
        assert_eq!(off.message, "Zero-retention not enabled — Claresia refuses to publish. Enable zero-retention in Anthropic Console → Settings → Privacy.");
        assert!(!off.ok);
        assert!(off.code.key_accepted());
        let unknown = TestOutcome::decide(org(), Some(3), ZeroRetention::Unknown, all_verified());
        assert_eq!(unknown.code, TestVerdict::ZeroRetentionDisabled);
        assert!(unknown.message.contains("could not be confirmed"));
    }

    #[test]
    fn missing_scopes_win_and_are_named() {
        let scopes = ScopeReport {
            verified: vec![Scope::WorkspacesRead, Scope::SkillsRead, Scope::SkillsWrite],
            missing: vec![Scope::AuditRead],
            unverified: vec![],
        };
        let o = TestOutcome::decide(org(), Some(3), ZeroRetention::Disabled, scopes);
        assert_eq!(o.code.code(), "missing_scopes");
        assert!(!o.code.key_accepted());
        assert!(o.message.contains("scope Audit:read"), "{}", o.message);
        assert!(o
            .message
            .contains("Skills:write, Skills:read, Audit:read, Workspaces:read"));
        let two = ScopeReport {
            missing: vec![Scope::AuditRead, Scope::SkillsWrite],
            ..Default::default()
        };
        let o = TestOutcome::decide(org(), None, ZeroRetention::Enabled, two);
        assert!(
            o.message.contains("scopes Audit:read, Skills:write"),
            "{}",
            o.message
        );
    }

    #[test]
    fn unauthorized_and_unavailable_messages() {
        let u = TestOutcome::unauthorized(Some("req_1".into()));
        assert_eq!(u.code.code(), "unauthorized");
        assert!(u.message.contains("re-paste the key") || u.message.contains("Re-paste the key"));
        assert!(!u.code.key_accepted());
        let d = TestOutcome::unavailable(
            "HTTP 529 overloaded_error after 4 attempts",
            Some("req_9".into()),
        );
        assert_eq!(d.code.code(), "anthropic_unavailable");
        assert!(d.message.contains("req_9"));
        assert!(!d.code.key_accepted());
        let f = TestOutcome::forbidden(None, None);
        assert_eq!(f.code, TestVerdict::MissingScopes);
    }

    #[test]
    fn status_reports_key_age_and_rotation() {
        let r = record(ZeroRetention::Enabled, ConnectionState::Connected);
        let t = TenantSlug::parse("dainese").unwrap();
        let s = ConnectionStatus::of(&t, Some(&r), datetime!(2026-10-29 23:59 UTC));
        let key = s.key.clone().unwrap();
        assert_eq!(key.age_days, 89);
        assert!(!key.rotation_due);
        assert!(s.publishing.allowed);
        let s = ConnectionStatus::of(&t, Some(&r), datetime!(2026-10-30 00:00 UTC));
        assert_eq!(s.key.unwrap().age_days, 90);
        let s = ConnectionStatus::of(&t, Some(&r), datetime!(2026-10-30 00:00 UTC));
        assert!(s.key.unwrap().rotation_due);
        // A clock behind the key's creation never shows negative ages.
        let s = ConnectionStatus::of(&t, Some(&r), datetime!(2026-07-01 00:00 UTC));
        assert_eq!(s.key.unwrap().age_days, 0);
    }

    #[test]
    fn publishing_refused_with_a_reason() {
        let t = TenantSlug::parse("dainese").unwrap();
        let now = datetime!(2026-08-02 00:00 UTC);
        let none = ConnectionStatus::of(&t, None, now);
        assert!(!none.connected && !none.publishing.allowed);
        for (zr, state, needle) in [
            (
                ZeroRetention::Disabled,
                ConnectionState::Connected,
                "Zero-retention not enabled",
            ),
            (
                ZeroRetention::Unknown,
                ConnectionState::Connected,
                "could not be confirmed",
            ),
            (
                ZeroRetention::Enabled,
                ConnectionState::NeedsAttention,
                "needs attention",
            ),
            (
                ZeroRetention::Enabled,
                ConnectionState::Disconnected,
                "disconnected",
            ),
        ] {
            let s = ConnectionStatus::of(&t, Some(&record(zr, state)), now);
            assert!(!s.publishing.allowed);
            assert!(
                s.publishing.reason.as_deref().unwrap().contains(needle),
                "{needle}"
            );
        }
        let gone = ConnectionStatus::of(
            &t,
            Some(&record(
                ZeroRetention::Enabled,
                ConnectionState::Disconnected,
            )),
            now,
        );
        assert!(!gone.connected);
        assert!(gone.key.is_none());
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = record(ZeroRetention::Unknown, ConnectionState::NeedsAttention);
        let back: ConnectionRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_live_connection_is_read_from_the_stored_fields_it_names() {
        let r = record(ZeroRetention::Enabled, ConnectionState::Connected);
        let stored = serde_json::to_value(&r).unwrap();
        // Only the projected attributes, as the index query returns them.
        let projected: serde_json::Map<String, serde_json::Value> = LiveConnection::FIELDS
            .iter()
            .map(|f| (f.to_string(), stored[*f].clone()))
            .collect();
        let live: LiveConnection =
            serde_json::from_value(serde_json::Value::Object(projected)).unwrap();
        assert_eq!(live, LiveConnection::from(&r));
        let own = serde_json::to_value(&live).unwrap();
        let mut keys: Vec<&str> = own
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        let mut fields = LiveConnection::FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }

    fn attestation() -> Attestation {
        Attestation {
            by: "user-1".into(),
            at: datetime!(2026-11-25 10:00 UTC),
            reference: "DPA-7".into(),
        }
    }

    #[test]
    fn enterprise_verdicts_name_missing_scopes_then_ask_for_the_attestation() {
        let all = ScopeReport {
            verified: Scope::ENTERPRISE.to_vec(),
            ..Default::default()
        };
        let o = TestOutcome::decide_enterprise(Some(org()), None, Some(3), all.clone(), None);
        assert_eq!(o.code, TestVerdict::ZeroRetentionUnattested);
        assert!(o.code.key_accepted() && !o.ok);
        assert!(o.message.contains("3 RBAC groups"), "{}", o.message);
        assert_eq!(o.surface, Surface::Enterprise);
        let a = attestation();
        let o =
            TestOutcome::decide_enterprise(None, Some("unknown".into()), Some(1), all, Some(&a));
        assert_eq!((o.code, o.ok), (TestVerdict::Success, true));
        assert_eq!(o.zero_retention, ZeroRetention::Attested);
        assert!(
            o.message.contains("1 RBAC group,") && o.message.contains("user-1"),
            "{}",
            o.message
        );
        let missing = ScopeReport {
            verified: vec![
                Scope::PluginsWrite,
                Scope::PluginsRead,
                Scope::RbacGroupsRead,
            ],
            missing: vec![Scope::AnalyticsRead, Scope::ComplianceActivitiesRead],
            unverified: vec![],
        };
        let o = TestOutcome::decide_enterprise(Some(org()), None, Some(3), missing, Some(&a));
        assert_eq!(o.code, TestVerdict::MissingScopes);
        assert!(
            o.message
                .contains("scopes read:analytics, read:compliance_activities"),
            "{}",
            o.message
        );
        assert!(o.message.contains("claude.ai"), "{}", o.message);
    }

    #[test]
    fn a_403_on_the_enterprise_surface_gives_its_own_advice() {
        let o = TestOutcome::forbidden(None, Some(Scope::PluginsRead)).on(Surface::Enterprise);
        assert!(
            o.message.contains("write:plugins, read:plugins"),
            "{}",
            o.message
        );
        assert_eq!(o.scopes.missing, vec![Scope::PluginsRead]);
        assert_eq!(o.scopes.unverified.len(), 4);
        assert_eq!(o.surface, Surface::Enterprise);
    }

    #[test]
    fn enterprise_publishing_rests_on_the_attestation() {
        let mut r = record(ZeroRetention::Unknown, ConnectionState::Connected);
        r.surface = Surface::Enterprise;
        assert!(r.publish_refusal().unwrap().contains("not attested"));
        r.attestation = Some(attestation());
        r.zero_retention = ZeroRetention::Attested;
        assert_eq!(r.publish_refusal(), None);
        let st = ConnectionStatus::of(&r.tenant, Some(&r), datetime!(2026-11-25 12:00 UTC));
        assert_eq!(st.surface, Some(Surface::Enterprise));
        assert_eq!(st.workspace_count, None);
        assert_eq!(
            serde_json::to_value(&st.zero_retention_evidence).unwrap(),
            serde_json::json!({"source": "attested", "by": "user-1", "at": "2026-11-25T10:00:00Z", "reference": "DPA-7"})
        );
        // An attestation never stands in for what Anthropic must report on preview.
        let mut p = record(ZeroRetention::Attested, ConnectionState::Connected);
        p.attestation = Some(attestation());
        assert!(p.publish_refusal().is_some());
        let st = ConnectionStatus::of(&p.tenant, Some(&p), datetime!(2026-11-25 12:00 UTC));
        assert_eq!(
            serde_json::to_value(&st.zero_retention_evidence).unwrap(),
            serde_json::json!({"source": "reported"})
        );
    }
}
