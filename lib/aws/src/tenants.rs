//! Sub-tenants as an owned resource. A parent registers each sub-tenant explicitly; the link is stored twice
//! in the hub table and written together: `PARENT` on the sub-tenant's `pk` (the one small item the
//! authorization decision reads) and `SUBTENANT#{sub}` on the parent's `pk` (the parent's list).
//! Removing a sub-tenant keeps both, marked inactive, so its telemetry stays its parent's to read and the
//! slug cannot be claimed by another tenant.
//!
//! The same `PARENT` item is the slug's **namespace item**: a parent link, or an operator's top-level
//! provisioning (`top_level`), never both. Every claim on a slug is a conditional write of that one item,
//! so a registration, a provisioning, a release and a first connect exclude each other.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use claresia_domain::{Namespace, ParentLink, SubTenant, TenantSlug, TopLevelRecord};

use crate::hub::{tenant_pk, PK, SK};
use crate::{HubStore, StoreError, TelemetryStore};

const PARENT_SK: &str = "PARENT";
/// The slug's namespace item (see the module doc).
pub(crate) const NAMESPACE_SK: &str = PARENT_SK;
const SUB_PREFIX: &str = "SUBTENANT#";
const CONNECTION_SK: &str = "CONNECTION";
const DOC: &str = "doc";
/// Plain attributes beside the document, for the conditions and the authorization read's projection.
pub(crate) const PARENT_ATTR: &str = "parent";
const ACTIVE_ATTR: &str = "active";
const TOP_LEVEL_ATTR: &str = "top_level";

/// Why a provisioning or a release did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The namespace item changed between the read and the write.
    #[error("the tenant {0} changed while it was being provisioned; retry")]
    Raced(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a registration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A condition failed between the checks and the write (a connection appeared, another parent won).
    #[error("the tenant {0} changed while it was being registered; retry")]
    Raced(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubStore {
    /// The path tenant's parent link: one strongly consistent read of one small item, projected onto the
    /// two attributes the decision needs. Items written before the registry existed carry no `parent`
    /// attribute and are not links.
    pub async fn parent_link(&self, tenant: &TenantSlug) -> Result<Option<ParentLink>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(tenant)))
            .key(SK, AttributeValue::S(PARENT_SK.into()))
            .projection_expression("#p, #a")
            .expression_attribute_names("#p", PARENT_ATTR)
            .expression_attribute_names("#a", ACTIVE_ATTR)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let (Some(AttributeValue::S(parent)), Some(AttributeValue::Bool(active))) =
            (item.get(PARENT_ATTR), item.get(ACTIVE_ATTR))
        else {
            return Ok(None);
        };
        let parent = TenantSlug::parse(parent)
            .map_err(|e| StoreError::Corrupt(format!("parent of {tenant}: {e}")))?;
        Ok(Some(ParentLink {
            parent,
            active: *active,
        }))
    }

    /// Who `tenant` belongs to: its namespace item, read strongly consistent.
    pub async fn namespace(&self, tenant: &TenantSlug) -> Result<Namespace, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(tenant)))
            .key(SK, AttributeValue::S(PARENT_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(Namespace::Unclaimed);
        };
        if item.contains_key(PARENT_ATTR) {
            return parse_record(&item).map(Namespace::SubTenant);
        }
        if matches!(item.get(TOP_LEVEL_ATTR), Some(AttributeValue::Bool(true))) {
            return match item.get(DOC) {
                Some(AttributeValue::S(doc)) => serde_json::from_str(doc)
                    .map(Namespace::TopLevel)
                    .map_err(|e| StoreError::Corrupt(format!("top-level record of {tenant}: {e}"))),
                _ => Err(StoreError::Corrupt(format!(
                    "top-level record of {tenant} without a document"
                ))),
            };
        }
        Ok(Namespace::Unclaimed)
    }

    /// Provisions `record.tenant` as a top-level tenant, unless a parent holds it (checked again by the
    /// write's condition, so a registration racing this one loses one way or the other).
    pub async fn provision_top_level(&self, record: &TopLevelRecord) -> Result<(), ClaimError> {
        let res = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(top_level_item(record)?))
            // Unclaimed: no parent, and not provisioned by a concurrent operator (its record stays).
            .condition_expression("attribute_not_exists(#p) AND attribute_not_exists(#t)")
            .expression_attribute_names("#p", PARENT_ATTR)
            .expression_attribute_names("#t", TOP_LEVEL_ATTR)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if crate::error::condition_failed(&e) => {
                Err(ClaimError::Raced(record.tenant.to_string()))
            }
            Err(e) => Err(StoreError::dynamo("PutItem", e).into()),
        }
    }

    /// Releases `held` from its parent and provisions its slug as a top-level tenant in one transaction:
    /// the link becomes the top-level record (only if it is still that parent's), and the parent's listing
    /// of it goes.
    pub async fn release_sub_tenant(
        &self,
        held: &SubTenant,
        record: &TopLevelRecord,
    ) -> Result<(), ClaimError> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Corrupt(e.to_string());
        let became = Put::builder()
            .table_name(self.table())
            .set_item(Some(top_level_item(record)?))
            .condition_expression("#p = :p")
            .expression_attribute_names("#p", PARENT_ATTR)
            .expression_attribute_values(":p", AttributeValue::S(held.parent.to_string()))
            .build()
            .map_err(build)?;
        let unlisted = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(self.table())
            .key(PK, AttributeValue::S(tenant_pk(&held.parent)))
            .key(
                SK,
                AttributeValue::S(format!("{SUB_PREFIX}{}", held.tenant)),
            )
            .build()
            .map_err(build)?;
        let res = self
            .client()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(became).build())
            .transact_items(TransactWriteItem::builder().delete(unlisted).build())
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_cancelled(&e) => Err(ClaimError::Raced(held.tenant.to_string())),
            Err(e) => Err(StoreError::dynamo("TransactWriteItems", e).into()),
        }
    }

    /// The whole registration record of `sub`, if it has a parent.
    pub async fn sub_tenant_record(
        &self,
        sub: &TenantSlug,
    ) -> Result<Option<SubTenant>, StoreError> {
        Ok(match self.namespace(sub).await? {
            Namespace::SubTenant(record) => Some(record),
            Namespace::TopLevel(_) | Namespace::Unclaimed => None,
        })
    }

    /// Every sub-tenant `parent` registered (active and removed), by slug.
    pub async fn sub_tenants(
        &self,
        parent: &TenantSlug,
    ) -> Result<BTreeMap<TenantSlug, SubTenant>, StoreError> {
        Ok(self
            .query_parsed::<SubTenant>(parent, SUB_PREFIX)
            .await?
            .into_values()
            .map(|r| (r.tenant.clone(), r))
            .collect())
    }

    /// One page of the sub-tenants `parent` registered, in slug order after `after`.
    pub async fn sub_tenants_page(
        &self,
        parent: &TenantSlug,
        limit: i32,
        after: Option<&str>,
    ) -> Result<(Vec<SubTenant>, Option<String>), StoreError> {
        let (docs, next) = self.docs_page(parent, SUB_PREFIX, limit, after).await?;
        let records = docs
            .iter()
            .map(|(_, d)| {
                serde_json::from_str(d).map_err(|e| StoreError::Corrupt(format!("sub-tenant: {e}")))
            })
            .collect::<Result<Vec<SubTenant>, _>>()?;
        Ok((records, next))
    }

    /// Whether `tenant` has any hub item of its own (a connection in any state, catalog, ledger, cursor),
    /// not counting a parent link.
    pub async fn has_own_items(&self, tenant: &TenantSlug) -> Result<bool, StoreError> {
        let page = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", AttributeValue::S(tenant_pk(tenant)))
            .projection_expression("#sk")
            .expression_attribute_names("#sk", SK)
            .consistent_read(true)
            .limit(2)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", e))?;
        Ok(page
            .items
            .unwrap_or_default()
            .iter()
            .any(|i| !matches!(i.get(SK), Some(AttributeValue::S(sk)) if sk == PARENT_SK)))
    }

    /// Writes the link on both sides in one transaction. The conditions close the races the caller's
    /// checks cannot: `sub` has no parent but `record.parent`, has no connection record, and the parent is
    /// not itself a sub-tenant.
    pub async fn put_sub_tenant(&self, record: &SubTenant) -> Result<(), RegisterError> {
        let sub_pk = tenant_pk(&record.tenant);
        let parent_pk = tenant_pk(&record.parent);
        let doc = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let item = |pk: String, sk: String| -> HashMap<String, AttributeValue> {
            HashMap::from([
                (PK.to_owned(), AttributeValue::S(pk)),
                (SK.to_owned(), AttributeValue::S(sk)),
                (DOC.to_owned(), AttributeValue::S(doc.clone())),
                (
                    PARENT_ATTR.to_owned(),
                    AttributeValue::S(record.parent.to_string()),
                ),
                (ACTIVE_ATTR.to_owned(), AttributeValue::Bool(record.active)),
            ])
        };
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Corrupt(e.to_string());
        let link = Put::builder()
            .table_name(self.table())
            .set_item(Some(item(sub_pk.clone(), PARENT_SK.into())))
            .condition_expression("attribute_not_exists(#pk) OR #p = :p")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#p", PARENT_ATTR)
            .expression_attribute_values(":p", AttributeValue::S(record.parent.to_string()))
            .build()
            .map_err(build)?;
        let listed = Put::builder()
            .table_name(self.table())
            .set_item(Some(item(
                parent_pk.clone(),
                format!("{SUB_PREFIX}{}", record.tenant),
            )))
            .build()
            .map_err(build)?;
        let table = self.table();
        let mut tx = self
            .client()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(link).build())
            .transact_items(TransactWriteItem::builder().put(listed).build());
        // A removal gives up a claim: only the link's owner is checked (above), so a slug provisioned in
        // between never leaves the parent's removed sub-tenant stuck.
        let claims = if record.active {
            record.tenant.prefixes_below(&record.parent)
        } else {
            Vec::new()
        };
        if record.active {
            // No connection of its own, and the parent is not itself a sub-tenant.
            tx = tx
                .transact_items(unless_present(table, sub_pk, CONNECTION_SK, PK)?)
                .transact_items(unless_present(table, parent_pk, PARENT_SK, PARENT_ATTR)?);
        }
        // A provisioned or connected slug between the two owns everything below it (`acme-eu` owns
        // `acme-eu-eng`), so `acme` cannot take it. At most 15 prefixes fit in 32 characters: within the
        // transaction's 100 items.
        for owner in claims {
            tx = tx
                .transact_items(unless_present(
                    table,
                    tenant_pk(&owner),
                    PARENT_SK,
                    TOP_LEVEL_ATTR,
                )?)
                .transact_items(unless_present(table, tenant_pk(&owner), CONNECTION_SK, PK)?);
        }
        match tx.send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_cancelled(&e) => {
                Err(RegisterError::Raced(record.tenant.to_string()))
            }
            Err(e) => Err(StoreError::dynamo("TransactWriteItems", e).into()),
        }
    }
}

/// A transaction cancelled because one of its conditions did not hold (someone else's write landed
/// first): an answer. Cancelled for throttling or a conflicting transaction in flight, it is the store's
/// failure, retried by the caller.
pub(crate) fn condition_cancelled(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    }
}

impl TelemetryStore {
    /// Whether any telemetry (normalized, quarantined, or enterprise usage) is stored under `tenant`.
    pub async fn has_events(&self, tenant: &TenantSlug) -> Result<bool, StoreError> {
        for partition in [
            tenant.to_string(),
            format!("quarantine:{tenant}"),
            format!("usage:{tenant}"),
        ] {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(crate::telemetry::BY_TENANT)
                .key_condition_expression("#t = :t")
                .expression_attribute_names("#t", crate::telemetry::TENANT)
                .expression_attribute_values(":t", AttributeValue::S(partition))
                .limit(1)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            if page.count > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A transaction item that holds while the item at (`pk`, `sk`) lacks `attr` (or does not exist: pass the
/// key attribute).
pub(crate) fn unless_present(
    table: &str,
    pk: String,
    sk: &str,
    attr: &str,
) -> Result<TransactWriteItem, StoreError> {
    let check = ConditionCheck::builder()
        .table_name(table)
        .key(PK, AttributeValue::S(pk))
        .key(SK, AttributeValue::S(sk.into()))
        .condition_expression("attribute_not_exists(#a)")
        .expression_attribute_names("#a", attr)
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(TransactWriteItem::builder().condition_check(check).build())
}

/// The namespace item of a provisioned top-level tenant.
fn top_level_item(record: &TopLevelRecord) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let doc = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(HashMap::from([
        (PK.to_owned(), AttributeValue::S(tenant_pk(&record.tenant))),
        (SK.to_owned(), AttributeValue::S(PARENT_SK.into())),
        (DOC.to_owned(), AttributeValue::S(doc)),
        (TOP_LEVEL_ATTR.to_owned(), AttributeValue::Bool(true)),
    ]))
}

fn parse_record(item: &HashMap<String, AttributeValue>) -> Result<SubTenant, StoreError> {
    match item.get(DOC) {
        Some(AttributeValue::S(doc)) => serde_json::from_str(doc)
            .map_err(|e| StoreError::Corrupt(format!("sub-tenant record: {e}"))),
        _ => Err(StoreError::Corrupt(
            "sub-tenant record without a document".into(),
        )),
    }
}
