use claresia_domain::admin_key::redact_keys;

/// What went wrong talking to Anthropic. Every variant that came from an answer carries its request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnthropicError {
    #[error("Anthropic answered HTTP {status} {error_type}{}: {message}{}{}", code(.details), rid(.request_id), final_note(*.status, *.deterministic))]
    Api {
        status: u16,
        error_type: String,
        message: String,
        request_id: Option<String>,
        attempts: u32,
        /// `error.details`, where the answer has them (boxed: most answers have none).
        details: Option<Box<ErrorDetails>>,
        /// A failure status the retry rules say not to repeat (`x-should-retry: false`, a 429 without
        /// `retry-after`: a spend cap): a refusal with a reason, not an outage.
        deterministic: bool,
    },
    #[error("could not reach Anthropic after {attempts} attempt(s): {message}")]
    Transport {
        message: String,
        timeout: bool,
        attempts: u32,
    },
    #[error("Anthropic sent a response the connector cannot read: {message}{}", rid(.request_id))]
    Decode {
        message: String,
        request_id: Option<String>,
    },
    #[error("the Anthropic client is misconfigured: {0}")]
    Config(String),
}

/// `error.details` of a failure answer (the Plugins API's error codes).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorDetails {
    /// e.g. `registration_pending`, `plugin_name_taken`.
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub plugin_id: Option<String>,
}

fn code(d: &Option<Box<ErrorDetails>>) -> String {
    d.as_ref()
        .and_then(|d| d.error_code.as_deref())
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn final_note(status: u16, deterministic: bool) -> String {
    match (status, deterministic) {
        (429, true) => " — a spend cap (no retry-after): raise the organization's limit in Anthropic's console; retrying will not help".into(),
        (_, true) => " — Anthropic says retrying will not help".into(),
        _ => String::new(),
    }
}

fn rid(r: &Option<String>) -> String {
    r.as_deref()
        .map(|r| format!(" (request id {r})"))
        .unwrap_or_default()
}

/// The contract's error classes, by status code (an unknown `error.type` is classified by its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Billing,
    Permission,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Server,
    Overloaded,
    OtherClient,
    Transport,
    Decode,
    Config,
}

impl AnthropicError {
    pub(crate) fn api(
        status: u16,
        error_type: String,
        message: String,
        request_id: Option<String>,
    ) -> Self {
        AnthropicError::Api {
            status,
            error_type,
            message: redact_keys(&message),
            request_id,
            attempts: 1,
            details: None,
            deterministic: false,
        }
    }

    /// `error.details.error_code`, where the answer names one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            AnthropicError::Api {
                details: Some(d), ..
            } => d.error_code.as_deref(),
            _ => None,
        }
    }

    /// `error.details.plugin_id`, where the answer names one.
    pub fn plugin_id(&self) -> Option<&str> {
        match self {
            AnthropicError::Api {
                details: Some(d), ..
            } => d.plugin_id.as_deref(),
            _ => None,
        }
    }

    /// Marks a failure status the retry rules stopped on (see `deterministic`).
    pub(crate) fn stopped(mut self) -> Self {
        if let AnthropicError::Api {
            status,
            deterministic,
            ..
        } = &mut self
        {
            *deterministic = *status == 429 || *status >= 500;
        }
        self
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            AnthropicError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            AnthropicError::Api { status, .. } => match status {
                400 => ErrorKind::InvalidRequest,
                401 => ErrorKind::Authentication,
                402 => ErrorKind::Billing,
                403 => ErrorKind::Permission,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                413 => ErrorKind::TooLarge,
                429 => ErrorKind::RateLimited,
                529 => ErrorKind::Overloaded,
                s if *s >= 500 => ErrorKind::Server,
                _ => ErrorKind::OtherClient,
            },
            AnthropicError::Transport { .. } => ErrorKind::Transport,
            AnthropicError::Decode { .. } => ErrorKind::Decode,
            AnthropicError::Config(_) => ErrorKind::Config,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            AnthropicError::Api { request_id, .. } | AnthropicError::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// The deadline (or the attempt timeout) ran out before an answer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, AnthropicError::Transport { timeout: true, .. })
    }

    /// A failure status the retry rules said not to repeat (`x-should-retry: false` on a 5xx, a 429
    /// without `retry-after`): the same request will get the same answer.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            AnthropicError::Api {
                deterministic: true,
                ..
            }
        )
    }

    /// Anthropic (or the way to it) is failing rather than refusing us: 429, 5xx, 529, timeouts and
    /// dropped connections once the retries are spent.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::RateLimited
                | ErrorKind::Server
                | ErrorKind::Overloaded
                | ErrorKind::Transport
        )
    }

    /// The upstream message (for 4xx answers whose wording the user must see).
    pub fn upstream_message(&self) -> Option<&str> {
        match self {
            AnthropicError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    pub fn attempts(&self) -> u32 {
        match self {
            AnthropicError::Api { attempts, .. } | AnthropicError::Transport { attempts, .. } => {
                *attempts
            }
            _ => 1,
        }
    }

    pub(crate) fn with_attempts(mut self, n: u32) -> Self {
        match &mut self {
            AnthropicError::Api { attempts, .. } | AnthropicError::Transport { attempts, .. } => {
                *attempts = n
            }
            _ => {}
        }
        self
    }

    /// A short description for user-facing messages: "HTTP 529 overloaded_error after 4 attempts".
    pub fn summary(&self) -> String {
        match self {
            AnthropicError::Api {
                status,
                error_type,
                attempts,
                ..
            } => format!(
                "HTTP {status} {error_type} after {attempts} attempt{}",
                if *attempts == 1 { "" } else { "s" }
            ),
            AnthropicError::Transport {
                timeout, attempts, ..
            } => format!(
                "{} after {attempts} attempt{}",
                if *timeout {
                    "timed out"
                } else {
                    "connection failed"
                },
                if *attempts == 1 { "" } else { "s" }
            ),
            other => other.to_string(),
        }
    }
}
