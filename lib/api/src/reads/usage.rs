//! `GET /tenants/{tenant}/usage?from=&to=&limit=&cursor=`: the enterprise surface's daily usage rows of a
//! (sub-)tenant's skills (per skill, day and RBAC group, as the Analytics API last reported them), oldest
//! first and paginated, with totals per skill over the page's rows (a request reads one page, never the
//! whole range: the totals of a range add up over its pages).

use std::collections::BTreeMap;

use claresia_domain::enterprise_feed::{cents, UsageRow};
use claresia_domain::TenantSlug;
use serde::Serialize;
use serde_json::{json, Value};
use time::{Date, OffsetDateTime};

use crate::{paging, ApiError, App};

/// The longest range one request may name.
const MAX_RANGE_DAYS: i64 = 92;
/// Default range: the 30 complete days up to yesterday.
const DEFAULT_RANGE_DAYS: i64 = 30;
const MAX_LIMIT: i32 = 1000;

/// A skill's use over the range.
#[derive(Debug, Default, Serialize)]
pub struct UsageTotal {
    pub skill_id: String,
    pub skill_name: String,
    pub invocation_count: u64,
    /// Summed over days and groups: a person active on two days counts twice.
    pub user_days: u64,
    /// In cents, summed over the rows that reported it (null when none did).
    pub estimated_overage_spend: Option<String>,
    pub attributed_list_price: Option<String>,
    pub days_with_use: u32,
}

fn date(name: &str, v: &str) -> Result<Date, ApiError> {
    Date::parse(
        v,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| ApiError::InvalidQuery(format!("{name}={v:?} must be a date YYYY-MM-DD")))
}

fn add_cents(acc: &mut Option<f64>, v: &Option<String>) {
    if let Some(x) = v.as_deref().and_then(|s| s.parse::<f64>().ok()) {
        *acc = Some(acc.unwrap_or(0.0) + x);
    }
}

/// A skill's total being summed: the total, its spend and price in cents, the days it was used.
type Sum<'a> = (UsageTotal, Option<f64>, Option<f64>, Vec<&'a str>);

fn totals(rows: &[UsageRow]) -> Vec<UsageTotal> {
    let mut by_skill: BTreeMap<&str, Sum<'_>> = BTreeMap::new();
    for r in rows {
        let entry = by_skill.entry(&r.skill_name).or_insert_with(|| {
            let t = UsageTotal {
                skill_id: r.skill_id.clone(),
                skill_name: r.skill_name.clone(),
                ..UsageTotal::default()
            };
            (t, None, None, Vec::new())
        });
        entry.0.invocation_count += r.invocation_count.unwrap_or(0);
        entry.0.user_days += r.distinct_user_count.unwrap_or(0);
        add_cents(&mut entry.1, &r.estimated_overage_spend);
        add_cents(&mut entry.2, &r.attributed_list_price);
        if r.invocation_count.unwrap_or(0) > 0 && !entry.3.contains(&r.date.as_str()) {
            entry.3.push(&r.date);
        }
    }
    by_skill
        .into_values()
        .map(|(mut t, spend, price, days)| {
            t.estimated_overage_spend = spend.map(|c| format!("{c:.2}"));
            t.attributed_list_price = price.map(|c| format!("{c:.2}"));
            t.days_with_use = days.len() as u32;
            t
        })
        .collect()
}

impl App {
    pub async fn usage(&self, tenant: &TenantSlug, query: &str) -> Result<Value, ApiError> {
        let yesterday = OffsetDateTime::now_utc().date() - time::Duration::days(1);
        let (mut from, mut to, mut limit, mut cursor) = (None, None, 100, None);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "from" => from = Some(date("from", &v)?),
                "to" => to = Some(date("to", &v)?),
                "limit" => {
                    limit = v
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::InvalidQuery(format!(
                                "limit={v:?} must be a whole number from 1 to {MAX_LIMIT}"
                            ))
                        })?
                }
                "cursor" => cursor = Some(v.into_owned()),
                other => {
                    return Err(ApiError::InvalidQuery(format!(
                        "unknown parameter {other:?}; use from, to, limit, cursor"
                    )))
                }
            }
        }
        let to = to.unwrap_or(yesterday);
        // `Date - Duration` panics before the calendar's start (`to=-9999-01-05` parses): refuse instead.
        let from = match from {
            Some(f) => f,
            None => to
                .checked_sub(time::Duration::days(DEFAULT_RANGE_DAYS - 1))
                .ok_or_else(|| ApiError::InvalidQuery(format!("to={to} is out of range")))?,
        };
        if from > to {
            return Err(ApiError::InvalidQuery(format!(
                "from={from} is after to={to}"
            )));
        }
        if (to - from).whole_days() >= MAX_RANGE_DAYS {
            return Err(ApiError::InvalidQuery(format!(
                "from={from} to={to} spans more than {MAX_RANGE_DAYS} days; ask for a shorter range"
            )));
        }
        let (from, to) = (from.to_string(), to.to_string());
        // A cursor continues only the range it was returned for.
        let list = format!("usage:{from}:{to}");
        let start = cursor
            .map(|c| paging::open_cursor(&c, tenant, &list))
            .transpose()?
            .map(|after| usage_position(&after, &from, &to))
            .transpose()?;
        let (rows, next) = self
            .telemetry
            .usage(
                tenant,
                &from,
                &to,
                Some(limit),
                start.as_ref().map(|(k, u)| (k.as_str(), u.as_str())),
            )
            .await?;
        // Rows stored before amounts were normalized read like new ones.
        let rows: Vec<UsageRow> = rows
            .into_iter()
            .map(|mut r| {
                r.estimated_overage_spend = r.estimated_overage_spend.as_deref().map(cents);
                r.attributed_list_price = r.attributed_list_price.as_deref().map(cents);
                r
            })
            .collect();
        Ok(json!({
            "tenant": tenant,
            "from": from,
            "to": to,
            "totals": totals(&rows),
            "rows": rows,
            "next_cursor": paging::next_cursor(tenant, &list, next.map(|(k, u)| format!("{k}\u{1f}{u}"))),
        }))
    }
}

/// Where a usage cursor continues, `(event_key, event_uid)`: only a position the page's query can start
/// after; anything else is the client's mistake (400). Sent on, DynamoDB would answer a
/// ValidationException (a start key outside `BETWEEN from AND "{to}$"`, or an empty key).
fn usage_position(after: &str, from: &str, to: &str) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::InvalidQuery(
            "cursor is not a next_cursor this API returned for this range; start again without it"
                .into(),
        )
    };
    let (k, u) = after.split_once('\u{1f}').ok_or_else(bad)?;
    // The query's own key condition, compared as bytes like DynamoDB; item keys are `usage#{hub}#…`.
    let upper = format!("{to}$");
    if k < from || k > upper.as_str() || !k.contains('#') || u.len() <= "usage#".len() {
        return Err(bad());
    }
    if !u.starts_with("usage#") {
        return Err(bad());
    }
    Ok((k.to_owned(), u.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_cursor_must_be_a_position_of_its_range() {
        let ok = "2026-11-23#claresia-d-x#g\u{1f}usage#d#claresia-d-x#2026-11-23#g";
        assert!(usage_position(ok, "2026-11-22", "2026-11-24").is_ok());
        for bad in [
            "nothing",
            "\u{1f}usage#x",
            "2026-11-23#a\u{1f}",
            "2027-01-01#a\u{1f}usage#x",
            "2026-11-21#a\u{1f}usage#x",
            "2026-11-24%\u{1f}usage#x",
            "2026-11-23#a\u{1f}other",
        ] {
            assert_eq!(
                usage_position(bad, "2026-11-22", "2026-11-24")
                    .unwrap_err()
                    .code(),
                "invalid_query",
                "{bad:?}"
            );
        }
    }

    fn row(skill: &str, date: &str, n: u64, spend: Option<&str>) -> UsageRow {
        UsageRow {
            tenant: TenantSlug::parse("dainese").unwrap(),
            skill_id: skill.into(),
            skill_name: format!("claresia-dainese-{skill}"),
            date: date.into(),
            rbac_group_id: "g".into(),
            rbac_group_name: None,
            invocation_count: Some(n),
            distinct_user_count: Some(2),
            estimated_overage_spend: spend.map(str::to_owned),
            attributed_list_price: None,
            currency: Some("USD".into()),
            polled_at: "x".into(),
        }
    }

    #[test]
    fn totals_sum_per_skill_over_days_and_groups() {
        let t = totals(&[
            row("a", "2026-11-22", 3, Some("1.25")),
            row("a", "2026-11-22", 2, None),
            row("a", "2026-11-23", 0, Some("0.50")),
            row("b", "2026-11-23", 1, None),
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].invocation_count, t[0].user_days, t[0].days_with_use),
            (5, 6, 1)
        );
        assert_eq!(t[0].estimated_overage_spend.as_deref(), Some("1.75"));
        assert_eq!(t[1].estimated_overage_spend, None);
    }
}
