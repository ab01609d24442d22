//! CloudWatch metrics in embedded metric format: one JSON line per flush, which Lambda's log pipeline turns
//! into metrics (no API calls, no extra latency). The line goes to a [`MetricSink`]: stdout when deployed,
//! a collecting sink in tests (which check that every alarmed metric is really emitted).

use std::sync::Arc;

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "Claresia/Connector";

/// Where an EMF line goes.
pub trait MetricSink: Send + Sync {
    fn write(&self, line: Value);
}

/// Lambda's log stream.
pub struct Stdout;

impl MetricSink for Stdout {
    fn write(&self, line: Value) {
        println!("{line}");
    }
}

/// Emits metrics with the `Stage` dimension.
#[derive(Clone)]
pub struct Metrics {
    stage: String,
    sink: Arc<dyn MetricSink>,
}

impl Metrics {
    pub fn new(stage: impl Into<String>, sink: Arc<dyn MetricSink>) -> Self {
        Metrics {
            stage: stage.into(),
            sink,
        }
    }

    pub fn stdout(stage: impl Into<String>) -> Self {
        Metrics::new(stage, Arc::new(Stdout))
    }

    /// Emits `metrics` (name, value, unit) as one line.
    pub fn emit(&self, metrics: &[(&str, f64, &str)]) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({"Timestamp": now as i64, "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stage"]],
                "Metrics": metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]}),
        );
        line.insert("Stage".into(), json!(self.stage));
        for (name, value, _) in metrics {
            line.insert((*name).into(), json!(value));
        }
        self.sink.write(Value::Object(line));
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("stage", &self.stage)
            .finish()
    }
}
