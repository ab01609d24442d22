//! The preview surface's feed: the organization audit log (`anthropic-api.md`), oldest first, paged with
//! `after_id`. The cursor is the last event id of the last stored page.

use async_trait::async_trait;
use claresia_anthropic::{AnthropicError, ErrorKind, Page};
use claresia_domain::telemetry::{normalize, Normalized, MAX_ID_BYTES};
use claresia_domain::AdminKey;
use serde_json::Value;
use time::OffsetDateTime;

use super::preview::PreviewSurface;
use super::{short_hash, Feed, FeedAt, FeedItem, FeedPage, FeedSource};

/// The audit event types the poller reads.
const EVENT_TYPES: &str = "skill.invoked,skill.failed";

pub(super) struct AuditLog<'a> {
    surface: &'a PreviewSurface,
    path: String,
    source: FeedSource,
}

impl PreviewSurface {
    pub(super) fn audit_log(&self, source: FeedSource) -> AuditLog<'_> {
        AuditLog {
            surface: self,
            path: format!("/v1/organizations/{}/audit_logs", source.org_id),
            source,
        }
    }
}

#[async_trait]
impl Feed for AuditLog<'_> {
    async fn page(&mut self, key: &AdminKey, at: FeedAt<'_>) -> Result<FeedPage, AnthropicError> {
        let after = match at {
            FeedAt::Start => None,
            FeedAt::After(cursor) => Some(cursor),
            // `late_window` is `None`: the ingest loop never asks.
            FeedAt::Window { .. } => {
                return Err(AnthropicError::Config(
                    "the audit log has no late window to re-read".into(),
                ))
            }
        };
        let query = [("event_types", EVENT_TYPES.to_owned())];
        let page: Page<Value> = self
            .surface
            .client
            .list_page(
                key,
                &self.path,
                &query,
                after,
                self.source.page_limit,
                self.source.deadline,
            )
            .await?;
        let now = OffsetDateTime::now_utc();
        let items = page
            .data
            .iter()
            .map(|raw| (item_id(raw), self.normalized(raw, now)))
            .collect();
        // `has_more` is the contract's word on whether more follow (a page may be short and not the last).
        Ok(FeedPage {
            items,
            next: page.last_id.filter(|_| !page.data.is_empty()),
            more: page.has_more,
        })
    }

    fn refuses_cursor(&self, e: &AnthropicError) -> bool {
        e.kind() == ErrorKind::InvalidRequest
            && e.upstream_message().is_some_and(|m| m.contains("after_id"))
    }

    fn position_field(&self) -> &'static str {
        "last_id"
    }

    fn restart_gap(&self, cursor: &str, _e: &AnthropicError) -> String {
        format!(
            "cursor {cursor} had expired at {}; polling restarted from the oldest available event",
            claresia_domain::telemetry::utc_millis(OffsetDateTime::now_utc())
        )
    }
}

impl AuditLog<'_> {
    fn normalized(&self, raw: &Value, now: OffsetDateTime) -> FeedItem {
        match normalize(raw, &self.source.routing, now) {
            Normalized::Event(event) => FeedItem::Event { event, drift: None },
            Normalized::Skipped(_) => FeedItem::Skipped,
            Normalized::Quarantined(reason) => {
                let raw_text = raw.to_string();
                FeedItem::Quarantined {
                    // Its own id when it has a storable one, so a re-read quarantines it once.
                    key: item_id(raw)
                        .filter(|id| id.len() <= MAX_ID_BYTES)
                        .unwrap_or_else(|| short_hash(&raw_text)),
                    raw: raw_text,
                    reason,
                }
            }
        }
    }
}

fn item_id(raw: &Value) -> Option<String> {
    raw.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}
