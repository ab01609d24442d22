//! The enterprise surface's feed: the Compliance Activity Feed (`claude-enterprise-api.md`), newest first.
//! The documented catch-up reads `before_id` = the cursor, page by page toward the newest, and the cursor
//! is the first (newest) id of the last stored page. A first read starts at the newest activity. Items
//! indexed late sort behind the cursor, so a read that caught up re-reads the last five minutes. Also the
//! surface's usage report (the Analytics API).

use std::collections::BTreeSet;

use async_trait::async_trait;
use claresia_anthropic::{AnthropicError, ErrorKind, TokenPage};
use claresia_domain::enterprise_feed::{connector_keys, normalize_activity, Activity};
use claresia_domain::AdminKey;
use serde_json::Value;
use time::OffsetDateTime;

use super::enterprise::{EnterpriseSurface, USAGE_NAMES_PER_REQUEST};
use super::{short_hash, Feed, FeedAt, FeedItem, FeedPage, FeedSource, UsageReport};

/// Activities per feed page (the documented maximum).
const FEED_PAGE: u32 = 5000;
/// The trailing window re-read for activities indexed late (the spec's advice: overlap, dedupe by id).
const OVERLAP: time::Duration = time::Duration::minutes(5);

pub(super) struct ComplianceFeed<'a> {
    surface: &'a EnterpriseSurface,
    source: FeedSource,
    /// The connector's own key ids: recorded ones and those the pages show.
    own: BTreeSet<String>,
}

impl EnterpriseSurface {
    pub(super) fn compliance_feed(&self, source: FeedSource) -> ComplianceFeed<'_> {
        ComplianceFeed {
            surface: self,
            own: source.connector_keys.clone(),
            source,
        }
    }
}

#[async_trait]
impl Feed for ComplianceFeed<'_> {
    async fn page(&mut self, key: &AdminKey, at: FeedAt<'_>) -> Result<FeedPage, AnthropicError> {
        let page = self
            .surface
            .activities(key, at, FEED_PAGE, self.source.deadline)
            .await?;
        self.own
            .extend(connector_keys(&page.data, &self.source.routing));
        let now = OffsetDateTime::now_utc();
        let items = page
            .data
            .iter()
            .map(|raw| {
                let id = raw["id"].as_str().map(str::to_owned);
                (id, self.normalized(raw, now))
            })
            .collect();
        let (next, more) = match at {
            // A window goes on, older, past its last id.
            FeedAt::Window { .. } => (page.last_id, page.has_more),
            // The newest page is where a first read ends: what came before is not ours.
            FeedAt::Start => (page.first_id, false),
            FeedAt::After(_) => (page.first_id, page.has_more),
        };
        Ok(FeedPage { items, next, more })
    }

    fn refuses_cursor(&self, e: &AnthropicError) -> bool {
        e.kind() == ErrorKind::InvalidRequest
    }

    fn position_field(&self) -> &'static str {
        "first_id"
    }

    fn restart_gap(&self, cursor: &str, e: &AnthropicError) -> String {
        // Say, a cursor left by a preview connection.
        format!(
            "the feed refused cursor {cursor} ({}); polling restarted from the newest activity",
            e.summary()
        )
    }

    fn late_window(&self) -> Option<time::Duration> {
        Some(OVERLAP)
    }

    fn connector_keys(&self) -> Option<Vec<String>> {
        Some(self.own.iter().cloned().collect())
    }

    fn usage(&self) -> Option<&dyn UsageReport> {
        Some(self)
    }
}

impl ComplianceFeed<'_> {
    fn normalized(&self, raw: &Value, now: OffsetDateTime) -> FeedItem {
        match normalize_activity(raw, &self.source.routing, &self.own, now) {
            Activity::Ours { event, drift } => FeedItem::Event { event, drift },
            Activity::NotOurs => FeedItem::Skipped,
            Activity::Quarantined(reason) => {
                let raw_text = raw.to_string();
                FeedItem::Quarantined {
                    key: short_hash(&raw_text),
                    raw: raw_text,
                    reason,
                }
            }
        }
    }
}

#[async_trait]
impl UsageReport for ComplianceFeed<'_> {
    fn names_per_request(&self) -> usize {
        USAGE_NAMES_PER_REQUEST
    }

    async fn page(
        &self,
        key: &AdminKey,
        day: &str,
        names: &[&str],
        page: Option<&str>,
    ) -> Result<TokenPage<Value>, AnthropicError> {
        self.surface
            .skill_usage_page(key, day, names, page, self.source.deadline)
            .await
    }
}
