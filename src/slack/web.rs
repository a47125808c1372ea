//! The Slack Web API methods backstop calls, typed. The base URL is
//! configurable (a test's fake Slack, an enterprise proxy); the token goes
//! only into the Authorization header and never into an error or a log.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::wire::{Block, Modal, Reply};

/// A Web API call failed.
#[derive(Debug, Error)]
pub enum WebError {
    /// No answer (connection refused, timeout).
    #[error("slack {method}: Slack could not be reached")]
    Unreachable {
        /// Method called.
        method: String,
        /// Transport error (carries no token: it is a header, not in the URL).
        #[source]
        source: reqwest::Error,
    },
    /// HTTP 429: retry after this many seconds (Slack's `Retry-After`).
    #[error("slack {method}: rate limited, retry after {retry_after_s} s")]
    RateLimited {
        /// Method called.
        method: String,
        /// Seconds.
        retry_after_s: u64,
    },
    /// `"ok": false` with Slack's error code (`channel_not_found`, `not_authed`, …).
    #[error("slack {method}: {code}")]
    Api {
        /// Method called.
        method: String,
        /// Slack's error code.
        code: String,
    },
    /// Another HTTP status.
    #[error("slack {method}: HTTP {status}")]
    Status {
        /// Method called.
        method: String,
        /// Status code.
        status: u16,
    },
    /// The answer is not the documented shape.
    #[error("slack {method}: the answer is not the documented shape")]
    Shape {
        /// Method called.
        method: String,
        /// What did not match.
        #[source]
        source: serde_json::Error,
    },
}

impl WebError {
    /// The method that failed.
    pub fn method(&self) -> &str {
        match self {
            WebError::Unreachable { method, .. }
            | WebError::RateLimited { method, .. }
            | WebError::Api { method, .. }
            | WebError::Status { method, .. }
            | WebError::Shape { method, .. } => method,
        }
    }

    /// Worth retrying later (Slack down, slow or rate limiting), as opposed
    /// to a refusal that will not change (`channel_not_found`, `not_authed`).
    pub fn transient(&self) -> bool {
        match self {
            WebError::Unreachable { .. } | WebError::RateLimited { .. } => true,
            WebError::Status { status, .. } => *status >= 500,
            WebError::Api { code, .. } => matches!(code.as_str(), "ratelimited" | "internal_error" | "fatal_error"),
            WebError::Shape { .. } => false,
        }
    }
}

/// A posted message's address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Posted {
    /// Channel id.
    pub channel: String,
    /// Message ts: the id `chat.update` and thread replies use.
    pub ts: String,
}

/// `users.info`'s user, as far as authorisation needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfo {
    /// Id.
    pub id: String,
    /// Deactivated or deleted: never authorised.
    #[serde(default)]
    pub deleted: bool,
    /// Bots never approve.
    #[serde(default)]
    pub is_bot: bool,
}

#[derive(Deserialize)]
struct UserAnswer {
    user: UserInfo,
}

#[derive(Deserialize)]
struct GroupAnswer {
    users: Vec<String>,
}

#[derive(Deserialize)]
struct UploadUrl {
    upload_url: String,
    file_id: String,
}

/// `auth.test`: who the bot token belongs to.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthTest {
    /// Workspace name.
    #[serde(default)]
    pub team: String,
    /// The bot's user id.
    #[serde(default)]
    pub user_id: String,
}

#[derive(Deserialize)]
struct ConnectionUrl {
    url: String,
}

/// The body of the `chat.*` methods.
#[derive(Serialize, Default)]
struct ChatBody<'a> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_ts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    text: &'a str,
    blocks: &'a [Block],
}

/// One file in `files.completeUploadExternal`.
#[derive(Serialize)]
struct FileRef<'a> {
    id: &'a str,
    title: &'a str,
}

/// A success whose other fields backstop does not need.
#[derive(Deserialize)]
struct Ignored {}

/// Slack's envelope: `ok`, and `error` when not.
#[derive(Deserialize)]
struct Status {
    ok: bool,
    #[serde(default)]
    error: String,
}

/// A Web API client with one token.
#[derive(Clone)]
pub struct WebApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for WebApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebApi").field("base", &self.base).field("token", &"<redacted>").finish()
    }
}

impl WebApi {
    /// A client for `base` (e.g. `https://slack.com/api/`) with `token`.
    pub fn new(base: &str, token: String) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, base: format!("{}/", base.trim_end_matches('/')), token })
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, req: reqwest::RequestBuilder) -> Result<T, WebError> {
        let m = || method.to_string();
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| WebError::Unreachable { method: m(), source: source.without_url() })?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let retry_after_s = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(1);
            return Err(WebError::RateLimited { method: m(), retry_after_s });
        }
        if !status.is_success() {
            return Err(WebError::Status { method: m(), status: status.as_u16() });
        }
        let body = resp.bytes().await.map_err(|source| WebError::Unreachable { method: m(), source })?;
        let head: Status = serde_json::from_slice(&body).map_err(|source| WebError::Shape { method: m(), source })?;
        if !head.ok {
            let code = if head.error.is_empty() { "unknown_error".into() } else { head.error };
            return Err(WebError::Api { method: m(), code });
        }
        serde_json::from_slice(&body).map_err(|source| WebError::Shape { method: m(), source })
    }

    fn url(&self, method: &str) -> String {
        format!("{}{method}", self.base)
    }

    fn json(&self, method: &str, body: &ChatBody<'_>) -> reqwest::RequestBuilder {
        self.http.post(self.url(method)).json(body)
    }

    /// `chat.postMessage`: a new message, or a reply in `thread_ts`.
    pub async fn post(&self, channel: &str, thread_ts: Option<&str>, msg: &Reply) -> Result<Posted, WebError> {
        let body = ChatBody { channel, thread_ts, text: &msg.text, blocks: &msg.blocks, ..ChatBody::default() };
        self.call("chat.postMessage", self.json("chat.postMessage", &body)).await
    }

    /// `chat.update`: replace a message backstop posted.
    pub async fn update(&self, at: &Posted, msg: &Reply) -> Result<Posted, WebError> {
        let body = ChatBody {
            channel: &at.channel,
            ts: Some(&at.ts),
            text: &msg.text,
            blocks: &msg.blocks,
            ..ChatBody::default()
        };
        self.call("chat.update", self.json("chat.update", &body)).await
    }

    /// `chat.postEphemeral`: only `user` sees it.
    pub async fn ephemeral(&self, channel: &str, user: &str, text: &str, blocks: &[Block]) -> Result<(), WebError> {
        let body = ChatBody { channel, user: Some(user), text, blocks, ..ChatBody::default() };
        self.call::<Ignored>("chat.postEphemeral", self.json("chat.postEphemeral", &body)).await.map(|_| ())
    }

    /// `views.open`: show `view` to whoever made `trigger_id` (valid for 3 s after their click).
    pub async fn open_view(&self, trigger_id: &str, view: &Modal) -> Result<(), WebError> {
        #[derive(Serialize)]
        struct Open<'a> {
            trigger_id: &'a str,
            view: &'a Modal,
        }
        let req = self.http.post(self.url("views.open")).json(&Open { trigger_id, view });
        self.call::<Ignored>("views.open", req).await.map(|_| ())
    }

    /// `users.info`.
    pub async fn user(&self, id: &str) -> Result<UserInfo, WebError> {
        let req = self.http.post(self.url("users.info")).form(&[("user", id)]);
        self.call::<UserAnswer>("users.info", req).await.map(|a| a.user)
    }

    /// `usergroups.users.list`: member ids of group `id`.
    pub async fn group_members(&self, id: &str) -> Result<Vec<String>, WebError> {
        let req = self.http.post(self.url("usergroups.users.list")).form(&[("usergroup", id)]);
        self.call::<GroupAnswer>("usergroups.users.list", req).await.map(|a| a.users)
    }

    /// `auth.test`: the token works (read-only; for `backstop config check`).
    pub async fn auth_test(&self) -> Result<AuthTest, WebError> {
        self.call("auth.test", self.http.post(self.url("auth.test"))).await
    }

    /// `apps.connections.open` (with the app-level `xapp-` token): a Socket Mode URL.
    pub async fn open_connection(&self) -> Result<String, WebError> {
        let req = self.http.post(self.url("apps.connections.open"));
        self.call::<ConnectionUrl>("apps.connections.open", req).await.map(|a| a.url)
    }

    /// Upload a file into a thread: `files.getUploadURLExternal`, the bytes
    /// to the URL it gives, then `files.completeUploadExternal` (the retired
    /// `files.upload` is never used).
    pub async fn upload(&self, at: &Posted, name: &str, title: &str, bytes: Vec<u8>) -> Result<(), WebError> {
        let len = bytes.len().to_string();
        let req = self.http.post(self.url("files.getUploadURLExternal")).form(&[("filename", name), ("length", &len)]);
        let slot: UploadUrl = self.call("files.getUploadURLExternal", req).await?;
        let method = "upload".to_string();
        let resp = self
            .http
            .post(&slot.upload_url)
            .body(bytes)
            .send()
            .await
            .map_err(|source| WebError::Unreachable { method: method.clone(), source: source.without_url() })?;
        if !resp.status().is_success() {
            return Err(WebError::Status { method, status: resp.status().as_u16() });
        }
        let files = serde_json::to_string(&[FileRef { id: &slot.file_id, title }])
            .map_err(|source| WebError::Shape { method: "files.completeUploadExternal".into(), source })?;
        let form = [("files", files.as_str()), ("channel_id", &at.channel), ("thread_ts", &at.ts)];
        let req = self.http.post(self.url("files.completeUploadExternal")).form(&form);
        self.call::<Ignored>("files.completeUploadExternal", req).await.map(|_| ())
    }

    /// Answer through a command's or click's `response_url` (no token: the URL is the credential).
    pub async fn respond(&self, response_url: &str, msg: &Reply) -> Result<(), WebError> {
        let method = "response_url".to_string();
        let resp = self
            .http
            .post(response_url)
            .json(msg)
            .send()
            .await
            .map_err(|source| WebError::Unreachable { method: method.clone(), source: source.without_url() })?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            429 => Err(WebError::RateLimited { method, retry_after_s: 1 }),
            status => Err(WebError::Status { method, status }),
        }
    }
}
