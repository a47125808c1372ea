//! Secrets never appear in any output: every URL that is printed, logged,
//! recorded or served goes through [`redact_url`] first.

/// A URL with any password or token removed, safe to print.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority_end = authority_and_path.find('/').unwrap_or(authority_and_path.len());
    let (authority, path) = authority_and_path.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}{authority}{path}?{q}"),
        None => format!("{scheme}{authority}{path}"),
    }
}

/// Whether a URL parameter carries a credential, by class: names that
/// contain a credential word (`api_key`, `X-Amz-Signature`, `sessionid`,
/// `access_token`), and the short names OAuth and single sign-on use for
/// one-time secrets (`code`, `state`, `sid`, `otp`).
fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    const CONTAINS: [&str; 14] = [
        "pass",
        "pwd",
        "token",
        "secret",
        "key",
        "auth",
        "sig",
        "credential",
        "session",
        "jwt",
        "bearer",
        "cookie",
        "ticket",
        "nonce",
    ];
    const EXACT: [&str; 6] = ["code", "state", "sid", "otp", "pin", "saml"];
    CONTAINS.iter().any(|s| k.contains(s)) || EXACT.contains(&k.as_str())
}

/// Secrets this process has read (API keys, tokens, passwords, signing
/// secrets), so that any echo of one — a server's error reply quoting the
/// key it refused, a program printing a variable it was passed, in plain
/// text or base64 — is masked before it reaches the ledger or any output.
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Shortest value treated as a secret to mask (shorter ones would mask ordinary words).
const MIN_SECRET: usize = 8;

/// Remember `value` as a secret (and its base64 forms).
pub fn remember(value: &str) {
    if value.len() < MIN_SECRET {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    for form in forms(value) {
        if !known.contains(&form) {
            known.push(form);
        }
    }
    // Longest first, so a secret inside another form is never half-masked.
    known.sort_by_key(|f| std::cmp::Reverse(f.len()));
}

/// An environment variable holding a secret: read, and remembered for masking.
pub fn from_env(var: &str) -> Result<String, std::env::VarError> {
    let v = std::env::var(var)?;
    remember(&v);
    Ok(v)
}

/// The forms a secret is echoed in: itself, and base64 (standard and
/// URL-safe, with and without padding).
fn forms(value: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = value.as_bytes();
    let mut v = vec![value.to_string()];
    v.extend([STANDARD.encode(b), STANDARD_NO_PAD.encode(b), URL_SAFE.encode(b), URL_SAFE_NO_PAD.encode(b)]);
    v.dedup();
    v
}

/// `text` with every known secret, and every form of `extra`, replaced by `***`.
pub fn mask_with<'a>(text: &'a str, extra: &[String]) -> std::borrow::Cow<'a, str> {
    let known = KNOWN.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let more: Vec<String> = extra.iter().filter(|e| e.len() >= MIN_SECRET).flat_map(|e| forms(e)).collect();
    let mut out = std::borrow::Cow::Borrowed(text);
    for s in known.iter().chain(more.iter()) {
        if out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), "***"));
        }
    }
    out
}

/// `text` with every known secret replaced by `***`.
pub fn mask(text: &str) -> std::borrow::Cow<'_, str> {
    mask_with(text, &[])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_passwords_and_tokens() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/l?sslmode=require"),
            "postgres://***@db:5432/l?sslmode=require"
        );
        assert_eq!(redact_url("http://prom:9090/api?token=abc&x=1"), "http://prom:9090/api?token=***&x=1");
        assert_eq!(redact_url("http://h/p?password=abc"), "http://h/p?password=***");
        assert_eq!(redact_url("sqlite://l.db?mode=rwc"), "sqlite://l.db?mode=rwc");
    }

    /// The audit's M6: `session=` of a webhook URL and `code=` of a verify
    /// URL were printed and ledgered.
    #[test]
    fn parameters_are_redacted_by_class() {
        let u = redact_url("https://h/hook?session=s3cr3t&code=abc123&state=xyz&country_code=NL&page=2");
        assert_eq!(u, "https://h/hook?session=***&code=***&state=***&country_code=NL&page=2");
    }

    /// A server's reply quoting the key it refused, or a program printing a
    /// variable in base64: masked wherever the text goes.
    #[test]
    fn a_known_secret_is_masked_in_any_echo() {
        super::remember("sk-live-0123456789abcdef");
        let reply = r#"{"error":"Incorrect API key provided: sk-live-0123456789abcdef"}"#;
        assert!(!super::mask(reply).contains("0123456789abcdef"), "{}", super::mask(reply));
        let b64 = "c2stbGl2ZS0wMTIzNDU2Nzg5YWJjZGVm";
        assert_eq!(super::mask(&format!("out: {b64}\n")), "out: ***\n");
        let passed = vec!["hunter2-but-longer".to_string()];
        assert_eq!(super::mask_with("aHVudGVyMi1idXQtbG9uZ2Vy", &passed), "***");
        assert_eq!(super::mask("short pw"), "short pw");
    }
}
