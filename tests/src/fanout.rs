//! The fan-out on moto's SQS: the template's queues for the test's stage, the dispatcher, and the local
//! event source mappings that hand batches to the real worker handler. No in-memory queue anywhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use claresia_api::dispatch::{DispatchReport, Dispatcher};
use claresia_api::metrics::MetricSink;
use claresia_api::worker::WorkBatch;
use claresia_aws::WorkQueue;
use claresia_local::queues::{self, Delivery, EventSourceMapping};
use serde_json::Value;

use crate::TestEnv;

/// Every EMF line the app and the dispatcher emitted (instead of stdout).
#[derive(Clone, Default)]
pub struct CollectedMetrics(pub Arc<Mutex<Vec<Value>>>);

impl MetricSink for CollectedMetrics {
    fn write(&self, line: Value) {
        self.0.lock().unwrap().push(line);
    }
}

impl CollectedMetrics {
    /// Every value emitted under `name`, in order.
    pub fn values(&self, name: &str) -> Vec<f64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.get(name).and_then(Value::as_f64))
            .collect()
    }

    /// Every metric name emitted so far.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|l| {
                l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|m| m["Name"].as_str().map(str::to_owned))
            .collect()
    }
}

pub struct Fanout {
    pub dispatcher: Dispatcher,
    pub polls: EventSourceMapping,
    pub sweeps: EventSourceMapping,
    pub poll_dlq: WorkQueue,
}

/// What one minute did: the dispatch, then every poll and sweep batch the mappings delivered.
pub struct Minute {
    pub dispatch: DispatchReport,
    pub polls: Vec<Delivery>,
    pub sweeps: Vec<Delivery>,
}

impl Minute {
    /// The outcome of every item for `tenant`, in delivery order.
    pub fn outcomes(&self, tenant: &str) -> Vec<String> {
        self.polls
            .iter()
            .chain(&self.sweeps)
            .flat_map(|d| d.batch.items.iter())
            .filter(|i| i.tenant.as_deref() == Some(tenant))
            .map(|i| i.outcome.as_str().to_owned())
            .collect()
    }
}

impl TestEnv {
    /// The stage's work queues (as template.yaml declares them) and the dispatcher over them.
    pub async fn fanout(&self) -> Fanout {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let urls = queues::create_all(&sqs, &self.stage)
            .await
            .unwrap_or_else(|e| panic!("create the work queues in moto: {e}"));
        let queue = |id: &str| WorkQueue::new(sqs.clone(), urls[id].clone());
        Fanout {
            dispatcher: Dispatcher {
                config: self.app.config.clone(),
                hub: self.app.hub.clone(),
                polls: queue("PollQueue"),
                sweeps: queue("SweepQueue"),
                metrics: self.app.metrics.clone(),
            },
            polls: EventSourceMapping::new(queue("PollQueue"), Duration::from_secs(60)),
            sweeps: EventSourceMapping::new(queue("SweepQueue"), Duration::from_secs(60)),
            poll_dlq: queue("PollDeadLetterQueue"),
        }
    }
}

impl Fanout {
    /// The schedule's delivery for `scheduled` (Unix seconds), then both mappings until their queues
    /// have nothing visible.
    pub async fn minute(&self, env: &TestEnv, scheduled: i64) -> Minute {
        let dispatch = self
            .dispatcher
            .dispatch(scheduled)
            .await
            .unwrap_or_else(|e| panic!("dispatch: {e}"));
        let (polls, sweeps) = self.drain(env).await;
        Minute {
            dispatch,
            polls,
            sweeps,
        }
    }

    pub async fn drain(&self, env: &TestEnv) -> (Vec<Delivery>, Vec<Delivery>) {
        let handler = worker(env);
        let polls = self.polls.drain(&handler).await.expect("poll mapping");
        let sweeps = self.sweeps.drain(&handler).await.expect("sweep mapping");
        (polls, sweeps)
    }
}

/// A worker's answer to one batch, as the mapping awaits it.
pub type Answer = Pin<Box<dyn Future<Output = WorkBatch> + Send>>;

/// The workers' handler as the local event source mapping invokes it: the real `App::handle_work`.
pub fn worker(env: &TestEnv) -> impl Fn(SqsEvent, u64) -> Answer + Clone {
    let app = env.app.clone();
    move |event, deadline_ms| {
        let app = app.clone();
        Box::pin(async move { app.handle_work(event, deadline_ms).await })
    }
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
