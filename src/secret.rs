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

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "token", "secret", "key", "auth", "sig", "credential"].iter().any(|s| k.contains(s))
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
}
