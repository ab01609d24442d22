//! Tenant isolation, decided in one place. Who the caller is comes from the JWT claims API Gateway verified
//! (or the dev server, which plays its part locally). The decision is pure: [`Caller::precheck`] needs only
//! the claims and the path, and refuses every caller that could never be allowed before any I/O;
//! [`decide`] takes the one item a request may read first (the path tenant's parent link) and answers who
//! the request acts for, or why not.
//!
//! | caller | own tenant | its sub-tenants | any other tenant |
//! |---|---|---|---|
//! | tenant token | everything | everything but connection routes (409) | 403 |
//! | sub-tenant token | read own status and telemetry | — | 403 |
//! | operator token | everything | everything but connection routes (409) | everything |
//!
//! The namespace routes (`PUT …/top-level`, `POST …/release`) are an operator's alone, on any slug.

use std::collections::HashMap;

pub use claresia_domain::ParentLink;
use claresia_domain::TenantSlug;
use lambda_http::request::RequestContext;
use lambda_http::Request;
use lambda_http::RequestExt;

use crate::ApiError;

pub const TENANT_CLAIM: &str = "claresia:tenant";
pub const ROLE_CLAIM: &str = "claresia:role";
pub const OPERATOR_ROLE: &str = "operator";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the token acts for; `None` when the claim is absent, empty or not a valid slug (API
    /// Gateway flattens a non-string claim into text such as `["a","b"]`, which is never a slug).
    pub tenant: Option<TenantSlug>,
    pub operator: bool,
    pub subject: Option<String>,
}

/// What a route does, as far as who may call it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET …/connection`: status and published-skill report.
    Status,
    /// `GET …/telemetry`.
    Telemetry,
    /// Reads of the shared Hub (skills, archetypes, workspace mappings).
    HubRead,
    /// Writes to the Hub, mappings and republish.
    HubWrite,
    /// `PUT`/`DELETE …/connection`, `POST …/connection/test`: the tenant's own Anthropic key.
    Connection,
    /// The sub-tenant registry of a parent (`…/sub-tenants`).
    SubTenants,
    /// The tenant namespace (`…/top-level`, `…/release`): provisioning a slug, releasing a held one.
    Operator,
}

impl Access {
    /// What a sub-tenant's own token may do on its own path.
    fn open_to_sub_tenant(self) -> bool {
        matches!(self, Access::Status | Access::Telemetry)
    }
}

/// Who a request acts for, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The path tenant.
    pub tenant: TenantSlug,
    /// Whose Hub, connection and key the request uses (the parent for a sub-tenant path).
    pub hub: TenantSlug,
    /// Set when the path tenant is a sub-tenant.
    pub sub_tenant: bool,
}

impl Caller {
    pub(crate) fn from_claims(claims: &HashMap<String, String>) -> Caller {
        Caller {
            tenant: claims
                .get(TENANT_CLAIM)
                .and_then(|t| TenantSlug::parse(t).ok()),
            operator: claims.get(ROLE_CLAIM).map(String::as_str) == Some(OPERATOR_ROLE),
            subject: claims.get("sub").cloned(),
        }
    }

    /// Pure and I/O-free: refuses a caller that is neither an operator, the path tenant, nor a possible
    /// parent of it (sub-tenant slugs are `{parent}-{suffix}`), and anyone but an operator on the
    /// namespace routes, so such a request reads nothing at all.
    pub(crate) fn precheck(&self, path: &TenantSlug, access: Access) -> Result<(), ApiError> {
        if self.operator {
            return Ok(());
        }
        if access == Access::Operator {
            return Err(ApiError::Forbidden(format!(
                "only a Claresia operator may provision or release the slug {path}"
            )));
        }
        match &self.tenant {
            Some(own) if own == path || is_prefix_parent(own, path) => Ok(()),
            _ => Err(self.refusal(path)),
        }
    }

    fn refusal(&self, path: &TenantSlug) -> ApiError {
        ApiError::Forbidden(match &self.tenant {
            Some(own) => format!("this token acts for tenant {own}, not {path}"),
            None => "this token carries no valid claresia:tenant claim".to_owned(),
        })
    }
}

/// `parent` could be the parent of `sub`: `sub` is `{parent}-{suffix}`.
pub(crate) fn is_prefix_parent(parent: &TenantSlug, sub: &TenantSlug) -> bool {
    claresia_domain::tenant::sub_tenant_name_problem(parent, sub).is_none()
}

/// The decision, given the path tenant's parent link (`None`: the path tenant is not a sub-tenant).
pub fn decide(
    caller: &Caller,
    path: &TenantSlug,
    link: Option<&ParentLink>,
    access: Access,
) -> Result<Grant, ApiError> {
    caller.precheck(path, access)?;
    if access == Access::Operator {
        return Ok(Grant {
            tenant: path.clone(),
            hub: path.clone(),
            sub_tenant: link.is_some(),
        });
    }
    let own = caller.tenant.as_ref() == Some(path);
    let Some(link) = link else {
        return if caller.operator || own {
            Ok(Grant {
                tenant: path.clone(),
                hub: path.clone(),
                sub_tenant: false,
            })
        } else {
            Err(caller.refusal(path))
        };
    };
    let parent = caller.tenant.as_ref() == Some(&link.parent);
    if own && !caller.operator {
        // A sub-tenant's own token: read-only, and only while the link is active.
        return if link.active && access.open_to_sub_tenant() {
            Ok(Grant {
                tenant: path.clone(),
                hub: link.parent.clone(),
                sub_tenant: true,
            })
        } else if access == Access::Connection {
            // Most likely a customer whose slug a parent registered first: say how to get it back.
            Err(ApiError::NamespaceHeld {
                tenant: path.to_string(),
                parent: link.parent.to_string(),
            })
        } else {
            Err(ApiError::Forbidden(format!(
                "a sub-tenant's token may only read its own status and telemetry; ask an admin of {} to make this change",
                link.parent
            )))
        };
    }
    if !(parent || caller.operator) {
        return Err(caller.refusal(path));
    }
    match access {
        Access::Connection => Err(ApiError::SubTenantSharesConnection {
            sub: path.to_string(),
            parent: link.parent.to_string(),
        }),
        Access::SubTenants => Err(ApiError::NestedSubTenant(path.to_string())),
        Access::Status | Access::Telemetry => Ok(Grant {
            tenant: path.clone(),
            hub: link.parent.clone(),
            sub_tenant: true,
        }),
        _ if !link.active => Err(ApiError::SubTenantRemoved {
            sub: path.to_string(),
            parent: link.parent.to_string(),
        }),
        _ => Ok(Grant {
            tenant: path.clone(),
            hub: link.parent.clone(),
            sub_tenant: true,
        }),
    }
}

/// The verified JWT claims API Gateway put in the request context.
pub fn caller(req: &Request) -> Result<Caller, ApiError> {
    let claims = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| &jwt.claims),
        _ => None,
    };
    claims
        .map(Caller::from_claims)
        .ok_or(ApiError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantSlug {
        TenantSlug::parse(s).unwrap()
    }

    fn caller(pairs: &[(&str, &str)]) -> Caller {
        Caller::from_claims(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn link(parent: &str, active: bool) -> ParentLink {
        ParentLink {
            parent: t(parent),
            active,
        }
    }

    const ALL: [Access; 7] = [
        Access::Status,
        Access::Telemetry,
        Access::HubRead,
        Access::HubWrite,
        Access::Connection,
        Access::SubTenants,
        Access::Operator,
    ];

    #[test]
    fn precheck_refuses_without_a_read_unless_the_caller_could_be_allowed() {
        let c = caller(&[(TENANT_CLAIM, "dainese")]);
        assert!(c.precheck(&t("dainese"), Access::Status).is_ok());
        assert!(
            c.precheck(&t("dainese-eng"), Access::Status).is_ok(),
            "a possible parent"
        );
        for other in ["acme", "dainesex", "dain", "daineseeng", "x-dainese"] {
            assert_eq!(
                c.precheck(&t(other), Access::Status).unwrap_err().status(),
                403,
                "{other}"
            );
        }
        assert!(caller(&[(ROLE_CLAIM, "operator")])
            .precheck(&t("acme"), Access::Operator)
            .is_ok());
        for bad in [
            vec![],
            vec![(TENANT_CLAIM, "")],
            vec![(TENANT_CLAIM, "[\"dainese\"]")],
            vec![(TENANT_CLAIM, "Dainese")],
            vec![(ROLE_CLAIM, "admin")],
        ] {
            assert_eq!(
                caller(&bad)
                    .precheck(&t("dainese"), Access::Status)
                    .unwrap_err()
                    .status(),
                403
            );
        }
    }

    #[test]
    fn the_namespace_routes_are_refused_to_non_operators_without_a_read() {
        for who in ["acme", "acme-eu"] {
            let c = caller(&[(TENANT_CLAIM, who)]);
            let e = c.precheck(&t("acme-eu"), Access::Operator).unwrap_err();
            assert_eq!(e.status(), 403, "{who}");
        }
    }

    #[test]
    fn own_tenant_may_do_everything_on_itself() {
        let c = caller(&[(TENANT_CLAIM, "dainese")]);
        for a in ALL.into_iter().filter(|a| *a != Access::Operator) {
            let g = decide(&c, &t("dainese"), None, a).unwrap();
            assert_eq!((g.hub, g.sub_tenant), (t("dainese"), false));
        }
    }

    #[test]
    fn a_prefix_is_not_a_parent_without_a_link() {
        let c = caller(&[(TENANT_CLAIM, "dainese")]);
        for a in ALL {
            assert_eq!(
                decide(&c, &t("dainese-eng"), None, a).unwrap_err().status(),
                403
            );
            assert_eq!(
                decide(&c, &t("dainese-eng"), Some(&link("other", true)), a)
                    .unwrap_err()
                    .status(),
                403
            );
        }
    }

    #[test]
    fn parent_acts_on_its_sub_tenant_but_not_its_connection() {
        let c = caller(&[(TENANT_CLAIM, "dainese")]);
        let l = link("dainese", true);
        for a in ALL {
            let res = decide(&c, &t("dainese-eng"), Some(&l), a);
            match a {
                Access::Connection => {
                    assert_eq!(res.unwrap_err().code(), "sub_tenant_shares_connection")
                }
                Access::Operator => assert_eq!(res.unwrap_err().status(), 403),
                Access::SubTenants => assert_eq!(res.unwrap_err().code(), "nested_sub_tenant"),
                _ => {
                    let g = res.unwrap();
                    assert_eq!((g.hub, g.tenant), (t("dainese"), t("dainese-eng")));
                    assert!(g.sub_tenant);
                }
            }
        }
        // A removed sub-tenant: its status and telemetry only.
        let removed = link("dainese", false);
        for a in ALL {
            let res = decide(&c, &t("dainese-eng"), Some(&removed), a);
            assert_eq!(res.is_ok(), a.open_to_sub_tenant(), "{a:?}");
        }
    }

    #[test]
    fn sub_tenant_token_reads_only_its_own_status_and_telemetry() {
        let c = caller(&[(TENANT_CLAIM, "dainese-eng")]);
        let l = link("dainese", true);
        for a in ALL {
            let res = decide(&c, &t("dainese-eng"), Some(&l), a);
            assert_eq!(res.is_ok(), a.open_to_sub_tenant(), "{a:?}");
            if let Err(e) = res {
                // Its own connection: the slug is held, and the answer says how to get it back.
                let want = if a == Access::Connection { 409 } else { 403 };
                assert_eq!(e.status(), want, "{a:?}");
            }
        }
        // Never the parent, a sibling, or anything once removed.
        for a in ALL {
            assert!(decide(&c, &t("dainese"), None, a).is_err());
            assert!(decide(&c, &t("dainese-ops"), Some(&l), a).is_err());
            assert!(decide(&c, &t("dainese-eng"), Some(&link("dainese", false)), a).is_err());
        }
    }

    #[test]
    fn operator_acts_anywhere_but_a_sub_tenant_connection_is_its_parents() {
        let op = caller(&[(ROLE_CLAIM, "operator")]);
        for a in ALL {
            assert!(decide(&op, &t("acme"), None, a).is_ok());
            let res = decide(&op, &t("acme-eng"), Some(&link("acme", true)), a);
            assert_eq!(
                res.is_ok(),
                !matches!(a, Access::Connection | Access::SubTenants)
            );
        }
    }

    #[test]
    fn only_an_operator_provisions_or_releases_a_slug() {
        let op = caller(&[(ROLE_CLAIM, "operator")]);
        for l in [None, Some(link("acme", true)), Some(link("acme", false))] {
            assert!(decide(&op, &t("acme-eu"), l.as_ref(), Access::Operator).is_ok());
            for who in ["acme", "acme-eu", "globex"] {
                let c = caller(&[(TENANT_CLAIM, who)]);
                let e = decide(&c, &t("acme-eu"), l.as_ref(), Access::Operator).unwrap_err();
                assert_eq!(e.status(), 403, "{who} {l:?}");
            }
        }
    }
}
