//! Bounded, printable fields: what names, targets, revisions and labels may
//! be, checked at every door (configuration, registrations, gate queries).
//! A name can then never forge a line in a log or a listing, smuggle an
//! instruction into a prompt, or grow the ledger by megabytes.

use std::borrow::Cow;

/// A field is wrong: which one (a dotted path) and what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: expected {expected}")]
pub struct FieldError {
    /// Dotted path (`releases[0].name`, `labels.team`).
    pub field: String,
    /// What a valid value looks like.
    pub expected: String,
}

impl FieldError {
    /// `field` is wrong; `expected` says what would be right.
    pub fn new(field: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { field: field.into(), expected: expected.into() }
    }

    /// `field` is wrong; `expected` says what would be right (owned text).
    pub fn of(field: String, expected: String) -> Self {
        Self { field, expected }
    }

    /// The same error one level down: `prefix.field`.
    pub fn under(self, prefix: &str) -> Self {
        Self { field: format!("{prefix}.{}", self.field), ..self }
    }
}

/// A document's shape is wrong where its parser found it: a field missing or
/// unknown, a value of the wrong type. The message is serde's own, which
/// names the field and what it expected; `at` says in which table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", place(.at))]
pub struct ShapeError {
    /// Dotted path of the table or value it was found in (`.`: the top level).
    pub at: String,
    /// What was wrong, in the parser's words.
    pub message: String,
}

impl ShapeError {
    /// `message` found at `path` by a parse that tracked it.
    pub fn at(path: &serde_path_to_error::Path, message: impl Into<String>) -> Self {
        Self { at: path.to_string(), message: message.into() }
    }
}

/// Where in a document: serde_path_to_error writes the top level as `.`,
/// which reads as nothing to a person.
fn place(at: &str) -> String {
    if at == "." { "at the top level".into() } else { format!("at `{at}`") }
}

/// Longest release, service or environment name (characters).
pub const NAME_MAX: usize = 64;
/// Longest target name.
pub const TARGET_MAX: usize = 128;
/// Longest revision (a KServe storage URI is a revision too).
pub const REVISION_MAX: usize = 256;

/// A name: 1 to `NAME_MAX` of `A-Z a-z 0-9 . _ -`. Names are path segments
/// of the API (`/v1/releases/{name}`) and words in every listing.
pub fn name(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    charset(field, value, NAME_MAX, ok, "letters, digits, `.`, `_` or `-`")
}

/// A target: 1 to `TARGET_MAX` of the name characters and `/ : @`.
pub fn target(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@');
    charset(field, value, TARGET_MAX, ok, "letters, digits, `.`, `_`, `-`, `/`, `:` or `@`")
}

/// A revision: 1 to `REVISION_MAX` printable characters, no whitespace.
pub fn revision(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = |c: char| !c.is_whitespace() && !is_unsafe(c);
    charset(field, value, REVISION_MAX, ok, "printable characters without spaces")
}

/// Free text a person typed or a caller sent (a label value): at most
/// `max` characters, none of them control or bidirectional formatting.
/// An http(s) URL with a host: what every client of a remote system needs,
/// checked at load so a typo is a setting error, not a failing tick.
pub fn is_http_url(u: &str) -> bool {
    reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// `value` of `field` must be an http(s) URL with a host.
pub fn http_url(field: &str, value: &str) -> Result<(), FieldError> {
    if is_http_url(value) {
        return Ok(());
    }
    // Not echoed: a mistyped URL may still hold a password.
    Err(FieldError::new(field, "an http:// or https:// URL with a host"))
}

pub fn text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().count() > max || value.chars().any(is_unsafe) {
        return Err(FieldError::new(field, format!("at most {max} printable characters (no control characters)")));
    }
    Ok(())
}

fn charset(field: &str, value: &str, max: usize, ok: impl Fn(char) -> bool, what: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.chars().count() > max || !value.chars().all(ok) {
        return Err(FieldError::new(field, format!("1 to {max} characters: {what}")));
    }
    Ok(())
}

/// Characters that change how text around them is shown rather than
/// showing themselves: C0/C1 controls (ESC starts terminal sequences), the
/// bidirectional overrides and isolates (U+202E turns `gpj.exe` around),
/// zero-width joiners and marks, and the BOM.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` without unsafe characters (see [`is_unsafe`]); newlines and tabs
/// kept when `keep_lines` (multi-line text shown in a `<pre>`).
pub fn strip_unsafe(s: &str, keep_lines: bool) -> Cow<'_, str> {
    let drop = |c: char| is_unsafe(c) && !(keep_lines && matches!(c, '\n' | '\t'));
    if s.chars().any(drop) { Cow::Owned(s.chars().filter(|c| !drop(*c)).collect()) } else { Cow::Borrowed(s) }
}

/// `s` as one URL path segment or query value: every byte outside the
/// unreserved set (RFC 3986) percent-encoded, so a name with `/`, `?` or
/// `#` stays one segment in links people click.
pub fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_words() {
        assert!(name("n", "checkout-v2.1_a").is_ok());
        for bad in ["", "a b", "a\nb", "x\u{202E}y", "a/b", &"n".repeat(NAME_MAX + 1)] {
            let e = name("releases[0].name", bad).unwrap_err();
            assert_eq!(e.field, "releases[0].name", "{bad:?}");
        }
        assert!(target("t", "k8s/shop/checkout").is_ok());
        assert!(target("t", "a\u{1b}[31m").is_err());
    }

    #[test]
    fn revisions_are_printable_without_spaces() {
        assert!(revision("r", "gs://models/fraud/v3").is_ok());
        for bad in ["", "v1 v2", "v1\n", "v\u{1b}", "v\u{202E}1", "v\u{200B}1"] {
            assert!(revision("r", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stripping_removes_escapes_and_bidi_and_keeps_lines_when_asked() {
        assert_eq!(strip_unsafe("a\u{1b}[31mb\u{202E}c", false), "a[31mbc");
        assert_eq!(strip_unsafe("a\nb\tc", true), "a\nb\tc");
        assert_eq!(strip_unsafe("a\nb", false), "ab");
        assert!(matches!(strip_unsafe("plain", false), Cow::Borrowed(_)));
    }

    #[test]
    fn a_shape_error_says_where_in_words() {
        let top = ShapeError { at: ".".into(), message: "missing field `rate_limit`".into() };
        assert_eq!(top.to_string(), "at the top level: missing field `rate_limit`");
        let inner = ShapeError { at: "rate_limit".into(), message: "missing field `window_minutes`".into() };
        assert_eq!(inner.to_string(), "at `rate_limit`: missing field `window_minutes`");
    }

    #[test]
    fn errors_nest_under_their_parent() {
        let e = FieldError::new("name", "x").under("releases[2]");
        assert_eq!(e.to_string(), "field `releases[2].name`: expected x");
    }
}
