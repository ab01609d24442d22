//! CloudWatch metrics in embedded metric format: one JSON line on stdout per flush, which Lambda's log
//! pipeline turns into metrics (no API calls, no extra latency).

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "Claresia/Connector";

/// Emits `metrics` (name → (value, unit)) with the `Stage` dimension.
pub fn emit(stage: &str, metrics: &[(&str, f64, &str)]) {
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
    line.insert("Stage".into(), json!(stage));
    for (name, value, _) in metrics {
        line.insert((*name).into(), json!(value));
    }
    println!("{}", Value::Object(line));
}
