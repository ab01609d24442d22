//! Capabilities 5 and 6: the Hub catalog (Skill IR, archetypes) and workspace mappings. Every change is
//! validated whole (every problem reported, nothing half-written), stored, then published for what it
//! affects.

use std::collections::{BTreeMap, BTreeSet};

use claresia_anthropic::Deadline;
use claresia_aws::CatalogDoc;
use claresia_domain::admin_key::redact_keys;
use claresia_domain::catalog::{
    check_grants, name_clashes, Archetype, InstallationPreference, WorkspaceMapping,
};
use claresia_domain::skill_ir::{check_slug, validate, Problem, SkillIr};
use claresia_domain::TenantSlug;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::Reply;
use crate::paging;
use crate::precondition::{changed_meanwhile, Precondition};
use crate::publish::anthropic_error;
use crate::surface::MappingTarget;
use crate::{ApiError, App};

/// What absent workspace mappings read as (`GET` answers an empty list, with this text's ETag).
const NO_MAPPINGS: &str = "[]";

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

/// What a tenant's workspace mappings are checked against: what they name on its surface, what the
/// org has, and the registered sub-tenants.
struct MappingCheck<'a> {
    hub: &'a TenantSlug,
    target: MappingTarget,
    surface: &'a str,
    known: &'a BTreeMap<String, String>,
    registered: &'a BTreeSet<TenantSlug>,
}

impl MappingCheck<'_> {
    /// A stray field of the other surface, a target the org does not have, one mapped twice, a
    /// sub-tenant that is not registered.
    fn problems(&self, mappings: &[WorkspaceMapping]) -> Vec<Problem> {
        let MappingTarget {
            field,
            other,
            noun,
            pick,
        } = self.target;
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, m) in mappings.iter().enumerate() {
            let (id, stray) = pick(m);
            if stray {
                problems.push(problem(
                    format!("$.mappings[{i}].{other}"),
                    format!(
                        "this tenant's connection uses the {} surface, where mappings name {field}",
                        self.surface
                    ),
                ));
            }
            if !self.known.contains_key(id) {
                problems.push(problem(
                    format!("$.mappings[{i}].{field}"),
                    format!("{id:?} is not a {noun} of the connected organization"),
                ));
            }
            if !seen.insert(id) {
                problems.push(problem(
                    format!("$.mappings[{i}].{field}"),
                    format!("{id} is mapped more than once"),
                ));
            }
            if let Some(sub) = &m.sub_tenant {
                let at = format!("$.mappings[{i}].sub_tenant");
                check_sub_tenant(self.registered, self.hub, sub, at, &mut problems);
            }
        }
        problems
    }
}

impl App {
    pub async fn put_skill(
        &self,
        hub: &TenantSlug,
        id: &str,
        body: &[u8],
        pre: &Precondition,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
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
        let what = format!("skill {id}");
        let current = self.hub.catalog_text(hub, CatalogDoc::Skill(id)).await?;
        let expect = pre.resolve(&what, current.as_deref(), None)?;
        let intent = self.begin_change(hub).await?;
        let value = serde_json::to_value(&ir).unwrap_or(doc);
        let Some(written) = self.hub.put_skill(hub, id, &value, &expect).await? else {
            self.abandon_change(hub, intent).await?;
            return Err(changed_meanwhile(&what));
        };
        let publish = self
            .publish_after_change(
                hub,
                Some(&BTreeSet::from([id.to_owned()])),
                deadline,
                Some(intent),
            )
            .await?;
        // What the write replaced, not what was read before it: of two racing creates, one created.
        let created = written.previous.is_none();
        Ok(
            Reply::json(json!({"skill": ir, "created": created, "publish": publish}))
                .created(created, format!("/tenants/{hub}/skills/{id}"))
                .etag(&written.stored),
        )
    }

    pub async fn get_skill(&self, hub: &TenantSlug, id: &str) -> Result<Reply, ApiError> {
        let text = self
            .hub
            .catalog_text(hub, CatalogDoc::Skill(id))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("tenant {hub} has no skill {id}")))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| ApiError::Store(claresia_aws::StoreError::Corrupt(e.to_string())))?;
        Ok(Reply::json(doc).etag(&text))
    }

    pub async fn delete_skill(
        &self,
        hub: &TenantSlug,
        id: &str,
        pre: &Precondition,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        let what = format!("skill {id}");
        let Some(current) = self.hub.catalog_text(hub, CatalogDoc::Skill(id)).await? else {
            return Err(ApiError::NotFound(format!(
                "tenant {hub} has no skill {id}"
            )));
        };
        let expect = pre.resolve(&what, Some(&current), None)?;
        let intent = self.begin_change(hub).await?;
        if self.hub.delete_skill(hub, id, &expect).await?.is_none() {
            self.abandon_change(hub, intent).await?;
            return Err(changed_meanwhile(&what));
        }
        let publish = self
            .publish_after_change(
                hub,
                Some(&BTreeSet::from([id.to_owned()])),
                deadline,
                Some(intent),
            )
            .await?;
        Ok(Reply::json(json!({"deleted": id, "publish": publish})))
    }

    /// `GET /tenants/{tenant}/skills?limit=&cursor=`: summaries in id order, paginated (a whole document
    /// is up to 100 KiB of instructions: `GET …/skills/{id}` serves it), so a page stays far under Lambda's
    /// 6 MB response whatever the catalog's size.
    pub async fn list_skills(&self, hub: &TenantSlug, query: &str) -> Result<Value, ApiError> {
        let page = paging::page(query, hub, "skills", 100)?;
        let (docs, next) = self
            .hub
            .skills_page(hub, page.limit, page.after.as_deref())
            .await?;
        let summaries: Vec<(String, Value)> = docs
            .iter()
            .map(|d| {
                let id = d["id"].as_str().unwrap_or_default().to_owned();
                let summary = json!({"id": d["id"], "title": d["title"], "owner": d["owner"],
                       "version": d["version"], "tags": d["tags"], "description": d["description"]});
                (id, summary)
            })
            .collect();
        let (summaries, next) = paging::fit(summaries, next, paging::MAX_PAGE_BYTES);
        Ok(json!({
            "skills": summaries,
            "next_cursor": paging::next_cursor(hub, "skills", next),
        }))
    }

    /// What is wrong with an archetype as `hub`'s catalog and connection stand: unknown or repeated
    /// skills, empty ids, a preference that hides the skills, what the surface cannot grant, a sub-tenant
    /// that is not registered or a grant it cannot hold.
    async fn archetype_problems(
        &self,
        hub: &TenantSlug,
        archetype: &Archetype,
    ) -> Result<Vec<Problem>, ApiError> {
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
        if archetype.installation_preference == Some(InstallationPreference::NotAvailable) {
            problems.push(problem(
                "$.installation_preference",
                "not_available would hide the skills from the groups granted them; use available, auto_install or required",
            ));
        }
        if let Some(record) = App::live(self.hub.connection(hub).await?) {
            let surface = self.surfaces.get(record.surface);
            for (path, reason) in surface.archetype_problems(archetype) {
                problems.push(problem(path, reason));
            }
        }
        if let Some(sub) = &archetype.sub_tenant {
            let registered = self.active_sub_tenants(hub).await?;
            check_sub_tenant(&registered, hub, sub, "$.sub_tenant".into(), &mut problems);
            for (id, reason) in check_grants(sub, &archetype.skills) {
                problems.push(problem("$.skills", format!("{id}: {reason}")));
            }
        }
        Ok(problems)
    }

    pub async fn put_archetype(
        &self,
        hub: &TenantSlug,
        name: &str,
        body: &[u8],
        pre: &Precondition,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        if let Err(e) = check_slug(name, 40) {
            return Err(ApiError::InvalidDocument {
                kind: "archetype",
                problems: vec![problem("archetype", format!("name {name:?} {e}"))],
            });
        }
        let archetype: Archetype = typed("archetype", parse_doc(body)?)?;
        let problems = self.archetype_problems(hub, &archetype).await?;
        if !problems.is_empty() {
            return Err(ApiError::InvalidDocument {
                kind: "archetype",
                problems,
            });
        }
        self.check_published_names(hub, name, &archetype).await?;
        let what = format!("archetype {name}");
        let current = self
            .hub
            .catalog_text(hub, CatalogDoc::Archetype(name))
            .await?;
        let expect = pre.resolve(&what, current.as_deref(), None)?;
        let intent = self.begin_change(hub).await?;
        let Some(written) = self
            .hub
            .put_archetype(hub, name, &archetype, &expect)
            .await?
        else {
            self.abandon_change(hub, intent).await?;
            return Err(changed_meanwhile(&what));
        };
        // What the write replaced (not what was read before it): its skills are in scope too. One that
        // cannot be read any more is replaced all the same, and the whole catalog is published.
        let before = written
            .previous
            .as_deref()
            .map(serde_json::from_str::<Archetype>);
        let scope: Option<BTreeSet<String>> = match &before {
            Some(Err(_)) => None,
            Some(Ok(b)) => Some(archetype.skills.iter().chain(&b.skills).cloned().collect()),
            None => Some(archetype.skills.iter().cloned().collect()),
        };
        let publish = self
            .publish_after_change(hub, scope.as_ref(), deadline, Some(intent))
            .await?;
        let created = before.is_none();
        Ok(Reply::json(
            json!({"archetype": name, "definition": archetype, "created": created, "publish": publish}),
        )
        .created(created, format!("/tenants/{hub}/archetypes/{name}"))
        .etag(&written.stored))
    }

    /// Two targets of one Hub never publish under one name: a grant that would share a name with another
    /// target's skill is refused (409, naming both), before anything is written.
    async fn check_published_names(
        &self,
        hub: &TenantSlug,
        name: &str,
        archetype: &Archetype,
    ) -> Result<(), ApiError> {
        let mut all: BTreeMap<String, Archetype> = self.hub.archetypes(hub).await?;
        let before = name_clashes(hub, &all);
        all.insert(name.to_owned(), archetype.clone());
        let new: Vec<String> = name_clashes(hub, &all)
            .difference(&before)
            .map(|c| c.to_string())
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        Err(ApiError::PublishedNameConflict(format!(
            "archetype {name} would publish two skills under one name: {}; rename one of the skills",
            new.join("; ")
        )))
    }

    pub(crate) async fn get_archetype(
        &self,
        hub: &TenantSlug,
        name: &str,
    ) -> Result<Reply, ApiError> {
        let text = self
            .hub
            .catalog_text(hub, CatalogDoc::Archetype(name))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("tenant {hub} has no archetype {name}")))?;
        let a: Archetype = serde_json::from_str(&text)
            .map_err(|e| ApiError::Store(claresia_aws::StoreError::Corrupt(e.to_string())))?;
        Ok(Reply::json(json!(a)).etag(&text))
    }

    pub async fn delete_archetype(
        &self,
        hub: &TenantSlug,
        name: &str,
        pre: &Precondition,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        let what = format!("archetype {name}");
        let Some(current) = self
            .hub
            .catalog_text(hub, CatalogDoc::Archetype(name))
            .await?
        else {
            return Err(ApiError::NotFound(format!(
                "tenant {hub} has no archetype {name}"
            )));
        };
        let expect = pre.resolve(&what, Some(&current), None)?;
        let intent = self.begin_change(hub).await?;
        let before = match self
            .hub
            .delete_archetype::<Archetype>(hub, name, &expect)
            .await?
        {
            Some(before) => before,
            None => {
                self.abandon_change(hub, intent).await?;
                return Err(changed_meanwhile(&what));
            }
        };
        let scope: BTreeSet<String> = before.into_iter().flat_map(|b| b.skills).collect();
        let publish = self
            .publish_after_change(hub, Some(&scope), deadline, Some(intent))
            .await?;
        Ok(Reply::json(json!({"deleted": name, "publish": publish})))
    }

    /// `GET /tenants/{tenant}/archetypes?limit=&cursor=`: in name order, paginated.
    pub(crate) async fn list_archetypes(
        &self,
        hub: &TenantSlug,
        query: &str,
    ) -> Result<Value, ApiError> {
        let page = paging::page(query, hub, "archetypes", 100)?;
        let (archetypes, next) = self
            .hub
            .archetypes_page::<Archetype>(hub, page.limit, page.after.as_deref())
            .await?;
        let items: Vec<(String, Value)> = archetypes
            .into_iter()
            .map(|(name, a)| (name.clone(), json!({"name": name, "definition": a})))
            .collect();
        let (items, next) = paging::fit(items, next, paging::MAX_PAGE_BYTES);
        Ok(json!({
            "archetypes": items,
            "next_cursor": paging::next_cursor(hub, "archetypes", next),
        }))
    }

    /// `PUT /tenants/{tenant}/workspaces`: each workspace must exist in the org (checked live) and map to
    /// at most one (sub-)tenant.
    pub(crate) async fn put_workspaces(
        &self,
        hub: &TenantSlug,
        body: &[u8],
        pre: &Precondition,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        let input: MappingsBody = typed("workspaces", parse_doc(body)?)?;
        // The precondition first: a stale edit is refused before anything, Anthropic included, is asked.
        let what = format!("the workspace mappings of {hub}");
        let current = self.hub.catalog_text(hub, CatalogDoc::Workspaces).await?;
        let expect = pre.resolve(&what, current.as_deref(), Some(NO_MAPPINGS))?;
        let record = App::live(self.hub.connection(hub).await?)
            .ok_or_else(|| ApiError::NotConnected(hub.to_string()))?;
        let key = self
            .keys
            .get(hub)
            .await?
            .ok_or_else(|| ApiError::NotConnected(hub.to_string()))?;
        // What a mapping names: workspaces on preview, RBAC groups on enterprise.
        let surface = self.surfaces.get(record.surface);
        let known = surface
            .mapping_targets(&key, deadline)
            .await
            .map_err(anthropic_error)?;
        let registered = self.active_sub_tenants(hub).await?;
        let in_org = MappingCheck {
            hub,
            target: surface.mapping(),
            surface: record.surface.as_str(),
            known: &known,
            registered: &registered,
        };
        let problems = in_org.problems(&input.mappings);
        if !problems.is_empty() {
            return Err(ApiError::InvalidDocument {
                kind: "workspaces",
                problems,
            });
        }
        let intent = self.begin_change(hub).await?;
        let Some(stored) = self
            .hub
            .put_workspace_mappings(hub, &input.mappings, &expect)
            .await?
        else {
            self.abandon_change(hub, intent).await?;
            return Err(changed_meanwhile(&what));
        };
        let publish = self
            .publish_after_change(hub, None, deadline, Some(intent))
            .await?;
        Ok(Reply::json(json!({"mappings": input.mappings, "publish": publish})).etag(&stored))
    }

    pub(crate) async fn get_workspaces(&self, hub: &TenantSlug) -> Result<Reply, ApiError> {
        let text = self.hub.catalog_text(hub, CatalogDoc::Workspaces).await?;
        let text = text.as_deref().unwrap_or(NO_MAPPINGS);
        let mappings: Vec<WorkspaceMapping> = serde_json::from_str(text)
            .map_err(|e| ApiError::Store(claresia_aws::StoreError::Corrupt(e.to_string())))?;
        Ok(Reply::json(json!({"mappings": mappings})).etag(text))
    }

    /// `POST /tenants/{tenant}/republish`: a full reconcile, returning the report.
    /// Everything is checked, recorded settings included: they are read again by this publish and, where
    /// its time runs out, by the sweep (the mark outlives the request).
    pub async fn republish(&self, hub: &TenantSlug, deadline: Deadline) -> Result<Value, ApiError> {
        if let Some(reason) = crate::publish::refusal(self.hub.connection(hub).await?.as_ref()) {
            return Err(ApiError::PublishRefused(reason));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.hub
            .mark_drift(hub, claresia_aws::catalog::ALL_PLUGINS, now)
            .await?;
        let report = self.publish(hub, None, deadline).await?;
        Ok(json!(report))
    }
}
