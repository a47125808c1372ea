//! Where CloudWatch's credentials come from, in the order AWS's SDKs look:
//! the access-key variables the source names; else the shared configuration
//! files' profile (`aws_profile`: keys, `credential_process`, SSO, a role
//! assumed from a source profile); else a web identity (EKS's
//! IAM roles for service accounts: `AWS_WEB_IDENTITY_TOKEN_FILE` and
//! `AWS_ROLE_ARN`, exchanged at STS by `AssumeRoleWithWebIdentity`); else
//! the instance profile (EC2's instance metadata service, IMDSv2 with its
//! session token). Temporary credentials are kept until five minutes before
//! they expire and fetched again after (the token file is read again each
//! time: the kubelet rotates it). The endpoints follow the SDKs' variables:
//! `AWS_ENDPOINT_URL_STS`, `AWS_EC2_METADATA_SERVICE_ENDPOINT`, and
//! `AWS_EC2_METADATA_DISABLED=true` turns the metadata service off.
//!
//! Hand-written over `aws-config`: its provider chain brings the STS, SSO
//! and SSO-OIDC clients and a second HTTP stack for two documented calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;

use crate::clock::Clock;

/// Fetched credentials are used until this long before they expire (seconds).
const RENEW_BEFORE_S: i64 = 300;
/// Each request to the metadata service: it answers in milliseconds, or is
/// not there (botocore's `metadata_service_timeout` is the same second), so a
/// machine off EC2 with no other credentials is told at once.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// Each request to STS (across the internet, or a VPC endpoint).
pub(super) const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an IMDSv2 session token lives (seconds; the service's maximum).
const IMDS_TOKEN_TTL_S: &str = "21600";

/// Where the credentials come from, chosen once at start.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Access keys (never expire here).
    Keys {
        /// The access key id.
        key_id: String,
        /// The secret access key.
        secret: String,
        /// The session token, when set.
        token: Option<String>,
        /// Where they were read.
        from: KeysFrom,
    },
    /// A profile's `credential_process`: a command that prints credentials.
    Process {
        /// The profile.
        profile: String,
        /// The command line, run by `sh -c` as the SDKs do.
        command: String,
    },
    /// A profile's IAM Identity Center (SSO) role.
    Sso(Box<SsoRole>),
    /// A profile's `role_arn`, assumed at STS (`AssumeRole`, signed) with `source`'s credentials.
    AssumeRole {
        /// The profile.
        profile: String,
        /// The role.
        role_arn: String,
        /// `role_session_name`, or `backstop`.
        session_name: String,
        /// `external_id`, when the role's trust policy asks for one.
        external_id: Option<String>,
        /// STS's endpoint.
        sts_url: String,
        /// The region the request is signed for: the profile's `region`, else the source's.
        region: String,
        /// Whose credentials ask for the role.
        source: Box<Origin>,
    },
    /// `AssumeRoleWithWebIdentity` at STS.
    WebIdentity {
        /// `AWS_ROLE_ARN`.
        role_arn: String,
        /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
        token_file: PathBuf,
        /// `AWS_ROLE_SESSION_NAME`, or `backstop`.
        session_name: String,
        /// STS's endpoint.
        sts_url: String,
    },
    /// The container credentials endpoint (an ECS task role, EKS Pod Identity).
    Container(super::aws_container::Container),
    /// The instance metadata service (IMDSv2).
    InstanceProfile {
        /// Its endpoint.
        imds_url: String,
    },
}

/// Where access keys were read.
#[derive(Debug, Clone, PartialEq)]
pub enum KeysFrom {
    /// Environment variables.
    Variables,
    /// A profile of the shared files.
    Profile(String),
}

/// An SSO profile's role and where `aws sso login` left its token.
#[derive(Debug, Clone, PartialEq)]
pub struct SsoRole {
    /// The profile.
    pub profile: String,
    /// The start URL the token was issued for.
    pub start_url: String,
    /// `sso_account_id`.
    pub account_id: String,
    /// `sso_role_name`.
    pub role_name: String,
    /// The CLI's token cache file (`~/.aws/sso/cache/<SHA-1>.json`).
    pub token_file: PathBuf,
    /// The portal's endpoint (`AWS_ENDPOINT_URL_SSO`, or the SSO region's).
    pub portal_url: String,
    /// SSO-OIDC's endpoint, where the token is refreshed (`AWS_ENDPOINT_URL_SSO_OIDC`, or
    /// the SSO region's); `None` for the older form, whose token cannot be refreshed.
    pub oidc_url: Option<String>,
}

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
        if let Some(origin) = super::aws_profile::origin(&set, region)? {
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
        if let Some(c) = super::aws_container::Container::choose(&set)? {
            return Ok(Origin::Container(c));
        }
        if set("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(OriginError::None(NoCredentials { key_var: vars.key_id.to_string() }));
        }
        let imds_url = set("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
        Ok(Origin::InstanceProfile { imds_url })
    }
}

impl Origin {
    /// Where the credentials come from, for `config check` (no secret: names,
    /// files, endpoints, and a process's program only).
    pub fn describe(&self) -> String {
        match self {
            Origin::Keys { from: KeysFrom::Variables, .. } => "access keys from the environment".into(),
            Origin::Keys { from: KeysFrom::Profile(p), .. } => format!("access keys of the profile `{p}`"),
            Origin::Process { profile, command } => {
                let program = command.split_whitespace().next().unwrap_or_default();
                format!("the credential_process `{program}` of the profile `{profile}`")
            }
            Origin::Sso(r) => {
                format!("the SSO role `{}` in account {} (profile `{}`)", r.role_name, r.account_id, r.profile)
            }
            Origin::AssumeRole { profile, role_arn, source, .. } => {
                format!("the role {role_arn} (profile `{profile}`), assumed with {}", source.describe())
            }
            Origin::WebIdentity { role_arn, .. } => format!("the role {role_arn} through a web identity"),
            Origin::Container(c) => format!("the container endpoint {}", crate::secret::redact_url(&c.url)),
            Origin::InstanceProfile { .. } => "the instance profile (IMDSv2)".into(),
        }
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
    Container(#[from] super::aws_container::UnsafeUri),
    /// The shared files' profile cannot be used.
    #[error(transparent)]
    Profile(#[from] super::aws_profile::ProfileError),
    /// Nothing at all.
    #[error(transparent)]
    None(#[from] NoCredentials),
}

/// Temporary credentials could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The web identity token file could not be read.
    #[error("reading the web identity token file {path}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request did not get an answer.
    #[error("asking {url} for credentials")]
    Request {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An error answer.
    #[error("{url} refused to give credentials: {code}: {message}")]
    Refused {
        /// The endpoint.
        url: String,
        /// The error code (STS's `Code`, or the HTTP status).
        code: String,
        /// Its message.
        message: String,
    },
    /// An answer that holds no credentials.
    #[error("{url} answered without credentials ({what})")]
    Malformed {
        /// The endpoint.
        url: String,
        /// What is missing.
        what: String,
    },
    /// A `credential_process` could not be started.
    #[error("running the credential_process `{program}`")]
    Process {
        /// Its program (the first word: arguments may hold secrets).
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `credential_process` failed or printed no credentials.
    #[error("the credential_process `{program}` gave no credentials: {why}")]
    ProcessFailed {
        /// Its program.
        program: String,
        /// Its exit status and last line of error output, or what its output lacks.
        why: String,
    },
    /// The SSO token cache could not be read.
    #[error("reading the SSO token cache {path} (`aws sso login` writes it)")]
    SsoToken {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cached SSO token is malformed or has expired.
    #[error("the SSO token in {path} {why}: run `aws sso login` again")]
    SsoExpired {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A request to STS could not be signed.
    #[error("signing the request to STS")]
    Sign(#[source] SignError),
}

/// A request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing parameters are incomplete.
    #[error("signing parameters")]
    Params(#[from] aws_sigv4::sign::v4::signing_params::BuildError),
    /// The signer could not sign this request.
    #[error("signing the request")]
    Sign(#[from] aws_sigv4::http_request::SigningError),
}

/// The Signature Version 4 headers (`authorization`, `x-amz-date`, the
/// session token) for a POST of `body` to `service` in `region`, dated `now_ms`.
pub fn sign_post(
    identity: &Identity,
    (region, service): (&str, &str),
    now_ms: i64,
    url: &str,
    (content_type, body): (&str, &[u8]),
) -> Result<Vec<(String, String)>, SignError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let now = std::time::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers = [("content-type", content_type)];
    let request = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))?;
    let (instructions, _) = sign(request, &params)?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Credentials as signed with, renewed before they expire.
pub struct Provider {
    origin: Origin,
    clock: Arc<dyn Clock>,
    /// The identity and its expiry (unix s; `None`: never).
    cached: tokio::sync::Mutex<Option<(Identity, Option<i64>)>>,
}

/// One fetch's answer.
pub(super) struct Fetched {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
    /// Unix seconds; `None`: never.
    pub expires_s: Option<i64>,
}

impl Fetched {
    /// As an identity to sign with.
    pub fn identity(&self, origin: &Origin) -> Identity {
        let expiry = self.expires_s.map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64));
        Credentials::new(&self.key_id, &self.secret, self.token.clone(), expiry, origin_name(origin)).into()
    }
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
    use super::aws_profile as profile;
    Ok(match origin {
        Origin::Keys { key_id, secret, token, .. } => {
            Fetched { key_id: key_id.clone(), secret: secret.clone(), token: token.clone(), expires_s: None }
        }
        Origin::Process { command, .. } => profile::process(command).await?,
        Origin::Sso(role) => super::aws_sso::sso(http, role, now_ms / 1000).await?,
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
        Origin::Container(c) => super::aws_container::fetch(http, c).await?,
        Origin::InstanceProfile { imds_url } => instance_profile(http, imds_url).await?,
    })
}

fn origin_name(o: &Origin) -> &'static str {
    match o {
        Origin::Keys { from: KeysFrom::Variables, .. } => "environment",
        Origin::Keys { from: KeysFrom::Profile(_), .. } => "profile",
        Origin::Process { .. } => "credential-process",
        Origin::Sso(_) => "sso",
        Origin::AssumeRole { .. } => "assume-role",
        Origin::WebIdentity { .. } => "web-identity",
        Origin::Container(_) => "container",
        Origin::InstanceProfile { .. } => "instance-profile",
    }
}

/// ISO 8601 (`2026-12-06T21:00:00Z`) as unix seconds.
pub(super) fn unix_s(iso: &str) -> Option<i64> {
    iso.trim().parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
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
    let url = format!("{}/", sts_url.trim_end_matches('/'));
    let shown = crate::secret::redact_url(&url);
    let body = serde_urlencoded::to_string(form).unwrap_or_default();
    let rb = http.post(&url).header("content-type", "application/x-www-form-urlencoded; charset=utf-8").body(body);
    let (status, text) = answer(rb, &shown).await?;
    sts_answer(shown, status, &text)
}

/// Send `rb` (to the endpoint shown as `shown`) within [`REMOTE_TIMEOUT`]:
/// the answer's status and text.
pub(super) async fn answer(
    rb: reqwest::RequestBuilder,
    shown: &str,
) -> Result<(reqwest::StatusCode, String), FetchError> {
    let request = |source| FetchError::Request { url: shown.to_string(), source };
    let resp = rb.timeout(REMOTE_TIMEOUT).send().await.map_err(request)?;
    let status = resp.status();
    Ok((status, resp.text().await.map_err(request)?))
}

/// STS's answer to `AssumeRole` or `AssumeRoleWithWebIdentity` (XML, the
/// same `Credentials` element in both); an error answer's `Code` and `Message`.
pub(super) fn sts_answer(shown: String, status: reqwest::StatusCode, text: &str) -> Result<Fetched, FetchError> {
    let malformed = |what: &str| FetchError::Malformed { url: shown.clone(), what: what.into() };
    let xml = roxmltree::Document::parse(text).map_err(|_| malformed("not XML"))?;
    let field =
        |name: &str| xml.descendants().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).map(str::to_string);
    if !status.is_success() {
        let code = field("Code").unwrap_or_else(|| status.as_u16().to_string());
        return Err(FetchError::Refused { url: shown, code, message: field("Message").unwrap_or_default() });
    }
    let need = |name: &str| field(name).ok_or_else(|| malformed(name));
    Ok(Fetched {
        key_id: need("AccessKeyId")?,
        secret: need("SecretAccessKey")?,
        token: Some(need("SessionToken")?),
        expires_s: Some(unix_s(&need("Expiration")?).ok_or_else(|| malformed("Expiration as ISO 8601"))?),
    })
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
