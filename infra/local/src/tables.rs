//! Creates the DynamoDB tables exactly as `template.yaml` defines them, so local and deployed tables can
//! never drift: there is no second, hand-written copy of a table definition.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use serde_norway::Value;

pub const TEMPLATE: &str = include_str!("../../../template.yaml");

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("template.yaml: {0}")]
    Template(String),
    #[error("CreateTable {table}: {message}")]
    Create { table: String, message: String },
}

/// A table as the template declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub logical_id: String,
    pub name_pattern: String,
    pub attributes: Vec<(String, String)>,
    pub key_schema: Vec<(String, String)>,
    pub indexes: Vec<IndexDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    pub name: String,
    pub key_schema: Vec<(String, String)>,
    pub projection: String,
}

impl TableDef {
    /// The table name for a stage (`!Sub "${Stage}-claresia-hub"`).
    pub fn name(&self, stage: &str) -> String {
        self.name_pattern.replace("${Stage}", stage)
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, TableError> {
    v.get(k)
        .map(untag)
        .ok_or_else(|| TableError::Template(format!("missing {k}")))
}

fn text(v: &Value, k: &str) -> Result<String, TableError> {
    field(v, k)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| TableError::Template(format!("{k} is not a string")))
}

fn pairs(v: &Value, a: &str, b: &str) -> Result<Vec<(String, String)>, TableError> {
    field(v, a.split('/').next().unwrap_or(a))?
        .as_sequence()
        .ok_or_else(|| TableError::Template(format!("{a} is not a list")))?
        .iter()
        .map(|e| {
            let mut parts = b.split('/');
            let (x, y) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            Ok((text(e, x)?, text(e, y)?))
        })
        .collect()
}

/// Every `AWS::DynamoDB::Table` in the template.
pub fn table_defs() -> Result<Vec<TableDef>, TableError> {
    let doc: Value =
        serde_norway::from_str(TEMPLATE).map_err(|e| TableError::Template(e.to_string()))?;
    let resources = field(&doc, "Resources")?
        .as_mapping()
        .ok_or_else(|| TableError::Template("Resources is not a mapping".into()))?;
    let mut out = Vec::new();
    for (id, res) in resources {
        if res.get("Type").and_then(Value::as_str) != Some("AWS::DynamoDB::Table") {
            continue;
        }
        let props = field(res, "Properties")?;
        let mut indexes = Vec::new();
        if let Some(gsis) = props
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_sequence)
        {
            for g in gsis {
                indexes.push(IndexDef {
                    name: text(g, "IndexName")?,
                    key_schema: pairs(g, "KeySchema", "AttributeName/KeyType")?,
                    projection: text(field(g, "Projection")?, "ProjectionType")?,
                });
            }
        }
        out.push(TableDef {
            logical_id: id.as_str().unwrap_or_default().to_owned(),
            name_pattern: text(props, "TableName")?,
            attributes: pairs(props, "AttributeDefinitions", "AttributeName/AttributeType")?,
            key_schema: pairs(props, "KeySchema", "AttributeName/KeyType")?,
            indexes,
        });
    }
    Ok(out)
}

fn key_schema(pairs: &[(String, String)]) -> Vec<KeySchemaElement> {
    pairs
        .iter()
        .filter_map(|(n, t)| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(KeyType::from(t.as_str()))
                .build()
                .ok()
        })
        .collect()
}

/// Creates every template table for `stage`; answers logical id → table name.
pub async fn create_all(
    client: &aws_sdk_dynamodb::Client,
    stage: &str,
) -> Result<BTreeMap<String, String>, TableError> {
    let mut names = BTreeMap::new();
    for def in table_defs()? {
        let name = def.name(stage);
        let mut req = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key_schema(&def.key_schema)));
        for (n, t) in &def.attributes {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(n)
                    .attribute_type(ScalarAttributeType::from(t.as_str()))
                    .build()
                    .map_err(|e| TableError::Template(e.to_string()))?,
            );
        }
        for idx in &def.indexes {
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&idx.name)
                    .set_key_schema(Some(key_schema(&idx.key_schema)))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(idx.projection.as_str()))
                            .build(),
                    )
                    .build()
                    .map_err(|e| TableError::Template(e.to_string()))?,
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => {
                return Err(TableError::Create {
                    table: name,
                    message: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
                })
            }
        }
        names.insert(def.logical_id.clone(), name);
    }
    Ok(names)
}
