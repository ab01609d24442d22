//! The Anthropic Admin API key a portal admin pastes, and what we may show of it.

use std::fmt;

use sha2::{Digest, Sha256};

/// A Claude Console Admin key (the `preview` surface) starts with this.
pub const ADMIN_KEY_PREFIX: &str = "sk-ant-admin01-";
/// A Claude Enterprise "Admin API key" (claude.ai → Organization settings → API; the `enterprise` surface).
pub const ENTERPRISE_KEY_PREFIX: &str = "sk-ant-api01-";
const MAX_KEY_LEN: usize = 512;

/// Which kind of admin key was pasted: it decides which Anthropic surface a connection can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `sk-ant-admin01-…`, from the Claude Console.
    Console,
    /// `sk-ant-api01-…`, from claude.ai's Organization settings (Claude Enterprise).
    Enterprise,
}

impl KeyKind {
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Console => "a Claude Console Admin key (sk-ant-admin01-…)",
            KeyKind::Enterprise => "a Claude Enterprise Admin API key (sk-ant-api01-…)",
        }
    }
}

/// A syntactically valid admin key of either kind.
///
/// It deliberately implements neither `Display` nor `Serialize`, and its `Debug` is redacted, so the key
/// cannot reach a log line, a response or a stored item by accident; `expose` is the one way out, used only
/// for the `x-api-key` header and the secret store.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminKeyError {
    #[error("admin_api_key is empty")]
    Empty,
    #[error("this is a workspace API key (sk-ant-api03-…), which only calls models; Claresia needs an Anthropic Admin API key: a Claude Console Admin key (sk-ant-admin01-…, Console → Settings → Admin keys) or a Claude Enterprise Admin API key (sk-ant-api01-…, claude.ai → Organization settings → API)")]
    RegularApiKey,
    #[error("admin_api_key is not an Anthropic Admin API key: a Console Admin key starts with sk-ant-admin01- (Console → Settings → Admin keys), a Claude Enterprise Admin API key with sk-ant-api01- (claude.ai → Organization settings → API)")]
    NotAdminKey,
    #[error(
        "admin_api_key is incomplete: nothing follows its sk-ant-…01- prefix; copy the whole key"
    )]
    Truncated,
    #[error("admin_api_key contains {0}; copy the key again as one unbroken string")]
    Malformed(&'static str),
}

impl AdminKey {
    /// Parses a pasted key. Surrounding whitespace (and invisible zero-width characters that copy-paste
    /// brings along) is trimmed: the seed's most common 401 is a trailing space, which we fix for the user.
    pub fn parse(raw: &str) -> Result<Self, AdminKeyError> {
        let key = raw.trim_matches(|c: char| c.is_whitespace() || is_invisible(c));
        if key.is_empty() {
            return Err(AdminKeyError::Empty);
        }
        let prefix = [ADMIN_KEY_PREFIX, ENTERPRISE_KEY_PREFIX]
            .into_iter()
            .find(|p| key.starts_with(p));
        let Some(prefix) = prefix else {
            if key.starts_with("sk-ant-api") {
                return Err(AdminKeyError::RegularApiKey);
            }
            return Err(AdminKeyError::NotAdminKey);
        };
        let body = &key[prefix.len()..];
        if body.is_empty() {
            return Err(AdminKeyError::Truncated);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(AdminKeyError::Malformed("more than 512 characters"));
        }
        if key.chars().any(|c| c.is_whitespace() || is_invisible(c)) {
            return Err(AdminKeyError::Malformed("spaces or line breaks inside it"));
        }
        if !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AdminKeyError::Malformed(
                "characters that never appear in an Anthropic key",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn kind(&self) -> KeyKind {
        if self.0.starts_with(ENTERPRISE_KEY_PREFIX) {
            KeyKind::Enterprise
        } else {
            KeyKind::Console
        }
    }

    /// The key itself, for the `x-api-key` header and the secret store only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> KeyFingerprint {
        let digest = Sha256::digest(self.0.as_bytes());
        let chars: Vec<char> = self.0.chars().collect();
        let last4: String = chars[chars.len().saturating_sub(4)..].iter().collect();
        KeyFingerprint {
            last4,
            sha256_prefix: hex::encode(&digest[..4]),
        }
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminKey({})", self.fingerprint())
    }
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// What identifies a key to a human without revealing it: its last 4 characters and a SHA-256 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFingerprint {
    pub last4: String,
    pub sha256_prefix: String,
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "…{} sha256:{}", self.last4, self.sha256_prefix)
    }
}

/// Removes anything that looks like an Anthropic key from text that came from outside (an upstream error
/// message, a parser error) before it can reach a response or a log line.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sk-ant-") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(tail.len());
        // A bare prefix (`sk-ant-admin01-`) is guidance, not a secret: redact what carries key material
        // after the kind (`admin01-…`, `api03-…`).
        let material = tail[..end]["sk-ant-".len()..]
            .split_once('-')
            .is_some_and(|(_, m)| !m.is_empty());
        if material {
            out.push_str("[redacted key]");
        } else {
            out.push_str(&tail[..end]);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-ant-admin01-AbCdEf0123456789_xyz-WXYZ";

    #[test]
    fn trims_trailing_space_and_newlines_and_invisible_chars() {
        for pasted in [
            format!("{KEY} "),
            format!("  {KEY}\n"),
            format!("\t{KEY}\r\n"),
            format!("\u{FEFF}{KEY}\u{200B}"),
            format!("{KEY}\u{00A0}"),
        ] {
            assert_eq!(AdminKey::parse(&pasted).unwrap().expose(), KEY);
        }
    }

    #[test]
    fn rejects_non_admin_keys_with_a_reason() {
        assert_eq!(AdminKey::parse("   "), Err(AdminKeyError::Empty));
        assert_eq!(
            AdminKey::parse("sk-ant-api03-abc"),
            Err(AdminKeyError::RegularApiKey)
        );
        assert_eq!(AdminKey::parse("hello"), Err(AdminKeyError::NotAdminKey));
        assert_eq!(
            AdminKey::parse("sk-ant-api01-"),
            Err(AdminKeyError::Truncated)
        );
        assert_eq!(
            AdminKey::parse("SK-ANT-ADMIN01-abc"),
            Err(AdminKeyError::NotAdminKey)
        );
        assert_eq!(
            AdminKey::parse("sk-ant-admin01-"),
            Err(AdminKeyError::Truncated)
        );
        assert!(matches!(
            AdminKey::parse("sk-ant-admin01-abc def"),
            Err(AdminKeyError::Malformed(_))
        ));
        assert!(matches!(
            AdminKey::parse("sk-ant-admin01-abc\ndef"),
            Err(AdminKeyError::Malformed(_))
        ));
        assert!(matches!(
            AdminKey::parse("sk-ant-admin01-abc\"def"),
            Err(AdminKeyError::Malformed(_))
        ));
        assert!(matches!(
            AdminKey::parse(&format!("sk-ant-admin01-{}", "a".repeat(600))),
            Err(AdminKeyError::Malformed(_))
        ));
    }

    #[test]
    fn both_admin_key_kinds_are_recognised() {
        assert_eq!(AdminKey::parse(KEY).unwrap().kind(), KeyKind::Console);
        let ent = AdminKey::parse("sk-ant-api01-Enterprise_key-1234").unwrap();
        assert_eq!(ent.kind(), KeyKind::Enterprise);
        assert!(AdminKeyError::RegularApiKey
            .to_string()
            .contains("sk-ant-api01-"));
        assert!(AdminKeyError::RegularApiKey
            .to_string()
            .contains("workspace API key"));
    }

    #[test]
    fn error_messages_say_an_admin_key_is_needed() {
        assert!(AdminKeyError::NotAdminKey
            .to_string()
            .contains("Admin API key"));
        assert!(AdminKeyError::NotAdminKey
            .to_string()
            .contains("sk-ant-admin01-"));
        assert!(AdminKeyError::RegularApiKey
            .to_string()
            .contains("Admin API key"));
    }

    #[test]
    fn debug_and_fingerprint_never_show_the_key() {
        let key = AdminKey::parse(KEY).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("AbCdEf0123456789"), "{debug}");
        let fp = key.fingerprint();
        assert_eq!(fp.last4, "WXYZ");
        assert_eq!(fp.sha256_prefix.len(), 8);
        assert_eq!(fp.to_string(), format!("…WXYZ sha256:{}", fp.sha256_prefix));
        // Deterministic, and different keys differ.
        assert_eq!(
            key.fingerprint(),
            AdminKey::parse(KEY).unwrap().fingerprint()
        );
        let other = AdminKey::parse("sk-ant-admin01-other-WXYZ").unwrap();
        assert_ne!(other.fingerprint().sha256_prefix, fp.sha256_prefix);
    }

    #[test]
    fn redacts_keys_inside_foreign_text() {
        assert_eq!(
            redact_keys("bad value \"sk-ant-admin01-abc_DEF-123\" here"),
            "bad value \"[redacted key]\" here"
        );
        assert_eq!(
            redact_keys("sk-ant-api03-x and sk-ant-admin01-y"),
            "[redacted key] and [redacted key]"
        );
        assert_eq!(redact_keys("nothing to hide"), "nothing to hide");
        assert_eq!(
            redact_keys("an Admin key starts with sk-ant-admin01- (see the Console)"),
            "an Admin key starts with sk-ant-admin01- (see the Console)"
        );
    }
}
