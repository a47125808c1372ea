//! `backstop bench`: the performance table (see BENCHMARKS.md).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{CliResult, Failure, load_policy, out};

use backstop::bench::{
    BenchRow, ReleasesReport, concurrent_releases, haproxy_rollback, judge_tick, ledger_appends, render,
    service_releases,
};

#[derive(Args)]
pub struct BenchArgs {
    /// Concurrent releases whose judge and policy run every tick (the pure core, no loop), one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    releases: Vec<usize>,
    /// Concurrent releases run through the service's real loop (observe, judge,
    /// decide, rate-limit history, tick record with lease renewal), one run each.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    ledger_releases: Vec<usize>,
    /// Ticks per release in those runs.
    #[arg(long, default_value_t = 6)]
    ticks: u32,
    /// Seconds between ticks.
    #[arg(long, default_value_t = 10)]
    tick_s: u64,
    /// How far into its window each release is when the run starts, seconds.
    #[arg(long, default_value_t = 1200)]
    start_s: u64,
    /// Iterations of the judge-latency measurement.
    #[arg(long, default_value_t = 200)]
    iterations: u32,
    /// Sequential ledger appends to time.
    #[arg(long, default_value_t = 2000)]
    appends: u32,
    /// Instead of the table above: this many agents in one process sharing
    /// `--agent-releases` releases on one ledger (with `--postgres`, two new
    /// databases on that server; else SQLite files), one killed halfway,
    /// against one agent doing all the work.
    #[arg(long)]
    agents: Option<usize>,
    /// With `--agents`: releases shared.
    #[arg(long, default_value_t = 3000)]
    agent_releases: usize,
    /// With `--agents`: ticks of 2 s each run (the lease is 3 ticks).
    #[arg(long, default_value_t = 30)]
    agent_ticks: u32,
    /// With `--agents`: how many times to run the pair (one agent, then the
    /// agents sharing), each on fresh ledgers; the CPU ratio's median over
    /// the runs is reported, as single runs on a shared machine vary more
    /// than the two groups of one run do.
    #[arg(long, default_value_t = 1)]
    agent_runs: usize,
    /// Instead of the table above: write this many finished releases (a
    /// 30-minute window of 10-s ticks each) to a new ledger (with
    /// `--postgres`, a new database on that server; else a SQLite file) and
    /// compact them: rows, bytes, time, and `audit verify` before and after.
    #[arg(long)]
    compact: Option<usize>,
    /// Also time ledger appends on this PostgreSQL URL.
    #[arg(long)]
    postgres: Option<String>,
    /// Also time a rollback on a real HAProxy: its admin Runtime API socket, with backend
    /// `be` holding servers `stable` and `canary`.
    #[arg(long)]
    haproxy_socket: Option<String>,
    /// Instead of the table above: the configured `[model]` on these scenario
    /// files or folders (repeatable), against the judge alone on the same releases.
    #[arg(long)]
    model_on: Vec<std::path::PathBuf>,
    /// With `--model-on`: at most this many releases, spread evenly over the corpus.
    #[arg(long, default_value_t = 48)]
    model_limit: usize,
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure { code: 1, message: e.to_string() }
}

pub async fn run(a: BenchArgs, settings: &backstop::config::Settings) -> CliResult {
    let policy = load_policy(None, settings)?;
    if !a.model_on.is_empty() {
        return model_table(&a, settings, &policy).await;
    }
    if let Some(k) = a.agents {
        return agents_table(&a, k, &policy).await;
    }
    if let Some(n) = a.compact {
        return compact_table(&a, n, &policy).await;
    }
    use backstop::signals::BaselineKind;
    let mut rows = vec![
        judge_tick(20, 360, a.iterations, BaselineKind::Concurrent),
        judge_tick(20, 360, a.iterations, BaselineKind::Preceding),
    ];
    let dir = tempfile_dir().map_err(failed)?;
    let tick = Duration::from_secs(a.tick_s);
    for &n in &a.releases {
        let r = concurrent_releases(n, a.ticks, tick, a.start_s, &policy).await;
        let what = format!("judge and policy only (no loop), {} s into the window", a.start_s);
        rows.push(releases_row(n, &a, &r, &what));
    }
    for &n in &a.ledger_releases {
        let url = backstop::ledger::sqlite_url(&dir.join(format!("releases-{n}.db")));
        let r = service_releases(n, a.ticks, tick, &policy, &url).await.map_err(|e| failed(super::chain(&e)))?;
        rows.push(releases_row(n, &a, &r, "the service's loop, ledger on SQLite"));
        if let Some(pg) = &a.postgres {
            let r = service_releases(n, a.ticks, tick, &policy, pg).await.map_err(|e| failed(super::chain(&e)))?;
            rows.push(releases_row(n, &a, &r, "the service's loop, ledger on PostgreSQL"));
        }
    }
    let url = backstop::ledger::sqlite_url(&dir.join("bench.db"));
    rows.push(ledger_appends(&url, a.appends, 1).await.map_err(failed)?);
    let url = backstop::ledger::sqlite_url(&dir.join("bench-concurrent.db"));
    rows.push(ledger_appends(&url, a.appends * 10, 256).await.map_err(failed)?);
    match &a.haproxy_socket {
        Some(socket) => {
            let url = backstop::ledger::sqlite_url(&dir.join("haproxy.db"));
            rows.push(haproxy_rollback(socket, &url, 20).await.map_err(failed)?);
        }
        None => rows.push(BenchRow {
            name: "rollback decision to traffic shifted and verified, real HAProxy".into(),
            result: "not measured in this run (pass --haproxy-socket)".into(),
            baseline: "-".into(),
        }),
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(pg) = &a.postgres {
        rows.push(ledger_appends(pg, a.appends, 1).await.map_err(failed)?);
        rows.push(ledger_appends(pg, a.appends * 10, 256).await.map_err(failed)?);
    }
    out(render(&rows).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `--model-on`: the model table only.
async fn model_table(
    a: &BenchArgs,
    settings: &backstop::config::Settings,
    policy: &backstop::policy::PolicyFile,
) -> CliResult {
    use backstop::bench::model::{GPT_4O_MINI, render, run};
    let Some(cfg) = settings.model.clone() else {
        return Err(Failure {
            code: 2,
            message: "bench --model-on: no [model] is configured (see docs/assessor.md)".into(),
        });
    };
    let name = cfg.name.clone();
    let assessor = std::sync::Arc::new(backstop::assessor::Assessor::new(cfg).map_err(|e| failed(super::chain(&e)))?);
    let corpus = backstop::eval::load_corpus(&a.model_on);
    if let Some(e) = corpus.errors.first() {
        return Err(Failure { code: 2, message: super::chain(e) });
    }
    let all: Vec<&backstop::signals::Scenario> = corpus.groups.iter().flat_map(|(_, s)| s).collect();
    let n = a.model_limit.min(all.len());
    let picked: Vec<backstop::signals::Scenario> = (0..n).map(|i| all[i * all.len() / n.max(1)].clone()).collect();
    let note = format!("bench: {} releases through {name}, one at a time\n", picked.len());
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
    let policy = policy.clone();
    // A plain thread: each replay runs its own small runtime for the model's HTTP calls.
    let measured = std::thread::spawn(move || run(&picked.iter().collect::<Vec<_>>(), &policy, assessor))
        .join()
        .map_err(|_| failed("the replay thread panicked"))?;
    out(render(&measured, &name, GPT_4O_MINI).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// Ticks in a 30-minute window of 10-s ticks.
const WINDOW_TICKS: u32 = 180;

/// `--compact`: the compaction table only.
async fn compact_table(a: &BenchArgs, n: usize, policy: &backstop::policy::PolicyFile) -> CliResult {
    let dir = tempfile_dir().map_err(failed)?;
    let url = match &a.postgres {
        Some(pg) => backstop::bench::fresh_postgres(pg, &format!("bench_compact_{}", std::process::id()))
            .await
            .map_err(|e| failed(super::chain(&e)))?,
        None => backstop::ledger::sqlite_url(&dir.join("compact.db")),
    };
    let ledger = if a.postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let r = backstop::bench::compaction(&url, (n, WINDOW_TICKS), policy).await.map_err(|e| failed(super::chain(&e)))?;
    let _ = std::fs::remove_dir_all(&dir);
    let per = |b: i64| b as f64 / r.releases.max(1) as f64 / 1024.0;
    let row = BenchRow {
        name: format!("{n} finished releases of {WINDOW_TICKS} ticks compacted, ledger on {ledger}"),
        result: format!(
            "{} rows, {:.1} MB ({:.1} KB a release) after; {} tick records removed in {:.1} s ({:.0}/s), \
             longest transaction {:.0} ms; audit verify {:.1} s, {} problem(s)",
            r.rows.1,
            r.bytes.1 as f64 / 1e6,
            per(r.bytes.1),
            r.removed,
            r.compact_s,
            r.removed as f64 / r.compact_s.max(f64::EPSILON),
            r.longest_group_ms,
            r.verify_s.1,
            r.problems
        ),
        baseline: format!(
            "before: {} rows, {:.1} MB ({:.1} KB a release); audit verify {:.1} s",
            r.rows.0,
            r.bytes.0 as f64 / 1e6,
            per(r.bytes.0),
            r.verify_s.0
        ),
    };
    out(render(&[row]).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `--agents`: the sharing table only, a row per run and the median ratio.
async fn agents_table(a: &BenchArgs, k: usize, policy: &backstop::policy::PolicyFile) -> CliResult {
    if k < 2 {
        return Err(Failure { code: 2, message: "bench --agents: at least 2 agents".into() });
    }
    if a.agent_runs == 0 {
        return Err(Failure { code: 2, message: "bench --agent-runs: at least 1 run".into() });
    }
    let ledger = if a.postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let (mut rows, mut ratios) = (Vec::new(), Vec::new());
    for run in 0..a.agent_runs {
        let dir = tempfile_dir().map_err(failed)?;
        let (one, shared) = agent_ledgers(a, &dir, run).await?;
        let r = backstop::bench::shared_agents(
            (k, a.agent_releases),
            (a.agent_ticks, Duration::from_secs(2)),
            policy,
            (&one, &shared),
        )
        .await
        .map_err(|e| failed(super::chain(&e)))?;
        let _ = std::fs::remove_dir_all(&dir);
        ratios.push(r.cpu_shared_s / r.cpu_one_s.max(f64::EPSILON));
        rows.push(agents_row(a, &r, ledger));
    }
    if a.agent_runs > 1 {
        let median = backstop::judge::stats::median(&mut ratios.clone()).unwrap_or(f64::NAN);
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        rows.push(BenchRow {
            name: format!("{k} agents against one, {} runs on {ledger}", a.agent_runs),
            result: format!("CPU ratio median {median:.2}× (runs {})", each.join(", ")),
            baseline: "each run's two groups, measured in that run".into(),
        });
    }
    out(render(&rows).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// The two ledgers of one run: new PostgreSQL databases on `--postgres`, else SQLite files in `dir`.
async fn agent_ledgers(a: &BenchArgs, dir: &std::path::Path, run: usize) -> Result<(String, String), Failure> {
    let Some(pg) = &a.postgres else {
        return Ok((
            backstop::ledger::sqlite_url(&dir.join("agents-one.db")),
            backstop::ledger::sqlite_url(&dir.join("agents-shared.db")),
        ));
    };
    let stamp = format!("{}_{run}", std::process::id());
    let fresh = |name: String| async move { backstop::bench::fresh_postgres(pg, &name).await };
    let one = fresh(format!("bench_one_{stamp}")).await.map_err(|e| failed(super::chain(&e)))?;
    Ok((one, fresh(format!("bench_shared_{stamp}")).await.map_err(|e| failed(super::chain(&e)))?))
}

fn agents_row(a: &BenchArgs, r: &backstop::bench::AgentsReport, ledger: &str) -> BenchRow {
    BenchRow {
        name: format!(
            "{} agents sharing {} releases, 2-s tick, {} ticks, ledger on {ledger}, the first killed halfway",
            r.agents, r.releases, a.agent_ticks
        ),
        result: format!(
            "CPU {:.1} s ({:.2}× one agent); {} ticks recorded, {} recorded twice; judged first per agent {:?}; \
             {} releases taken over after the kill, median {} ms, max {} ms (lease {} ms)",
            r.cpu_shared_s,
            r.cpu_shared_s / r.cpu_one_s.max(f64::EPSILON),
            r.ticks.1,
            r.doubled_ticks,
            r.spread,
            r.taken_over,
            r.takeover_ms.0,
            r.takeover_ms.1,
            r.lease_ms
        ),
        baseline: format!("one agent running all: CPU {:.1} s, {} ticks recorded", r.cpu_one_s, r.ticks.0),
    }
}

fn releases_row(n: usize, a: &BenchArgs, r: &ReleasesReport, ledger: &str) -> BenchRow {
    let appends = if r.appends > 0 {
        format!(
            "; {} appends while ticking, {:.0}/s, append p50 {:.1} ms, p99 {:.1} ms; {} waited for the writer's \
             queue (longest {:.0} ms), none dropped; stop: {} appends, p99 {:.0} ms",
            r.appends,
            r.appends_per_s,
            r.append_ms.0,
            r.append_ms.1,
            r.queue.waits,
            r.queue.max_wait.as_secs_f64() * 1000.0,
            r.stop.0,
            r.stop.1
        )
    } else {
        String::new()
    };
    BenchRow {
        name: format!("{n} concurrent releases, {}-s tick, {} ticks each, {ledger}", a.tick_s, a.ticks),
        result: format!(
            "{} of {} ticks missed; tick p50 {:.1} ms, p99 {:.1} ms, mean {:.0} µs; CPU {:.1}% of all cores; peak RSS {:.0} MiB{appends}",
            r.missed,
            r.ticks,
            r.tick_ms.0,
            r.tick_ms.1,
            r.mean_tick_us,
            r.cpu_share * 100.0,
            r.peak_rss_mib,
        ),
        baseline: "none".into(),
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("backstop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
