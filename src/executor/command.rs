//! The command executor: runs a program with an argument vector — never a
//! shell — with a timeout, a cleared environment plus an allowlist, and its
//! output captured for the ledger (e.g. `helm rollback checkout 41`).

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionKind, ActionPlan, ExecutionPermit, Executor, ExecutorError, Planner, Verification, ensure_target};
use crate::policy::RollbackPlan;

/// Output kept per stream, so a chatty tool cannot flood the ledger.
const MAX_OUTPUT: usize = 16 * 1024;

/// A command executor as configured. In every argument, `{target}`,
/// `{to_revision}`, `{from_revision}` and `{plan_id}` are replaced; each stays
/// one argument. `{plan_id}` is the action's idempotency key: the same plan
/// id is never executed twice by backstop (after a crash the plan is
/// reconciled through `verify`, not re-run), and a tool that records it can
/// refuse a duplicate on its side too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program and arguments of a rollback, e.g. `["helm", "rollback", "checkout", "{to_revision}"]`.
    pub rollback: Vec<String>,
    /// Program and arguments of a promotion; without it promotions are left to the pipeline.
    #[serde(default)]
    pub promote: Option<Vec<String>>,
    /// Program whose exit status 0 confirms the action took effect; without it nothing verifies.
    #[serde(default)]
    pub verify: Option<Vec<String>>,
    /// Seconds before the program is killed.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Variables passed through from backstop's environment; all others are removed.
    #[serde(default)]
    pub env_allowlist: Vec<String>,
}

fn default_timeout() -> u64 {
    60
}

/// Runs configured commands against one target.
pub struct CommandExecutor {
    target: String,
    from_revision: String,
    cfg: CommandConfig,
}

impl CommandExecutor {
    /// An executor for `target`, rolling back from `from_revision`.
    pub fn new(target: impl Into<String>, from_revision: impl Into<String>, cfg: CommandConfig) -> Self {
        Self { target: target.into(), from_revision: from_revision.into(), cfg }
    }

    fn argv(&self, template: &[String], plan: &ActionPlan) -> Vec<String> {
        template
            .iter()
            .map(|a| {
                a.replace("{target}", &plan.target)
                    .replace("{to_revision}", &plan.to_revision)
                    .replace("{from_revision}", &self.from_revision)
                    .replace("{plan_id}", &plan.id)
            })
            .collect()
    }

    fn template(&self, kind: ActionKind) -> Option<&Vec<String>> {
        match kind {
            ActionKind::Rollback => Some(&self.cfg.rollback),
            ActionKind::Promote => self.cfg.promote.as_ref(),
        }
    }

    /// Run `argv`; `Ok((exit_ok, output))`.
    async fn run(&self, argv: &[String]) -> Result<(bool, String), ExecutorError> {
        let fail = |reason: String| ExecutorError::Failed { target: self.target.clone(), reason };
        let (program, args) = argv.split_first().ok_or_else(|| fail("empty command".into()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear().kill_on_drop(true).stdin(std::process::Stdio::null());
        for key in &self.cfg.env_allowlist {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        let timeout = Duration::from_secs(self.cfg.timeout_s.max(1));
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| fail(format!("`{program}` did not finish within {}s and was killed", timeout.as_secs())))?
            .map_err(|e| fail(format!("cannot run `{program}`: {e}")))?;
        let clip = |b: &[u8]| {
            let s = String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)]).trim_end().to_string();
            if b.len() > MAX_OUTPUT { format!("{s}… ({} bytes)", b.len()) } else { s }
        };
        let text = format!(
            "$ {} → {}\nstdout: {}\nstderr: {}",
            argv.join(" "),
            out.status,
            clip(&out.stdout),
            clip(&out.stderr)
        );
        Ok((out.status.success(), text))
    }
}

impl Planner for CommandExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        ensure_target(&self.target, &rollback.target)?;
        let mut plan = ActionPlan::new(ActionKind::Rollback, &self.target, &rollback.to_revision, at_s, vec![]);
        plan.steps.push(format!("run {:?}", self.argv(&self.cfg.rollback, &plan)));
        if let Some(v) = &self.cfg.verify {
            plan.steps.push(format!("verify with {:?} (exit 0 = done)", self.argv(v, &plan)));
        }
        Ok(plan)
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let mut plan = ActionPlan::new(ActionKind::Promote, &self.target, revision, at_s, vec![]);
        plan.steps.push(match &self.cfg.promote {
            Some(p) => format!("run {:?}", self.argv(p, &plan)),
            None => format!("no promote command configured for {}: the pipeline promotes {revision}", self.target),
        });
        Ok(plan)
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    async fn execute(&self, plan: &ActionPlan, permit: ExecutionPermit) -> Result<String, ExecutorError> {
        permit.check(plan)?;
        ensure_target(&self.target, &plan.target)?;
        let Some(template) = self.template(plan.kind) else {
            return Ok("no command configured for this action; nothing run".into());
        };
        let (ok, text) = self.run(&self.argv(template, plan)).await?;
        if ok { Ok(text) } else { Err(ExecutorError::Failed { target: self.target.clone(), reason: text }) }
    }

    async fn verify(&self, plan: &ActionPlan) -> Result<Verification, ExecutorError> {
        match &self.cfg.verify {
            None => Ok(Verification { verified: false, observed: "no verify command configured".into() }),
            Some(v) => {
                let (ok, text) = self.run(&self.argv(v, plan)).await?;
                Ok(Verification { verified: ok, observed: text })
            }
        }
    }
}

#[cfg(test)]
mod tests;
