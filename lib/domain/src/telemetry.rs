//! Audit event → `fn_telemetry_event`, exactly as the spec's table says. Pure: who published a skill (the
//! ledger) and which (sub-)tenant a workspace maps to are passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::tenant::TenantSlug;

/// One normalized skill run, as stored in `telemetry_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    pub event_id: String,
    pub tenant: TenantSlug,
    pub skill_id: String,
    pub event_type: String,
    pub status: String,
    pub occurred_at: String,
    pub ingested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// On `skill.failed`. Deprecated for enterprise lifecycle activities, where it repeats `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Enterprise lifecycle activities: what changed (e.g. "organization installation preference
    /// auto_install"), for drift the change made outside the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A skill Claresia did not publish for this tenant.
    NotOurs,
    /// An event type other than `skill.invoked` / `skill.failed`.
    UnknownType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Event(Box<TelemetryEvent>),
    Skipped(SkipReason),
    /// Could not be parsed: stored raw with the reason, never dropped in silence.
    Quarantined(String),
}

/// What the poller knows about a tenant: the ledger (published name → (target, skill id), and remote id →
/// published name) and the mappings (workspace or RBAC group → sub-tenant).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub hub: Option<TenantSlug>,
    pub published: BTreeMap<String, (TenantSlug, String)>,
    pub workspaces: BTreeMap<String, TenantSlug>,
    pub groups: BTreeMap<String, TenantSlug>,
    pub remote_ids: BTreeMap<String, String>,
}

/// Longest stored error message, in bytes: far inside DynamoDB's 400 KB item, long enough for a stack trace.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest short text field (error type), in bytes.
pub const MAX_SHORT_TEXT_BYTES: usize = 1024;
/// Longest identifier (event id, workspace id, actor id) we store; anything longer is not one Anthropic
/// issues, so the event is quarantined rather than stored under a cut (and so colliding) id.
pub const MAX_ID_BYTES: usize = 256;
/// Longest raw JSON kept for a quarantined event, and longest reason.
pub const MAX_QUARANTINED_RAW_BYTES: usize = 64 * 1024;
pub const MAX_REASON_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, with a marker saying how much was cut.
pub fn truncate_marked(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let marker_room = 48;
    let mut end = max.saturating_sub(marker_room);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated {} bytes]", &text[..end], text.len() - end)
}

/// RFC 3339 in UTC with milliseconds, so stored timestamps sort as text. A time whose UTC falls outside
/// the calendar's ±9999 years (`9999-12-31T23:59:59-23:59` is valid RFC 3339) is clamped to its end.
pub fn utc_millis(t: OffsetDateTime) -> String {
    checked_utc_millis(t).unwrap_or_else(|| {
        if t.year() > 0 {
            "9999-12-31T23:59:59.999Z".into()
        } else {
            "-9999-01-01T00:00:00.000Z".into()
        }
    })
}

/// [`utc_millis`], or `None` when the time's UTC is outside the calendar.
pub fn checked_utc_millis(t: OffsetDateTime) -> Option<String> {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.checked_to_offset(time::UtcOffset::UTC)?
        .format(FORMAT)
        .ok()
}

fn opt_u64(v: &Value, k: &str) -> Result<Option<u64>, String> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("details.{k} is not a non-negative integer")),
    }
}

pub fn normalize(raw: &Value, routing: &Routing, now: OffsetDateTime) -> Normalized {
    match normalize_inner(raw, routing, now) {
        Ok(n) => n,
        Err(reason) => Normalized::Quarantined(reason),
    }
}

fn normalize_inner(
    raw: &Value,
    routing: &Routing,
    now: OffsetDateTime,
) -> Result<Normalized, String> {
    let obj = raw.as_object().ok_or("the event is not a JSON object")?;
    let event_id = obj
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("the event has no id")?;
    id_field("id", Some(event_id))?;
    let event_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the event has no type")?;
    let status = match event_type {
        "skill.invoked" => "ok",
        "skill.failed" => "failed",
        _ => return Ok(Normalized::Skipped(SkipReason::UnknownType)),
    };
    let created = obj
        .get("created_at")
        .and_then(Value::as_str)
        .ok_or("the event has no created_at")?;
    let occurred = OffsetDateTime::parse(created, &Rfc3339)
        .map_err(|e| format!("created_at {created:?} is not RFC 3339: {e}"))?;
    let name = obj
        .get("skill")
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .ok_or("the event has no skill.name")?;
    // Resolved from what we published, never by the shortest prefix.
    let Some((_, skill_id)) = routing.published.get(name) else {
        return Ok(Normalized::Skipped(SkipReason::NotOurs));
    };
    let hub = routing.hub.clone().ok_or("no hub tenant to route to")?;
    let workspace_id = obj
        .get("workspace_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let tenant = workspace_id
        .as_deref()
        .and_then(|w| routing.workspaces.get(w).cloned())
        .unwrap_or_else(|| hub.clone());
    let actor = obj.get("actor");
    let actor_id = actor
        .and_then(|a| a.get("user_id").or_else(|| a.get("api_key_id")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    id_field("workspace_id", workspace_id.as_deref())?;
    id_field("actor id", actor_id.as_deref())?;
    let details = details_of(obj.get("details"), status == "failed", &hub)?;
    Ok(Normalized::Event(Box::new(TelemetryEvent {
        event_id: event_id.to_owned(),
        tenant,
        skill_id: skill_id.clone(),
        event_type: event_type.to_owned(),
        status: status.to_owned(),
        occurred_at: utc_millis(occurred),
        ingested_at: utc_millis(now),
        workspace_id,
        actor_id,
        duration_ms: details.duration_ms,
        cost_usd: details.cost_usd,
        input_tokens: details.input_tokens,
        output_tokens: details.output_tokens,
        error_type: details.error_type,
        error_message: details.error_message,
        detail: None,
        record_url: details.record_url,
    })))
}

/// An id too long to key a stored item is refused (the event is quarantined, not cut).
fn id_field(name: &str, v: Option<&str>) -> Result<(), String> {
    match v {
        Some(v) if v.len() > MAX_ID_BYTES => Err(format!(
            "{name} is {} bytes long; ids longer than {MAX_ID_BYTES} are not stored",
            v.len()
        )),
        _ => Ok(()),
    }
}

/// What a run event's `details` say: cost, tokens, duration, a failure's type and message (bounded), and
/// the Claresia record it produced (a link into the Hub, only for a well-formed id).
struct Details {
    duration_ms: Option<u64>,
    cost_usd: Option<f64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    error_type: Option<String>,
    error_message: Option<String>,
    record_url: Option<String>,
}

fn details_of(details: Option<&Value>, failed: bool, hub: &TenantSlug) -> Result<Details, String> {
    let empty = Value::Null;
    let details = details.unwrap_or(&empty);
    if !(details.is_object() || details.is_null()) {
        return Err("details is not an object".into());
    }
    let cost_usd = match details.get("cost_usd") {
        None | Some(Value::Null) => None,
        Some(c) => Some(c.as_f64().ok_or("details.cost_usd is not a number")?),
    };
    let (error_type, error_message) = if failed {
        let err = details.get("error");
        (
            err.and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                .map(|t| truncate_marked(t, MAX_SHORT_TEXT_BYTES)),
            err.and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(|m| truncate_marked(m, MAX_ERROR_MESSAGE_BYTES)),
        )
    } else {
        (None, None)
    };
    let record_url = details
        .get("record_id")
        .and_then(Value::as_str)
        .filter(|r| {
            !r.is_empty()
                && r.len() <= MAX_ID_BYTES
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .map(|r| format!("https://hub.{hub}.claresia.com/records/{r}"));
    Ok(Details {
        duration_ms: opt_u64(details, "duration_ms")?,
        cost_usd,
        input_tokens: opt_u64(details, "input_tokens")?,
        output_tokens: opt_u64(details, "output_tokens")?,
        error_type,
        error_message,
        record_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_past_the_calendar_in_utc_is_clamped_not_a_panic() {
        let rfc = &time::format_description::well_known::Rfc3339;
        let late = OffsetDateTime::parse("9999-12-31T23:59:59-23:59", rfc).unwrap();
        assert_eq!(checked_utc_millis(late), None);
        assert_eq!(utc_millis(late), "9999-12-31T23:59:59.999Z");
        let early = OffsetDateTime::parse("0000-01-01T00:00:00+23:59", rfc).unwrap();
        assert_eq!(
            checked_utc_millis(early).as_deref(),
            Some("-0001-12-31T00:01:00.000Z")
        );
    }
    use serde_json::json;
    use time::macros::datetime;

    fn t(s: &str) -> TenantSlug {
        TenantSlug::parse(s).unwrap()
    }

    fn routing() -> Routing {
        Routing {
            hub: Some(t("dainese")),
            published: BTreeMap::from([
                (
                    "claresia-dainese-incident-postmortem".into(),
                    (t("dainese"), "incident-postmortem".into()),
                ),
                (
                    "claresia-dainese-eng-incident-postmortem".into(),
                    (t("dainese-eng"), "incident-postmortem".into()),
                ),
            ]),
            workspaces: BTreeMap::from([("wrkspc_eng".into(), t("dainese-eng"))]),
            ..Default::default()
        }
    }

    fn spec_event() -> Value {
        json!({
          "id": "auditevt_01JX3M7ZC4K8Q2W5N6P9R0T1V2", "type": "skill.invoked",
          "created_at": "2026-11-22T10:15:02.120Z",
          "organization_id": "12345678-1234-5678-1234-567812345678",
          "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
          "actor": {"type": "user_actor", "user_id": "user_01TuVwXyZaBcDeFgH2JkLmN4", "email_address": "ana@dainese.example"},
          "skill": {"id": "skill_01J", "name": "claresia-dainese-incident-postmortem", "version": "1759178010641129"},
          "details": {"duration_ms": 2300, "cost_usd": 0.04, "input_tokens": 1840, "output_tokens": 912, "record_id": "rec_abc123"},
          "some_future_field": {"x": 1}
        })
    }

    fn event(v: &Value) -> TelemetryEvent {
        match normalize(v, &routing(), datetime!(2026-11-22 10:16:00 UTC)) {
            Normalized::Event(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn normalizes_the_spec_example() {
        let e = event(&spec_event());
        assert_eq!(e.event_id, "auditevt_01JX3M7ZC4K8Q2W5N6P9R0T1V2");
        assert_eq!(e.tenant.as_str(), "dainese");
        assert_eq!(e.skill_id, "incident-postmortem");
        assert_eq!(
            (e.event_type.as_str(), e.status.as_str()),
            ("skill.invoked", "ok")
        );
        assert_eq!(e.occurred_at, "2026-11-22T10:15:02.120Z");
        assert_eq!(e.ingested_at, "2026-11-22T10:16:00.000Z");
        assert_eq!(e.actor_id.as_deref(), Some("user_01TuVwXyZaBcDeFgH2JkLmN4"));
        assert_eq!(
            (e.duration_ms, e.cost_usd, e.input_tokens, e.output_tokens),
            (Some(2300), Some(0.04), Some(1840), Some(912))
        );
        assert_eq!(
            e.record_url.as_deref(),
            Some("https://hub.dainese.claresia.com/records/rec_abc123")
        );
        assert_eq!(e.error_type, None);
        // Never the e-mail address.
        assert!(!serde_json::to_string(&e)
            .unwrap()
            .contains("ana@dainese.example"));
    }

    #[test]
    fn absent_stays_absent_and_failures_carry_the_error() {
        let mut v = spec_event();
        v["type"] = json!("skill.failed");
        v["details"] =
            json!({"duration_ms": 900, "error": {"type": "tool_error", "message": "boom"}});
        v["actor"] = json!({"type": "api_actor", "api_key_id": "apikey_01"});
        let e = event(&v);
        assert_eq!(e.status, "failed");
        assert_eq!(
            (e.error_type.as_deref(), e.error_message.as_deref()),
            (Some("tool_error"), Some("boom"))
        );
        assert_eq!(
            (e.cost_usd, e.input_tokens, e.record_url.clone()),
            (None, None, None)
        );
        assert_eq!(e.actor_id.as_deref(), Some("apikey_01"));
        let json = serde_json::to_value(&e).unwrap();
        assert!(json.get("cost_usd").is_none(), "absent is not 0: {json}");
    }

    #[test]
    fn routes_to_the_sub_tenant_of_the_workspace_and_resolves_by_ledger() {
        let mut v = spec_event();
        v["workspace_id"] = json!("wrkspc_eng");
        v["skill"]["name"] = json!("claresia-dainese-eng-incident-postmortem");
        let e = event(&v);
        assert_eq!(e.tenant.as_str(), "dainese-eng");
        assert_eq!(
            e.skill_id, "incident-postmortem",
            "not 'eng-incident-postmortem' from the shortest prefix"
        );
        assert!(e
            .record_url
            .unwrap()
            .starts_with("https://hub.dainese.claresia.com/"));
    }

    #[test]
    fn skips_and_quarantines_with_reasons() {
        let now = datetime!(2026-11-22 10:16:00 UTC);
        let mut v = spec_event();
        v["skill"]["name"] = json!("claresia-dainese-handmade");
        assert_eq!(
            normalize(&v, &routing(), now),
            Normalized::Skipped(SkipReason::NotOurs)
        );
        let mut v = spec_event();
        v["type"] = json!("skill.created");
        assert_eq!(
            normalize(&v, &routing(), now),
            Normalized::Skipped(SkipReason::UnknownType)
        );
        for (field, bad) in [
            ("created_at", json!("yesterday")),
            ("id", json!(null)),
            ("skill", json!(null)),
        ] {
            let mut v = spec_event();
            v[field] = bad;
            assert!(
                matches!(normalize(&v, &routing(), now), Normalized::Quarantined(_)),
                "{field}"
            );
        }
        let mut v = spec_event();
        v["details"]["duration_ms"] = json!("slow");
        match normalize(&v, &routing(), now) {
            Normalized::Quarantined(r) => assert!(r.contains("duration_ms")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            normalize(&json!([1]), &routing(), now),
            Normalized::Quarantined(_)
        ));
    }

    #[test]
    fn every_text_field_is_bounded_and_oversized_ids_are_quarantined() {
        let now = datetime!(2026-11-01 12:00 UTC);
        let mut raw = spec_event();
        raw["type"] = json!("skill.failed");
        raw["details"]["error"] = json!({"type": "x".repeat(5000), "message": "é".repeat(300_000)});
        let e = event(&raw);
        let msg = e.error_message.unwrap();
        assert!(msg.len() <= MAX_ERROR_MESSAGE_BYTES, "{}", msg.len());
        assert!(msg.ends_with("bytes]") && msg.contains("…[truncated "));
        assert!(e.error_type.unwrap().len() <= MAX_SHORT_TEXT_BYTES);
        let whole = serde_json::to_string(&e.event_id).unwrap().len() + msg.len();
        assert!(whole < 400 * 1024);

        for (field, value) in [
            ("/id", json!("e".repeat(MAX_ID_BYTES + 1))),
            ("/workspace_id", json!("w".repeat(MAX_ID_BYTES + 1))),
            ("/actor/user_id", json!("u".repeat(MAX_ID_BYTES + 1))),
        ] {
            let mut raw = spec_event();
            *raw.pointer_mut(field).unwrap() = value;
            assert!(
                matches!(normalize(&raw, &routing(), now), Normalized::Quarantined(r) if r.contains("bytes long")),
                "{field}"
            );
        }
        // A record id too long for a URL simply gives no URL.
        let mut raw = spec_event();
        raw["details"]["record_id"] = json!("r".repeat(MAX_ID_BYTES + 1));
        assert_eq!(event(&raw).record_url, None);
    }

    #[test]
    fn truncation_respects_characters_and_says_how_much() {
        assert_eq!(truncate_marked("short", 10), "short");
        let cut = truncate_marked(&"é".repeat(100), 60);
        assert!(cut.len() <= 60 && cut.starts_with('é'), "{cut}");
        assert!(cut.ends_with("bytes]"));
    }

    #[test]
    fn timestamps_are_utc_with_millis() {
        assert_eq!(
            utc_millis(datetime!(2026-11-22 12:15:02.120999 +02:00)),
            "2026-11-22T10:15:02.120Z"
        );
        assert_eq!(
            utc_millis(datetime!(2026-11-22 10:15:02 UTC)),
            "2026-11-22T10:15:02.000Z"
        );
    }
}
