//! Claresia's reply footer. One template serves both the renderer and the transpiled SKILL.md, so what
//! Claude is told to write and what we render can never drift apart.

/// `{cost}` has two decimals, `{duration}` one; the Hub is the tenant's (sub-tenants share it).
pub const FOOTER_TEMPLATE: &str = "---\n*Claresia · {title} · ${cost} · {duration}s · [View record](https://hub.{tenant}.claresia.com/records/{record_id})*";

/// Fills `{key}` placeholders in one pass (a value containing `{cost}` is not expanded again); unknown
/// keys are left as they are.
pub fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        match after.find('}') {
            Some(close) => {
                let key = &after[1..close];
                match value(key) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&after[..=close]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The footer of one reply: `---` then the italic line, cost with two decimals, seconds with one.
pub fn render_footer(
    title: &str,
    cost_usd: f64,
    duration_secs: f64,
    tenant: &str,
    record_id: &str,
) -> String {
    fill(FOOTER_TEMPLATE, |k| match k {
        "title" => Some(title.to_owned()),
        "cost" => Some(format!("{cost_usd:.2}")),
        "duration" => Some(format!("{duration_secs:.1}")),
        "tenant" => Some(tenant.to_owned()),
        "record_id" => Some(record_id.to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_product_page_example_exactly() {
        assert_eq!(
            render_footer("Incident Postmortem", 0.04, 2.3, "dainese", "rec_abc123"),
            "---\n*Claresia · Incident Postmortem · $0.04 · 2.3s · [View record](https://hub.dainese.claresia.com/records/rec_abc123)*"
        );
    }

    #[test]
    fn rounds_cost_to_two_and_seconds_to_one_decimal() {
        let f = render_footer("T", 1.0 / 3.0, 12.345, "x", "r");
        assert!(f.contains("$0.33 · 12.3s"), "{f}");
        let f = render_footer("T", 0.0, 0.04, "x", "r");
        assert!(f.contains("$0.00 · 0.0s"), "{f}");
    }

    #[test]
    fn values_are_not_expanded_twice_and_unknown_keys_stay() {
        let f = render_footer("{cost}", 1.0, 1.0, "t", "r");
        assert!(f.contains("· {cost} ·"), "{f}");
        assert_eq!(
            fill("a {x} {y}", |k| (k == "x").then(|| "1".into())),
            "a 1 {y}"
        );
        assert_eq!(fill("open { end", |_| Some("!".into())), "open { end");
    }
}
