//! `backstop config check`: every dependency reached read-only, the worst
//! outcome as the exit code, and nothing changed.

use assert_cmd::Command;

use crate::support::haproxy::Haproxy;
use crate::support::prometheus::Prometheus;

pub(crate) fn check(config: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
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

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy and Prometheus")]
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

/// A Prometheus stand-in that answers `buildinfo` only to the right `Authorization` header.
async fn guarded_prometheus(expected: &'static str) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/api/v1/status/buildinfo",
        axum::routing::get(move |h: HeaderMap| async move {
            match h.get("authorization").and_then(|v| v.to_str().ok()) {
                Some(v) if v == expected => {
                    (StatusCode::OK, r#"{"status":"success","data":{"version":"2.53.0"}}"#.to_string())
                }
                _ => (StatusCode::UNAUTHORIZED, "unauthorized".to_string()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_credentials_go_in_the_authorization_header_from_the_environment() {
    // "Basic " + base64("reader:pw-basic")
    for (auth, var, value, header) in [
        (r#"{ kind = "bearer", token_env = "CHECK_PROM_TOKEN" }"#, "CHECK_PROM_TOKEN", "tok-1", "Bearer tok-1"),
        (
            r#"{ kind = "basic", username = "reader", password_env = "CHECK_PROM_PW" }"#,
            "CHECK_PROM_PW",
            "pw-basic",
            "Basic cmVhZGVyOnB3LWJhc2lj",
        ),
    ] {
        let url = guarded_prometheus(header).await;
        let plain = prometheus_source(&url);
        let source = format!("{}, auth = {auth} }}", plain.strip_suffix(" }").unwrap());
        let cfg = crate::support::release_toml("helm/checkout", &source, None);
        let d = tempfile::tempdir().unwrap();
        let (code, out) = tokio::task::spawn_blocking({
            let (cfg, p) = (cfg.clone(), d.path().to_path_buf());
            move || check(&cfg, &p, &[(var, value)])
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("version 2.53.0") && !out.contains(value), "{out}");
        let (code, out) = tokio::task::spawn_blocking({
            let p = d.path().to_path_buf();
            move || check(&cfg, &p, &[(var, "wrong")])
        })
        .await
        .unwrap();
        assert_eq!(code, 3, "a wrong credential is refused: {out}");
        let unset = crate::support::release_toml("helm/checkout", &source.replace(var, "CHECK_PROM_UNSET"), None);
        let (code, out) = tokio::task::spawn_blocking({
            let p = d.path().to_path_buf();
            move || check(&unset, &p, &[])
        })
        .await
        .unwrap();
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("variable `CHECK_PROM_UNSET` is not set"), "{out}");
    }
}
