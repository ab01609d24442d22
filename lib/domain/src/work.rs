//! Scheduled work as it travels on a queue: poll one tenant, or sweep one Hub's pending publish. The
//! dispatcher decides what is due and in which order ([`plan_polls`]); a worker takes one item at a time.
//! Pure: no clocks, no I/O.

use serde::{Deserialize, Serialize};

use crate::TenantSlug;

/// One unit of work, one tenant (or Hub) each, serialized as the queue message's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkItem {
    /// Pull the tenant's audit log or Compliance feed (and usage) into telemetry.
    Poll {
        tenant: TenantSlug,
        /// The scheduled minute that enqueued it (Unix seconds, a multiple of 60).
        minute: i64,
    },
    /// Finish the Hub's pending publish, for one time slice.
    Sweep { hub: TenantSlug, minute: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkItemError {
    #[error("the message body is not a work item ({0}); expected {{\"kind\":\"poll\",\"tenant\":…,\"minute\":…}} or {{\"kind\":\"sweep\",\"hub\":…,\"minute\":…}}")]
    Malformed(String),
}

impl WorkItem {
    pub fn parse(body: &str) -> Result<WorkItem, WorkItemError> {
        serde_json::from_str(body).map_err(|e| WorkItemError::Malformed(e.to_string()))
    }

    pub fn body(&self) -> String {
        // A derive of two plain enums of strings and integers cannot fail to serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The tenant whose work this is (the Hub, for a sweep).
    pub fn tenant(&self) -> &TenantSlug {
        match self {
            WorkItem::Poll { tenant, .. } => tenant,
            WorkItem::Sweep { hub, .. } => hub,
        }
    }

    pub fn minute(&self) -> i64 {
        match self {
            WorkItem::Poll { minute, .. } | WorkItem::Sweep { minute, .. } => *minute,
        }
    }

    /// The queue's message group: one per tenant, so one tenant's items never run side by side and never
    /// wait behind another tenant's.
    pub fn group_id(&self) -> String {
        self.tenant().to_string()
    }

    /// The queue's deduplication id: the same for a duplicated schedule delivery of the same minute, so
    /// the queue drops the copy (at most 45 characters: a 32-character slug, a kind, a minute).
    pub fn dedup_id(&self) -> String {
        let kind = match self {
            WorkItem::Poll { .. } => "poll",
            WorkItem::Sweep { .. } => "sweep",
        };
        format!("{kind}-{}-{}", self.tenant(), self.minute())
    }
}

/// The scheduled minute a schedule delivery stands for: its `time`, floored to the minute. Two deliveries
/// of one scheduled tick carry the same time, hence the same minute.
pub fn minute_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(60) * 60
}

/// A connected tenant as the dispatcher sees it (times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollCandidate {
    pub tenant: TenantSlug,
    pub connected_at: i64,
    pub last_success_at: Option<i64>,
}

impl PollCandidate {
    /// Seconds since the last successful poll, else since connecting: what the stale-tenant alarm sees.
    pub fn seconds_since_success(&self, now: i64) -> i64 {
        (now - self.last_success_at.unwrap_or(self.connected_at)).max(0)
    }
}

/// What the dispatcher enqueues this minute: every connected tenant, the longest-waiting first (so when
/// workers fall behind, the tenants without a success for longest are the next to run), and the oldest
/// age for the alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPlan {
    pub items: Vec<WorkItem>,
    pub oldest_success_age_seconds: i64,
}

pub fn plan_polls(mut candidates: Vec<PollCandidate>, now: i64) -> PollPlan {
    candidates.sort_by(|a, b| {
        b.seconds_since_success(now)
            .cmp(&a.seconds_since_success(now))
            .then_with(|| a.tenant.cmp(&b.tenant))
    });
    let minute = minute_of(now);
    PollPlan {
        oldest_success_age_seconds: candidates
            .first()
            .map_or(0, |c| c.seconds_since_success(now)),
        items: candidates
            .into_iter()
            .map(|c| WorkItem::Poll {
                tenant: c.tenant,
                minute,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slug(s: &str) -> TenantSlug {
        TenantSlug::parse(s).unwrap()
    }

    fn cand(t: &str, connected_at: i64, last: Option<i64>) -> PollCandidate {
        PollCandidate {
            tenant: slug(t),
            connected_at,
            last_success_at: last,
        }
    }

    #[test]
    fn an_item_round_trips_through_its_body() {
        for item in [
            WorkItem::Poll {
                tenant: slug("acme"),
                minute: 1_800_000_060,
            },
            WorkItem::Sweep {
                hub: slug("acme-eu"),
                minute: 60,
            },
        ] {
            assert_eq!(WorkItem::parse(&item.body()).unwrap(), item);
        }
        assert_eq!(
            WorkItem::Poll {
                tenant: slug("acme"),
                minute: 120
            }
            .body(),
            r#"{"kind":"poll","tenant":"acme","minute":120}"#
        );
    }

    #[test]
    fn a_malformed_body_is_named_not_guessed() {
        for body in [
            "",
            "null",
            "{}",
            r#"{"kind":"poll"}"#,
            r#"{"kind":"poll","tenant":"Not A Slug","minute":0}"#,
            r#"{"kind":"reboot","tenant":"acme","minute":0}"#,
            r#"{"kind":"poll","tenant":"acme","minute":0,"extra":1}"#,
            r#"{"kind":"sweep","tenant":"acme","minute":0}"#,
        ] {
            let e = WorkItem::parse(body).unwrap_err();
            assert!(e.to_string().contains("not a work item"), "{body}: {e}");
        }
    }

    #[test]
    fn the_same_minute_dedups_and_kinds_or_tenants_never_collide() {
        let poll = |t: &str, m| WorkItem::Poll {
            tenant: slug(t),
            minute: m,
        };
        assert_eq!(poll("acme", 60).dedup_id(), poll("acme", 60).dedup_id());
        assert_ne!(poll("acme", 60).dedup_id(), poll("acme", 120).dedup_id());
        assert_ne!(poll("acme", 60).dedup_id(), poll("acme-eu", 60).dedup_id());
        let sweep = WorkItem::Sweep {
            hub: slug("acme"),
            minute: 60,
        };
        assert_ne!(sweep.dedup_id(), poll("acme", 60).dedup_id());
        assert_eq!(sweep.group_id(), "acme");
        let longest = poll(&"a".repeat(32), i64::MAX).dedup_id();
        assert!(longest.len() <= 128, "SQS's limit: {}", longest.len());
    }

    #[test]
    fn a_minute_is_the_floor_of_the_delivery_time() {
        assert_eq!(minute_of(119), 60);
        assert_eq!(minute_of(120), 120);
        assert_eq!(minute_of(-1), -60);
    }

    #[test]
    fn the_longest_waiting_tenant_goes_first_and_sets_the_alarms_age() {
        let now = 10_000;
        let plan = plan_polls(
            vec![
                cand("fresh", 0, Some(9_990)),
                cand("never", 9_000, None),
                cand("stale", 0, Some(9_400)),
                cand("also-fresh", 0, Some(9_990)),
            ],
            now,
        );
        let order: Vec<&str> = plan.items.iter().map(|i| i.tenant().as_str()).collect();
        assert_eq!(order, ["never", "stale", "also-fresh", "fresh"]);
        assert_eq!(plan.oldest_success_age_seconds, 1_000);
        assert!(plan.items.iter().all(|i| i.minute() == 9_960));
        assert_eq!(plan_polls(vec![], now).oldest_success_age_seconds, 0);
        // A clock behind a stored success never yields a negative age.
        assert_eq!(cand("x", 0, Some(20_000)).seconds_since_success(now), 0);
    }
}
