//! Policy's blast radius with real processes: with `max_targets = 3`, three
//! canaries of one service run on one agent and a fourth, started by another
//! process on the same ledger, is refused naming the three; once they end,
//! the fourth target's release starts.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::suite::agent::audit;
use crate::support::agents::Agent;

/// One simulated release of `checkout` on `sim/<target>`.
fn release(name: &str, target: &str) -> String {
    format!(
        "[[releases]]\nname = \"{name}\"\nservice = \"checkout\"\ntarget = \"sim/{target}\"\n\
         candidate_revision = \"v42\"\nlast_known_good = \"v41\"\n\
         source = {{ kind = \"simulator\", seed = 3 }}\nexecutor = {{ kind = \"simulator\" }}\n\n"
    )
}

fn config(dir: &Path, file: &str, releases: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::from("policy = \"policy.toml\"\n\n");
    for (name, target) in releases {
        text.push_str(&release(name, target));
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_fourth_concurrent_canary_of_a_service_is_refused_and_starts_once_one_ends() {
    let d = tempfile::tempdir().unwrap();
    let policy = format!("{}\n[blast_radius]\nmax_targets = 3\n", backstop::policy::DEFAULT_POLICY);
    std::fs::write(d.path().join("policy.toml"), policy).unwrap();
    let ledger = d.path().join("l.db").to_str().unwrap().to_string();
    let three = config(d.path(), "three.toml", &[("eu-1", "eu-1"), ("eu-2", "eu-2"), ("us-1", "us-1")]);
    let first = Agent::watch(&three, &ledger, 40, &[]);
    let start = Instant::now();
    while audit(&ledger).matches(" release_started ").count() < 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "the three never started: {}", first.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }

    let fourth = config(d.path(), "fourth.toml", &[("ap-1", "ap-1")]);
    let (code, out, err) = Agent::watch(&fourth, &ledger, 0, &[]).finish(Duration::from_secs(60));
    assert_eq!(code, 11, "a denied release exits 11:\n{out}\n{err}");
    let text = format!("{out}\n{err}");
    assert!(text.contains("blast radius") && text.contains("sim/eu-1, sim/eu-2, sim/us-1"), "{text}");
    let ledger_text = audit(&ledger);
    assert!(!ledger_text.contains("lease on sim/ap-1 "), "the refused release took no lease:\n{ledger_text}");

    let (code, out, err) = first.finish(Duration::from_secs(120));
    assert_eq!(code, 0, "the three were promoted:\n{out}\n{err}");
    let again = config(d.path(), "again.toml", &[("ap-1-again", "ap-1")]);
    let (code, out, err) = Agent::watch(&again, &ledger, 0, &[]).finish(Duration::from_secs(120));
    assert_eq!(code, 0, "with the three ended there is room:\n{out}\n{err}");
    assert!(audit(&ledger).contains("lease on sim/ap-1 "), "admitted, it took the target's lease");
}

#[test]
fn a_percentage_of_the_services_declared_targets_admits_two_of_four_canaries() {
    let d = tempfile::tempdir().unwrap();
    let policy = format!("{}\n[blast_radius]\nmax_percent = 50\n", backstop::policy::DEFAULT_POLICY);
    std::fs::write(d.path().join("policy.toml"), policy).unwrap();
    let ledger = d.path().join("l.db").to_str().unwrap().to_string();
    let four = [("eu-1", "eu-1"), ("eu-2", "eu-2"), ("us-1", "us-1"), ("ap-1", "ap-1")];
    let all = config(d.path(), "four.toml", &four);
    let (code, out, err) = Agent::watch(&all, &ledger, 20, &[]).finish(Duration::from_secs(120));
    assert_eq!(code, 11, "two of the four were denied, and a denial is the most severe end:\n{out}\n{err}");
    let text = format!("{out}\n{err}");
    assert!(text.contains("max_percent = 50 of 4 declared target(s)"), "the refusal names the rule: {text}");
    let ledger_text = audit(&ledger);
    let leases = four.iter().filter(|(_, t)| ledger_text.contains(&format!("lease on sim/{t} "))).count();
    assert_eq!(leases, 2, "50 % of four targets is two canaries at once:\n{ledger_text}");
}
