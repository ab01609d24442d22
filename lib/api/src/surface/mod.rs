//! The Anthropic port: what the services (connect/test, publish, poll) need from Anthropic, as traits they
//! own, with one adapter per surface. `preview` speaks the contract the product page imagines
//! (`anthropic-api.md`); `enterprise` what Claude Enterprise documents today (`claude-enterprise-api.md`).
//! A connection's surface is stored on its record; a third surface is a new adapter here and one arm in
//! [`Surfaces::get`], not an edit in every service.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use claresia_anthropic::{AnthropicClient, AnthropicError, Deadline};
use claresia_aws::LedgerEntry;
use claresia_domain::catalog::{Acl, Action, DesiredSkill, RemoteSkill};
use claresia_domain::{AdminKey, Attestation, ConnectionRecord, Surface, TenantSlug, TestOutcome};

pub mod enterprise;
pub mod preview;

/// What makes a published skill ours on a surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The published object carries our metadata (`managed_by`, `tenant`): the ledger is derived from it.
    Metadata,
    /// It carries none: our ledger of remote ids (plus the name prefix) is the only proof, so a create is
    /// claimed in the ledger before it is sent.
    Ledger,
}

/// One connection's published skills on its surface: list them, and change them one at a time.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// What the org holds under Claresia's names, as the plan reads it: ours carry our metadata (from the
    /// object or, on ledger surfaces, from `ledger`), others none. Access is read only for skills whose
    /// id is in `access_of` (`None`: all), as the plan compares nothing else.
    async fn list(
        &self,
        ledger: &BTreeMap<String, LedgerEntry>,
        access_of: Option<&BTreeSet<String>>,
    ) -> Result<Vec<RemoteSkill>, AnthropicError>;
    /// Creates the skill and answers its remote id (its access is set by [`Publisher::set_access`]).
    async fn create(&self, desired: &DesiredSkill) -> Result<String, AnthropicError>;
    /// Replaces its definition (a new version).
    async fn replace(&self, remote_id: &str, desired: &DesiredSkill) -> Result<(), AnthropicError>;
    /// Makes its access exactly `acl`; `fresh`: just created, so nothing is set yet.
    async fn set_access(
        &self,
        remote_id: &str,
        acl: &Acl,
        fresh: bool,
    ) -> Result<(), AnthropicError>;
    async fn delete(&self, remote_id: &str) -> Result<(), AnthropicError>;
    /// Narrows a skill of ours whose access is wider than its grants (a plugin open to the whole org)
    /// back to them, before anything else is written; `true` if it wrote.
    async fn contain(&self, _remote: &mut RemoteSkill) -> Result<bool, AnthropicError> {
        Ok(false)
    }
    /// Why `acl` cannot be applied (e.g. a group the org does not have), before anything is written.
    async fn check_access(&self, _acl: &Acl) -> Result<(), String> {
        Ok(())
    }
    /// The part of `acl` this surface can express: what `list` reports once `set_access(acl)` ran.
    fn expressible(&self, acl: Acl) -> Acl;
    fn ownership(&self) -> Ownership;
    /// The org's write limit when the plan must be paced to it (for the publish report's ETA).
    fn writes_per_minute(&self) -> Option<f64>;
    /// Whether an answer Anthropic says not to repeat (a spend cap, `x-should-retry: false`) still leaves
    /// the skill pending for the sweep (`false`: it is a refusal, reported with its reason).
    fn pends_on_final_answers(&self) -> bool {
        true
    }
    /// The org's read limit, where reads left for a later run pace it too (for the ETA).
    fn reads_per_minute(&self) -> Option<f64> {
        None
    }
    /// How many writes an action takes at most.
    fn writes_of(&self, action: &Action) -> u32;
}

/// One surface: test a key, and publish for a connection.
#[async_trait]
pub trait AnthropicSurface: Send + Sync {
    fn surface(&self) -> Surface;
    /// The connection test: identify the org and verify every required scope one by one.
    async fn test(
        &self,
        key: &AdminKey,
        attestation: Option<&Attestation>,
        deadline: Deadline,
    ) -> Result<TestOutcome, AnthropicError>;
    fn publisher<'a>(
        &'a self,
        hub: &'a TenantSlug,
        record: &'a ConnectionRecord,
        key: &'a AdminKey,
        deadline: Deadline,
    ) -> Box<dyn Publisher + 'a>;
}

/// Every surface's adapter, built once per sandbox.
pub struct Surfaces {
    pub preview: preview::PreviewSurface,
    pub enterprise: enterprise::EnterpriseSurface,
}

impl Surfaces {
    pub fn new(client: AnthropicClient, limits: enterprise::EnterpriseLimits) -> Self {
        Surfaces {
            preview: preview::PreviewSurface::new(client.clone()),
            enterprise: enterprise::EnterpriseSurface::new(client, limits),
        }
    }

    pub fn get(&self, surface: Surface) -> &dyn AnthropicSurface {
        match surface {
            Surface::Preview => &self.preview,
            Surface::Enterprise => &self.enterprise,
        }
    }
}
