//! One pagination convention for every list route: `?limit=` (1..=max) and `?cursor=` (an opaque
//! `next_cursor` the previous page returned); a page answers `next_cursor` (null on the last page).

use base64::Engine;
use claresia_domain::TenantSlug;
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// A list's `limit` and where to continue, parsed from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: i32,
    /// The last key of the previous page.
    pub after: Option<String>,
}

/// Parses `limit` and `cursor` for `list` (what the cursor is bound to, with the tenant): a cursor from
/// another list or tenant is refused rather than followed.
pub fn page(query: &str, hub: &TenantSlug, list: &str, max: i32) -> Result<Page, ApiError> {
    let mut page = Page {
        limit: 50.min(max),
        after: None,
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "limit" => {
                page.limit = v
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::InvalidQuery(format!(
                            "limit={v:?} must be a whole number from 1 to {max}"
                        ))
                    })?
            }
            "cursor" => page.after = Some(ListCursor::open(&v, hub, list)?),
            other => {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown parameter {other:?}; use limit, cursor"
                )))
            }
        }
    }
    Ok(page)
}

/// Where a `cursor` of `list` (bound to `hub`) says to continue; refused when it is another list's. The
/// position is any text (the caller checks it), unlike the slug-keyed lists'.
pub(crate) fn open_cursor(cursor: &str, hub: &TenantSlug, list: &str) -> Result<String, ApiError> {
    ListCursor::open_with(cursor, hub, list, |a| !a.is_empty() && a.len() <= 1024)
}

/// The `next_cursor` for a page that ended at `last`.
pub fn next_cursor(hub: &TenantSlug, list: &str, last: Option<String>) -> Option<String> {
    last.map(|after| ListCursor::seal(hub, list, &after))
}

/// A page's items stay under this many bytes of JSON, far inside Lambda's 6 MB response (an archetype
/// may be up to DynamoDB's 400 KB: a full page of them would not be).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Keeps the leading `(key, item)`s that fit in `budget` bytes (always at least one); when some are cut,
/// the page continues after the last one kept instead of after `next`.
pub fn fit<K>(
    items: Vec<(K, serde_json::Value)>,
    next: Option<K>,
    budget: usize,
) -> (Vec<serde_json::Value>, Option<K>) {
    let total = items.len();
    let mut used = 0;
    let mut kept = Vec::new();
    let mut last = None;
    for (key, item) in items {
        let size = item.to_string().len();
        if !kept.is_empty() && used + size > budget {
            break;
        }
        used += size;
        kept.push(item);
        last = Some(key);
    }
    let next = if kept.len() < total { last } else { next };
    (kept, next)
}

/// The last key of a page, bound to the tenant and the list it came from.
#[derive(Serialize, Deserialize)]
struct ListCursor {
    t: String,
    #[serde(default)]
    l: String,
    a: String,
}

impl ListCursor {
    fn seal(hub: &TenantSlug, list: &str, after: &str) -> String {
        let text = serde_json::to_string(&ListCursor {
            t: hub.to_string(),
            l: list.to_owned(),
            a: after.to_owned(),
        })
        .unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn open(raw: &str, hub: &TenantSlug, list: &str) -> Result<String, ApiError> {
        Self::open_with(raw, hub, list, is_key)
    }

    fn open_with(
        raw: &str,
        hub: &TenantSlug,
        list: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Result<String, ApiError> {
        let c: Option<ListCursor> = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match c {
            // Skill cursors from before lists were named carry no `l`.
            Some(c)
                if c.t == hub.as_str()
                    && (c.l == list || (c.l.is_empty() && list == "skills"))
                    && valid(&c.a) =>
            {
                Ok(c.a)
            }
            _ => Err(ApiError::InvalidQuery(
                "cursor is not a next_cursor this API returned for this list; start again without it"
                    .into(),
            )),
        }
    }
}

/// Every list is keyed by slugs (skill ids, archetype names, tenant slugs).
fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantSlug {
        TenantSlug::parse(s).unwrap()
    }

    #[test]
    fn a_cursor_round_trips_only_on_its_own_list_and_tenant() {
        let c = next_cursor(&t("acme"), "archetypes", Some("eng".into())).unwrap();
        let q = format!("cursor={c}&limit=5");
        assert_eq!(
            page(&q, &t("acme"), "archetypes", 100).unwrap(),
            Page {
                limit: 5,
                after: Some("eng".into())
            }
        );
        assert_eq!(
            page(&q, &t("other"), "archetypes", 100).unwrap_err().code(),
            "invalid_query"
        );
        assert_eq!(
            page(&q, &t("acme"), "skills", 100).unwrap_err().code(),
            "invalid_query"
        );
    }

    #[test]
    fn a_page_is_cut_to_its_byte_budget_and_continues_after_what_it_kept() {
        let items = |n: usize| -> Vec<(String, serde_json::Value)> {
            (0..n)
                .map(|i| (format!("a{i}"), serde_json::json!("x".repeat(100))))
                .collect()
        };
        // Everything fits: the store's own continuation stands.
        let (kept, next) = fit(items(3), Some("a2".into()), 10_000);
        assert_eq!((kept.len(), next.as_deref()), (3, Some("a2")));
        let (kept, next) = fit(items(3), None, 10_000);
        assert_eq!((kept.len(), next), (3, None));
        // 102 bytes each: two fit in 250, and the next page starts after the second.
        let (kept, next) = fit(items(5), None, 250);
        assert_eq!((kept.len(), next.as_deref()), (2, Some("a1")));
        // One item larger than the budget still makes progress.
        let (kept, next) = fit(items(2), None, 10);
        assert_eq!((kept.len(), next.as_deref()), (1, Some("a0")));
    }

    #[test]
    fn limits_and_unknown_parameters_are_refused_by_name() {
        assert_eq!(page("", &t("acme"), "skills", 100).unwrap().limit, 50);
        for q in ["limit=0", "limit=101", "limit=x", "page=2", "cursor=%%%"] {
            let e = page(q, &t("acme"), "skills", 100).unwrap_err();
            assert_eq!(e.code(), "invalid_query", "{q}");
        }
    }
}
