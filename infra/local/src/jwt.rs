//! HS256 JWTs signed with a local development key: the dev gateway verifies them as API Gateway's JWT
//! authorizer verifies the portal's (signature, issuer, audience, expiry).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

pub const DEV_ISSUER: &str = "https://auth.local.claresia.dev/";
pub const DEV_AUDIENCE: &str = "claresia-connector-local";
/// For the local run only; override with `CLARESIA_DEV_JWT_SECRET`.
pub const DEV_SECRET: &str = "claresia-local-development-signing-key-not-for-production";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm (expected HS256)")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
}

pub struct DevSigner {
    secret: Vec<u8>,
}

impl DevSigner {
    pub fn new(secret: &str) -> Self {
        DevSigner {
            secret: secret.as_bytes().to_vec(),
        }
    }

    pub fn from_env() -> Self {
        DevSigner::new(
            &std::env::var("CLARESIA_DEV_JWT_SECRET").unwrap_or_else(|_| DEV_SECRET.into()),
        )
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }

    /// A token with the standard claims plus `extra` (e.g. `claresia:tenant`), valid for `ttl_secs`.
    pub fn sign(&self, subject: &str, extra: &[(&str, &str)], ttl_secs: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": subject, "iat": now, "exp": now + ttl_secs,
        });
        for (k, v) in extra {
            claims[*k] = json!(v);
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{sig}")
    }

    /// Verifies and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Value = decode(h)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(JwtError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
        let mut mac = self.mac();
        mac.update(format!("{h}.{p}").as_bytes());
        mac.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
        let claims: Map<String, Value> = decode(p)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if claims
            .get("exp")
            .and_then(Value::as_i64)
            .is_none_or(|exp| exp <= now)
        {
            return Err(JwtError::Expired);
        }
        if claims.get("iss").and_then(Value::as_str) != Some(DEV_ISSUER) {
            return Err(JwtError::Issuer);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == DEV_AUDIENCE,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(DEV_AUDIENCE)),
            _ => false,
        };
        if !aud_ok {
            return Err(JwtError::Audience);
        }
        Ok(claims)
    }
}

fn decode<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_rejects_tampering() {
        let s = DevSigner::new("k");
        let t = s.sign("u1", &[("claresia:tenant", "dainese")], 60);
        let claims = s.verify(&t).unwrap();
        assert_eq!(claims["claresia:tenant"], "dainese");
        assert_eq!(DevSigner::new("other").verify(&t), Err(JwtError::Signature));
        let expired = s.sign("u1", &[], -1);
        assert_eq!(s.verify(&expired), Err(JwtError::Expired));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"iss":"x","claresia:role":"operator"}"#);
        parts[1] = &forged;
        assert_eq!(s.verify(&parts.join(".")), Err(JwtError::Signature));
        assert_eq!(s.verify("abc"), Err(JwtError::Malformed));
    }
}
