//! The connector's HTTP API as one library call: [`App::handle`] takes an API Gateway (HTTP API, payload
//! v2) request and answers it. A Lambda's `main.rs` builds the [`App`] once and hands it every event; the
//! local dev server hands it the same request shape.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod error;
pub mod http;
mod ingest;
mod lease;
pub mod logging;
pub mod metrics;
pub mod namespace;
pub mod paging;
pub mod poller;
pub mod precondition;
pub mod publish;
pub mod reads;
pub mod sub_tenants;
pub mod surface;
pub mod worker;

use claresia_anthropic::{AnthropicClient, ClientConfig};
use claresia_aws::{HubStore, KeyStore, Lazy, TelemetryStore};

pub use config::Config;
pub use error::{ApiError, RecordError, WorkError};

/// Everything a request needs, built once per Lambda sandbox (clients keep their connection pools).
#[derive(Clone)]
pub struct App {
    pub config: Config,
    /// The Anthropic port (the only way to Anthropic: services never hold the HTTP client): one adapter per surface, chosen per connection.
    pub surfaces: std::sync::Arc<surface::Surfaces>,
    pub hub: HubStore,
    pub keys: KeyStore,
    pub telemetry: TelemetryStore,
    pub key_cache: std::sync::Arc<poller::KeyCache>,
    pub routing_cache: std::sync::Arc<poller::RoutingCache>,
    /// Bounds the telemetry batch writes in flight across a tick (`TELEMETRY_WRITE_CONCURRENCY`).
    pub telemetry_writes: std::sync::Arc<tokio::sync::Semaphore>,
    /// Where the CloudWatch metrics go (stdout, as embedded metric format).
    pub metrics: metrics::Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("Anthropic client: {0}")]
    Anthropic(#[from] claresia_anthropic::AnthropicError),
}

impl App {
    /// Builds the app from the environment (the Lambda's configuration).
    pub async fn from_env() -> Result<App, StartupError> {
        let config = Config::from_env()?;
        let sdk = claresia_aws::load_sdk_config(config.tls_native_roots).await;
        App::new(config, &sdk)
    }

    /// The AWS clients are built on first use: a request answered without the store never pays for them.
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Result<App, StartupError> {
        let (for_dynamo, for_secrets) = (sdk.clone(), sdk.clone());
        App::with_clients(
            config,
            Lazy::new(move || aws_sdk_dynamodb::Client::new(&for_dynamo)),
            Lazy::new(move || aws_sdk_secretsmanager::Client::new(&for_secrets)),
        )
    }

    /// With AWS clients the caller built (tests wrap them in interceptors that cut the store off).
    pub fn with_clients(
        config: Config,
        dynamo: impl Into<Lazy<aws_sdk_dynamodb::Client>>,
        secrets: impl Into<Lazy<aws_sdk_secretsmanager::Client>>,
    ) -> Result<App, StartupError> {
        let (dynamo, secrets) = (dynamo.into(), secrets.into());
        let mut client = ClientConfig::new(config.anthropic_base_url.clone());
        client.requests_per_second =
            (config.anthropic_max_rps > 0.0).then_some(config.anthropic_max_rps);
        client.attempt_timeout = config.anthropic_attempt_timeout;
        client.native_roots = config.tls_native_roots;
        let anthropic = AnthropicClient::new(client)?;
        Ok(App {
            telemetry: TelemetryStore::new(dynamo.clone(), config.telemetry_table.clone()),
            key_cache: Default::default(),
            routing_cache: Default::default(),
            telemetry_writes: std::sync::Arc::new(tokio::sync::Semaphore::new(
                config.telemetry_write_concurrency,
            )),
            metrics: metrics::Metrics::stdout(config.stage.clone()),
            hub: HubStore::new(dynamo, config.hub_table.clone()),
            keys: KeyStore::new(secrets, config.stage.clone())
                .with_kms_key(config.secrets_kms_key_id.clone()),
            surfaces: std::sync::Arc::new(surface::Surfaces::new(
                anthropic,
                config.enterprise_limits,
            )),
            config,
        })
    }
}

/// The time a scheduled tick may use: up to 5 s before the invocation's deadline (ms since the epoch), so
/// a tick never runs into the next one.
pub(crate) fn tick_budget(deadline_ms: u64) -> std::time::Duration {
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms).saturating_sub(5_000))
}
