//! JSON logs for CloudWatch. The level comes from `RUST_LOG` (default `info`); AWS SDK internals stay at
//! `warn` so request payloads (which carry secrets on `PutSecretValue`) never reach a log line.

use tracing_subscriber::EnvFilter;

pub const DEFAULT_FILTER: &str = "info,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,aws_config=warn,hyper=warn,h2=warn,rustls=warn";

pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Installs the JSON subscriber for a Lambda function (once per sandbox).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}
