//! The container credentials endpoint: an ECS task role
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, on the ECS agent's link-local
//! address) or EKS Pod Identity and other agents
//! (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, with an authorization token from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read again at each fetch, or
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`). As the SDKs do, a full URI over plain
//! HTTP must point at a loopback address or one of the agents' own: anything
//! else would send the token, and trust credentials, in the clear.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::origin::{Container, ContainerToken, FetchError, Fetched, unix_s};

/// ECS's agent, where a relative URI points.
const ECS_AGENT: &str = "http://169.254.170.2";
/// The agent answers on the node; a slow answer means it is not there.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` points somewhere the SDKs refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "AWS_CONTAINER_CREDENTIALS_FULL_URI `{0}` must be https, or http to a loopback address or the \
     container agent's (169.254.170.2, 169.254.170.23, fd00:ec2::23)"
)]
pub struct UnsafeUri(pub String);

impl Container {
    /// The endpoint the environment names (`None`: neither URI variable is set).
    pub fn choose(var: &impl Fn(&str) -> Option<String>) -> Result<Option<Container>, UnsafeUri> {
        let token = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            .map(|f| ContainerToken::File(f.into()))
            .or_else(|| var("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(ContainerToken::Value));
        if let Some(relative) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            let path = if relative.starts_with('/') { relative } else { format!("/{relative}") };
            return Ok(Some(Container { url: format!("{ECS_AGENT}{path}"), token }));
        }
        let Some(full) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") else { return Ok(None) };
        if !allowed(&full) {
            return Err(UnsafeUri(crate::secret::redact_url(&full)));
        }
        if let Some(ContainerToken::Value(v)) = &token {
            crate::secret::remember(v);
        }
        Ok(Some(Container { url: full, token }))
    }
}

/// https anywhere; http only to loopback or the agents' addresses.
fn allowed(uri: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(uri) else { return false };
    match url.scheme() {
        "https" => true,
        "http" => {
            let host = url.host_str().unwrap_or_default();
            if host == "localhost" {
                return true;
            }
            let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else { return false };
            let agents: [IpAddr; 3] =
                [[169, 254, 170, 2].into(), [169, 254, 170, 23].into(), [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23].into()];
            ip.is_loopback() || agents.contains(&ip)
        }
        _ => false,
    }
}

/// The endpoint's answer (the same fields as the instance metadata's document).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// Fetch the credentials document.
pub async fn fetch(http: &reqwest::Client, c: &Container) -> Result<Fetched, FetchError> {
    let shown = crate::secret::redact_url(&c.url);
    let token = match &c.token {
        Some(ContainerToken::File(path)) => {
            let t = std::fs::read_to_string(path)
                .map_err(|source| FetchError::TokenFile { path: path.display().to_string(), source })?;
            crate::secret::remember(t.trim());
            Some(t.trim().to_string())
        }
        Some(ContainerToken::Value(v)) => Some(v.clone()),
        None => None,
    };
    let mut rb = http.get(&c.url).timeout(TIMEOUT);
    if let Some(t) = token {
        rb = rb.header("authorization", t);
    }
    let request = |source| FetchError::Request { url: shown.clone(), source };
    let resp = rb.send().await.map_err(request)?;
    let status = resp.status();
    if !status.is_success() {
        let message = "the container credentials endpoint refused".to_string();
        return Err(FetchError::Refused { url: shown, code: status.as_u16().to_string(), message });
    }
    let malformed = |what: &str| FetchError::Malformed { url: shown.clone(), what: what.into() };
    let d: Document = resp.json().await.map_err(|_| malformed("the credentials document"))?;
    Ok(Fetched {
        key_id: d.access_key_id,
        secret: d.secret_access_key,
        token: Some(d.token),
        expires_s: Some(unix_s(&d.expiration).ok_or_else(|| malformed("Expiration as ISO 8601"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn a_relative_uri_goes_to_the_ecs_agent_and_a_full_one_only_where_the_sdks_allow() {
        let ecs = Container::choose(&env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc")]));
        assert_eq!(ecs, Ok(Some(Container { url: "http://169.254.170.2/v2/credentials/abc".into(), token: None })));
        let pod_identity = [
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/secrets/pods.eks.amazonaws.com/token"),
        ];
        match Container::choose(&env(&pod_identity)) {
            Ok(Some(Container { token: Some(ContainerToken::File(f)), .. })) => assert!(f.ends_with("token")),
            other => panic!("{other:?}"),
        }
        for ok in ["https://creds.example.com/x", "http://127.0.0.1:8080/c", "http://[::1]/c", "http://localhost/c"] {
            assert!(allowed(ok), "{ok}");
        }
        for refused in ["http://creds.example.com/x", "http://10.0.0.5/c", "ftp://127.0.0.1/c", "not a url"] {
            assert!(!allowed(refused), "{refused}");
        }
        let e = Container::choose(&env(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.5/c")])).unwrap_err();
        assert!(e.to_string().contains("must be https"), "{e}");
        assert_eq!(Container::choose(&env(&[])), Ok(None));
    }
}
