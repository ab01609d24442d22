//! The Hub catalog's RBAC (archetypes, workspace mappings), the desired published state it implies, and
//! the reconcile plan that turns what Anthropic has into it. All pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::skill_ir::{published_name, SkillIr};
use crate::tenant::TenantSlug;
use crate::transpile::{transpile, ClaudeSkill, MANAGED_BY};

/// A role in the tenant: the skills it is granted and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Archetype {
    pub skills: Vec<String>,
    #[serde(default)]
    pub group_ids: Vec<String>,
    #[serde(default)]
    pub workspace_ids: Vec<String>,
    #[serde(default)]
    pub sub_tenant: Option<TenantSlug>,
    /// Enterprise: how the archetype's groups get its skills (`available`, `auto_install` — the default —
    /// or `required`). Ignored on the preview surface, which has no such notion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_preference: Option<InstallationPreference>,
}

/// A Claude Enterprise plugin installation preference, least permissive first (the order Anthropic
/// applies when a member is in several groups: the most permissive wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallationPreference {
    NotAvailable,
    Available,
    AutoInstall,
    Required,
}

impl InstallationPreference {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationPreference::NotAvailable => "not_available",
            InstallationPreference::Available => "available",
            InstallationPreference::AutoInstall => "auto_install",
            InstallationPreference::Required => "required",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            InstallationPreference::NotAvailable,
            InstallationPreference::Available,
            InstallationPreference::AutoInstall,
            InstallationPreference::Required,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// An Anthropic workspace (preview) or RBAC group (enterprise) mapped to the tenant (`sub_tenant` null)
/// or one of its sub-tenants: it gets every skill of that target, and its usage is routed there. Exactly
/// one of `workspace_id` and `group_id` is set (the API validates it against the connection's surface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMapping {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workspace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default)]
    pub sub_tenant: Option<TenantSlug>,
}

/// Who may use a published skill. `workspace_ids` exist on the preview surface only; `preferences` and
/// `organization` on the enterprise surface only (each surface's adapter drops what it cannot express).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub workspace_ids: Vec<String>,
    pub group_ids: Vec<String>,
    /// Group id → installation preference, where it is not the default `auto_install`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preferences: BTreeMap<String, InstallationPreference>,
    /// The plugin's organization-level setting when it is not `not_available` (someone widened it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

impl Acl {
    /// Sorted and de-duplicated, so equal sets compare equal.
    pub fn normalized(mut self) -> Acl {
        self.workspace_ids.sort();
        self.workspace_ids.dedup();
        self.group_ids.sort();
        self.group_ids.dedup();
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSkill {
    pub skill_id: String,
    pub skill: ClaudeSkill,
    pub acl: Acl,
}

/// What one publishing target (the tenant or a sub-tenant) should have in Anthropic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetState {
    /// Keyed by published name.
    pub skills: BTreeMap<String, DesiredSkill>,
    /// Skills that cannot be published for this target, with the reason.
    pub problems: Vec<(String, String)>,
}

/// The desired state of every target: a skill is published iff some archetype of that target grants it;
/// its ACL is the union of the granting archetypes' groups and workspaces and the target's mapped workspaces.
pub fn desired_state(
    hub_tenant: &TenantSlug,
    archetypes: &BTreeMap<String, Archetype>,
    skills: &BTreeMap<String, SkillIr>,
    mappings: &[WorkspaceMapping],
) -> BTreeMap<TenantSlug, TargetState> {
    let target_of = |sub: &Option<TenantSlug>| sub.clone().unwrap_or_else(|| hub_tenant.clone());
    let grants = grants_by_target(hub_tenant, archetypes, mappings);
    let mut out = BTreeMap::new();
    for (target, granted) in grants {
        let of_target = || {
            mappings
                .iter()
                .filter(|m| target_of(&m.sub_tenant) == target)
        };
        let mapped: Vec<String> = of_target()
            .filter(|m| !m.workspace_id.is_empty())
            .map(|m| m.workspace_id.clone())
            .collect();
        let mapped_groups: Vec<String> = of_target().filter_map(|m| m.group_id.clone()).collect();
        let mut state = TargetState::default();
        for (skill_id, mut acl) in granted {
            // A grant of a skill deleted since simply publishes nothing.
            let Some(ir) = skills.get(&skill_id) else {
                continue;
            };
            match transpile(ir, &target, hub_tenant) {
                Ok(skill) => {
                    acl.workspace_ids.extend(mapped.iter().cloned());
                    acl.group_ids.extend(mapped_groups.iter().cloned());
                    state.skills.insert(
                        skill.name.clone(),
                        DesiredSkill {
                            skill_id: skill_id.clone(),
                            skill,
                            acl: acl.normalized(),
                        },
                    );
                }
                Err(reason) => state.problems.push((skill_id, reason)),
            }
        }
        out.insert(target, state);
    }
    settle_name_clashes(&mut out);
    out
}

/// Each target's granted skills with their ACLs (groups, workspaces, the most permissive preference per
/// group); every target a mapping or archetype names is present, the hub always.
fn grants_by_target(
    hub_tenant: &TenantSlug,
    archetypes: &BTreeMap<String, Archetype>,
    mappings: &[WorkspaceMapping],
) -> BTreeMap<TenantSlug, BTreeMap<String, Acl>> {
    let target_of = |sub: &Option<TenantSlug>| sub.clone().unwrap_or_else(|| hub_tenant.clone());
    let mut grants: BTreeMap<TenantSlug, BTreeMap<String, Acl>> = BTreeMap::new();
    grants.insert(hub_tenant.clone(), BTreeMap::new());
    for m in mappings {
        grants.entry(target_of(&m.sub_tenant)).or_default();
    }
    for a in archetypes.values() {
        let per_target = grants.entry(target_of(&a.sub_tenant)).or_default();
        for s in &a.skills {
            let acl = per_target.entry(s.clone()).or_default();
            acl.group_ids.extend(a.group_ids.iter().cloned());
            acl.workspace_ids.extend(a.workspace_ids.iter().cloned());
            if let Some(p) = a.installation_preference {
                // Two archetypes granting one group: the most permissive preference wins.
                for g in &a.group_ids {
                    let slot = acl.preferences.entry(g.clone()).or_insert(p);
                    *slot = (*slot).max(p);
                }
            }
        }
    }
    grants
}

/// Two targets never publish one name: where stored grants clash (the API refuses new clashes), the
/// first target in slug order keeps it and the other reports why it did not publish.
fn settle_name_clashes(out: &mut BTreeMap<TenantSlug, TargetState>) {
    let mut owner: BTreeMap<String, TenantSlug> = BTreeMap::new();
    for (target, state) in out.iter_mut() {
        let names: Vec<String> = state.skills.keys().cloned().collect();
        for name in names {
            match owner.get(&name) {
                Some(first) => {
                    if let Some(lost) = state.skills.remove(&name) {
                        state.problems.push((
                            lost.skill_id,
                            format!("its published name {name} is already {first}'s; rename one of the two skills"),
                        ));
                    }
                }
                None => {
                    owner.insert(name, target.clone());
                }
            }
        }
    }
}

/// Two grants of one Hub that would publish under one name: the tenant `acme`'s skill `eng-standup` and
/// sub-tenant `acme-eng`'s skill `standup` are both `claresia-acme-eng-standup`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameClash {
    pub name: String,
    /// (target, skill id), the first in slug order.
    pub first: (TenantSlug, String),
    pub second: (TenantSlug, String),
}

impl std::fmt::Display for NameClash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "skill {} of {} and skill {} of {} would both publish as {}",
            self.first.1, self.first.0, self.second.1, self.second.0, self.name
        )
    }
}

/// Every published name two (target, skill) grants of `hub`'s archetypes would share.
pub fn name_clashes(
    hub: &TenantSlug,
    archetypes: &BTreeMap<String, Archetype>,
) -> BTreeSet<NameClash> {
    let mut by_name: BTreeMap<String, BTreeSet<(TenantSlug, String)>> = BTreeMap::new();
    for a in archetypes.values() {
        let target = a.sub_tenant.clone().unwrap_or_else(|| hub.clone());
        for skill in &a.skills {
            by_name
                .entry(format!("claresia-{target}-{skill}"))
                .or_default()
                .insert((target.clone(), skill.clone()));
        }
    }
    let mut clashes = BTreeSet::new();
    for (name, grants) in by_name {
        let mut it = grants.into_iter();
        if let Some(first) = it.next() {
            for second in it {
                clashes.insert(NameClash {
                    name: name.clone(),
                    first: first.clone(),
                    second,
                });
            }
        }
    }
    clashes
}

/// A skill as Anthropic lists it (only what reconciling needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSkill {
    pub id: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub acl: Acl,
}

impl RemoteSkill {
    /// Ours for `target`: managed by Claresia, for exactly this (sub-)tenant, under its name prefix. The
    /// prefix alone is ambiguous (`claresia-dainese-` also starts `claresia-dainese-eng-…`).
    pub fn owned_by(&self, target: &TenantSlug) -> bool {
        self.metadata.get("managed_by").map(String::as_str) == Some(MANAGED_BY)
            && self.metadata.get("tenant").map(String::as_str) == Some(target.as_str())
            && self.name.starts_with(&format!("claresia-{target}-"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create, then set the ACL when it is not empty.
    Create(DesiredSkill),
    /// Replace the definition; `acl` when the ACL changes too.
    Update {
        remote_id: String,
        desired: DesiredSkill,
        acl: Option<Acl>,
    },
    SetAcl {
        remote_id: String,
        skill_id: String,
        name: String,
        acl: Acl,
    },
    Delete {
        remote_id: String,
        skill_id: String,
        name: String,
    },
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Create(d) | Action::Update { desired: d, .. } => &d.skill.name,
            Action::SetAcl { name, .. } | Action::Delete { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub unchanged: Vec<String>,
    /// Desired names held by a skill Claresia does not own: never touched, reported as failures.
    pub conflicts: Vec<(String, String)>,
}

/// The plan that makes `target`'s skills in Anthropic match `desired`. `scope` limits it to some skill ids
/// (a catalog change affects only those); `None` is a full reconcile.
pub fn plan(
    target: &TenantSlug,
    desired: &TargetState,
    remote: &[RemoteSkill],
    scope: Option<&BTreeSet<String>>,
) -> Plan {
    let in_scope = |skill_id: &str| scope.is_none_or(|s| s.contains(skill_id));
    let owned: BTreeMap<&str, &RemoteSkill> = remote
        .iter()
        .filter(|r| r.owned_by(target))
        .map(|r| (r.name.as_str(), r))
        .collect();
    let mut plan = Plan::default();
    for (name, want) in &desired.skills {
        if !in_scope(&want.skill_id) {
            continue;
        }
        match owned.get(name.as_str()) {
            None => {
                if remote.iter().any(|r| &r.name == name) {
                    plan.conflicts.push((
                        want.skill_id.clone(),
                        format!("the name {name} is taken by a skill Claresia does not manage; rename or remove that skill in Anthropic"),
                    ));
                } else {
                    plan.actions.push(Action::Create(want.clone()));
                }
            }
            Some(have) => {
                let acl_changed = have.acl.clone().normalized() != want.acl;
                let content_changed = have.metadata.get("content_hash").map(String::as_str)
                    != Some(want.skill.content_hash());
                match (content_changed, acl_changed) {
                    (true, _) => plan.actions.push(Action::Update {
                        remote_id: have.id.clone(),
                        desired: want.clone(),
                        acl: acl_changed.then(|| want.acl.clone()),
                    }),
                    (false, true) => plan.actions.push(Action::SetAcl {
                        remote_id: have.id.clone(),
                        skill_id: want.skill_id.clone(),
                        name: name.clone(),
                        acl: want.acl.clone(),
                    }),
                    (false, false) => plan.unchanged.push(name.clone()),
                }
            }
        }
    }
    for (name, have) in owned {
        let skill_id = have.metadata.get("skill_id").cloned().unwrap_or_else(|| {
            name.trim_start_matches(&format!("claresia-{target}-"))
                .to_owned()
        });
        if !desired.skills.contains_key(name) && in_scope(&skill_id) {
            plan.actions.push(Action::Delete {
                remote_id: have.id.clone(),
                skill_id,
                name: name.to_owned(),
            });
        }
    }
    plan
}

/// Whether a (sub-)tenant can publish every skill of an archetype under its own name prefix.
pub fn check_grants(target: &TenantSlug, skill_ids: &[String]) -> Vec<(String, String)> {
    skill_ids
        .iter()
        .filter_map(|id| published_name(target, id).err().map(|e| (id.clone(), e)))
        .collect()
}
