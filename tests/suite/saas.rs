//! Datadog and New Relic sources against local servers speaking their
//! documented wire formats (tests/support/saas.rs): data written by the
//! test, a canary that fails judged as one (Datadog beside a stable
//! version, New Relic against the same window a day earlier), keys from the
//! environment that no output shows, a wrong key or account and a refused
//! query named by `config check`, and a service that is down holds.

use crate::support::saas::{DD_API_KEY, DD_APP_KEY, FakeSaas, NR_ACCOUNT, NR_KEY};

/// `t0` onwards every 10 s for 20 minutes: 1 %, rising to 20 % from 300 s when `fails`; one null at 50 s.
fn points(t0: i64, fails: bool) -> Vec<(i64, Option<f64>)> {
    (0..=120i64)
        .map(|k| {
            let v = if fails && k * 10 >= 300 { 0.2 } else { 0.01 };
            (t0 + k * 10, (k != 5).then_some(v))
        })
        .collect()
}

fn write(dir: &std::path::Path, name: &str, source: &str) -> std::path::PathBuf {
    let cfg = dir.join(name);
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", source, None)).unwrap();
    cfg
}

use crate::support::{backstop_at as backstop, first_json as report};

fn datadog(url: &str, query: &str) -> String {
    format!(
        r#"{{ kind = "datadog", url = "{url}", api_key_env = "T_DD_API", app_key_env = "T_DD_APP", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, timeout_s = 5, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "{query}" }}] }}"#
    )
}

/// A fake Datadog with checkout's stable and canary series from `ago_s`
/// seconds back (the canary failing from 300 s in when `fails`), and a
/// release reading them: the fake, the series' start, the folder, the configuration.
async fn datadog_checkout(ago_s: i64, fails: bool) -> (FakeSaas, i64, tempfile::TempDir, std::path::PathBuf) {
    let saas = FakeSaas::start().await;
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000 - ago_s;
    saas.add("version:stable", points(t0, false));
    saas.add("version:canary", points(t0, fails));
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let query = "avg:errors.ratio{service:checkout,version:{{ side }}}.rollup(avg, {{ step }})";
    let cfg = write(d.path(), "dd.toml", &datadog(&saas.url, query));
    (saas, t0, d, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_judged_from_datadogs_api_and_its_keys_never_show() {
    let (saas, t0, d, cfg) = datadog_checkout(3600, true).await;
    let keys = [("T_DD_API", DD_API_KEY), ("T_DD_APP", DD_APP_KEY)];
    let ledger = d.path().join("l.db").display().to_string();
    let mut seen = String::new();

    let (code, out) = backstop(&cfg, d.path(), &keys, &["config", "check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("datadog http://127.0.0.1") && out.contains("Datadog took the API key"), "{out}");
    seen += &out;

    let window = [t0.to_string(), (t0 + 600).to_string()];
    let advise = ["advise", "--format", "json", "--ledger", &ledger, "--from", &window[0], "--to", &window[1]];
    let (code, out) = backstop(&cfg, d.path(), &keys, &advise);
    assert_eq!(code, Some(0), "{out}");
    let r = report(&out);
    assert_eq!(r["recommendation"], "rollback", "{r}");
    assert!(r["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {r}");
    seen += &out;
    let asked = saas.asked();
    assert!(asked.iter().any(|(q, from, _)| q.contains("version:canary") && *from == t0), "{asked:?}");
    assert!(asked.iter().all(|(q, _, _)| q.ends_with(".rollup(avg, 10)")), "{asked:?}");

    // A wrong application key: the check fails on Datadog's 403, naming neither key.
    let wrong = [("T_DD_API", DD_API_KEY), ("T_DD_APP", "not-the-key")];
    let (code, out) =
        backstop(&cfg, d.path(), &wrong, &["advise", "--format", "json", "--from", &window[0], "--to", &window[1]]);
    assert_eq!(report(&out)["recommendation"], "hold", "a refused key holds: {out} {code:?}");
    seen += &out;
    // A key variable that is not set is named before anything runs.
    let (code, out) = backstop(&cfg, d.path(), &[("T_DD_API", DD_API_KEY)], &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("app_key_env") && out.contains("T_DD_APP"), "{out}");

    // A query Datadog cannot parse: config check names the metric and Datadog's words.
    let broken = write(d.path(), "dd-bad.toml", &datadog(&saas.url, "errors.ratio{version:{{ side }}}"));
    let (code, out) = backstop(&broken, d.path(), &keys, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("refuses the query of `errors`") && out.contains("Error parsing query"), "{out}");
    seen += &out;

    saas.set_down(true);
    let (_, out) = backstop(&cfg, d.path(), &keys, &advise);
    let r = report(&out);
    assert_eq!(r["recommendation"], "hold", "Datadog down holds, never passes: {r}");
    assert!(r["headline"].as_str().unwrap().contains("signal source `datadog http://127.0.0.1"), "{r}");
    seen += &out;
    assert!(!seen.contains(DD_API_KEY) && !seen.contains(DD_APP_KEY), "a key was shown: {seen}");
}

/// The window start (`from`) of each canary query from the `from`th query on.
fn canary_froms(saas: &FakeSaas, from: usize) -> Vec<i64> {
    saas.asked()[from..].iter().filter(|(q, _, _)| q.contains("version:canary")).map(|a| a.1).collect()
}

/// Wait for `n` canary queries after the `from`th.
async fn wait_queries(saas: &FakeSaas, from: usize, n: usize) {
    let start = std::time::Instant::now();
    while canary_froms(saas, from).len() < n {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "{:?}", saas.asked());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What a release paused and continued by `watch` asked the fake for.
struct Continued {
    /// Canary window starts (unix s) asked before the pause and after the restart.
    before: Vec<i64>,
    after: Vec<i64>,
    /// Both runs' output.
    said: String,
    /// The second run's stderr.
    err2: String,
}

/// Run `watch` on `cfg` (ticks paced `pace_ms`) until five canary queries,
/// stop it (SIGTERM pauses the release), wait `away`, run it again for three.
async fn paused_and_continued(
    saas: &FakeSaas,
    cfg: &std::path::Path,
    ledger: &str,
    pace_ms: u64,
    away: u64,
) -> Continued {
    use crate::support::agents::Agent;
    use std::time::Duration;
    let keys = [("T_DD_API", DD_API_KEY), ("T_DD_APP", DD_APP_KEY)];
    let first = Agent::watch(cfg, ledger, pace_ms, &keys);
    wait_queries(saas, 0, 5).await;
    first.signal("TERM");
    let (_, out, err) = first.finish(Duration::from_secs(30));
    let before = canary_froms(saas, 0);
    tokio::time::sleep(Duration::from_secs(away)).await;
    let seen = saas.asked().len();
    let second = Agent::watch(cfg, ledger, pace_ms, &keys);
    wait_queries(saas, seen, 3).await;
    second.signal("TERM");
    let (_, out2, err2) = second.finish(Duration::from_secs(30));
    let after = canary_froms(saas, seen);
    assert!(before.windows(2).all(|w| w[0] == w[1]), "one window start per run: {before:?}\n{out}{err}");
    assert!(after.windows(2).all(|w| w[0] == w[1]), "one window start per run: {after:?}\n{out2}{err2}");
    Continued { before, after, said: format!("{out}{err}{out2}{err2}"), err2 }
}

/// A release continued after `watch` stopped (SIGTERM pauses it) reads its
/// window from its recorded start: every query after the restart asks for
/// the same window start as before it, not one that begins at the restart
/// (which would judge each tick on samples of another release time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_release_reads_its_window_from_its_recorded_start() {
    let (saas, _, d, cfg) = datadog_checkout(60, false).await;
    let ledger = d.path().join("l.db").display().to_string();
    // Restarted seconds later: a window taken from the restart would start at least 3 s later.
    let c = paused_and_continued(&saas, &cfg, &ledger, 300, 3).await;
    assert!(
        c.after.iter().all(|f| *f == c.before[0]),
        "after the restart {:?}, before {:?}\n{}",
        c.after,
        c.before,
        c.said
    );
    let audit = crate::suite::agent::audit(&ledger);
    assert!(audit.contains("release_paused"), "the first run paused the release: {audit}");
}

/// A release continued after it went unobserved longer than policy's
/// `source.resume_within_s` has its canary read again from now: every query
/// after the restart starts later than before by about the time it was away
/// (the release time it reached lies that far back from now), not at its
/// recorded start (samples that old would decide its promotion); the audit
/// trail and the log say so. Within the bound it keeps its recorded start
/// (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_unobserved_past_the_bound_reads_its_canary_again_from_now() {
    let (saas, _, d, cfg) = datadog_checkout(60, false).await;
    let policy = d.path().join("policy.toml");
    let bound = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n[source]\nresume_within_s = 2\n";
    std::fs::write(&policy, bound).unwrap();
    // Release time runs with the wall clock (a tick a second, paced a second),
    // as it does live: the time it reached lies that far back from now.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("candidate_revision", "tick_s = 1\ncandidate_revision");
    std::fs::write(&cfg, format!("policy = \"{}\"\n{text}", policy.display())).unwrap();
    let ledger = d.path().join("l.db").display().to_string();
    let c = paused_and_continued(&saas, &cfg, &ledger, 1000, 6).await;
    let (before, after) = (c.before[0], c.after[0]);
    assert!(after >= before + 5, "away 6 s, past the 2-s bound: read from {after} instead of {before}\n{}", c.said);
    assert!(c.err2.contains("read again from now"), "the log says so: {}", c.err2);
    let audit = crate::suite::agent::audit(&ledger);
    assert!(audit.contains("continued from t=") && audit.contains("canary read from 20"), "{audit}");
}

/// A fleet's later wave reads its window from when the wave starts, not
/// from when `watch` set the fleet up: wave 2's queries start after wave 1
/// ran and baked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleets_later_wave_reads_its_window_from_the_waves_start() {
    use crate::support::agents::Agent;
    use std::time::Duration;
    let saas = FakeSaas::start().await;
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000 - 60;
    for marker in [
        "service:eu,version:stable",
        "service:eu,version:canary",
        "service:us,version:stable",
        "service:us,version:canary",
    ] {
        saas.add(marker, points(t0, false));
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let member = |name: &str| {
        let query = format!("avg:errors.ratio{{service:{name},version:{{{{ side }}}}}}.rollup(avg, {{{{ step }}}})");
        let source = datadog(&saas.url, &query).replace("duration_s = 600", "duration_s = 100");
        format!(
            "[[releases]]\nname = \"checkout-{name}\"\nservice = \"checkout\"\ntarget = \"cmd/{name}\"\n\
             candidate_revision = \"v42\"\nlast_known_good = \"v41\"\nsource = {source}\n\
             executor = {{ kind = \"command\", rollback = [\"true\"], promote = [\"true\"], verify = [\"true\"] }}\n\n"
        )
    };
    let text = format!(
        "{}{}[[fleets]]\nname = \"f\"\nwaves = [[\"cmd/eu\"], [\"cmd/us\"]]\nbake_s = [2, 0]\n",
        member("eu"),
        member("us")
    );
    let cfg = d.path().join("backstop.toml");
    std::fs::write(&cfg, text).unwrap();
    let keys = [("T_DD_API", DD_API_KEY), ("T_DD_APP", DD_APP_KEY)];
    let ledger = d.path().join("l.db").display().to_string();
    let watch = Agent::watch(&cfg, &ledger, 200, &keys);
    let (_, out, err) = watch.finish(Duration::from_secs(120));
    assert!(out.contains("checkout-us"), "wave 2 ran: {out}{err}");
    let from_of = |service: &str| -> Vec<i64> {
        let marker = format!("service:{service},version:canary");
        saas.asked().iter().filter(|(q, _, _)| q.contains(&marker)).map(|a| a.1).collect()
    };
    let (eu, us) = (from_of("eu"), from_of("us"));
    assert!(!eu.is_empty() && !us.is_empty(), "{:?}", saas.asked());
    // The first query of each is the check before anything runs; then wave
    // 1's ten ticks of 200 ms and its 2-s bake come before wave 2 starts.
    let (eu_run, us_run) = (eu.last().unwrap(), us.last().unwrap());
    assert!(*us_run >= eu_run + 3, "wave 2 reads from {us:?}, wave 1 from {eu:?}\n{out}\n{err}");
}

fn newrelic(url: &str, account: u64, query: &str) -> String {
    format!(
        r#"{{ kind = "newrelic", url = "{url}/graphql", account_id = {account}, api_key_env = "T_NR_KEY", baseline = {{ kind = "seasonal", offset = "1d" }}, canary = "checkout", step_s = 10, duration_s = 600, timeout_s = 5, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "{query}" }}] }}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_release_is_judged_from_new_relic_against_the_day_before() {
    let saas = FakeSaas::start().await;
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000 - 3600;
    let mut both_days = points(t0 - 86_400, false);
    both_days.extend(points(t0, true));
    saas.add("'checkout'", both_days);
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let query = "SELECT average(ratio) AS value FROM Errors WHERE appName = '{{ side }}' {{ time_filter }} TIMESERIES {{ step }}";
    let cfg = write(d.path(), "nr.toml", &newrelic(&saas.url, NR_ACCOUNT, query));
    let key = [("T_NR_KEY", NR_KEY)];

    let (code, out) = backstop(&cfg, d.path(), &key, &["config", "check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("New Relic account {NR_ACCOUNT} (Checkout Team)")), "{out}");

    let ledger = d.path().join("l.db").display().to_string();
    let window = [t0.to_string(), (t0 + 600).to_string()];
    let advise = ["advise", "--format", "json", "--ledger", &ledger, "--from", &window[0], "--to", &window[1]];
    let (code, out) = backstop(&cfg, d.path(), &key, &advise);
    assert_eq!(code, Some(0), "{out}");
    let r = report(&out);
    assert_eq!(r["recommendation"], "rollback", "{r}");
    assert!(r["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {r}");
    let asked = saas.asked();
    assert!(asked.iter().any(|(_, from, to)| *from == t0 - 86_400 && *to == t0 - 86_400 + 600), "{asked:?}");
    assert!(!out.contains(NR_KEY));

    // An account the key cannot read, a wrong key: the check fails and says why.
    let other = write(d.path(), "nr-other.toml", &newrelic(&saas.url, 7, query));
    let (code, out) = backstop(&other, d.path(), &key, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("Not authorized to access this account"), "{out}");
    let (code, out) = backstop(&cfg, d.path(), &[("T_NR_KEY", "NRAK-WRONG")], &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("401") && !out.contains("NRAK-WRONG"), "{out}");

    // NRQL New Relic cannot parse: named by config check, with New Relic's words.
    let bad = "SELEC average(ratio) FROM Errors WHERE appName = '{{ side }}' {{ time_filter }} TIMESERIES {{ step }}";
    let broken = write(d.path(), "nr-bad.toml", &newrelic(&saas.url, NR_ACCOUNT, bad));
    let (code, out) = backstop(&broken, d.path(), &key, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("refuses the query of `errors`") && out.contains("NRQL Syntax Error"), "{out}");

    saas.set_down(true);
    let (_, out) = backstop(&cfg, d.path(), &key, &advise);
    assert_eq!(report(&out)["recommendation"], "hold", "New Relic down holds: {out}");
}

#[test]
fn an_nrql_template_without_its_range_or_step_is_refused_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let q = "SELECT average(ratio) FROM Errors WHERE appName = '{{ side }}' TIMESERIES {{ step }}";
    let cfg = write(d.path(), "nr.toml", &newrelic("http://127.0.0.1:1", NR_ACCOUNT, q));
    let (code, out) = backstop(&cfg, d.path(), &[("T_NR_KEY", NR_KEY)], &["watch", "--pace-ms", "0"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("metrics[0].query") && out.contains("{{ time_filter }}"), "{out}");
    let cfg = write(
        d.path(),
        "nr0.toml",
        &newrelic("http://127.0.0.1:1", 0, &q.replace("TIMESERIES", "{{ time_filter }} TIMESERIES")),
    );
    let (code, out) = backstop(&cfg, d.path(), &[("T_NR_KEY", NR_KEY)], &["watch", "--pace-ms", "0"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("account_id"), "{out}");
}

fn cloudwatch(url: &str, step_s: u32, query: &str) -> String {
    format!(
        r#"{{ kind = "cloudwatch", region = "eu-west-1", url = "{url}", access_key_id_env = "T_AWS_ID", secret_access_key_env = "T_AWS_SECRET", session_token_env = "T_AWS_TOKEN", baseline = "stable", canary = "canary", step_s = {step_s}, duration_s = 600, timeout_s = 5, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "{query}" }}] }}"#
    )
}

const CW_QUERY: &str = r#"SELECT AVG(ErrorRatio) FROM SCHEMA(\"Checkout\", Version) WHERE Version = '{{ side }}'"#;

/// A fake CloudWatch whose canary fails 300 s into an hour-old window: the
/// fake, the window's start (unix s), the folder and the configuration.
async fn cloudwatch_failing_canary() -> (FakeSaas, i64, tempfile::TempDir, std::path::PathBuf) {
    let cw = FakeSaas::start().await;
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000 - 3600;
    cw.add("'stable'", points(t0, false));
    cw.add("'canary'", points(t0, true));
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let cfg = write(d.path(), "cw.toml", &cloudwatch(&cw.url, 10, CW_QUERY));
    (cw, t0, d, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_judged_from_cloudwatch_with_signed_requests() {
    use crate::support::cloudwatch::{KEY_ID, SECRET};
    let (cw, t0, d, cfg) = cloudwatch_failing_canary().await;
    let query = CW_QUERY;
    let creds = [("T_AWS_ID", KEY_ID), ("T_AWS_SECRET", SECRET)];

    let (code, out) = backstop(&cfg, d.path(), &creds, &["config", "check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("CloudWatch in eu-west-1 took the signed request"), "{out}");

    let ledger = d.path().join("l.db").display().to_string();
    let window = [t0.to_string(), (t0 + 600).to_string()];
    let advise = ["advise", "--format", "json", "--ledger", &ledger, "--from", &window[0], "--to", &window[1]];
    let (code, out) = backstop(&cfg, d.path(), &creds, &advise);
    assert_eq!(code, Some(0), "{out}");
    let r = report(&out);
    assert_eq!(r["recommendation"], "rollback", "{r}");
    assert!(r["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {r}");
    let asked = cw.asked();
    let canary = |(q, from, _): &(String, i64, i64)| q.contains("'canary'") && q.ends_with("period=10") && *from == t0;
    assert!(asked.iter().any(canary), "{asked:?}");
    assert!(!out.contains(SECRET));

    // A wrong secret: CloudWatch's SignatureDoesNotMatch fails the check and holds a judgement.
    let wrong = [("T_AWS_ID", KEY_ID), ("T_AWS_SECRET", "not-the-secret-key")];
    let (code, out) = backstop(&cfg, d.path(), &wrong, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("SignatureDoesNotMatch") && !out.contains("not-the-secret-key"), "{out}");
    let (_, out) =
        backstop(&cfg, d.path(), &wrong, &["advise", "--format", "json", "--from", &window[0], "--to", &window[1]]);
    assert_eq!(report(&out)["recommendation"], "hold", "{out}");

    // An expression CloudWatch refuses; a step CloudWatch has no period for.
    let broken = write(d.path(), "cw-bad.toml", &cloudwatch(&cw.url, 10, "AVG(ErrorRatio) WHERE '{{ side }}'"));
    let (code, out) = backstop(&broken, d.path(), &creds, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("refuses the query of `errors`") && out.contains("InvalidParameterValue"), "{out}");
    let odd = write(d.path(), "cw-step.toml", &cloudwatch(&cw.url, 15, query));
    let (code, out) = backstop(&odd, d.path(), &creds, &["watch", "--pace-ms", "0"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("step_s") && out.contains("a CloudWatch period"), "{out}");

    cw.set_down(true);
    let (_, out) = backstop(&cfg, d.path(), &creds, &advise);
    let r = report(&out);
    assert_eq!(r["recommendation"], "hold", "CloudWatch down holds: {r}");
    assert!(r["headline"].as_str().unwrap().contains("signal source `cloudwatch http://127.0.0.1"), "{r}");
}

/// Without access keys, CloudWatch's credentials come as AWS's SDKs find
/// them: a web identity exchanged at STS (EKS's service-account roles), kept
/// while valid; else the instance profile through IMDSv2, fetched again when
/// within five minutes of expiry, and used until they expire when that
/// fails. CloudWatch checks each request's signature
/// and that its session token is one the fakes gave out. A token STS refuses
/// fails the check and holds; with nothing to go on, the error names the variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_credentials_come_from_a_web_identity_or_the_instance_profile() {
    use crate::support::cloudwatch::{ROLE_ARN, SECRET, WEB_IDENTITY_TOKEN};
    let (cw, t0, d, cfg) = cloudwatch_failing_canary().await;
    let token_file = d.path().join("token");
    std::fs::write(&token_file, format!("{WEB_IDENTITY_TOKEN}\n")).unwrap();
    let (file, sts) = (token_file.display().to_string(), format!("{}/sts", cw.url));
    let web = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", file.as_str()),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_ENDPOINT_URL_STS", sts.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let window = [t0.to_string(), (t0 + 600).to_string()];
    let advise = ["advise", "--format", "json", "--from", &window[0], "--to", &window[1]];
    let (code, out) = backstop(&cfg, d.path(), &web, &advise);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report(&out)["recommendation"], "rollback", "{out}");
    let (fetched, signed) = {
        let data = cw.data.lock().unwrap();
        (data.fetched, data.signed_with.clone())
    };
    assert_eq!(fetched.0, 1, "one exchange at STS for a whole release: its credentials last an hour");
    assert!(signed.len() > 1 && signed.iter().all(|t| t.contains("Sts")), "{signed:?}");
    assert!(!out.contains(SECRET) && !out.contains(WEB_IDENTITY_TOKEN), "{out}");

    // A token STS does not accept: the check names STS's refusal, a judgement holds.
    std::fs::write(&token_file, "not-the-token").unwrap();
    let (code, out) = backstop(&cfg, d.path(), &web, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("InvalidIdentityToken"), "{out}");
    let (_, out) = backstop(&cfg, d.path(), &web, &advise);
    assert_eq!(report(&out)["recommendation"], "hold", "{out}");

    // The instance profile: IMDSv2's credentials last 200 s here, so each use fetches them again.
    let imds = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", cw.url.as_str())];
    let (code, out) = backstop(&cfg, d.path(), &imds, &advise);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report(&out)["recommendation"], "rollback", "{out}");
    let fetched = {
        let mut data = cw.data.lock().unwrap();
        assert!(data.fetched.1 > 1, "renewed before expiry: {:?}", data.fetched);
        assert!(data.signed_with.iter().any(|t| t.contains("Imds")), "{:?}", data.signed_with);
        data.imds_fails_after = Some(data.fetched.1 + 1);
        data.fetched.1
    };
    // Renewal failing: the credentials held are used until they expire, and it says so.
    let (code, out) = backstop(&cfg, d.path(), &imds, &advise);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report(&out)["recommendation"], "rollback", "{out}");
    assert!(out.contains("Could not renew AWS credentials"), "{out}");
    assert_eq!(cw.data.lock().unwrap().fetched.1, fetched + 1);

    // Nothing to go on: the error says where it looked.
    let (code, out) = backstop(&cfg, d.path(), &[("AWS_EC2_METADATA_DISABLED", "true")], &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no AWS credentials: `T_AWS_ID` is not set"), "{out}");
}

/// A failing canary behind a fake CloudWatch, STS and SSO portal, with a
/// config file of profiles in the folder (also `HOME`): `reader` assumes
/// `ROLE_ARN` with the keys `vault`'s credential process prints, `broken`'s
/// process fails, `sso` is an IAM Identity Center role. Returns the fake, the
/// folder, the configuration, the environment but for `AWS_PROFILE`, and the window.
async fn cloudwatch_profiles()
-> (FakeSaas, tempfile::TempDir, std::path::PathBuf, Vec<(&'static str, String)>, [String; 2]) {
    use crate::support::cloudwatch::{EXTERNAL_ID, KEY_ID, ROLE_ARN, SECRET};
    let (cw, t0, d, cfg) = cloudwatch_failing_canary().await;
    let script = |name: &str, body: &str| {
        let path = d.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        path.display().to_string()
    };
    let json = format!(r#"{{"Version": 1, "AccessKeyId": "{KEY_ID}", "SecretAccessKey": "{SECRET}"}}"#);
    let good = script("creds.sh", &format!("echo '{json}'"));
    let bad = script("expired.sh", "echo 'session expired: run vault login' >&2; exit 3");
    let config = d.path().join("aws-config");
    let profiles = format!(
        "[profile reader]\nrole_arn = {ROLE_ARN}\nsource_profile = vault\nexternal_id = {EXTERNAL_ID}\n\
         [profile vault]\ncredential_process = sh {good} --secret-arg hunter2\n\
         [profile broken]\ncredential_process = sh {bad} --secret-arg hunter2\n\
         [profile sso]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = BackstopReader\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n"
    );
    std::fs::write(&config, profiles).unwrap();
    let env = vec![
        ("AWS_CONFIG_FILE", config.display().to_string()),
        ("HOME", d.path().display().to_string()),
        ("AWS_ENDPOINT_URL_STS", format!("{}/sts", cw.url)),
        ("AWS_ENDPOINT_URL_SSO", cw.url.clone()),
        ("AWS_ENDPOINT_URL_SSO_OIDC", cw.url.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    (cw, d, cfg, env, [t0.to_string(), (t0 + 600).to_string()])
}

/// `env` with `AWS_PROFILE` = `profile`, as `backstop` takes it.
fn with_profile<'a>(env: &'a [(&'static str, String)], profile: &'a str) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).chain([("AWS_PROFILE", profile)]).collect()
}

/// `advise` through `profile` rolls the failing canary back, every request
/// signed with a session token whose name holds `issued_as`, nothing secret shown.
fn rolled_back(
    cw: &FakeSaas,
    (cfg, dir): (&std::path::Path, &std::path::Path),
    env: &[(&str, &str)],
    window: &[String; 2],
    issued_as: &str,
) {
    use crate::support::cloudwatch::{SECRET, SSO_TOKEN};
    let advise = ["advise", "--format", "json", "--from", &window[0], "--to", &window[1]];
    let (code, out) = backstop(cfg, dir, env, &advise);
    assert_eq!((code, &report(&out)["recommendation"]), (Some(0), &serde_json::json!("rollback")), "{out}");
    let signed = std::mem::take(&mut cw.data.lock().unwrap().signed_with);
    assert!(!signed.is_empty() && signed.iter().all(|t| t.contains(issued_as)), "{signed:?}");
    assert!(!out.contains(SECRET) && !out.contains(SSO_TOKEN) && !out.contains("hunter2"), "{out}");
}

/// A profile of the shared files, as the SDKs read it: a role assumed (a
/// signed AssumeRole, with its external id) with the keys a
/// `credential_process` prints. A process that fails is named by its program
/// and its own message (never its arguments), and a judgement holds; a
/// profile the files lack is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_credentials_come_from_a_profile_of_the_shared_files() {
    let (cw, d, cfg, env, window) = cloudwatch_profiles().await;
    rolled_back(&cw, (&cfg, d.path()), &with_profile(&env, "reader"), &window, "StsRole");
    let (code, out) = backstop(&cfg, d.path(), &with_profile(&env, "reader"), &["config", "check"]);
    assert_eq!(code, Some(0), "{out}");
    let said = "(credentials: the role arn:aws:iam::123456789012:role/backstop-reader (profile `reader`), assumed with the credential_process `sh` of the profile `vault`)";
    assert!(out.contains(said) && !out.contains("hunter2"), "{out}");

    let broken = with_profile(&env, "broken");
    let (code, out) = backstop(&cfg, d.path(), &broken, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("session expired: run vault login") && out.contains("`sh`") && !out.contains("hunter2"),
        "{out}"
    );
    let (_, out) =
        backstop(&cfg, d.path(), &broken, &["advise", "--format", "json", "--from", &window[0], "--to", &window[1]]);
    assert_eq!(report(&out)["recommendation"], "hold", "{out}");
    let (code, out) = backstop(&cfg, d.path(), &with_profile(&env, "nowhere"), &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("AWS_PROFILE names the profile `nowhere`"), "{out}");
}

/// An IAM Identity Center profile: the token `aws sso login` cached under the
/// SHA-1 of the session's name is given to the portal; without it, or once it
/// has expired, the check says to log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_credentials_come_from_an_sso_profiles_cached_token() {
    use crate::support::cloudwatch::SSO_TOKEN;
    let (cw, d, cfg, env, window) = cloudwatch_profiles().await;
    let sso = with_profile(&env, "sso");
    let (code, out) = backstop(&cfg, d.path(), &sso, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("aws sso login") && out.contains(".aws/sso/cache"), "{out}");

    let cache = d.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    // Python's hashlib.sha1(b"corp").hexdigest().
    let file = cache.join("ee0bfd2552fbd840c02cc48b6e823320543c450f.json");
    let token = |plus_s: i64| {
        let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + plus_s).unwrap().to_string();
        let t = serde_json::json!({"startUrl": "https://corp.awsapps.com/start", "region": "eu-west-1", "accessToken": SSO_TOKEN, "expiresAt": expires});
        std::fs::write(&file, t.to_string()).unwrap();
    };
    token(3600);
    rolled_back(&cw, (&cfg, d.path()), &sso, &window, "Sso");
    token(-60);
    let (code, out) = backstop(&cfg, d.path(), &sso, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("expired at") && out.contains("aws sso login"), "{out}");
}

/// A cached SSO token near its expiry is refreshed at SSO-OIDC with the
/// cached client registration and written back (the file's other fields
/// kept); a refresh the service refuses, once the token has expired, says to log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_token_near_its_expiry_is_refreshed_and_written_back() {
    use crate::support::cloudwatch::{SSO_CLIENT, SSO_TOKEN};
    let (cw, d, cfg, env, window) = cloudwatch_profiles().await;
    let sso = with_profile(&env, "sso");
    let cache = d.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let file = cache.join("ee0bfd2552fbd840c02cc48b6e823320543c450f.json");
    let (client_id, client_secret, refresh_token) = SSO_CLIENT;
    let stale = |plus_s: i64, refresh: &str| {
        let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + plus_s).unwrap().to_string();
        let t = serde_json::json!({"startUrl": "https://corp.awsapps.com/start", "region": "eu-west-1",
            "accessToken": "an-old-token-the-portal-refuses", "expiresAt": expires, "clientId": client_id,
            "clientSecret": client_secret, "refreshToken": refresh, "registrationExpiresAt": "2099-01-01T00:00:00Z"});
        std::fs::write(&file, t.to_string()).unwrap();
    };
    stale(120, refresh_token);
    rolled_back(&cw, (&cfg, d.path()), &sso, &window, "Sso");
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["accessToken"], SSO_TOKEN, "{written}");
    assert_eq!(written["startUrl"], "https://corp.awsapps.com/start", "the rest of the file kept: {written}");
    let expires = written["expiresAt"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert!(expires.as_second() - jiff::Timestamp::now().as_second() > 3000, "{written}");

    stale(-60, "a-revoked-refresh-token");
    let (code, out) = backstop(&cfg, d.path(), &sso, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("could not be refreshed")
            && out.contains("Invalid refresh token")
            && out.contains("aws sso login"),
        "{out}"
    );
    assert!(!out.contains(client_secret) && !out.contains("a-revoked-refresh-token"), "{out}");
}

/// The container endpoint (EKS Pod Identity, an ECS task role): the token
/// file is sent as `Authorization`; a token the agent refuses fails the check;
/// a plain-HTTP endpoint that is not loopback or the agent's is refused before
/// any token is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_credentials_come_from_the_container_endpoint() {
    use crate::support::cloudwatch::CONTAINER_TOKEN;
    let (cw, d, cfg, _, window) = cloudwatch_profiles().await;
    let token_file = d.path().join("pod-identity-token");
    std::fs::write(&token_file, format!("{CONTAINER_TOKEN}\n")).unwrap();
    let (uri, file) = (format!("{}/v1/credentials", cw.url), token_file.display().to_string());
    let env = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", file.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    rolled_back(&cw, (&cfg, d.path()), &env, &window, "Container");
    assert!(cw.data.lock().unwrap().fetched.1 >= 1);

    std::fs::write(&token_file, "not-the-token").unwrap();
    let (code, out) = backstop(&cfg, d.path(), &env, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("401") && !out.contains("not-the-token"), "{out}");
    let plain = [("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://203.0.113.7/v1/credentials"), env[1], env[2]];
    let (code, out) = backstop(&cfg, d.path(), &plain, &["config", "check"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("must be https, or http to a loopback address"), "{out}");
}
