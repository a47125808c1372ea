//! The judge under a deadline. `judge()` is pure and normally takes well
//! under a millisecond, but it is CPU work on data from outside: a tick must
//! never hang on it, and SIGTERM must still be honoured between ticks. The
//! judge runs on the blocking pool; past the deadline the tick holds
//! (an inconclusive result) and the loop goes on. A judge that never
//! returns keeps its thread, so while one is still running no second one is
//! started: the ticks hold until it finishes, one core at most is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::judge::{JudgeConfig, JudgeResult, Verdict};
use crate::signals::Observation;

/// Real time one judgement may take before the tick holds instead.
pub const JUDGE_DEADLINE: Duration = Duration::from_secs(2);

/// Why a tick has no judgement of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// This tick's judgement passed the deadline.
    Deadline(Duration),
    /// An earlier judgement is still running.
    StillRunning,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overrun::Deadline(d) => write!(f, "the judge overran its {} ms deadline; holding", d.as_millis()),
            Overrun::StillRunning => f.write_str("an earlier judgement is still running; holding"),
        }
    }
}

/// Runs judgements one at a time, each under a deadline.
#[derive(Default)]
pub struct Deadlined {
    /// A judgement that overran and has not finished yet.
    running: Option<JoinHandle<JudgeResult>>,
}

impl Deadlined {
    /// Judge `obs` with `f` (the real judge, or a slow one in tests) within
    /// `deadline`, or say why not.
    pub async fn judge<F>(
        &mut self,
        obs: Arc<Observation>,
        cfg: JudgeConfig,
        deadline: Duration,
        f: F,
    ) -> Result<JudgeResult, Overrun>
    where
        F: FnOnce(&Observation, &JudgeConfig) -> JudgeResult + Send + 'static,
    {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return Err(Overrun::StillRunning);
        }
        let mut handle = tokio::task::spawn_blocking(move || f(&obs, &cfg));
        match tokio::time::timeout(deadline, &mut handle).await {
            Ok(Ok(result)) => {
                self.running = None;
                Ok(result)
            }
            // The judge panicked: a bug, but the tick must still hold rather than act.
            Ok(Err(join)) => {
                tracing::error!(error = %join, "The judge panicked; holding.");
                self.running = None;
                Err(Overrun::Deadline(deadline))
            }
            Err(_) => {
                self.running = Some(handle);
                Err(Overrun::Deadline(deadline))
            }
        }
    }
}

/// The result of a tick the judge did not finish: inconclusive, so policy holds.
pub fn overrun_result(now_s: u64, why: Overrun) -> JudgeResult {
    JudgeResult {
        verdict: Verdict::Inconclusive,
        now_s,
        window_complete: false,
        findings: vec![],
        summary: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::judge;
    use crate::signals::Observation;

    fn obs() -> Arc<Observation> {
        Arc::new(crate::bench::synthetic_observation(2, 60, 1))
    }

    fn slow(ms: u64) -> impl FnOnce(&Observation, &JudgeConfig) -> JudgeResult + Send + 'static {
        move |o, c| {
            std::thread::sleep(Duration::from_millis(ms));
            judge(o, c)
        }
    }

    #[tokio::test]
    async fn a_judge_within_its_deadline_answers() {
        let mut d = Deadlined::default();
        let r = d.judge(obs(), JudgeConfig::default(), Duration::from_secs(5), judge).await.expect("judged");
        assert_eq!(r.now_s, obs().now_s);
        assert!(!r.findings.is_empty());
    }

    #[tokio::test]
    async fn an_overrunning_judge_holds_at_the_deadline_and_no_second_one_starts() {
        let mut d = Deadlined::default();
        let started = std::time::Instant::now();
        let first = d.judge(obs(), JudgeConfig::default(), Duration::from_millis(50), slow(1_500)).await;
        assert_eq!(first.unwrap_err(), Overrun::Deadline(Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_millis(1_000), "answered at the deadline, not when the judge ended");
        // The slow one still runs: the next tick holds without starting another.
        let second = d.judge(obs(), JudgeConfig::default(), Duration::from_secs(5), judge).await;
        assert_eq!(second.unwrap_err(), Overrun::StillRunning);
        let held = overrun_result(40, Overrun::StillRunning);
        assert_eq!(held.verdict, Verdict::Inconclusive);
        // Once it has finished, judging resumes.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        assert!(d.judge(obs(), JudgeConfig::default(), Duration::from_secs(5), judge).await.is_ok());
    }

    #[tokio::test]
    async fn a_panicking_judge_holds() {
        let mut d = Deadlined::default();
        let r = d.judge(obs(), JudgeConfig::default(), Duration::from_secs(5), |_, _| panic!("bug")).await;
        assert!(r.is_err());
    }
}
