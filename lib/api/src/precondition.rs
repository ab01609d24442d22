//! Optimistic concurrency on the catalog: `ETag` on reads, `If-Match` / `If-None-Match: *` on writes.
//! An ETag names the stored text of a document; a precondition resolves against the text a request read
//! into an [`Expect`] that DynamoDB checks in the write itself, so two admins editing the same document
//! cannot silently overwrite each other.

use base64::Engine;
use claresia_aws::Expect;
use sha2::{Digest, Sha256};

use crate::ApiError;

/// What the client asked for in its precondition headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No header: last write wins (the behaviour before ETags, kept for clients that do not send one).
    None,
    /// `If-Match: "a", "b"`: the document must currently have one of these ETags.
    Match(Vec<String>),
    /// `If-Match: *`: the document must exist.
    Exists,
    /// `If-None-Match: *`: the document must not exist (create only).
    Absent,
}

/// The strong ETag of a stored document text: 128 bits of its SHA-256, quoted.
pub(crate) fn etag_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    )
}

impl Precondition {
    /// Reads `If-Match` / `If-None-Match`. Malformed values are refused rather than ignored: a client
    /// that believes it is protected must not silently be unprotected.
    pub(crate) fn from_headers(headers: &http::HeaderMap) -> Result<Precondition, ApiError> {
        let value = |name: http::header::HeaderName| -> Result<Option<String>, ApiError> {
            let all: Vec<&str> = headers
                .get_all(&name)
                .iter()
                .map(|v| {
                    v.to_str()
                        .map_err(|_| invalid(format!("{name} is not visible ASCII")))
                })
                .collect::<Result<_, _>>()?;
            Ok((!all.is_empty()).then(|| all.join(",")))
        };
        match (
            value(http::header::IF_MATCH)?,
            value(http::header::IF_NONE_MATCH)?,
        ) {
            (None, None) => Ok(Precondition::None),
            (Some(_), Some(_)) => Err(invalid(
                "send either If-Match or If-None-Match, not both".into(),
            )),
            (None, Some(v)) if v.trim() == "*" => Ok(Precondition::Absent),
            (None, Some(v)) => Err(invalid(format!(
                "If-None-Match {v:?} is not supported on writes: use If-None-Match: * to create only if absent, or If-Match with an ETag"
            ))),
            (Some(v), None) if v.trim() == "*" => Ok(Precondition::Exists),
            (Some(v), None) => parse_tags(&v).map(Precondition::Match),
        }
    }

    /// Whether the client sent a precondition at all.
    pub fn is_some(&self) -> bool {
        *self != Precondition::None
    }

    /// Checks the precondition against `current` (the stored text, `None` when absent; `absent_text` is
    /// what an absent document reads as, for documents that always exist such as the workspace mappings)
    /// and answers what the write must expect. 412 when it already fails.
    pub fn resolve(
        &self,
        what: &str,
        current: Option<&str>,
        absent_text: Option<&str>,
    ) -> Result<Expect, ApiError> {
        let failed = |why: String| Err(ApiError::PreconditionFailed(format!("{what} {why}")));
        match (self, current) {
            (Precondition::None, _) => Ok(Expect::Any),
            (Precondition::Absent, None) => Ok(Expect::Absent),
            (Precondition::Absent, Some(_)) => {
                failed("already exists (If-None-Match: *); GET it and send its ETag in If-Match to change it".into())
            }
            // RFC 9110 §13.1.1: `*` matches any current representation, so a change between the read and
            // the write does not fail it; only its absence does.
            (Precondition::Exists, Some(_)) => Ok(Expect::Exists),
            // A document that always reads as something (the workspace mappings) always exists.
            (Precondition::Exists, None) if absent_text.is_some() => Ok(Expect::Any),
            (Precondition::Exists, None) => failed("does not exist (If-Match: *)".into()),
            (Precondition::Match(tags), _) => {
                let Some(text) = current.or(absent_text) else {
                    return failed("does not exist; create it with If-None-Match: * instead".into());
                };
                let now = etag_of(text);
                if !tags.contains(&now) {
                    return failed(format!(
                        "changed since the ETag you sent (it is now {now}); GET it again, reapply your change and send the new ETag in If-Match"
                    ));
                }
                Ok(current.map_or(Expect::Absent, |d| Expect::Doc(d.to_owned())))
            }
        }
    }
}

/// The error when the stored document changed between the check and the write.
pub(crate) fn changed_meanwhile(what: &str) -> ApiError {
    ApiError::PreconditionFailed(format!(
        "{what} changed while this request was being processed; GET it again, reapply your change and send the new ETag in If-Match"
    ))
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidPrecondition(message)
}

/// `"a", W/"b"` → the strong tags. A weak tag never matches (If-Match uses the strong comparison).
fn parse_tags(raw: &str) -> Result<Vec<String>, ApiError> {
    let mut tags = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (weak, quoted) = match part.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, part),
        };
        let ok = quoted.len() >= 2
            && quoted.starts_with('"')
            && quoted.ends_with('"')
            && !quoted[1..quoted.len() - 1].contains('"');
        if !ok {
            return Err(invalid(format!(
                "If-Match {raw:?}: each entity tag must be quoted, e.g. If-Match: \"3q2-7w\" (copy the ETag header of the GET)"
            )));
        }
        if !weak {
            tags.push(quoted.to_owned());
        }
    }
    if tags.is_empty() && !raw.contains("W/") {
        return Err(invalid("If-Match is empty".into()));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn etag_is_quoted_stable_and_changes_with_the_text() {
        let a = etag_of("{\"a\":1}");
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 24,
            "{a}"
        );
        assert_eq!(a, etag_of("{\"a\":1}"));
        assert_ne!(a, etag_of("{\"a\":2}"));
    }

    #[test]
    fn headers_parse_into_preconditions() {
        assert_eq!(
            Precondition::from_headers(&headers(&[])).unwrap(),
            Precondition::None
        );
        assert_eq!(
            Precondition::from_headers(&headers(&[("if-none-match", "*")])).unwrap(),
            Precondition::Absent
        );
        assert_eq!(
            Precondition::from_headers(&headers(&[("if-match", "*")])).unwrap(),
            Precondition::Exists
        );
        assert_eq!(
            Precondition::from_headers(&headers(&[
                ("if-match", "\"a\", W/\"b\""),
                ("if-match", "\"c\"")
            ]))
            .unwrap(),
            Precondition::Match(vec!["\"a\"".into(), "\"c\"".into()])
        );
        for bad in [
            vec![("if-match", "abc")],
            vec![("if-match", "\"a")],
            vec![("if-match", "")],
            vec![("if-none-match", "\"a\"")],
            vec![("if-match", "\"a\""), ("if-none-match", "*")],
        ] {
            let err = Precondition::from_headers(&headers(&bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_precondition", "{bad:?}");
        }
    }

    #[test]
    fn resolution_follows_the_stored_text() {
        let doc = "{\"skills\":[]}";
        let tag = etag_of(doc);
        let m = Precondition::Match(vec![tag.clone()]);
        assert_eq!(
            m.resolve("x", Some(doc), None).unwrap(),
            Expect::Doc(doc.into())
        );
        assert_eq!(
            m.resolve("x", Some("{}"), None).unwrap_err().code(),
            "precondition_failed"
        );
        assert_eq!(
            m.resolve("x", None, None).unwrap_err().code(),
            "precondition_failed"
        );
        // An absent document that reads as `doc` matches its ETag and must still be absent at the write.
        assert_eq!(m.resolve("x", None, Some(doc)).unwrap(), Expect::Absent);
        assert_eq!(
            Precondition::Absent.resolve("x", None, None).unwrap(),
            Expect::Absent
        );
        assert!(Precondition::Absent.resolve("x", Some(doc), None).is_err());
        assert_eq!(
            Precondition::Exists.resolve("x", Some(doc), None).unwrap(),
            Expect::Exists
        );
        assert!(Precondition::Exists.resolve("x", None, None).is_err());
        assert_eq!(
            Precondition::Exists.resolve("x", None, Some(doc)).unwrap(),
            Expect::Any
        );
        assert_eq!(
            Precondition::None.resolve("x", None, None).unwrap(),
            Expect::Any
        );
        // Weak tags never match.
        let weak = Precondition::Match(vec![]);
        assert!(weak.resolve("x", Some(doc), None).is_err());
    }
}
