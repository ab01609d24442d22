//! The tenant's Admin key in Secrets Manager: one secret per tenant,
//! `claresia/{stage}/tenants/{tenant}/anthropic-admin-key`, tagged with the tenant.

use std::collections::HashMap;

use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError;
use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_secretsmanager::Client;
use claresia_domain::{AdminKey, TenantSlug};
use time::OffsetDateTime;

use crate::StoreError;

/// BatchGetSecretValue's limit of secret ids per call.
const BATCH_GET_MAX: usize = 20;

#[derive(Debug, Clone)]
pub struct KeyStore {
    client: crate::Lazy<Client>,
    stage: String,
    /// A customer-managed KMS key for new secrets (`SECRETS_KMS_KEY_ID`); `None`: Secrets Manager's own.
    kms_key_id: Option<String>,
}

impl KeyStore {
    pub fn new(client: impl Into<crate::Lazy<Client>>, stage: impl Into<String>) -> Self {
        KeyStore {
            client: client.into(),
            stage: stage.into(),
            kms_key_id: None,
        }
    }

    /// New secrets are encrypted with this KMS key instead of the account's `aws/secretsmanager` key.
    pub fn with_kms_key(mut self, kms_key_id: Option<String>) -> Self {
        self.kms_key_id = kms_key_id;
        self
    }

    pub fn secret_name(&self, tenant: &TenantSlug) -> String {
        format!(
            "claresia/{}/tenants/{}/anthropic-admin-key",
            self.stage, tenant
        )
    }

    /// Stores `key` as the tenant's current key: a new secret, or a new version of the existing one (the
    /// previous version stays as `AWSPREVIOUS`). A secret scheduled for deletion is restored first.
    /// Returns the new version id.
    pub async fn put(&self, tenant: &TenantSlug, key: &AdminKey) -> Result<String, StoreError> {
        let name = self.secret_name(tenant);
        match self.put_version(&name, key).await {
            Ok(v) => return Ok(v),
            Err(e) => match e.as_service_error() {
                Some(PutSecretValueError::ResourceNotFoundException(_)) => {}
                // Scheduled for deletion (offboarded, now reconnecting): bring it back, then rotate.
                Some(PutSecretValueError::InvalidRequestException(_)) => {
                    self.client
                        .restore_secret()
                        .secret_id(&name)
                        .send()
                        .await
                        .map_err(|e| StoreError::secrets("RestoreSecret", e))?;
                    return self
                        .put_version(&name, key)
                        .await
                        .map_err(|e| StoreError::secrets("PutSecretValue", e));
                }
                _ => return Err(StoreError::secrets("PutSecretValue", e)),
            },
        }
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let out = self
            .client
            .create_secret()
            .name(&name)
            .description(format!(
                "Anthropic Admin API key of Claresia tenant {tenant} ({})",
                self.stage
            ))
            .secret_string(key.expose())
            .set_kms_key_id(self.kms_key_id.clone())
            .tags(tag("claresia:tenant", tenant.as_str()))
            .tags(tag("claresia:stage", &self.stage))
            .tags(tag("claresia:managed-by", "claresia-connector"))
            .send()
            .await
            .map_err(|e| StoreError::secrets("CreateSecret", e))?;
        Ok(out.version_id.unwrap_or_default())
    }

    async fn put_version(
        &self,
        name: &str,
        key: &AdminKey,
    ) -> Result<String, aws_sdk_secretsmanager::error::SdkError<PutSecretValueError>> {
        let out = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(key.expose())
            .send()
            .await?;
        Ok(out.version_id.unwrap_or_default())
    }

    /// Cancels a scheduled deletion (an offboarded tenant reconnecting). A secret that does not exist or is
    /// not scheduled for deletion is left as it is.
    pub async fn restore(&self, tenant: &TenantSlug) -> Result<(), StoreError> {
        use aws_sdk_secretsmanager::operation::restore_secret::RestoreSecretError;
        match self
            .client
            .restore_secret()
            .secret_id(self.secret_name(tenant))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(RestoreSecretError::ResourceNotFoundException(_))
                | Some(RestoreSecretError::InvalidRequestException(_)) => Ok(()),
                _ => Err(StoreError::secrets("RestoreSecret", e)),
            },
        }
    }

    /// The tenant's current key, or `None` when there is none (never stored, or scheduled for deletion).
    pub async fn get(&self, tenant: &TenantSlug) -> Result<Option<AdminKey>, StoreError> {
        self.get_version(tenant, None).await
    }

    /// The key in one version of the tenant's secret (`None`: the current one): a connection record names
    /// its version, so a rotation racing another never pairs the record with the other key.
    pub async fn get_version(
        &self,
        tenant: &TenantSlug,
        version_id: Option<&str>,
    ) -> Result<Option<AdminKey>, StoreError> {
        let out = match self
            .client
            .get_secret_value()
            .secret_id(self.secret_name(tenant))
            .set_version_id(version_id.filter(|v| !v.is_empty()).map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match e.as_service_error() {
                    Some(GetSecretValueError::ResourceNotFoundException(_))
                    | Some(GetSecretValueError::InvalidRequestException(_)) => Ok(None),
                    _ => Err(StoreError::secrets("GetSecretValue", e)),
                }
            }
        };
        let raw = out.secret_string.unwrap_or_default();
        AdminKey::parse(&raw).map(Some).map_err(|_| {
            StoreError::Corrupt(format!(
                "secret {} does not hold an Admin API key",
                self.secret_name(tenant)
            ))
        })
    }

    /// The current keys of many tenants, 20 per round trip (BatchGetSecretValue's limit). A tenant whose
    /// secret is missing, scheduled for deletion or unreadable is simply absent: the caller reads it alone
    /// (and gets that tenant's own error) when it needs it.
    pub async fn get_many(
        &self,
        tenants: &[TenantSlug],
    ) -> Result<HashMap<TenantSlug, AdminKey>, StoreError> {
        let mut out = HashMap::new();
        for chunk in tenants.chunks(BATCH_GET_MAX) {
            let by_name: HashMap<String, &TenantSlug> =
                chunk.iter().map(|t| (self.secret_name(t), t)).collect();
            let res = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(by_name.keys().cloned().collect()))
                .send()
                .await
                .map_err(|e| StoreError::secrets("BatchGetSecretValue", e))?;
            for entry in res.secret_values.unwrap_or_default() {
                let tenant = entry.name.as_ref().and_then(|n| by_name.get(n));
                let key = entry.secret_string.as_deref().map(AdminKey::parse);
                if let (Some(t), Some(Ok(k))) = (tenant, key) {
                    out.insert((*t).clone(), k);
                }
            }
        }
        Ok(out)
    }

    /// Schedules the secret's deletion after a recovery window (7–30 days). `None` if there was no secret.
    pub async fn schedule_deletion(
        &self,
        tenant: &TenantSlug,
        recovery_window_days: i64,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let res = self
            .client
            .delete_secret()
            .secret_id(self.secret_name(tenant))
            .recovery_window_in_days(recovery_window_days)
            .send()
            .await;
        match res {
            Ok(out) => Ok(out
                .deletion_date
                .and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok())),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError::ResourceNotFoundException(_)) => Ok(None),
                // Already scheduled (a retried offboarding): the goal is reached. The first call's date is
                // not returned again; it is no later than a window from now.
                Some(aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError::InvalidRequestException(_)) => {
                    Ok(Some(OffsetDateTime::now_utc() + time::Duration::days(recovery_window_days)))
                }
                _ => Err(StoreError::secrets("DeleteSecret", e)),
            },
        }
    }
}
