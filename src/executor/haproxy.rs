//! The HAProxy executor, through the Runtime API (`stats socket ... level
//! admin`, Unix or TCP): rollback sets the canary's weight to 0 (and drains
//! it), promotion moves all weight to the canary, a ramp step splits
//! `full_weight` between the two by the step's percentage; `verify` reads
//! the weights back with `get weight`. One text command per connection.
//!
//! Idempotent by construction: the commands set absolute weights and states,
//! so running a plan twice leaves the same state as once, and `verify` can
//! always tell whether a plan took effect (what recovery after a crash needs).

use super::bad;
use crate::field::FieldError;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification};
use crate::policy::RollbackPlan;

/// An HAProxy canary (or blue/green pair) as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// Runtime API socket: a Unix socket path, or `host:port` for `ipv4@host:port` sockets.
    pub socket: String,
    /// Backend holding both servers.
    pub backend: String,
    /// Server running the canary (or green).
    pub canary_server: String,
    /// Server running the stable version (or blue).
    pub stable_server: String,
    /// Weight the receiving server gets (0–256).
    #[serde(default = "full_weight")]
    pub full_weight: u32,
    /// On rollback also set the canary to `drain`, so it finishes its requests and takes no new ones.
    #[serde(default = "yes")]
    pub drain_canary: bool,
    /// Seconds per Runtime API command.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn full_weight() -> u32 {
    100
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    5
}

/// Drives one backend's weights.
pub struct HaproxyExecutor {
    target: String,
    cfg: HaproxyConfig,
}

impl HaproxyConfig {
    /// Every field within bounds; names the first that is not.
    pub fn validate(&self) -> Result<(), FieldError> {
        // A name is one word of the Runtime API: a `;` or a newline would start another command.
        let word =
            |s: &str| !s.trim().is_empty() && !s.contains(|c: char| c == ';' || c.is_whitespace() || c.is_control());
        if self.full_weight == 0 || self.full_weight > 256 {
            return bad("full_weight", "a weight from 1 to 256 (0 would send no traffic anywhere)");
        }
        if self.socket.trim().is_empty() || !word(&self.backend) {
            return bad("socket", "a Runtime API socket (Unix path or host:port) and a backend name (one word)");
        }
        if !word(&self.canary_server) || !word(&self.stable_server) || self.canary_server == self.stable_server {
            return bad("canary_server", "two different server names, one word each");
        }
        if self.timeout_s == 0 {
            return bad("timeout_s", "seconds > 0");
        }
        Ok(())
    }
}

impl HaproxyExecutor {
    /// An executor for `target`.
    pub fn new(target: impl Into<String>, cfg: HaproxyConfig) -> Self {
        Self { target: target.into(), cfg }
    }

    /// Send one Runtime API command and return its answer.
    pub async fn command(&self, cmd: &str) -> Result<String, ExecutorError> {
        let io = async {
            let mut answer = String::new();
            if self.cfg.socket.starts_with('/') {
                let mut s = tokio::net::UnixStream::connect(&self.cfg.socket).await?;
                s.write_all(format!("{cmd}\n").as_bytes()).await?;
                s.read_to_string(&mut answer).await?;
            } else {
                let mut s = tokio::net::TcpStream::connect(&self.cfg.socket).await?;
                s.write_all(format!("{cmd}\n").as_bytes()).await?;
                s.read_to_string(&mut answer).await?;
            }
            Ok::<_, std::io::Error>(answer)
        };
        tokio::time::timeout(Duration::from_secs(self.cfg.timeout_s.max(1)), io)
            .await
            .map_err(|_| {
                let what = format!("HAProxy Runtime API at {} did not answer `{cmd}` in time", self.cfg.socket);
                ExecutorError::refused(&self.target, what)
            })?
            .map_err(|e| {
                let what = format!("HAProxy Runtime API at {} is unreachable", self.cfg.socket);
                ExecutorError::unreachable(&self.target, what, e)
            })
    }

    /// Commands that change state answer with an empty line; anything else is an error.
    async fn set(&self, cmd: &str) -> Result<(), ExecutorError> {
        let answer = self.command(cmd).await?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(ExecutorError::refused(&self.target, format!("`{cmd}` refused: {}", answer.trim())))
        }
    }

    /// Current weight of `server` (`get weight` answers "<current> (initial <n>)").
    pub async fn weight(&self, server: &str) -> Result<u32, ExecutorError> {
        let cmd = format!("get weight {}/{server}", self.cfg.backend);
        let answer = self.command(&cmd).await?;
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| ExecutorError::refused(&self.target, format!("`{cmd}` answered `{}`", answer.trim())))
    }

    /// The two servers' weights for `percent` of traffic on the canary:
    /// HAProxy splits by relative weight, so `full_weight` is shared out,
    /// neither side below 1 (0 would stop a side, not thin it).
    fn split(&self, percent: u8) -> (u32, u32) {
        let full = self.cfg.full_weight;
        let canary = ((u64::from(full) * u64::from(percent) + 50) / 100) as u32;
        let canary = canary.clamp(1, full.saturating_sub(1).max(1));
        (canary, full.saturating_sub(canary).max(1))
    }

    fn commands(&self, kind: ActionKind) -> Vec<String> {
        let (be, canary, stable, full) =
            (&self.cfg.backend, &self.cfg.canary_server, &self.cfg.stable_server, self.cfg.full_weight);
        match kind {
            ActionKind::Rollback => {
                let mut c = vec![
                    format!("set server {be}/{stable} weight {full}"),
                    format!("set server {be}/{canary} weight 0"),
                ];
                if self.cfg.drain_canary {
                    c.push(format!("set server {be}/{canary} state drain"));
                }
                c
            }
            ActionKind::Promote => vec![
                format!("set server {be}/{canary} state ready"),
                format!("set server {be}/{canary} weight {full}"),
                format!("set server {be}/{stable} weight 0"),
            ],
            // Canary first: each command alone moves traffic only toward the planned split.
            ActionKind::Raise { weight } => {
                let (c, st) = self.split(weight);
                vec![
                    format!("set server {be}/{canary} state ready"),
                    format!("set server {be}/{canary} weight {c}"),
                    format!("set server {be}/{stable} weight {st}"),
                ]
            }
        }
    }
}

impl Planner for HaproxyExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let mut steps: Vec<String> =
            self.commands(ActionKind::Rollback).iter().map(|c| format!("HAProxy: {c}")).collect();
        steps.push(format!("read back: get weight {}/{} = 0", self.cfg.backend, self.cfg.canary_server));
        Ok(ActionPlan::new(ActionKind::Rollback, &self.target, &rollback.to_revision, at_s, steps))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let steps = self.commands(ActionKind::Promote).iter().map(|c| format!("HAProxy: {c}")).collect();
        Ok(ActionPlan::new(ActionKind::Promote, &self.target, revision, at_s, steps))
    }

    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let kind = ActionKind::Raise { weight };
        let mut steps: Vec<String> = self.commands(kind).iter().map(|c| format!("HAProxy: {c}")).collect();
        let (c, st) = self.split(weight);
        steps.push(format!(
            "read back: get weight {0}/{1} = {c}, {0}/{2} = {st}",
            self.cfg.backend, self.cfg.canary_server, self.cfg.stable_server
        ));
        Ok(ActionPlan::new(kind, &self.target, revision, at_s, steps))
    }
}

#[async_trait]
impl Executor for HaproxyExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        // Stable first on rollback, canary first on promotion and a raise: the backend always has a server with weight.
        let cmds = self.commands(plan.kind);
        for c in &cmds {
            self.set(c).await?;
        }
        Ok(format!("HAProxy {}: {}", self.cfg.socket, cmds.join("; ")))
    }

    async fn probe(&self) -> Result<String, ExecutorError> {
        let canary = self.weight(&self.cfg.canary_server).await?;
        let stable = self.weight(&self.cfg.stable_server).await?;
        Ok(format!(
            "HAProxy {} backend {}: {} weight {canary}, {} weight {stable}",
            self.cfg.socket, self.cfg.backend, self.cfg.canary_server, self.cfg.stable_server
        ))
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        let canary = self.weight(&self.cfg.canary_server).await?;
        let stable = self.weight(&self.cfg.stable_server).await?;
        let verified = match plan.kind {
            ActionKind::Rollback => canary == 0 && stable > 0,
            ActionKind::Promote => canary > 0 && stable == 0,
            ActionKind::Raise { weight } => (canary, stable) == self.split(weight),
        };
        Ok(Verification {
            verified,
            observed: format!(
                "{}: {} weight {canary}, {} weight {stable}",
                self.cfg.backend, self.cfg.canary_server, self.cfg.stable_server
            ),
        })
    }
}
