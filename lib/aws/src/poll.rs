//! The audit cursor and poll status of a tenant (hub table, `sk = POLL`), and the tenant's poll lease
//! (`sk = POLL_LEASE`). The lease keeps duplicated or overlapping work items of one tenant from polling at
//! once; every cursor move is also conditioned on the value the run read, so even a run that outlived its
//! lease can never advance a cursor another run has moved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use claresia_domain::TenantSlug;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::batch::back_off;
use crate::error::condition_failed;
use crate::hub::{tenant_pk, PK, SK};
use crate::{HubStore, StoreError};

const POLL_SK: &str = "POLL";
const ROUTING_REV: &str = "routing_rev";
const POLL_LEASE_SK: &str = "POLL_LEASE";
const PUBLISH_LEASE_SK: &str = "PUBLISH_LEASE";
/// BatchGetItem's limit of keys per call.
const BATCH_GET_MAX: usize = 100;

/// What the status shows about polling (stored as JSON in `status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollStatus {
    pub last_poll_at: Option<String>,
    pub last_success_at: Option<String>,
    pub cursor: Option<String>,
    pub events_ingested: u64,
    pub events_skipped: u64,
    pub events_quarantined: u64,
    pub lag_seconds: Option<f64>,
    pub error: Option<String>,
    /// Set when the cursor had aged out of Anthropic's 30-day window and polling restarted from the oldest
    /// available event: events in between may be missing.
    pub gap: Option<String>,
    /// Enterprise: when the Analytics usage was last pulled (hourly), and how many rows it upserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_polled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_rows: Option<u64>,
    /// Enterprise: the days of the usage pull under way already stored (a pull cut short by a tick's
    /// time continues with the others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage_days_done: Vec<String>,
    /// Enterprise: the latest changes to our plugins made outside the connector (newest first, at most
    /// 20); each is repaired by the reconcile the poller schedules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<claresia_domain::enterprise_feed::DriftNote>,
    /// Enterprise: the API key ids the connector's own writes carry (learned from the feed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connector_api_key_ids: Vec<String>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i128) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A tenant's poll item as a run reads it at the start of its tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollState {
    pub cursor: Option<String>,
    pub status: PollStatus,
    /// Changes whenever the tenant's routing (publish ledger, workspace mappings) changes, so a poller
    /// may keep the routing it read in memory until this moves.
    pub routing_rev: Option<String>,
}

impl HubStore {
    fn update_poll_item(&self, tenant: &TenantSlug) -> UpdateItemFluentBuilder {
        self.client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
    }

    /// Takes `tenant`'s poll lease until `until_ms` if it is free, expired, or already `owner`'s;
    /// `false` when another run polls the tenant.
    pub async fn acquire_poll_lease(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        now_ms: i128,
        until_ms: i128,
    ) -> Result<bool, StoreError> {
        self.acquire_lease(tenant_pk(tenant), POLL_LEASE_SK, owner, now_ms, until_ms)
            .await
    }

    /// Gives the poll lease back if `owner` still holds it (the next item need not wait for it to lapse).
    pub async fn release_poll_lease(
        &self,
        tenant: &TenantSlug,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.release_lease(tenant_pk(tenant), POLL_LEASE_SK, owner)
            .await
    }

    /// Takes the lease that serializes the publishes of `hub`'s catalog (requests and sweeps): one
    /// publish at a time plans from the catalog and writes to Anthropic, so the last one to run after the
    /// last catalog change leaves Anthropic matching it.
    pub async fn acquire_publish_lease(
        &self,
        hub: &TenantSlug,
        owner: &str,
        now_ms: i128,
        until_ms: i128,
    ) -> Result<bool, StoreError> {
        self.acquire_lease(tenant_pk(hub), PUBLISH_LEASE_SK, owner, now_ms, until_ms)
            .await
    }

    pub async fn release_publish_lease(
        &self,
        hub: &TenantSlug,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.release_lease(tenant_pk(hub), PUBLISH_LEASE_SK, owner)
            .await
    }

    /// A lease item: taken when free, expired, or already `owner`'s; a holder that dies lets it lapse.
    async fn acquire_lease(
        &self,
        pk: String,
        sk: &str,
        owner: &str,
        now_ms: i128,
        until_ms: i128,
    ) -> Result<bool, StoreError> {
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression("SET lease_owner = :o, lease_until = :u")
            .condition_expression(
                "attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :o",
            )
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        conditional(res)
    }

    /// Deletes the lease item if `owner` still holds it: nothing of a finished holder stays behind.
    async fn release_lease(&self, pk: String, sk: &str, owner: &str) -> Result<bool, StoreError> {
        let res = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key(PK, s(pk))
            .key(SK, s(sk))
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("DeleteItem", e)),
        }
    }

    /// Every given tenant's poll item (cursor, last status, routing revision), strongly consistent, 100
    /// tenants per round trip, 8 round trips in flight. A tenant never polled answers the default.
    pub async fn poll_states(
        &self,
        tenants: &[TenantSlug],
    ) -> Result<HashMap<TenantSlug, PollState>, StoreError> {
        let mut out: HashMap<TenantSlug, PollState> = tenants
            .iter()
            .map(|t| (t.clone(), PollState::default()))
            .collect();
        let by_pk: HashMap<String, TenantSlug> =
            tenants.iter().map(|t| (tenant_pk(t), t.clone())).collect();
        // The futures are built first: a stream closure borrowing `by_pk` would make the caller's
        // future not `Send` for every lifetime (what axum and Lambda need).
        let reads: Vec<_> = tenants
            .chunks(BATCH_GET_MAX)
            .map(|chunk| self.poll_states_chunk(chunk, &by_pk))
            .collect();
        let chunks: Vec<Result<Vec<(TenantSlug, PollState)>, StoreError>> =
            stream::iter(reads).buffer_unordered(8).collect().await;
        for chunk in chunks {
            out.extend(chunk?);
        }
        Ok(out)
    }

    async fn poll_states_chunk(
        &self,
        chunk: &[TenantSlug],
        by_pk: &HashMap<String, TenantSlug>,
    ) -> Result<Vec<(TenantSlug, PollState)>, StoreError> {
        let mut out = Vec::new();
        let keys: Vec<HashMap<String, AttributeValue>> = chunk
            .iter()
            .map(|t| HashMap::from([(PK.into(), s(tenant_pk(t))), (SK.into(), s(POLL_SK))]))
            .collect();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        let mut attempt = 0u32;
        while let Some(request) = pending.take() {
            attempt += 1;
            let res = self
                .client()
                .batch_get_item()
                .request_items(self.table(), request)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("BatchGetItem", e))?;
            for item in res
                .responses
                .unwrap_or_default()
                .remove(self.table())
                .unwrap_or_default()
            {
                let tenant = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => by_pk.get(pk),
                    _ => None,
                };
                if let Some(t) = tenant {
                    out.push((t.clone(), state_of(&item)?));
                }
            }
            // Throttled keys come back unprocessed: ask again for those.
            pending = res
                .unprocessed_keys
                .unwrap_or_default()
                .remove(self.table())
                .filter(|k| !k.keys.is_empty());
            if let Some(left) = &pending {
                back_off("BatchGetItem", attempt, left.keys.len(), "keys").await?;
            }
        }
        Ok(out)
    }

    /// Marks the tenant's routing as changed (after the change is written, so a poller that reads the old
    /// revision re-reads the routing next time at worst once too often, never too rarely).
    pub async fn touch_routing(&self, tenant: &TenantSlug) -> Result<(), StoreError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let rev = format!(
            "{}-{}-{}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.update_poll_item(tenant)
            .update_expression("SET #r = :r")
            .expression_attribute_names("#r", ROUTING_REV)
            .expression_attribute_values(":r", s(rev))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }

    /// Moves the cursor from `from` to `to` if nobody moved it since this run read it.
    pub async fn advance_cursor(
        &self,
        tenant: &TenantSlug,
        from: Option<&str>,
        to: &str,
    ) -> Result<bool, StoreError> {
        let req = self
            .update_poll_item(tenant)
            .update_expression("SET #c = :to")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":to", s(to));
        conditional(unmoved(req, from).send().await)
    }

    /// Forgets the cursor (it aged out of Anthropic's window): polling restarts from the oldest event.
    pub async fn reset_cursor(
        &self,
        tenant: &TenantSlug,
        expired: &str,
    ) -> Result<bool, StoreError> {
        let req = self
            .update_poll_item(tenant)
            .update_expression("REMOVE #c")
            .expression_attribute_names("#c", "cursor");
        conditional(unmoved(req, Some(expired)).send().await)
    }

    /// Records the run's status if the cursor is still at `cursor`, the value the run last read or wrote.
    /// With `advance = Some(to)` the same write also moves the cursor on to `to`: the last page of a run
    /// costs one write, not two. `false` when the cursor had moved (nothing written).
    pub async fn finish_poll(
        &self,
        tenant: &TenantSlug,
        status: &PollStatus,
        cursor: Option<&str>,
        advance: Option<&str>,
    ) -> Result<bool, StoreError> {
        let doc = status_doc(status)?;
        let req = self
            .update_poll_item(tenant)
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":st", s(doc));
        let req = match advance {
            None => req.update_expression("SET #st = :st"),
            Some(to) => req
                .update_expression("SET #st = :st, #c = :to")
                .expression_attribute_values(":to", s(to)),
        };
        conditional(unmoved(req, cursor).send().await)
    }

    /// Records a run's status alone (no cursor move, no condition): a failed run's error must reach the
    /// status even when the run cannot tell where the cursor is.
    pub async fn record_poll_status(
        &self,
        tenant: &TenantSlug,
        status: &PollStatus,
    ) -> Result<(), StoreError> {
        let doc = status_doc(status)?;
        self.update_poll_item(tenant)
            .update_expression("SET #st = :st")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(doc))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }

    pub async fn poll_status(&self, tenant: &TenantSlug) -> Result<Option<PollStatus>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        status_of(&out.item.unwrap_or_default())
    }
}

/// The condition of every write a run makes to a tenant's poll item: the cursor (`#c`) is still `from`,
/// the value the run read (or last moved it to).
fn unmoved(req: UpdateItemFluentBuilder, from: Option<&str>) -> UpdateItemFluentBuilder {
    match from {
        Some(f) => req
            .condition_expression("#c = :from")
            .expression_attribute_values(":from", s(f)),
        None => req.condition_expression("attribute_not_exists(#c)"),
    }
}

/// The status as stored: its error text (an upstream message, whatever its size) cut to 1 KiB, so a
/// tenant's POLL item stays a few KB — 100 of them per BatchGetItem are far inside its 16 MB answer.
fn status_doc(status: &PollStatus) -> Result<String, StoreError> {
    use claresia_domain::telemetry::{truncate_marked, MAX_REASON_BYTES};
    let bounded = PollStatus {
        error: status
            .error
            .as_deref()
            .map(|e| truncate_marked(e, MAX_REASON_BYTES)),
        gap: status
            .gap
            .as_deref()
            .map(|g| truncate_marked(g, MAX_REASON_BYTES)),
        ..status.clone()
    };
    serde_json::to_string(&bounded).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn state_of(item: &HashMap<String, AttributeValue>) -> Result<PollState, StoreError> {
    Ok(PollState {
        cursor: cursor_of(item),
        status: status_of(item)?.unwrap_or_default(),
        routing_rev: match item.get(ROUTING_REV) {
            Some(AttributeValue::S(r)) => Some(r.clone()),
            _ => None,
        },
    })
}

fn status_of(item: &HashMap<String, AttributeValue>) -> Result<Option<PollStatus>, StoreError> {
    let mut status: Option<PollStatus> = match item.get("status") {
        Some(AttributeValue::S(d)) => {
            Some(serde_json::from_str(d).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        }
        _ => None,
    };
    if let Some(st) = status.as_mut() {
        st.cursor = cursor_of(item);
    }
    Ok(status)
}

fn cursor_of(item: &HashMap<String, AttributeValue>) -> Option<String> {
    match item.get("cursor") {
        Some(AttributeValue::S(c)) => Some(c.clone()),
        _ => None,
    }
}

/// A conditional `UpdateItem`: `true` if it applied, `false` if its condition did not hold (an answer, not
/// an error: another run holds the lease or moved the cursor).
fn conditional<T>(
    res: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        >,
    >,
) -> Result<bool, StoreError> {
    match res {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
    }
}
