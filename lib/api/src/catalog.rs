//! Capabilities 5 and 6: the Hub catalog (Skill IR, archetypes) and workspace mappings. Every change is
//! validated whole (every problem reported, nothing half-written), stored, then published for what it
//! affects.

use std::collections::{BTreeMap, BTreeSet};

use claresia_domain::admin_key::redact_keys;
use claresia_domain::catalog::{check_grants, Archetype, WorkspaceMapping};
use claresia_domain::skill_ir::{check_slug, validate, Problem, SkillIr};
use claresia_domain::TenantSlug;
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

/// A sub-tenant named in an archetype or a mapping must be one `hub` registered and has not removed.
fn check_sub_tenant(
    registered: &BTreeSet<TenantSlug>,
    hub: &TenantSlug,
    sub: &TenantSlug,
    at: String,
    problems: &mut Vec<Problem>,
) {
    if !registered.contains(sub) {
        problems.push(problem(
            at,
            format!("{sub} is not a registered sub-tenant of {hub}; create it first with PUT /tenants/{hub}/sub-tenants/{sub}"),
        ));
    }
}

fn parse_doc(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody(redact_keys(&e.to_string())))
}

/// serde's message names the offending field (`unknown field `skils``); keep it as the problem — with any
/// key pasted into the wrong place redacted, as in every other body error.
fn typed<T: serde::de::DeserializeOwned>(kind: &'static str, doc: Value) -> Result<T, ApiError> {
    serde_json::from_value(doc).map_err(|e| ApiError::InvalidDocument {
        kind,
        problems: vec![problem("$", redact_keys(&e.to_string()))],
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
        let intent = self.begin_change(hub).await?;
        self.hub
            .put_skill(hub, id, &serde_json::to_value(&ir).unwrap_or(doc))
            .await?;
        let publish = self
            .publish_after_change(
                hub,
                Some(&BTreeSet::from([id.to_owned()])),
                self.request_deadline(),
                Some(intent),
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
        if self.hub.skill(hub, id).await?.is_none() {
            return Err(ApiError::NotFound(format!(
                "tenant {hub} has no skill {id}"
            )));
        }
        let intent = self.begin_change(hub).await?;
        self.hub.delete_skill(hub, id).await?;
        let publish = self
            .publish_after_change(
                hub,
                Some(&BTreeSet::from([id.to_owned()])),
                self.request_deadline(),
                Some(intent),
            )
            .await?;
        Ok(json!({"deleted": id, "publish": publish}))
    }

    /// `GET /tenants/{tenant}/skills?limit=&cursor=`: summaries in id order, paginated (a whole document
    /// is up to 100 KiB of instructions: `GET …/skills/{id}` serves it), so a page stays far under Lambda's
    /// 6 MB response whatever the catalog's size.
    pub async fn list_skills(&self, hub: &TenantSlug, query: &str) -> Result<Value, ApiError> {
        let mut limit = 50;
        let mut after = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "limit" => {
                    limit = v
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            ApiError::InvalidQuery(format!(
                                "limit={v:?} must be a whole number from 1 to 100"
                            ))
                        })?
                }
                "cursor" => after = Some(ListCursor::open(&v, hub)?),
                other => {
                    return Err(ApiError::InvalidQuery(format!(
                        "unknown parameter {other:?}; use limit, cursor"
                    )))
                }
            }
        }
        let (docs, next) = self.hub.skills_page(hub, limit, after.as_deref()).await?;
        let summaries: Vec<Value> = docs
            .iter()
            .map(|d| {
                json!({"id": d["id"], "title": d["title"], "owner": d["owner"],
                       "version": d["version"], "tags": d["tags"], "description": d["description"]})
            })
            .collect();
        Ok(json!({
            "skills": summaries,
            "next_cursor": next.map(|id| ListCursor::seal(hub, &id)),
        }))
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
            let registered = self.active_sub_tenants(hub).await?;
            check_sub_tenant(&registered, hub, sub, "$.sub_tenant".into(), &mut problems);
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
        let intent = self.begin_change(hub).await?;
        self.hub.put_archetype(hub, name, &archetype).await?;
        let scope: BTreeSet<String> = archetype
            .skills
            .iter()
            .chain(before.iter().flat_map(|b| b.skills.iter()))
            .cloned()
            .collect();
        let publish = self
            .publish_after_change(hub, Some(&scope), self.request_deadline(), Some(intent))
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
        let Some(before) = self.hub.archetype::<Archetype>(hub, name).await? else {
            return Err(ApiError::NotFound(format!(
                "tenant {hub} has no archetype {name}"
            )));
        };
        let intent = self.begin_change(hub).await?;
        self.hub.delete_archetype::<Archetype>(hub, name).await?;
        let scope: BTreeSet<String> = before.skills.into_iter().collect();
        let publish = self
            .publish_after_change(hub, Some(&scope), self.request_deadline(), Some(intent))
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
            .workspaces(&key, self.request_deadline())
            .await
            .map_err(anthropic_error)?;
        let registered = self.active_sub_tenants(hub).await?;
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
                check_sub_tenant(
                    &registered,
                    hub,
                    sub,
                    format!("$.mappings[{i}].sub_tenant"),
                    &mut problems,
                );
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::InvalidDocument {
                kind: "workspaces",
                problems,
            });
        }
        let intent = self.begin_change(hub).await?;
        self.hub
            .put_workspace_mappings(hub, &input.mappings)
            .await?;
        let publish = self
            .publish_after_change(hub, None, self.request_deadline(), Some(intent))
            .await?;
        Ok(json!({"mappings": input.mappings, "publish": publish}))
    }

    pub async fn get_workspaces(&self, hub: &TenantSlug) -> Result<Value, ApiError> {
        let mappings: Vec<WorkspaceMapping> = self.hub.workspace_mappings(hub).await?;
        Ok(json!({"mappings": mappings}))
    }

    /// `POST /tenants/{tenant}/republish`: a full reconcile, returning the report.
    pub async fn republish(&self, hub: &TenantSlug) -> Result<Value, ApiError> {
        let report = self.publish(hub, None, self.request_deadline()).await?;
        Ok(json!(report))
    }
}

/// A list page's `next_cursor`: the last id of the page, bound to the tenant whose list it is.
#[derive(serde::Serialize, Deserialize)]
struct ListCursor {
    t: String,
    a: String,
}

impl ListCursor {
    fn seal(hub: &TenantSlug, after: &str) -> String {
        use base64::Engine;
        let text = serde_json::to_string(&ListCursor {
            t: hub.to_string(),
            a: after.to_owned(),
        })
        .unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn open(raw: &str, hub: &TenantSlug) -> Result<String, ApiError> {
        use base64::Engine;
        let c: Option<ListCursor> = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match c {
            Some(c) if c.t == hub.as_str() && check_slug(&c.a, 40).is_ok() => Ok(c.a),
            _ => Err(ApiError::InvalidQuery(
                "cursor is not a next_cursor this API returned for this list; start again without it"
                    .into(),
            )),
        }
    }
}
