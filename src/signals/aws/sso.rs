//! IAM Identity Center (SSO) credentials for a profile: the token `aws sso
//! login` cached in `~/.aws/sso/cache`, given to the portal's
//! `GetRoleCredentials`. A profile with an `sso_session` (the CLI's current
//! form) has a refreshable token: within five minutes of its expiry it is
//! exchanged at SSO-OIDC's `CreateToken` (grant `refresh_token`, with the
//! client registration cached beside it) and written back, as the SDKs do; a
//! refresh that fails keeps the token while it is valid. The older form
//! (`sso_start_url` on the profile) is not refreshable. backstop never logs in.

use serde::Deserialize;

use super::origin::{FetchError, Fetched, SsoRole, answer, unix_s};

/// A token this close to its expiry is refreshed (seconds; the SDKs' window).
const REFRESH_BEFORE_S: i64 = 300;

/// The cached token's fields read here (the file is kept whole when written back).
struct CachedToken {
    /// The whole JSON object, to write back with the new token.
    json: serde_json::Map<String, serde_json::Value>,
    access_token: String,
    /// Unix seconds.
    expires_s: i64,
}

impl CachedToken {
    fn field(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(|v| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// SSO-OIDC's `CreateToken` request (the refresh grant's fields).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateTokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'a str,
    refresh_token: &'a str,
}

/// SSO-OIDC's `CreateToken` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateTokenAnswer {
    access_token: String,
    /// Seconds.
    expires_in: i64,
    refresh_token: Option<String>,
}

/// The token to give the portal: the cached one, refreshed when it is near
/// its expiry and can be (`now_s` is the time).
async fn token(http: &reqwest::Client, role: &SsoRole, now_s: i64) -> Result<String, FetchError> {
    let path = role.token_file.display().to_string();
    let expired = |why: String| FetchError::SsoExpired { path: path.clone(), why };
    let text = std::fs::read_to_string(&role.token_file)
        .map_err(|source| FetchError::SsoToken { path: path.clone(), source })?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| expired(format!("is not the CLI's token JSON ({e})")))?;
    let get = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let access_token = get("accessToken").ok_or_else(|| expired("has no accessToken".into()))?;
    let expires_at = get("expiresAt").unwrap_or_default();
    let expires_s = unix_s(&expires_at)
        .ok_or_else(|| expired(format!("has an expiresAt that is not ISO 8601 (`{expires_at}`)")))?;
    for secret in ["accessToken", "refreshToken", "clientSecret"].iter().filter_map(|k| get(k)) {
        crate::secret::remember(&secret);
    }
    let cached = CachedToken { json, access_token, expires_s };
    if cached.expires_s - now_s > REFRESH_BEFORE_S {
        return Ok(cached.access_token);
    }
    let Some(oidc_url) = role.oidc_url.as_deref() else {
        return match cached.expires_s > now_s {
            true => Ok(cached.access_token),
            false => Err(expired(format!("expired at {expires_at}"))),
        };
    };
    match refresh(http, oidc_url, &cached).await {
        Ok(fresh) => {
            write_back(role, cached, &fresh, now_s);
            Ok(fresh.access_token)
        }
        Err(e) if cached.expires_s > now_s => {
            tracing::warn!(error = %crate::error::chain(&e), "Could not refresh the SSO token; using it until it expires.");
            Ok(cached.access_token)
        }
        Err(e) => {
            Err(expired(format!("expired at {expires_at} and could not be refreshed ({})", crate::error::chain(&e))))
        }
    }
}

/// SSO-OIDC `CreateToken` with the refresh token and the cached client registration.
async fn refresh(
    http: &reqwest::Client,
    oidc_url: &str,
    cached: &CachedToken,
) -> Result<CreateTokenAnswer, FetchError> {
    let url = format!("{}/token", oidc_url.trim_end_matches('/'));
    let shown = crate::secret::redact_url(&url);
    let missing = |what: &str| FetchError::Malformed { url: shown.clone(), what: format!("the cached token's {what}") };
    let body = CreateTokenRequest {
        client_id: cached.field("clientId").ok_or_else(|| missing("clientId"))?,
        client_secret: cached.field("clientSecret").ok_or_else(|| missing("clientSecret"))?,
        grant_type: "refresh_token",
        refresh_token: cached.field("refreshToken").ok_or_else(|| missing("refreshToken"))?,
    };
    let text = successful(http.post(&url).json(&body), &shown).await?;
    let fresh: CreateTokenAnswer = serde_json::from_str(&text)
        .map_err(|_| FetchError::Malformed { url: shown.clone(), what: "accessToken".into() })?;
    crate::secret::remember(&fresh.access_token);
    if let Some(t) = &fresh.refresh_token {
        crate::secret::remember(t);
    }
    Ok(fresh)
}

/// The refreshed token into the cache file, the rest of it kept (the CLI and
/// other tools read the same file). A failed write only costs a refresh next time.
fn write_back(role: &SsoRole, mut cached: CachedToken, fresh: &CreateTokenAnswer, now_s: i64) {
    use serde_json::Value;
    let expires = jiff::Timestamp::from_second(now_s + fresh.expires_in).map(|t| t.to_string()).unwrap_or_default();
    cached.json.insert("accessToken".into(), Value::String(fresh.access_token.clone()));
    cached.json.insert("expiresAt".into(), Value::String(expires));
    if let Some(t) = &fresh.refresh_token {
        cached.json.insert("refreshToken".into(), Value::String(t.clone()));
    }
    let text = Value::Object(cached.json).to_string();
    let tmp = role.token_file.with_extension("json.backstop-tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &role.token_file)) {
        tracing::warn!(error = %e, file = %role.token_file.display(), "Could not write the refreshed SSO token back.");
    }
}

/// The text of a successful answer to `rb`; an error answer as `Refused`, with its message.
async fn successful(rb: reqwest::RequestBuilder, shown: &str) -> Result<String, FetchError> {
    let (status, text) = answer(rb, shown).await?;
    if !status.is_success() {
        let (url, code) = (shown.to_string(), status.as_u16().to_string());
        return Err(FetchError::Refused { url, code, message: error_message(&text) });
    }
    Ok(text)
}

/// An AWS JSON error's message (`message` or `error_description`).
fn error_message(text: &str) -> String {
    let v = serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
    ["message", "Message", "error_description", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(|m| m.as_str()))
        .unwrap_or_default()
        .to_string()
}

/// The portal's `GetRoleCredentials` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleCredentialsAnswer {
    role_credentials: RoleCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// Unix milliseconds.
    expiration: i64,
}

/// IAM Identity Center's `GetRoleCredentials` with the cached token (`now_s`
/// decides whether it must be refreshed, or has expired: then the portal is not asked).
pub(super) async fn sso(http: &reqwest::Client, role: &SsoRole, now_s: i64) -> Result<Fetched, FetchError> {
    let access_token = token(http, role, now_s).await?;
    let url = format!("{}/federation/credentials", role.portal_url.trim_end_matches('/'));
    let shown = crate::secret::redact_url(&url);
    let query = [("account_id", role.account_id.as_str()), ("role_name", role.role_name.as_str())];
    let rb = http.get(&url).query(&query).header("x-amz-sso_bearer_token", &access_token);
    let text = successful(rb, &shown).await?;
    let a: RoleCredentialsAnswer = serde_json::from_str(&text)
        .map_err(|_| FetchError::Malformed { url: shown.clone(), what: "roleCredentials".into() })?;
    let c = a.role_credentials;
    Ok(Fetched {
        key_id: c.access_key_id,
        secret: c.secret_access_key,
        token: Some(c.session_token),
        expires_s: Some(c.expiration.div_euclid(1000)),
    })
}
