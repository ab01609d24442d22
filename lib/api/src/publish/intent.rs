//! The write-ahead marker of a catalog change: taken before the change is written, given back if the
//! change wrote nothing, cleared by the publish that finishes it (or left for the sweep).

use std::collections::BTreeSet;

use claresia_anthropic::Deadline;
use claresia_domain::TenantSlug;
use serde_json::{json, Value};

use super::new_token;
use crate::{ApiError, App};

/// The write-ahead marker of one change: its token, and the marker it replaced.
#[derive(Debug)]
pub struct Intent {
    pub token: String,
    pub(super) previous: Option<String>,
}

impl App {
    /// Marks `hub` as needing a publish before a change is written (write-ahead): if the function dies
    /// anywhere between the change and the end of its publish, the sweep finishes the work.
    pub async fn begin_change(&self, hub: &TenantSlug) -> Result<Intent, ApiError> {
        let token = new_token();
        let previous = self.hub.swap_pending(hub, &token).await?;
        Ok(Intent { token, previous })
    }

    /// Takes back the marker of a change that wrote nothing (its precondition failed at the write): the
    /// marker it replaced comes back, so a refused request leaves the store as it found it.
    pub async fn abandon_change(&self, hub: &TenantSlug, intent: Intent) -> Result<(), ApiError> {
        self.hub
            .restore_pending(hub, &intent.token, intent.previous.as_deref())
            .await?;
        Ok(())
    }

    /// Publishes after a change (`intent`: the marker [`App::begin_change`] left before it, or one made
    /// now) if publishing is allowed; otherwise says why it was skipped.
    pub(crate) async fn publish_after_change(
        &self,
        hub: &TenantSlug,
        scope: Option<&BTreeSet<String>>,
        deadline: Deadline,
        intent: Option<Intent>,
    ) -> Result<Value, ApiError> {
        let intent = match intent {
            Some(i) => i,
            None => self.begin_change(hub).await?,
        };
        // The marker this change replaced was earlier work still pending (a publish the budget cut short):
        // a scoped publish does not cover it, so the marker stays for the sweep's full publish.
        let finishes = scope.is_none() || intent.previous.is_none();
        let intent = intent.token;
        let clear_on_success = finishes.then_some(intent.as_str());
        match self
            .publish_with(hub, scope, deadline, clear_on_success, true)
            .await
        {
            Ok(report) => Ok(json!(report)),
            Err(ApiError::AnthropicUnavailable(_)) => {
                self.hub.mark_pending(hub, &new_token()).await?;
                Ok(json!({"skipped": true, "pending": true,
                          "reason": "Anthropic is unavailable; the change is saved and will be published by the next sweep"}))
            }
            // Refused — not connected, zero-retention off, or Anthropic's 401/403/400: retrying will not
            // help until an admin acts, so this change's marker goes (the next change or Republish all
            // publishes everything).
            Err(ApiError::PublishRefused(reason)) => {
                self.hub.clear_pending(hub, &intent).await?;
                Ok(json!({"skipped": true, "pending": false, "reason": reason}))
            }
            Err(ApiError::AnthropicRejected(e)) => {
                self.hub.clear_pending(hub, &intent).await?;
                Ok(json!({"skipped": true, "pending": false,
                    "reason": format!("Anthropic refused the publish ({}); the change is saved — fix the key, then Republish all", e.summary())}))
            }
            Err(e) => Err(e),
        }
    }
}
