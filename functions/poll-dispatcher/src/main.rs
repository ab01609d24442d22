//! The poll dispatcher Lambda: on each 60 s schedule delivery, enqueues one poll item per connected tenant
//! and one sweep item per Hub with a pending publish. It schedules; the workers poll and publish.

use std::sync::Arc;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

// One event at a time per sandbox: a current-thread runtime starts faster than a pool (measured in
// lambda-bench), and a batch's items still run side by side on it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    claresia_api::logging::init();
    let dispatcher = Arc::new(claresia_api::dispatch::Dispatcher::from_env().await?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<Value>>| {
            let dispatcher = Arc::clone(&dispatcher);
            async move {
                let report = dispatcher.handle(&event.payload).await?;
                Ok::<Value, Error>(serde_json::json!(report))
            }
        },
    ))
    .await
}
