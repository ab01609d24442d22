//! The work queues on moto's SQS, created as `template.yaml` declares them (FIFO, visibility timeout,
//! dead-letter redrive), and a local event source mapping: what Lambda's SQS poller does for a worker —
//! receive up to 10 messages, hand them to the handler as a real `SqsEvent`, delete what it did not name
//! in `batchItemFailures`, leave those for the visibility timeout. Several mappings' "invocations" run at
//! once, up to the configured concurrency.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use claresia_api::worker::WorkBatch;
use claresia_aws::WorkQueue;
use serde_json::{json, Value};
use serde_norway::Value as Yaml;

use crate::tables::TEMPLATE;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("template.yaml: {0}")]
    Template(String),
    #[error("SQS {operation}: {message}")]
    Sqs {
        operation: &'static str,
        message: String,
    },
}

fn sqs_err<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
) -> impl Fn(E) -> QueueError {
    move |e| QueueError::Sqs {
        operation,
        message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
    }
}

/// A queue as the template declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    pub logical_id: String,
    pub name_pattern: String,
    pub fifo: bool,
    pub visibility_timeout: Option<u64>,
    /// (dead-letter queue's logical id, maxReceiveCount)
    pub redrive: Option<(String, u64)>,
}

fn untag(v: &Yaml) -> &Yaml {
    match v {
        Yaml::Tagged(t) => &t.value,
        other => other,
    }
}

/// Every `AWS::SQS::Queue` in the template that declares a `QueueName`.
pub fn queue_defs() -> Result<Vec<QueueDef>, QueueError> {
    let doc: Yaml =
        serde_norway::from_str(TEMPLATE).map_err(|e| QueueError::Template(e.to_string()))?;
    let resources = doc
        .get("Resources")
        .and_then(Yaml::as_mapping)
        .ok_or_else(|| QueueError::Template("no Resources".into()))?;
    let mut out = Vec::new();
    for (id, res) in resources {
        if res.get("Type").and_then(Yaml::as_str) != Some("AWS::SQS::Queue") {
            continue;
        }
        let Some(props) = res.get("Properties") else {
            continue;
        };
        let Some(name) = props.get("QueueName").map(untag).and_then(Yaml::as_str) else {
            continue;
        };
        let number = |v: &Yaml| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        let redrive = props.get("RedrivePolicy").map(untag).and_then(|r| {
            let target = untag(r.get("deadLetterTargetArn")?);
            // `!GetAtt PollDeadLetterQueue.Arn`
            let dlq = target.as_str()?.split('.').next()?.to_owned();
            Some((dlq, number(r.get("maxReceiveCount")?)?))
        });
        out.push(QueueDef {
            logical_id: id.as_str().unwrap_or_default().to_owned(),
            name_pattern: name.to_owned(),
            fifo: props.get("FifoQueue").and_then(Yaml::as_bool) == Some(true),
            visibility_timeout: props.get("VisibilityTimeout").and_then(number),
            redrive,
        });
    }
    Ok(out)
}

/// Creates every template queue for `stage` (dead-letter queues first); answers logical id → URL.
pub async fn create_all(
    client: &aws_sdk_sqs::Client,
    stage: &str,
) -> Result<BTreeMap<String, String>, QueueError> {
    let mut defs = queue_defs()?;
    defs.sort_by_key(|d| d.redrive.is_some());
    let mut urls = BTreeMap::new();
    let mut arns = BTreeMap::new();
    for def in defs {
        let mut req = client
            .create_queue()
            .queue_name(def.name_pattern.replace("${Stage}", stage));
        if def.fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(v) = def.visibility_timeout {
            req = req.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
        }
        if let Some((dlq, max)) = &def.redrive {
            let arn: &String = arns
                .get(dlq)
                .ok_or_else(|| QueueError::Template(format!("{dlq} is not a queue")))?;
            req = req.attributes(
                QueueAttributeName::RedrivePolicy,
                json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string(),
            );
        }
        let url = req
            .send()
            .await
            .map_err(sqs_err("CreateQueue"))?
            .queue_url
            .unwrap_or_default();
        let arn = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sqs_err("GetQueueAttributes"))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        arns.insert(def.logical_id.clone(), arn);
        urls.insert(def.logical_id, url);
    }
    Ok(urls)
}

/// Lambda's SQS poller for one worker function, played locally.
#[derive(Clone, Debug)]
pub struct EventSourceMapping {
    pub queue: WorkQueue,
    pub batch_size: i32,
    /// Batches handled at once (the mapping's `MaximumConcurrency`).
    pub max_concurrency: usize,
    /// The invocation's time (the function's `Timeout`).
    pub timeout: std::time::Duration,
}

/// What one receive handed to the handler.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub batch: WorkBatch,
    /// Messages received (and so handed over).
    pub received: usize,
}

impl EventSourceMapping {
    pub fn new(queue: WorkQueue, timeout: std::time::Duration) -> Self {
        EventSourceMapping {
            queue,
            batch_size: 10,
            max_concurrency: 5,
            timeout,
        }
    }

    /// One receive and invocation; `None` when the queue had nothing visible.
    pub async fn deliver_once<F, Fut>(&self, handler: &F) -> Result<Option<Delivery>, QueueError>
    where
        F: Fn(SqsEvent, u64) -> Fut,
        Fut: Future<Output = WorkBatch>,
    {
        let client = self.queue.client();
        let received = client
            .receive_message()
            .queue_url(self.queue.url())
            .max_number_of_messages(self.batch_size)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(sqs_err("ReceiveMessage"))?
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            return Ok(None);
        }
        let records: Vec<Value> = received
            .iter()
            .map(|m| {
                let attributes: BTreeMap<String, String> = m
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "md5OfBody": m.md5_of_body,
                    "attributes": attributes,
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{}", self.queue.url().rsplit('/').next().unwrap_or_default()),
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))
            .map_err(|e| QueueError::Template(format!("SqsEvent: {e}")))?;
        let deadline_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            as u64
            + self.timeout.as_millis() as u64;
        let batch = handler(event, deadline_ms).await;
        let failed: HashSet<&str> = batch
            .response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let done: Vec<DeleteMessageBatchRequestEntry> = received
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.contains(m.message_id.as_deref().unwrap_or_default()))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if !done.is_empty() {
            client
                .delete_message_batch()
                .queue_url(self.queue.url())
                .set_entries(Some(done))
                .send()
                .await
                .map_err(sqs_err("DeleteMessageBatch"))?;
        }
        Ok(Some(Delivery {
            batch,
            received: received.len(),
        }))
    }

    /// Delivers until the queue has nothing visible: `max_concurrency` invocation loops side by side,
    /// each taking its next batch as soon as it is done (a slow batch holds its own loop only). Answers
    /// every delivery in the order they finished.
    pub async fn drain<F, Fut>(&self, handler: &F) -> Result<Vec<Delivery>, QueueError>
    where
        F: Fn(SqsEvent, u64) -> Fut,
        Fut: Future<Output = WorkBatch>,
    {
        let out = std::sync::Mutex::new(Vec::new());
        let worker = || async {
            while let Some(d) = self.deliver_once(handler).await? {
                out.lock().unwrap_or_else(|p| p.into_inner()).push(d);
            }
            Ok::<(), QueueError>(())
        };
        let loops =
            futures::future::join_all((0..self.max_concurrency.max(1)).map(|_| worker())).await;
        for l in loops {
            l?;
        }
        Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}
