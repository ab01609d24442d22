//! AWS adapters: narrow, typed wrappers over the real SDK clients. The same code talks to AWS in a deployed
//! stack and to moto on loopback in tests and the local run; only `AWS_ENDPOINT_URL` differs.

pub mod batch;
pub mod catalog;
pub mod error;
pub mod hub;
pub mod keys;
pub mod lazy;
pub mod poll;
pub mod queue;
pub mod sdk;
pub mod telemetry;
pub mod tenants;

pub use catalog::{
    AppliedAccess, CatalogDoc, DriftMark, Expect, LedgerEntry, PendingRetry, Written,
};
pub use error::StoreError;
pub use hub::HubStore;
pub use keys::KeyStore;
pub use lazy::Lazy;
pub use poll::{PollState, PollStatus};
pub use queue::WorkQueue;
pub use telemetry::TelemetryStore;
pub use tenants::{ClaimError, RegisterError};

/// Loads the SDK configuration: from Lambda's environment without profile files, with compiled-in roots
/// (see [`sdk`]).
pub async fn load_sdk_config(native_roots: bool) -> aws_config::SdkConfig {
    sdk::load(native_roots).await
}
