//! The API's contract, `lib/api/openapi.yaml`, held against every response the test suite sees: each one
//! must be a documented status of its operation, carry the documented headers, and match the documented
//! schema exactly (every object is `additionalProperties: false`, so a field the code adds and the
//! document lacks fails here). With `CLARESIA_CONTRACT_LOG` set, what was seen is appended there, and
//! `infra/scripts/contract_coverage.py` then fails when a documented status or field was never seen:
//! the document cannot claim what the code does not do either.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::Value;

pub const OPENAPI: &str = include_str!("../../lib/api/openapi.yaml");

/// The parsed document and its operations.
pub struct Contract {
    pub doc: Value,
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    pub path: String,
}

impl Operation {
    /// `PUT /tenants/{tenant}/skills/{skill_id}`: the template's and the matrix's route key.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn matches(&self, path: &str) -> bool {
        let want: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_matches('/').split('/').collect();
        want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(w, g)| (w.starts_with('{') && !g.is_empty()) || w == g)
    }
}

pub fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let doc: Value = serde_norway::from_str(OPENAPI)
            .unwrap_or_else(|e| panic!("lib/api/openapi.yaml does not parse: {e}"));
        let mut operations = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "put", "post", "delete", "patch"] {
                if item.get(method).is_some() {
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                    });
                }
            }
        }
        Contract { doc, operations }
    })
}

impl Contract {
    /// The documented operation a request hits, if any.
    pub fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        self.operations
            .iter()
            .find(|op| op.method == method && op.matches(path))
    }

    fn op_doc(&self, op: &Operation) -> &Value {
        &self.doc["paths"][&op.path][op.method.to_lowercase()]
    }

    /// Follows a local `$ref` (`#/components/…`).
    pub fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("openapi.yaml: dangling $ref {r}")),
            None => v,
        }
    }

    /// The documented error codes.
    pub fn error_codes(&self) -> Vec<String> {
        self.doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    }

    /// Checks one response; `Err` says what disagrees with the document.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &http::HeaderMap,
        body: &Value,
    ) -> Result<(), String> {
        let at = format!("{method} {path} → {status}");
        for (name, want) in [("x-request-id", None), ("cache-control", Some("no-store"))] {
            match (headers.get(name).and_then(|v| v.to_str().ok()), want) {
                (None, _) => return Err(format!("{at}: no {name} header")),
                (Some(got), Some(want)) if got != want => {
                    return Err(format!("{at}: {name} is {got:?}, not {want:?}"))
                }
                _ => {}
            }
        }
        let Some(op) = self.operation(method, path) else {
            // Not an operation (an unknown path or method): still the error envelope.
            let envelope = serde_json::json!({"$ref": "#/components/schemas/ErrorBody"});
            return self.validate(&envelope, body, "ErrorBody", &mut Vec::new());
        };
        let responses = &self.op_doc(op)["responses"];
        let Some(response) = responses.get(status.to_string()) else {
            return Err(format!(
                "{at}: status {status} is not documented for {} (documented: {:?})",
                op.key(),
                responses.as_object().map(|o| o.keys().collect::<Vec<_>>())
            ));
        };
        let response = self.resolve(response);
        for (name, h) in response["headers"].as_object().into_iter().flatten() {
            let h = self.resolve(h);
            if h["required"] == true && headers.get(name.as_str()).is_none() {
                return Err(format!("{at}: documented header {name} is missing"));
            }
        }
        let schema = &response["content"]["application/json"]["schema"];
        let mut seen = Vec::new();
        self.validate(schema, body, "", &mut seen)
            .map_err(|e| format!("{at}: {e}\nbody: {body}"))?;
        log_seen(&op.key(), status, &seen);
        Ok(())
    }

    /// Validates `v` against `schema` (the JSON Schema subset the document uses), recording in `seen`
    /// each property present, as `Component.path.to.property`.
    pub fn validate(
        &self,
        schema: &Value,
        v: &Value,
        loc: &str,
        seen: &mut Vec<String>,
    ) -> Result<(), String> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            return self
                .validate(self.resolve(schema), v, name, seen)
                .map_err(|e| format!("{name}: {e}"));
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let mut passed = Vec::new();
            let mut errors = Vec::new();
            for b in branches {
                let mut s = Vec::new();
                match self.validate(b, v, loc, &mut s) {
                    Ok(()) => passed.push(s),
                    Err(e) => errors.push(e),
                }
            }
            return match passed.len() {
                1 => {
                    seen.extend(passed.remove(0));
                    Ok(())
                }
                0 => Err(format!("{loc}: matches no oneOf branch: {errors:?}")),
                n => Err(format!("{loc}: matches {n} oneOf branches")),
            };
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.iter().any(|t| type_matches(t, v)) {
                return Err(format!("{loc}: {v} is not of type {t}"));
            }
        }
        if let Some(c) = schema.get("const") {
            if c != v {
                return Err(format!("{loc}: {v} is not {c}"));
            }
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                return Err(format!("{loc}: {v} is not one of {e:?}"));
            }
        }
        if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
            if n < min {
                return Err(format!("{loc}: {n} < minimum {min}"));
            }
        }
        if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64()) {
            if n > max {
                return Err(format!("{loc}: {n} > maximum {max}"));
            }
        }
        if let (Some(max), Some(s)) = (schema.get("maxLength").and_then(Value::as_u64), v.as_str())
        {
            if s.chars().count() as u64 > max {
                return Err(format!("{loc}: {s:?} is longer than {max}"));
            }
        }
        if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
            for (i, x) in a.iter().enumerate() {
                self.validate(items, x, &format!("{loc}[]"), seen)
                    .map_err(|e| format!("[{i}] {e}"))?;
            }
        }
        if let Some(obj) = v.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !obj.contains_key(r) {
                    return Err(format!("{loc}: required property {r:?} is missing"));
                }
            }
            for (k, x) in obj {
                let sub = format!("{loc}.{k}");
                match (
                    props.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => {
                        seen.push(sub.clone());
                        self.validate(s, x, &sub, seen)?;
                    }
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{loc}: property {k:?} is not documented"))
                    }
                    (None, Some(s @ Value::Object(_))) => {
                        self.validate(s, x, &format!("{loc}{{}}"), seen)?
                    }
                    (None, _) => {}
                }
            }
        }
        Ok(())
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// Appends what one response showed to `$CLARESIA_CONTRACT_LOG/{pid}.jsonl` (one file per test binary;
/// one writer at a time, so concurrent tests' lines never interleave).
fn log_seen(op: &str, status: u16, seen: &[String]) {
    static LOG: OnceLock<Option<std::sync::Mutex<std::fs::File>>> = OnceLock::new();
    let log = LOG.get_or_init(|| {
        let dir = std::env::var("CLARESIA_CONTRACT_LOG").ok()?;
        let _ = std::fs::create_dir_all(&dir);
        let file = std::path::Path::new(&dir).join(format!("{}.jsonl", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap_or_else(|e| {
                panic!(
                    "CLARESIA_CONTRACT_LOG: cannot append to {}: {e}",
                    file.display()
                )
            });
        Some(std::sync::Mutex::new(f))
    });
    if let Some(f) = log {
        let line =
            serde_json::json!({"op": op, "status": status, "fields": seen}).to_string() + "\n";
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(line.as_bytes());
    }
}
