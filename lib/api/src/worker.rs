//! The queue workers: `audit-poller` takes poll items, `publish-sweeper` sweep items, up to 10 a batch from
//! the event source mapping. Each item is one tenant's work and runs beside the others with its own
//! deadline, so a slow org holds one item's slot, never the batch's. The answer names the items SQS must
//! deliver again (`ReportBatchItemFailures`): only those that could not run at all (an unreadable body,
//! the store failing); a poll that Anthropic failed is recorded on the tenant's status, and the next
//! tick's item polls again.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use claresia_anthropic::Deadline;
use claresia_domain::work::WorkItem;
use claresia_domain::{LiveConnection, TenantSlug};
use serde::Serialize;

use crate::poller::{PollOutcome, TenantPoll};
use crate::publish::{Sweep, SweepOutcome};
use crate::App;

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ItemOutcome {
    Poll(PollOutcome),
    Sweep(SweepOutcome),
    /// The body is not a work item.
    Unreadable(Unreadable),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreadable {
    Malformed,
}

impl ItemOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            ItemOutcome::Poll(p) => p.as_str(),
            ItemOutcome::Sweep(s) => s.as_str(),
            ItemOutcome::Unreadable(Unreadable::Malformed) => "malformed",
        }
    }
}

impl PartialEq<&str> for ItemOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What became of one message.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    pub message_id: String,
    /// The tenant (or Hub) the item names; none when the body was unreadable.
    pub tenant: Option<String>,
    pub outcome: ItemOutcome,
    pub error: Option<String>,
    /// Left for SQS to deliver again (after its visibility timeout; the dead-letter queue after 5).
    pub retry: bool,
    /// How long the item took.
    pub seconds: f64,
}

/// A batch's answer for Lambda and, for the local run and the tests, what each item did.
#[derive(Debug, Clone, Default)]
pub struct WorkBatch {
    pub response: SqsBatchResponse,
    pub items: Vec<ItemReport>,
    pub polls: Vec<TenantPoll>,
}

impl App {
    /// One batch from the event source mapping; `deadline_ms` is the invocation's deadline.
    pub async fn handle_work(&self, event: SqsEvent, deadline_ms: u64) -> WorkBatch {
        let budget = crate::tick_budget(deadline_ms);
        let done = futures::future::join_all(
            event
                .records
                .into_iter()
                .map(|m| self.work_message(m, Deadline::after(budget))),
        )
        .await;
        let (items, polls): (Vec<ItemReport>, Vec<Option<TenantPoll>>) = done.into_iter().unzip();
        let polls: Vec<TenantPoll> = polls.into_iter().flatten().collect();
        if !polls.is_empty() {
            self.emit_poll_metrics(&polls);
        }
        let retried = items.iter().filter(|i| i.retry).count();
        self.metrics.emit(&[
            ("WorkItemsDone", (items.len() - retried) as f64, "Count"),
            ("WorkItemsRetried", retried as f64, "Count"),
        ]);
        tracing::info!(items = items.len(), retried, "work batch finished");
        WorkBatch {
            response: fifo_failures(&items),
            items,
            polls,
        }
    }

    async fn work_message(
        &self,
        message: SqsMessage,
        deadline: Deadline,
    ) -> (ItemReport, Option<TenantPoll>) {
        let started = std::time::Instant::now();
        let (mut report, poll) = self.work_item(message, deadline).await;
        report.seconds = started.elapsed().as_secs_f64();
        (report, poll)
    }

    async fn work_item(
        &self,
        message: SqsMessage,
        deadline: Deadline,
    ) -> (ItemReport, Option<TenantPoll>) {
        let message_id = message.message_id.unwrap_or_default();
        let report = |tenant: Option<String>, ran: Ran| ItemReport {
            message_id: message_id.clone(),
            tenant,
            outcome: ran.outcome,
            error: ran.error,
            retry: ran.retry,
            seconds: 0.0,
        };
        let item = match WorkItem::parse(message.body.as_deref().unwrap_or_default()) {
            Ok(item) => item,
            Err(e) => {
                // Delivered again until SQS moves it to the dead-letter queue, for an operator to read.
                tracing::error!(message_id = %message_id, error = %e, "unreadable work item");
                let unreadable = ItemOutcome::Unreadable(Unreadable::Malformed);
                return (report(None, Ran::again(unreadable, e)), None);
            }
        };
        let tenant = Some(item.tenant().to_string());
        let (ran, poll) = match item {
            WorkItem::Poll {
                tenant,
                scheduled_at,
            } => self.poll_item(&tenant, scheduled_at, deadline).await,
            WorkItem::Sweep { hub, .. } => (self.sweep_item(&hub, deadline).await, None),
        };
        (report(tenant, ran), poll)
    }

    /// A poll item: the tenant's poll, if it is still connected.
    async fn poll_item(
        &self,
        tenant: &TenantSlug,
        scheduled_at: i64,
        deadline: Deadline,
    ) -> (Ran, Option<TenantPoll>) {
        match self.hub.connection(tenant).await {
            Ok(Some(record)) => {
                let poll = self
                    .poll_one(LiveConnection::from(&record), Some(scheduled_at), deadline)
                    .await;
                let ran = Ran {
                    outcome: ItemOutcome::Poll(poll.outcome),
                    error: poll.error.clone(),
                    retry: poll.retry,
                };
                (ran, Some(poll))
            }
            // Disconnected since it was enqueued: nothing to poll.
            Ok(None) => (
                Ran::done(ItemOutcome::Poll(PollOutcome::Skipped), None),
                None,
            ),
            Err(e) => (Ran::again(ItemOutcome::Poll(PollOutcome::Error), e), None),
        }
    }

    /// A sweep item: the Hub's next slice of its pending publish.
    async fn sweep_item(&self, hub: &TenantSlug, deadline: Deadline) -> Ran {
        match self.sweep_hub(hub, self.sweep_slice(deadline)).await {
            Ok(sweep) => {
                let error = match &sweep {
                    Sweep::Refused(why) | Sweep::Failed(why) => Some(why.clone()),
                    _ => None,
                };
                Ran::done(ItemOutcome::Sweep(sweep.outcome()), error)
            }
            Err(e) => Ran::again(ItemOutcome::Sweep(SweepOutcome::Failed), e),
        }
    }
}

/// What one item's run came to, and whether it is delivered again.
struct Ran {
    outcome: ItemOutcome,
    error: Option<String>,
    retry: bool,
}

impl Ran {
    fn done(outcome: ItemOutcome, error: Option<String>) -> Ran {
        Ran {
            outcome,
            error,
            retry: false,
        }
    }

    fn again(outcome: ItemOutcome, error: impl std::fmt::Display) -> Ran {
        Ran {
            outcome,
            error: Some(error.to_string()),
            retry: true,
        }
    }
}

/// The batch's failures as a FIFO queue needs them: from the first item to deliver again, every item after
/// it too, so no message group's order is broken (an item after it that did run is then a no-op when it
/// comes back: its tenant's poll is `superseded`, its Hub has nothing pending or takes the next slice).
fn fifo_failures(items: &[ItemReport]) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    if let Some(first) = items.iter().position(|i| i.retry) {
        for item in &items[first..] {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = item.message_id.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, retry: bool) -> ItemReport {
        ItemReport {
            message_id: id.into(),
            tenant: None,
            outcome: ItemOutcome::Poll(PollOutcome::Ok),
            error: None,
            retry,
            seconds: 0.0,
        }
    }

    fn ids(r: &SqsBatchResponse) -> Vec<&str> {
        r.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    #[test]
    fn from_the_first_retried_item_on_everything_is_delivered_again() {
        assert!(ids(&fifo_failures(&[item("a", false), item("b", false)])).is_empty());
        assert_eq!(
            ids(&fifo_failures(&[
                item("a", false),
                item("b", true),
                item("c", false),
                item("d", true)
            ])),
            ["b", "c", "d"]
        );
        assert_eq!(ids(&fifo_failures(&[item("a", true)])), ["a"]);
        assert!(ids(&fifo_failures(&[])).is_empty());
    }
}
