//! Browser-safe HTTP: a page on another origin must not be able to act
//! through a browser that can reach the agent (cross-site request forgery),
//! nor through a DNS name rebound to loopback.
//!
//! - A request that changes something (any method but GET, HEAD, OPTIONS)
//!   must say `Content-Type: application/json`: a cross-origin page can send
//!   only form and `text/plain` bodies without a CORS preflight, which this
//!   server never grants. Slack's routes are exempt: Slack signs their
//!   form-encoded bodies, and the signature is checked over the raw bytes.
//!   So are the dashboard's forms (`/ui/…`, form-encoded only): each
//!   carries a token signed for the person the page was shown to, which a
//!   page on another site cannot read ([`super::signing`]).
//! - A request carrying an `Origin` must name an allowed one (this server's
//!   own address, or `agent.allowed_origins`).
//! - A browser's fetch metadata saying `cross-site` or `same-site` is refused,
//!   except for a top-level navigation (a link clicked in Slack) to a
//!   dashboard page: those only read.
//! - Without tokens (loopback only) the `Host` must be a loopback name, so a
//!   name an attacker rebinds to 127.0.0.1 reaches nothing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What the guard lets through.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Origins allowed in an `Origin` header (`http://127.0.0.1:8080`).
    pub allowed: Vec<String>,
    /// Accept only loopback `Host` names (a token-less server).
    pub loopback_host_only: bool,
}

impl OriginPolicy {
    /// The origins of a server listening on `addr` (and `localhost` for a
    /// loopback address), plus `extra`.
    pub fn for_listener(addr: std::net::SocketAddr, extra: &[String], loopback_host_only: bool) -> Self {
        let mut allowed = vec![format!("http://{addr}"), format!("https://{addr}")];
        if addr.ip().is_loopback() {
            allowed.push(format!("http://localhost:{}", addr.port()));
        }
        allowed.extend(extra.iter().map(|o| o.trim_end_matches('/').to_string()));
        Self { allowed, loopback_host_only }
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` names a page this server does not trust.
    #[error("cross-origin request refused: origin `{0}` is not allowed (agent.allowed_origins)")]
    Origin(String),
    /// The browser says the request comes from another site.
    #[error("cross-site request refused (Sec-Fetch-Site: {0})")]
    CrossSite(String),
    /// A request that changes something without a JSON body type.
    #[error("a request that changes something must send Content-Type: application/json")]
    NotJson,
    /// A token-less server reached under a name that is not loopback.
    #[error("host `{0}` is not this agent: without tokens it answers loopback names only")]
    Host(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Origin(_) | Refusal::CrossSite(_) | Refusal::Host(_) => StatusCode::FORBIDDEN,
        }
    }
}

fn text<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The guard's verdict on one request: pure, so every rule is tested without a server.
pub fn check(p: &OriginPolicy, method: &Method, path: &str, h: &HeaderMap) -> Result<(), Refusal> {
    if p.loopback_host_only {
        let host = text(h, &header::HOST).unwrap_or("");
        if !is_loopback_host(host) {
            return Err(Refusal::Host(crate::field::strip_unsafe(host, false).chars().take(100).collect()));
        }
    }
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let Some(origin) = text(h, &header::ORIGIN)
        && !p.allowed.iter().any(|a| a == origin)
        && !(reads && origin == "null")
    {
        return Err(Refusal::Origin(crate::field::strip_unsafe(origin, false).chars().take(100).collect()));
    }
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("none");
    if matches!(site, "cross-site" | "same-site") {
        let navigation = h.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate");
        let page = *method == Method::GET && !path.starts_with("/v1/") && !path.starts_with("/slack/");
        let trusted = text(h, &header::ORIGIN).is_some_and(|o| p.allowed.iter().any(|a| a == o));
        if !(trusted || navigation && page) {
            return Err(Refusal::CrossSite(site.to_string()));
        }
    }
    if !reads && !path.starts_with("/slack/") {
        let kind = text(h, &header::CONTENT_TYPE).and_then(|c| c.split(';').next()).map(str::trim);
        let json = kind.is_some_and(|c| c.eq_ignore_ascii_case("application/json"));
        // The dashboard's forms: their handler checks the CSRF token signed for the caller.
        let form = path.starts_with("/ui/")
            && kind.is_some_and(|c| c.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !(json || form) {
            return Err(Refusal::NotJson);
        }
    }
    Ok(())
}

/// The guard as middleware.
pub async fn browser_guard(State(p): State<Arc<OriginPolicy>>, req: Request, next: Next) -> Response {
    match check(&p, req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            tracing::warn!(refusal = %r, path = req.uri().path(), "Request refused by the browser guard.");
            let body = std::collections::BTreeMap::from([("error", r.to_string())]);
            (r.status(), axum::Json(body)).into_response()
        }
    }
}

/// `app` behind the guard.
pub fn guarded(app: axum::Router, policy: OriginPolicy) -> axum::Router {
    app.layer(axum::middleware::from_fn_with_state(Arc::new(policy), browser_guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn policy(loopback: bool) -> OriginPolicy {
        OriginPolicy::for_listener("127.0.0.1:8080".parse().unwrap(), &[], loopback)
    }

    #[test]
    fn a_cross_origin_text_plain_form_is_refused() {
        // The audit's A10: an auto-submitted form from another origin.
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
            ("sec-fetch-site", "cross-site"),
        ]);
        let r = check(&policy(true), &Method::POST, "/v1/releases/search/rollback", &h);
        assert_eq!(r, Err(Refusal::Origin("http://evil.example".into())));
        // Without Origin or fetch metadata (an old browser, curl): still no JSON, still refused.
        let h = headers(&[("host", "127.0.0.1:8080"), ("content-type", "text/plain")]);
        assert_eq!(check(&policy(true), &Method::POST, "/v1/releases/search/rollback", &h), Err(Refusal::NotJson));
        let h = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(check(&policy(true), &Method::POST, "/v1/releases/search/hold", &h), Err(Refusal::NotJson));
    }

    #[test]
    fn a_cli_or_pipeline_posting_json_passes_and_its_own_origin_too() {
        let h = headers(&[("host", "127.0.0.1:8080"), ("content-type", "application/json; charset=utf-8")]);
        assert_eq!(check(&policy(true), &Method::POST, "/v1/releases", &h), Ok(()));
        let h = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
            ("content-type", "application/json"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check(&policy(true), &Method::POST, "/v1/approvals/a/approve", &h), Ok(()));
    }

    #[test]
    fn a_rebound_name_reaches_nothing_without_tokens() {
        let h = headers(&[("host", "evil.example:8080")]);
        assert_eq!(
            check(&policy(true), &Method::GET, "/v1/releases", &h),
            Err(Refusal::Host("evil.example:8080".into()))
        );
        assert_eq!(check(&policy(false), &Method::GET, "/v1/releases", &h), Ok(()));
        for ok in ["127.0.0.1:8080", "localhost", "[::1]:8080", "127.0.0.2"] {
            assert_eq!(check(&policy(true), &Method::GET, "/", &headers(&[("host", ok)])), Ok(()), "{ok}");
        }
    }

    #[test]
    fn cross_site_reads_are_only_page_navigations() {
        let nav =
            headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate")]);
        assert_eq!(check(&policy(true), &Method::GET, "/releases/payments", &nav), Ok(()));
        // A link to a gate cannot start an analysis of another revision.
        assert!(check(&policy(true), &Method::GET, "/v1/gates/checkout", &nav).is_err());
        let img =
            headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "no-cors")]);
        assert!(check(&policy(true), &Method::GET, "/v1/gates/checkout", &img).is_err());
    }

    #[test]
    fn dashboard_forms_pass_only_form_encoded_same_site_to_ui_paths() {
        let form = |site: &str, origin: &str| {
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", origin),
                ("sec-fetch-site", site),
                ("content-type", "application/x-www-form-urlencoded"),
            ])
        };
        let own = form("same-origin", "http://127.0.0.1:8080");
        assert_eq!(check(&policy(true), &Method::POST, "/ui/releases/search", &own), Ok(()));
        // A form body is never enough on the API's paths.
        assert_eq!(check(&policy(true), &Method::POST, "/v1/releases/search/hold", &own), Err(Refusal::NotJson));
        // Another site's form is refused before its token is looked at.
        let evil = form("cross-site", "http://evil.example");
        assert!(check(&policy(true), &Method::POST, "/ui/releases/search", &evil).is_err());
        let h =
            headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate")]);
        assert!(check(&policy(true), &Method::POST, "/ui/approvals/apr-1", &h).is_err());
        let plain = headers(&[("host", "127.0.0.1:8080"), ("content-type", "text/plain")]);
        assert_eq!(check(&policy(true), &Method::POST, "/ui/releases/search", &plain), Err(Refusal::NotJson));
    }

    #[test]
    fn slack_posts_its_signed_forms() {
        let h = headers(&[("host", "127.0.0.1:8080"), ("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(check(&policy(false), &Method::POST, "/slack/interactive", &h), Ok(()));
    }
}
