//! Where CloudWatch's credentials come from, in the order AWS's SDKs look:
//! the access-key variables the source names; else the shared configuration
//! files' profile (`profile`: keys, `credential_process`, SSO, a role
//! assumed from a source profile); else a web identity (EKS's
//! IAM roles for service accounts: `AWS_WEB_IDENTITY_TOKEN_FILE` and
//! `AWS_ROLE_ARN`, exchanged at STS by `AssumeRoleWithWebIdentity`); else
//! the container endpoint (`container`: an ECS task role, EKS Pod Identity);
//! else the instance profile (EC2's instance metadata service, IMDSv2 with its
//! session token). The values they share are in `origin`, below them all. Temporary credentials are kept until five minutes before
//! they expire and fetched again after (the token file is read again each
//! time: the kubelet rotates it). The endpoints follow the SDKs' variables:
//! `AWS_ENDPOINT_URL_STS`, `AWS_EC2_METADATA_SERVICE_ENDPOINT`, and
//! `AWS_EC2_METADATA_DISABLED=true` turns the metadata service off.
//!
//! Hand-written over `aws-config`: its provider chain brings the STS, SSO
//! and SSO-OIDC clients and a second HTTP stack for a few documented calls.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;

use crate::clock::Clock;

mod container;
mod origin;
mod profile;
mod sso;

use origin::{FetchError, Fetched, KeysFrom, sts_call, unix_s};
pub use origin::{Origin, sign_post};

/// Fetched credentials are used until this long before they expire (seconds).
const RENEW_BEFORE_S: i64 = 300;
/// Each request to the metadata service: it answers in milliseconds, or is
/// not there (botocore's `metadata_service_timeout` is the same second), so a
/// machine off EC2 with no other credentials is told at once.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an IMDSv2 session token lives (seconds; the service's maximum).
const IMDS_TOKEN_TTL_S: &str = "21600";

/// No source of credentials at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "no AWS credentials: `{key_var}` is not set, the shared files' `default` profile (AWS_CONFIG_FILE, \
     AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/) holds none, nor AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, \
     nor AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, \
     and the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)"
)]
pub struct NoCredentials {
    /// The access-key variable the source names.
    pub key_var: String,
}

/// The variable names a CloudWatch source reads its keys from.
pub struct KeyVars<'a> {
    /// Access key id.
    pub key_id: &'a str,
    /// Secret access key.
    pub secret: &'a str,
    /// Session token.
    pub token: &'a str,
}

impl Origin {
    /// The first origin the environment (`var`) offers, in the SDKs' order;
    /// an access key id without its secret is an error naming the secret's variable.
    pub fn choose(
        var: impl Fn(&str) -> Option<String>,
        vars: &KeyVars<'_>,
        region: &str,
    ) -> Result<Origin, OriginError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(key_id) = set(vars.key_id) {
            let secret = set(vars.secret).ok_or_else(|| OriginError::NoSecret(vars.secret.to_string()))?;
            return Ok(Origin::Keys { key_id, secret, token: set(vars.token), from: KeysFrom::Variables });
        }
        if let Some(origin) = profile::origin(&set, region)? {
            return Ok(origin);
        }
        if let (Some(file), Some(role_arn)) = (set("AWS_WEB_IDENTITY_TOKEN_FILE"), set("AWS_ROLE_ARN")) {
            return Ok(Origin::WebIdentity {
                role_arn,
                token_file: file.into(),
                session_name: set("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "backstop".into()),
                sts_url: set("AWS_ENDPOINT_URL_STS").unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
            });
        }
        if let Some(c) = origin::Container::choose(&set)? {
            return Ok(Origin::Container(c));
        }
        if set("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(OriginError::None(NoCredentials { key_var: vars.key_id.to_string() }));
        }
        let imds_url = set("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
        Ok(Origin::InstanceProfile { imds_url })
    }
}

/// The environment offers no usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// An access key id without its secret.
    #[error("the access key id is set but `{0}` (its secret access key) is not")]
    NoSecret(String),
    /// The container endpoint is not one to trust.
    #[error(transparent)]
    Container(#[from] container::UnsafeUri),
    /// The shared files' profile cannot be used.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// Nothing at all.
    #[error(transparent)]
    None(#[from] NoCredentials),
}

/// Credentials as signed with, renewed before they expire.
pub struct Provider {
    origin: Origin,
    clock: Arc<dyn Clock>,
    /// The identity and its expiry (unix s; `None`: never).
    cached: tokio::sync::Mutex<Option<(Identity, Option<i64>)>>,
}

impl Provider {
    /// A provider for `origin`; `clock` decides when fetched credentials are due again.
    pub fn new(origin: Origin, clock: Arc<dyn Clock>) -> Self {
        Self { origin, clock, cached: tokio::sync::Mutex::new(None) }
    }

    /// Where the credentials come from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The identity to sign with: the cached one, or fetched anew when none
    /// is held or it expires within [`RENEW_BEFORE_S`] (if that fails, the
    /// held one while it has not expired).
    pub async fn identity(&self, http: &reqwest::Client) -> Result<Identity, FetchError> {
        let now_s = self.clock.now_ms() / 1000;
        let mut cached = self.cached.lock().await;
        if let Some((identity, expires)) = cached.as_ref()
            && expires.is_none_or(|e| e - now_s > RENEW_BEFORE_S)
        {
            return Ok(identity.clone());
        }
        let f = match fetch(http, &self.origin, self.clock.now_ms()).await {
            Ok(f) => f,
            // Renewal failed, but what is held has not expired yet: sign with it and try again next time.
            Err(e) => match cached.as_ref() {
                Some((identity, Some(expires))) if *expires > now_s => {
                    tracing::warn!(error = %crate::error::chain(&e), "Could not renew AWS credentials; using the current ones until they expire.");
                    return Ok(identity.clone());
                }
                _ => return Err(e),
            },
        };
        crate::secret::remember(&f.secret);
        if let Some(t) = &f.token {
            crate::secret::remember(t);
        }
        let identity = f.identity(&self.origin);
        *cached = Some((identity.clone(), f.expires_s));
        Ok(identity)
    }
}

/// Credentials from `origin` as it offers them now (`now_ms` dates an STS signature).
async fn fetch(http: &reqwest::Client, origin: &Origin, now_ms: i64) -> Result<Fetched, FetchError> {
    Ok(match origin {
        Origin::Keys { key_id, secret, token, .. } => {
            Fetched { key_id: key_id.clone(), secret: secret.clone(), token: token.clone(), expires_s: None }
        }
        Origin::Process { command, .. } => profile::process(command).await?,
        Origin::Sso(role) => sso::sso(http, role, now_ms / 1000).await?,
        Origin::AssumeRole { role_arn, session_name, external_id, sts_url, region, source, .. } => {
            // A chain of profiles: each link's credentials are fetched afresh (they are short-lived anyway).
            let base = Box::pin(fetch(http, source, now_ms)).await?;
            let external_id = external_id.as_deref();
            let role = profile::Role { role_arn, session_name, external_id, sts_url, region };
            profile::assume_role(http, &role, &base.identity(source), now_ms).await?
        }
        Origin::WebIdentity { role_arn, token_file, session_name, sts_url } => {
            web_identity(http, sts_url, role_arn, token_file, session_name).await?
        }
        Origin::Container(c) => container::fetch(http, c).await?,
        Origin::InstanceProfile { imds_url } => instance_profile(http, imds_url).await?,
    })
}

/// STS `AssumeRoleWithWebIdentity` (a form POST, unsigned: the token is the proof; answered in XML).
async fn web_identity(
    http: &reqwest::Client,
    sts_url: &str,
    role_arn: &str,
    token_file: &std::path::Path,
    session_name: &str,
) -> Result<Fetched, FetchError> {
    let jwt = std::fs::read_to_string(token_file)
        .map_err(|source| FetchError::TokenFile { path: token_file.display().to_string(), source })?;
    crate::secret::remember(jwt.trim());
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", jwt.trim()),
    ];
    sts_call(http, sts_url, &form, None).await
}

/// The instance metadata service's credentials document.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials {
    code: String,
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// IMDSv2: a session token (`PUT /latest/api/token`), the role's name, then its credentials.
async fn instance_profile(http: &reqwest::Client, base: &str) -> Result<Fetched, FetchError> {
    let base = base.trim_end_matches('/');
    let shown = crate::secret::redact_url(base);
    let request = |source| FetchError::Request { url: shown.clone(), source };
    let refused = |status: reqwest::StatusCode, step: &str| FetchError::Refused {
        url: shown.clone(),
        code: status.as_u16().to_string(),
        message: format!("{step} refused"),
    };
    let token =
        http.put(format!("{base}/latest/api/token")).header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL_S);
    let resp = token.timeout(IMDS_TIMEOUT).send().await.map_err(request)?;
    if !resp.status().is_success() {
        return Err(refused(resp.status(), "the session token"));
    }
    let token = resp.text().await.map_err(request)?;
    let get = |path: String| {
        http.get(format!("{base}/latest/meta-data/iam/security-credentials/{path}"))
            .header("x-aws-ec2-metadata-token", token.trim())
            .timeout(IMDS_TIMEOUT)
    };
    let resp = get(String::new()).send().await.map_err(request)?;
    if !resp.status().is_success() {
        return Err(refused(resp.status(), "the role's name (is an instance profile attached?)"));
    }
    let roles = resp.text().await.map_err(request)?;
    let malformed = |what: &str| FetchError::Malformed { url: shown.clone(), what: what.into() };
    let role = roles.lines().map(str::trim).find(|l| !l.is_empty()).ok_or_else(|| malformed("a role name"))?;
    let resp = get(role.to_string()).send().await.map_err(request)?;
    if !resp.status().is_success() {
        return Err(refused(resp.status(), "the role's credentials"));
    }
    let c: ImdsCredentials = resp.json().await.map_err(|_| malformed("the credentials document"))?;
    if c.code != "Success" {
        return Err(FetchError::Refused { url: shown, code: c.code, message: "the credentials document".into() });
    }
    Ok(Fetched {
        key_id: c.access_key_id,
        secret: c.secret_access_key,
        token: Some(c.token),
        expires_s: Some(unix_s(&c.expiration).ok_or_else(|| malformed("Expiration as ISO 8601"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: KeyVars<'static> = KeyVars { key_id: "K", secret: "S", token: "T" };

    /// `pairs`, with shared files that do not exist (not this machine's `~/.aws`).
    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let none = [("AWS_CONFIG_FILE", "/nonexistent/config"), ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/c")];
        let m: std::collections::HashMap<String, String> =
            none.iter().chain(pairs).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn the_origin_is_chosen_in_the_sdks_order_and_a_missing_one_names_the_variables() {
        let keys = Origin::choose(env(&[("K", "id"), ("S", "secret"), ("AWS_ROLE_ARN", "a")]), &VARS, "eu-west-1");
        let from = KeysFrom::Variables;
        assert_eq!(keys.ok(), Some(Origin::Keys { key_id: "id".into(), secret: "secret".into(), token: None, from }));
        let no_secret = Origin::choose(env(&[("K", "id")]), &VARS, "eu-west-1");
        assert!(matches!(no_secret, Err(OriginError::NoSecret(s)) if s == "S"));
        let web = [("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"), ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r")];
        match Origin::choose(env(&web), &VARS, "eu-west-1") {
            Ok(Origin::WebIdentity { sts_url, session_name, .. }) => {
                assert_eq!(
                    (sts_url.as_str(), session_name.as_str()),
                    ("https://sts.eu-west-1.amazonaws.com", "backstop")
                );
            }
            other => panic!("{other:?}"),
        }
        // The role alone is not a web identity: the metadata service is next.
        let imds = Origin::choose(env(&[("AWS_ROLE_ARN", "a")]), &VARS, "eu-west-1");
        assert_eq!(imds.ok(), Some(Origin::InstanceProfile { imds_url: "http://169.254.169.254".into() }));
        let off = Origin::choose(env(&[("AWS_EC2_METADATA_DISABLED", "TRUE")]), &VARS, "eu-west-1");
        let message = off.unwrap_err().to_string();
        assert!(message.contains("`K` is not set") && message.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{message}");
    }
}
