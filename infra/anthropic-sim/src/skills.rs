//! The Claude Skill JSON rules the server enforces (400 `invalid_request_error` otherwise).

use serde_json::{Map, Value};

const MAX_TOTAL_BYTES: usize = 8 * 1024 * 1024;

/// Validates a skill definition; the error is the message of the 400.
pub fn validate(def: &Map<String, Value>) -> Result<(), String> {
    let name = def
        .get("name")
        .and_then(Value::as_str)
        .ok_or("name: field required (a string)")?;
    check_name(name)?;
    let description = def
        .get("description")
        .and_then(Value::as_str)
        .ok_or("description: field required (a string)")?;
    check_description(description)?;
    if let Some(t) = def.get("display_title") {
        if !t.is_string() {
            return Err("display_title: must be a string".into());
        }
    }
    if let Some(schema) = def.get("input_schema") {
        if !schema.is_object() {
            return Err("input_schema: must be a JSON Schema object".into());
        }
    }
    match def.get("metadata") {
        None => {}
        Some(Value::Object(m)) => {
            if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!("metadata.{k}: metadata values must be strings"));
            }
        }
        Some(_) => return Err("metadata: must be an object of strings".into()),
    }
    let files = def
        .get("files")
        .and_then(Value::as_array)
        .ok_or("files: field required (an array of {path, content})")?;
    if files.is_empty() {
        return Err("files: at least SKILL.md is required".into());
    }
    let prefix = format!("{name}/");
    let mut total = 0usize;
    let mut skill_md = None;
    for (i, f) in files.iter().enumerate() {
        let path = f
            .get("path")
            .and_then(Value::as_str)
            .ok_or(format!("files[{i}].path: field required (a string)"))?;
        let content = f
            .get("content")
            .and_then(Value::as_str)
            .ok_or(format!("files[{i}].content: field required (a string)"))?;
        if !path.starts_with(&prefix) || path.len() == prefix.len() || path.contains("..") {
            return Err(format!(
                "files[{i}].path: every file must be under the top-level directory {prefix}"
            ));
        }
        total += content.len();
        if path == format!("{prefix}SKILL.md") {
            skill_md = Some(content);
        }
    }
    if total > MAX_TOTAL_BYTES {
        return Err(format!("files: total size {total} bytes exceeds 8 MiB"));
    }
    let skill_md = skill_md.ok_or(format!("files: {prefix}SKILL.md is required"))?;
    let (fm_name, fm_description) = front_matter(skill_md)?;
    if fm_name != name {
        return Err(format!(
            "SKILL.md: front matter name {fm_name:?} does not match the skill name {name:?}"
        ));
    }
    if fm_description != description {
        return Err(
            "SKILL.md: front matter description does not match the skill description".into(),
        );
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("name: must be 1-64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("name: may only contain lowercase letters, digits and hyphens".into());
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("name: no leading, trailing or double hyphens".into());
    }
    if name.contains("anthropic") || name.contains("claude") {
        return Err("name: cannot contain reserved words \"anthropic\" or \"claude\"".into());
    }
    Ok(())
}

fn check_description(d: &str) -> Result<(), String> {
    if d.is_empty() || d.chars().count() > 1024 {
        return Err("description: must be 1-1024 characters".into());
    }
    if d.contains('<') || d.contains('>') {
        return Err("description: cannot contain XML tags (< or >)".into());
    }
    Ok(())
}

/// Reads `name` and `description` from YAML front matter (`---` … `---`): plain, single- or double-quoted
/// scalars, which is what skill front matter uses.
fn front_matter(md: &str) -> Result<(String, String), String> {
    let rest = md
        .strip_prefix("---\n")
        .ok_or("SKILL.md: must start with YAML front matter (---)")?;
    let end = rest
        .find("\n---")
        .ok_or("SKILL.md: front matter is not closed with ---")?;
    let mut name = None;
    let mut description = None;
    for line in rest[..end].lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = unquote(v.trim())?;
        match k.trim() {
            "name" => name = Some(v),
            "description" => description = Some(v),
            _ => {}
        }
    }
    Ok((
        name.ok_or("SKILL.md: front matter needs name")?,
        description.ok_or("SKILL.md: front matter needs description")?,
    ))
}

fn unquote(v: &str) -> Result<String, String> {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        serde_json::from_str::<String>(v).map_err(|e| format!("SKILL.md: bad quoted scalar: {e}"))
    } else if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        Ok(v[1..v.len() - 1].replace("''", "'"))
    } else {
        Ok(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn skill(name: &str, description: &str, md_name: &str) -> Map<String, Value> {
        json!({
            "name": name,
            "display_title": "T",
            "description": description,
            "files": [{"path": format!("{name}/SKILL.md"),
                       "content": format!("---\nname: {md_name}\ndescription: {}\n---\n\n# T\n", serde_json::to_string(description).unwrap())}],
            "metadata": {"managed_by": "claresia"}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn accepts_a_valid_skill() {
        assert_eq!(
            validate(&skill("claresia-d-x", "Does x: well", "claresia-d-x")),
            Ok(())
        );
    }

    #[test]
    fn enforces_the_rules() {
        assert!(validate(&skill("Bad", "d", "Bad")).is_err());
        assert!(validate(&skill("my-claude-x", "d", "my-claude-x")).is_err());
        assert!(validate(&skill("anthropic-x", "d", "anthropic-x")).is_err());
        assert!(validate(&skill("a--b", "d", "a--b")).is_err());
        assert!(validate(&skill(&"a".repeat(65), "d", &"a".repeat(65))).is_err());
        assert!(validate(&skill("ok", "has <tag>", "ok")).is_err());
        assert!(validate(&skill("ok", "d", "other")).is_err());
        let mut s = skill("ok", "d", "ok");
        s.insert("metadata".into(), json!({"n": 1}));
        assert!(validate(&s).unwrap_err().contains("metadata.n"));
        let mut s = skill("ok", "d", "ok");
        s.insert(
            "files".into(),
            json!([{"path": "elsewhere/SKILL.md", "content": "x"}]),
        );
        assert!(validate(&s).is_err());
    }
}
