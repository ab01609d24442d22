//! Property: every valid Skill IR transpiles deterministically into a skill the simulator accepts.

use claresia_domain::skill_ir::validate;
use claresia_domain::transpile::transpile;
use claresia_domain::TenantSlug;
use proptest::prelude::*;
use serde_json::{json, Value};

fn slug(max_parts: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9]{1,6}", 1..=max_parts).prop_map(|p| p.join("-"))
}

/// Free text with the characters that break naive YAML and Markdown: quotes, colons, backslashes, `#`,
/// `---`, unicode; no `<`/`>` (the IR forbids them in descriptions).
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 :#'\"\\\\/,.!?{{}}é√-]{{1,{max}}}"))
        .unwrap()
        .prop_filter("not blank", |s| !s.trim().is_empty())
}

fn parameter(i: usize) -> impl Strategy<Value = Value> {
    (
        0..4usize,
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(text(40)),
    )
        .prop_flat_map(move |(kind, required, with_enum, desc)| {
            let name = format!("p{i}_x");
            let (ty, values): (&str, Vec<Value>) = match kind {
                0 => ("string", vec![json!("a"), json!("b:c"), json!("d\"e")]),
                1 => ("integer", vec![json!(1), json!(-2), json!(30)]),
                2 => ("number", vec![json!(0.5), json!(2), json!(-1.25)]),
                _ => ("boolean", vec![json!(true), json!(false)]),
            };
            (0..values.len(), any::<bool>()).prop_map(move |(pick, with_default)| {
                let mut p = json!({"name": name, "type": ty, "required": required});
                if let Some(d) = &desc {
                    p["description"] = json!(d);
                }
                if with_enum {
                    p["enum"] = json!(values);
                }
                if with_default {
                    p["default"] = values[pick].clone();
                }
                p
            })
        })
}

fn ir() -> impl Strategy<Value = Value> {
    (slug(3), slug(2), text(80), text(300), text(2000), 0..5usize, any::<bool>(), proptest::option::of(0.0f64..5.0))
        .prop_flat_map(|(id, owner, title, description, instructions, n, footer, cost)| {
            let params: Vec<_> = (0..n).map(parameter).collect();
            params.prop_map(move |parameters| {
                let mut doc = json!({
                    "ir_version": 1, "id": id, "owner": owner, "title": title.trim(),
                    "description": description, "instructions": format!("{instructions}\n---\n# not front matter\n"),
                    "parameters": parameters, "output": {"format": "markdown", "footer": footer},
                    "tags": ["generated"], "version": "1"
                });
                if let Some(c) = cost {
                    doc["cost_hint_usd"] = json!(c);
                }
                doc
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_valid_ir_transpiles_into_a_skill_the_simulator_accepts(
        doc in ir(),
        tenant in prop_oneof![Just("dainese"), Just("dainese-eng"), Just("a1")],
    ) {
        let tenant = TenantSlug::parse(tenant).unwrap();
        let id = doc["id"].as_str().unwrap().to_owned();
        // Names Claude reserves are rejected by validation, as they must be.
        prop_assume!(!format!("claresia-{tenant}-{id}").contains("claude"));
        let ir = validate(&doc, &tenant, &id).map_err(|p| TestCaseError::fail(format!("{p:?}")))?;
        let skill = transpile(&ir, &tenant, &tenant).map_err(TestCaseError::fail)?;
        let again = transpile(&ir, &tenant, &tenant).unwrap();
        prop_assert_eq!(serde_json::to_vec(&skill).unwrap(), serde_json::to_vec(&again).unwrap());
        let body = skill.to_json();
        let accepted = anthropic_sim::validate_skill(body.as_object().unwrap());
        prop_assert!(accepted.is_ok(), "simulator refused {}: {:?}", skill.name, accepted);
    }
}
