//! Tenant slugs: `dainese`, `dainese-eng`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Maximum length of a tenant slug.
pub const TENANT_SLUG_MAX: usize = 32;

/// A validated tenant slug: 1–32 chars of `[a-z0-9-]`, starting and ending with a letter or digit, no `--`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantSlugError {
    #[error("tenant slug is empty")]
    Empty,
    #[error("tenant slug is {0} characters long; the limit is 32")]
    TooLong(usize),
    #[error("tenant slug may only contain lowercase letters, digits and '-' (found {0:?})")]
    InvalidChar(char),
    #[error("tenant slug must start and end with a letter or digit")]
    EdgeHyphen,
    #[error("tenant slug must not contain '--'")]
    DoubleHyphen,
}

impl TenantSlug {
    pub fn parse(raw: &str) -> Result<Self, TenantSlugError> {
        if raw.is_empty() {
            return Err(TenantSlugError::Empty);
        }
        let len = raw.chars().count();
        if len > TENANT_SLUG_MAX {
            return Err(TenantSlugError::TooLong(len));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(TenantSlugError::InvalidChar(c));
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(TenantSlugError::EdgeHyphen);
        }
        if raw.contains("--") {
            return Err(TenantSlugError::DoubleHyphen);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sub-tenant's link to its parent, as the authorization decision needs it. A removed link is kept so the
/// sub-tenant's telemetry stays readable by its parent and the slug cannot be claimed by anyone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub parent: TenantSlug,
    pub active: bool,
}

/// A registered sub-tenant, as its parent created it (`PUT /tenants/{parent}/sub-tenants/{sub}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubTenant {
    pub tenant: TenantSlug,
    pub parent: TenantSlug,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// The JWT subject that created it (or brought it back).
    pub created_by: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub removed_at: Option<time::OffsetDateTime>,
}

impl SubTenant {
    pub fn link(&self) -> ParentLink {
        ParentLink {
            parent: self.parent.clone(),
            active: self.active,
        }
    }
}

/// Why `sub` cannot be a sub-tenant of `parent` by its name alone: it must be `{parent}-{suffix}`.
pub fn sub_tenant_name_problem(parent: &TenantSlug, sub: &TenantSlug) -> Option<String> {
    let ok = sub
        .as_str()
        .strip_prefix(parent.as_str())
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'));
    (!ok).then(|| format!("a sub-tenant of {parent} is named {parent}-{{suffix}}, e.g. {parent}-eng; {sub} is not"))
}

impl<'de> Deserialize<'de> for TenantSlug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TenantSlug::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_slugs() {
        for ok in [
            "dainese",
            "dainese-eng",
            "a",
            "a1",
            "1a",
            "x-y-z",
            &"a".repeat(32),
        ] {
            assert_eq!(
                TenantSlug::parse(ok).map(|s| s.to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn rejects_each_rule_with_its_reason() {
        assert_eq!(TenantSlug::parse(""), Err(TenantSlugError::Empty));
        assert_eq!(
            TenantSlug::parse(&"a".repeat(33)),
            Err(TenantSlugError::TooLong(33))
        );
        assert_eq!(
            TenantSlug::parse("Dainese"),
            Err(TenantSlugError::InvalidChar('D'))
        );
        assert_eq!(
            TenantSlug::parse("dai_nese"),
            Err(TenantSlugError::InvalidChar('_'))
        );
        assert_eq!(
            TenantSlug::parse("dai nese"),
            Err(TenantSlugError::InvalidChar(' '))
        );
        assert_eq!(
            TenantSlug::parse("dainesé"),
            Err(TenantSlugError::InvalidChar('é'))
        );
        assert_eq!(
            TenantSlug::parse("../x"),
            Err(TenantSlugError::InvalidChar('.'))
        );
        assert_eq!(
            TenantSlug::parse("-dainese"),
            Err(TenantSlugError::EdgeHyphen)
        );
        assert_eq!(
            TenantSlug::parse("dainese-"),
            Err(TenantSlugError::EdgeHyphen)
        );
        assert_eq!(TenantSlug::parse("-"), Err(TenantSlugError::EdgeHyphen));
        assert_eq!(
            TenantSlug::parse("dai--nese"),
            Err(TenantSlugError::DoubleHyphen)
        );
    }

    #[test]
    fn sub_tenant_names_extend_the_parent() {
        let p = TenantSlug::parse("dainese").unwrap();
        let ok = |s: &str| sub_tenant_name_problem(&p, &TenantSlug::parse(s).unwrap()).is_none();
        assert!(ok("dainese-eng"));
        assert!(ok("dainese-a"));
        assert!(!ok("dainese"));
        assert!(!ok("dainesex"));
        assert!(!ok("acme-eng"));
        assert!(!ok("x-dainese-eng"));
    }

    #[test]
    fn deserializes_only_valid_slugs() {
        let ok: TenantSlug = serde_json::from_str("\"dainese-eng\"").unwrap();
        assert_eq!(ok.as_str(), "dainese-eng");
        assert!(serde_json::from_str::<TenantSlug>("\"Bad\"").is_err());
    }
}
