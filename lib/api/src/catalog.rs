//! Capabilities 5 and 6: the Hub catalog (Skill IR, archetypes) and workspace mappings. Every change is
//! validated whole (every problem reported, nothing half-written), stored, then published for what it
//! affects.

use std::collections::{BTreeMap, BTreeSet};

use claresia_anthropic::Deadline;
use claresia_domain::catalog::{check_grants, Archetype, WorkspaceMapping};
use claresia_domain::skill_ir::{check_slug, validate, Problem, SkillIr};
use claresia_domain::{ConnectionState, TenantSlug};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::publish::anthropic_error;
use crate::{ApiError, App};

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn parse_doc(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

/// serde's message names the offending field (`unknown field `skils``); keep it as the problem.
fn typed<T: serde::de::DeserializeOwned>(kind: &'static str, doc: Value) -> Result<T, ApiError> {
    serde_json::from_value(doc).map_err(|e| ApiError::InvalidDocument {
        kind,
        problems: vec![problem("$", e.to_string())],
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingsBody {
    mappings: Vec<WorkspaceMapping>,
}

impl App {
    pub async fn put_skill(
        &self,
        hub: &TenantSlug,
        id: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let doc = parse_doc(body)?;
        let ir = validate(&doc, hub, id).map_err(|problems| ApiError::InvalidDocument {
            kind: "skill",
            problems,
        })?;
        // Sub-tenants publish it under a longer name: that must be valid too.
        let archetypes: BTreeMap<String, Archetype> = self.hub.archetypes(hub).await?;
        let mut problems = Vec::new();
        for a in archetypes
            .values()
            .filter(|a| a.skills.iter().any(|s| s == id))
        {
            if let Some(sub) = &a.sub_tenant {
                for (_, reason) in check_grants(sub, &[id.to_owned()]) {
                    problems.push(problem("$.id", format!("for sub-tenant {sub}: {reason}")));
                }
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::InvalidDocument {
                kind: "skill",
                problems,
            });
        }
        let existed = self.hub.skill(hub, id).await?.is_some();
        self.hub
            .put_skill(hub, id, &serde_json::to_value(&ir).unwrap_or(doc))
            .await?;
        let publish = self
            .publish_after_change(
                hub,
                Some(&BTreeSet::from([id.to_owned()])),
                self.request_deadline(),
            )
            .await?;
        Ok(json!({"skill": ir, "created": !existed, "publish": publish}))
    }

    pub async fn get_skill(&self, hub: &TenantSlug, id: &str) -> Result<Value, ApiError> {
        self.hub
            .skill(hub, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("tenant {hub} has no skill {id}")))
    }

    pub async fn delete_skill(&self, hub: &TenantSlug, id: &str) -> Result<Value, ApiError> {
        if !self.hub.delete_skill(hub, id).await? {
            return Err(ApiError::NotFound(format!(
                "tenant {hub} has no skill {id}"
            )));
        }
        let publish = self
            .publish_after_change(
                hub,
                Some(&BTreeSet::from([id.to_owned()])),
                self.request_deadline(),
            )
            .await?;
        Ok(json!({"deleted": id, "publish": publish}))
    }

    pub async fn list_skills(&self, hub: &TenantSlug) -> Result<Value, ApiError> {
        let skills: BTreeMap<String, Value> = self.hub.skills(hub).await?;
        Ok(json!({"skills": skills.into_values().collect::<Vec<_>>()}))
    }

    /// A sub-tenant may not be the tenant itself, nor a tenant with a connection of its own.
    async fn check_sub_tenant(
        &self,
        hub: &TenantSlug,
        sub: &TenantSlug,
        at: String,
        problems: &mut Vec<Problem>,
    ) -> Result<(), ApiError> {
        if sub == hub {
            problems.push(problem(at, "is the tenant itself; use null for the tenant"));
            return Ok(());
        }
        if self
            .hub
            .connection(sub)
            .await?
            .is_some_and(|r| r.state != ConnectionState::Disconnected)
        {
            problems.push(problem(at, format!("{sub} is a tenant with its own Anthropic connection, not a sub-tenant of {hub}")));
        } else if let Some(parent) = self.hub.parent_of(sub).await? {
            if &parent != hub {
                problems.push(problem(
                    at,
                    format!("{sub} is already a sub-tenant of {parent}"),
                ));
            }
        }
        Ok(())
    }

    pub async fn put_archetype(
        &self,
        hub: &TenantSlug,
        name: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        if let Err(e) = check_slug(name, 40) {
            return Err(ApiError::InvalidDocument {
                kind: "archetype",
                problems: vec![problem("archetype", format!("name {name:?} {e}"))],
            });
        }
        let archetype: Archetype = typed("archetype", parse_doc(body)?)?;
        let skills: BTreeMap<String, SkillIr> = self.hub.skills(hub).await?;
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, s) in archetype.skills.iter().enumerate() {
            if !skills.contains_key(s) {
                problems.push(problem(
                    format!("$.skills[{i}]"),
                    format!("tenant {hub} has no skill {s:?}; PUT it first"),
                ));
            }
            if !seen.insert(s) {
                problems.push(problem(
                    format!("$.skills[{i}]"),
                    format!("{s:?} is listed twice"),
                ));
            }
        }
        for (field, list) in [
            ("group_ids", &archetype.group_ids),
            ("workspace_ids", &archetype.workspace_ids),
        ] {
            for (i, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    problems.push(problem(format!("$.{field}[{i}]"), "must not be empty"));
                }
            }
        }
        if let Some(sub) = &archetype.sub_tenant {
            self.check_sub_tenant(hub, sub, "$.sub_tenant".into(), &mut problems)
                .await?;
            for (id, reason) in check_grants(sub, &archetype.skills) {
                problems.push(problem("$.skills", format!("{id}: {reason}")));
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::InvalidDocument {
                kind: "archetype",
                problems,
            });
        }
        let before: Option<Archetype> = self.hub.archetype(hub, name).await?;
        if let Some(sub) = &archetype.sub_tenant {
            self.hub.set_parent(sub, hub).await?;
        }
        self.hub.put_archetype(hub, name, &archetype).await?;
        let scope: BTreeSet<String> = archetype
            .skills
            .iter()
            .chain(before.iter().flat_map(|b| b.skills.iter()))
            .cloned()
            .collect();
        let publish = self
            .publish_after_change(hub, Some(&scope), self.request_deadline())
            .await?;
        Ok(
            json!({"archetype": name, "definition": archetype, "created": before.is_none(), "publish": publish}),
        )
    }

    pub async fn get_archetype(&self, hub: &TenantSlug, name: &str) -> Result<Value, ApiError> {
        let a: Option<Archetype> = self.hub.archetype(hub, name).await?;
        a.map(|a| json!(a))
            .ok_or_else(|| ApiError::NotFound(format!("tenant {hub} has no archetype {name}")))
    }

    pub async fn delete_archetype(&self, hub: &TenantSlug, name: &str) -> Result<Value, ApiError> {
        let Some(before) = self.hub.delete_archetype::<Archetype>(hub, name).await? else {
            return Err(ApiError::NotFound(format!(
                "tenant {hub} has no archetype {name}"
            )));
        };
        let scope: BTreeSet<String> = before.skills.into_iter().collect();
        let publish = self
            .publish_after_change(hub, Some(&scope), self.request_deadline())
            .await?;
        Ok(json!({"deleted": name, "publish": publish}))
    }

    pub async fn list_archetypes(&self, hub: &TenantSlug) -> Result<Value, ApiError> {
        let all: BTreeMap<String, Archetype> = self.hub.archetypes(hub).await?;
        Ok(json!({"archetypes": all}))
    }

    /// `PUT /tenants/{tenant}/workspaces`: each workspace must exist in the org (checked live) and map to
    /// at most one (sub-)tenant.
    pub async fn put_workspaces(&self, hub: &TenantSlug, body: &[u8]) -> Result<Value, ApiError> {
        let input: MappingsBody = typed("workspaces", parse_doc(body)?)?;
        App::live(self.hub.connection(hub).await?)
            .ok_or_else(|| ApiError::NotConnected(hub.to_string()))?;
        let key = self
            .keys
            .get(hub)
            .await?
            .ok_or_else(|| ApiError::NotConnected(hub.to_string()))?;
        let known = self
            .anthropic
            .workspaces(&key, Deadline::after(self.config.request_budget))
            .await
            .map_err(anthropic_error)?;
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, m) in input.mappings.iter().enumerate() {
            if !known.iter().any(|w| w.id == m.workspace_id) {
                problems.push(problem(
                    format!("$.mappings[{i}].workspace_id"),
                    format!(
                        "{} is not a (non-archived) workspace of the connected organization",
                        m.workspace_id
                    ),
                ));
            }
            if !seen.insert(&m.workspace_id) {
                problems.push(problem(
                    format!("$.mappings[{i}].workspace_id"),
                    format!("{} is mapped more than once", m.workspace_id),
                ));
            }
            if let Some(sub) = &m.sub_tenant {
                self.check_sub_tenant(
                    hub,
                    sub,
                    format!("$.mappings[{i}].sub_tenant"),
                    &mut problems,
                )
                .await?;
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::InvalidDocument {
                kind: "workspaces",
                problems,
            });
        }
        for sub in input.mappings.iter().filter_map(|m| m.sub_tenant.as_ref()) {
            self.hub.set_parent(sub, hub).await?;
        }
        self.hub
            .put_workspace_mappings(hub, &input.mappings)
            .await?;
        let publish = self
            .publish_after_change(hub, None, self.request_deadline())
            .await?;
        Ok(json!({"mappings": input.mappings, "publish": publish}))
    }

    pub async fn get_workspaces(&self, hub: &TenantSlug) -> Result<Value, ApiError> {
        let mappings: Vec<WorkspaceMapping> = self.hub.workspace_mappings(hub).await?;
        Ok(json!({"mappings": mappings}))
    }

    /// `POST /tenants/{tenant}/republish`: a full reconcile, returning the report.
    pub async fn republish(&self, hub: &TenantSlug) -> Result<Value, ApiError> {
        let report = self
            .publish(hub, None, Deadline::after(self.config.request_budget))
            .await?;
        Ok(json!(report))
    }

    /// The sub-tenants of `hub` (from mappings and archetypes) with their workspaces.
    pub async fn sub_tenants(&self, hub: &TenantSlug) -> Result<Vec<Value>, ApiError> {
        let mappings: Vec<WorkspaceMapping> = self.hub.workspace_mappings(hub).await?;
        let archetypes: BTreeMap<String, Archetype> = self.hub.archetypes(hub).await?;
        let mut subs: BTreeMap<TenantSlug, Vec<String>> = BTreeMap::new();
        for a in archetypes.values() {
            if let Some(s) = &a.sub_tenant {
                subs.entry(s.clone()).or_default();
            }
        }
        for m in &mappings {
            if let Some(s) = &m.sub_tenant {
                subs.entry(s.clone())
                    .or_default()
                    .push(m.workspace_id.clone());
            }
        }
        Ok(subs
            .into_iter()
            .map(|(t, ws)| json!({"tenant": t, "workspace_ids": ws}))
            .collect())
    }
}
