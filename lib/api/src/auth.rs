//! Tenant isolation: who the caller is comes from the JWT claims API Gateway verified (or the dev server,
//! which plays its part locally), and a caller acts only on its own tenant unless it is an operator.

use std::collections::HashMap;

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
    pub tenant: Option<String>,
    pub operator: bool,
    pub subject: Option<String>,
}

impl Caller {
    pub fn from_claims(claims: &HashMap<String, String>) -> Caller {
        Caller {
            tenant: claims.get(TENANT_CLAIM).cloned(),
            operator: claims.get(ROLE_CLAIM).map(String::as_str) == Some(OPERATOR_ROLE),
            subject: claims.get("sub").cloned(),
        }
    }

    /// Pure and I/O-free, so it runs before anything else touches a store or Anthropic.
    pub fn authorize(&self, tenant: &TenantSlug) -> Result<(), ApiError> {
        if self.operator || self.tenant.as_deref() == Some(tenant.as_str()) {
            return Ok(());
        }
        Err(ApiError::Forbidden(match &self.tenant {
            Some(own) => format!("this token acts for tenant {own}, not {tenant}"),
            None => "this token carries no claresia:tenant claim".to_owned(),
        }))
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

    fn caller(pairs: &[(&str, &str)]) -> Caller {
        Caller::from_claims(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn tenant_token_acts_only_on_its_tenant() {
        let t = |s| TenantSlug::parse(s).unwrap();
        let c = caller(&[(TENANT_CLAIM, "dainese")]);
        assert!(c.authorize(&t("dainese")).is_ok());
        let err = c.authorize(&t("acme")).unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("dainese"));
        // A prefix is not a sub-tenant relationship.
        assert!(c.authorize(&t("dainese-sales")).is_err());
    }

    #[test]
    fn operator_acts_on_any_tenant_and_missing_claims_are_refused() {
        let t = TenantSlug::parse("acme").unwrap();
        assert!(caller(&[(ROLE_CLAIM, "operator")]).authorize(&t).is_ok());
        assert!(caller(&[(ROLE_CLAIM, "admin")]).authorize(&t).is_err());
        assert!(caller(&[]).authorize(&t).is_err());
    }
}
