//! The HTML report in a real browser (Debian's headless Chromium): it renders,
//! every metric's chart is there, and the page fetches nothing.

use assert_cmd::Command;

use crate::support::chromium;

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Chromium")]
#[test]
fn html_report_renders_in_chromium_with_charts_and_no_external_fetch() {
    let d = tempfile::tempdir().unwrap();
    let html = d.path().join("report.html");
    Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", "fixtures/config/simulator.toml", "advise", "--release", "checkout", "--pace-ms", "0"])
        .args([
            "--ledger",
            d.path().join("l.db").to_str().unwrap(),
            "--format",
            "html",
            "--out",
            html.to_str().unwrap(),
        ])
        .assert()
        .success();
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing that could make a browser fetch, and a policy that forbids it anyway.
    for needle in ["src=", "href=", "url(", "@import", "<script", "<link"] {
        assert!(!page.contains(needle), "report contains {needle}");
    }
    assert!(page.contains("Content-Security-Policy\" content=\"default-src 'none'"));

    let url = format!("file://{}", html.display());
    let dom = chromium(&["--dump-dom", &url], &d.path().join("profile-a"));
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom_text.matches("<svg").count(), 5, "one chart per metric");
    for metric in ["http_error_ratio", "latency_p99_ms", "cpu_percent", "memory_mb", "throughput_per_pod_rps"] {
        assert!(dom_text.contains(metric), "{metric} missing from the rendered page");
    }
    assert!(dom_text.contains("ROLLBACK") && dom_text.contains("decision") && dom_text.contains("fault onset"));
    assert_eq!(dom_text.matches("judged window").count(), 5, "each chart shades the judge's window");
    // Read in 30 seconds: the plan before the scorecard, a verdict in words per metric with
    // its shift and tolerance (a ratio in percentage points), passing metrics folded away.
    let (plan, card) = (dom_text.find("<h2>Plan</h2>").unwrap(), dom_text.find("Scorecard at").unwrap());
    assert!(plan < card, "the plan comes first");
    assert!(dom_text.contains("<th>harmful shift</th><th>tolerance</th><th>why</th>"), "{dom_text}");
    assert!(dom_text.contains(">fail</span>") && dom_text.contains(" pp</td>"), "{dom_text}");
    assert!(!dom_text.contains("confidence</th>"), "no unexplained confidence column");
    assert!(dom_text.contains("passing or ignored metric(s)</summary>"), "passing metrics folded: {dom_text}");
    assert!(dom_text.contains("charts of passing metrics</summary>"), "their charts folded too");
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(!log.contains("Refused to"), "the page tried to fetch something: {log}");

    let png = d.path().join("shot.png");
    let shot = chromium(
        &[&format!("--screenshot={}", png.display()), "--window-size=1000,1400", "--hide-scrollbars", &url],
        &d.path().join("profile-b"),
    );
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "screenshot is {} bytes", bytes.len());
    if let Ok(keep) = std::env::var("REPORT_SCREENSHOT_COPY") {
        std::fs::copy(&png, keep).unwrap();
    }
}

/// A Markdown report of hostile text: the text shown as text; no control or
/// bidi character; no markup of theirs outside code spans; every table row
/// with its ten cell borders (a `|` in a name cannot add a column).
fn markdown_carries_no_markup_of_theirs(md: &str) {
    assert!(md.contains("http-equiv") && md.contains("onerror"), "the text is shown, as text: {md}");
    for bad in ["\u{1b}", "\u{7}", "\u{202e}"] {
        assert!(!md.contains(bad), "markdown carries {bad:?}:\n{md}");
    }
    // Outside code spans (whose content Markdown never interprets) no markup of theirs survives.
    for line in md.lines() {
        assert_eq!(line.matches('`').count() % 2, 0, "a code span left open: {line}");
        let prose: String = line.split('`').step_by(2).collect();
        for bad in ["<img", "<meta", "<script", "](https", "lat|"] {
            assert!(!prose.contains(bad), "markdown carries {bad:?}: {line}");
        }
    }
    for row in md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| ---")) {
        let borders =
            row.chars().zip(std::iter::once(' ').chain(row.chars())).filter(|(c, p)| *c == '|' && *p != '\\').count();
        assert_eq!(borders, 10, "{row}");
    }
}

/// Metric names, event kinds and messages, and log lines written by someone
/// who can set a label or emit an event reach every report format inert: no
/// HTML element, link, image, table cell break, escape sequence or bidi
/// override of theirs survives (`fixtures/hostile/hostile-text.json`).
#[test]
fn hostile_telemetry_text_is_inert_in_markdown_and_html_reports() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("backstop.toml");
    std::fs::write(
        &cfg,
        crate::support::release_toml(
            "simulator/checkout",
            &format!(
                "{{ kind = \"scenario\", path = \"{}\" }}",
                crate::support::repo_path("fixtures/hostile/hostile-text.json")
            ),
            None,
        ),
    )
    .unwrap();
    let run = |format: &str| {
        let out = Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", cfg.to_str().unwrap(), "advise", "--pace-ms", "0", "--format", format])
            .args(["--ledger", d.path().join("l.db").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    markdown_carries_no_markup_of_theirs(&run("markdown"));
    // The terminal lines of `watch` carry no escape sequence either.
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0"])
        .args(["--ledger", d.path().join("w.db").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("onerror"), "{text}");
    for bad in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(!text.contains(bad), "watch printed {bad:?}");
    }
    let html = run("html");
    assert_eq!(html.matches("<meta").count(), 3, "only the page's own charset, viewport and CSP tags");
    for bad in ["<img", "<script", "\u{1b}", "\u{202e}"] {
        assert!(!html.contains(bad), "html carries {bad:?}");
    }
}
