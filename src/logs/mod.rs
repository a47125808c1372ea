//! Log lines as evidence: the Drain template miner, and how a raw line from
//! a log backend (Kubernetes, Loki) becomes a [`LogLine`] with a level.
//!
//! The judge mines templates from the lines of both sides and tests "new or
//! much more frequent on the canary" (`judge::logs`); the sources only read
//! lines. A line's text is untrusted everywhere: it is counted and quoted,
//! never followed.

pub mod drain;
mod kubernetes;
mod loki;
mod reader;
mod source;

pub use kubernetes::{PodLogs, PodLogsConfig, parse_pod_log};
pub use loki::{LokiConfig, LokiLogs, streams as loki_streams};
pub use reader::{LogBatch, LogReadError, LogReader, RawLine};
pub use source::{LogSourceConfig, MAX_LINE_BYTES, MAX_LINES, WithLogs, cut};

use crate::signals::{LogLine, Side};

/// The level a line states, lower case: a JSON `"level"`/`"severity"`
/// field, a logfmt `level=`, or the first bracketed or bare level word
/// among the first few tokens (`ERROR`, `[warn]`, `E1128`-style klog
/// prefixes are not guessed). `unknown` when it says none.
pub fn level_of(message: &str) -> String {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(message) {
        let stated = ["level", "severity", "lvl"].iter().find_map(|k| o.get(*k).and_then(|v| v.as_str()));
        return stated.and_then(|v| normalise(v, true)).unwrap_or("unknown").into();
    }
    for token in message.split_whitespace().take(4) {
        let (word, field) = match token.strip_prefix("level=").or_else(|| token.strip_prefix("lvl=")) {
            Some(v) => (v, true),
            None => (token, false),
        };
        if let Some(l) = normalise(word.trim_matches(|c: char| "[]():\"'".contains(c)), field) {
            return l.into();
        }
    }
    "unknown".into()
}

/// A level as a source or scenario wrote it (`ERR`, `critical`, `warning`),
/// in the one spelling `[judge.logs] levels` uses; `None` when unknown.
pub fn canonical_level(level: &str) -> Option<&'static str> {
    normalise(level.trim(), true)
}

/// A known level word in one spelling; single letters (`E`, `W`) only as a
/// field's value, where they cannot be an ordinary word.
fn normalise(word: &str, field: bool) -> Option<&'static str> {
    let l = word.to_ascii_lowercase();
    let known = match l.as_str() {
        "error" | "err" => "error",
        "warn" | "warning" => "warn",
        "info" | "notice" => "info",
        "debug" | "trace" => "debug",
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => "fatal",
        "e" if field => "error",
        "w" if field => "warn",
        "i" if field => "info",
        "d" if field => "debug",
        _ => return None,
    };
    Some(known)
}

/// A line read at wall time `at_unix_s` for `side` of a release that began
/// at `start_unix_s`: `None` before the release (another release's lines).
pub fn line_at(side: Side, start_unix_s: f64, at_unix_s: f64, message: &str) -> Option<LogLine> {
    (at_unix_s >= start_unix_s).then(|| LogLine {
        t_s: (at_unix_s - start_unix_s) as u64,
        target: side,
        level: level_of(message),
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_come_from_json_logfmt_or_a_leading_word() {
        let cases = [
            (r#"{"level":"ERROR","msg":"payment failed"}"#, "error"),
            (r#"{"severity":"warning","msg":"slow"}"#, "warn"),
            ("level=error msg=\"db down\"", "error"),
            ("2026-11-28 05:51:47 [WARN] pool exhausted", "warn"),
            ("ERROR: NullPointerException in CartPricing", "error"),
            ("panic: runtime error: index out of range", "fatal"),
            ("GET /healthz 200", "unknown"),
            ("e is for elephant", "unknown"),
            (r#"{"msg":"no level here"}"#, "unknown"),
        ];
        for (line, want) in cases {
            assert_eq!(level_of(line), want, "{line}");
        }
    }

    #[test]
    fn a_line_from_before_the_release_is_not_the_release_s() {
        assert!(line_at(Side::Canary, 1000.0, 999.5, "x").is_none());
        let l = line_at(Side::Baseline, 1000.0, 1042.7, "ERROR boom").unwrap();
        assert_eq!((l.t_s, l.target, l.level.as_str()), (42, Side::Baseline, "error"));
    }
}
