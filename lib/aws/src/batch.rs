//! What every batch call does with the requests DynamoDB leaves unprocessed (throttling): call again for
//! those after an exponential backoff, and give up with a typed error once the attempts are spent.

use std::time::Duration;

use crate::StoreError;

/// Calls a batch operation makes before giving up on what is still unprocessed.
const ATTEMPTS: u32 = 8;

/// After the `attempt`-th call of `operation` left `left` `what` unprocessed: waits before the next call,
/// or answers the error once `ATTEMPTS` calls have been made.
pub(crate) async fn back_off(
    operation: &'static str,
    attempt: u32,
    left: usize,
    what: &str,
) -> Result<(), StoreError> {
    if attempt >= ATTEMPTS {
        return Err(StoreError::Dynamo {
            operation,
            message: format!("{left} {what} still unprocessed after {attempt} attempts"),
        });
    }
    tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
    Ok(())
}
