//! CI conventions: GitHub Actions' step outputs (`$GITHUB_OUTPUT`) and
//! annotations (`::error::`, `::warning::`, `::notice::`), so a workflow
//! can branch on the decision and a reader sees it on the run's page.
//! Outside GitHub Actions (no `GITHUB_ACTIONS=true`, no `GITHUB_OUTPUT`)
//! nothing here writes anything.

use std::io::Write;
use std::path::Path;

use backstop::report::Report;
use backstop::run::exit;

/// How loud an ending is on the run's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Notice,
    Warning,
    Error,
}

impl Level {
    /// Exit code to annotation level: a promotion is news, a hold wants a
    /// look, a rollback or a failure fails the step.
    fn of(code: u8) -> Level {
        match code {
            exit::PROMOTED => Level::Notice,
            exit::HELD | exit::INTERRUPTED => Level::Warning,
            _ => Level::Error,
        }
    }

    fn command(self) -> &'static str {
        match self {
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// GitHub's escaping of a workflow command's message (`%`, CR, LF).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// GitHub's escaping of a workflow command's property (also `:` and `,`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One annotation line per release: `::level title=backstop: NAME::headline (exit N)`.
pub fn annotation(report: &Report, code: u8) -> String {
    let level = Level::of(code).command();
    let title = escape_property(&format!("backstop: {}", report.release));
    let message = escape_data(&format!("{} (exit {code})", report.headline));
    format!("::{level} title={title}::{message}")
}

/// Annotations on stderr (the runner reads workflow commands from both
/// streams; stdout stays the report or the JSON document).
pub fn annotate(reports: &[Report], codes: &[u8]) {
    if std::env::var("GITHUB_ACTIONS").as_deref() != Ok("true") {
        return;
    }
    let mut err = std::io::stderr().lock();
    for (r, &c) in reports.iter().zip(codes) {
        let _ = writeln!(err, "{}", backstop::secret::mask(&annotation(r, c)));
    }
}

/// The step's outputs, as `name=value` lines: `exit_code`, `decision`
/// (the release's status, or `name:status` pairs comma-separated for
/// several) and `report` (the path written, when there is one).
pub fn outputs(reports: &[Report], code: u8, report_path: Option<&Path>) -> Vec<(String, String)> {
    let decision = match reports {
        [one] => one.status.label().to_string(),
        many => many.iter().map(|r| format!("{}:{}", r.release, r.status.label())).collect::<Vec<_>>().join(","),
    };
    let mut out = vec![("exit_code".to_string(), code.to_string()), ("decision".to_string(), decision)];
    if let Some(p) = report_path {
        out.push(("report".into(), p.display().to_string()));
    }
    out
}

/// Append the outputs to `$GITHUB_OUTPUT` when it is set. Values are one
/// line each (names and status labels are bounded, plain fields).
pub fn write_outputs(pairs: &[(String, String)]) {
    let text: String = pairs.iter().map(|(k, v)| format!("{k}={}\n", v.replace(['\r', '\n'], " "))).collect();
    append_to("GITHUB_OUTPUT", &text);
}

/// Append `text` to the file the variable `var` names (GitHub's step
/// summary and outputs), when it is set; a file that cannot be written is a
/// warning, never a failed run.
pub fn append_to(var: &str, text: &str) {
    let Ok(path) = std::env::var(var) else { return };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(path, variable = var, error = %e, "Cannot write GitHub's file.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_properties_are_escaped_as_github_reads_them() {
        assert_eq!(escape_data("50% up\nnext"), "50%25 up%0Anext");
        assert_eq!(escape_property("backstop: a,b"), "backstop%3A a%2Cb");
    }

    #[test]
    fn every_exit_code_has_its_level() {
        assert_eq!(Level::of(exit::PROMOTED), Level::Notice);
        assert_eq!(Level::of(exit::HELD), Level::Warning);
        for code in [exit::ROLLED_BACK, exit::ROLLBACK_NOT_EXECUTED, exit::BACKEND] {
            assert_eq!(Level::of(code), Level::Error);
        }
    }
}
