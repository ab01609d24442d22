//! Skill IR → Claude Skill JSON: a pure, deterministic function (same IR, same bytes, same content hash).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::footer::{fill, FOOTER_TEMPLATE};
use crate::skill_ir::{published_name, SkillIr};
use crate::tenant::TenantSlug;

pub const MANAGED_BY: &str = "claresia";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillFile {
    pub path: String,
    pub content: String,
}

/// What we POST/PUT to Anthropic. Field order is fixed, so serialization is byte-stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaudeSkill {
    pub name: String,
    pub display_title: String,
    pub description: String,
    pub files: Vec<SkillFile>,
    pub input_schema: Value,
    pub metadata: BTreeMap<String, String>,
}

impl ClaudeSkill {
    pub fn content_hash(&self) -> &str {
        self.metadata
            .get("content_hash")
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Transpiles `ir` for publication by `target` (the tenant or a sub-tenant) of `hub_tenant`'s Hub.
pub fn transpile(
    ir: &SkillIr,
    target: &TenantSlug,
    hub_tenant: &TenantSlug,
) -> Result<ClaudeSkill, String> {
    let name = published_name(target, &ir.id)?;
    let mut skill = ClaudeSkill {
        display_title: ir.title.clone(),
        description: ir.description.clone(),
        files: vec![SkillFile {
            path: format!("{name}/SKILL.md"),
            content: skill_md(ir, &name, hub_tenant),
        }],
        input_schema: input_schema(ir),
        metadata: BTreeMap::from([
            ("managed_by".to_owned(), MANAGED_BY.to_owned()),
            ("tenant".to_owned(), target.to_string()),
            ("hub_tenant".to_owned(), hub_tenant.to_string()),
            ("skill_id".to_owned(), ir.id.clone()),
            ("owner".to_owned(), ir.owner.clone()),
            (
                "picker_label".to_owned(),
                format!("@claresia.{}.{}", ir.owner, ir.id),
            ),
            ("ir_version".to_owned(), ir.ir_version.to_string()),
            ("version".to_owned(), ir.version.clone().unwrap_or_default()),
        ]),
        name,
    };
    let canonical = serde_json::to_vec(&skill).map_err(|e| e.to_string())?;
    let hash = hex::encode(Sha256::digest(&canonical));
    skill
        .metadata
        .insert("content_hash".to_owned(), format!("sha256:{hash}"));
    Ok(skill)
}

fn quote(v: &Value) -> String {
    format!("`{v}`")
}

fn skill_md(ir: &SkillIr, name: &str, hub_tenant: &TenantSlug) -> String {
    // JSON string syntax is a valid YAML double-quoted scalar, so any description round-trips.
    let description = Value::String(ir.description.clone()).to_string();
    let mut md = format!(
        "---\nname: {name}\ndescription: {description}\n---\n\n# {}\n\n{}\n",
        ir.title,
        ir.instructions.trim_end()
    );
    md.push_str("\n## Parameters\n\n");
    if ir.parameters.is_empty() {
        md.push_str("This skill takes no parameters.\n");
    } else {
        md.push_str(
            "Ask the user for every required parameter that is missing before you start.\n\n",
        );
        for p in &ir.parameters {
            let mut facts = vec![p.kind.as_str().to_owned()];
            if p.required {
                facts.push("required".into());
            }
            if let Some(vals) = &p.enum_values {
                facts.push(format!(
                    "one of {}",
                    vals.iter().map(quote).collect::<Vec<_>>().join(", ")
                ));
            }
            if let Some(d) = &p.default {
                facts.push(format!("default {}", quote(d)));
            }
            md.push_str(&format!("- `{}` ({})", p.name, facts.join(", ")));
            if let Some(desc) = &p.description {
                md.push_str(&format!(": {desc}"));
            }
            md.push('\n');
        }
    }
    if ir.output.format == "markdown" {
        md.push_str("\nWrite the reply in Markdown.\n");
    }
    if ir.output.footer {
        let footer = fill(FOOTER_TEMPLATE, |k| match k {
            "title" => Some(ir.title.clone()),
            "tenant" => Some(hub_tenant.to_string()),
            _ => None,
        });
        let cost_hint = ir
            .cost_hint_usd
            .map(|c| format!(" (typically about ${c:.2} for this skill)"))
            .unwrap_or_default();
        md.push_str(&format!(
            "\n## Reply footer\n\nEnd every reply with Claresia's footer, exactly in this shape, after the reply body:\n\n{footer}\n\nReplace `{{cost}}` with the run's cost in USD with two decimals{cost_hint}, `{{duration}}` with the run's duration in seconds with one decimal, and `{{record_id}}` with the Hub record id of this run.\n"
        ));
    }
    md
}

fn input_schema(ir: &SkillIr) -> Value {
    let mut props = Map::new();
    for p in &ir.parameters {
        let mut prop = Map::new();
        prop.insert("type".into(), json!(p.kind.as_str()));
        if let Some(d) = &p.description {
            prop.insert("description".into(), json!(d));
        }
        if let Some(vals) = &p.enum_values {
            prop.insert("enum".into(), json!(vals));
        }
        if let Some(d) = &p.default {
            prop.insert("default".into(), d.clone());
        }
        props.insert(p.name.clone(), Value::Object(prop));
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(props));
    let required: Vec<&str> = ir
        .parameters
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name.as_str())
        .collect();
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema.insert("additionalProperties".into(), json!(false));
    Value::Object(schema)
}
