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

use crate::judge::{JudgeConfig, JudgeResult, LogMiner, Verdict};
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

/// A judge function: the real one, or a slow one in tests.
pub trait JudgeFn: Fn(&Observation, &JudgeConfig, &mut LogMiner) -> JudgeResult + Send + Sync + 'static {}
impl<F: Fn(&Observation, &JudgeConfig, &mut LogMiner) -> JudgeResult + Send + Sync + 'static> JudgeFn for F {}

/// Runs judgements one at a time, each under a deadline, keeping the
/// release's log miner between them. When the whole judgement cannot be had
/// in time (a flood of log lines, a bug), the tick is judged again without
/// log templates, so a failing metric still rolls back; such a partial
/// judgement never passes (its `Pass` holds instead).
#[derive(Default)]
pub struct Deadlined {
    /// A whole judgement that overran and has not finished yet (it holds the miner).
    running: Option<JoinHandle<(JudgeResult, LogMiner)>>,
    /// A partial judgement that overran too.
    partial: Option<JoinHandle<JudgeResult>>,
    /// The release's log miner, between judgements.
    miner: Option<LogMiner>,
}

impl Deadlined {
    /// Judge `obs` with `f` within `deadline` (twice that at most, when the
    /// partial judgement is needed), or say why not.
    pub async fn judge<F: JudgeFn>(
        &mut self,
        obs: Arc<Observation>,
        cfg: JudgeConfig,
        deadline: Duration,
        f: F,
    ) -> Result<JudgeResult, Overrun> {
        let f = Arc::new(f);
        if self.running.as_ref().is_none_or(JoinHandle::is_finished) {
            if let Some(done) = self.running.take()
                && let Ok((_, miner)) = done.await
            {
                self.miner = Some(miner);
            }
            let mut miner = self.miner.take().unwrap_or_default();
            let (o, c, g) = (obs.clone(), cfg.clone(), f.clone());
            let mut handle = tokio::task::spawn_blocking(move || (g(&o, &c, &mut miner), miner));
            match tokio::time::timeout(deadline, &mut handle).await {
                Ok(Ok((result, miner))) => {
                    self.miner = Some(miner);
                    return Ok(result);
                }
                // The judge panicked: a bug, but the tick must still hold rather than act.
                Ok(Err(join)) => {
                    tracing::error!(error = %join, "The judge panicked; holding.");
                    return Err(Overrun::Deadline(deadline));
                }
                Err(_) => self.running = Some(handle),
            }
        }
        self.partial_judgement(obs, cfg, deadline, f).await
    }

    /// The tick judged without log templates: metrics, guards and model
    /// signals only. A `Fail` stands; a `Pass` holds (logs were not seen).
    async fn partial_judgement<F: JudgeFn>(
        &mut self,
        obs: Arc<Observation>,
        mut cfg: JudgeConfig,
        deadline: Duration,
        f: Arc<F>,
    ) -> Result<JudgeResult, Overrun> {
        if self.partial.as_ref().is_some_and(|h| !h.is_finished()) {
            return Err(Overrun::StillRunning);
        }
        cfg.logs.enabled = false;
        let mut handle = tokio::task::spawn_blocking(move || f(&obs, &cfg, &mut LogMiner::default()));
        match tokio::time::timeout(deadline, &mut handle).await {
            Ok(Ok(mut r)) => {
                self.partial = None;
                let note = "log templates not judged at this tick: their judgement is still running";
                if r.verdict == Verdict::Pass {
                    r.verdict = Verdict::Inconclusive;
                    r.summary = format!("metrics pass, but {note}; holding");
                } else {
                    r.summary = format!("{}; {note}", r.summary);
                }
                Ok(r)
            }
            Ok(Err(_)) => Err(Overrun::Deadline(deadline)),
            Err(_) => {
                self.partial = Some(handle);
                Err(Overrun::Deadline(deadline))
            }
        }
    }
}

/// The result of a tick the judge did not finish: inconclusive, so policy holds.
pub fn overrun_result(now_s: u64, why: Overrun) -> JudgeResult {
    JudgeResult::without_findings(Verdict::Inconclusive, now_s, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::judge_with as judge;
    use crate::signals::Observation;

    fn obs() -> Arc<Observation> {
        Arc::new(crate::bench::synthetic_observation(2, 60, 1))
    }

    fn slow(ms: u64) -> impl JudgeFn {
        move |o: &Observation, c: &JudgeConfig, m: &mut LogMiner| {
            std::thread::sleep(Duration::from_millis(ms));
            judge(o, c, m)
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
        let r = d
            .judge(
                obs(),
                JudgeConfig::default(),
                Duration::from_secs(5),
                |_: &Observation, _: &JudgeConfig, _: &mut LogMiner| -> JudgeResult { panic!("bug") },
            )
            .await;
        assert!(r.is_err());
    }

    /// The audit's I4: log mining that cannot finish must not keep a metric
    /// failure from rolling back, and must not let a release pass unseen.
    #[tokio::test]
    async fn when_log_mining_overruns_a_failing_metric_still_fails_and_a_pass_holds() {
        let slow_logs = |o: &Observation, c: &JudgeConfig, m: &mut LogMiner| {
            if c.logs.enabled {
                std::thread::sleep(Duration::from_millis(1_500));
            }
            judge(o, c, m)
        };
        let mut failing = (*obs()).clone();
        for v in failing.metrics[0].canary.iter_mut().flatten() {
            *v += 60.0;
        }
        let mut d = Deadlined::default();
        let r = d.judge(Arc::new(failing), JudgeConfig::default(), Duration::from_millis(200), slow_logs).await;
        let r = r.expect("a partial judgement");
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.summary);
        assert!(r.summary.contains("log templates not judged"), "{}", r.summary);
        // The whole judgement still runs: the next tick is judged partially again, and a pass holds.
        let r = d.judge(obs(), JudgeConfig::default(), Duration::from_millis(200), slow_logs).await.expect("partial");
        assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.summary);
        assert!(r.summary.contains("holding"), "{}", r.summary);
    }
}
