use std::time::{Duration, Instant};

use claresia_domain::AdminKey;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::AnthropicError;
use crate::retry::{decide, parse_retry_after, Decision, RetryPolicy};
use crate::types::{Organization, Workspace};

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The point in time by which a caller needs an answer; no attempt or wait runs past it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Deadline(Instant::now() + budget)
    }

    pub fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.anthropic.com`, or the simulator.
    pub base_url: String,
    pub user_agent: String,
    pub retry: RetryPolicy,
    /// Upper bound for one attempt (the deadline may cut it shorter).
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Client-side pacing so bursts (a 1,000-skill publish) stay under Anthropic's rate limit instead of
    /// riding on 429s; `None` disables it. 429 + `retry-after` remains the backstop.
    pub requests_per_second: Option<f64>,
    /// Also trust the system's certificate store (read when the client is built); else the compiled-in
    /// webpki roots alone, and no certificate file is opened.
    pub native_roots: bool,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            user_agent: format!("claresia-connector/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy::default(),
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            requests_per_second: None,
            native_roots: false,
        }
    }
}

/// What a request sends besides its headers.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    /// `multipart/form-data`, one `files[]` part per (path, content): the filename is the path.
    Files(&'a [(String, String)]),
}

/// One request of any surface (see [`AnthropicClient::call`]).
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a [(&'a str, String)],
    pub body: Body<'a>,
    /// The `anthropic-beta` header.
    pub beta: Option<&'a str>,
    pub pacer: Option<&'a Pacer>,
    /// A slot reserved beforehand on `pacer` ([`Pacer::reserve`]): the first attempt goes out then,
    /// without waiting on `pacer` again; retries wait on it as usual.
    pub slot: Option<Instant>,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str, query: &'a [(&'a str, String)]) -> Self {
        Call {
            method: Method::GET,
            path,
            query,
            body: Body::None,
            beta: None,
            pacer: None,
            slot: None,
        }
    }

    pub fn new(method: Method, path: &'a str, body: Body<'a>) -> Self {
        Call {
            method,
            path,
            query: &[],
            body,
            beta: None,
            pacer: None,
            slot: None,
        }
    }

    pub fn beta(self, beta: &'a str) -> Self {
        Call {
            beta: Some(beta),
            ..self
        }
    }

    pub fn paced(self, pacer: &'a Pacer) -> Self {
        Call {
            pacer: Some(pacer),
            ..self
        }
    }

    /// Paced by `pacer`, its first attempt in a slot reserved on it.
    pub fn in_slot(self, pacer: &'a Pacer, slot: Instant) -> Self {
        Call {
            pacer: Some(pacer),
            slot: Some(slot),
            ..self
        }
    }
}

/// One page of a `data`/`next_page` list (the Claude Enterprise APIs' opaque page tokens).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub next_page: Option<String>,
}

/// One page of a list endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(default)]
    pub first_id: Option<String>,
    #[serde(default)]
    pub last_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<crate::error::ErrorDetails>,
}

/// A client for one Anthropic base URL. Cheap to clone; build it once per Lambda sandbox.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    /// Built on the first request (its TLS setup is most of what a cold start would spend on it), shared
    /// by the clones.
    http: std::sync::Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>,
    http_config: HttpConfig,
    base_url: String,
    retry: RetryPolicy,
    attempt_timeout: Duration,
    pacer: Option<std::sync::Arc<Pacer>>,
}

/// A token bucket (as GCRA) shared by every request that holds it: a burst of up to one second's worth goes
/// out at once, sustained load leaves evenly at the configured rate, however many tasks send it. The
/// client has one for all its requests; an adapter may hold more (one per org and kind of request).
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: (burst - 1) intervals.
    tolerance: Duration,
    tat: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    /// `per_minute` requests a minute, evenly: no burst beyond one request.
    pub fn per_minute(per_minute: f64) -> Pacer {
        let interval = Duration::from_secs_f64(60.0 / per_minute.max(0.001));
        Pacer {
            interval,
            tolerance: Duration::ZERO,
            tat: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn new(rps: f64) -> Pacer {
        let interval = Duration::from_secs_f64(1.0 / rps);
        let burst = rps.ceil().max(1.0) as u32;
        Pacer {
            interval,
            tolerance: interval * (burst - 1),
            tat: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Reserves `n` consecutive slots, if `fits` accepts their times (else nothing is taken): work that
    /// must not start unless its follow-up is certain to be sent in time books both at once.
    pub async fn reserve(
        &self,
        n: u32,
        fits: impl FnOnce(&[Instant]) -> bool,
    ) -> Option<Vec<Instant>> {
        let mut tat = self.tat.lock().await;
        let now = Instant::now();
        let mut next = *tat;
        let mut slots = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = next.max(now);
            slots.push(t.checked_sub(self.tolerance).unwrap_or(now).max(now));
            next = t + self.interval;
        }
        if !fits(&slots) {
            return None;
        }
        *tat = next;
        Some(slots)
    }

    /// Waits for a slot; `false` if the slot comes after the deadline.
    pub async fn wait(&self, deadline: Deadline) -> bool {
        let allowed_at = {
            let mut tat = self.tat.lock().await;
            let now = Instant::now();
            let t = (*tat).max(now);
            let allowed_at = t.checked_sub(self.tolerance).unwrap_or(now).max(now);
            if allowed_at.saturating_duration_since(now) >= deadline.remaining() {
                return false;
            }
            *tat = t + self.interval;
            allowed_at
        };
        tokio::time::sleep_until(allowed_at.into()).await;
        true
    }
}

/// What the HTTP client is built from.
#[derive(Debug, Clone)]
struct HttpConfig {
    user_agent: String,
    connect_timeout: Duration,
    native_roots: bool,
}

impl HttpConfig {
    fn build(&self) -> Result<reqwest::Client, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        reqwest::Client::builder()
            .user_agent(self.user_agent.clone())
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .tls_built_in_webpki_certs(true)
            .tls_built_in_native_certs(self.native_roots)
            .build()
            .map_err(|e| e.to_string())
    }
}

impl AnthropicClient {
    pub fn new(config: ClientConfig) -> Result<Self, AnthropicError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(AnthropicError::Config(format!(
                "ANTHROPIC_BASE_URL must be an http(s) URL, got {base_url:?}"
            )));
        }
        let pacer = config
            .requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|rps| std::sync::Arc::new(Pacer::new(rps)));
        Ok(AnthropicClient {
            http: Default::default(),
            http_config: HttpConfig {
                user_agent: config.user_agent,
                connect_timeout: config.connect_timeout,
                native_roots: config.native_roots,
            },
            base_url,
            retry: config.retry,
            attempt_timeout: config.attempt_timeout,
            pacer,
        })
    }

    /// The longest one attempt may take.
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one request with the contract's retry rules and decodes a JSON answer.
    pub async fn send<T: DeserializeOwned>(
        &self,
        key: &AdminKey,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        deadline: Deadline,
    ) -> Result<T, AnthropicError> {
        let call = Call {
            method,
            path,
            query,
            body: body.map_or(Body::None, Body::Json),
            beta: None,
            pacer: None,
            slot: None,
        };
        self.call(key, call, deadline).await
    }

    /// [`AnthropicClient::send`] with everything a surface may add: a beta header, a multipart body, a
    /// pacer of its own (a per-org limit) waited on before every attempt.
    pub async fn call<T: DeserializeOwned>(
        &self,
        key: &AdminKey,
        call: Call<'_>,
        deadline: Deadline,
    ) -> Result<T, AnthropicError> {
        let (method, path) = (&call.method, call.path);
        let url = format!("{}{}", self.base_url, path);
        let mut key_header = HeaderValue::from_str(key.expose()).map_err(|_| {
            AnthropicError::Config("the admin key is not a valid header value".into())
        })?;
        key_header.set_sensitive(true);

        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.wait_turn(&call, attempt, deadline).await?;
            let req = self.request(&call, &url, &key_header, deadline.remaining())?;
            let (err, decision) = match self.attempt(req).await {
                Ok(Answer::Ok { bytes, request_id }) => {
                    return serde_json::from_slice(&bytes).map_err(|e| AnthropicError::Decode {
                        message: format!("{method} {path}: {e}"),
                        request_id,
                    });
                }
                Ok(Answer::Failed {
                    err,
                    retry_after,
                    should_retry,
                }) => {
                    let status = err.status().unwrap_or(0);
                    (err, decide(status, retry_after, should_retry))
                }
                Err(err) => (err, Decision::Backoff),
            };

            let wait = match decision {
                Decision::Stop => return Err(err.with_attempts(attempt).stopped()),
                Decision::After(d) if d > self.retry.max_retry_after => {
                    return Err(err.with_attempts(attempt))
                }
                Decision::After(d) => d,
                Decision::Backoff => self.retry.backoff(attempt),
            };
            if attempt >= self.retry.max_attempts || wait >= deadline.remaining() {
                return Err(err.with_attempts(attempt));
            }
            tracing::warn!(
                %method,
                path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                status = err.status(),
                request_id = err.request_id(),
                "Anthropic request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for this attempt's turn: the first in its reserved slot if it has one, any other on the
    /// client's pacer and the call's; an error if the deadline comes first.
    async fn wait_turn(
        &self,
        call: &Call<'_>,
        attempt: u32,
        deadline: Deadline,
    ) -> Result<(), AnthropicError> {
        let (method, path) = (&call.method, call.path);
        let reserved = call.slot.filter(|_| attempt == 1);
        let own = call.pacer.filter(|_| reserved.is_none());
        for p in self.pacer.as_deref().into_iter().chain(own) {
            if !p.wait(deadline).await {
                return Err(AnthropicError::Transport {
                    message: format!("deadline reached while pacing {method} {path}"),
                    timeout: true,
                    attempts: attempt - 1,
                });
            }
        }
        if let Some(at) = reserved {
            tokio::time::sleep_until(at.into()).await;
        }
        if deadline.remaining().is_zero() {
            return Err(AnthropicError::Transport {
                message: format!("deadline reached before {method} {path} could be sent"),
                timeout: true,
                attempts: attempt - 1,
            });
        }
        Ok(())
    }

    /// One attempt's request, its timeout the smaller of the time left and the attempt timeout.
    fn request(
        &self,
        call: &Call<'_>,
        url: &str,
        key_header: &HeaderValue,
        remaining: Duration,
    ) -> Result<reqwest::RequestBuilder, AnthropicError> {
        let http = self
            .http
            .get_or_init(|| self.http_config.build())
            .as_ref()
            .map_err(|e| AnthropicError::Config(format!("the HTTP client: {e}")))?;
        let mut req = http
            .request(call.method.clone(), url)
            .header("x-api-key", key_header.clone())
            .timeout(remaining.min(self.attempt_timeout));
        if !call.query.is_empty() {
            req = req.query(call.query);
        }
        if let Some(b) = call.beta {
            req = req.header("anthropic-beta", b);
        }
        match &call.body {
            Body::None => {}
            Body::Json(b) => req = req.json(b),
            Body::Files(files) => {
                // A form cannot be cloned: each attempt builds its own.
                let mut form = reqwest::multipart::Form::new();
                for (path, content) in files.iter() {
                    let part = reqwest::multipart::Part::bytes(content.as_bytes().to_vec())
                        .file_name(path.clone());
                    form = form.part("files[]", part);
                }
                req = req.multipart(form);
            }
        }
        Ok(req)
    }

    async fn attempt(&self, req: reqwest::RequestBuilder) -> Result<Answer, AnthropicError> {
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let request_id = header("request-id")
            .or_else(|| header("x-request-id"))
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(Answer::Ok {
                bytes: bytes.to_vec(),
                request_id,
            });
        }
        let retry_after = parse_retry_after(header("retry-after"), header("retry-after-ms"));
        let should_retry = match header("x-should-retry") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let err = match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(env) => {
                let mut err = AnthropicError::api(
                    status,
                    env.error.kind,
                    env.error.message,
                    request_id.or(env.request_id),
                );
                if let AnthropicError::Api { details, .. } = &mut err {
                    *details = env.error.details.map(Box::new);
                }
                err
            }
            // Proxies and load balancers answer without the envelope: classify by status.
            Err(_) => AnthropicError::api(
                status,
                format!("http_{status}"),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                request_id,
            ),
        };
        Ok(Answer::Failed {
            err,
            retry_after,
            should_retry,
        })
    }

    /// One page of a list endpoint.
    pub async fn list_page<T: DeserializeOwned>(
        &self,
        key: &AdminKey,
        path: &str,
        query: &[(&str, String)],
        after_id: Option<&str>,
        limit: u32,
        deadline: Deadline,
    ) -> Result<Page<T>, AnthropicError> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("limit", limit.to_string()));
        if let Some(after) = after_id {
            q.push(("after_id", after.to_owned()));
        }
        self.send(key, Method::GET, path, &q, None, deadline).await
    }

    /// Every item of a list endpoint, page after page. Fails as a whole if any page fails: a partial
    /// listing must never pass for a complete one.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        key: &AdminKey,
        path: &str,
        query: &[(&str, String)],
        limit: u32,
        deadline: Deadline,
    ) -> Result<Vec<T>, AnthropicError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page: Page<T> = self
                .list_page(key, path, query, after.as_deref(), limit, deadline)
                .await?;
            out.extend(page.data);
            match (page.has_more, page.last_id) {
                (true, Some(last)) if Some(&last) != after.as_ref() => after = Some(last),
                (true, _) => {
                    return Err(AnthropicError::Decode {
                        message: format!("{path}: has_more is true but last_id does not advance"),
                        request_id: None,
                    })
                }
                (false, _) => return Ok(out),
            }
        }
    }

    /// Every item of a `data`/`next_page` list. A page may be short or empty while `next_page` is set
    /// (the Plugins API says so): only a null `next_page` ends the list. Fails as a whole if a page fails.
    pub async fn list_all_pages<T: DeserializeOwned>(
        &self,
        key: &AdminKey,
        call: Call<'_>,
        deadline: Deadline,
    ) -> Result<Vec<T>, AnthropicError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut token: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = call.query.to_vec();
            if let Some(t) = &token {
                query.push(("page", t.clone()));
            }
            let page: TokenPage<T> = self
                .call(
                    key,
                    Call {
                        query: &query,
                        ..call.clone()
                    },
                    deadline,
                )
                .await?;
            out.extend(page.data);
            match page.next_page {
                None => return Ok(out),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(AnthropicError::Decode {
                        message: format!("{}: next_page {next:?} came back twice", call.path),
                        request_id: None,
                    })
                }
                Some(next) => token = Some(next),
            }
        }
    }

    /// `GET /v1/organizations/me`.
    pub async fn organization(
        &self,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<Organization, AnthropicError> {
        self.send(
            key,
            Method::GET,
            "/v1/organizations/me",
            &[],
            None,
            deadline,
        )
        .await
    }

    /// Every non-archived workspace of the key's organization.
    pub async fn workspaces(
        &self,
        key: &AdminKey,
        deadline: Deadline,
    ) -> Result<Vec<Workspace>, AnthropicError> {
        let all: Vec<Workspace> = self
            .list_all(
                key,
                "/v1/organizations/workspaces",
                &[("include_archived", "false".to_owned())],
                100,
                deadline,
            )
            .await?;
        Ok(all
            .into_iter()
            .filter(|w| w.archived_at.is_none())
            .collect())
    }
}

enum Answer {
    Ok {
        bytes: Vec<u8>,
        request_id: Option<String>,
    },
    Failed {
        err: AnthropicError,
        retry_after: Option<Duration>,
        should_retry: Option<bool>,
    },
}

fn transport(e: reqwest::Error) -> AnthropicError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    AnthropicError::Transport {
        message,
        timeout: e.is_timeout(),
        attempts: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_books_consecutive_slots_or_nothing() {
        let pacer = Pacer::per_minute(600.0); // one every 100 ms
        let start = Instant::now();
        let slots = pacer.reserve(2, |_| true).await.unwrap();
        assert_eq!(slots[1] - slots[0], Duration::from_millis(100));
        assert!(slots[0] - start < Duration::from_millis(5));
        // Refused: nothing is taken, so the next booking starts where the last one ended.
        assert!(pacer.reserve(3, |_| false).await.is_none());
        let next = pacer.reserve(1, |_| true).await.unwrap();
        assert_eq!(next[0] - slots[1], Duration::from_millis(100));
    }
}
