//! The tenant namespace: who may claim a slug. A slug without `-` is a top-level tenant; a slug with `-`
//! names a sub-tenant of the tenant whose slug it extends (`acme-eu` is `acme`'s to register), unless a
//! Claresia operator provisioned it as a tenant of its own (`PUT /tenants/{tenant}/top-level`). A slug a
//! parent holds wrongly is released by an operator (`POST /tenants/{tenant}/release`), which hands it over
//! as a provisioned top-level tenant in the same write. Both are recorded on the slug's namespace item
//! (who, when, from whom, why) and logged; every claim is a conditional write of that one item, so a
//! registration, a provisioning, a release and a first connect exclude each other.

use claresia_aws::ClaimError;
use claresia_domain::admin_key::redact_keys;
use claresia_domain::{Namespace, TenantSlug, TopLevelRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ApiError, App};

/// `{}` or `{"reason": "…"}` (optional, at most 500 characters), for the audit record.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ProvisionResult {
    pub tenant: TenantSlug,
    /// This request provisioned it (201); `false`: it already was.
    pub created: bool,
    pub top_level: TopLevelRecord,
}

#[derive(Debug, Serialize)]
pub struct ReleaseResult {
    pub tenant: TenantSlug,
    /// This request released it; `false`: it already was a tenant of its own.
    pub released: bool,
    pub top_level: TopLevelRecord,
}

fn claim_reason(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: ClaimBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidBody(format!(
            "{}; the body is empty, {{}} or {{\"reason\": \"…\"}}",
            redact_keys(&e.to_string())
        ))
    })?;
    let reason = parsed
        .reason
        .map(|r| redact_keys(r.trim()))
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::InvalidBody(
            "reason: at most 500 characters".into(),
        ));
    }
    Ok(reason)
}

fn claim_error(e: ClaimError) -> ApiError {
    match e {
        ClaimError::Raced(t) => ApiError::Conflict(format!(
            "the slug {t} was claimed while this request ran (a registration or another operator); check it, then retry"
        )),
        ClaimError::Store(e) => ApiError::Store(e),
    }
}

impl App {
    /// `PUT /tenants/{tenant}/top-level`: provisions the slug as a tenant of its own (a hyphenated slug
    /// needs this before it can connect), unless a parent holds it (409, naming the release).
    pub async fn provision_top_level(
        &self,
        tenant: &TenantSlug,
        body: &[u8],
        subject: Option<&str>,
    ) -> Result<ProvisionResult, ApiError> {
        let reason = claim_reason(body)?;
        let record = match self.hub.namespace(tenant).await? {
            Namespace::TopLevel(record) => {
                return Ok(ProvisionResult {
                    tenant: tenant.clone(),
                    created: false,
                    top_level: record,
                })
            }
            Namespace::SubTenant(held) => {
                return Err(ApiError::NamespaceHeld {
                    tenant: tenant.to_string(),
                    parent: held.parent.to_string(),
                })
            }
            Namespace::Unclaimed => TopLevelRecord {
                tenant: tenant.clone(),
                provisioned_by: subject.map(str::to_owned),
                provisioned_at: OffsetDateTime::now_utc(),
                released_from: None,
                reason,
            },
        };
        self.hub
            .provision_top_level(&record)
            .await
            .map_err(claim_error)?;
        tracing::info!(tenant = %tenant, by = ?subject, "slug provisioned as a top-level tenant");
        Ok(ProvisionResult {
            tenant: tenant.clone(),
            created: true,
            top_level: record,
        })
    }

    /// `POST /tenants/{tenant}/release`: takes the slug from the parent that holds it and provisions it
    /// as a top-level tenant. Refused while the parent's archetypes or mappings name it, or while it holds
    /// telemetry of the parent's org (whoever connects as the slug next would read it).
    pub(crate) async fn release_slug(
        &self,
        tenant: &TenantSlug,
        body: &[u8],
        subject: Option<&str>,
    ) -> Result<ReleaseResult, ApiError> {
        let reason = claim_reason(body)?;
        let held = match self.hub.namespace(tenant).await? {
            Namespace::TopLevel(record) => {
                return Ok(ReleaseResult {
                    tenant: tenant.clone(),
                    released: false,
                    top_level: record,
                })
            }
            Namespace::Unclaimed => {
                return Err(ApiError::NotFound(format!(
                    "{tenant} is not held by any parent: nothing to release (PUT /tenants/{tenant}/top-level provisions it)"
                )))
            }
            Namespace::SubTenant(held) => held,
        };
        let parent = &held.parent;
        let named_by = self.sub_tenant_references(parent, tenant).await?;
        if !named_by.is_empty() {
            return Err(ApiError::SubTenantInUse(format!(
                "{tenant} is still named by {} of {parent}; change those first (an operator may, on /tenants/{parent}/…), then release it",
                named_by.join(", ")
            )));
        }
        if self.telemetry.has_events(tenant).await? {
            return Err(ApiError::SubTenantInUse(format!(
                "{tenant} holds telemetry from {parent}'s Anthropic organization; releasing the slug would show it to whoever connects as {tenant}. The link stays"
            )));
        }
        let record = TopLevelRecord {
            tenant: tenant.clone(),
            provisioned_by: subject.map(str::to_owned),
            provisioned_at: OffsetDateTime::now_utc(),
            released_from: Some(parent.clone()),
            reason,
        };
        self.hub
            .release_sub_tenant(&held, &record)
            .await
            .map_err(claim_error)?;
        // The parent's pollers drop their cached routing: the slug's names now report to the parent.
        self.hub.touch_routing(parent).await?;
        tracing::warn!(tenant = %tenant, parent = %parent, by = ?subject, reason = ?record.reason, "slug released from its parent and provisioned as a top-level tenant");
        Ok(ReleaseResult {
            tenant: tenant.clone(),
            released: true,
            top_level: record,
        })
    }

    /// A first connect of `tenant` (no connection record yet): refused while a parent holds the slug, and
    /// for a hyphenated slug no operator provisioned (it is a sub-tenant's name).
    pub(crate) async fn check_may_connect(&self, tenant: &TenantSlug) -> Result<(), ApiError> {
        match self.hub.namespace(tenant).await? {
            Namespace::SubTenant(held) => Err(ApiError::NamespaceHeld {
                tenant: tenant.to_string(),
                parent: held.parent.to_string(),
            }),
            Namespace::TopLevel(_) => Ok(()),
            Namespace::Unclaimed if tenant.is_hyphenated() => Err(not_provisioned(tenant)),
            Namespace::Unclaimed => Ok(()),
        }
    }

    /// `parent` may register `sub`: a hyphenated parent must be a tenant of its own (provisioned, or
    /// connected before the rule), and no provisioned or connected slug stands between the two.
    pub(crate) async fn check_namespace_owner(
        &self,
        parent: &TenantSlug,
        sub: &TenantSlug,
    ) -> Result<(), ApiError> {
        if parent.is_hyphenated() && !self.is_own_tenant(parent).await? {
            return Err(not_provisioned(parent));
        }
        for owner in sub.prefixes_below(parent) {
            if self.is_own_tenant(&owner).await? {
                return Err(ApiError::SubTenantUnavailable(format!(
                    "{sub} is in the namespace of {owner}, a tenant of its own; {parent} cannot register it"
                )));
            }
        }
        Ok(())
    }

    /// Provisioned as a top-level tenant, or holding a connection record of its own (tenants connected
    /// before the namespace rule keep their slugs).
    async fn is_own_tenant(&self, tenant: &TenantSlug) -> Result<bool, ApiError> {
        Ok(
            matches!(self.hub.namespace(tenant).await?, Namespace::TopLevel(_))
                || self.hub.connection(tenant).await?.is_some(),
        )
    }
}

fn not_provisioned(tenant: &TenantSlug) -> ApiError {
    let namespace = tenant
        .as_str()
        .split('-')
        .next()
        .unwrap_or_default()
        .to_owned();
    ApiError::NotProvisioned {
        tenant: tenant.to_string(),
        namespace,
    }
}
