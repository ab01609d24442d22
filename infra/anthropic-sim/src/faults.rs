//! Fault injection and the per-request bookkeeping that wraps every `/v1` route.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::{error_response, REQUEST_ID};
use crate::ids;
use crate::state::{ReceivedRequest, Sim};
use crate::ConnectionHandle;

const RECEIVED_KEEP: usize = 10_000;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    pub rate: f64,
    pub burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Faults configured for one route (or `*` for all).
#[derive(Debug, Clone, Default)]
pub struct RouteFaults {
    pub latency: Duration,
    pub rate_limit: Option<TokenBucket>,
    /// Statuses to answer with (and their `x-should-retry`, if any), in order, before serving normally.
    pub fail: VecDeque<(u16, Option<bool>)>,
    /// Whether failures carry `retry-after` (a 429 without it is a spend cap).
    pub drop_connections: u32,
    /// 429 answers without `retry-after` still to give (a spend cap).
    pub spend_cap: u32,
}

enum Verdict {
    Serve,
    Fail(u16, Option<bool>),
    RateLimited {
        retry_after: Duration,
        limit: f64,
    },
    SpendCap,
    Drop,
    /// Another write to the same plugin is in flight (the Plugins API asks for serial writes per plugin).
    ConcurrentWrite,
}

/// The plugin a Plugins API write addresses (`/v1/organizations/plugins/plugin_…/…`), if any.
fn written_plugin(method: &Method, path: &str) -> Option<String> {
    if method == Method::GET {
        return None;
    }
    let id = path
        .strip_prefix("/v1/organizations/plugins/")?
        .split('/')
        .next()?;
    id.starts_with("plugin_").then(|| id.to_owned())
}

/// Records the request, applies faults (`*` first, then the route's own), and stamps `request-id`.
pub async fn middleware(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let route = format!(
        "{} {}",
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned())
    );
    let request_id = ids::request_id();
    let plugin = written_plugin(req.method(), req.uri().path());
    let (latency, verdict) = {
        let mut st = sim.lock();
        let counter = st.counters.entry(route.clone()).or_default();
        counter.requests += 1;
        if req.method() != Method::GET {
            counter.writes += 1;
        }
        let h = req.headers();
        st.received.push_back(ReceivedRequest {
            method: req.method().to_string(),
            route: route.clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or_default().to_owned(),
            api_key_last4: header(h, "x-api-key").map(|k| {
                let chars: Vec<char> = k.chars().collect();
                chars[chars.len().saturating_sub(4)..].iter().collect()
            }),
            anthropic_version: header(h, "anthropic-version"),
            user_agent: header(h, "user-agent"),
            content_type: header(h, "content-type"),
        });
        if st.received.len() > RECEIVED_KEEP {
            st.received.pop_front();
        }
        let org = req
            .uri()
            .path()
            .strip_prefix("/v1/organizations/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|org| st.orgs.get(org));
        let mut latency = org.map_or(Duration::ZERO, |o| o.latency);
        let mut verdict = match org.and_then(|o| o.fail_status) {
            Some(status) => Verdict::Fail(status, None),
            None => Verdict::Serve,
        };
        if let Some(p) = &plugin {
            if !st.writing_plugins.insert(p.clone()) {
                verdict = Verdict::ConcurrentWrite;
            }
        }
        for key in ["*", route.as_str()] {
            let Some(f) = st.faults.get_mut(key) else {
                continue;
            };
            latency += f.latency;
            if !matches!(verdict, Verdict::Serve) {
                continue;
            }
            if f.drop_connections > 0 {
                f.drop_connections -= 1;
                verdict = Verdict::Drop;
            } else if let Some((status, should_retry)) = f.fail.pop_front() {
                verdict = Verdict::Fail(status, should_retry);
            } else if f.spend_cap > 0 {
                f.spend_cap -= 1;
                verdict = Verdict::SpendCap;
            } else if let Some(bucket) = f.rate_limit.as_mut() {
                if let Err(wait) = bucket.take() {
                    verdict = Verdict::RateLimited {
                        retry_after: wait,
                        limit: bucket.rate,
                    };
                }
            }
        }
        (latency, verdict)
    };

    let write = req.method() != Method::GET;
    // Only the write that marked its plugin busy clears the mark, even if the request is dropped midway.
    let _busy = PluginBusy {
        sim: sim.clone(),
        plugin: plugin.filter(|_| !matches!(verdict, Verdict::ConcurrentWrite)),
    };
    let rid = request_id.clone();
    let mut resp = crate::api::REQUEST_ID_TL
        .scope(rid, async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            answer(verdict, req, next).await
        })
        .await;
    stamp_request_id(&mut resp, &request_id);
    if write && resp.status().is_success() {
        sim.lock().counters.entry(route).or_default().applied += 1;
    }
    resp
}

/// A plugin's in-flight write mark, cleared when the request ends however it ends.
struct PluginBusy {
    sim: Sim,
    plugin: Option<String>,
}

impl Drop for PluginBusy {
    fn drop(&mut self) {
        if let Some(p) = self.plugin.take() {
            self.sim.lock().writing_plugins.remove(&p);
        }
    }
}

async fn answer(verdict: Verdict, req: Request, next: Next) -> Response {
    match verdict {
        Verdict::Serve => next.run(req).await,
        Verdict::Drop => {
            if let Some(handle) = req.extensions().get::<ConnectionHandle>() {
                handle.0.notify_one();
                std::future::pending::<()>().await;
            }
            error_response(500, "api_error", "connection dropped")
        }
        Verdict::Fail(status, should_retry) => {
            let kind = match status {
                529 => "overloaded_error",
                504 => "timeout_error",
                429 => "rate_limit_error",
                413 => "request_too_large",
                409 => "conflict_error",
                404 => "not_found_error",
                403 => "permission_error",
                402 => "billing_error",
                401 => "authentication_error",
                400 => "invalid_request_error",
                _ => "api_error",
            };
            let mut resp = error_response(status, kind, "Injected fault");
            if let Some(retry) = should_retry {
                let value = if retry { "true" } else { "false" };
                resp.headers_mut().insert(
                    "x-should-retry",
                    axum::http::HeaderValue::from_static(value),
                );
            }
            resp
        }
        Verdict::ConcurrentWrite => {
            let mut resp = error_response(
                503,
                "api_error",
                "Another write to this plugin is in progress; send writes for one plugin serially.",
            );
            resp.headers_mut().insert(
                "x-should-retry",
                axum::http::HeaderValue::from_static("true"),
            );
            resp
        }
        Verdict::SpendCap => error_response(
            429,
            "rate_limit_error",
            "Your organization has reached its spend limit.",
        ),
        Verdict::RateLimited { retry_after, limit } => {
            rate_limited(retry_after, limit, "Rate limit exceeded")
        }
    }
}

/// A 429 with `retry-after` (whole seconds, as Anthropic sends) and the rate-limit headers.
pub fn rate_limited(retry_after: Duration, limit: f64, message: &str) -> Response {
    let mut resp = error_response(429, "rate_limit_error", message);
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let reset = time::OffsetDateTime::now_utc() + retry_after;
    let h = resp.headers_mut();
    h.insert("retry-after", HeaderValue::from(secs));
    h.insert(
        "anthropic-ratelimit-requests-limit",
        HeaderValue::from(limit.round() as u64),
    );
    h.insert(
        "anthropic-ratelimit-requests-remaining",
        HeaderValue::from_static("0"),
    );
    if let Ok(Ok(v)) = reset
        .format(&time::format_description::well_known::Rfc3339)
        .map(|s| HeaderValue::from_str(&s))
    {
        h.insert("anthropic-ratelimit-requests-reset", v);
    }
    resp
}

/// Every answer carries its request id (error bodies carry the same one, from the task-local).
fn stamp_request_id(resp: &mut Response, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
