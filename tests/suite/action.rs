//! The GitHub Action (`action.yml`): its one step's script run here as the
//! runner would run it — `INPUT_*` variables from the inputs, a
//! `GITHUB_OUTPUT` file — against recorded releases, and the action file
//! checked to declare every input the script reads and every output it writes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Run the step with `inputs` (names as in action.yml); its exit code and outputs.
fn step(dir: &Path, inputs: &[(&str, &str)]) -> (i32, BTreeMap<String, String>, String) {
    let out_file = dir.join("github_output");
    std::fs::write(&out_file, "").unwrap();
    let summary = dir.join("summary.md");
    let mut c = std::process::Command::new("bash");
    c.arg(repo("scripts/action-watch.sh"))
        .current_dir(dir)
        .env_remove("BACKSTOP_CONFIG")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &out_file)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("RUNNER_TEMP", dir)
        .env("INPUT_BACKSTOP", assert_cmd::cargo::cargo_bin("backstop"));
    for (name, value) in inputs {
        c.env(format!("INPUT_{}", name.to_uppercase().replace('-', "_")), value);
    }
    let out = c.output().unwrap();
    let outputs = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), outputs, text)
}

#[test]
fn the_action_step_reports_a_rollback_and_a_promotion_as_outputs_and_fails_only_when_asked() {
    let d = tempfile::tempdir().unwrap();
    let config = repo("fixtures/config/replay.toml");
    let ledger = d.path().join("l.db").display().to_string();
    let base = [("config", config.as_str()), ("ledger", ledger.as_str()), ("pace-ms", "0")];

    let bad: Vec<_> = base.iter().copied().chain([("release", "bad"), ("report", "bad.md")]).collect();
    let (code, out, text) = step(d.path(), &bad);
    assert_eq!(code, 11, "a rollback with no executor fails the step with watch's code: {text}");
    assert_eq!(out["decision"], "recommended", "no executor: the rollback is recommended: {out:?}");
    assert_eq!(out["exit_code"], "11");
    assert_eq!(out["report"], "bad.md");
    let report = std::fs::read_to_string(d.path().join("bad.md")).unwrap();
    assert!(report.contains("bad") && report.to_lowercase().contains("rollback"), "{report}");
    let summary = std::fs::read_to_string(d.path().join("summary.md")).unwrap();
    assert_eq!(summary, report, "the Markdown report is the job summary, once");
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out["result"]).unwrap()).unwrap();
    assert!(result.to_string().contains("\"bad\""), "the JSON result names the release: {result}");

    let keep_going: Vec<_> = bad.iter().copied().chain([("fail-on-rollback", "false")]).collect();
    let (code, out, text) = step(d.path(), &keep_going);
    assert_eq!((code, out["exit_code"].as_str()), (0, "11"), "the decision is left to later steps: {text}");

    let good: Vec<_> = base.iter().copied().chain([("release", "good"), ("report", "good.html")]).collect();
    let (code, out, text) = step(d.path(), &good);
    // No executor: the promotion is recommended (the pipeline carries it out), exit 0.
    assert_eq!((code, out["decision"].as_str(), out["exit_code"].as_str()), (0, "recommended", "0"), "{text}");
    assert!(text.contains("::notice title=backstop%3A good::backstop would promote v43"), "{text}");
    assert!(std::fs::read_to_string(d.path().join("good.html")).unwrap().contains("<html"), "an HTML report");

    let (code, out, text) = step(d.path(), &[("config", "missing.toml")]);
    assert_eq!((code, out["decision"].as_str(), out["exit_code"].as_str()), (2, "not_judged", "2"), "{text}");
    assert!(text.contains("missing.toml"), "the error names the file: {text}");
}

#[test]
fn action_yml_declares_every_input_the_step_reads_and_every_output_it_writes() {
    let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(repo("action.yml")).unwrap()).unwrap();
    let script = std::fs::read_to_string(repo("scripts/action-watch.sh")).unwrap();
    let inputs = doc["inputs"].as_mapping().unwrap();
    let env = doc["runs"]["steps"][0]["env"].as_mapping().unwrap();
    assert_eq!(doc["runs"]["using"], "composite");
    assert!(doc["runs"]["steps"][0]["run"].as_str().unwrap().contains("scripts/action-watch.sh"));
    for (name, _) in inputs {
        let name = name.as_str().unwrap();
        let var = format!("INPUT_{}", name.to_uppercase().replace('-', "_"));
        let passed = env.get(var.as_str()).and_then(|v| v.as_str()).unwrap_or_default();
        assert_eq!(passed, format!("${{{{ inputs.{name} }}}}"), "input {name} reaches the step as {var}");
        assert!(script.contains(&var), "the script reads {var}");
    }
    // watch writes exit_code, decision and report (cli::ci::outputs); the script adds result.
    for (name, spec) in doc["outputs"].as_mapping().unwrap() {
        let value = spec["value"].as_str().unwrap();
        let key = value.strip_prefix("${{ steps.watch.outputs.").and_then(|v| v.strip_suffix(" }}")).unwrap();
        assert!(["exit_code", "decision", "report", "result"].contains(&key), "{name:?} maps to {value}");
    }
    assert!(script.contains("echo \"result="), "the script writes the result output");
    for var in script
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.len() > 6 && w.starts_with("INPUT_"))
    {
        assert!(env.contains_key(var), "{var} is read by the script but not passed by action.yml");
    }
}
