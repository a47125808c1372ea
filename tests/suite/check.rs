//! `backstop config check`: every dependency reached read-only, the worst
//! outcome as the exit code, and nothing changed.

use assert_cmd::Command;

use crate::support::haproxy::Haproxy;
use crate::support::prometheus::Prometheus;

fn check(config: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let path = dir.join("backstop.toml");
    std::fs::write(&path, config).unwrap();
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("RUST_LOG").envs(env.iter().copied());
    let o = c
        .args(["--config", path.to_str().unwrap(), "config", "check"])
        .args(["--ledger", dir.join("l.db").to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

fn prometheus_source(url: &str) -> String {
    format!(
        r#"{{ kind = "prometheus", url = "{url}", baseline = "stable", canary = "canary", step_s = 10, duration_s = 60, timeout_s = 2, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "x{{v=\"{{{{ side }}}}\"}}" }}] }}"#
    )
}

#[test]
fn reachable_dependencies_pass_and_nothing_is_changed() {
    let h = Haproxy::start();
    let prom = Prometheus::start(&format!("127.0.0.1:{}", h.metrics_port));
    let d = tempfile::tempdir().unwrap();
    let socket = h.unix_socket.display().to_string();
    let executor = format!(
        r#"{{ kind = "haproxy", socket = "{socket}", backend = "be", canary_server = "canary", stable_server = "stable" }}"#
    );
    let cfg = crate::support::release_toml("haproxy/checkout", &prometheus_source(&prom.url), Some(&executor));
    let (code, out) = check(&cfg, d.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok       release checkout: source: prometheus") && out.contains("version"), "{out}");
    assert!(out.contains("canary weight 10, stable weight 100"), "HAProxy read back, unchanged: {out}");
    assert!(out.contains("skipped  ledger") && !d.path().join("l.db").exists(), "no ledger created: {out}");
}

#[test]
fn an_unreachable_source_and_a_missing_program_fail_with_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let executor =
        r#"{ kind = "command", rollback = ["backstop-no-such-program", "rollback"], verify = ["/bin/true"] }"#;
    let cfg = crate::support::release_toml("helm/checkout", &prometheus_source("http://127.0.0.1:1"), Some(executor));
    let (code, out) = check(&cfg, d.path(), &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED   release checkout: source") && out.contains("127.0.0.1:1"), "{out}");
    assert!(
        out.contains("FAILED   release checkout: executor") && out.contains("`backstop-no-such-program` not found"),
        "{out}"
    );
}

#[test]
fn a_missing_secret_is_a_setting_error_with_exit_2_and_the_secret_never_shows() {
    let d = tempfile::tempdir().unwrap();
    let executor =
        r#"{ kind = "webhook", url = "https://hooks.example/rollback", secret_env = "BACKSTOP_CHECK_UNSET_SECRET" }"#;
    let cfg = crate::support::release_toml(
        "argo/checkout",
        r#"{ kind = "simulator", service = "checkout", duration_s = 600 }"#,
        Some(executor),
    );
    let (code, out) = check(&cfg, d.path(), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("INVALID  release checkout: configuration") && out.contains("BACKSTOP_CHECK_UNSET_SECRET"),
        "{out}"
    );
    // With the secret set, the webhook is valid; without a verify_url it is not probed (a POST would act).
    let (code, out) = check(&cfg, d.path(), &[("BACKSTOP_CHECK_UNSET_SECRET", "marker-7f3a")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not probed") && !out.contains("marker-7f3a"), "{out}");
}
