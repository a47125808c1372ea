//! `bench --agents K`: K agents in one process share one ledger and M
//! releases through the real loop (each agent runs every release's loop:
//! holders judge, the rest stand by), against one agent doing all the work,
//! measured in the same run. Midway one agent is killed (its tasks dropped,
//! its heartbeat stopped, nothing given back) and the others take over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{AgentSettings, Settings};
use crate::ledger::{Ledger, Record, RecordKind};
use crate::orchestrator::seat::Seats;
use crate::orchestrator::{Observer, TickReport};
use crate::policy::{PolicyFile, RunMode};
use crate::release::ReleaseConfig;
use crate::run::share::{Heartbeat, Joined, keep_refreshing};
use crate::run::{Runtime, RuntimeError};

use super::releases::{bench_release, cpu_seconds};

/// What one comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct AgentsReport {
    /// Agents sharing the releases.
    pub agents: usize,
    /// Releases.
    pub releases: usize,
    /// Process CPU seconds of one agent running every release.
    pub cpu_one_s: f64,
    /// Process CPU seconds of the agents sharing them (one killed midway).
    pub cpu_shared_s: f64,
    /// Ticks recorded by the lone agent and by the sharing ones.
    pub ticks: (u64, u64),
    /// Tick numbers recorded twice for one release (must be 0).
    pub doubled_ticks: u64,
    /// Releases each sharing agent judged first.
    pub spread: Vec<usize>,
    /// Releases the killed agent held that another agent took over.
    pub taken_over: usize,
    /// Kill to the first tick by another agent, median and maximum, ms.
    pub takeover_ms: (i64, i64),
    /// The lease, ms.
    pub lease_ms: i64,
}

/// Counts the holder's ticks.
struct Count(Arc<std::sync::atomic::AtomicU64>);

impl Observer for Count {
    fn on_tick(&mut self, _t: &TickReport<'_>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One group's run.
struct Group {
    cpu_s: f64,
    ticks: u64,
    /// Unix ms the first agent was killed, if it was.
    killed_ms: Option<i64>,
}

/// A new database `name` on the PostgreSQL server of `url` (whose database
/// must exist), and its URL.
pub async fn fresh_postgres(url: &str, name: &str) -> Result<String, crate::ledger::LedgerError> {
    let ledger = Ledger::open(url).await?;
    let sql = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(ledger.pool()).await?;
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

/// Release `i` of group `label`.
fn labelled(label: &str, i: usize) -> ReleaseConfig {
    ReleaseConfig { name: format!("{label}-{i}"), target: format!("sim/{label}-{i}"), ..bench_release(i) }
}

/// `agents` runtimes on the ledger at `url`, each configured with every one of
/// `n` releases of `label`, each with its roster kept fresh until its heartbeat is dropped.
async fn open_agents(
    label: &str,
    (agents, n): (usize, usize),
    lease: Duration,
    policy: &PolicyFile,
    url: &str,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<(Vec<Runtime>, Vec<Heartbeat>), RuntimeError> {
    let mut runtimes = Vec::new();
    let mut refreshers = Vec::new();
    for j in 0..agents {
        let agent = AgentSettings {
            instance_id: Some(format!("{label}-a{j}")),
            lease_s: lease.as_secs_f64(),
            ..AgentSettings::default()
        };
        let settings =
            Settings { releases: (0..n).map(|i| labelled(label, i)).collect(), agent, ..Settings::default() };
        let mut runtime = Runtime::open(settings, policy.clone(), url, stop_rx.clone()).await?;
        runtime.agent.seats = Some(Seats::new(None));
        let joined = keep_refreshing(runtime.ledger.clone(), runtime.agent.clone(), stop_rx.clone())
            .await
            .map_err(RuntimeError::Ledger)?;
        match joined {
            Joined::Beating(heartbeat) => refreshers.push(heartbeat),
            // Stopped before the bench began: the group's run ends at once.
            Joined::Advising | Joined::Stopped => {}
        }
        runtimes.push(runtime);
    }
    Ok((runtimes, refreshers))
}

/// `agents` agents, each running every one of `n` releases of `label` for
/// `ticks` ticks of `tick`; with `kill`, the first agent is killed halfway.
async fn group(
    label: &str,
    (agents, n): (usize, usize),
    (ticks, tick, lease): (u32, Duration, Duration),
    kill: bool,
    policy: &PolicyFile,
    url: &str,
) -> Result<Group, RuntimeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (runtimes, mut refreshers) = open_agents(label, (agents, n), lease, policy, url, &stop_rx).await?;
    // Every agent's roster shows all of them before the first claim (agents started
    // one by one would otherwise claim by who came first, then spread by giving back).
    for runtime in &runtimes {
        crate::run::share::refresh(&runtime.ledger, &runtime.agent, &mut 0).await.map_err(RuntimeError::Ledger)?;
    }
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu0 = cpu_seconds();
    // Every release prepared on every agent first, then each release's loops started
    // on all agents together: agents already up when the releases arrive.
    let prepared = runtimes
        .iter()
        .map(|r| r.settings.releases.iter().map(|cfg| r.prepare(cfg, RunMode::Act, 0)).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut tasks: Vec<Vec<tokio::task::JoinHandle<()>>> = runtimes.iter().map(|_| Vec::new()).collect();
    let mut queues: Vec<_> = prepared.into_iter().map(IntoIterator::into_iter).collect();
    for _ in 0..n {
        for (j, runtime) in runtimes.iter().enumerate() {
            let Some(p) = queues[j].next() else { continue };
            let (runtime, mut observer) = (runtime.clone(), Count(count.clone()));
            tasks[j].push(tokio::spawn(async move {
                let _ = runtime.run(&p.release, Some(tick), &mut observer, None).await;
            }));
        }
    }
    let run = tick * ticks;
    let mut killed_ms = None;
    if kill {
        tokio::time::sleep(run / 2).await;
        for t in tasks.remove(0) {
            t.abort();
        }
        // Dropped, as a crash would: no leaving, the row lapses after a lease.
        drop(refreshers.remove(0));
        killed_ms = Some(runtimes[0].agent.clock.now_ms());
        tokio::time::sleep(run - run / 2).await;
    } else {
        tokio::time::sleep(run).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks.into_iter().flatten() {
        let _ = t.await;
    }
    Ok(Group { cpu_s: cpu_seconds() - cpu0, ticks: count.load(std::sync::atomic::Ordering::Relaxed), killed_ms })
}

/// Per release of `label`: (actor, at_ms, tick) of every tick record after `after`.
async fn ticks_of(
    ledger: &Ledger,
    label: &str,
    after: i64,
) -> Result<BTreeMap<String, Vec<(String, i64, u64)>>, RuntimeError> {
    let mut out: BTreeMap<String, Vec<(String, i64, u64)>> = BTreeMap::new();
    let mut from = after;
    loop {
        let page = ledger.of_kind_from(RecordKind::Tick, from, 10_000).await.map_err(RuntimeError::Ledger)?;
        let Some((last, _)) = page.last() else { return Ok(out) };
        from = last.seq;
        for (s, rec) in page {
            if let Record::Tick(t) = rec
                && s.release_id.starts_with(&format!("{label}-"))
            {
                out.entry(s.release_id).or_default().push((s.actor, s.at_ms, t.tick));
            }
        }
    }
}

/// One agent on `n` releases on the ledger at `urls.0`, then `agents`
/// agents sharing another `n` with the first of them killed halfway, on the
/// ledger at `urls.1` (a fresh one each: reads that grow with the ledger
/// must not favour the run that went first).
pub async fn shared_agents(
    (agents, n): (usize, usize),
    (ticks, tick): (u32, Duration),
    policy: &PolicyFile,
    urls: (&str, &str),
) -> Result<AgentsReport, RuntimeError> {
    let lease = tick * 3;
    let one = group("one", (1, n), (ticks, tick, lease), false, policy, urls.0).await?;
    let ledger = Ledger::open(urls.1).await.map_err(RuntimeError::Ledger)?;
    let before = ledger.checkpoint().await.map_err(RuntimeError::Ledger)?.seq;
    let started = Instant::now();
    let shared_label = "shared";
    let shared = group(shared_label, (agents, n), (ticks, tick, lease), true, policy, urls.1).await?;
    tracing::debug!(took = ?started.elapsed(), "Shared run done.");
    let per_release = ticks_of(&ledger, shared_label, before).await?;
    let killed = format!("agent:{shared_label}-a0");
    let killed_ms = shared.killed_ms.unwrap_or(i64::MAX);
    let (mut doubled, mut takeovers) = (0u64, Vec::new());
    let mut spread = vec![0; agents];
    for ticks in per_release.values() {
        let mut numbers: Vec<u64> = ticks.iter().map(|t| t.2).collect();
        numbers.sort_unstable();
        let all = numbers.len();
        numbers.dedup();
        doubled += (all - numbers.len()) as u64;
        if let Some(j) = ticks.first().and_then(|t| t.0.rsplit("-a").next()).and_then(|j| j.parse::<usize>().ok()) {
            spread[j.min(agents - 1)] += 1;
        }
        let held_at_kill = ticks.iter().rposition(|t| t.0 == killed && t.1 < killed_ms);
        // Held at the kill: the next tick after its last one came after the kill (not a release given back before).
        if let Some(next) = held_at_kill.and_then(|i| ticks.get(i + 1)).filter(|t| t.1 >= killed_ms) {
            takeovers.push(next.1 - killed_ms);
        }
    }
    takeovers.sort_unstable();
    Ok(AgentsReport {
        agents,
        releases: n,
        cpu_one_s: one.cpu_s,
        cpu_shared_s: shared.cpu_s,
        ticks: (one.ticks, shared.ticks),
        doubled_ticks: doubled,
        spread,
        taken_over: takeovers.len(),
        takeover_ms: (takeovers.get(takeovers.len() / 2).copied().unwrap_or(0), takeovers.last().copied().unwrap_or(0)),
        lease_ms: lease.as_millis() as i64,
    })
}
