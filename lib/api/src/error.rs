//! Every way a request can fail, mapped once to an HTTP status, a stable `code` and a human `message`.

use claresia_anthropic::AnthropicError;
use claresia_aws::StoreError;
use claresia_domain::admin_key::redact_keys;
use claresia_domain::skill_ir::Problem;
use claresia_domain::{AdminKeyError, TenantSlug, TenantSlugError, TestOutcome};
use serde_json::{json, Value};

/// Why a scheduled or queued run (the dispatch, a tenant's poll, a Hub's sweep) could not finish. These
/// runs answer no HTTP request: the error is logged and counted, and the queue delivers the item again.
/// Only where an HTTP handler reaches one of them does it become an [`ApiError`].
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its key is gone from the store: the status says so as a request would.
    #[error("tenant {0} is not connected: connect an Anthropic Admin key first (PUT /tenants/{0}/connection)")]
    NoKey(TenantSlug),
    #[error("the connection of {0} kept changing while this request ran; retry")]
    Contended(TenantSlug),
}

/// Why a connection record could not be updated (see `App::update_connection`).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the connection of {0} kept changing while this request ran; retry")]
    Contended(TenantSlug),
}

impl From<RecordError> for WorkError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => WorkError::Store(e),
            RecordError::Contended(t) => WorkError::Contended(t),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => ApiError::Store(e),
            contended @ RecordError::Contended(_) => ApiError::Conflict(contended.to_string()),
        }
    }
}

impl From<WorkError> for ApiError {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::Store(e) => ApiError::Store(e),
            WorkError::NoKey(t) => ApiError::NotConnected(t.to_string()),
            contended @ WorkError::Contended(_) => ApiError::Conflict(contended.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid tenant slug: {0}")]
    InvalidTenant(#[from] TenantSlugError),
    #[error("{0}")]
    InvalidAdminKey(#[from] AdminKeyError),
    /// The key's kind does not speak the surface the body asked for.
    #[error("{0}")]
    WrongKeyForSurface(String),
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("request body is {0} bytes; the limit is 256 KiB")]
    BodyTooLarge(usize),
    #[error("the request carries no verified identity (missing JWT claims)")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("{method} is not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("tenant {0} is not connected: connect an Anthropic Admin key first (PUT /tenants/{0}/connection)")]
    NotConnected(String),
    /// The candidate key failed its test; nothing was stored.
    #[error("{}", .0.message)]
    KeyRejected(Box<TestOutcome>),
    #[error("the new key belongs to Anthropic organization {new_org}, but tenant {tenant} is connected to {current_org}; disconnect the tenant first to move it to another organization")]
    OrganizationMismatch {
        tenant: String,
        current_org: String,
        new_org: String,
    },
    #[error("{}", .0.message)]
    AnthropicUnavailable(Box<TestOutcome>),
    #[error("Anthropic refused the request: {0}")]
    AnthropicRejected(Box<AnthropicError>),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    /// The store could not be reached where nothing had been written yet: the caller may retry.
    #[error("storage is unavailable: {0}")]
    StoreUnavailable(StoreError),
    #[error("{sub} is a sub-tenant of {parent} and shares its Anthropic connection; manage the connection on /tenants/{parent}/connection")]
    SubTenantSharesConnection { sub: String, parent: String },
    #[error("{0} is a sub-tenant; sub-tenants have no sub-tenants of their own")]
    NestedSubTenant(String),
    #[error("sub-tenant {sub} was removed from {parent}; only its status and telemetry remain readable (PUT /tenants/{parent}/sub-tenants/{sub} brings it back)")]
    SubTenantRemoved { sub: String, parent: String },
    /// The slug cannot become a sub-tenant (it has data of its own, or another parent).
    #[error("{0}")]
    SubTenantUnavailable(String),
    /// The sub-tenant is still named by archetypes or workspace mappings.
    #[error("{0}")]
    SubTenantInUse(String),
    #[error("the {kind} document has {} problem(s); see `problems`", .problems.len())]
    InvalidDocument {
        kind: &'static str,
        problems: Vec<Problem>,
    },
    #[error("{0}")]
    NotFound(String),
    /// `If-Match` / `If-None-Match` did not hold: nothing was written or published.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    InvalidPrecondition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("publishing refused: {0}")]
    PublishRefused(String),
    #[error(
        "could not remove the published skills ({0}); nothing was disconnected, retry the request"
    )]
    CleanupFailed(String),
    /// A hyphenated slug names a sub-tenant unless an operator provisioned it as a tenant of its own.
    #[error("{tenant} contains '-', so it names a sub-tenant (of {namespace}); a customer of its own under a hyphenated slug is provisioned by a Claresia operator first (PUT /tenants/{tenant}/top-level)")]
    NotProvisioned { tenant: String, namespace: String },
    /// The slug is held as another tenant's sub-tenant.
    #[error("{tenant} is registered as a sub-tenant of {parent}; if {tenant} is a customer of its own, a Claresia operator releases the slug (POST /tenants/{tenant}/release)")]
    NamespaceHeld { tenant: String, parent: String },
    /// Two grants of one Hub would publish under one name.
    #[error("{0}")]
    PublishedNameConflict(String),
    /// A bug of ours (a response that could not be encoded): described in the logs, not to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Every `code` an error answer can carry (the OpenAPI document's `ErrorCode`; a test holds the two
    /// together, and a unit test below holds this list to the variants).
    pub const CODES: &'static [&'static str] = &[
        "invalid_tenant",
        "invalid_admin_key",
        "invalid_body",
        "invalid_query",
        "body_too_large",
        "unauthenticated",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "not_connected",
        "unauthorized",
        "missing_scopes",
        "anthropic_unavailable",
        "organization_mismatch",
        "anthropic_error",
        "internal_error",
        "invalid_skill",
        "invalid_archetype",
        "invalid_sub_tenant",
        "invalid_document",
        "conflict",
        "publish_refused",
        "cleanup_failed",
        "store_unavailable",
        "sub_tenant_shares_connection",
        "nested_sub_tenant",
        "sub_tenant_removed",
        "sub_tenant_unavailable",
        "sub_tenant_in_use",
        "precondition_failed",
        "invalid_precondition",
        "tenant_not_provisioned",
        "namespace_held",
        "published_name_conflict",
    ];

    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidTenant(_)
            | ApiError::InvalidAdminKey(_)
            | ApiError::WrongKeyForSurface(_)
            | ApiError::InvalidBody(_)
            | ApiError::InvalidQuery(_)
            | ApiError::BodyTooLarge(_)
            | ApiError::KeyRejected(_)
            | ApiError::InvalidPrecondition(_)
            | ApiError::InvalidDocument { .. } => 400,
            ApiError::Unauthenticated => 401,
            ApiError::Forbidden(_) | ApiError::NotProvisioned { .. } => 403,
            ApiError::RouteNotFound { .. } | ApiError::NotConnected(_) | ApiError::NotFound(_) => {
                404
            }
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::PreconditionFailed(_) => 412,
            ApiError::OrganizationMismatch { .. }
            | ApiError::Conflict(_)
            | ApiError::PublishRefused(_)
            | ApiError::SubTenantSharesConnection { .. }
            | ApiError::NestedSubTenant(_)
            | ApiError::SubTenantRemoved { .. }
            | ApiError::SubTenantUnavailable(_)
            | ApiError::SubTenantInUse(_)
            | ApiError::NamespaceHeld { .. }
            | ApiError::PublishedNameConflict(_) => 409,
            ApiError::AnthropicRejected(_) | ApiError::CleanupFailed(_) => 502,
            ApiError::AnthropicUnavailable(_) => 503,
            ApiError::Store(e) if e.is_unavailable() => 503,
            ApiError::Store(_) | ApiError::Internal(_) => 500,
            ApiError::StoreUnavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidTenant(_) => "invalid_tenant",
            ApiError::InvalidAdminKey(_) | ApiError::WrongKeyForSurface(_) => "invalid_admin_key",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RouteNotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::NotConnected(_) => "not_connected",
            ApiError::KeyRejected(outcome) => outcome.code.code(),
            ApiError::OrganizationMismatch { .. } => "organization_mismatch",
            ApiError::AnthropicUnavailable(_) => "anthropic_unavailable",
            ApiError::AnthropicRejected(_) => "anthropic_error",
            ApiError::Store(e) if e.is_unavailable() => "store_unavailable",
            ApiError::Store(_) | ApiError::Internal(_) => "internal_error",
            ApiError::InvalidDocument { kind: "skill", .. } => "invalid_skill",
            ApiError::InvalidDocument {
                kind: "archetype", ..
            } => "invalid_archetype",
            ApiError::InvalidDocument {
                kind: "sub-tenant", ..
            } => "invalid_sub_tenant",
            ApiError::InvalidDocument { .. } => "invalid_document",
            ApiError::NotFound(_) => "not_found",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::InvalidPrecondition(_) => "invalid_precondition",
            ApiError::Conflict(_) => "conflict",
            ApiError::PublishRefused(_) => "publish_refused",
            ApiError::CleanupFailed(_) => "cleanup_failed",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::SubTenantSharesConnection { .. } => "sub_tenant_shares_connection",
            ApiError::NestedSubTenant(_) => "nested_sub_tenant",
            ApiError::SubTenantRemoved { .. } => "sub_tenant_removed",
            ApiError::SubTenantUnavailable(_) => "sub_tenant_unavailable",
            ApiError::SubTenantInUse(_) => "sub_tenant_in_use",
            ApiError::NotProvisioned { .. } => "tenant_not_provisioned",
            ApiError::NamespaceHeld { .. } => "namespace_held",
            ApiError::PublishedNameConflict(_) => "published_name_conflict",
        }
    }

    /// Seconds a client should wait before retrying, for the answers that say "try again".
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::StoreUnavailable(_) | ApiError::AnthropicUnavailable(_) => Some(5),
            ApiError::Store(e) if e.is_unavailable() => Some(5),
            _ => None,
        }
    }

    /// The JSON body: `{"error": {"code", "message", ...}}`. Internal failures are described in the logs,
    /// not to the caller.
    pub fn body(&self, request_id: &str) -> Value {
        let message = match self {
            // The store failed under a request (throttled, timed out, unreachable): every write is
            // idempotent and ordered so a retry finishes what this one started.
            ApiError::Store(e) if e.is_unavailable() => format!(
                "Storage is unavailable right now. Retry shortly (a retry is safe), or quote request id {request_id} to support."
            ),
            ApiError::Store(_) | ApiError::Internal(_) => format!(
                "An internal error occurred; nothing was half-written. Quote request id {request_id} to support."
            ),
            ApiError::StoreUnavailable(_) => format!(
                "Storage is unavailable right now; nothing was written. Retry shortly, or quote request id {request_id} to support."
            ),
            // Whatever a message quotes back of the input, a key pasted into the wrong place is redacted.
            other => redact_keys(&other.to_string()),
        };
        let mut error = json!({"code": self.code(), "message": message, "request_id": request_id});
        match self {
            ApiError::KeyRejected(outcome) | ApiError::AnthropicUnavailable(outcome) => {
                error["test"] = json!(outcome);
                if let Some(rid) = &outcome.request_id {
                    error["anthropic_request_id"] = json!(rid);
                }
            }
            ApiError::InvalidDocument { problems, .. } => {
                let redacted: Vec<Problem> = problems
                    .iter()
                    .map(|p| Problem {
                        path: redact_keys(&p.path),
                        message: redact_keys(&p.message),
                    })
                    .collect();
                error["problems"] = json!(redacted);
            }
            ApiError::AnthropicRejected(e) => {
                if let Some(rid) = e.request_id() {
                    error["anthropic_request_id"] = json!(rid);
                }
            }
            _ => {}
        }
        json!({ "error": error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claresia_domain::connection::Organization;
    use claresia_domain::{ScopeReport, ZeroRetention};

    fn outcome(code: claresia_domain::TestVerdict) -> Box<TestOutcome> {
        let mut o = TestOutcome::decide(
            Organization {
                id: "org".into(),
                name: "Org".into(),
            },
            None,
            ZeroRetention::Enabled,
            ScopeReport::default(),
        );
        o.code = code;
        Box::new(o)
    }

    /// One of each variant, and each rejected-key verdict. The match below has no wildcard: a new
    /// variant does not compile until it is added here, and so to `CODES`.
    fn examples() -> Vec<ApiError> {
        use claresia_domain::TestVerdict as V;
        let store = || StoreError::Corrupt("x".into());
        let all = vec![
            ApiError::InvalidTenant(TenantSlugError::Empty),
            ApiError::InvalidAdminKey(claresia_domain::AdminKey::parse("x").unwrap_err()),
            ApiError::WrongKeyForSurface("x".into()),
            ApiError::InvalidBody("x".into()),
            ApiError::InvalidQuery("x".into()),
            ApiError::BodyTooLarge(1),
            ApiError::Unauthenticated,
            ApiError::Forbidden("x".into()),
            ApiError::RouteNotFound {
                method: "GET".into(),
                path: "/".into(),
            },
            ApiError::MethodNotAllowed {
                method: "GET".into(),
                path: "/".into(),
                allowed: "PUT",
            },
            ApiError::NotConnected("t".into()),
            ApiError::KeyRejected(outcome(V::Unauthorized)),
            ApiError::KeyRejected(outcome(V::MissingScopes)),
            ApiError::OrganizationMismatch {
                tenant: "t".into(),
                current_org: "a".into(),
                new_org: "b".into(),
            },
            ApiError::AnthropicUnavailable(outcome(V::AnthropicUnavailable)),
            ApiError::AnthropicRejected(Box::new(AnthropicError::Config("x".into()))),
            ApiError::Store(store()),
            ApiError::StoreUnavailable(store()),
            ApiError::SubTenantSharesConnection {
                sub: "a-b".into(),
                parent: "a".into(),
            },
            ApiError::NestedSubTenant("a-b".into()),
            ApiError::SubTenantRemoved {
                sub: "a-b".into(),
                parent: "a".into(),
            },
            ApiError::SubTenantUnavailable("x".into()),
            ApiError::SubTenantInUse("x".into()),
            ApiError::InvalidDocument {
                kind: "skill",
                problems: vec![],
            },
            ApiError::InvalidDocument {
                kind: "archetype",
                problems: vec![],
            },
            ApiError::InvalidDocument {
                kind: "sub-tenant",
                problems: vec![],
            },
            ApiError::InvalidDocument {
                kind: "workspaces",
                problems: vec![],
            },
            ApiError::NotFound("x".into()),
            ApiError::PreconditionFailed("x".into()),
            ApiError::InvalidPrecondition("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::PublishRefused("x".into()),
            ApiError::CleanupFailed("x".into()),
            ApiError::NotProvisioned {
                tenant: "a-b".into(),
                namespace: "a".into(),
            },
            ApiError::NamespaceHeld {
                tenant: "a-b".into(),
                parent: "a".into(),
            },
            ApiError::PublishedNameConflict("x".into()),
            ApiError::Internal("x".into()),
        ];
        for e in &all {
            match e {
                ApiError::InvalidTenant(_)
                | ApiError::InvalidAdminKey(_)
                | ApiError::WrongKeyForSurface(_)
                | ApiError::InvalidBody(_)
                | ApiError::InvalidQuery(_)
                | ApiError::BodyTooLarge(_)
                | ApiError::Unauthenticated
                | ApiError::Forbidden(_)
                | ApiError::RouteNotFound { .. }
                | ApiError::MethodNotAllowed { .. }
                | ApiError::NotConnected(_)
                | ApiError::KeyRejected(_)
                | ApiError::OrganizationMismatch { .. }
                | ApiError::AnthropicUnavailable(_)
                | ApiError::AnthropicRejected(_)
                | ApiError::Store(_)
                | ApiError::StoreUnavailable(_)
                | ApiError::SubTenantSharesConnection { .. }
                | ApiError::NestedSubTenant(_)
                | ApiError::SubTenantRemoved { .. }
                | ApiError::SubTenantUnavailable(_)
                | ApiError::SubTenantInUse(_)
                | ApiError::InvalidDocument { .. }
                | ApiError::NotFound(_)
                | ApiError::PreconditionFailed(_)
                | ApiError::InvalidPrecondition(_)
                | ApiError::Conflict(_)
                | ApiError::PublishRefused(_)
                | ApiError::CleanupFailed(_)
                | ApiError::NotProvisioned { .. }
                | ApiError::NamespaceHeld { .. }
                | ApiError::PublishedNameConflict(_)
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn codes_lists_exactly_the_codes_errors_carry() {
        let produced: std::collections::BTreeSet<&str> =
            examples().iter().map(|e| e.code()).collect();
        let listed: std::collections::BTreeSet<&str> = ApiError::CODES.iter().copied().collect();
        assert_eq!(produced, listed);
        assert_eq!(listed.len(), ApiError::CODES.len(), "CODES has a duplicate");
    }

    #[test]
    fn a_store_that_fails_under_a_request_is_a_503_and_what_a_retry_cannot_fix_a_500() {
        let throttled = ApiError::Store(StoreError::Dynamo {
            operation: "Query",
            message: "ProvisionedThroughputExceededException".into(),
        });
        assert_eq!(
            (
                throttled.status(),
                throttled.code(),
                throttled.retry_after()
            ),
            (503, "store_unavailable", Some(5))
        );
        let secrets = ApiError::Store(StoreError::Secrets {
            operation: "GetSecretValue",
            message: "timeout".into(),
        });
        assert_eq!(secrets.status(), 503);
        let corrupt = ApiError::Store(StoreError::Corrupt("x".into()));
        assert_eq!((corrupt.status(), corrupt.code()), (500, "internal_error"));
        // What a retry cannot fix is an operator's to fix, not "retry shortly".
        for code in [
            "ValidationException: The provided starting key is outside query boundaries",
            "ResourceNotFoundException: Requested resource not found",
            "AccessDeniedException: not authorized to perform dynamodb:Query",
        ] {
            let e = ApiError::Store(StoreError::Dynamo {
                operation: "Query",
                message: code.into(),
            });
            assert_eq!((e.status(), e.retry_after()), (500, None), "{code}");
        }
    }

    #[test]
    fn every_503_says_when_to_retry_and_every_body_is_the_envelope() {
        for e in examples() {
            assert_eq!(e.status() == 503, e.retry_after().is_some(), "{e:?}");
            let body = e.body("req-1");
            assert_eq!(body["error"]["code"], e.code());
            assert_eq!(body["error"]["request_id"], "req-1");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{e:?}"
            );
        }
    }
}
