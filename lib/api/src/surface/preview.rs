//! The `preview` surface (`anthropic-api.md`): organization skills with workspace and group ACLs, owned by
//! their `metadata`.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use claresia_anthropic::{AnthropicClient, AnthropicError, Deadline};
use claresia_aws::LedgerEntry;
use claresia_domain::catalog::{Acl, Action, DesiredSkill, RemoteSkill};
use claresia_domain::connection::Organization;
use claresia_domain::{
    AdminKey, Attestation, ConnectionRecord, Scope, ScopeReport, Surface, TenantSlug, TestOutcome,
    ZeroRetention,
};
use http::Method;
use serde_json::{json, Value};

use super::{
    classify_scope, verdict_from_error, AnthropicSurface, Feed, FeedSource, MappingTarget,
    Ownership, Publisher,
};

/// An id no skill can have: deleting it proves `Skills:write` (404) without changing anything.
const SKILLS_WRITE_PROBE_ID: &str = "skill_claresia_scope_probe_0000000000";

pub struct PreviewSurface {
    pub(super) client: AnthropicClient,
}

impl PreviewSurface {
    pub fn new(client: AnthropicClient) -> Self {
        PreviewSurface { client }
    }
}

#[async_trait]
impl AnthropicSurface for PreviewSurface {
    fn surface(&self) -> Surface {
        Surface::Preview
    }

    /// `/organizations/me`, then one harmless call per required scope. `Err` only for answers that are
    /// neither a verdict nor unavailability (e.g. a 400 from Anthropic).
    async fn test(
        &self,
        key: &AdminKey,
        _attestation: Option<&Attestation>,
        deadline: Deadline,
    ) -> Result<TestOutcome, AnthropicError> {
        let client = &self.client;
        let org = match client.organization(key, deadline).await {
            Ok(org) => org,
            Err(e) => return verdict_from_error(e, Surface::Preview),
        };
        let org_path = format!("/v1/organizations/{}", org.id);
        let skills_path = format!("{org_path}/skills");
        let audit_path = format!("{org_path}/audit_logs");
        let probe_path = format!("{skills_path}/{SKILLS_WRITE_PROBE_ID}");
        let (workspaces, skills_read, audit_read, skills_write) = tokio::join!(
            client.workspaces(key, deadline),
            client.list_page::<Value>(key, &skills_path, &[], None, 1, deadline),
            client.list_page::<Value>(key, &audit_path, &[], None, 1, deadline),
            client.send::<Value>(key, Method::DELETE, &probe_path, &[], None, deadline),
        );
        let mut scopes = ScopeReport::default();
        let mut workspace_count = None;
        let ws_res = workspaces.map(|list| {
            workspace_count = Some(list.len() as u32);
        });
        let fatal = [
            classify_scope(
                &mut scopes,
                Scope::SkillsWrite,
                skills_write.map(|_| ()),
                true,
            ),
            classify_scope(
                &mut scopes,
                Scope::SkillsRead,
                skills_read.map(|_| ()),
                false,
            ),
            classify_scope(&mut scopes, Scope::AuditRead, audit_read.map(|_| ()), false),
            classify_scope(&mut scopes, Scope::WorkspacesRead, ws_res, false),
        ]
        .into_iter()
        .flatten()
        .next();
        if let Some(e) = fatal {
            return verdict_from_error(e, Surface::Preview);
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

    fn publisher<'a>(
        &'a self,
        _hub: &'a TenantSlug,
        record: &'a ConnectionRecord,
        key: &'a AdminKey,
        deadline: Deadline,
    ) -> Box<dyn Publisher + 'a> {
        Box::new(PreviewPublisher {
            client: &self.client,
            key,
            skills_path: format!("/v1/organizations/{}/skills", record.org_id),
            deadline,
        })
    }

    fn feed<'a>(&'a self, source: FeedSource) -> Box<dyn Feed + 'a> {
        Box::new(self.audit_log(source))
    }

    fn mapping(&self) -> MappingTarget {
        MappingTarget {
            field: "workspace_id",
            other: "group_id",
            noun: "(non-archived) workspace",
            pick: |m| (m.workspace_id.as_str(), m.group_id.is_some()),
        }
    }

    /// The org's workspaces (archived ones excluded).
    async fn mapping_targets(
        &self,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<BTreeMap<String, String>, AnthropicError> {
        let list = self.client.workspaces(key, deadline).await?;
        Ok(list.into_iter().map(|w| (w.id, w.name)).collect())
    }
}

struct PreviewPublisher<'a> {
    client: &'a AnthropicClient,
    key: &'a AdminKey,
    skills_path: String,
    deadline: Deadline,
}

#[async_trait]
impl Publisher for PreviewPublisher<'_> {
    async fn list(
        &self,
        _ledger: &BTreeMap<String, LedgerEntry>,
        _access_of: Option<&BTreeSet<String>>,
    ) -> Result<Vec<RemoteSkill>, AnthropicError> {
        let raw: Vec<Value> = self
            .client
            .list_all(self.key, &self.skills_path, &[], 1000, self.deadline)
            .await?;
        Ok(raw.iter().filter_map(remote_skill).collect())
    }

    async fn create(&self, desired: &DesiredSkill) -> Result<String, AnthropicError> {
        let created: Value = self
            .client
            .send(
                self.key,
                Method::POST,
                &self.skills_path,
                &[],
                Some(&desired.skill.to_json()),
                self.deadline,
            )
            .await?;
        match created["id"].as_str() {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(AnthropicError::Decode {
                message: format!("POST {}: the created skill has no id", self.skills_path),
                request_id: None,
            }),
        }
    }

    async fn replace(&self, remote_id: &str, desired: &DesiredSkill) -> Result<(), AnthropicError> {
        let path = format!("{}/{remote_id}", self.skills_path);
        self.client
            .send::<Value>(
                self.key,
                Method::PUT,
                &path,
                &[],
                Some(&desired.skill.to_json()),
                self.deadline,
            )
            .await
            .map(|_| ())
    }

    async fn set_access(
        &self,
        remote_id: &str,
        acl: &Acl,
        fresh: bool,
    ) -> Result<(), AnthropicError> {
        // A new skill starts with an empty ACL: nothing to write.
        if fresh && acl.workspace_ids.is_empty() && acl.group_ids.is_empty() {
            return Ok(());
        }
        let body = json!({"workspace_ids": acl.workspace_ids, "group_ids": acl.group_ids});
        self.client
            .send::<Value>(
                self.key,
                Method::PUT,
                &format!("{}/{remote_id}/acl", self.skills_path),
                &[],
                Some(&body),
                self.deadline,
            )
            .await
            .map(|_| ())
    }

    async fn delete(&self, remote_id: &str) -> Result<(), AnthropicError> {
        let path = format!("{}/{remote_id}", self.skills_path);
        self.client
            .send::<Value>(self.key, Method::DELETE, &path, &[], None, self.deadline)
            .await
            .map(|_| ())
    }

    fn expressible(&self, acl: Acl) -> Acl {
        Acl {
            workspace_ids: acl.workspace_ids,
            group_ids: acl.group_ids,
            ..Acl::default()
        }
        .normalized()
    }

    fn ownership(&self) -> Ownership {
        Ownership::Metadata
    }

    fn writes_per_minute(&self) -> Option<f64> {
        None
    }

    fn writes_of(&self, action: &Action) -> u32 {
        match action {
            Action::Create(_) => 2,
            Action::Update { acl, .. } => 1 + u32::from(acl.is_some()),
            Action::SetAcl { .. } | Action::Delete { .. } => 1,
        }
    }
}

fn remote_skill(v: &Value) -> Option<RemoteSkill> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(RemoteSkill {
        id: v.get("id")?.as_str()?.to_owned(),
        name: v.get("name")?.as_str()?.to_owned(),
        metadata: v
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        acl: Acl {
            workspace_ids: strings(&v["acl"]["workspace_ids"]),
            group_ids: strings(&v["acl"]["group_ids"]),
            ..Default::default()
        },
    })
}
