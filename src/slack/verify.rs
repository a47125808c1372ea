//! Slack's request signing (HTTP mode): `X-Slack-Signature` is `v0=` and
//! the hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` under
//! the app's signing secret. Checked before the body is parsed, compared in
//! constant time, and a timestamp more than five minutes from now is refused
//! (a captured request cannot be replayed later).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Seconds a request's timestamp may differ from now.
pub const MAX_SKEW_S: i64 = 300;

/// Why a request is not from Slack.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// A header is missing or not text.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// The timestamp is not a number.
    #[error("X-Slack-Request-Timestamp is not unix seconds")]
    BadTimestamp,
    /// Too old or in the future: a replay, or a clock far off.
    #[error("X-Slack-Request-Timestamp is {skew_s} s from now (at most {MAX_SKEW_S} s)")]
    Stale {
        /// Seconds off.
        skew_s: i64,
    },
    /// Not `v0=` and 64 hex digits.
    #[error("X-Slack-Signature is not v0=<hex sha256>")]
    Malformed,
    /// The HMAC does not match.
    #[error("X-Slack-Signature does not match the body")]
    Mismatch,
}

/// Check one request. `now_s`: unix seconds (injected, for tests).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::Missing("X-Slack-Request-Timestamp"))?;
    let sig = signature.ok_or(SignatureError::Missing("X-Slack-Signature"))?;
    let at: i64 = ts.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew_s = now_s.saturating_sub(at);
    if skew_s.saturating_abs() > MAX_SKEW_S {
        return Err(SignatureError::Stale { skew_s });
    }
    let given = sig.strip_prefix("v0=").and_then(|h| hex::decode(h).ok()).ok_or(SignatureError::Malformed)?;
    let expected = mac(secret, ts, body).ok_or(SignatureError::Mismatch)?;
    if given.len() == expected.len() && bool::from(given.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// HMAC accepts keys of every length, so `None` never happens in practice.
fn mac(secret: &[u8], ts: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    m.update(b"v0:");
    m.update(ts.as_bytes());
    m.update(b":");
    m.update(body);
    Some(m.finalize().into_bytes().to_vec())
}

/// The header value Slack would send for `body` at `ts` (for tests and the fake Slack).
pub fn sign(secret: &[u8], ts: &str, body: &[u8]) -> String {
    format!("v0={}", hex::encode(mac(secret, ts, body).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example ("Verifying requests from Slack").
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY), SIG);
        assert_eq!(verify(SECRET, Some(TS), Some(SIG), BODY, 1531420618 + 10), Ok(()));
    }

    #[test]
    fn forged_stale_and_malformed_requests_are_refused() {
        let now = 1531420618;
        let mut tampered = BODY.to_vec();
        tampered[0] = b'T';
        assert_eq!(verify(SECRET, Some(TS), Some(SIG), &tampered, now), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", Some(TS), Some(SIG), BODY, now), Err(SignatureError::Mismatch));
        assert!(matches!(verify(SECRET, Some(TS), Some(SIG), BODY, now + 301), Err(SignatureError::Stale { .. })));
        assert!(matches!(verify(SECRET, Some(TS), Some(SIG), BODY, now - 301), Err(SignatureError::Stale { .. })));
        assert_eq!(verify(SECRET, Some(TS), Some("v1=00"), BODY, now), Err(SignatureError::Malformed));
        assert_eq!(verify(SECRET, Some(TS), Some("v0=zz"), BODY, now), Err(SignatureError::Malformed));
        assert_eq!(verify(SECRET, Some(TS), Some("v0=00"), BODY, now), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(SECRET, None, Some(SIG), BODY, now),
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        assert_eq!(verify(SECRET, Some("soon"), Some(SIG), BODY, now), Err(SignatureError::BadTimestamp));
        assert!(matches!(
            verify(SECRET, Some("-9223372036854775808"), Some(SIG), BODY, now),
            Err(SignatureError::Stale { .. })
        ));
    }
}
