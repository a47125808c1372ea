//! Tracing set-up. Span names used across the crate live here so dashboards
//! and tests can rely on them.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// Span around one release, fields `release`, `service`.
pub const SPAN_RELEASE: &str = "release";
/// Span around one analysis tick, fields `tick`, `now_s`.
pub const SPAN_TICK: &str = "tick";

/// Stderr with every known secret masked (see [`crate::secret::mask`]): a
/// log line quoting a server's reply must not carry the key it echoed. The
/// formatter writes each event whole, so each write is masked whole.
struct MaskedStderr;

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().lock().write_all(crate::secret::mask(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Install a subscriber writing to stderr: JSON lines when `json`, text
/// otherwise (colours only on a terminal); `RUST_LOG` overrides `default_level`
/// (set and not blank: an empty one is as if unset).
pub fn init(json: bool, default_level: &str) {
    let given = std::env::var(EnvFilter::DEFAULT_ENV).ok().filter(|v| !v.trim().is_empty());
    let filter = given.and_then(|v| EnvFilter::try_new(v).ok()).unwrap_or_else(|| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| MaskedStderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
