//! The command executor: runs a program with an argument vector — never a
//! shell — with a timeout, a cleared environment plus an allowlist, and its
//! output captured for the ledger (e.g. `helm rollback checkout 41`).

use super::bad;
use crate::field::FieldError;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification};
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

impl CommandConfig {
    /// Every field within bounds; names the first that is not.
    pub fn validate(&self) -> Result<(), FieldError> {
        let argv_ok = |a: &[String]| a.first().is_some_and(|p| !p.trim().is_empty());
        if !argv_ok(&self.rollback) {
            return bad("rollback", "a program and its arguments, e.g. [\"helm\", \"rollback\", \"checkout\"]");
        }
        if self.promote.as_deref().is_some_and(|p| !argv_ok(p)) {
            return bad("promote", "a program and its arguments, or no `promote` at all");
        }
        if self.verify.as_deref().is_some_and(|p| !argv_ok(p)) {
            return bad("verify", "a program and its arguments, or no `verify` at all");
        }
        if self.timeout_s == 0 {
            return bad("timeout_s", "seconds > 0");
        }
        Ok(())
    }
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

    fn template(&self, kind: ActionKind) -> Result<Option<&Vec<String>>, ExecutorError> {
        match kind {
            ActionKind::Rollback => Ok(Some(&self.cfg.rollback)),
            ActionKind::Promote => Ok(self.cfg.promote.as_ref()),
            ActionKind::Raise { .. } => Err(super::cannot_raise(&self.target, "a `command` executor")),
        }
    }

    /// Run `argv` in its own process group; `Ok((exit_ok, output))`. Output
    /// is read with a cap (the rest is drained and dropped) and the values of
    /// passed-through variables are masked in it; on timeout the whole group
    /// is killed, so no grandchild outlives it.
    async fn run(&self, argv: &[String]) -> Result<(bool, String), ExecutorError> {
        let (program, args) = argv.split_first().ok_or_else(|| ExecutorError::setup(&self.target, "empty command"))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear().kill_on_drop(true).stdin(std::process::Stdio::null());
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).process_group(0);
        let mut passed = Vec::new();
        for key in &self.cfg.env_allowlist {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, &v);
                passed.push(v);
            }
        }
        let mut child =
            cmd.spawn().map_err(|e| ExecutorError::setup_from(&self.target, format!("cannot run `{program}`"), e))?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let read = async { tokio::join!(capped(out), capped(err), child.wait()) };
        let timeout = Duration::from_secs(self.cfg.timeout_s.max(1));
        let Ok((stdout, stderr, status)) = tokio::time::timeout(timeout, read).await else {
            kill_group(child.id()).await;
            let what = format!("`{program}` did not finish within {}s and was killed", timeout.as_secs());
            return Err(ExecutorError::refused(&self.target, what));
        };
        let status =
            status.map_err(|e| ExecutorError::unreachable(&self.target, format!("cannot wait for `{program}`"), e))?;
        // Passed-through values are masked as they are and in base64; short
        // ones (a 4-character value) literally only.
        let mask = |t: String| {
            let t = passed.iter().filter(|v| v.len() >= 4).fold(t, |t, v| t.replace(v.as_str(), "***"));
            crate::secret::mask_with(&t, &passed).into_owned()
        };
        let text = format!("$ {} → {}\nstdout: {}\nstderr: {}", argv.join(" "), status, mask(stdout), mask(stderr));
        Ok((status.success(), text))
    }
}

/// Up to [`MAX_OUTPUT`] bytes of a stream as text (control characters
/// dropped); the rest is read and thrown away so the program never blocks on a full pipe.
async fn capped(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    use tokio::io::AsyncReadExt;
    let Some(mut stream) = stream else { return String::new() };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    let text: String = String::from_utf8_lossy(&kept).chars().filter(|c| !c.is_control() || *c == '\n').collect();
    let text = text.trim_end().to_string();
    if total > MAX_OUTPUT { format!("{text}… ({total} bytes)") } else { text }
}

/// Kill a process group by its leader's pid (the program ran with `process_group(0)`).
async fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = tokio::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().await;
    }
}

impl Planner for CommandExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
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

    fn plan_raise(&self, _revision: &str, _weight: u8, _at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Err(super::cannot_raise(&self.target, "a `command` executor"))
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        let Some(template) = self.template(plan.kind)? else {
            return Ok("no command configured for this action; nothing run".into());
        };
        let (ok, text) = self.run(&self.argv(template, &plan)).await?;
        if ok { Ok(text) } else { Err(ExecutorError::refused(&self.target, text)) }
    }

    /// Every program named is found (on PATH, or at its path) and executable;
    /// nothing is run.
    async fn probe(&self) -> Result<String, ExecutorError> {
        let programs = [Some(&self.cfg.rollback), self.cfg.promote.as_ref(), self.cfg.verify.as_ref()];
        let mut found = Vec::new();
        for argv in programs.into_iter().flatten() {
            let program = argv.first().map(String::as_str).unwrap_or_default();
            let path = which(program).ok_or_else(|| {
                ExecutorError::setup(
                    &self.target,
                    format!("program `{program}` not found (PATH or path) or not executable"),
                )
            })?;
            found.push(path.display().to_string());
        }
        Ok(format!("programs found: {}", found.join(", ")))
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        match &self.cfg.verify {
            None => Ok(Verification { verified: false, observed: "no verify command configured".into() }),
            Some(v) => {
                let (ok, text) = self.run(&self.argv(v, &plan)).await?;
                Ok(Verification { verified: ok, observed: text })
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Where `program` would be run from: a path as given, else the first PATH
/// entry holding an executable file of that name.
fn which(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| executable(p))
}
