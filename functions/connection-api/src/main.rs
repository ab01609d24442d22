//! The connection API Lambda: builds the app once per sandbox, then answers every event with it.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};

// One event at a time per sandbox: a current-thread runtime starts faster than a pool (measured in
// lambda-bench), and a batch's items still run side by side on it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    claresia_api::logging::init();
    let app = Arc::new(claresia_api::App::from_env().await?);
    lambda_http::run(service_fn(move |req: Request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Error>(app.handle(req).await) }
    }))
    .await
}
