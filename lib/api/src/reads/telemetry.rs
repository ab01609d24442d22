//! `GET /tenants/{tenant}/telemetry?since=&limit=&cursor=`: a (sub-)tenant's stored events, newest first,
//! paginated with a cursor bound to the query it came from.

use claresia_domain::telemetry::checked_utc_millis;
use claresia_domain::TenantSlug;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::{ApiError, App};

impl App {
    /// `GET /tenants/{tenant}/telemetry?since=&limit=&cursor=`: newest first, paginated.
    pub async fn telemetry(&self, tenant: &TenantSlug, query: &str) -> Result<Value, ApiError> {
        let mut since = None;
        let mut limit = 50i32;
        let mut cursor = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "since" => {
                    let t =
                        OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                            .map_err(|e| {
                            ApiError::InvalidQuery(format!(
                                "since={v:?} is not an RFC 3339 time: {e}"
                            ))
                        })?;
                    since = Some(checked_utc_millis(t).ok_or_else(|| {
                        ApiError::InvalidQuery(format!(
                            "since={v:?} is past the end of the calendar in UTC"
                        ))
                    })?);
                }
                "limit" => {
                    limit = v
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (1..=500).contains(n))
                        .ok_or_else(|| {
                            ApiError::InvalidQuery(format!(
                                "limit={v:?} must be a whole number from 1 to 500"
                            ))
                        })?;
                }
                "cursor" => cursor = Some(v.into_owned()),
                other => {
                    return Err(ApiError::InvalidQuery(format!(
                        "unknown parameter {other:?}; use since, limit, cursor"
                    )))
                }
            }
        }
        let start = cursor
            .map(|c| TelemetryCursor::open(&c, tenant, since.as_deref()))
            .transpose()?;
        let (events, next) = self
            .telemetry
            .events_keyed(
                tenant,
                since.as_deref(),
                limit,
                start.as_ref().map(|(k, u)| (k.as_str(), u.as_str())),
            )
            .await?;
        // An event may carry 16 KB of error message: a full page is cut to stay under 4 MiB.
        let items = events
            .into_iter()
            .map(|(key, mut e)| {
                // Activities stored before `detail` existed carry it in `error_message` alone.
                if e.detail.is_none() && !e.event_type.starts_with("skill.") {
                    e.detail = e.error_message.clone();
                }
                (key, serde_json::json!(e))
            })
            .collect();
        let (events, next) = crate::paging::fit(items, next, crate::paging::MAX_PAGE_BYTES);
        Ok(serde_json::json!({
            "tenant": tenant,
            "events": events,
            "next_cursor": next.map(|key| TelemetryCursor::seal(tenant, since.as_deref(), key)),
        }))
    }
}

/// A telemetry page's `next_cursor`: where the page stopped, bound to the tenant and the `since` it was
/// read with, so a cursor from another query (or made up) is refused rather than answered wrongly.
#[derive(Serialize, serde::Deserialize)]
struct TelemetryCursor {
    t: String,
    s: Option<String>,
    k: String,
    u: String,
}

impl TelemetryCursor {
    fn seal(tenant: &TenantSlug, since: Option<&str>, (key, uid): (String, String)) -> String {
        let c = TelemetryCursor {
            t: tenant.to_string(),
            s: since.map(str::to_owned),
            k: key,
            u: uid,
        };
        base64_url_encode(&serde_json::to_string(&c).unwrap_or_default())
    }

    /// The position (event key, item key) to continue after, or 400 naming `cursor` and why.
    fn open(
        raw: &str,
        tenant: &TenantSlug,
        since: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let bad = |why: &str| {
            ApiError::InvalidQuery(format!(
                "cursor is not a next_cursor this API returned for this query ({why}); start again without it"
            ))
        };
        let c: TelemetryCursor = base64_url_decode(raw)
            .and_then(|text| serde_json::from_str(&text).ok())
            .ok_or_else(|| bad("unreadable"))?;
        if c.t != tenant.as_str() {
            return Err(bad("it belongs to another tenant"));
        }
        if c.s.as_deref() != since {
            return Err(bad("it was returned for another since"));
        }
        // An event key is "{RFC 3339 time}#{event id}", within `since` and DynamoDB's key size.
        let event_id = c.k.split_once('#').and_then(|(at, id)| {
            OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|_| id)
        });
        let well_formed = c.k.len() <= 1024
            && c.u.len() <= 1024
            && event_id.is_some_and(|id| !id.is_empty() && c.u.ends_with(&format!("#{id}")));
        if !well_formed || since.is_some_and(|s| c.k.as_str() < s) {
            return Err(bad("its position is not an event of this query"));
        }
        Ok((c.k, c.u))
    }
}

fn base64_url_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn base64_url_decode(s: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    String::from_utf8(bytes).ok()
}
