//! Sub-tenants as a resource of their parent: `…/sub-tenants` and `…/sub-tenants/{sub}`. Only the parent (or
//! an operator) creates or removes the link; a slug that has anything of its own, or another parent, is
//! refused. Removal is refused while archetypes or workspace mappings still name the sub-tenant, so
//! nothing is unpublished or re-routed by surprise; the removed link stays, inactive, so its telemetry
//! remains the parent's to read.

use std::collections::{BTreeMap, BTreeSet};

use claresia_aws::RegisterError;
use claresia_domain::catalog::{Archetype, WorkspaceMapping};
use claresia_domain::skill_ir::Problem;
use claresia_domain::tenant::sub_tenant_name_problem;
use claresia_domain::{Namespace, SubTenant, TenantSlug};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::{ApiError, App};

/// The create body: empty, or `{}`; no fields yet, and unknown ones are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {}

impl App {
    /// The slugs `hub` may name in archetypes and mappings.
    pub(crate) async fn active_sub_tenants(
        &self,
        hub: &TenantSlug,
    ) -> Result<BTreeSet<TenantSlug>, ApiError> {
        Ok(self
            .hub
            .sub_tenants(hub)
            .await?
            .into_values()
            .filter(|s| s.active)
            .map(|s| s.tenant)
            .collect())
    }

    /// One page of `hub`'s sub-tenant views in slug order after `after`, cut to `budget` bytes, and the
    /// slug the next page starts after (the list route and the status share it).
    pub(crate) async fn sub_tenant_views_page(
        &self,
        hub: &TenantSlug,
        limit: i32,
        after: Option<&str>,
        budget: usize,
    ) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let (subs, last) = self.hub.sub_tenants_page(hub, limit, after).await?;
        if subs.is_empty() {
            return Ok((Vec::new(), last));
        }
        let (archetypes, mappings) = self.references(hub).await?;
        let items = subs
            .iter()
            .map(|s| (s.tenant.to_string(), view(s, &archetypes, &mappings)))
            .collect();
        Ok(crate::paging::fit(items, last, budget))
    }

    pub(crate) async fn references(
        &self,
        hub: &TenantSlug,
    ) -> Result<(BTreeMap<String, Archetype>, Vec<WorkspaceMapping>), ApiError> {
        Ok((
            self.hub.archetypes(hub).await?,
            self.hub.workspace_mappings(hub).await?,
        ))
    }

    /// `GET /tenants/{tenant}/sub-tenants?limit=&cursor=`: in slug order, paginated.
    pub(crate) async fn list_sub_tenants(
        &self,
        hub: &TenantSlug,
        query: &str,
    ) -> Result<Value, ApiError> {
        let page = crate::paging::page(query, hub, "sub-tenants", 100)?;
        let (views, last) = self
            .sub_tenant_views_page(
                hub,
                page.limit,
                page.after.as_deref(),
                crate::paging::MAX_PAGE_BYTES,
            )
            .await?;
        Ok(json!({
            "tenant": hub,
            "sub_tenants": views,
            "next_cursor": crate::paging::next_cursor(hub, "sub-tenants", last),
        }))
    }

    /// `GET /tenants/{tenant}/sub-tenants/{sub}`.
    pub(crate) async fn get_sub_tenant(
        &self,
        hub: &TenantSlug,
        raw: &str,
    ) -> Result<Value, ApiError> {
        let sub = sub_slug(hub, raw)?;
        let record = self.owned_record(hub, &sub).await?;
        let (archetypes, mappings) = self.references(hub).await?;
        Ok(view(&record, &archetypes, &mappings))
    }

    /// `PUT /tenants/{tenant}/sub-tenants/{sub}`: creates the link, or brings a removed one back.
    pub async fn put_sub_tenant(
        &self,
        hub: &TenantSlug,
        raw: &str,
        body: &[u8],
        subject: Option<&str>,
    ) -> Result<Value, ApiError> {
        let sub = sub_slug(hub, raw)?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            let _: CreateBody = serde_json::from_slice(body)
                .map_err(|e| ApiError::InvalidBody(format!("{e}; the body is empty or {{}}")))?;
        }
        let existing = match self.hub.namespace(&sub).await? {
            Namespace::TopLevel(_) => {
                return Err(ApiError::SubTenantUnavailable(format!(
                    "{sub} is provisioned as a tenant of its own and cannot become a sub-tenant"
                )))
            }
            Namespace::SubTenant(r) => Some(r),
            Namespace::Unclaimed => None,
        };
        if !existing.as_ref().is_some_and(|r| r.active) {
            self.check_namespace_owner(hub, &sub).await?;
        }
        let restored = match &existing {
            Some(r) if &r.parent != hub => {
                return Err(ApiError::SubTenantUnavailable(format!(
                    "{sub} already belongs to another tenant"
                )))
            }
            Some(r) if r.active => {
                return Ok(json!({"sub_tenant": r, "created": false, "restored": false}))
            }
            Some(_) => true,
            None => {
                self.check_unclaimed(&sub).await?;
                false
            }
        };
        let record = SubTenant {
            tenant: sub.clone(),
            parent: hub.clone(),
            active: true,
            created_at: existing
                .as_ref()
                .map_or_else(OffsetDateTime::now_utc, |r| r.created_at),
            created_by: subject.map(str::to_owned),
            removed_at: None,
        };
        self.hub
            .put_sub_tenant(&record)
            .await
            .map_err(register_error)?;
        tracing::info!(tenant = %hub, sub_tenant = %sub, restored, "sub-tenant registered");
        Ok(json!({"sub_tenant": record, "created": !restored, "restored": restored}))
    }

    /// `DELETE /tenants/{tenant}/sub-tenants/{sub}`: refused while archetypes or mappings name it.
    pub(crate) async fn delete_sub_tenant(
        &self,
        hub: &TenantSlug,
        raw: &str,
    ) -> Result<Value, ApiError> {
        let sub = sub_slug(hub, raw)?;
        let mut record = self.owned_record(hub, &sub).await?;
        if !record.active {
            return Ok(json!({"sub_tenant": record, "removed": true, "telemetry_kept": true}));
        }
        let named_by = self.sub_tenant_references(hub, &sub).await?;
        if !named_by.is_empty() {
            return Err(ApiError::SubTenantInUse(format!(
                "{sub} is still named by {}; change those first (its published skills are removed when no archetype grants them)",
                named_by.join(", ")
            )));
        }
        record.active = false;
        record.removed_at = Some(OffsetDateTime::now_utc());
        self.hub
            .put_sub_tenant(&record)
            .await
            .map_err(register_error)?;
        tracing::info!(tenant = %hub, sub_tenant = %sub, "sub-tenant removed");
        Ok(json!({"sub_tenant": record, "removed": true, "telemetry_kept": true}))
    }

    /// What in `hub`'s catalog still names `sub` ("archetype eng", "the mapping of workspace …").
    pub(crate) async fn sub_tenant_references(
        &self,
        hub: &TenantSlug,
        sub: &TenantSlug,
    ) -> Result<Vec<String>, ApiError> {
        let (archetypes, mappings) = self.references(hub).await?;
        Ok(references_to(sub, &archetypes, &mappings))
    }

    /// The link `hub` made to `sub`, or 404 (another parent's sub-tenant is not named).
    async fn owned_record(
        &self,
        hub: &TenantSlug,
        sub: &TenantSlug,
    ) -> Result<SubTenant, ApiError> {
        self.hub
            .sub_tenant_record(sub)
            .await?
            .filter(|r| &r.parent == hub)
            .ok_or_else(|| ApiError::NotFound(format!("{hub} has no sub-tenant {sub}")))
    }

    /// A slug with anything of its own (a connection in any state, Hub items, telemetry) cannot become
    /// somebody's sub-tenant: that would hand its data to the claimer.
    async fn check_unclaimed(&self, sub: &TenantSlug) -> Result<(), ApiError> {
        if self.hub.has_own_items(sub).await? || self.telemetry.has_events(sub).await? {
            return Err(ApiError::SubTenantUnavailable(format!(
                "{sub} already has data of its own (a connection, catalog or telemetry) and cannot become a sub-tenant"
            )));
        }
        Ok(())
    }
}

fn sub_slug(hub: &TenantSlug, raw: &str) -> Result<TenantSlug, ApiError> {
    let sub = TenantSlug::parse(raw)?;
    match sub_tenant_name_problem(hub, &sub) {
        Some(message) => Err(ApiError::InvalidDocument {
            kind: "sub-tenant",
            problems: vec![Problem {
                path: "sub_tenant".into(),
                message,
            }],
        }),
        None => Ok(sub),
    }
}

fn register_error(e: RegisterError) -> ApiError {
    match e {
        RegisterError::Raced(_) => ApiError::SubTenantUnavailable(e.to_string()),
        RegisterError::Store(e) => ApiError::Store(e),
    }
}

/// "archetype eng", "the mapping of wrkspc_…": what still names `sub`.
fn references_to(
    sub: &TenantSlug,
    archetypes: &BTreeMap<String, Archetype>,
    mappings: &[WorkspaceMapping],
) -> Vec<String> {
    archetypes
        .iter()
        .filter(|(_, a)| a.sub_tenant.as_ref() == Some(sub))
        .map(|(name, _)| format!("archetype {name}"))
        .chain(
            mappings
                .iter()
                .filter(|m| m.sub_tenant.as_ref() == Some(sub))
                .map(|m| format!("the mapping of workspace {}", m.workspace_id)),
        )
        .collect()
}

fn view(
    s: &SubTenant,
    archetypes: &BTreeMap<String, Archetype>,
    mappings: &[WorkspaceMapping],
) -> Value {
    let mut v = json!(s);
    v["workspace_ids"] = json!(mappings
        .iter()
        .filter(|m| m.sub_tenant.as_ref() == Some(&s.tenant))
        .map(|m| &m.workspace_id)
        .collect::<Vec<_>>());
    v["archetypes"] = json!(archetypes
        .iter()
        .filter(|(_, a)| a.sub_tenant.as_ref() == Some(&s.tenant))
        .map(|(n, _)| n)
        .collect::<Vec<_>>());
    v
}
