//! Skill IR v1: Claresia's description of a skill. Validation reports every problem at once, each with its
//! JSON path, and rejects unknown fields (a typo must not be silently dropped).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tenant::TenantSlug;

pub const MAX_SKILL_NAME: usize = 64;
const MAX_INSTRUCTIONS: usize = 100 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillIr {
    pub ir_version: u32,
    pub id: String,
    pub owner: String,
    pub title: String,
    pub description: String,
    pub instructions: String,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub output: Output,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_hint_usd: Option<f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Number => v.is_number(),
            ParamType::Boolean => v.is_boolean(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default = "markdown")]
    pub format: String,
    #[serde(default = "yes")]
    pub footer: bool,
}

fn markdown() -> String {
    "markdown".into()
}
fn yes() -> bool {
    true
}

impl Default for Output {
    fn default() -> Self {
        Output {
            format: markdown(),
            footer: true,
        }
    }
}

/// One thing wrong with a document, at a JSON path (`$.parameters[1].default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// `[a-z0-9-]`, 1..=max, no leading, trailing or double hyphen.
pub fn check_slug(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.chars().count() > max {
        return Err(format!("must be 1–{max} characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("may only contain a-z, 0-9 and '-' (found {c:?})"));
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err("must not start or end with '-' or contain '--'".into());
    }
    Ok(())
}

/// The Claude skill name a (sub-)tenant publishes a skill under, or why it cannot have one.
pub fn published_name(tenant: &TenantSlug, skill_id: &str) -> Result<String, String> {
    let name = format!("claresia-{tenant}-{skill_id}");
    if name.len() > MAX_SKILL_NAME {
        return Err(format!(
            "the published name {name} would be {} characters; Claude allows {MAX_SKILL_NAME} (shorten the skill id or the tenant slug)",
            name.len()
        ));
    }
    for word in ["anthropic", "claude"] {
        if name.contains(word) {
            return Err(format!(
                "the published name {name} would contain \"{word}\", which Claude reserves; choose another skill id"
            ));
        }
    }
    Ok(name)
}

const TOP_FIELDS: &[&str] = &[
    "ir_version",
    "id",
    "owner",
    "title",
    "description",
    "instructions",
    "parameters",
    "output",
    "cost_hint_usd",
    "tags",
    "version",
];
const PARAM_FIELDS: &[&str] = &["name", "type", "required", "description", "enum", "default"];
const OUTPUT_FIELDS: &[&str] = &["format", "footer"];

fn unknown_fields(obj: &Map<String, Value>, allowed: &[&str], at: &str, out: &mut Vec<Problem>) {
    for k in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
        out.push(problem(
            format!("{at}.{k}"),
            format!("unknown field; allowed: {}", allowed.join(", ")),
        ));
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, k: &str, out: &mut Vec<Problem>) -> Option<&'a str> {
    match obj.get(k) {
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            out.push(problem(format!("$.{k}"), "must be a string"));
            None
        }
        None => {
            out.push(problem(format!("$.{k}"), "is required"));
            None
        }
    }
}

fn is_param_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates a Skill IR document for `tenant` at the URL's `path_id`; every problem is reported at once.
pub fn validate(doc: &Value, tenant: &TenantSlug, path_id: &str) -> Result<SkillIr, Vec<Problem>> {
    let mut out = Vec::new();
    let Some(obj) = doc.as_object() else {
        return Err(vec![problem(
            "$",
            "a Skill IR document must be a JSON object",
        )]);
    };
    unknown_fields(obj, TOP_FIELDS, "$", &mut out);
    check_identity(obj, tenant, path_id, &mut out);
    check_texts(obj, &mut out);
    check_shape(obj, &mut out);
    if !out.is_empty() {
        return Err(out);
    }
    serde_json::from_value(doc.clone()).map_err(|e| vec![problem("$", e.to_string())])
}

/// `ir_version`, and the `id` (the URL's, publishable for the tenant) and `owner` slugs.
fn check_identity(
    obj: &serde_json::Map<String, Value>,
    tenant: &TenantSlug,
    path_id: &str,
    out: &mut Vec<Problem>,
) {
    match obj.get("ir_version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => out.push(problem("$.ir_version", "must be 1 (the only IR version)")),
        None => out.push(problem("$.ir_version", "is required")),
    }
    if let Some(id) = req_str(obj, "id", out) {
        match check_slug(id, 40) {
            Err(e) => out.push(problem("$.id", e)),
            Ok(()) => {
                if id != path_id {
                    out.push(problem(
                        "$.id",
                        format!("is {id:?} but the URL names skill {path_id:?}"),
                    ));
                }
                if let Err(e) = published_name(tenant, id) {
                    out.push(problem("$.id", e));
                }
            }
        }
    }
    if let Some(owner) = req_str(obj, "owner", out) {
        if let Err(e) = check_slug(owner, 40) {
            out.push(problem("$.owner", e));
        }
    }
}

/// `title`, `description` and `instructions`: present, within their lengths.
fn check_texts(obj: &serde_json::Map<String, Value>, out: &mut Vec<Problem>) {
    if let Some(t) = req_str(obj, "title", out) {
        let n = t.chars().count();
        if n == 0 || n > 80 || t.trim().is_empty() {
            out.push(problem("$.title", "must be 1–80 characters"));
        }
        if t.contains('\n') {
            out.push(problem("$.title", "must be a single line"));
        }
    }
    if let Some(d) = req_str(obj, "description", out) {
        let n = d.chars().count();
        if n == 0 || n > 1024 || d.trim().is_empty() {
            out.push(problem("$.description", "must be 1–1024 characters"));
        }
        if d.contains('<') || d.contains('>') {
            out.push(problem("$.description", "must not contain '<' or '>'"));
        }
    }
    if let Some(i) = req_str(obj, "instructions", out) {
        if i.trim().is_empty() {
            out.push(problem("$.instructions", "must not be empty"));
        }
        if i.len() > MAX_INSTRUCTIONS {
            out.push(problem(
                "$.instructions",
                format!("is {} bytes; the limit is 100 KiB", i.len()),
            ));
        }
    }
}

/// The optional parts: `parameters`, `output`, `cost_hint_usd`, `tags`, `version`.
fn check_shape(obj: &serde_json::Map<String, Value>, out: &mut Vec<Problem>) {
    match obj.get("parameters") {
        None => {}
        Some(Value::Array(params)) => {
            let mut seen = BTreeSet::new();
            for (i, p) in params.iter().enumerate() {
                validate_param(p, &format!("$.parameters[{i}]"), &mut seen, out);
            }
        }
        Some(_) => out.push(problem("$.parameters", "must be an array")),
    }
    match obj.get("output") {
        None => {}
        Some(Value::Object(o)) => {
            unknown_fields(o, OUTPUT_FIELDS, "$.output", out);
            match o.get("format") {
                None => {}
                Some(Value::String(f)) if f == "markdown" || f == "text" => {}
                Some(_) => out.push(problem(
                    "$.output.format",
                    "must be \"markdown\" or \"text\"",
                )),
            }
            if o.get("footer").is_some_and(|f| !f.is_boolean()) {
                out.push(problem("$.output.footer", "must be true or false"));
            }
        }
        Some(_) => out.push(problem("$.output", "must be an object")),
    }
    if let Some(c) = obj.get("cost_hint_usd") {
        if !c.as_f64().is_some_and(|c| c.is_finite() && c >= 0.0) {
            out.push(problem("$.cost_hint_usd", "must be a number ≥ 0"));
        }
    }
    match obj.get("tags") {
        None => {}
        Some(Value::Array(tags)) => {
            for (i, t) in tags.iter().enumerate() {
                if !t.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 40) {
                    out.push(problem(
                        format!("$.tags[{i}]"),
                        "must be a string of 1–40 characters",
                    ));
                }
            }
        }
        Some(_) => out.push(problem("$.tags", "must be an array of strings")),
    }
    if obj.get("version").is_some_and(|v| !v.is_string()) {
        out.push(problem("$.version", "must be a string"));
    }
}

fn validate_param(p: &Value, at: &str, seen: &mut BTreeSet<String>, out: &mut Vec<Problem>) {
    let Some(obj) = p.as_object() else {
        out.push(problem(at, "must be an object"));
        return;
    };
    unknown_fields(obj, PARAM_FIELDS, at, out);
    match obj.get("name").and_then(Value::as_str) {
        Some(n) if is_param_name(n) => {
            if !seen.insert(n.to_owned()) {
                out.push(problem(
                    format!("{at}.name"),
                    format!("duplicate parameter name {n:?}"),
                ));
            }
        }
        Some(n) => out.push(problem(
            format!("{at}.name"),
            format!("{n:?} must match [a-z_][a-z0-9_]*"),
        )),
        None => out.push(problem(format!("{at}.name"), "is required (a string)")),
    }
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("string") => Some(ParamType::String),
        Some("integer") => Some(ParamType::Integer),
        Some("number") => Some(ParamType::Number),
        Some("boolean") => Some(ParamType::Boolean),
        _ => {
            out.push(problem(
                format!("{at}.type"),
                "must be one of string, integer, number, boolean",
            ));
            None
        }
    };
    if obj.get("required").is_some_and(|r| !r.is_boolean()) {
        out.push(problem(format!("{at}.required"), "must be true or false"));
    }
    if obj.get("description").is_some_and(|d| !d.is_string()) {
        out.push(problem(format!("{at}.description"), "must be a string"));
    }
    let enum_values = match obj.get("enum") {
        None => None,
        Some(Value::Array(vals)) if !vals.is_empty() => {
            if let Some(k) = kind {
                for (i, v) in vals.iter().enumerate() {
                    if !k.accepts(v) {
                        out.push(problem(
                            format!("{at}.enum[{i}]"),
                            format!("must be a {} like the parameter", k.as_str()),
                        ));
                    }
                }
            }
            Some(vals)
        }
        Some(_) => {
            out.push(problem(format!("{at}.enum"), "must be a non-empty array"));
            None
        }
    };
    if let (Some(d), Some(k)) = (obj.get("default"), kind) {
        if !k.accepts(d) {
            out.push(problem(
                format!("{at}.default"),
                format!("must be a {} like the parameter", k.as_str()),
            ));
        } else if enum_values.is_some_and(|vals| !vals.contains(d)) {
            out.push(problem(
                format!("{at}.default"),
                "must be one of the enum values",
            ));
        }
    }
}
