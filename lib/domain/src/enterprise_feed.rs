//! What the enterprise surface reports about our skills, normalized: Compliance Activity Feed entries
//! about our plugins (stored as the tenant's audit events; a change by anyone but the connector's key is
//! drift) and Analytics API rows (daily usage per skill and RBAC group). Pure.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::telemetry::{utc_millis, Routing, TelemetryEvent, MAX_ID_BYTES};
use crate::tenant::TenantSlug;

/// The plugin and skill lifecycle activity types the connector reads from the feed: the ones the feed's
/// reference documents (2026-08-14), so the filter is never refused. Version uploads are reported as
/// `claude_plugin_updated`; the newer, undocumented types (`claude_plugin_version_created`,
/// `claude_plugin_served_version_updated`, …) are not asked for, and a served version pinned in the UI is
/// read from the plugin list instead.
pub const LIFECYCLE_TYPES: [&str; 12] = [
    "claude_plugin_created",
    "claude_plugin_deleted",
    "claude_plugin_replaced",
    "claude_plugin_updated",
    "claude_plugin_enabled",
    "claude_plugin_disabled",
    "plugin_installation_preference_updated",
    "claude_skill_created",
    "claude_skill_deleted",
    "claude_skill_replaced",
    "claude_skill_enabled",
    "claude_skill_disabled",
];

/// An amount in cents as the API answers it: two decimals, as the totals are (`"48"` → `"48.00"`); text
/// that is not a number is kept as Anthropic sent it.
pub fn cents(raw: &str) -> String {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => format!("{v:.2}"),
        _ => raw.to_owned(),
    }
}

/// A change to one of our plugins made outside the connector, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftNote {
    pub activity_id: String,
    pub activity_type: String,
    pub plugin_name: String,
    /// `user_actor user_…`, `api_actor apikey_…`, …
    pub actor: String,
    pub at: String,
    /// The (sub-)tenant the plugin is published for, so a sub-tenant's own view shows its drift alone
    /// (absent on notes stored before it was recorded: those show on the parent's status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TenantSlug>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// About one of our plugins: stored as an audit event of its (sub-)tenant.
    Ours {
        event: Box<TelemetryEvent>,
        drift: Option<DriftNote>,
    },
    NotOurs,
    /// Unreadable: stored raw with the reason.
    Quarantined(String),
}

fn actor_of(raw: &Value) -> (String, String) {
    let a = &raw["actor"];
    let kind = a["type"].as_str().unwrap_or("unknown_actor").to_owned();
    let id = ["user_id", "api_key_id", "admin_api_key_id", "service"]
        .iter()
        .find_map(|k| a[*k].as_str())
        .unwrap_or_default()
        .to_owned();
    (kind, id)
}

/// The published name an activity is about, if it is one of ours: by plugin id (our ledger's), else by
/// name (`plugin_installation_preference_updated` carries no plugin id).
fn our_name<'a>(raw: &'a Value, routing: &'a Routing) -> Option<&'a str> {
    if let Some(name) = raw["plugin_id"]
        .as_str()
        .and_then(|id| routing.remote_ids.get(id))
    {
        return Some(name);
    }
    raw["plugin_name"]
        .as_str()
        .or_else(|| raw["skill_name"].as_str())
        .filter(|n| routing.published.contains_key(*n))
}

/// The connector's own API key ids, learned from the feed: a `claude_plugin_created` of a plugin id our
/// ledger holds was made by our key (Enterprise keys have no documented "whoami").
pub fn connector_keys(page: &[Value], routing: &Routing) -> BTreeSet<String> {
    page.iter()
        .filter(|a| a["type"] == "claude_plugin_created" && a["actor"]["type"] == "api_actor")
        .filter(|a| {
            a["plugin_id"]
                .as_str()
                .is_some_and(|id| routing.remote_ids.contains_key(id))
        })
        .filter_map(|a| a["actor"]["api_key_id"].as_str().map(str::to_owned))
        .collect()
}

/// One feed entry. `own_keys`: the connector's key ids known so far; a change by an API key is drift
/// only once they are known and it is not one of them (an unknown key never counts as someone else's).
pub fn normalize_activity(
    raw: &Value,
    routing: &Routing,
    own_keys: &BTreeSet<String>,
    now: OffsetDateTime,
) -> Activity {
    let Some(id) = raw["id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES)
    else {
        return Activity::Quarantined("the activity has no usable id".into());
    };
    let Some(kind) = raw["type"].as_str() else {
        return Activity::Quarantined(format!("activity {id} has no type"));
    };
    let Some(at) = raw["created_at"].as_str().and_then(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return Activity::Quarantined(format!("activity {id} has no RFC 3339 created_at"));
    };
    let Some(name) = our_name(raw, routing) else {
        return Activity::NotOurs;
    };
    let Some((target, skill_id)) = routing.published.get(name) else {
        return Activity::NotOurs;
    };
    let (actor_kind, actor_id) = actor_of(raw);
    let by_connector =
        actor_kind == "api_actor" && (own_keys.is_empty() || own_keys.contains(&actor_id));
    let drift = (!by_connector).then(|| DriftNote {
        activity_id: id.to_owned(),
        activity_type: kind.to_owned(),
        plugin_name: name.to_owned(),
        actor: format!("{actor_kind} {actor_id}").trim_end().to_owned(),
        at: utc_millis(at),
        target: Some(target.clone()),
    });
    let detail = match (
        raw["installation_preference"].as_str(),
        raw["group_name"].as_str().or(raw["group_id"].as_str()),
    ) {
        (Some(p), Some(g)) => Some(format!("installation preference {p} for group {g}")),
        (Some(p), None) => Some(format!("organization installation preference {p}")),
        (None, _) if kind == "plugin_installation_preference_updated" => {
            Some("installation setting removed".to_owned())
        }
        _ => None,
    };
    Activity::Ours {
        event: Box::new(TelemetryEvent {
            event_id: id.to_owned(),
            tenant: target.clone(),
            skill_id: skill_id.clone(),
            event_type: kind.to_owned(),
            status: if drift.is_some() {
                "drift"
            } else {
                "by_connector"
            }
            .to_owned(),
            occurred_at: utc_millis(at),
            ingested_at: utc_millis(now),
            workspace_id: None,
            actor_id: (!actor_id.is_empty()).then_some(actor_id),
            duration_ms: None,
            cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            error_type: None,
            // Kept for clients that read it before `detail` existed (deprecated there).
            error_message: detail.clone(),
            detail,
            record_url: None,
        }),
        drift,
    }
}

/// One day of use of one of our skills by one RBAC group, as the Analytics API reported it last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The (sub-)tenant it is routed to.
    pub tenant: TenantSlug,
    pub skill_id: String,
    pub skill_name: String,
    pub date: String,
    /// `none` when Anthropic gave no group.
    pub rbac_group_id: String,
    pub rbac_group_name: Option<String>,
    pub invocation_count: Option<u64>,
    pub distinct_user_count: Option<u64>,
    /// Decimal strings in cents, as Anthropic sends them.
    pub estimated_overage_spend: Option<String>,
    pub attributed_list_price: Option<String>,
    pub currency: Option<String>,
    pub polled_at: String,
}

/// An analytics row of `date` (grouped by RBAC group), if it is one of our skills. It goes to the
/// sub-tenant the skill was published for, else to the sub-tenant the group is mapped to, else the hub.
pub fn normalize_usage(
    raw: &Value,
    date: &str,
    routing: &Routing,
    now: OffsetDateTime,
) -> Option<UsageRow> {
    let name = raw["skill_name"].as_str()?;
    let (target, skill_id) = routing.published.get(name)?;
    let group = raw["rbac_group_id"].as_str().unwrap_or("none").to_owned();
    let tenant = match &routing.hub {
        Some(hub) if target == hub => routing.groups.get(&group).unwrap_or(hub).clone(),
        _ => target.clone(),
    };
    let decimal = |k: &str| match &raw[k] {
        Value::String(s) => Some(cents(s)),
        Value::Number(n) => Some(cents(&n.to_string())),
        _ => None,
    };
    Some(UsageRow {
        tenant,
        skill_id: skill_id.clone(),
        skill_name: name.to_owned(),
        date: date.to_owned(),
        rbac_group_id: group,
        rbac_group_name: raw["rbac_group_name"].as_str().map(str::to_owned),
        invocation_count: raw["invocation_count"].as_u64(),
        distinct_user_count: raw["distinct_user_count"].as_u64(),
        estimated_overage_spend: decimal("estimated_overage_spend"),
        attributed_list_price: decimal("attributed_list_price"),
        currency: raw["currency"].as_str().map(str::to_owned),
        polled_at: utc_millis(now),
    })
}

/// The last `n` complete UTC days before `now`, newest first (Analytics has no data for today).
pub fn complete_days(now: OffsetDateTime, n: u32) -> Vec<String> {
    let today = now.to_offset(time::UtcOffset::UTC).date();
    (1..=i64::from(n))
        .map(|d| (today - time::Duration::days(d)).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    fn t(s: &str) -> TenantSlug {
        TenantSlug::parse(s).unwrap()
    }

    fn routing() -> Routing {
        Routing {
            hub: Some(t("dainese")),
            published: BTreeMap::from([
                (
                    "claresia-dainese-prd-review".into(),
                    (t("dainese"), "prd-review".into()),
                ),
                (
                    "claresia-dainese-eng-oncall".into(),
                    (t("dainese-eng"), "oncall".into()),
                ),
            ]),
            groups: BTreeMap::from([("rbac_group_sales".into(), t("dainese-sales"))]),
            remote_ids: BTreeMap::from([("plugin_1".into(), "claresia-dainese-prd-review".into())]),
            ..Default::default()
        }
    }

    fn activity(kind: &str, actor: Value) -> Value {
        json!({"id": "activity_00000000000000000007", "type": kind, "created_at": "2026-11-25T10:00:00+01:00",
               "actor": actor, "plugin_id": "plugin_1", "plugin_name": "claresia-dainese-prd-review"})
    }

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    #[test]
    fn our_own_writes_are_audit_events_and_others_are_drift() {
        let r = routing();
        let ours = json!({"type": "api_actor", "api_key_id": "apikey_ours"});
        let page = vec![activity("claude_plugin_created", ours.clone())];
        let keys = connector_keys(&page, &r);
        assert_eq!(keys, BTreeSet::from(["apikey_ours".to_owned()]));
        let Activity::Ours { event, drift } = normalize_activity(&page[0], &r, &keys, NOW) else {
            panic!("ours")
        };
        assert_eq!(drift, None);
        assert_eq!(event.status, "by_connector");
        assert_eq!(event.occurred_at, "2026-11-25T09:00:00.000Z");
        assert_eq!(event.skill_id, "prd-review");
        assert_eq!(event.actor_id.as_deref(), Some("apikey_ours"));

        let user = json!({"type": "user_actor", "user_id": "user_9", "email_address": "a@b.c"});
        let mut change = activity("plugin_installation_preference_updated", user);
        change.as_object_mut().unwrap().remove("plugin_id");
        change["installation_preference"] = json!("auto_install");
        let Activity::Ours { event, drift } = normalize_activity(&change, &r, &keys, NOW) else {
            panic!("ours by name")
        };
        let d = drift.unwrap();
        assert_eq!(
            (d.actor.as_str(), d.plugin_name.as_str()),
            ("user_actor user_9", "claresia-dainese-prd-review")
        );
        assert_eq!(event.status, "drift");
        assert_eq!(
            event.error_message.as_deref(),
            Some("organization installation preference auto_install")
        );

        // Another API key is drift once ours is known; before that, it cannot be told apart.
        let other = activity(
            "claude_plugin_deleted",
            json!({"type": "api_actor", "api_key_id": "apikey_x"}),
        );
        assert!(matches!(
            normalize_activity(&other, &r, &keys, NOW),
            Activity::Ours { drift: Some(_), .. }
        ));
        assert!(matches!(
            normalize_activity(&other, &r, &BTreeSet::new(), NOW),
            Activity::Ours { drift: None, .. }
        ));
    }

    #[test]
    fn foreign_and_unreadable_activities() {
        let r = routing();
        let keys = BTreeSet::new();
        let foreign = json!({"id": "activity_1", "type": "claude_plugin_created", "created_at": "2026-11-25T10:00:00Z",
                             "actor": {"type": "user_actor"}, "plugin_id": "plugin_other", "plugin_name": "team-tool"});
        assert_eq!(
            normalize_activity(&foreign, &r, &keys, NOW),
            Activity::NotOurs
        );
        for bad in [
            json!({"type": "x"}),
            json!({"id": "activity_2"}),
            json!({"id": "activity_3", "type": "x", "created_at": "yesterday"}),
        ] {
            assert!(
                matches!(
                    normalize_activity(&bad, &r, &keys, NOW),
                    Activity::Quarantined(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn usage_rows_are_ours_only_and_routed_by_skill_then_group() {
        let r = routing();
        let row = |name: &str, group: &str| {
            json!({"skill_name": name, "rbac_group_id": group, "rbac_group_name": "G",
            "invocation_count": 7, "distinct_user_count": 3, "estimated_overage_spend": "12.50",
            "attributed_list_price": "40.00", "currency": "USD"})
        };
        let u = normalize_usage(
            &row("claresia-dainese-prd-review", "rbac_group_eng"),
            "2026-11-24",
            &r,
            NOW,
        )
        .unwrap();
        assert_eq!(
            (
                u.tenant.as_str(),
                u.invocation_count,
                u.estimated_overage_spend.as_deref()
            ),
            ("dainese", Some(7), Some("12.50"))
        );
        let u = normalize_usage(
            &row("claresia-dainese-prd-review", "rbac_group_sales"),
            "2026-11-24",
            &r,
            NOW,
        )
        .unwrap();
        assert_eq!(u.tenant.as_str(), "dainese-sales");
        let u = normalize_usage(
            &row("claresia-dainese-eng-oncall", "rbac_group_sales"),
            "2026-11-24",
            &r,
            NOW,
        )
        .unwrap();
        assert_eq!(
            u.tenant.as_str(),
            "dainese-eng",
            "a sub-tenant's own skill stays its own"
        );
        assert_eq!(
            normalize_usage(&row("someone-elses-skill", "g"), "2026-11-24", &r, NOW),
            None
        );
    }

    #[test]
    fn complete_days_exclude_today() {
        assert_eq!(
            complete_days(datetime!(2026-11-25 00:30 UTC), 3),
            vec!["2026-11-24", "2026-11-23", "2026-11-22"]
        );
    }
}
