/// A store operation failed. Messages carry the AWS error code and context, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        operation: &'static str,
        message: String,
    },
    #[error("Secrets Manager {operation} failed: {message}")]
    Secrets {
        operation: &'static str,
        message: String,
    },
    #[error("SQS {operation} failed: {message}")]
    Queue {
        operation: &'static str,
        message: String,
    },
    #[error("stored item is unreadable: {0}")]
    Corrupt(String),
    /// Refused before sending: DynamoDB would reject it (400 KB per item).
    #[error("{what} would be {bytes} bytes, over DynamoDB's 400 KB item limit")]
    ItemTooLarge { what: String, bytes: usize },
}

impl StoreError {
    /// The service failed to answer (throttled, timed out, unreachable, a 5xx): the caller may retry. Not
    /// an unreadable item or one refused for its size, which a retry does not change.
    /// What a retry cannot change is not an outage: a request we should never have sent
    /// (`ValidationException`), or a deployment fault (a missing table or permission, bad credentials).
    /// Those are 500s for an operator to fix, not an endless "retry shortly".
    pub fn is_unavailable(&self) -> bool {
        const NOT_TRANSIENT: [&str; 6] = [
            "ValidationException",
            "ResourceNotFoundException",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "DecryptionFailure",
        ];
        match self {
            StoreError::Dynamo { message, .. }
            | StoreError::Secrets { message, .. }
            | StoreError::Queue { message, .. } => {
                !NOT_TRANSIENT.iter().any(|code| message.contains(code))
            }
            StoreError::Corrupt(_) | StoreError::ItemTooLarge { .. } => false,
        }
    }

    pub(crate) fn dynamo<E>(operation: &'static str, err: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Dynamo {
            operation,
            message: aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
        }
    }

    pub(crate) fn queue<E>(operation: &'static str, err: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Queue {
            operation,
            message: aws_sdk_sqs::error::DisplayErrorContext(err).to_string(),
        }
    }

    pub(crate) fn secrets<E>(operation: &'static str, err: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Secrets {
            operation,
            message: aws_sdk_secretsmanager::error::DisplayErrorContext(err).to_string(),
        }
    }
}

/// A conditional write's condition did not hold (another writer got there first): an answer, not an error.
pub(crate) fn condition_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}
