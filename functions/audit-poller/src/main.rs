//! The audit poller Lambda: each scheduled tick polls every connected tenant once.

use std::sync::Arc;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    claresia_api::logging::init();
    let app = Arc::new(claresia_api::App::from_env().await?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<Value>>| {
            let app = Arc::clone(&app);
            async move {
                app.handle_poll_tick(&event.payload, event.context.deadline)
                    .await
                    .map_err(Error::from)
            }
        },
    ))
    .await
}
