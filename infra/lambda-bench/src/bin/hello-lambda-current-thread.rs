//! The baseline on tokio's current-thread runtime: what the runtime flavour alone costs or saves at init.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|e: LambdaEvent<Value>| async move {
        Ok::<_, Error>(e.payload)
    }))
    .await
}
