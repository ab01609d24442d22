//! Routing and the HTTP edge: parse, validate and authorize before any I/O, then answer JSON.

use std::time::Instant;

use claresia_anthropic::Deadline;
use claresia_domain::admin_key::redact_keys;
use claresia_domain::{AdminKey, Surface, TenantSlug};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::auth::{self, Access};
use crate::connection::ConnectOptions;
use crate::precondition::Precondition;
use crate::{ApiError, App};

/// Request bodies above this are refused before they are parsed.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Connection,
    ConnectionTest,
    Skills,
    Skill,
    Archetypes,
    Archetype,
    Workspaces,
    Republish,
    Telemetry,
    Usage,
    SubTenants,
    SubTenant,
    TopLevel,
    Release,
}

impl Route {
    /// The methods a route answers.
    fn allowed(self) -> &'static str {
        match self {
            Route::Connection => "GET, PUT, DELETE",
            Route::ConnectionTest | Route::Republish | Route::Release => "POST",
            Route::TopLevel => "PUT",
            Route::Skills
            | Route::Archetypes
            | Route::Telemetry
            | Route::Usage
            | Route::SubTenants => "GET",
            Route::Skill | Route::Archetype | Route::SubTenant => "GET, PUT, DELETE",
            Route::Workspaces => "GET, PUT",
        }
    }

    /// Whether the call is a catalog write that takes `If-Match` / `If-None-Match`.
    fn conditional(self, method: &str) -> bool {
        matches!(self, Route::Skill | Route::Archetype | Route::Workspaces) && method != "GET"
    }

    /// What a call does, for the authorization decision.
    fn access(self, method: &str) -> Access {
        match (self, method) {
            (Route::Connection, "GET") => Access::Status,
            (Route::Connection | Route::ConnectionTest, _) => Access::Connection,
            (Route::Telemetry | Route::Usage, _) => Access::Telemetry,
            (Route::SubTenants | Route::SubTenant, _) => Access::SubTenants,
            (Route::TopLevel | Route::Release, _) => Access::Operator,
            (_, "GET") => Access::HubRead,
            _ => Access::HubWrite,
        }
    }
}

/// `{"admin_api_key": "...", "surface"?: "preview"|"enterprise"}`; unknown fields are refused so a typo
/// is not silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    admin_api_key: String,
    #[serde(default)]
    surface: Option<Surface>,
}

/// The connect body: the key, the surface, and (enterprise) the zero-retention attestation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    admin_api_key: String,
    #[serde(default)]
    surface: Option<Surface>,
    #[serde(default)]
    zero_retention_attestation: Option<AttestationBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationBody {
    reference: String,
}

impl App {
    /// Answers one API Gateway request. Never fails: every error becomes a JSON error response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = Instant::now();
        let request_id = request_id(&req);
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!("request", request_id = %request_id, %method, %path);
        let deadline = self.deadline_of(&req);
        let work = async move {
            // Boxed: the routes' futures are large, and a request must not need a large stack.
            let reply = match Box::pin(self.route(req, deadline)).await {
                Ok(reply) => reply,
                Err(err) => {
                    if err.status() >= 500 {
                        tracing::error!(code = err.code(), error = %err, "request failed");
                    } else {
                        tracing::info!(code = err.code(), error = %err, "request refused");
                    }
                    Reply {
                        status: err.status(),
                        body: err.body(&request_id),
                        etag: None,
                        location: None,
                        retry_after: err.retry_after(),
                        allow: match &err {
                            ApiError::MethodNotAllowed { allowed, .. } => Some(allowed),
                            _ => None,
                        },
                    }
                }
            };
            tracing::info!(
                status = reply.status,
                latency_ms = started.elapsed().as_millis() as u64,
                "request handled"
            );
            reply.into_response(&request_id)
        };
        work.instrument(span).await
    }

    /// The budget of one request: `REQUEST_BUDGET_MS` (API Gateway stops waiting at 30 s), and never past
    /// the Lambda invocation's own deadline less a margin to answer in. Work left over is the sweep's.
    fn deadline_of(&self, req: &Request) -> Deadline {
        let budget = self.config.request_budget;
        let left = req
            .lambda_context_ref()
            .map(|ctx| ctx.deadline)
            .filter(|ms| *ms > 0)
            .map(|ms| {
                let now_ms =
                    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
                std::time::Duration::from_millis(ms.saturating_sub(now_ms).saturating_sub(1_000))
            });
        Deadline::after(left.map_or(budget, |l| l.min(budget)))
    }

    /// Routes and authorizes a request (nothing written before the decision), then runs its handler
    /// within `deadline`.
    async fn route(&self, req: Request, deadline: Deadline) -> Result<Reply, ApiError> {
        let path = req.uri().path().to_owned();
        let method = req.method().as_str().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (raw_tenant, route, item) = match segments.as_slice() {
            ["tenants", t, "connection"] => (*t, Route::Connection, None),
            ["tenants", t, "connection", "test"] => (*t, Route::ConnectionTest, None),
            ["tenants", t, "skills"] => (*t, Route::Skills, None),
            ["tenants", t, "skills", id] => (*t, Route::Skill, Some(*id)),
            ["tenants", t, "archetypes"] => (*t, Route::Archetypes, None),
            ["tenants", t, "archetypes", a] => (*t, Route::Archetype, Some(*a)),
            ["tenants", t, "workspaces"] => (*t, Route::Workspaces, None),
            ["tenants", t, "republish"] => (*t, Route::Republish, None),
            ["tenants", t, "telemetry"] => (*t, Route::Telemetry, None),
            ["tenants", t, "usage"] => (*t, Route::Usage, None),
            ["tenants", t, "sub-tenants"] => (*t, Route::SubTenants, None),
            ["tenants", t, "sub-tenants", sub] => (*t, Route::SubTenant, Some(*sub)),
            ["tenants", t, "top-level"] => (*t, Route::TopLevel, None),
            ["tenants", t, "release"] => (*t, Route::Release, None),
            _ => return Err(ApiError::RouteNotFound { method, path }),
        };
        let allowed = route.allowed();
        if !allowed.split(", ").any(|m| m == method) {
            return Err(ApiError::MethodNotAllowed {
                method,
                path,
                allowed,
            });
        }
        // API Gateway hands its catch-all ($default) only what no template route matched, so a method the
        // path has arrives there only as another spelling of the path (a trailing slash) or as a route the
        // template lacks: no route, deployed. The catch-all never works, it only answers.
        if arrived_on_catch_all(&req) {
            return Err(ApiError::RouteNotFound { method, path });
        }
        // Pure until the caller is known to be one that could be allowed on this tenant.
        let tenant = TenantSlug::parse(raw_tenant)?;
        let item = item.unwrap_or_default().to_owned();
        let caller = auth::caller(&req)?;
        let access = route.access(&method);
        caller.precheck(&tenant, access)?;
        let body = body_bytes(&req)?;
        // Reads are never conditional (every answer is `no-store`, so no client holds a copy to revalidate).
        let pre = if method == "GET" {
            Precondition::None
        } else {
            Precondition::from_headers(req.headers())?
        };
        if pre.is_some() && !route.conditional(&method) {
            return Err(ApiError::InvalidPrecondition(format!(
                "{method} {path} does not support If-Match / If-None-Match; only writes of a skill, an archetype or the workspace mappings do"
            )));
        }
        // The one read before the decision: is the path tenant a sub-tenant, and whose? Nothing is written
        // yet, so a store failure here is "retry", never an internal error.
        let link = self
            .hub
            .parent_link(&tenant)
            .await
            .map_err(ApiError::StoreUnavailable)?;
        let grant = auth::decide(&caller, &tenant, link.as_ref(), access)?;
        let query = req.uri().query().unwrap_or_default();
        let request = Authorized {
            route,
            method,
            path,
            allowed,
            tenant,
            item,
            caller,
            grant,
            body,
            pre,
            query,
        };
        self.dispatch(request, deadline).await
    }

    /// Runs an authorized request's handler.
    async fn dispatch(&self, r: Authorized<'_>, deadline: Deadline) -> Result<Reply, ApiError> {
        let Authorized {
            route,
            method,
            path,
            allowed,
            tenant,
            item,
            caller,
            grant,
            body,
            pre,
            query,
        } = r;
        let (hub, item) = (&grant.hub, item.as_str());
        match (route, method.as_str()) {
            (Route::Connection, "PUT") => {
                self.put_connection(&tenant, body, &caller, deadline).await
            }
            (Route::Connection, "GET") => Reply::ok(self.connection_status(&grant).await?),
            (Route::Connection, "DELETE") => Reply::ok(self.disconnect(&tenant, deadline).await?),
            (Route::Skills, "GET") => Reply::ok(self.list_skills(hub, query).await?),
            (Route::Skill, "GET") => self.get_skill(hub, item).await,
            (Route::Skill, "PUT") => self.put_skill(hub, item, body, &pre, deadline).await,
            (Route::Skill, "DELETE") => self.delete_skill(hub, item, &pre, deadline).await,
            (Route::Archetypes, "GET") => Reply::ok(self.list_archetypes(hub, query).await?),
            (Route::Archetype, "GET") => self.get_archetype(hub, item).await,
            (Route::Archetype, "PUT") => self.put_archetype(hub, item, body, &pre, deadline).await,
            (Route::Archetype, "DELETE") => self.delete_archetype(hub, item, &pre, deadline).await,
            (Route::Workspaces, "GET") => self.get_workspaces(hub).await,
            (Route::Workspaces, "PUT") => self.put_workspaces(hub, body, &pre, deadline).await,
            (Route::Republish, "POST") => Reply::ok(self.republish(hub, deadline).await?),
            (Route::SubTenants, "GET") => Reply::ok(self.list_sub_tenants(hub, query).await?),
            (Route::SubTenant, "GET") => Reply::ok(self.get_sub_tenant(hub, item).await?),
            (Route::SubTenant, "PUT") => {
                let result = self
                    .put_sub_tenant(hub, item, body, caller.subject.as_deref())
                    .await?;
                let created = result["created"] == Value::Bool(true);
                Ok(Reply::json(result)
                    .created(created, format!("/tenants/{hub}/sub-tenants/{item}")))
            }
            (Route::SubTenant, "DELETE") => Reply::ok(self.delete_sub_tenant(hub, item).await?),
            (Route::TopLevel, "PUT") => {
                let result = self
                    .provision_top_level(&tenant, body, caller.subject.as_deref())
                    .await?;
                let created = result.created;
                Ok(Reply::ok(result)?.created(created, format!("/tenants/{tenant}/top-level")))
            }
            (Route::Release, "POST") => Reply::ok(
                self.release_slug(&tenant, body, caller.subject.as_deref())
                    .await?,
            ),
            // Telemetry is per (sub-)tenant: the path's own tenant, not its Hub.
            (Route::Telemetry, "GET") => Reply::ok(self.telemetry(&grant.tenant, query).await?),
            // Usage too: a sub-tenant reads the usage routed to it.
            (Route::Usage, "GET") => Reply::ok(self.usage(&grant.tenant, query).await?),
            (Route::ConnectionTest, "POST") => {
                let candidate = candidate_key(body)?;
                Reply::ok(self.test_connection(&tenant, candidate, deadline).await?)
            }
            _ => Err(ApiError::MethodNotAllowed {
                method,
                path,
                allowed,
            }),
        }
    }
    /// `PUT /tenants/{tenant}/connection`: the body read into a key and its options, then connect.
    async fn put_connection(
        &self,
        tenant: &TenantSlug,
        body: &[u8],
        caller: &auth::Caller,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        let input: ConnectBody = parse_json(body)?;
        let key = AdminKey::parse(&input.admin_api_key)?;
        let options = ConnectOptions {
            surface: input.surface,
            attestation: input
                .zero_retention_attestation
                .map(|a| (a.reference, caller.subject.clone())),
        };
        let result = self.connect(tenant, key, options, deadline).await?;
        let created = result.created;
        Ok(Reply::ok(result)?.created(created, format!("/tenants/{tenant}/connection")))
    }
}

/// The key a connection test names: none (an empty body: the stored key), or a candidate and its surface.
fn candidate_key(body: &[u8]) -> Result<Option<(AdminKey, Option<Surface>)>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let input: KeyBody = parse_json(body)?;
    Ok(Some((
        AdminKey::parse(&input.admin_api_key)?,
        input.surface,
    )))
}

/// A request past routing and authorization: what its handler is given.
struct Authorized<'r> {
    route: Route,
    method: String,
    path: String,
    allowed: &'static str,
    tenant: TenantSlug,
    item: String,
    caller: auth::Caller,
    grant: auth::Grant,
    body: &'r [u8],
    pre: Precondition,
    query: &'r str,
}

/// One answer: a status, a JSON body, and the headers a client acts on.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The ETag of the document the body is (or was written from).
    pub etag: Option<String>,
    /// Where a created resource lives (201 Created).
    pub location: Option<String>,
    /// Seconds to wait before retrying (503).
    pub retry_after: Option<u32>,
    /// The methods the path answers (405).
    pub allow: Option<&'static str>,
}

impl Reply {
    pub fn json(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            etag: None,
            location: None,
            retry_after: None,
            allow: None,
        }
    }

    pub fn ok<T: Serialize>(value: T) -> Result<Reply, ApiError> {
        serde_json::to_value(value)
            .map(Reply::json)
            .map_err(|e| ApiError::Internal(format!("response could not be encoded: {e}")))
    }

    /// 201 with `Location` when the request created the resource, else unchanged (200).
    pub fn created(mut self, created: bool, location: String) -> Reply {
        if created {
            self.status = 201;
            self.location = Some(location);
        }
        self
    }

    /// The ETag of the stored document text `text`.
    pub fn etag(mut self, text: &str) -> Reply {
        self.etag = Some(crate::precondition::etag_of(text));
        self
    }

    fn into_response(self, request_id: &str) -> Response<Body> {
        let mut resp = json_response(self.status, &self.body);
        let headers = resp.headers_mut();
        let mut set = |name: http::header::HeaderName, value: &str| {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        set(REQUEST_ID_HEADER, request_id);
        if let Some(etag) = &self.etag {
            set(http::header::ETAG, etag);
        }
        if let Some(location) = &self.location {
            set(http::header::LOCATION, location);
        }
        if let Some(secs) = self.retry_after {
            set(http::header::RETRY_AFTER, &secs.to_string());
        }
        if let Some(methods) = self.allow {
            set(http::header::ALLOW, methods);
        }
        resp
    }
}

/// The request id a client quotes to support, on every response (error bodies carry it too).
pub const REQUEST_ID_HEADER: http::header::HeaderName =
    http::header::HeaderName::from_static("x-request-id");

fn body_bytes(req: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge(bytes.len()));
    }
    Ok(bytes)
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidBody(
            "a JSON body is required, e.g. {\"admin_api_key\": \"sk-ant-admin01-…\"}".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde quotes offending values; a key pasted into the wrong place must not echo back.
        ApiError::InvalidBody(redact_keys(&e.to_string()))
    })
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let mut resp = Response::new(Body::Text(text));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Whether API Gateway routed the request to its `$default` route: the template's catch-all.
fn arrived_on_catch_all(req: &Request) -> bool {
    matches!(
        req.request_context_ref(),
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx))
            if ctx.route_key.as_deref() == Some("$default")
    )
}

/// API Gateway's request id (what its access logs show), else the Lambda invocation's.
fn request_id(req: &Request) -> String {
    match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
    .or_else(|| req.lambda_context_ref().map(|c| c.request_id.clone()))
    .unwrap_or_else(|| "local".into())
}
