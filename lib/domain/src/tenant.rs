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

/// A slug provisioned by an operator as a top-level tenant of its own: the namespace rule's exception for
/// hyphenated slugs (`acme-eu` as a customer, not a sub-tenant of `acme`), or a slug released from a
/// parent that held it. Stored on the slug's namespace item, so it and a parent link exclude each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopLevelRecord {
    pub tenant: TenantSlug,
    /// The operator's JWT subject.
    pub provisioned_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub provisioned_at: time::OffsetDateTime,
    /// Set when the slug was released from a parent that held it as its sub-tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_from: Option<TenantSlug>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Who a slug belongs to, as its namespace item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// Nothing claims it: a slug without `-` is a top-level tenant by the rule; a hyphenated one is its
    /// parent's to register.
    Unclaimed,
    /// A parent registered it (active or removed).
    SubTenant(SubTenant),
    /// An operator provisioned it as a top-level tenant.
    TopLevel(TopLevelRecord),
}

impl TenantSlug {
    /// The namespace rule: a slug with `-` names a sub-tenant (`acme-eu` is in `acme`'s namespace); only an
    /// operator makes such a slug a top-level tenant.
    pub fn is_hyphenated(&self) -> bool {
        self.0.contains('-')
    }

    /// The slugs strictly between `parent` and `self` on the hyphen path: for `acme` → `acme-eu-eng-x`,
    /// `acme-eu` and `acme-eu-eng`. A provisioned or connected one owns everything below it, so `parent`
    /// may not register `self` past it. Empty when `self` is not `{parent}-{suffix}`.
    pub fn prefixes_below(&self, parent: &TenantSlug) -> Vec<TenantSlug> {
        let Some(rest) = self
            .0
            .strip_prefix(parent.as_str())
            .and_then(|r| r.strip_prefix('-'))
        else {
            return Vec::new();
        };
        rest.match_indices('-')
            .map(|(i, _)| TenantSlug(format!("{parent}-{}", &rest[..i])))
            .collect()
    }
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
    fn the_namespace_rule_reads_hyphens() {
        let t = |s: &str| TenantSlug::parse(s).unwrap();
        assert!(!t("acme").is_hyphenated());
        assert!(t("acme-eu").is_hyphenated());
        let between = |sub: &str, parent: &str| -> Vec<String> {
            t(sub)
                .prefixes_below(&t(parent))
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(between("acme-eu", "acme"), Vec::<String>::new());
        assert_eq!(between("acme-eu-eng", "acme"), ["acme-eu"]);
        assert_eq!(between("acme-eu-eng-x", "acme"), ["acme-eu", "acme-eu-eng"]);
        assert_eq!(between("acme-eu-eng", "acme-eu"), Vec::<String>::new());
        assert_eq!(between("acmex-eu", "acme"), Vec::<String>::new());
        assert_eq!(between("globex-eu", "acme"), Vec::<String>::new());
    }

    #[test]
    fn deserializes_only_valid_slugs() {
        let ok: TenantSlug = serde_json::from_str("\"dainese-eng\"").unwrap();
        assert_eq!(ok.as_str(), "dainese-eng");
        assert!(serde_json::from_str::<TenantSlug>("\"Bad\"").is_err());
    }
}
