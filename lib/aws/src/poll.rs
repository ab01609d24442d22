//! The audit cursor and poll status of a tenant (hub table, `sk = POLL`). A lease keeps overlapping or
//! duplicated schedule deliveries from polling the same tenant at once; the cursor only moves with a
//! condition on the value read and on holding the lease, so two runs can never both advance it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use claresia_domain::TenantSlug;
use serde::{Deserialize, Serialize};

use crate::hub::{tenant_pk, PK, SK};
use crate::{HubStore, StoreError};

const POLL_SK: &str = "POLL";
const ROUTING_REV: &str = "routing_rev";

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
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i128) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// What taking the lease answers, in the same round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollLease {
    pub cursor: Option<String>,
    pub status: PollStatus,
    /// Changes whenever the tenant's routing (publish ledger, workspace mappings) changes, so a poller
    /// may keep the routing it read in memory until this moves.
    pub routing_rev: Option<String>,
}

impl HubStore {
    /// Takes the tenant's poll lease until `until_ms` if it is free, expired, or already ours; answers the
    /// cursor, the last status and the routing revision (one round trip), or `None` when another run holds
    /// the lease.
    pub async fn acquire_poll_lease(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        now_ms: i128,
        until_ms: i128,
    ) -> Result<Option<PollLease>, StoreError> {
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .update_expression("SET lease_owner = :o, lease_until = :u")
            .condition_expression(
                "attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :o",
            )
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Some(PollLease {
                    cursor: cursor_of(&item),
                    status: status_of(&item)?.unwrap_or_default(),
                    routing_rev: match item.get(ROUTING_REV) {
                        Some(AttributeValue::S(r)) => Some(r.clone()),
                        _ => None,
                    },
                }))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
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
        self.client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .update_expression("SET #r = :r")
            .expression_attribute_names("#r", ROUTING_REV)
            .expression_attribute_values(":r", s(rev))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }

    /// Moves the cursor from `from` to `to` if this run still holds the lease and nobody moved it since.
    pub async fn advance_cursor(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<bool, StoreError> {
        let req = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .update_expression("SET #c = :to")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":o", s(owner));
        conditional(held_and_unmoved(req, from).send().await)
    }

    /// Forgets the cursor (it aged out of Anthropic's window): polling restarts from the oldest event.
    pub async fn reset_cursor(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        expired: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .update_expression("REMOVE #c")
            .condition_expression("lease_owner = :o AND #c = :old")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":old", s(expired))
            .send()
            .await;
        conditional(res)
    }

    /// Records the run's status and releases the lease (if still ours). With `advance = Some((from, to))`
    /// the same write also moves the cursor from `from` to `to`, under the same conditions as
    /// [`advance_cursor`](Self::advance_cursor): the last page of a run costs one write, not two.
    /// `false` when the lease was lost or the cursor had moved (nothing written).
    pub async fn finish_poll(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        status: &PollStatus,
        advance: Option<(Option<&str>, &str)>,
    ) -> Result<bool, StoreError> {
        let doc = serde_json::to_string(status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut req = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(doc))
            .expression_attribute_values(":o", s(owner));
        req = match advance {
            None => req
                .update_expression("SET #st = :st REMOVE lease_owner, lease_until")
                .condition_expression("lease_owner = :o"),
            Some((from, to)) => held_and_unmoved(
                req.update_expression("SET #st = :st, #c = :to REMOVE lease_owner, lease_until")
                    .expression_attribute_names("#c", "cursor")
                    .expression_attribute_values(":to", s(to)),
                from,
            ),
        };
        conditional(req.send().await)
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

/// The condition of every cursor move: this run (`:o`) still holds the lease and the cursor (`#c`) is still
/// `from`, the value it read.
fn held_and_unmoved(
    req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    from: Option<&str>,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    match from {
        Some(f) => req
            .condition_expression("lease_owner = :o AND #c = :from")
            .expression_attribute_values(":from", s(f)),
        None => req.condition_expression("lease_owner = :o AND attribute_not_exists(#c)"),
    }
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
        Err(e)
            if e.as_service_error()
                .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
    }
}
