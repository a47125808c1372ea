//! The values the credential chain is made of: where credentials come from
//! ([`Origin`]), what a fetch gives ([`Fetched`]) and how it fails
//! ([`FetchError`]), and what every origin's fetch shares (a Signature
//! Version 4 POST, an answer within the time allowed, STS's XML). Below the
//! chain (`super`) and each origin's own module, so they import it and not each other.

use std::path::PathBuf;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::identity::Identity;

/// Each request to STS (across the internet, or a VPC endpoint).
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
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
    Container(Container),
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

/// Where the endpoint is and what proves the caller may ask it.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// The full URL of the credentials document.
    pub url: String,
    /// The `Authorization` header's value, if any.
    pub token: Option<ContainerToken>,
}

/// The authorization token, as the variables give it.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerToken {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (EKS Pod Identity rotates it).
    File(PathBuf),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    Value(String),
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

/// One fetch's answer.
pub struct Fetched {
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
pub fn unix_s(iso: &str) -> Option<i64> {
    iso.trim().parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Send `rb` (to the endpoint shown as `shown`) within [`REMOTE_TIMEOUT`]:
/// the answer's status and text.
pub async fn answer(rb: reqwest::RequestBuilder, shown: &str) -> Result<(reqwest::StatusCode, String), FetchError> {
    let request = |source| FetchError::Request { url: shown.to_string(), source };
    let resp = rb.timeout(REMOTE_TIMEOUT).send().await.map_err(request)?;
    let status = resp.status();
    Ok((status, resp.text().await.map_err(request)?))
}

/// POST `form` to STS at `sts_url` and read the credentials it answers:
/// signed with `signer` (identity, region, time in unix ms) for `AssumeRole`;
/// unsigned for `AssumeRoleWithWebIdentity`, whose token is its own proof.
pub async fn sts_call(
    http: &reqwest::Client,
    sts_url: &str,
    form: &[(&str, &str)],
    signer: Option<(&Identity, &str, i64)>,
) -> Result<Fetched, FetchError> {
    let url = format!("{}/", sts_url.trim_end_matches('/'));
    let shown = crate::secret::redact_url(&url);
    let body = serde_urlencoded::to_string(form).unwrap_or_default();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let signed = match signer {
        Some((identity, region, now_ms)) => {
            sign_post(identity, (region, "sts"), now_ms, &url, (content_type, body.as_bytes()))
                .map_err(FetchError::Sign)?
        }
        None => Vec::new(),
    };
    let mut rb = http.post(&url).header("content-type", content_type).body(body);
    for (name, value) in signed {
        rb = rb.header(name, value);
    }
    let (status, text) = answer(rb, &shown).await?;
    sts_answer(shown, status, &text)
}

/// STS's answer to `AssumeRole` or `AssumeRoleWithWebIdentity` (XML, the
/// same `Credentials` element in both); an error answer's `Code` and `Message`.
fn sts_answer(shown: String, status: reqwest::StatusCode, text: &str) -> Result<Fetched, FetchError> {
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
