//! Who is calling the agent, and what they may do. Bearer tokens map to an
//! identity and scopes; the tokens file holds either the variable a token is
//! read from or only its SHA-256, and presented tokens are compared by
//! digest in constant time against every entry. Browsers may send the token
//! as the password of HTTP Basic authentication (the user name is ignored),
//! so the dashboard opens without a proxy. With no tokens file the agent
//! listens on loopback only and every caller is `local`.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::ledger::Actor;

pub use crate::config::Scope;

/// One `[[tokens]]` entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it: `alice@example.com`, or `ci:github:org/repo` for a pipeline.
    pub identity: String,
    /// What it allows.
    pub scopes: Vec<Scope>,
    /// Environment variable holding the token (at least 16 characters).
    pub token_env: Option<String>,
    /// Hex SHA-256 of the token, so the file holds no secret.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

/// The tokens file is unusable. Names the file, the entry and what was expected.
#[derive(Debug, Error)]
pub enum TokensError {
    /// Cannot read it.
    #[error("{path}: cannot read the tokens file")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A field is wrong.
    #[error("{path}: field `{field}`: expected {expected}")]
    Field {
        /// File.
        path: PathBuf,
        /// Dotted field path.
        field: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A field is missing or unknown, or a value of the wrong type.
    #[error("{path}: {source}")]
    Shape {
        /// File.
        path: PathBuf,
        /// Where, and what the parser expected.
        #[source]
        source: crate::field::ShapeError,
    },
}

/// Where an authenticated person's request came in, as the ledger names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::AsRefStr)]
#[strum(serialize_all = "snake_case")]
pub enum Channel {
    /// The HTTP API (the CLI, a script).
    Api,
    /// A dashboard form.
    Dashboard,
}

/// A caller, authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Identity as policy sees it.
    pub identity: String,
    /// What they may do.
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// The ledger writer for this caller: a pipeline for `ci:` identities, else a human through the API.
    pub fn actor(&self) -> Actor {
        self.actor_via(Channel::Api)
    }

    /// [`Caller::actor`] for a request that came through `channel`.
    pub fn actor_via(&self, channel: Channel) -> Actor {
        if self.identity.starts_with("ci:") {
            Actor::Pipeline { identity: self.identity.clone() }
        } else {
            Actor::Human { channel: channel.as_ref().into(), identity: self.identity.clone() }
        }
    }

    /// Whether they may do `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// How callers are recognised.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// No tokens: loopback only, everyone is `local` with these scopes
    /// (`agent.local_scopes`; read only unless configured otherwise).
    LocalOnly(Vec<Scope>),
    /// Token digests and who they belong to.
    Tokens(Vec<([u8; 32], Caller)>),
}

impl Authenticator {
    /// Load a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: path.into(), source })?;
        Self::parse(path, &text, &|v| crate::secret::from_env(v).ok())
    }

    /// Parse tokens text; `env` reads a variable.
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, TokensError> {
        let field = |field: String, expected: String| TokensError::Field { path: path.into(), field, expected };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| field("(document)".into(), format!("valid TOML: {}", e.message())))?;
        let file: TokensFile = serde_path_to_error::deserialize(de).map_err(|e| TokensError::Shape {
            path: path.into(),
            source: crate::field::ShapeError::at(e.path(), e.inner().message()),
        })?;
        if file.tokens.is_empty() {
            return Err(field("tokens".into(), "at least one [[tokens]] entry".into()));
        }
        let mut out = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let digest = match (&t.token_env, &t.sha256) {
                (Some(var), None) => match env(var) {
                    Some(v) if v.len() >= 16 => Sha256::digest(v.as_bytes()).into(),
                    Some(_) => {
                        return Err(field(
                            format!("tokens[{i}].token_env"),
                            format!("`{var}` to hold at least 16 characters"),
                        ));
                    }
                    None => {
                        return Err(field(
                            format!("tokens[{i}].token_env"),
                            format!("environment variable `{var}` to be set"),
                        ));
                    }
                },
                (None, Some(hex_digest)) => {
                    let bytes = hex::decode(hex_digest).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
                    bytes.ok_or_else(|| {
                        field(format!("tokens[{i}].sha256"), "64 hex digits (SHA-256 of the token)".into())
                    })?
                }
                _ => return Err(field(format!("tokens[{i}]"), "exactly one of `token_env` or `sha256`".into())),
            };
            if t.identity.trim().is_empty() || t.identity.chars().any(char::is_control) {
                return Err(field(
                    format!("tokens[{i}].identity"),
                    "a non-empty identity without control characters".into(),
                ));
            }
            if t.scopes.is_empty() {
                return Err(field(
                    format!("tokens[{i}].scopes"),
                    "at least one of read, register, operate, approve".into(),
                ));
            }
            out.push((digest, Caller { identity: t.identity, scopes: t.scopes }));
        }
        Ok(Authenticator::Tokens(out))
    }

    /// Who sent these headers; `None` when no token matches.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        match self {
            Authenticator::LocalOnly(scopes) => Some(Caller { identity: "local".into(), scopes: scopes.clone() }),
            Authenticator::Tokens(entries) => {
                let given = presented(headers)?;
                let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
                // Compare against every entry, so timing tells nothing about which matched.
                let mut found = None;
                for (d, caller) in entries {
                    if bool::from(d.ct_eq(&digest)) {
                        found = Some(caller.clone());
                    }
                }
                found
            }
        }
    }
}

/// The token in `Authorization: Bearer T` or `Authorization: Basic base64(user:T)`.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, t)| t.to_string())
}

/// The scope a request needs, from its method and path.
fn scope_for(method: &axum::http::Method, path: &str) -> Option<Scope> {
    // A shared link carries its own signature, checked by its handler.
    if matches!(path, "/healthz" | "/readyz") || (path.starts_with("/shared/") && method == axum::http::Method::GET) {
        return None;
    }
    if method == axum::http::Method::GET || path.starts_with("/v1/gates/") {
        return Some(Scope::Read);
    }
    if path == "/v1/releases" {
        return Some(Scope::Register);
    }
    // Approving and clearing a quarantine are both an approver's word.
    let approver_paths = ["/v1/approvals/", "/ui/approvals/", "/v1/revisions/", "/ui/revisions/"];
    if approver_paths.iter().any(|p| path.starts_with(p)) {
        return Some(Scope::Approve);
    }
    Some(Scope::Operate)
}

/// Who is calling, and whether they may: 401 without a valid token (a
/// browser is asked for Basic), 403 without the route's scope.
pub async fn authenticate(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let Some(scope) = scope_for(req.method(), req.uri().path()) else { return next.run(req).await };
    let Some(caller) = auth.caller(req.headers()) else {
        let browser =
            req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
        let challenge = if browser { "Basic realm=\"backstop\"" } else { "Bearer" };
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "a valid token is required\n")
            .into_response();
    };
    if !caller.may(scope) {
        let msg = format!("{} lacks the `{}` scope", caller.identity, format!("{scope:?}").to_lowercase());
        return (StatusCode::FORBIDDEN, axum::Json(std::collections::BTreeMap::from([("error", msg)]))).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    const FILE: &str = "[[tokens]]\nidentity = \"alice@example.com\"\nscopes = [\"read\", \"approve\"]\ntoken_env = \"T_ALICE\"\n\
                        [[tokens]]\nidentity = \"ci:github:org/repo\"\nscopes = [\"register\"]\nsha256 = \"";

    fn auth() -> Authenticator {
        let ci = hex::encode(Sha256::digest(b"ci-token-0123456789"));
        let text = format!("{FILE}{ci}\"\n");
        Authenticator::parse(Path::new("t.toml"), &text, &|v| (v == "T_ALICE").then(|| "alice-token-0123456789".into()))
            .unwrap()
    }

    #[test]
    fn tokens_map_to_identities_and_scopes() {
        let a = auth();
        let alice = a.caller(&headers("Bearer alice-token-0123456789")).unwrap();
        assert_eq!(alice.identity, "alice@example.com");
        assert!(alice.may(Scope::Approve) && !alice.may(Scope::Register));
        assert!(matches!(alice.actor(), Actor::Human { .. }));
        let ci = a.caller(&headers("Bearer ci-token-0123456789")).unwrap();
        assert!(matches!(ci.actor(), Actor::Pipeline { .. }));
        assert!(a.caller(&headers("Bearer alice-token-012345678")).is_none());
        assert!(a.caller(&HeaderMap::new()).is_none());
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:alice-token-0123456789");
        assert_eq!(a.caller(&headers(&format!("Basic {basic}"))).unwrap().identity, "alice@example.com");
    }

    #[test]
    fn dashboard_forms_need_the_apis_scopes_and_only_a_shared_page_needs_none() {
        use axum::http::Method;
        assert_eq!(scope_for(&Method::POST, "/ui/releases/search"), Some(Scope::Operate));
        assert_eq!(scope_for(&Method::POST, "/ui/approvals/apr-1"), Some(Scope::Approve));
        assert_eq!(scope_for(&Method::POST, "/ui/revisions/checkout/v42"), Some(Scope::Approve));
        assert_eq!(scope_for(&Method::GET, "/shared/releases/search"), None);
        assert_eq!(scope_for(&Method::POST, "/shared/releases/search"), Some(Scope::Operate));
        assert_eq!(scope_for(&Method::GET, "/releases/search"), Some(Scope::Read));
    }

    #[test]
    fn a_bad_file_names_the_entry() {
        let env = |_: &str| -> Option<String> { Some("short".into()) };
        let e =
            Authenticator::parse(Path::new("t.toml"), FILE.split("[[tokens]]\nidentity = \"ci").next().unwrap(), &env)
                .unwrap_err()
                .to_string();
        assert!(e.contains("t.toml") && e.contains("tokens[0].token_env") && e.contains("16"), "{e}");
        let e = Authenticator::parse(
            Path::new("t.toml"),
            "[[tokens]]\nidentity = \"a\"\nscopes = [\"root\"]\nsha256 = \"00\"\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scopes") && e.contains("root"), "{e}");
    }
}
