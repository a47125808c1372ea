//! The Graphite source against a real Graphite from Debian (carbon-cache
//! and graphite-web 1.1): points sent over carbon's plaintext protocol by the
//! test, read back through the render API per side, a canary that fails
//! judged as one, a refused target and a wildcard answering two series named
//! by `config check`, and a stopped graphite-web a source failure that holds.

use crate::support::graphite::Graphite;

/// `t0` onwards every 10 s for 20 minutes: 1 % on both sides, the canary's 20 % from 300 s.
fn history(t0: i64) -> Vec<(String, f64, i64)> {
    let mut points = Vec::new();
    for side in ["stable", "canary"] {
        for k in 0..=120i64 {
            let v = if side == "canary" && k * 10 >= 300 { 0.2 } else { 0.01 };
            points.push((format!("app.{side}.errors"), v, t0 + k * 10));
        }
    }
    points
}

fn config(dir: &std::path::Path, url: &str, name: &str, query: &str) -> std::path::PathBuf {
    let source = format!(
        r#"{{ kind = "graphite", url = "{url}", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, timeout_s = 10, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = '{query}' }}] }}"#
    );
    let cfg = dir.join(name);
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", &source, None)).unwrap();
    cfg
}

fn backstop(cfg: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    crate::support::backstop_at(cfg, dir, &[], args)
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs graphite-carbon and graphite-web")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_judged_from_real_graphite_and_a_stopped_server_holds() {
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 10_000 * 10 - 3600;
    let mut graphite = Graphite::start();
    graphite.write(&history(t0)).await;
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let cfg = config(d.path(), &graphite.url, "g.toml", r#"summarize(app.{{ side }}.errors, "{{ step }}", "avg")"#);
    let ledger = d.path().join("l.db").display().to_string();

    let (code, out) = backstop(&cfg, d.path(), &["config", "check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("graphite http://127.0.0.1") && out.contains("graphite-web 1."), "{out}");

    let window = [t0.to_string(), (t0 + 600).to_string()];
    let advise = ["advise", "--format", "json", "--ledger", &ledger, "--from", &window[0], "--to", &window[1]];
    let (code, out) = backstop(&cfg, d.path(), &advise);
    assert_eq!(code, Some(0), "{out}");
    let report = crate::support::first_json(&out);
    assert_eq!(report["recommendation"], "rollback", "{report}");
    assert!(report["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {report}");

    // A function graphite-web does not have, and a wildcard that answers both sides.
    let broken = config(d.path(), &graphite.url, "g-bad.toml", "nosuchfunction(app.{{ side }}.errors)");
    let (code, out) = backstop(&broken, d.path(), &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("refuses the query of `errors`") && out.contains("400"), "{out}");
    let wildcard = config(d.path(), &graphite.url, "g-all.toml", "app.*.errors");
    let (code, out) = backstop(&wildcard, d.path(), &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("2 series answered; aggregate to one"), "{out}");

    graphite.stop();
    let (_, out) = backstop(&cfg, d.path(), &advise);
    let report = crate::support::first_json(&out);
    assert_eq!(report["recommendation"], "hold", "a stopped graphite-web holds, never passes: {report}");
    assert!(report["headline"].as_str().unwrap().contains("signal source `graphite http://127.0.0.1"), "{report}");
}
