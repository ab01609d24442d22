//! The hub table: one DynamoDB table (`pk`, `sk`) holding each tenant's items. A sparse index `gsi1`
//! (`gsi1pk`, `gsi1sk`) lists items by kind, e.g. every connected tenant for the poller.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use claresia_domain::{ConnectionRecord, ConnectionState, LiveConnection, TenantSlug};

use crate::StoreError;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const GSI1: &str = "gsi1";
pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";

const CONNECTION_SK: &str = "CONNECTION";
const CONNECTED_KIND: &str = "CONNECTED";

pub fn tenant_pk(tenant: &TenantSlug) -> String {
    format!("TENANT#{tenant}")
}

#[derive(Debug, Clone)]
pub struct HubStore {
    client: crate::Lazy<Client>,
    table: String,
}

impl HubStore {
    pub fn new(client: impl Into<crate::Lazy<Client>>, table: impl Into<String>) -> Self {
        HubStore {
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

    pub async fn connection(
        &self,
        tenant: &TenantSlug,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(tenant_pk(tenant)))
            .key(SK, AttributeValue::S(CONNECTION_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        out.item
            .map(|item| {
                serde_dynamo::from_item(item)
                    .map_err(|e| StoreError::Corrupt(format!("connection of tenant {tenant}: {e}")))
            })
            .transpose()
    }

    /// Writes the whole connection record if it is still at the version `record` was read at (0: there was
    /// none), as version + 1. `false` when another writer got there first (nothing written): re-read and
    /// decide again. A live connection is listed in `gsi1` under `CONNECTED` so the poller finds it without
    /// a scan; a disconnected one drops out of that index.
    pub async fn save_connection(&self, record: &ConnectionRecord) -> Result<bool, StoreError> {
        let read_at = record.version;
        let next = ConnectionRecord {
            version: read_at + 1,
            ..record.clone()
        };
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&next)
            .map_err(|e| StoreError::Corrupt(format!("connection record: {e}")))?;
        item.insert(PK.into(), AttributeValue::S(tenant_pk(&record.tenant)));
        item.insert(SK.into(), AttributeValue::S(CONNECTION_SK.into()));
        if record.state != ConnectionState::Disconnected {
            item.insert(GSI1_PK.into(), AttributeValue::S(CONNECTED_KIND.into()));
            item.insert(GSI1_SK.into(), AttributeValue::S(record.tenant.to_string()));
        }
        if read_at == 0 {
            return self.save_first_connection(item).await;
        }
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#v", "version")
            .condition_expression("#v = :v")
            .expression_attribute_values(":v", AttributeValue::N(read_at.to_string()));
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if crate::error::condition_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("PutItem", e)),
        }
    }

    /// A tenant's first connection record, written only while no parent holds the slug: registration is
    /// conditional on no connection record, this on no parent link, so a first connect and a registration
    /// racing each other never both land (a parent would poll, and read, the customer's own org). Once a
    /// record exists it is never deleted, so later saves need no such check.
    async fn save_first_connection(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<bool, StoreError> {
        use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
        let Some(AttributeValue::S(pk)) = item.get(PK).cloned() else {
            return Err(StoreError::Corrupt("connection item without a key".into()));
        };
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Corrupt(e.to_string());
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#v)")
            .expression_attribute_names("#v", "version")
            .build()
            .map_err(build)?;
        let no_parent = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(crate::tenants::NAMESPACE_SK.into()))
            .condition_expression("attribute_not_exists(#p)")
            .expression_attribute_names("#p", crate::tenants::PARENT_ATTR)
            .build()
            .map_err(build)?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(no_parent)
                    .build(),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if crate::tenants::condition_cancelled(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("TransactWriteItems", e)),
        }
    }

    /// Every tenant with a live connection (connected or needing attention).
    pub async fn connected_tenants(&self) -> Result<Vec<TenantSlug>, StoreError> {
        self.index_tenants(CONNECTED_KIND).await
    }

    /// Every live connection (connected or needing attention), from the index alone and projected onto
    /// what the poller needs: one query per tick instead of one read per tenant, and no whole records.
    pub async fn live_connections(&self) -> Result<Vec<LiveConnection>, StoreError> {
        let mut projection = Vec::new();
        let mut names = HashMap::from([("#k".to_owned(), GSI1_PK.to_owned())]);
        for (i, field) in LiveConnection::FIELDS.iter().enumerate() {
            projection.push(format!("#f{i}"));
            names.insert(format!("#f{i}"), (*field).to_owned());
        }
        let projection = projection.join(", ");
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("#k = :k")
                .projection_expression(&projection)
                .set_expression_attribute_names(Some(names.clone()))
                .expression_attribute_values(":k", AttributeValue::S(CONNECTED_KIND.into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            for item in page.items.unwrap_or_default() {
                out.push(
                    serde_dynamo::from_item(item)
                        .map_err(|e| StoreError::Corrupt(format!("connection in gsi1: {e}")))?,
                );
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}
