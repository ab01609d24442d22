//! The dev API gateway: plays API Gateway's part locally. It verifies the bearer JWT like the HTTP API's
//! JWT authorizer, puts the claims in the same request-context shape, and hands the request to the same
//! handler the Lambda runs.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription,
    ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription,
};
use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use claresia_api::App;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use serde_json::{json, Value};

use crate::jwt::DevSigner;

/// API Gateway's own payload limit for HTTP APIs.
const GATEWAY_PAYLOAD_LIMIT: usize = 10 * 1024 * 1024;

#[derive(Clone)]
struct Gateway {
    app: Arc<App>,
    signer: Arc<DevSigner>,
}

pub fn router(app: Arc<App>, signer: Arc<DevSigner>) -> Router {
    Router::new()
        .fallback(forward)
        .layer(DefaultBodyLimit::max(GATEWAY_PAYLOAD_LIMIT))
        .with_state(Gateway { app, signer })
}

fn unauthorized() -> Response {
    // What API Gateway answers when its JWT authorizer refuses a token.
    (
        http::StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "Unauthorized"})),
    )
        .into_response()
}

async fn forward(State(gw): State<Gateway>, req: Request) -> Response {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(claims) = token.and_then(|t| gw.signer.verify(t.trim()).ok()) else {
        return unauthorized();
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, GATEWAY_PAYLOAD_LIMIT).await else {
        return (
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large",
        )
            .into_response();
    };
    let lambda_req = to_lambda_request(parts, bytes.to_vec(), claims);
    let resp = gw.app.handle(lambda_req).await;
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, Body::from(bytes))
}

/// Builds the request a Lambda behind an HTTP API (payload v2) receives.
pub fn to_lambda_request(
    parts: http::request::Parts,
    body: Vec<u8>,
    claims: serde_json::Map<String, Value>,
) -> lambda_http::Request {
    // API Gateway flattens claim values to strings.
    let claims: HashMap<String, String> = claims
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect();
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some({
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims;
        jwt
    });
    let mut http_desc = ApiGatewayV2httpRequestContextHttpDescription::default();
    http_desc.method = parts.method.clone();
    http_desc.path = Some(parts.uri.path().to_owned());
    http_desc.protocol = Some("HTTP/1.1".into());
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.request_id = Some(format!(
        "local-{}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    ctx.stage = Some("$default".into());
    ctx.authorizer = Some(authorizer);
    ctx.http = http_desc;
    let body = match String::from_utf8(body) {
        Ok(t) if t.is_empty() => lambda_http::Body::Empty,
        Ok(t) => lambda_http::Body::Text(t),
        Err(e) => lambda_http::Body::Binary(e.into_bytes()),
    };
    lambda_http::Request::from_parts(parts, body)
        .with_request_context(RequestContext::ApiGatewayV2(ctx))
}
