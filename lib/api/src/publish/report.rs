//! What a publish reports: each target's outcome lists (failures with the reason an admin can act on),
//! the whole publish (surface, writes, ETA), and the bounded part the status stores.

use std::collections::BTreeSet;

use claresia_aws::StoreError;
use claresia_domain::catalog::{Plan, TargetState};
use claresia_domain::{Surface, TenantSlug};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillFailure {
    pub skill_id: String,
    pub name: String,
    pub reason: String,
}

/// The publish report of one target (the tenant or a sub-tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub tenant: TenantSlug,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub complete: bool,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<SkillFailure>,
    /// Actions left for the scheduled sweep (time budget spent or Anthropic unavailable).
    pub pending: Vec<String>,
}

/// Names of each kind kept in a stored report: the item stays far inside DynamoDB's 400 KB whatever the
/// catalog's size (the full lists are in the publish's own answer).
const STORED_NAMES: usize = 200;

/// How many skills each outcome had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub pending: usize,
}

/// What the status keeps of a target's last publish (`last_publish`): the counts, and the names that
/// changed, failed or wait (at most [`STORED_NAMES`] of each; `names_truncated` says when some were left
/// out). Unchanged names are not kept: they are the bulk of a large catalog and say nothing new.
#[derive(Debug, Serialize)]
pub struct StoredReport<'a> {
    pub tenant: &'a TenantSlug,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub complete: bool,
    pub counts: OutcomeCounts,
    pub created: &'a [String],
    pub updated: &'a [String],
    pub deleted: &'a [String],
    pub failed: &'a [SkillFailure],
    pub pending: &'a [String],
    pub names_truncated: bool,
}

impl TargetReport {
    pub fn counts(&self) -> OutcomeCounts {
        OutcomeCounts {
            created: self.created.len(),
            updated: self.updated.len(),
            deleted: self.deleted.len(),
            unchanged: self.unchanged.len(),
            failed: self.failed.len(),
            pending: self.pending.len(),
        }
    }

    pub fn stored(&self) -> StoredReport<'_> {
        fn cap<T>(v: &[T]) -> &[T] {
            &v[..v.len().min(STORED_NAMES)]
        }
        StoredReport {
            tenant: &self.tenant,
            at: self.at,
            complete: self.complete,
            counts: self.counts(),
            created: cap(&self.created),
            updated: cap(&self.updated),
            deleted: cap(&self.deleted),
            failed: cap(&self.failed),
            pending: cap(&self.pending),
            names_truncated: [
                self.created.len(),
                self.updated.len(),
                self.deleted.len(),
                self.failed.len(),
                self.pending.len(),
            ]
            .iter()
            .any(|n| *n > STORED_NAMES),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub tenant: TenantSlug,
    pub complete: bool,
    pub pending: bool,
    /// The Anthropic surface published to.
    pub surface: Surface,
    /// The write calls this publish made to Anthropic (creates, replacements, access settings, deletes):
    /// 0 when nothing changed.
    pub writes: u32,
    /// Where the org's write limit paces the publish (enterprise): how long its writes take at it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<Eta>,
    pub targets: Vec<TargetReport>,
}

/// The time a publish's writes take at the org's write limit, estimated when it was planned. What the
/// request's time budget does not cover is finished by the pending sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Eta {
    pub writes_planned: u32,
    pub writes_per_minute: f64,
    /// Skills whose installation settings are still to be read (a large org's first publish reads them
    /// across several runs), paced by `reads_per_minute`.
    pub settings_to_read: u32,
    pub reads_per_minute: f64,
    pub seconds: u64,
}

/// What one action came to.
pub(super) enum Outcome {
    Created(String),
    Updated(String),
    Deleted(String),
    Failed(SkillFailure, Option<String>),
    /// Done in Anthropic (or not), but the store failed to record it.
    Unrecorded(SkillFailure, StoreError),
    Pending(String),
}

impl Outcome {
    pub(super) fn name(&self) -> &str {
        match self {
            Outcome::Created(n)
            | Outcome::Updated(n)
            | Outcome::Deleted(n)
            | Outcome::Pending(n) => n,
            Outcome::Failed(f, _) | Outcome::Unrecorded(f, _) => &f.name,
        }
    }
}

impl TargetReport {
    /// A target's report before its actions run: what the plan left unchanged, the names held by skills
    /// Claresia does not own, and the skills the catalog cannot publish for it (within `scope`).
    pub(super) fn planned(
        target: &TenantSlug,
        state: &TargetState,
        p: &Plan,
        scope: Option<&BTreeSet<String>>,
    ) -> TargetReport {
        let failure = |(id, reason): &(String, String)| SkillFailure {
            skill_id: id.clone(),
            name: format!("claresia-{target}-{id}"),
            reason: reason.clone(),
        };
        TargetReport {
            tenant: target.clone(),
            at: OffsetDateTime::now_utc(),
            complete: true,
            created: vec![],
            updated: vec![],
            deleted: vec![],
            unchanged: p.unchanged.clone(),
            failed: p
                .conflicts
                .iter()
                .chain(
                    state
                        .problems
                        .iter()
                        .filter(|(id, _)| scope.is_none_or(|s| s.contains(id))),
                )
                .map(failure)
                .collect(),
            pending: vec![],
        }
    }

    /// Adds one action's outcome; answers the workspace a 403 named, if any.
    pub(super) fn record(&mut self, o: Outcome) -> Option<String> {
        match o {
            Outcome::Created(n) => self.created.push(n),
            Outcome::Updated(n) => self.updated.push(n),
            Outcome::Deleted(n) => self.deleted.push(n),
            Outcome::Pending(n) => self.pending.push(n),
            Outcome::Failed(f, workspace) => {
                self.failed.push(f);
                return workspace;
            }
            Outcome::Unrecorded(f, _) => self.failed.push(f),
        }
        None
    }

    /// Once every outcome is in: each name once, in order, under one heading.
    pub(super) fn settle(&mut self) {
        for list in [
            &mut self.created,
            &mut self.updated,
            &mut self.deleted,
            &mut self.pending,
        ] {
            list.sort();
            list.dedup();
        }
        // A skill narrowed before the plan ran is reported updated, whatever else was done to it.
        let touched: BTreeSet<&String> = self
            .updated
            .iter()
            .chain(&self.created)
            .chain(self.failed.iter().map(|f| &f.name))
            .collect();
        self.unchanged.retain(|n| !touched.contains(n));
        let created = &self.created;
        self.updated.retain(|n| !created.contains(n));
        self.failed.sort_by(|a, b| a.name.cmp(&b.name));
        self.complete = self.pending.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_stored_report_stays_small_whatever_the_catalog() {
        let names = |n: usize, kind: &str| -> Vec<String> {
            (0..n)
                .map(|i| {
                    format!(
                        "claresia-a-very-long-tenant-name-{kind}-{i:05}-{}",
                        "x".repeat(20)
                    )
                })
                .collect()
        };
        let failures = (0..5_000)
            .map(|i| SkillFailure {
                skill_id: format!("s{i}"),
                name: format!("claresia-t-s{i}"),
                reason: "Add the Admin key's principal to workspace dainese-sales (wrkspc_01DemoSales00000000000000)".into(),
            })
            .collect();
        let report = TargetReport {
            tenant: TenantSlug::parse("t").unwrap(),
            at: OffsetDateTime::UNIX_EPOCH,
            complete: false,
            created: names(10_000, "c"),
            updated: names(10_000, "u"),
            deleted: names(10_000, "d"),
            unchanged: names(50_000, "n"),
            failed: failures,
            pending: names(10_000, "p"),
        };
        let stored = serde_json::to_string(&report.stored()).unwrap();
        assert!(stored.len() < 200 * 1024, "{} bytes", stored.len());
        let v: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["counts"]["unchanged"], 50_000);
        assert_eq!(v["counts"]["failed"], 5_000);
        assert_eq!(v["names_truncated"], true);
        assert!(v.get("unchanged").is_none());
        assert_eq!(v["created"].as_array().unwrap().len(), STORED_NAMES);
    }
}
