//! The Hub catalog and publishing bookkeeping in the hub table, under the hub tenant's `pk`:
//! `SKILL#{id}`, `ARCHETYPE#{name}`, `WORKSPACES`, `LEDGER#{published name}`, `PUBLISH#{target}`,
//! `PENDING_PUBLISH` (listed in `gsi1`). Sub-tenant links are in `tenants.rs`.
//! Documents are stored as JSON text in `doc`: the domain owns their shape.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use claresia_domain::TenantSlug;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::hub::{tenant_pk, GSI1, GSI1_PK, GSI1_SK, PK, SK};
use crate::{HubStore, StoreError};

const DOC: &str = "doc";
const PENDING_SK: &str = "PENDING_PUBLISH";
const PENDING_KIND: &str = "PENDING_PUBLISH";

/// What we published under a name, so telemetry resolves skill names without guessing by prefix. A name
/// we removed stays as a tombstone (`removed_at`) for [`TOMBSTONE_DAYS`], so its late audit events (visible
/// up to a minute later, redelivered later still, or read after a poller outage) still resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub name: String,
    pub target: TenantSlug,
    pub skill_id: String,
    /// Anthropic's id of what we published; empty while a create is claimed but not yet answered.
    pub remote_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<i64>,
    /// The content hash of what was last published under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Set (unix seconds) on a claim written before a create on a surface whose published objects carry
    /// no metadata (enterprise plugins): a plugin of this name created after it is ours, so a crash
    /// between the create and its ledger write cannot turn our plugin into a foreign one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<i64>,
    /// The RBAC-group access we last applied in full (or read back), and when: a full publish plans from
    /// it instead of re-reading every plugin's settings. Cleared before any change to the settings starts,
    /// and distrusted once the feed reports a change made after it ([`DriftMark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_access: Option<AppliedAccess>,
}

/// Installation settings known to hold on one plugin since `at` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedAccess {
    pub acl: claresia_domain::catalog::Acl,
    pub at: i64,
}

/// How a Hub's pending publish is being retried after sweeps that failed or made no progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRetry {
    /// Sweeps in a row that failed on it.
    pub attempts: u32,
    /// Unix seconds before which no sweep tries it again.
    pub next_attempt_at: i64,
    pub last_error: String,
}

impl PendingRetry {
    /// The retry after `previous`: 1, 2, 4 … minutes, capped at an hour.
    pub fn after(previous: Option<&PendingRetry>, now: i64, error: String) -> PendingRetry {
        let attempts = previous.map_or(0, |p| p.attempts).saturating_add(1);
        let delay = (60i64 << attempts.saturating_sub(1).min(6)).min(3600);
        PendingRetry {
            attempts,
            next_attempt_at: now + delay,
            last_error: error,
        }
    }
}

/// A [`DriftMark`] name that stands for every plugin of the Hub ("Republish all": check everything).
pub const ALL_PLUGINS: &str = "*";

/// The newest change to one of our plugins that the feed reported as made outside the connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftMark {
    pub name: String,
    /// The activity's `created_at` (unix seconds).
    pub at: i64,
}

/// How long a removed name keeps resolving telemetry: a week covers Anthropic's late visibility and
/// redeliveries, and a poller outage far longer than the 5-minute stale-tenant alarm lets go unnoticed.
pub const TOMBSTONE_DAYS: i64 = 7;
/// DynamoDB's time-to-live attribute on the hub table (tombstones expire by themselves).
pub const EXPIRES_AT: &str = "expires_at";

impl LedgerEntry {
    /// Still resolves telemetry at `now` (unix seconds): live, or a tombstone inside its window.
    pub fn resolves_at(&self, now: i64) -> bool {
        self.removed_at
            .is_none_or(|at| now < at + TOMBSTONE_DAYS * 86_400)
    }
}

/// What a conditional catalog write expects to find (the client's `If-Match`/`If-None-Match`, resolved
/// against the document it read): DynamoDB checks it in the write itself, so a change between the read
/// and the write fails the write instead of being overwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Unconditional (no precondition header).
    Any,
    /// The item must not exist (`If-None-Match: *`, or an `If-Match` of an absent document's ETag).
    Absent,
    /// The item must hold exactly this document text (the one whose ETag the client sent).
    Doc(String),
    /// The item must exist, whatever it holds (`If-Match: *`).
    Exists,
}

/// A write's condition: its expression, names and values, ready for any write builder.
struct Condition {
    expression: &'static str,
    names: HashMap<String, String>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Expect {
    fn condition(&self) -> Option<Condition> {
        let names = |k: &str, v: &str| HashMap::from([(k.to_owned(), v.to_owned())]);
        match self {
            Expect::Any => None,
            Expect::Absent => Some(Condition {
                expression: "attribute_not_exists(#pk)",
                names: names("#pk", PK),
                values: None,
            }),
            Expect::Exists => Some(Condition {
                expression: "attribute_exists(#pk)",
                names: names("#pk", PK),
                values: None,
            }),
            Expect::Doc(d) => Some(Condition {
                expression: "#doc = :expect",
                names: names("#doc", DOC),
                values: Some(HashMap::from([(
                    ":expect".to_owned(),
                    AttributeValue::S(d.clone()),
                )])),
            }),
        }
    }
}

/// A catalog document written: the text stored (its ETag's source), and the one it replaced (`None`: the
/// write created it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub stored: String,
    pub previous: Option<String>,
}

impl HubStore {
    async fn put_doc(
        &self,
        pk: String,
        sk: String,
        doc: String,
        extra: &[(&str, AttributeValue)],
    ) -> Result<(), StoreError> {
        self.put_doc_if(pk, sk, doc, extra, &Expect::Any)
            .await
            .map(|_| ())
    }

    /// Writes the item if `expect` holds; `Ok(false)` when it did not (nothing written).
    async fn put_doc_if(
        &self,
        pk: String,
        sk: String,
        doc: String,
        extra: &[(&str, AttributeValue)],
        expect: &Expect,
    ) -> Result<bool, StoreError> {
        let written = self
            .put_doc_returning(pk, sk, doc, extra, expect, ReturnValue::None)
            .await?;
        Ok(written.is_some())
    }

    /// A catalog document written if `expect` holds (`None`: it did not), with the document it replaced
    /// as the write itself saw it: two racing creates cannot both see "nothing there" (a read before the
    /// write could).
    async fn put_catalog_doc(
        &self,
        pk: String,
        sk: String,
        doc: String,
        expect: &Expect,
    ) -> Result<Option<Written>, StoreError> {
        let previous = self
            .put_doc_returning(pk, sk, doc.clone(), &[], expect, ReturnValue::AllOld)
            .await?;
        Ok(previous.map(|previous| Written {
            stored: doc,
            previous,
        }))
    }

    /// `Some(old document)` if written (`returning` the old item, or `None` for it), `None` if `expect`
    /// did not hold.
    async fn put_doc_returning(
        &self,
        pk: String,
        sk: String,
        doc: String,
        extra: &[(&str, AttributeValue)],
        expect: &Expect,
        returning: ReturnValue,
    ) -> Result<Option<Option<String>>, StoreError> {
        let mut req = self
            .client()
            .put_item()
            .table_name(self.table())
            .item(PK, AttributeValue::S(pk))
            .item(SK, AttributeValue::S(sk))
            .item(DOC, AttributeValue::S(doc));
        for (k, v) in extra {
            req = req.item(*k, v.clone());
        }
        if let Some(item) = req.get_item() {
            crate::batch::check_item_size(item, "hub document")?;
        }
        if let Some(c) = expect.condition() {
            req = req
                .condition_expression(c.expression)
                .set_expression_attribute_names(Some(c.names))
                .set_expression_attribute_values(c.values);
        }
        match req.return_values(returning).send().await {
            Ok(out) => Ok(Some(out.attributes.and_then(|i| doc_of(&i)))),
            Err(e) if crate::error::condition_failed(&e) => Ok(None),
            Err(e) => Err(StoreError::dynamo("PutItem", e)),
        }
    }

    async fn get_doc(&self, pk: String, sk: String) -> Result<Option<String>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(out.item.and_then(|i| doc_of(&i)))
    }

    /// Deletes the item if `expect` holds: `None` when it did not (nothing deleted), else the document
    /// the item held, if any.
    async fn delete_doc_if(
        &self,
        pk: String,
        sk: String,
        expect: &Expect,
    ) -> Result<Option<Option<String>>, StoreError> {
        let mut req = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk))
            .return_values(ReturnValue::AllOld);
        if let Some(c) = expect.condition() {
            req = req
                .condition_expression(c.expression)
                .set_expression_attribute_names(Some(c.names))
                .set_expression_attribute_values(c.values);
        }
        match req.send().await {
            Ok(out) => Ok(Some(out.attributes.and_then(|i| doc_of(&i)))),
            Err(e) if crate::error::condition_failed(&e) => Ok(None),
            Err(e) => Err(StoreError::dynamo("DeleteItem", e)),
        }
    }

    /// Every `(sk suffix, doc)` under `pk` whose sort key starts with `prefix`, all pages.
    async fn query_docs(
        &self,
        pk: String,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if let (Some(AttributeValue::S(sk)), Some(doc)) = (item.get(SK), doc_of(&item)) {
                    out.push((sk[prefix.len()..].to_owned(), doc));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    pub(crate) async fn query_parsed<T: DeserializeOwned>(
        &self,
        tenant: &TenantSlug,
        prefix: &str,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        self.query_docs(tenant_pk(tenant), prefix)
            .await?
            .into_iter()
            .map(|(k, doc)| parse(&doc).map(|v| (k, v)))
            .collect()
    }

    // Skills (Skill IR documents, stored as validated).

    /// Stores a skill if `expect` holds; answers the stored text (its ETag's source), or `None` when the
    /// precondition failed.
    pub async fn put_skill(
        &self,
        tenant: &TenantSlug,
        id: &str,
        ir: &serde_json::Value,
        expect: &Expect,
    ) -> Result<Option<Written>, StoreError> {
        let doc = ir.to_string();
        self.put_catalog_doc(tenant_pk(tenant), format!("SKILL#{id}"), doc, expect)
            .await
    }

    /// The stored text of a catalog document (`SKILL#…`, `ARCHETYPE#…`, `WORKSPACES`), exactly as a
    /// conditional write compares it.
    pub async fn catalog_text(
        &self,
        tenant: &TenantSlug,
        doc: CatalogDoc<'_>,
    ) -> Result<Option<String>, StoreError> {
        self.get_doc(tenant_pk(tenant), doc.sort_key()).await
    }

    pub async fn skill(
        &self,
        tenant: &TenantSlug,
        id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.get_doc(tenant_pk(tenant), format!("SKILL#{id}"))
            .await?
            .map(|d| parse(&d))
            .transpose()
    }

    /// Deletes a skill if `expect` holds: `None` when the precondition failed, else whether it existed.
    pub async fn delete_skill(
        &self,
        tenant: &TenantSlug,
        id: &str,
        expect: &Expect,
    ) -> Result<Option<bool>, StoreError> {
        Ok(self
            .delete_doc_if(tenant_pk(tenant), format!("SKILL#{id}"), expect)
            .await?
            .map(|old| old.is_some()))
    }

    /// One page of skills in id order, after skill id `after`: at most `limit`, and the id to continue
    /// after when there are more.
    pub async fn skills_page(
        &self,
        tenant: &TenantSlug,
        limit: i32,
        after: Option<&str>,
    ) -> Result<(Vec<serde_json::Value>, Option<String>), StoreError> {
        let (docs, next) = self.docs_page(tenant, "SKILL#", limit, after).await?;
        let parsed = docs
            .iter()
            .map(|(_, d)| parse(d))
            .collect::<Result<Vec<serde_json::Value>, _>>()?;
        Ok((parsed, next))
    }

    /// One page of `(sk suffix, doc)` under the tenant's `prefix`, after suffix `after`.
    pub(crate) async fn docs_page(
        &self,
        tenant: &TenantSlug,
        prefix: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<(Vec<(String, String)>, Option<String>), StoreError> {
        let mut q = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", AttributeValue::S(tenant_pk(tenant)))
            .expression_attribute_values(":p", AttributeValue::S(prefix.into()))
            .consistent_read(true)
            .limit(limit);
        if let Some(after) = after {
            q = q
                .exclusive_start_key(PK, AttributeValue::S(tenant_pk(tenant)))
                .exclusive_start_key(SK, AttributeValue::S(format!("{prefix}{after}")));
        }
        let out = q.send().await.map_err(|e| StoreError::dynamo("Query", e))?;
        let docs = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| match (item.get(SK), doc_of(item)) {
                (Some(AttributeValue::S(sk)), Some(doc)) => {
                    Some((sk.get(prefix.len()..)?.to_owned(), doc))
                }
                _ => None,
            })
            .collect();
        // DynamoDB may answer a full page with a continuation key and nothing after it; the next page is
        // then empty, which a client handles like any other last page.
        let next = out.last_evaluated_key.and_then(|k| match k.get(SK) {
            Some(AttributeValue::S(sk)) => sk.strip_prefix(prefix).map(str::to_owned),
            _ => None,
        });
        Ok((docs, next))
    }

    pub async fn skills<T: DeserializeOwned>(
        &self,
        tenant: &TenantSlug,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        self.query_parsed(tenant, "SKILL#").await
    }

    // Archetypes.

    /// Stores an archetype if `expect` holds; answers the stored text, or `None` (precondition failed).
    pub async fn put_archetype<T: Serialize>(
        &self,
        tenant: &TenantSlug,
        name: &str,
        a: &T,
        expect: &Expect,
    ) -> Result<Option<Written>, StoreError> {
        let doc = to_json(a)?;
        self.put_catalog_doc(tenant_pk(tenant), format!("ARCHETYPE#{name}"), doc, expect)
            .await
    }

    pub async fn archetype<T: DeserializeOwned>(
        &self,
        tenant: &TenantSlug,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_doc(tenant_pk(tenant), format!("ARCHETYPE#{name}"))
            .await?
            .map(|d| parse(&d))
            .transpose()
    }

    /// Deletes an archetype if `expect` holds: `None` when the precondition failed, else what it held.
    pub async fn delete_archetype<T: DeserializeOwned>(
        &self,
        tenant: &TenantSlug,
        name: &str,
        expect: &Expect,
    ) -> Result<Option<Option<T>>, StoreError> {
        match self
            .delete_doc_if(tenant_pk(tenant), format!("ARCHETYPE#{name}"), expect)
            .await?
        {
            None => Ok(None),
            Some(old) => Ok(Some(old.map(|d| parse(&d)).transpose()?)),
        }
    }

    /// One page of archetypes in name order, after `after`: at most `limit`, and the name to continue
    /// after when there are more.
    pub async fn archetypes_page<T: DeserializeOwned>(
        &self,
        tenant: &TenantSlug,
        limit: i32,
        after: Option<&str>,
    ) -> Result<(Vec<(String, T)>, Option<String>), StoreError> {
        let (docs, next) = self.docs_page(tenant, "ARCHETYPE#", limit, after).await?;
        let parsed = docs
            .into_iter()
            .map(|(k, d)| parse(&d).map(|v| (k, v)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((parsed, next))
    }

    pub async fn archetypes<T: DeserializeOwned>(
        &self,
        tenant: &TenantSlug,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        self.query_parsed(tenant, "ARCHETYPE#").await
    }

    // Workspace mappings.

    /// Stores the mappings if `expect` holds; answers the stored text, or `None` (precondition failed).
    pub async fn put_workspace_mappings<T: Serialize>(
        &self,
        tenant: &TenantSlug,
        mappings: &T,
        expect: &Expect,
    ) -> Result<Option<String>, StoreError> {
        let doc = to_json(mappings)?;
        let written = self
            .put_doc_if(
                tenant_pk(tenant),
                "WORKSPACES".into(),
                doc.clone(),
                &[],
                expect,
            )
            .await?;
        if !written {
            return Ok(None);
        }
        self.touch_routing(tenant).await?;
        Ok(Some(doc))
    }

    pub async fn workspace_mappings<T: DeserializeOwned + Default>(
        &self,
        tenant: &TenantSlug,
    ) -> Result<T, StoreError> {
        Ok(self
            .get_doc(tenant_pk(tenant), "WORKSPACES".into())
            .await?
            .map(|d| parse(&d))
            .transpose()?
            .unwrap_or_default())
    }

    // The publish ledger.

    pub async fn put_ledger(
        &self,
        hub: &TenantSlug,
        entry: &LedgerEntry,
    ) -> Result<(), StoreError> {
        self.put_doc(
            tenant_pk(hub),
            format!("LEDGER#{}", entry.name),
            to_json(entry)?,
            &[],
        )
        .await?;
        self.touch_routing(hub).await
    }

    /// Marks a name as removed (its skill deleted from Anthropic): it keeps resolving late telemetry for
    /// [`TOMBSTONE_DAYS`], then DynamoDB's TTL removes it.
    pub async fn tombstone_ledger(
        &self,
        hub: &TenantSlug,
        entry: &LedgerEntry,
        now: i64,
    ) -> Result<(), StoreError> {
        let tombstone = LedgerEntry {
            removed_at: Some(now),
            ..entry.clone()
        };
        let expires = now + TOMBSTONE_DAYS * 86_400;
        self.put_doc(
            tenant_pk(hub),
            format!("LEDGER#{}", entry.name),
            to_json(&tombstone)?,
            &[(EXPIRES_AT, AttributeValue::N(expires.to_string()))],
        )
        .await?;
        self.touch_routing(hub).await
    }

    pub async fn ledger(
        &self,
        hub: &TenantSlug,
    ) -> Result<BTreeMap<String, LedgerEntry>, StoreError> {
        self.query_parsed(hub, "LEDGER#").await
    }

    /// Records (or, with `None`, forgets) the access known to hold on a live ledger entry; nothing
    /// happens to an entry that is absent or removed.
    pub async fn set_applied_access(
        &self,
        hub: &TenantSlug,
        name: &str,
        applied: Option<AppliedAccess>,
    ) -> Result<(), StoreError> {
        let Some(doc) = self
            .get_doc(tenant_pk(hub), format!("LEDGER#{name}"))
            .await?
        else {
            return Ok(());
        };
        let mut entry: LedgerEntry = parse(&doc)?;
        if entry.removed_at.is_some() || entry.applied_access == applied {
            return Ok(());
        }
        entry.applied_access = applied;
        // Only over the entry just read: a concurrent tombstone or re-claim wins.
        self.put_doc_if(
            tenant_pk(hub),
            format!("LEDGER#{name}"),
            to_json(&entry)?,
            &[],
            &Expect::Doc(doc),
        )
        .await
        .map(|_| ())
    }

    /// Notes a change to one of our plugins made outside the connector at `at` (keeps the newest).
    pub async fn mark_drift(
        &self,
        hub: &TenantSlug,
        name: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let doc = to_json(&DriftMark {
            name: name.to_owned(),
            at,
        })?;
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(hub)))
            .key(SK, AttributeValue::S(format!("DRIFT#{name}")))
            .update_expression("SET #doc = :doc, drift_at = :at")
            .condition_expression("attribute_not_exists(drift_at) OR drift_at < :at")
            .expression_attribute_names("#doc", DOC)
            .expression_attribute_values(":doc", AttributeValue::S(doc))
            .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if crate::error::condition_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// Plugin name → the newest outside change the feed reported.
    pub async fn drift_marks(&self, hub: &TenantSlug) -> Result<BTreeMap<String, i64>, StoreError> {
        let marks: BTreeMap<String, DriftMark> = self.query_parsed(hub, "DRIFT#").await?;
        Ok(marks.into_values().map(|m| (m.name, m.at)).collect())
    }

    // Publish reports.

    pub async fn put_publish_report<T: Serialize>(
        &self,
        hub: &TenantSlug,
        target: &TenantSlug,
        report: &T,
    ) -> Result<(), StoreError> {
        self.put_doc(
            tenant_pk(hub),
            format!("PUBLISH#{target}"),
            to_json(report)?,
            &[],
        )
        .await
    }

    /// The last publish report of one target (a sub-tenant's own view reads nothing else).
    pub async fn publish_report(
        &self,
        hub: &TenantSlug,
        target: &TenantSlug,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.get_doc(tenant_pk(hub), format!("PUBLISH#{target}"))
            .await?
            .map(|d| parse(&d))
            .transpose()
    }

    pub async fn publish_reports(
        &self,
        hub: &TenantSlug,
    ) -> Result<BTreeMap<String, serde_json::Value>, StoreError> {
        self.query_parsed(hub, "PUBLISH#").await
    }

    // Pending publishes (work an HTTP call could not finish; the sweep picks them up).

    /// Marks the tenant as needing a full publish with marker `token`.
    pub async fn mark_pending(&self, hub: &TenantSlug, token: &str) -> Result<(), StoreError> {
        self.swap_pending(hub, token).await.map(|_| ())
    }

    /// Like [`HubStore::mark_pending`], answering the marker it replaced (so an abandoned change can put
    /// it back: see [`HubStore::restore_pending`]).
    pub async fn swap_pending(
        &self,
        hub: &TenantSlug,
        token: &str,
    ) -> Result<Option<String>, StoreError> {
        let out = self
            .client()
            .put_item()
            .table_name(self.table())
            .item(PK, AttributeValue::S(tenant_pk(hub)))
            .item(SK, AttributeValue::S(PENDING_SK.into()))
            .item(DOC, AttributeValue::S(to_json(&token)?))
            .item(GSI1_PK, AttributeValue::S(PENDING_KIND.into()))
            .item(GSI1_SK, AttributeValue::S(hub.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        out.attributes
            .and_then(|i| doc_of(&i))
            .map(|d| parse(&d))
            .transpose()
    }

    /// Undoes [`HubStore::swap_pending`] for a change that wrote nothing: while the marker is still
    /// `token`, it goes back to `previous` (or away, if there was none). A newer marker stays.
    pub async fn restore_pending(
        &self,
        hub: &TenantSlug,
        token: &str,
        previous: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some(previous) = previous else {
            return self.clear_pending(hub, token).await;
        };
        self.put_doc_if(
            tenant_pk(hub),
            PENDING_SK.into(),
            to_json(&previous)?,
            &[
                (GSI1_PK, AttributeValue::S(PENDING_KIND.into())),
                (GSI1_SK, AttributeValue::S(hub.to_string())),
            ],
            &Expect::Doc(to_json(&token)?),
        )
        .await
        .map(|_| ())
    }

    /// The pending marker's retry state, once a sweep failed on it (a new marker starts afresh).
    pub async fn pending_retry(
        &self,
        hub: &TenantSlug,
    ) -> Result<Option<PendingRetry>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(hub)))
            .key(SK, AttributeValue::S(PENDING_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let number = |k: &str| match item.get(k) {
            Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
            _ => None,
        };
        let (Some(attempts), Some(next_attempt_at)) =
            (number("attempts"), number("next_attempt_at"))
        else {
            return Ok(None);
        };
        let last_error = match item.get("last_error") {
            Some(AttributeValue::S(e)) => e.clone(),
            _ => String::new(),
        };
        Ok(Some(PendingRetry {
            attempts: attempts.max(0) as u32,
            next_attempt_at,
            last_error,
        }))
    }

    /// Records a failed sweep of the marker holding `token` (nothing if the marker changed since: a new
    /// change is tried at once).
    pub async fn back_off_pending(
        &self,
        hub: &TenantSlug,
        token: &str,
        retry: &PendingRetry,
    ) -> Result<(), StoreError> {
        use claresia_domain::telemetry::{truncate_marked, MAX_REASON_BYTES};
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(hub)))
            .key(SK, AttributeValue::S(PENDING_SK.into()))
            .update_expression("SET attempts = :a, next_attempt_at = :n, last_error = :e")
            .condition_expression("#d = :d")
            .expression_attribute_names("#d", DOC)
            .expression_attribute_values(":d", AttributeValue::S(to_json(&token)?))
            .expression_attribute_values(":a", AttributeValue::N(retry.attempts.to_string()))
            .expression_attribute_values(":n", AttributeValue::N(retry.next_attempt_at.to_string()))
            .expression_attribute_values(
                ":e",
                AttributeValue::S(truncate_marked(&retry.last_error, MAX_REASON_BYTES)),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if crate::error::condition_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    pub async fn pending_token(&self, hub: &TenantSlug) -> Result<Option<String>, StoreError> {
        self.get_doc(tenant_pk(hub), PENDING_SK.into())
            .await?
            .map(|d| parse(&d))
            .transpose()
    }

    /// Clears the marker only if it is still the one `token` names (a newer request stays pending).
    pub async fn clear_pending(&self, hub: &TenantSlug, token: &str) -> Result<(), StoreError> {
        let res = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(hub)))
            .key(SK, AttributeValue::S(PENDING_SK.into()))
            .condition_expression("#d = :d")
            .expression_attribute_names("#d", DOC)
            .expression_attribute_values(":d", AttributeValue::S(to_json(&token)?))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if crate::error::condition_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("DeleteItem", e)),
        }
    }

    pub async fn pending_tenants(&self) -> Result<Vec<TenantSlug>, StoreError> {
        self.index_tenants(PENDING_KIND).await
    }

    pub(crate) async fn index_tenants(&self, kind: &str) -> Result<Vec<TenantSlug>, StoreError> {
        let mut tenants = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(GSI1)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", GSI1_PK)
                .expression_attribute_values(":k", AttributeValue::S(kind.into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            for item in out.items.unwrap_or_default() {
                if let Some(AttributeValue::S(t)) = item.get(GSI1_SK) {
                    tenants.push(
                        TenantSlug::parse(t).map_err(|e| {
                            StoreError::Corrupt(format!("tenant {t:?} in gsi1: {e}"))
                        })?,
                    );
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(tenants),
            }
        }
    }
}

/// A catalog document a client can read and write conditionally.
#[derive(Debug, Clone, Copy)]
pub enum CatalogDoc<'a> {
    Skill(&'a str),
    Archetype(&'a str),
    Workspaces,
}

impl CatalogDoc<'_> {
    fn sort_key(self) -> String {
        match self {
            CatalogDoc::Skill(id) => format!("SKILL#{id}"),
            CatalogDoc::Archetype(name) => format!("ARCHETYPE#{name}"),
            CatalogDoc::Workspaces => "WORKSPACES".into(),
        }
    }
}

fn doc_of(item: &HashMap<String, AttributeValue>) -> Option<String> {
    match item.get(DOC) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn parse<T: DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
