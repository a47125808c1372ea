//! Tracing set-up. Span names used across the crate live here so dashboards
//! and tests can rely on them.

use tracing_subscriber::EnvFilter;

/// Span around one release, fields `release`, `service`.
pub const SPAN_RELEASE: &str = "release";
/// Span around one analysis tick, fields `tick`, `now_s`.
pub const SPAN_TICK: &str = "tick";

/// Install a subscriber writing to stderr: JSON lines when `json`, text
/// otherwise; `RUST_LOG` overrides `default_level`.
pub fn init(json: bool, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
