//! A work queue (SQS FIFO) from the dispatcher's side: items go out 10 per `SendMessageBatch` (SQS's
//! limit), grouped by tenant (`MessageGroupId`) and deduplicated per scheduled minute
//! (`MessageDeduplicationId`), so a duplicated schedule delivery enqueues nothing twice. Entries the queue
//! throttled are sent again after a back-off; the call fails only once the attempts are spent.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use claresia_domain::work::WorkItem;
use futures::stream::{self, StreamExt};

use crate::batch::back_off;
use crate::StoreError;

/// SQS's limit of entries per `SendMessageBatch`.
pub const SEND_BATCH_MAX: usize = 10;
/// Batches sent at once: a dispatcher's 10,000 items are 1,000 calls, 16 in flight.
const BATCHES_IN_FLIGHT: usize = 16;

#[derive(Clone, Debug)]
pub struct WorkQueue {
    client: crate::Lazy<aws_sdk_sqs::Client>,
    url: String,
}

impl WorkQueue {
    pub fn new(
        client: impl Into<crate::Lazy<aws_sdk_sqs::Client>>,
        url: impl Into<String>,
    ) -> Self {
        WorkQueue {
            client: client.into(),
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// Sends every item (several batches in flight); answers how many the queue accepted.
    pub async fn enqueue(&self, items: &[WorkItem]) -> Result<usize, StoreError> {
        let sent: Vec<Result<usize, StoreError>> =
            stream::iter(items.chunks(SEND_BATCH_MAX).map(|c| self.send_batch(c)))
                .buffer_unordered(BATCHES_IN_FLIGHT)
                .collect()
                .await;
        sent.into_iter().sum()
    }

    async fn send_batch(&self, items: &[WorkItem]) -> Result<usize, StoreError> {
        let mut left: Vec<(usize, &WorkItem)> = items.iter().enumerate().collect();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let entries = left
                .iter()
                .map(|(i, item)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(item.body())
                        .message_group_id(item.group_id())
                        .message_deduplication_id(item.dedup_id())
                        .build()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let res = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| StoreError::queue("SendMessageBatch", e))?;
            let failed = res.failed;
            if let Some(bad) = failed.iter().find(|f| f.sender_fault) {
                // Our request was wrong: sending it again changes nothing.
                return Err(StoreError::Queue {
                    operation: "SendMessageBatch",
                    message: format!("{}: {}", bad.code, bad.message.clone().unwrap_or_default()),
                });
            }
            let retry: Vec<String> = failed.into_iter().map(|f| f.id).collect();
            left.retain(|(i, _)| retry.contains(&i.to_string()));
            if left.is_empty() {
                return Ok(items.len());
            }
            back_off("SendMessageBatch", attempt, left.len(), "messages").await?;
        }
    }
}
