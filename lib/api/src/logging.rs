//! JSON logs for CloudWatch. The level comes from `RUST_LOG` (default `info`); AWS SDK internals stay at
//! `warn` so request payloads (which carry secrets on `PutSecretValue`) never reach a log line.
//!
//! Every line passes through [`Redacting`] on its way out: a log site may quote request input (a path, a
//! query, a serde error naming a field), and a key pasted into any of those must not reach CloudWatch.
//! One writer covers every site, today's and tomorrow's, instead of trusting each to remember.

use std::io::Write;

use claresia_domain::admin_key::redact_keys;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

pub const DEFAULT_FILTER: &str = "info,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,aws_config=warn,hyper=warn,h2=warn,rustls=warn";

pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The functions' subscriber: JSON lines, the request span's fields, every line redacted, written to
/// `writer` (stdout on Lambda; tests capture it).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_writer(Redacting(writer))
        .finish()
}

/// Installs the JSON subscriber for a Lambda function (once per sandbox).
pub fn init() {
    let _ = tracing::subscriber::set_global_default(json_subscriber(filter(), std::io::stdout));
}

/// Wraps a writer so every formatted line is written with keys redacted (`sk-ant-…` with key material
/// becomes `[redacted key]`). The formatter hands each event over in one `write`.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if text.contains("sk-ant-") {
            self.0.write_all(redact_keys(&text).as_bytes())?;
        } else {
            self.0.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_written_with_its_keys_redacted() {
        let mut out = Vec::new();
        let mut w = RedactingWriter(&mut out);
        let line = b"{\"path\":\"/tenants/sk-ant-admin01-AbC_123-xyz/connection\",\"n\":1}\n";
        assert_eq!(w.write(line).unwrap(), line.len());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"path\":\"/tenants/[redacted key]/connection\",\"n\":1}\n"
        );
        let mut out = Vec::new();
        RedactingWriter(&mut out).write_all(b"plain").unwrap();
        assert_eq!(out, b"plain");
    }
}
