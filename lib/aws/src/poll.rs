//! The audit cursor and poll status of a tenant (hub table, `sk = POLL`). A lease keeps overlapping or
//! duplicated schedule deliveries from polling the same tenant at once; the cursor only moves with a
//! condition on the value read and on holding the lease, so two runs can never both advance it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use claresia_domain::TenantSlug;
use serde::{Deserialize, Serialize};

use crate::hub::{tenant_pk, PK, SK};
use crate::{HubStore, StoreError};

const POLL_SK: &str = "POLL";

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

impl HubStore {
    /// Takes the tenant's poll lease until `until_ms` if it is free, expired, or already ours; answers the
    /// cursor and the last status (one round trip), or `None` when another run holds the lease.
    pub async fn acquire_poll_lease(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        now_ms: i128,
        until_ms: i128,
    ) -> Result<Option<(Option<String>, PollStatus)>, StoreError> {
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
                Ok(Some((
                    cursor_of(&item),
                    status_of(&item)?.unwrap_or_default(),
                )))
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

    /// Moves the cursor from `from` to `to` if this run still holds the lease and nobody moved it since.
    pub async fn advance_cursor(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .update_expression("SET #c = :to")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":o", s(owner));
        req = match from {
            Some(f) => req
                .condition_expression("lease_owner = :o AND #c = :from")
                .expression_attribute_values(":from", s(f)),
            None => req.condition_expression("lease_owner = :o AND attribute_not_exists(#c)"),
        };
        conditional(req.send().await)
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

    /// Records the run's status and releases the lease (if still ours).
    pub async fn finish_poll(
        &self,
        tenant: &TenantSlug,
        owner: &str,
        status: &PollStatus,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant)))
            .key(SK, s(POLL_SK))
            .update_expression("SET #st = :st REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :o")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(doc))
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        // A lost lease is fine: the run that holds it records its own status.
        conditional(res).map(|_| ())
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
