//! The connector's domain: pure, deterministic code with no I/O.
//!
//! Everything here is named in the product's own words (tenant, admin key, scope, connection) and is
//! unit-tested exhaustively; adapters for Anthropic, DynamoDB and Secrets Manager live in other crates.

pub mod admin_key;
pub mod catalog;
pub mod connection;
pub mod enterprise_feed;
pub mod footer;
pub mod scope;
pub mod skill_ir;
pub mod telemetry;
pub mod tenant;
pub mod transpile;
pub mod work;

pub use admin_key::{AdminKey, AdminKeyError, KeyFingerprint, KeyKind};
pub use connection::{
    Attestation, ConnectionRecord, ConnectionState, ConnectionStatus, LiveConnection, Surface,
    TestOutcome, TestVerdict, ZeroRetention, ZeroRetentionEvidence, ROTATION_DUE_DAYS,
};
pub use scope::{Scope, ScopeReport};
pub use tenant::{Namespace, ParentLink, SubTenant, TenantSlug, TenantSlugError, TopLevelRecord};
