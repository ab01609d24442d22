//! The local stack, shared by the dev command and the integration tests: real moto on loopback reached by
//! the real AWS SDK, DynamoDB tables created from `template.yaml` itself, the Anthropic simulator, and a
//! dev API gateway that verifies JWTs and hands the handlers API Gateway's request shape.

pub mod gateway;
pub mod jwt;
pub mod moto;
pub mod queues;
pub mod tables;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// The SDK configuration for a local AWS-compatible endpoint (moto).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(claresia_aws::sdk::http_client(false))
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "local"))
        .load()
        .await
}

/// The workspace root (where `template.yaml` and `.venv` live).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
