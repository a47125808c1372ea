//! `backstop releases`: the operator's client for a running agent — list,
//! get (optionally following until the release ends), hold, resume, abort,
//! roll back and promote — over the same API and scopes as curl would use,
//! with the agent's URL and token from the documented variables.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::{CliResult, Failure, out};
use backstop::orchestrator::human::AnswerReply;
use backstop::policy::approval::Ruling;
use backstop::report::text::plain;
use backstop::run::exit;
use backstop::serve::api::ReasonBody;

/// Where the agent is, and who you are to it.
#[derive(Args, Clone)]
pub struct AgentTarget {
    /// The agent's URL: `http://host:port`, or `host:port`.
    #[arg(long, global = true, env = "BACKSTOP_AGENT_URL", default_value = "http://127.0.0.1:8080")]
    pub agent: String,
    /// Environment variable holding your API token (none: the agent's loopback scopes).
    #[arg(long, global = true, default_value = "BACKSTOP_AGENT_TOKEN")]
    pub token_env: String,
}

#[derive(Args)]
pub struct ReleasesArgs {
    #[command(subcommand)]
    command: ReleasesCommand,
    #[command(flatten)]
    target: AgentTarget,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum ReleasesCommand {
    /// Every release the agent runs: state, time, decision, failing metrics, open request.
    List {
        /// Print again whenever it changes (every 2 s) until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One release in full; with --watch, follow it until it ends (exit code of its end).
    Get {
        name: String,
        #[arg(long)]
        watch: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Hold: keep judging, act on nothing (open requests close).
    Hold(Operate),
    /// Resume a held release.
    Resume(Operate),
    /// End the release now; nothing is done to the target.
    Abort(Operate),
    /// Roll back now (approvers only; every guardrail and the rate limit hold; a reason is required).
    Rollback(Operate),
    /// Promote now (approvers only; refused while the judge finds the canary failing; a reason is required).
    Promote(Operate),
}

#[derive(Args)]
struct Operate {
    name: String,
    /// Why (recorded in the ledger with your identity).
    #[arg(long, default_value = "")]
    reason: String,
}

/// A client of one agent's API.
pub struct AgentClient {
    base: reqwest::Url,
    http: reqwest::Client,
    token: Option<String>,
}

impl AgentClient {
    /// `timeout`: how long one request may take (an action waits for its release's loop).
    pub fn new(t: &AgentTarget, timeout: Duration) -> Result<Self, Failure> {
        let base = base_url(&t.agent)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Failure { code: 1, message: super::chain(&e) })?;
        Ok(Self { base, http, token: backstop::secret::from_env(&t.token_env).ok() })
    }

    /// The agent's URL for `segments` (each percent-encoded: a release name is any text).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        u
    }

    /// `GET` the path of `segments`: the JSON body of a 2xx answer, else a failure naming the agent's error.
    pub async fn get(&self, segments: &[&str]) -> Result<Value, Failure> {
        let (status, body) = self.send(self.http.get(self.url(segments))).await?;
        if status.is_success() { Ok(body) } else { Err(refused(status, &body)) }
    }

    /// `POST` to the path of `segments` with a reason: the status and JSON body, whatever the status.
    pub async fn post(&self, segments: &[&str], reason: &str) -> Result<(reqwest::StatusCode, Value), Failure> {
        let req = self.http.post(self.url(segments)).json(&ReasonBody { reason: reason.to_string() });
        self.send(req).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Value), Failure> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| Failure {
            code: exit::BACKEND,
            message: format!(
                "cannot reach the agent at {}: {}",
                self.base.as_str().trim_end_matches('/'),
                super::chain(&e)
            ),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.trim().to_string()));
        Ok((status, body))
    }
}

/// `host:port` → `http://host:port`; anything but an http(s) URL is refused, named.
fn base_url(given: &str) -> Result<reqwest::Url, Failure> {
    let with_scheme = if given.contains("://") { given.to_string() } else { format!("http://{given}") };
    match reqwest::Url::parse(&with_scheme) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && !u.cannot_be_a_base() => Ok(u),
        _ => Err(Failure::usage(format!("--agent {given}: expected the agent's URL, http://host:port or host:port"))),
    }
}

/// The agent's answer to a request it did not carry out: exit 2, its words.
fn refused(status: reqwest::StatusCode, body: &Value) -> Failure {
    let said = body["error"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
    let code = if status.is_server_error() { exit::BACKEND } else { exit::USAGE };
    Failure { code, message: format!("the agent answered {status}: {}", plain(&backstop::secret::mask(&said))) }
}

pub async fn releases(a: ReleasesArgs) -> CliResult {
    match a.command {
        ReleasesCommand::List { watch, format } => list(&a.target, watch, format).await,
        ReleasesCommand::Get { name, watch, format } => get(&a.target, &name, watch, format).await,
        ReleasesCommand::Hold(o) => operate(&a.target, "hold", o).await,
        ReleasesCommand::Resume(o) => operate(&a.target, "resume", o).await,
        ReleasesCommand::Abort(o) => operate(&a.target, "abort", o).await,
        ReleasesCommand::Rollback(o) => operate(&a.target, "rollback", o).await,
        ReleasesCommand::Promote(o) => operate(&a.target, "promote", o).await,
    }
}

async fn list(t: &AgentTarget, watch: bool, format: Format) -> CliResult {
    let client = AgentClient::new(t, Duration::from_secs(30))?;
    let mut last = String::new();
    loop {
        let all = client.get(&["v1", "releases"]).await?;
        let text = match format {
            Format::Json => serde_json::to_string_pretty(&all).unwrap_or_default(),
            Format::Text => table(all.as_array().map(Vec::as_slice).unwrap_or_default()),
        };
        if text != last {
            out(text.trim_end());
            last = text;
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn get(t: &AgentTarget, name: &str, watch: bool, format: Format) -> CliResult {
    let client = AgentClient::new(t, Duration::from_secs(30))?;
    let mut last = String::new();
    loop {
        let v = client.get(&["v1", "releases", name]).await?;
        let text = match format {
            Format::Json => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Format::Text => detail(&v),
        };
        if text != last {
            out(text.trim_end());
            last = text;
        }
        let ended = matches!(v["state"].as_str(), Some("finished" | "failed"));
        if !watch || ended {
            return Ok(ExitCode::from(if watch { end_code(&v) } else { exit::PROMOTED }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The documented exit code of a release the agent shows ended.
fn end_code(v: &Value) -> u8 {
    if v["state"] == "failed" {
        return exit::BACKEND;
    }
    serde_json::from_value::<backstop::release::ReleaseStatus>(v["status"].clone())
        .map(|s| exit::for_status(&s, false))
        .unwrap_or(exit::PROMOTED)
}

async fn operate(t: &AgentTarget, action: &str, o: Operate) -> CliResult {
    // An action waits for the release's loop (up to a tick, or an executor's verification).
    let client = AgentClient::new(t, Duration::from_secs(660))?;
    let (status, v) = client.post(&["v1", "releases", &o.name, action], &o.reason).await?;
    if !status.is_success() && v.get("ruling").is_none() {
        return Err(refused(status, &v));
    }
    match v.get("ruling") {
        // A person's rollback or promotion: policy's ruling, as `approve` reports it.
        Some(_) => {
            let reply: backstop::orchestrator::human::AnswerReply = serde_json::from_value(v)
                .map_err(|e| Failure { code: exit::BACKEND, message: format!("the agent's reply: {e}") })?;
            Ok(ExitCode::from(report(&format!("{} {action}", o.name), &reply)))
        }
        None => {
            out(&format!("{}: {action}: now {}", plain(&o.name), v["state"].as_str().unwrap_or("?")));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn text(v: &Value) -> String {
    plain(v.as_str().unwrap_or("-"))
}

/// One line per release.
fn table(all: &[Value]) -> String {
    let mut o =
        format!("{:<20} {:<18} {:>11}  {:<16} {:<24} {}\n", "NAME", "STATE", "TIME", "DECISION", "FAILING", "REQUEST");
    for v in all {
        let time = format!("{}/{}s", v["now_s"].as_u64().unwrap_or(0), v["duration_s"].as_u64().unwrap_or(0));
        let failing: Vec<String> = v["failing"].as_array().into_iter().flatten().map(text).collect();
        let failing = if failing.is_empty() { "-".to_string() } else { failing.join(",") };
        o.push_str(&format!(
            "{:<20} {:<18} {:>11}  {:<16} {:<24} {}\n",
            text(&v["name"]),
            text(&v["state"]),
            time,
            text(&v["decision"]["decision"]),
            failing,
            text(&v["pending_approval"]["request"]["id"]),
        ));
    }
    o
}

/// One release in full.
fn detail(v: &Value) -> String {
    let mut o = format!("{} ({})\n", text(&v["name"]), text(&v["release_id"]));
    o.push_str(&format!(
        "  service {}, target {}, revision {}\n",
        text(&v["service"]),
        text(&v["target"]),
        text(&v["candidate_revision"])
    ));
    o.push_str(&format!(
        "  state {} at t={}s of {}s; decision {}\n",
        text(&v["state"]),
        v["now_s"].as_u64().unwrap_or(0),
        v["duration_s"].as_u64().unwrap_or(0),
        text(&v["decision"]["decision"])
    ));
    if let Some(reason) = v["decision"]["reason"].as_str() {
        o.push_str(&format!("  why: {}\n", plain(reason)));
    }
    if v["judge"].is_object() {
        o.push_str(&format!("  judge: {} — {}\n", text(&v["judge"]["verdict"]), text(&v["judge"]["summary"])));
    }
    let req = &v["pending_approval"]["request"];
    if req.is_object() {
        o.push_str(&format!(
            "  open request {}: {} (answer with `backstop approve {}` or `backstop reject {}`)\n",
            text(&req["id"]),
            plain(&req["proposed"].to_string()),
            text(&req["id"]),
            text(&req["id"])
        ));
    }
    if v["status"].is_object() {
        o.push_str(&format!("  ended: {}\n", plain(&v["status"].to_string())));
    }
    if let Some(e) = v["error"].as_str() {
        o.push_str(&format!("  error: {}\n", plain(e)));
    }
    o
}

/// Print a ruling an agent sent back for request `id`; the exit code it means.
pub(super) fn report(id: &str, r: &AnswerReply) -> u8 {
    match (&r.ruling, &r.status) {
        (Ruling::Execute { decision }, Some(status)) => {
            out(&format!("{id}: approved; {} ran: {}", decision.label(), status.label()));
            exit::for_status(status, false)
        }
        (Ruling::Execute { decision }, None) => {
            out(&format!("{id}: approved; {} ran", decision.label()));
            exit::PROMOTED
        }
        (Ruling::Rejected, _) => {
            out(&format!("{id}: rejected; the release is held"));
            exit::HELD
        }
        (Ruling::Stale { reason }, _) => {
            out(&format!("{id}: not executed: {reason}"));
            exit::HELD
        }
        (Ruling::Refused { reason, .. }, _) => {
            out(&format!("{id}: refused: {reason}"));
            exit::USAGE
        }
        (Ruling::Closed { closure }, _) => {
            out(&format!("{id}: not executed: {}", closure.describe()));
            exit::USAGE
        }
    }
}
