use super::*;
use crate::executor::{ExecutionPermit, Guarded};

fn exec(rollback: &[&str], verify: Option<&[&str]>, timeout_s: u64, env: &[&str]) -> Guarded {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Guarded::new(std::sync::Arc::new(CommandExecutor::new(
        "helm/checkout",
        "v42",
        CommandConfig {
            rollback: v(rollback),
            promote: None,
            verify: verify.map(v),
            timeout_s,
            env_allowlist: env.iter().map(|s| s.to_string()).collect(),
        },
    )))
}

fn plan(e: &Guarded, to: &str) -> ActionPlan {
    let rb = RollbackPlan {
        target: "helm/checkout".into(),
        from_revision: "v42".into(),
        to_revision: to.into(),
        reason: "r".into(),
    };
    e.plan_rollback(&rb, 100).unwrap()
}

fn permit(p: &ActionPlan) -> ExecutionPermit {
    ExecutionPermit::issued_by_ledger(&p.id, 1)
}

#[tokio::test]
async fn runs_argv_with_placeholders_and_captures_output() {
    let e = exec(
        &["echo", "rollback", "{target}", "from", "{from_revision}", "to", "{to_revision}"],
        Some(&["true"]),
        10,
        &["PATH"],
    );
    let p = plan(&e, "v41");
    assert_eq!(p.steps[0], r#"run ["echo", "rollback", "helm/checkout", "from", "v42", "to", "v41"]"#);
    let out = e.execute(&p, permit(&p)).await.unwrap();
    assert!(out.contains("stdout: rollback helm/checkout from v42 to v41"), "{out}");
    assert!(e.verify(&p).await.unwrap().verified);
}

#[tokio::test]
async fn no_shell_metacharacters_stay_one_literal_argument() {
    let e = exec(&["echo", "{to_revision}"], None, 10, &["PATH"]);
    let p = plan(&e, "v41; touch /tmp/backstop-pwned && echo $HOME");
    let out = e.execute(&p, permit(&p)).await.unwrap();
    assert!(out.contains("stdout: v41; touch /tmp/backstop-pwned && echo $HOME"), "{out}");
    assert!(!std::path::Path::new("/tmp/backstop-pwned").exists());
}

#[tokio::test]
async fn environment_is_cleared_but_for_the_allowlist() {
    let e = exec(&["/usr/bin/env"], None, 10, &["BACKSTOP_TEST_ALLOWED_NOT_SET_ANYWHERE", "PATH"]);
    let p = plan(&e, "v41");
    let out = e.execute(&p, permit(&p)).await.unwrap();
    assert!(out.contains("PATH="), "{out}");
    assert!(!out.contains("HOME="), "HOME leaked: {out}");
}

#[tokio::test]
async fn a_slow_command_is_killed_at_the_timeout() {
    let e = exec(&["sleep", "5"], None, 1, &["PATH"]);
    let p = plan(&e, "v41");
    let started = std::time::Instant::now();
    let err = e.execute(&p, permit(&p)).await.unwrap_err().to_string();
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn a_failing_command_is_an_error_and_nothing_verifies_without_a_verify_command() {
    let e = exec(&["false"], None, 10, &["PATH"]);
    let p = plan(&e, "v41");
    assert!(e.execute(&p, permit(&p)).await.is_err());
    let v = e.verify(&p).await.unwrap();
    assert!(!v.verified && v.observed.contains("no verify command"));
}

#[tokio::test]
async fn a_permit_for_another_plan_is_refused() {
    let e = exec(&["true"], None, 10, &["PATH"]);
    let (p1, p2) = (plan(&e, "v41"), plan(&e, "v41"));
    assert!(matches!(e.execute(&p1, permit(&p2)).await, Err(ExecutorError::PermitMismatch { .. })));
}

#[tokio::test]
async fn the_whole_process_group_dies_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("grandchild-survived");
    let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
    let e = exec(&["sh", "-c", &script], None, 1, &["PATH"]);
    let p = plan(&e, "v41");
    assert!(e.execute(&p, permit(&p)).await.is_err());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!marker.exists(), "a grandchild outlived the timeout");
}

#[tokio::test]
async fn output_is_capped_and_passed_through_secrets_are_masked() {
    let e = exec(
        &["sh", "-c", "echo key=$MODEL_TEST_API_KEY; head -c 3000000 /dev/zero | tr '\\0' x"],
        Some(&["true"]),
        10,
        &["PATH", "MODEL_TEST_API_KEY"],
    );
    let p = plan(&e, "v41");
    let out = e.execute(&p, permit(&p)).await.unwrap();
    assert!(out.contains("key=***") && !out.contains("test-key-123"), "{}", &out[..200.min(out.len())]);
    assert!(out.len() < 3 * MAX_OUTPUT, "{} bytes kept", out.len());
    assert!(out.contains("bytes)"), "the cut is said");
}
