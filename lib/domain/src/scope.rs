//! The scopes the connector needs of an admin key (four on the `preview` surface, five on `enterprise`),
//! and which of them a test verified.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "Skills:write")]
    SkillsWrite,
    #[serde(rename = "Skills:read")]
    SkillsRead,
    #[serde(rename = "Audit:read")]
    AuditRead,
    #[serde(rename = "Workspaces:read")]
    WorkspacesRead,
    #[serde(rename = "write:plugins")]
    PluginsWrite,
    #[serde(rename = "read:plugins")]
    PluginsRead,
    #[serde(rename = "read:analytics")]
    AnalyticsRead,
    #[serde(rename = "read:compliance_activities")]
    ComplianceActivitiesRead,
    #[serde(rename = "read:rbac_groups")]
    RbacGroupsRead,
}

impl Scope {
    /// In the order the product page lists them.
    pub const REQUIRED: [Scope; 4] = [
        Scope::SkillsWrite,
        Scope::SkillsRead,
        Scope::AuditRead,
        Scope::WorkspacesRead,
    ];

    /// What a Claude Enterprise key must carry, in the order the README lists them.
    pub const ENTERPRISE: [Scope; 5] = [
        Scope::PluginsWrite,
        Scope::PluginsRead,
        Scope::AnalyticsRead,
        Scope::ComplianceActivitiesRead,
        Scope::RbacGroupsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SkillsWrite => "Skills:write",
            Scope::SkillsRead => "Skills:read",
            Scope::AuditRead => "Audit:read",
            Scope::WorkspacesRead => "Workspaces:read",
            Scope::PluginsWrite => "write:plugins",
            Scope::PluginsRead => "read:plugins",
            Scope::AnalyticsRead => "read:analytics",
            Scope::ComplianceActivitiesRead => "read:compliance_activities",
            Scope::RbacGroupsRead => "read:rbac_groups",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::REQUIRED
            .into_iter()
            .chain(Scope::ENTERPRISE)
            .find(|scope| scope.as_str() == s)
    }

    /// Reads the scope out of Anthropic's 403 message: the Console's `API key is missing required scope:
    /// <Scope>`, or the Enterprise APIs' `Missing required scopes. Got: [...] Needed: ['<scope>']`.
    pub fn from_missing_scope_message(message: &str) -> Option<Scope> {
        if let Some((_, needed)) = message.split_once("Needed:") {
            return needed
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '_'))
                .find_map(Scope::parse);
        }
        let (_, tail) = message.split_once("missing required scope:")?;
        let name = tail
            .trim()
            .trim_end_matches(|c: char| c == '.' || c == '"' || c.is_whitespace());
        Scope::parse(name)
    }
}

/// Which required scopes a connection test proved, which it proved missing, and which it could not tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeReport {
    pub verified: Vec<Scope>,
    pub missing: Vec<Scope>,
    pub unverified: Vec<Scope>,
}

impl ScopeReport {
    pub fn all_verified(&self) -> bool {
        self.missing.is_empty() && self.unverified.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scope::REQUIRED {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(Scope::parse("skills:write"), None);
        for s in Scope::ENTERPRISE {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn reads_scope_from_the_enterprise_403_message() {
        assert_eq!(
            Scope::from_missing_scope_message(
                "Missing required scopes. Got: ['read:plugins'] Needed: ['read:compliance_activities']"
            ),
            Some(Scope::ComplianceActivitiesRead)
        );
        assert_eq!(
            Scope::from_missing_scope_message(
                "Missing required scopes. Got: [\"write:plugins\"] Needed: [\"read:plugins\"]"
            ),
            Some(Scope::PluginsRead)
        );
        assert_eq!(
            Scope::from_missing_scope_message("Missing required scopes. Got: [] Needed: ['x:y']"),
            None
        );
    }

    #[test]
    fn reads_scope_from_anthropic_403_message() {
        assert_eq!(
            Scope::from_missing_scope_message("API key is missing required scope: Audit:read"),
            Some(Scope::AuditRead)
        );
        assert_eq!(
            Scope::from_missing_scope_message("API key is missing required scope: Skills:write."),
            Some(Scope::SkillsWrite)
        );
        assert_eq!(
            Scope::from_missing_scope_message("Admin key principal is not a member"),
            None
        );
        assert_eq!(
            Scope::from_missing_scope_message("missing required scope: Foo:bar"),
            None
        );
    }
}
