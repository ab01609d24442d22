//! Response bodies of the endpoints the connector reads. Unknown fields are ignored on purpose: Anthropic
//! adds fields without a version bump.

use serde::Deserialize;

/// `GET /v1/organizations/me`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    /// The product's addition; absent means unknown.
    #[serde(default)]
    pub zero_retention: Option<bool>,
}

/// An item of `GET /v1/organizations/workspaces`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub archived_at: Option<String>,
    #[serde(default)]
    pub display_color: Option<String>,
}
