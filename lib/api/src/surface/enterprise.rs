//! The `enterprise` surface (`claude-enterprise-api.md`): one plugin per skill through the Plugins API
//! (beta), made available per RBAC group by installation settings, owned by our ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use claresia_anthropic::{
    AnthropicClient, AnthropicError, Body, Call, Deadline, ErrorKind, Pacer, Page,
};
use claresia_aws::LedgerEntry;
use claresia_domain::catalog::{
    Acl, Action, Archetype, DesiredSkill, InstallationPreference, RemoteSkill,
};
use claresia_domain::connection::Organization;
use claresia_domain::enterprise_feed::LIFECYCLE_TYPES;
use claresia_domain::transpile::MANAGED_BY;
use claresia_domain::{
    AdminKey, Attestation, ConnectionRecord, Scope, ScopeReport, Surface, TenantSlug, TestOutcome,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use http::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::{
    classify_scope, verdict_from_error, AnthropicSurface, EnterpriseLimits, Feed, FeedAt,
    FeedSource, MappingTarget, Ownership, Publisher,
};

pub const PLUGINS_BETA: &str = "ce-plugins-2026-09-01";
const PLUGINS: &str = "/v1/organizations/plugins";
const GROUPS: &str = "/v1/organizations/rbac_groups";
pub const ANALYTICS_SKILLS: &str = "/v1/organizations/analytics/skills";
pub const ACTIVITIES: &str = "/v1/compliance/activities";
/// `filter[]` values one Analytics request may carry (the documented maximum).
pub const USAGE_NAMES_PER_REQUEST: usize = 100;
/// A plugin id that cannot exist: setting its organization preference proves `write:plugins` (404)
/// without changing anything.
const WRITE_PROBE_PLUGIN: &str = "plugin_claresiascopeprobe00000000000000";
/// A plugin created this long before its claim is not ours (clock skew between us and Anthropic).
const CLAIM_SKEW_SECONDS: i64 = 60;
/// Concurrent reads of installation settings while listing (the read pacer spaces them anyway).
const READ_CONCURRENCY: usize = 4;
/// Longest a create may take (or the client's attempt timeout, or a quarter of the run's time, if
/// shorter): it starts only if its organization-level `not_available` write still fits after this, so a
/// plugin is never left open to the whole org by a deadline.
const CREATE_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(5);
/// What the `not_available` write after a create is given at least (or the attempt timeout, if shorter).
const HIDE_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);
/// Metadata of a listed plugin of ours: its organization-level exposure (from the listing), when wider
/// than `not_available`.
pub const EXPOSURE: &str = "organization_exposure";
/// Metadata of a listed plugin of ours whose settings were read by this listing: when (unix seconds).
pub const ACCESS_READ_AT: &str = "access_read_at";
/// Metadata of a listed plugin of ours whose served version an admin pinned (irreversible): the version
/// members get, by its manifest version.
pub const PINNED: &str = "pinned_served_version";
/// Metadata of a listed plugin of ours whose settings are neither known nor read: the time left did not
/// cover reading them (they are read by the next run, so a large listing resumes across ticks).
pub const ACCESS_UNKNOWN: &str = "access_unknown";
/// Settings are not read with less time left than this (or a third of the run's time, if less): what
/// remains is for the writes.
const READ_FLOOR: std::time::Duration = std::time::Duration::from_secs(5);

/// One org's pacers. Keyed by the key's fingerprint: an Enterprise key acts on exactly one org.
pub struct OrgPacers {
    pub writes: Pacer,
    pub reads: Pacer,
    pub compliance: Pacer,
    pub analytics: Pacer,
}

pub struct EnterpriseSurface {
    pub client: AnthropicClient,
    pub limits: EnterpriseLimits,
    pacers: Mutex<HashMap<String, Arc<OrgPacers>>>,
}

impl EnterpriseSurface {
    pub fn new(client: AnthropicClient, limits: EnterpriseLimits) -> Self {
        EnterpriseSurface {
            client,
            limits,
            pacers: Mutex::new(HashMap::new()),
        }
    }

    /// The pacers of `key`'s org, shared by every request this sandbox sends for it.
    pub(crate) fn pacers(&self, key: &AdminKey) -> Arc<OrgPacers> {
        let mut map = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.fingerprint().to_string())
            .or_insert_with(|| {
                Arc::new(OrgPacers {
                    writes: Pacer::per_minute(self.limits.writes_per_minute),
                    reads: Pacer::per_minute(self.limits.reads_per_minute),
                    compliance: Pacer::per_minute(self.limits.compliance_per_minute),
                    analytics: Pacer::per_minute(self.limits.analytics_per_minute),
                })
            })
            .clone()
    }

    /// One page of the Compliance Activity Feed's lifecycle types, newest first, at `at`: the newest page
    /// ([`FeedAt::Start`]), the page just newer than the cursor (`before_id`), or the window's page after
    /// `from` (`created_at.gte`, `after_id`).
    pub(super) async fn activities(
        &self,
        key: &AdminKey,
        at: FeedAt<'_>,
        limit: u32,
        deadline: Deadline,
    ) -> Result<Page<Value>, AnthropicError> {
        let pacers = self.pacers(key);
        let mut query: Vec<(&str, String)> = LIFECYCLE_TYPES
            .iter()
            .map(|t| ("activity_types[]", (*t).to_owned()))
            .collect();
        query.push(("limit", limit.to_string()));
        match at {
            FeedAt::Start => {}
            FeedAt::After(id) => query.push(("before_id", id.to_owned())),
            FeedAt::Window {
                since,
                from: older_than,
            } => {
                let since = since
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| AnthropicError::Config(e.to_string()))?;
                query.push(("created_at.gte", since));
                if let Some(id) = older_than {
                    query.push(("after_id", id.to_owned()));
                }
            }
        }
        self.client
            .call(
                key,
                Call::get(ACTIVITIES, &query).paced(&pacers.compliance),
                deadline,
            )
            .await
    }

    /// Whether `key` reaches the plugin (`false`: 404, it belongs to another org or is gone).
    pub(crate) async fn reaches_plugin(
        &self,
        key: &AdminKey,
        plugin_id: &str,
        deadline: Deadline,
    ) -> Result<bool, AnthropicError> {
        let pacers = self.pacers(key);
        let path = format!("{PLUGINS}/{plugin_id}");
        let call = Call::get(&path, &[])
            .beta(PLUGINS_BETA)
            .paced(&pacers.reads);
        match self.client.call::<Value>(key, call, deadline).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One page of a day's Analytics skills rows for `skill_names` (at most [`USAGE_NAMES_PER_REQUEST`]),
    /// grouped by RBAC group: an org's other skills are never read.
    pub(super) async fn skill_usage_page(
        &self,
        key: &AdminKey,
        date: &str,
        skill_names: &[&str],
        page: Option<&str>,
        deadline: Deadline,
    ) -> Result<claresia_anthropic::TokenPage<Value>, AnthropicError> {
        let pacers = self.pacers(key);
        let mut query = vec![
            ("date", date.to_owned()),
            ("group_by[]", "rbac_group_id".to_owned()),
            ("limit", "1000".to_owned()),
        ];
        query.extend(
            skill_names
                .iter()
                .take(USAGE_NAMES_PER_REQUEST)
                .map(|n| ("filter[]", format!("skill_name:{n}"))),
        );
        if let Some(p) = page {
            query.push(("page", p.to_owned()));
        }
        self.client
            .call(
                key,
                Call::get(ANALYTICS_SKILLS, &query).paced(&pacers.analytics),
                deadline,
            )
            .await
    }

    /// Every RBAC group of the org: id → name.
    pub async fn groups(
        &self,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<BTreeMap<String, String>, AnthropicError> {
        let pacers = self.pacers(key);
        let query = [("limit", "1000".to_owned())];
        let all: Vec<Value> = self
            .client
            .list_all_pages(
                key,
                Call::get(GROUPS, &query).paced(&pacers.reads),
                deadline,
            )
            .await?;
        Ok(all
            .iter()
            .filter_map(|g| {
                Some((
                    g["id"].as_str()?.to_owned(),
                    g["name"].as_str().unwrap_or_default().to_owned(),
                ))
            })
            .collect())
    }
}

#[async_trait]
impl AnthropicSurface for EnterpriseSurface {
    fn surface(&self) -> Surface {
        Surface::Enterprise
    }

    /// The org name where `/organizations/me` answers (UNCONFIRMED for these keys), then each of the five
    /// scopes by the cheapest call that needs only it, and the RBAC group count.
    async fn test(
        &self,
        key: &AdminKey,
        attestation: Option<&Attestation>,
        deadline: Deadline,
    ) -> Result<TestOutcome, AnthropicError> {
        let c = &self.client;
        let pacers = self.pacers(key);
        let one = [("limit", "1".to_owned())];
        let yesterday = (OffsetDateTime::now_utc().date() - time::Duration::days(1)).to_string();
        let analytics_q = [("date", yesterday), ("limit", "1".to_owned())];
        let probe_path =
            format!("{PLUGINS}/{WRITE_PROBE_PLUGIN}/installation_settings/organization");
        let probe_body = json!({"installation_preference": "not_available"});
        let (me, plugins_read, plugins_write, analytics, compliance, groups) = tokio::join!(
            c.organization(key, deadline),
            c.call::<Value>(
                key,
                Call::get(PLUGINS, &one)
                    .beta(PLUGINS_BETA)
                    .paced(&pacers.reads),
                deadline
            ),
            c.call::<Value>(
                key,
                Call::new(Method::POST, &probe_path, Body::Json(&probe_body))
                    .beta(PLUGINS_BETA)
                    .paced(&pacers.writes),
                deadline
            ),
            c.call::<Value>(
                key,
                Call::get(ANALYTICS_SKILLS, &analytics_q).paced(&pacers.analytics),
                deadline
            ),
            c.call::<Value>(
                key,
                Call::get(ACTIVITIES, &one).paced(&pacers.compliance),
                deadline
            ),
            self.groups(key, deadline),
        );
        if let Some(refused) = plugins_beta_refusal(&plugins_read) {
            return Err(refused);
        }
        let (scopes, group_count, fatal) =
            scope_report(plugins_write, plugins_read, analytics, compliance, groups);
        if let Some(e) = fatal {
            return verdict_from_error(e, Surface::Enterprise);
        }
        let (organization, note) = match named_org(me) {
            Ok(named) => named,
            Err(e) => return verdict_from_error(e, Surface::Enterprise),
        };
        Ok(TestOutcome::decide_enterprise(
            organization,
            note,
            group_count,
            scopes,
            attestation,
        ))
    }

    fn publisher<'a>(
        &'a self,
        hub: &'a TenantSlug,
        _record: &'a ConnectionRecord,
        key: &'a AdminKey,
        deadline: Deadline,
    ) -> Box<dyn Publisher + 'a> {
        Box::new(EnterprisePublisher {
            surface: self,
            hub,
            key,
            pacers: self.pacers(key),
            deadline,
            groups: OnceCell::new(),
            hidden: Mutex::new(BTreeSet::new()),
            budget: deadline.remaining(),
        })
    }

    fn feed<'a>(&'a self, source: FeedSource) -> Box<dyn Feed + 'a> {
        Box::new(self.compliance_feed(source))
    }

    fn mapping(&self) -> MappingTarget {
        MappingTarget {
            field: "group_id",
            other: "workspace_id",
            noun: "RBAC group",
            pick: |m| {
                let group = m.group_id.as_deref().unwrap_or_default();
                (group, !m.workspace_id.is_empty())
            },
        }
    }

    async fn mapping_targets(
        &self,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<BTreeMap<String, String>, AnthropicError> {
        self.groups(key, deadline).await
    }

    fn archetype_problems(&self, archetype: &Archetype) -> Vec<(&'static str, &'static str)> {
        if archetype.workspace_ids.is_empty() {
            return Vec::new();
        }
        vec![("$.workspace_ids", "workspaces do not exist on Claude Enterprise (this tenant's connection uses the enterprise surface): grant RBAC group_ids instead")]
    }
}

#[derive(Deserialize)]
struct PluginItem {
    id: String,
    name: String,
    #[serde(default)]
    manifest_version: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_at: Option<OffsetDateTime>,
    #[serde(default)]
    organization_installation_preference: Option<String>,
    #[serde(default)]
    organization_installation_preference_inherited: Option<bool>,
    #[serde(default)]
    served_version_pinned: Option<bool>,
    #[serde(default)]
    served_version_id: Option<String>,
    #[serde(default)]
    latest_version_id: Option<String>,
}

impl PluginItem {
    /// What the whole org gets from the plugin, as the listing says: `Some(None)` hidden by its own
    /// `not_available`, `Some(Some(how))` anything wider (an inherited marketplace default included),
    /// `None` when the listing does not say.
    fn exposure(&self) -> Option<Option<String>> {
        let pref = self.organization_installation_preference.as_deref();
        match (self.organization_installation_preference_inherited, pref) {
            (Some(false), Some("not_available")) => Some(None),
            (Some(true), p) => Some(Some(format!(
                "inherited ({})",
                p.unwrap_or("the marketplace default")
            ))),
            (Some(false), Some(p)) => Some(Some(p.to_owned())),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct SettingItem {
    target: SettingTarget,
    #[serde(default)]
    installation_preference: Option<String>,
}

#[derive(Deserialize)]
struct SettingTarget {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    rbac_group_id: Option<String>,
}

/// The manifest `version` of a bundle: the content hash's first 12 hex digits, so a listed plugin says
/// which content it serves.
pub(crate) fn bundle_version(content_hash: &str) -> String {
    content_hash
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// The plugin bundle of a transpiled skill: `.claude-plugin/plugin.json` and `skills/{name}/SKILL.md`
/// (the same SKILL.md, footer included, as the preview surface publishes), as (path, content) parts.
pub fn bundle(desired: &DesiredSkill) -> Vec<(String, String)> {
    let s = &desired.skill;
    let clip = |text: &str, n: usize| text.chars().take(n).collect::<String>();
    let manifest = json!({
        "name": s.name,
        "displayName": clip(&s.display_title, 64),
        "description": clip(&s.description, 500),
        "version": bundle_version(s.content_hash()),
        "author": {"name": "Claresia"},
    });
    let mut files = vec![(
        ".claude-plugin/plugin.json".to_owned(),
        serde_json::to_string_pretty(&manifest).unwrap_or_default(),
    )];
    files.extend(
        s.files
            .iter()
            .map(|f| (format!("skills/{}", f.path), f.content.clone())),
    );
    files
}

struct EnterprisePublisher<'a> {
    surface: &'a EnterpriseSurface,
    hub: &'a TenantSlug,
    key: &'a AdminKey,
    pacers: Arc<OrgPacers>,
    deadline: Deadline,
    groups: OnceCell<Result<BTreeSet<String>, String>>,
    /// Plugins this publisher created and hid org-wide in the same breath.
    hidden: Mutex<BTreeSet<String>>,
    /// The run's whole time, which bounds what one step may take (a short sweep still creates and reads).
    budget: std::time::Duration,
}

impl EnterprisePublisher<'_> {
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        deadline: Deadline,
    ) -> Result<Vec<T>, AnthropicError> {
        let call = Call::get(path, query)
            .beta(PLUGINS_BETA)
            .paced(&self.pacers.reads);
        self.surface
            .client
            .list_all_pages(self.key, call, deadline)
            .await
    }

    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Value, AnthropicError> {
        let call = Call::new(method, path, body)
            .beta(PLUGINS_BETA)
            .paced(&self.pacers.writes);
        self.surface
            .client
            .call(self.key, call, self.deadline)
            .await
    }

    /// The plugin's access as its installation settings say.
    async fn access(&self, plugin_id: &str, deadline: Deadline) -> Result<Acl, AnthropicError> {
        let path = format!("{PLUGINS}/{plugin_id}/installation_settings");
        let settings: Vec<SettingItem> = self
            .read(&path, &[("limit", "100".into())], deadline)
            .await?;
        let mut acl = Acl {
            organization: Some("inherited".into()),
            ..Acl::default()
        };
        for s in settings {
            let pref = s
                .installation_preference
                .as_deref()
                .unwrap_or("not_available");
            match (s.target.kind.as_str(), s.target.rbac_group_id) {
                ("organization", _) => {
                    acl.organization = (pref != "not_available").then(|| pref.to_owned())
                }
                ("rbac_group", Some(g)) => match InstallationPreference::parse(pref) {
                    Some(InstallationPreference::NotAvailable) => {}
                    Some(InstallationPreference::AutoInstall) => acl.group_ids.push(g),
                    Some(p) => {
                        acl.group_ids.push(g.clone());
                        acl.preferences.insert(g, p);
                    }
                    // A value newer than this connector: not what we set, so it is rewritten.
                    None => acl.organization = Some(format!("{g}: {pref}")),
                },
                _ => {}
            }
        }
        Ok(acl.normalized())
    }

    /// The preference each granted group should have.
    fn wanted(acl: &Acl) -> BTreeMap<String, InstallationPreference> {
        acl.group_ids
            .iter()
            .map(|g| {
                let p = acl
                    .preferences
                    .get(g)
                    .copied()
                    .unwrap_or(InstallationPreference::AutoInstall);
                (g.clone(), p)
            })
            .collect()
    }

    async fn set_setting(
        &self,
        plugin_id: &str,
        target: &str,
        pref: Option<InstallationPreference>,
    ) -> Result<(), AnthropicError> {
        let path = format!("{PLUGINS}/{plugin_id}/installation_settings/{target}");
        match pref {
            Some(p) => {
                let body = json!({"installation_preference": p.as_str()});
                self.write(Method::POST, &path, Body::Json(&body)).await?;
            }
            None => match self.write(Method::DELETE, &path, Body::None).await {
                Ok(_) => {}
                // Already gone: the goal is reached.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
        }
        Ok(())
    }
}

impl EnterprisePublisher<'_> {
    /// A plugin's installation settings read back, with the mark the listing carries for the plan: when
    /// they were read, or that they could not be (the time left is kept for the writes; a read that timed
    /// out is not an error), in which case `unknown` stands for them.
    async fn read_access(
        &self,
        id: &str,
        unknown: Acl,
    ) -> Result<(Acl, (&'static str, String)), AnthropicError> {
        let at = OffsetDateTime::now_utc().unix_timestamp();
        let floor = READ_FLOOR.min(self.budget / 3);
        let left = self.deadline.remaining().saturating_sub(floor);
        let not_read = (ACCESS_UNKNOWN, "true".to_owned());
        if left.is_zero() {
            return Ok((unknown, not_read));
        }
        match self.access(id, Deadline::after(left)).await {
            Ok(acl) => Ok((acl, (ACCESS_READ_AT, at.to_string()))),
            Err(e) if e.is_timeout() => Ok((unknown, not_read)),
            Err(e) => Err(e),
        }
    }

    /// One plugin of ours as the plan reads it. Its settings are read when the scope asks for them or
    /// nothing is known of them, and only while time is left for writes (else `ACCESS_UNKNOWN`).
    async fn owned(
        &self,
        p: PluginItem,
        entry: &LedgerEntry,
        access_of: Option<&BTreeSet<String>>,
    ) -> Result<RemoteSkill, AnthropicError> {
        let exposure = p.exposure();
        // Settings known to hold (applied or read back, no outside change since) are not read again: a
        // no-change publish of a large org costs its plugin list, not a read per plugin.
        let known = entry.applied_access.as_ref().filter(|_| exposure.is_some());
        let read = access_of.map_or(known.is_none(), |s| s.contains(&entry.skill_id));
        let mut metadata = BTreeMap::from([
            ("managed_by".to_owned(), MANAGED_BY.to_owned()),
            ("tenant".to_owned(), entry.target.to_string()),
            ("hub_tenant".to_owned(), self.hub.to_string()),
            ("skill_id".to_owned(), entry.skill_id.clone()),
        ]);
        let unknown = Acl {
            organization: exposure.clone().flatten(),
            ..Acl::default()
        };
        let acl = if !read {
            let mut acl = known.map(|k| k.acl.clone()).unwrap_or_default();
            acl.organization = exposure.clone().flatten();
            acl
        } else {
            let (acl, mark) = self.read_access(&p.id, unknown).await?;
            metadata.insert(mark.0.to_owned(), mark.1);
            acl
        };
        match &exposure {
            Some(Some(how)) => {
                metadata.insert(EXPOSURE.to_owned(), how.clone());
            }
            // The listing did not say: what the settings said is the exposure.
            None => {
                if let Some(how) = &acl.organization {
                    metadata.insert(EXPOSURE.to_owned(), how.clone());
                }
            }
            Some(None) => {}
        }
        let recorded = entry.content_hash.clone().unwrap_or_default();
        // A version uploaded by someone else serves other content: compare what is served.
        let served_matches = p
            .manifest_version
            .as_deref()
            .is_none_or(|v| v == bundle_version(&recorded));
        let pinned = p.served_version_pinned == Some(true) && !served_matches;
        let content_hash = if served_matches || (pinned && self.latest_is(&p, &recorded).await?) {
            // Pinned to another version, ours uploaded as the latest: nothing to upload again.
            recorded
        } else {
            format!("served:{}", p.manifest_version.clone().unwrap_or_default())
        };
        if pinned {
            let served = p
                .manifest_version
                .clone()
                .unwrap_or_else(|| "unknown".into());
            metadata.insert(PINNED.to_owned(), served);
        }
        metadata.insert("content_hash".to_owned(), content_hash);
        Ok(RemoteSkill {
            id: p.id,
            name: p.name,
            metadata,
            acl,
        })
    }
}

impl EnterprisePublisher<'_> {
    /// Whether the plugin's latest version carries `content_hash` (one read, for pinned plugins only).
    async fn latest_is(&self, p: &PluginItem, content_hash: &str) -> Result<bool, AnthropicError> {
        if p.latest_version_id.is_none() || p.latest_version_id == p.served_version_id {
            return Ok(false);
        }
        let path = format!("{PLUGINS}/{}/versions/latest", p.id);
        let call = Call::get(&path, &[])
            .beta(PLUGINS_BETA)
            .paced(&self.pacers.reads);
        let latest: Value = self
            .surface
            .client
            .call(self.key, call, self.deadline)
            .await?;
        Ok(latest["manifest_version"].as_str() == Some(bundle_version(content_hash).as_str()))
    }
}

/// Whether `plugin` is the one `entry` records: the same id, or (a claim) created after the claim.
fn claimed_by(entry: &LedgerEntry, plugin: &PluginItem) -> bool {
    if entry.removed_at.is_some() {
        return false;
    }
    if !entry.remote_id.is_empty() {
        return entry.remote_id == plugin.id;
    }
    match (entry.claimed_at, plugin.created_at) {
        (Some(claimed), Some(created)) => created.unix_timestamp() >= claimed - CLAIM_SKEW_SECONDS,
        _ => false,
    }
}

/// A plugin's creation: two write slots (the create, then hiding it org-wide), the create, the hide.
impl EnterprisePublisher<'_> {
    /// Two write slots, the second far enough after the first for the create to finish and the hide
    /// to fit before the deadline; none if the deadline is too close.
    async fn reserve_create(
        &self,
        create_attempt: std::time::Duration,
        hide_budget: std::time::Duration,
    ) -> Result<Vec<std::time::Instant>, AnthropicError> {
        let deadline = self.deadline;
        let fits = |slots: &[std::time::Instant]| {
            let hide_at = slots[1].max(slots[0] + create_attempt);
            hide_at + hide_budget <= std::time::Instant::now() + deadline.remaining()
        };
        self.pacers
            .writes
            .reserve(2, fits)
            .await
            .ok_or_else(|| AnthropicError::Transport {
                message:
                    "deadline too close to create a plugin and hide it org-wide; left for the sweep"
                        .into(),
                timeout: true,
                attempts: 0,
            })
    }

    /// Creates the plugin in the first slot: its id, and the slot left for hiding it (`None` when the
    /// second slot went to uploading a version instead).
    async fn register(
        &self,
        files: &[(String, String)],
        slots: Vec<std::time::Instant>,
        create_attempt: std::time::Duration,
    ) -> Result<(String, Option<std::time::Instant>), AnthropicError> {
        let call = Call::new(Method::POST, PLUGINS, Body::Files(files))
            .beta(PLUGINS_BETA)
            .in_slot(&self.pacers.writes, slots[0]);
        let create_deadline = Deadline::at(slots[0] + create_attempt);
        let mut hide_slot = Some(slots[1]);
        let created: Value = match self
            .surface
            .client
            .call(self.key, call, create_deadline)
            .await
        {
            Ok(created) => created,
            // Stored but not registered: never resend the create; the same files go up as a version.
            Err(e) if e.error_code() == Some("registration_pending") => {
                let Some(id) = e.plugin_id().map(str::to_owned) else {
                    return Err(e);
                };
                let path = format!("{PLUGINS}/{id}/versions");
                let upload = Call::new(Method::POST, &path, Body::Files(files))
                    .beta(PLUGINS_BETA)
                    .in_slot(&self.pacers.writes, slots[1]);
                hide_slot = None;
                self.surface
                    .client
                    .call::<Value>(self.key, upload, self.deadline)
                    .await?;
                json!({ "id": id })
            }
            Err(e) => return Err(e),
        };
        match created["id"].as_str() {
            Some(id) if id.starts_with("plugin_") => Ok((id.to_owned(), hide_slot)),
            _ => Err(AnthropicError::Decode {
                message: "POST /v1/organizations/plugins: the created plugin has no id".into(),
                request_id: None,
            }),
        }
    }

    /// Hides a new plugin org-wide (in its slot, else paced). A failure is left to `set_access`, which
    /// sends it again; every publish contains it first anyway.
    async fn hide_new(&self, id: &str, slot: Option<std::time::Instant>) {
        let path = format!("{PLUGINS}/{id}/installation_settings/organization");
        let body = json!({"installation_preference": "not_available"});
        let hide = Call::new(Method::POST, &path, Body::Json(&body)).beta(PLUGINS_BETA);
        let hide = match slot {
            Some(at) => hide.in_slot(&self.pacers.writes, at),
            None => hide.paced(&self.pacers.writes),
        };
        match self
            .surface
            .client
            .call::<Value>(self.key, hide, self.deadline)
            .await
        {
            Ok(_) => {
                self.hidden
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_owned());
            }
            Err(e) => {
                tracing::warn!(plugin = %id, error = %e, "a new plugin could not be hidden org-wide yet")
            }
        }
    }
}

#[async_trait]
impl Publisher for EnterprisePublisher<'_> {
    async fn list(
        &self,
        ledger: &BTreeMap<String, LedgerEntry>,
        access_of: Option<&BTreeSet<String>>,
    ) -> Result<Vec<RemoteSkill>, AnthropicError> {
        // Ours are organization-owned; members' own plugins live in their personal marketplaces.
        let query = [
            ("limit", "100".into()),
            ("owner_type", "organization".into()),
        ];
        let plugins: Vec<PluginItem> = self.read(PLUGINS, &query, self.deadline).await?;
        let relevant = plugins
            .into_iter()
            .filter(|p| p.name.starts_with("claresia-"));
        let with_owner: Vec<(PluginItem, Option<LedgerEntry>)> = relevant
            .map(|p| {
                let entry = ledger.get(&p.name).filter(|e| claimed_by(e, &p)).cloned();
                (p, entry)
            })
            .collect();
        stream::iter(with_owner)
            .map(|(p, entry)| async move {
                let Some(entry) = entry else {
                    // Our name, not our plugin: listed without metadata, so the plan never touches it.
                    return Ok(RemoteSkill {
                        id: p.id,
                        name: p.name,
                        metadata: BTreeMap::new(),
                        acl: Acl::default(),
                    });
                };
                self.owned(p, &entry, access_of).await
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    /// A new plugin inherits the marketplace default, which may install it for everyone: its
    /// organization-level `not_available` is booked with the create and sent right after it, and the
    /// create does not start unless both fit before the deadline.
    async fn create(&self, desired: &DesiredSkill) -> Result<String, AnthropicError> {
        let attempt = self.surface.client.attempt_timeout().min(self.budget / 4);
        let create_attempt = CREATE_ATTEMPT.min(attempt);
        let slots = self
            .reserve_create(create_attempt, HIDE_BUDGET.min(attempt))
            .await?;
        let files = bundle(desired);
        let (id, hide_slot) = self.register(&files, slots, create_attempt).await?;
        self.hide_new(&id, hide_slot).await;
        Ok(id)
    }

    async fn replace(&self, remote_id: &str, desired: &DesiredSkill) -> Result<(), AnthropicError> {
        let files = bundle(desired);
        let path = format!("{PLUGINS}/{remote_id}/versions");
        self.write(Method::POST, &path, Body::Files(&files))
            .await
            .map(|_| ())
    }

    /// The organization setting `not_available` (only granted groups see the plugin), then each group's
    /// preference, then the groups no longer granted removed — serially, as the API asks per plugin.
    async fn set_access(
        &self,
        remote_id: &str,
        acl: &Acl,
        fresh: bool,
    ) -> Result<(), AnthropicError> {
        let current = if fresh {
            let hidden = self
                .hidden
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(remote_id);
            Acl {
                organization: (!hidden).then(|| "inherited".into()),
                ..Acl::default()
            }
        } else {
            self.access(remote_id, self.deadline).await?
        };
        if current.organization.is_some() {
            self.set_setting(
                remote_id,
                "organization",
                Some(InstallationPreference::NotAvailable),
            )
            .await?;
        }
        let have = Self::wanted(&current);
        let want = Self::wanted(acl);
        for (group, pref) in &want {
            if have.get(group) != Some(pref) {
                self.set_setting(remote_id, group, Some(*pref)).await?;
            }
        }
        for group in have.keys().filter(|g| !want.contains_key(*g)) {
            self.set_setting(remote_id, group, None).await?;
        }
        Ok(())
    }

    async fn contain(&self, remote: &mut RemoteSkill) -> Result<bool, AnthropicError> {
        let Some(how) = remote.metadata.remove(EXPOSURE) else {
            return Ok(false);
        };
        self.set_setting(
            &remote.id,
            "organization",
            Some(InstallationPreference::NotAvailable),
        )
        .await?;
        if remote.acl.organization.as_deref() == Some(how.as_str()) {
            remote.acl.organization = None;
        }
        Ok(true)
    }

    async fn delete(&self, remote_id: &str) -> Result<(), AnthropicError> {
        let path = format!("{PLUGINS}/{remote_id}");
        self.write(Method::DELETE, &path, Body::None)
            .await
            .map(|_| ())
    }

    async fn check_access(&self, acl: &Acl) -> Result<(), String> {
        if acl.group_ids.is_empty() {
            return Ok(());
        }
        let known = self
            .groups
            .get_or_init(|| async {
                self.surface
                    .groups(self.key, self.deadline)
                    .await
                    .map(|g| g.into_keys().collect())
                    .map_err(|e| {
                        format!(
                            "could not list the organization's RBAC groups ({})",
                            e.summary()
                        )
                    })
            })
            .await;
        let known = known.as_ref().map_err(Clone::clone)?;
        let unknown: Vec<&str> = acl
            .group_ids
            .iter()
            .filter(|g| !known.contains(*g))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the organization has no RBAC group {} (GET /v1/organizations/rbac_groups); fix the archetype's group_ids",
                unknown.join(", ")
            ))
        }
    }

    fn expressible(&self, acl: Acl) -> Acl {
        let mut out = Acl {
            group_ids: acl.group_ids,
            ..Acl::default()
        }
        .normalized();
        out.preferences = acl
            .preferences
            .into_iter()
            .filter(|(g, p)| {
                *p != InstallationPreference::AutoInstall && out.group_ids.binary_search(g).is_ok()
            })
            .collect();
        out
    }

    fn ownership(&self) -> Ownership {
        Ownership::Ledger
    }

    fn writes_per_minute(&self) -> Option<f64> {
        Some(self.surface.limits.writes_per_minute)
    }

    fn reads_per_minute(&self) -> Option<f64> {
        Some(self.surface.limits.reads_per_minute)
    }

    /// The Plugins API documents `x-should-retry: false` as deterministic: retrying every minute would
    /// spend the org's shared write budget on the same refusal.
    fn pends_on_final_answers(&self) -> bool {
        false
    }

    fn writes_of(&self, action: &Action) -> u32 {
        let groups = |acl: &Acl| acl.group_ids.len() as u32;
        match action {
            Action::Create(d) => 2 + groups(&d.acl),
            Action::Update { acl, .. } => 1 + acl.as_ref().map_or(0, |a| 1 + groups(a)),
            Action::SetAcl { acl, .. } => 1 + groups(acl),
            Action::Delete { .. } => 1,
        }
    }
}

/// The Plugins API reads as nonexistent (404) where the beta is not enabled for the org: that refusal,
/// named for the admin.
fn plugins_beta_refusal(plugins_read: &Result<Value, AnthropicError>) -> Option<AnthropicError> {
    let Err(mut refused) = plugins_read.clone() else {
        return None;
    };
    if let AnthropicError::Api {
        status: 404,
        message,
        ..
    } = &mut refused
    {
        *message = format!(
            "the Plugins API (beta {PLUGINS_BETA}) is not enabled for this Claude Enterprise organization; ask Anthropic to enable it ({message})"
        );
        return Some(refused);
    }
    None
}

/// Each required scope as its probe answered: the report, the org's group count, and the first answer
/// that is a verdict on the key rather than on one scope.
fn scope_report(
    plugins_write: Result<Value, AnthropicError>,
    plugins_read: Result<Value, AnthropicError>,
    analytics: Result<Value, AnthropicError>,
    compliance: Result<Value, AnthropicError>,
    groups: Result<BTreeMap<String, String>, AnthropicError>,
) -> (ScopeReport, Option<u32>, Option<AnthropicError>) {
    let mut scopes = ScopeReport::default();
    let mut group_count = None;
    let groups = groups.map(|g| group_count = Some(g.len() as u32));
    // The analytics probe asks for yesterday; a 400 naming the latest day still proves the scope.
    let analytics = match analytics {
        Err(e) if e.kind() == ErrorKind::InvalidRequest => Ok(Value::Null),
        other => other,
    };
    let fatal = [
        classify_scope(
            &mut scopes,
            Scope::PluginsWrite,
            plugins_write.map(|_| ()),
            true,
        ),
        classify_scope(
            &mut scopes,
            Scope::PluginsRead,
            plugins_read.map(|_| ()),
            false,
        ),
        classify_scope(
            &mut scopes,
            Scope::AnalyticsRead,
            analytics.map(|_| ()),
            false,
        ),
        classify_scope(
            &mut scopes,
            Scope::ComplianceActivitiesRead,
            compliance.map(|_| ()),
            false,
        ),
        classify_scope(&mut scopes, Scope::RbacGroupsRead, groups, false),
    ]
    .into_iter()
    .flatten()
    .next();
    (scopes, group_count, fatal)
}

/// The org the key names, or the note saying why it names none; `Err`: the key itself was refused.
fn named_org(
    me: Result<claresia_anthropic::Organization, AnthropicError>,
) -> Result<(Option<Organization>, Option<String>), AnthropicError> {
    let named = match me {
        Ok(org) => (
            Some(Organization {
                id: org.id,
                name: org.name,
            }),
            None,
        ),
        Err(e) if e.kind() == ErrorKind::Authentication => return Err(e),
        Err(e) => (
            None,
            Some(format!(
                "unknown: Anthropic did not name the organization to this Enterprise key (GET /v1/organizations/me: {})",
                e.summary()
            )),
        ),
    };
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use claresia_domain::catalog::{desired_state, Archetype};
    use claresia_domain::skill_ir::validate;

    fn desired() -> DesiredSkill {
        let hub = TenantSlug::parse("dainese").unwrap();
        let doc = serde_json::json!({
            "id": "standup-notes", "ir_version": 1, "owner": "claresia", "title": "Standup notes",
            "description": "Turn a standup into notes", "instructions": "Write the notes.",
        });
        let ir = validate(&doc, &hub, "standup-notes").unwrap();
        let archetypes = BTreeMap::from([(
            "eng".to_owned(),
            Archetype {
                skills: vec!["standup-notes".into()],
                group_ids: vec!["rbac_group_b".into(), "rbac_group_a".into()],
                workspace_ids: vec!["wrkspc_x".into()],
                sub_tenant: None,
                installation_preference: Some(InstallationPreference::Required),
            },
        )]);
        let skills = BTreeMap::from([("standup-notes".to_owned(), ir)]);
        let state = desired_state(&hub, &archetypes, &skills, &[]);
        state[&hub].skills["claresia-dainese-standup-notes"].clone()
    }

    #[test]
    fn the_bundle_is_a_manifest_and_the_transpiled_skill_md() {
        let d = desired();
        let files = bundle(&d);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, ".claude-plugin/plugin.json");
        let manifest: Value = serde_json::from_str(&files[0].1).unwrap();
        assert_eq!(manifest["name"], "claresia-dainese-standup-notes");
        assert_eq!(manifest["displayName"], "Standup notes");
        assert_eq!(manifest["version"], bundle_version(d.skill.content_hash()));
        assert_eq!(manifest["version"].as_str().unwrap().len(), 12);
        assert_eq!(files[1].0, "skills/claresia-dainese-standup-notes/SKILL.md");
        assert_eq!(files[1].1, d.skill.files[0].content);
    }

    #[test]
    fn the_enterprise_surface_expresses_groups_and_preferences_only() {
        let surface = EnterpriseSurface::new(
            AnthropicClient::new(claresia_anthropic::ClientConfig::new("http://127.0.0.1:9"))
                .unwrap(),
            EnterpriseLimits::default(),
        );
        let hub = TenantSlug::parse("dainese").unwrap();
        let key = AdminKey::parse("sk-ant-api01-unit-test-key").unwrap();
        let record_json = serde_json::json!({
            "tenant": "dainese", "state": "connected", "org_id": "", "org_name": "",
            "workspace_count": 0, "zero_retention": "attested", "scopes_verified": [],
            "key_fingerprint": "x", "key_created_at": "2026-11-25T00:00:00Z",
            "connected_at": "2026-11-25T00:00:00Z", "updated_at": "2026-11-25T00:00:00Z",
            "surface": "enterprise"});
        let record: ConnectionRecord = serde_json::from_value(record_json).unwrap();
        let p = surface.publisher(
            &hub,
            &record,
            &key,
            Deadline::after(std::time::Duration::from_secs(1)),
        );
        let acl = p.expressible(desired().acl);
        assert!(acl.workspace_ids.is_empty());
        assert_eq!(acl.group_ids, vec!["rbac_group_a", "rbac_group_b"]);
        assert_eq!(acl.preferences.len(), 2);
        assert_eq!(p.writes_of(&Action::Create(desired())), 4);
        let mut plain = desired().acl;
        plain.preferences = BTreeMap::from([(
            "rbac_group_a".to_owned(),
            InstallationPreference::AutoInstall,
        )]);
        assert!(
            p.expressible(plain).preferences.is_empty(),
            "auto_install is the default"
        );
    }
}
