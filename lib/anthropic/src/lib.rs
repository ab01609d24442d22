//! The connector's Anthropic client.
//!
//! One generic request path (headers, error envelope, retries, deadline) serves every endpoint, so an
//! adapter for another Anthropic surface (the public `/v1/skills`, the compliance feed) is a new module of
//! typed calls on top of [`AnthropicClient::send`], not a rewrite.

mod client;
mod error;
mod retry;
pub mod types;

pub use client::{AnthropicClient, Body, Call, ClientConfig, Deadline, Pacer, Page, TokenPage};
pub use error::{AnthropicError, ErrorDetails, ErrorKind};
pub use retry::RetryPolicy;
pub use types::{Organization, Workspace};
