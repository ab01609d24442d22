//! What every batch call does with the requests DynamoDB leaves unprocessed (throttling): call again for
//! those after an exponential backoff, and give up with a typed error once the attempts are spent.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::StoreError;

/// DynamoDB's item size limit. The emulator does not always enforce it; we do, before sending.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An item's size as DynamoDB counts it: attribute names plus values (strings and binaries by length,
/// numbers by digits, one byte for booleans and nulls, three bytes of overhead per list or map element).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// Refuses an item DynamoDB would refuse, naming what it was, before any call is made.
pub fn check_item_size(
    item: &HashMap<String, AttributeValue>,
    what: &str,
) -> Result<(), StoreError> {
    let bytes = item_size(item);
    if bytes > MAX_ITEM_BYTES {
        return Err(StoreError::ItemTooLarge {
            what: what.to_owned(),
            bytes,
        });
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_names_and_values_and_the_limit_is_enforced() {
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("TENANT#a".into())),
            ("n".to_owned(), AttributeValue::N("12345".into())),
            ("ok".to_owned(), AttributeValue::Bool(true)),
        ]);
        assert_eq!(item_size(&item), 2 + 8 + 1 + 4 + 2 + 1);
        assert!(check_item_size(&item, "x").is_ok());
        let at_limit = HashMap::from([(
            "d".to_owned(),
            AttributeValue::S("x".repeat(MAX_ITEM_BYTES - 1)),
        )]);
        assert!(check_item_size(&at_limit, "x").is_ok());
        let over = HashMap::from([(
            "d".to_owned(),
            AttributeValue::S("x".repeat(MAX_ITEM_BYTES)),
        )]);
        let err = check_item_size(&over, "telemetry event e1").unwrap_err();
        assert!(err.to_string().contains("telemetry event e1"), "{err}");
    }
}
