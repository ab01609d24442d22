//! The `telemetry_event` table: one item per Anthropic event, keyed `{org_id}#{event_id}` (`event_uid`), so
//! writing an event again — a redelivery, another timestamp, a workspace re-mapped since — writes the same
//! item. The `by_tenant` index (`tenant`, `{occurred_at}#{event_id}`) reads a tenant's events newest first.
//! Unparsable events are kept raw under `quarantine:{tenant}`; enterprise usage rows (one per hub, skill,
//! day and RBAC group) under `usage:{tenant}`, by date.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use claresia_domain::enterprise_feed::UsageRow;
use claresia_domain::telemetry::TelemetryEvent;
use claresia_domain::TenantSlug;

use crate::batch::{back_off, check_item_size};
use crate::StoreError;
use claresia_domain::telemetry::{truncate_marked, MAX_QUARANTINED_RAW_BYTES, MAX_REASON_BYTES};

pub const EVENT_UID: &str = "event_uid";
pub const TENANT: &str = "tenant";
pub const EVENT_KEY: &str = "event_key";
pub const BY_TENANT: &str = "by_tenant";
const BATCH: usize = 25;

#[derive(Debug, Clone)]
pub struct TelemetryStore {
    client: crate::Lazy<Client>,
    table: String,
}

/// An event that could not be normalized, kept with its raw JSON.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub key: String,
    pub raw: String,
    pub reason: String,
}

pub fn event_key(e: &TelemetryEvent) -> String {
    format!("{}#{}", e.occurred_at, e.event_id)
}

/// A page of events with each one's `(event_key, event_uid)`, and where the next page starts.
pub type EventPage = (
    Vec<((String, String), TelemetryEvent)>,
    Option<(String, String)>,
);

fn usage_partition(tenant: &TenantSlug) -> String {
    format!("usage:{tenant}")
}

/// The item's key: the event's id within its Anthropic organization.
pub fn event_uid(org_id: &str, event_id: &str) -> String {
    format!("{org_id}#{event_id}")
}

impl TelemetryStore {
    pub fn new(client: impl Into<crate::Lazy<Client>>, table: impl Into<String>) -> Self {
        TelemetryStore {
            client: client.into(),
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Writes every event of organization `org_id` (idempotently: one item per event id); returns how many
    /// DynamoDB write calls it made.
    pub async fn write_events(
        &self,
        org_id: &str,
        events: &[TelemetryEvent],
    ) -> Result<usize, StoreError> {
        // A redelivered event may sit twice in one page: one item per key (BatchWriteItem refuses two).
        let mut items: BTreeMap<String, HashMap<String, AttributeValue>> = BTreeMap::new();
        for e in events {
            let mut item: HashMap<String, AttributeValue> =
                serde_dynamo::to_item(e).map_err(|err| StoreError::Corrupt(err.to_string()))?;
            let uid = event_uid(org_id, &e.event_id);
            item.insert(EVENT_UID.into(), AttributeValue::S(uid.clone()));
            item.insert(EVENT_KEY.into(), AttributeValue::S(event_key(e)));
            items.insert(uid, item);
        }
        self.batch_put(items.into_values().collect()).await
    }

    /// Which of organization `org_id`'s event ids are already stored (a re-read overlap stores only the
    /// rest, so nothing is counted, re-timestamped or flagged twice).
    pub async fn stored_event_ids(
        &self,
        org_id: &str,
        ids: &[String],
    ) -> Result<BTreeSet<String>, StoreError> {
        let unique: BTreeSet<&String> = ids.iter().collect();
        let by_uid: HashMap<String, &String> = unique
            .iter()
            .map(|id| (event_uid(org_id, id), *id))
            .collect();
        let uids: Vec<&String> = by_uid.keys().collect();
        let mut found = BTreeSet::new();
        for chunk in uids.chunks(100) {
            let keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|u| HashMap::from([(EVENT_UID.to_owned(), AttributeValue::S((*u).clone()))]))
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("#u")
                    .expression_attribute_names("#u", EVENT_UID)
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
            let mut attempt = 0u32;
            while let Some(request) = pending.take() {
                attempt += 1;
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("BatchGetItem", e))?;
                for item in res
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let Some(AttributeValue::S(u)) = item.get(EVENT_UID) {
                        if let Some(id) = by_uid.get(u) {
                            found.insert((*id).clone());
                        }
                    }
                }
                pending = res
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.table)
                    .filter(|k| !k.keys.is_empty());
                if let Some(left) = &pending {
                    back_off("BatchGetItem", attempt, left.keys.len(), "keys").await?;
                }
            }
        }
        Ok(found)
    }

    pub async fn write_quarantined(
        &self,
        org_id: &str,
        hub: &TenantSlug,
        items: &[Quarantined],
    ) -> Result<usize, StoreError> {
        let mut unique: BTreeMap<String, HashMap<String, AttributeValue>> = BTreeMap::new();
        for q in items {
            let item = HashMap::from([
                (
                    EVENT_UID.to_owned(),
                    AttributeValue::S(format!("quarantine#{}", event_uid(org_id, &q.key))),
                ),
                (
                    TENANT.to_owned(),
                    AttributeValue::S(format!("quarantine:{hub}")),
                ),
                (EVENT_KEY.to_owned(), AttributeValue::S(q.key.clone())),
                (
                    "raw".to_owned(),
                    AttributeValue::S(truncate_marked(&q.raw, MAX_QUARANTINED_RAW_BYTES)),
                ),
                (
                    "reason".to_owned(),
                    AttributeValue::S(truncate_marked(&q.reason, MAX_REASON_BYTES)),
                ),
            ]);
            unique.insert(q.key.clone(), item);
        }
        self.batch_put(unique.into_values().collect()).await
    }

    async fn batch_put(
        &self,
        items: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<usize, StoreError> {
        for item in &items {
            let key = match item.get(EVENT_KEY) {
                Some(AttributeValue::S(k)) => k.as_str(),
                _ => "?",
            };
            check_item_size(item, &format!("telemetry item {key}"))?;
        }
        let mut calls = 0;
        for chunk in items.chunks(BATCH) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            let mut attempt = 0u32;
            while !pending.is_empty() {
                attempt += 1;
                calls += 1;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    back_off("BatchWriteItem", attempt, pending.len(), "items").await?;
                }
            }
        }
        Ok(calls)
    }

    /// A tenant's events, newest first, from `since` (inclusive) on; `cursor` (the last page's last
    /// `(event_key, event_uid)`) continues a previous page.
    pub async fn events(
        &self,
        tenant: &TenantSlug,
        since: Option<&str>,
        limit: i32,
        cursor: Option<(&str, &str)>,
    ) -> Result<(Vec<TelemetryEvent>, Option<(String, String)>), StoreError> {
        let (events, next) = self.events_keyed(tenant, since, limit, cursor).await?;
        Ok((events.into_iter().map(|(_, e)| e).collect(), next))
    }

    /// Like [`TelemetryStore::events`], with each event's `(event_key, event_uid)`: where a page cut
    /// short (to stay under a response's size) continues.
    pub async fn events_keyed(
        &self,
        tenant: &TenantSlug,
        since: Option<&str>,
        limit: i32,
        cursor: Option<(&str, &str)>,
    ) -> Result<EventPage, StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_TENANT)
            .expression_attribute_names("#t", TENANT)
            .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
            .scan_index_forward(false)
            .limit(limit);
        q = match since {
            Some(s) => q
                .key_condition_expression("#t = :t AND #k >= :s")
                .expression_attribute_names("#k", EVENT_KEY)
                .expression_attribute_values(":s", AttributeValue::S(s.to_owned())),
            None => q.key_condition_expression("#t = :t"),
        };
        if let Some((key, uid)) = cursor {
            q = q
                .exclusive_start_key(TENANT, AttributeValue::S(tenant.to_string()))
                .exclusive_start_key(EVENT_KEY, AttributeValue::S(key.to_owned()))
                .exclusive_start_key(EVENT_UID, AttributeValue::S(uid.to_owned()));
        }
        let out = q.send().await.map_err(|e| StoreError::dynamo("Query", e))?;
        let events = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let key = match (item.get(EVENT_KEY), item.get(EVENT_UID)) {
                    (Some(AttributeValue::S(k)), Some(AttributeValue::S(u))) => {
                        (k.clone(), u.clone())
                    }
                    _ => {
                        return Err(StoreError::Corrupt(
                            "telemetry item without its keys".into(),
                        ))
                    }
                };
                serde_dynamo::from_item(item)
                    .map(|e| (key, e))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next =
            out.last_evaluated_key
                .and_then(|k| match (k.get(EVENT_KEY), k.get(EVENT_UID)) {
                    (Some(AttributeValue::S(key)), Some(AttributeValue::S(uid))) => {
                        Some((key.clone(), uid.clone()))
                    }
                    _ => None,
                });
        Ok((events, next))
    }

    /// Upserts enterprise usage rows: one item per (hub, skill, date, group), so a revised figure
    /// overwrites the one before and a row polled twice is stored once. Indexed under its routed tenant
    /// (`usage:{tenant}`, by date).
    pub async fn write_usage(
        &self,
        hub: &TenantSlug,
        rows: &[UsageRow],
    ) -> Result<usize, StoreError> {
        let mut items: BTreeMap<String, HashMap<String, AttributeValue>> = BTreeMap::new();
        for r in rows {
            let uid = format!(
                "usage#{hub}#{}#{}#{}",
                r.skill_name, r.date, r.rbac_group_id
            );
            let doc = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let item = HashMap::from([
                (EVENT_UID.to_owned(), AttributeValue::S(uid.clone())),
                (
                    TENANT.to_owned(),
                    AttributeValue::S(usage_partition(&r.tenant)),
                ),
                (
                    EVENT_KEY.to_owned(),
                    AttributeValue::S(format!("{}#{}#{}", r.date, r.skill_name, r.rbac_group_id)),
                ),
                ("row".to_owned(), AttributeValue::S(doc)),
            ]);
            items.insert(uid, item);
        }
        self.batch_put(items.into_values().collect()).await
    }

    /// A (sub-)tenant's usage rows with `from <= date <= to`, oldest first; `cursor` (the last page's
    /// `(event_key, event_uid)`) continues a page. `limit` `None`: every row of the range.
    pub async fn usage(
        &self,
        tenant: &TenantSlug,
        from: &str,
        to: &str,
        limit: Option<i32>,
        cursor: Option<(&str, &str)>,
    ) -> Result<(Vec<UsageRow>, Option<(String, String)>), StoreError> {
        let partition = usage_partition(tenant);
        let mut rows = Vec::new();
        let mut start: Option<(String, String)> = cursor.map(|(k, u)| (k.to_owned(), u.to_owned()));
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_TENANT)
                .key_condition_expression("#t = :t AND #k BETWEEN :from AND :to")
                .expression_attribute_names("#t", TENANT)
                .expression_attribute_names("#k", EVENT_KEY)
                .expression_attribute_values(":t", AttributeValue::S(partition.clone()))
                .expression_attribute_values(":from", AttributeValue::S(from.to_owned()))
                // Every key of the last day starts `{to}#`; `$` sorts right after `#`.
                .expression_attribute_values(":to", AttributeValue::S(format!("{to}$")));
            if let Some(n) = limit {
                q = q.limit(n - rows.len() as i32);
            }
            if let Some((key, uid)) = &start {
                q = q
                    .exclusive_start_key(TENANT, AttributeValue::S(partition.clone()))
                    .exclusive_start_key(EVENT_KEY, AttributeValue::S(key.clone()))
                    .exclusive_start_key(EVENT_UID, AttributeValue::S(uid.clone()));
            }
            let out = q.send().await.map_err(|e| StoreError::dynamo("Query", e))?;
            for item in out.items.unwrap_or_default() {
                let Some(AttributeValue::S(doc)) = item.get("row") else {
                    return Err(StoreError::Corrupt("a usage item without its row".into()));
                };
                rows.push(
                    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
            }
            start =
                out.last_evaluated_key
                    .and_then(|k| match (k.get(EVENT_KEY), k.get(EVENT_UID)) {
                        (Some(AttributeValue::S(key)), Some(AttributeValue::S(uid))) => {
                            Some((key.clone(), uid.clone()))
                        }
                        _ => None,
                    });
            let full = limit.is_some_and(|n| rows.len() as i32 >= n);
            if start.is_none() || full {
                return Ok((rows, start));
            }
        }
    }

    /// Every stored item (tests and benchmarks compare it with the simulator's event set).
    pub async fn scan_all(&self) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}
