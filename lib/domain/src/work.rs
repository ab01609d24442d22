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
        /// The scheduled time (Unix seconds) of the schedule delivery that enqueued it.
        scheduled_at: i64,
    },
    /// Finish the Hub's pending publish, for one time slice.
    Sweep { hub: TenantSlug, scheduled_at: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkItemError {
    #[error("the message body is not a work item ({0}); expected {{\"kind\":\"poll\",\"tenant\":…,\"scheduled_at\":…}} or {{\"kind\":\"sweep\",\"hub\":…,\"scheduled_at\":…}}")]
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

    pub fn scheduled_at(&self) -> i64 {
        match self {
            WorkItem::Poll { scheduled_at, .. } | WorkItem::Sweep { scheduled_at, .. } => {
                *scheduled_at
            }
        }
    }

    /// The queue's message group: one per tenant, so one tenant's items never run side by side and never
    /// wait behind another tenant's.
    pub fn group_id(&self) -> String {
        self.tenant().to_string()
    }

    /// The queue's deduplication id: the same for a duplicated delivery of the same scheduled tick, so the
    /// queue drops the copy (at most 59 characters: a kind, a 32-character slug, a time).
    pub fn dedup_id(&self) -> String {
        let kind = match self {
            WorkItem::Poll { .. } => "poll",
            WorkItem::Sweep { .. } => "sweep",
        };
        format!("{kind}-{}-{}", self.tenant(), self.scheduled_at())
    }
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

/// What the dispatcher enqueues on a tick: every connected tenant, the longest-waiting first (so when
/// workers fall behind, the tenants without a success for longest are the next to run), and the oldest
/// age for the alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPlan {
    pub items: Vec<WorkItem>,
    pub oldest_success_age_seconds: i64,
}

/// `scheduled_at` is the schedule delivery's scheduled time: two deliveries of one tick carry the same.
pub fn plan_polls(mut candidates: Vec<PollCandidate>, now: i64, scheduled_at: i64) -> PollPlan {
    candidates.sort_by(|a, b| {
        b.seconds_since_success(now)
            .cmp(&a.seconds_since_success(now))
            .then_with(|| a.tenant.cmp(&b.tenant))
    });
    PollPlan {
        oldest_success_age_seconds: candidates
            .first()
            .map_or(0, |c| c.seconds_since_success(now)),
        items: candidates
            .into_iter()
            .map(|c| WorkItem::Poll {
                tenant: c.tenant,
                scheduled_at,
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
                scheduled_at: 1_800_000_060,
            },
            WorkItem::Sweep {
                hub: slug("acme-eu"),
                scheduled_at: 60,
            },
        ] {
            assert_eq!(WorkItem::parse(&item.body()).unwrap(), item);
        }
        assert_eq!(
            WorkItem::Poll {
                tenant: slug("acme"),
                scheduled_at: 120
            }
            .body(),
            r#"{"kind":"poll","tenant":"acme","scheduled_at":120}"#
        );
    }

    #[test]
    fn a_malformed_body_is_named_not_guessed() {
        for body in [
            "",
            "null",
            "{}",
            r#"{"kind":"poll"}"#,
            r#"{"kind":"poll","tenant":"Not A Slug","scheduled_at":0}"#,
            r#"{"kind":"reboot","tenant":"acme","scheduled_at":0}"#,
            r#"{"kind":"poll","tenant":"acme","scheduled_at":0,"extra":1}"#,
            r#"{"kind":"sweep","tenant":"acme","scheduled_at":0}"#,
        ] {
            let e = WorkItem::parse(body).unwrap_err();
            assert!(e.to_string().contains("not a work item"), "{body}: {e}");
        }
    }

    #[test]
    fn the_same_tick_dedups_and_kinds_or_tenants_never_collide() {
        let poll = |t: &str, at| WorkItem::Poll {
            tenant: slug(t),
            scheduled_at: at,
        };
        assert_eq!(poll("acme", 60).dedup_id(), poll("acme", 60).dedup_id());
        assert_ne!(poll("acme", 60).dedup_id(), poll("acme", 120).dedup_id());
        assert_ne!(poll("acme", 60).dedup_id(), poll("acme-eu", 60).dedup_id());
        let sweep = WorkItem::Sweep {
            hub: slug("acme"),
            scheduled_at: 60,
        };
        assert_ne!(sweep.dedup_id(), poll("acme", 60).dedup_id());
        assert_eq!(sweep.group_id(), "acme");
        let longest = poll(&"a".repeat(32), i64::MAX).dedup_id();
        assert!(longest.len() <= 128, "SQS's limit: {}", longest.len());
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
            9_960,
        );
        let order: Vec<&str> = plan.items.iter().map(|i| i.tenant().as_str()).collect();
        assert_eq!(order, ["never", "stale", "also-fresh", "fresh"]);
        assert_eq!(plan.oldest_success_age_seconds, 1_000);
        assert!(plan.items.iter().all(|i| i.scheduled_at() == 9_960));
        assert_eq!(plan_polls(vec![], now, now).oldest_success_age_seconds, 0);
        // A clock behind a stored success never yields a negative age.
        assert_eq!(cand("x", 0, Some(20_000)).seconds_since_success(now), 0);
    }
}
