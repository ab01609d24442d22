//! The SDK's configuration and HTTPS client, built for a cold start: from the environment Lambda provides
//! (region, credentials, an optional `AWS_ENDPOINT_URL`) without looking for profile files, and with
//! compiled-in roots (Amazon Trust Services, which every AWS service endpoint chains to) instead of the
//! system's certificate directory. `TLS_NATIVE_ROOTS=true` adds the system store (a private CA, a TLS
//! proxy). Without credentials in the environment (a developer's shell), the SDK's default chain
//! (profiles included) is used.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// Amazon Root CA 1–4 and the Starfield roots they are cross-signed by (Amazon Trust Services).
const AWS_ROOTS_PEM: &str = include_str!("amazon-trust-services.pem");

/// The SDK's HTTPS client: rustls with ring (no aws-lc jitter-entropy cost at start), the compiled-in
/// roots, and the system's store only when `native_roots`. Certificates are parsed on the first request.
pub fn http_client(native_roots: bool) -> SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(native_roots)
        .with_pem_certificate(AWS_ROOTS_PEM.as_bytes());
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "TLS context refused; using the system's certificate store");
            TlsContext::default()
        });
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https()
}

/// The configuration from Lambda's environment, or `None` when it lacks a region or credentials.
pub fn from_environment(http: SharedHttpClient) -> Option<SdkConfig> {
    from_lookup(|k| std::env::var(k).ok(), http)
}

/// [`from_environment`] over any lookup (tests pass a map).
pub fn from_lookup(
    var: impl Fn(&str) -> Option<String>,
    http: SharedHttpClient,
) -> Option<SdkConfig> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"))?;
    let credentials = Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN"),
        None,
        "environment",
    );
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http);
    if let Some(url) = var("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(url);
    }
    Some(builder.build())
}

/// Lambda's environment first; else the SDK's default chain (profiles, …) for a developer's shell.
/// `native_roots`: `TLS_NATIVE_ROOTS`, as the configuration read it.
pub async fn load(native_roots: bool) -> SdkConfig {
    let http = http_client(native_roots);
    if let Some(config) = from_environment(http.clone()) {
        return config;
    }
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    /// The client parses the bundle on its first connection and panics on a bad one: parse it here, with
    /// the same parser, so a broken bundle fails the build's tests instead.
    #[test]
    fn the_compiled_in_roots_are_the_six_amazon_trust_services_certificates() {
        let certs = CertificateDer::pem_slice_iter(AWS_ROOTS_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(certs.len(), 6);
        let mut roots = rustls::RootCertStore::empty();
        let (added, refused) = roots.add_parsable_certificates(certs);
        assert_eq!((added, refused), (6, 0));
    }

    #[test]
    fn lambda_s_environment_gives_region_credentials_and_endpoint_without_profiles() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        const LAMBDA: &[(&str, &str)] = &[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ];
        let config = from_lookup(env(LAMBDA), http_client(false)).unwrap();
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert!(config.credentials_provider().is_some());
        assert!(config.http_client().is_some());
        assert_eq!(config.endpoint_url(), None);
        const LOCAL: &[(&str, &str)] = &[
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ];
        let config = from_lookup(env(LOCAL), http_client(false)).unwrap();
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
        // No credentials (a developer's shell): the SDK's default chain decides.
        assert!(from_lookup(env(&[("AWS_REGION", "eu-west-1")]), http_client(false)).is_none());
        assert!(from_lookup(
            env(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]),
            http_client(false)
        )
        .is_none());
    }
}
