//! The audit poller Lambda: a queue worker. Each SQS batch (up to 10 poll items, one tenant each) runs
//! side by side; the answer names the items to deliver again.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};

// One event at a time per sandbox: a current-thread runtime starts faster than a pool (measured in
// lambda-bench), and a batch's items still run side by side on it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    claresia_api::logging::init();
    let app = Arc::new(claresia_api::App::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let app = Arc::clone(&app);
        async move {
            let batch = app.handle_work(event.payload, event.context.deadline).await;
            Ok::<SqsBatchResponse, Error>(batch.response)
        }
    }))
    .await
}
