//! Short-lived signatures the agent issues and checks itself (HMAC-SHA256):
//!
//! - a dashboard form's **CSRF token**, bound to the identity the page was
//!   rendered for and valid for [`FORM_TTL_MS`]: a page on another site
//!   cannot read it, so it cannot make a person's browser send a form that
//!   passes;
//! - a **shared link** to one release's page for one approval request,
//!   valid until the request expires: Slack users open it without a token,
//!   and it shows what the release page shows, never lets anyone act.
//!
//! Every signature covers its purpose, so a token of one kind is never
//! accepted as the other. The key comes from `agent.signing_key_env`; without
//! it the agent draws one at start (links die with the process, and replicas
//! do not accept each other's).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Milliseconds a dashboard form's token stays valid (the list page
/// refreshes every 5 s, a release page is read for a few minutes).
pub const FORM_TTL_MS: i64 = 60 * 60 * 1000;

/// Why a token or link was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    /// Not `EXPIRY.HEX` / not a number and 64 hex digits.
    #[error("the signature is malformed")]
    Malformed,
    /// Past its expiry.
    #[error("the signature has expired")]
    Expired,
    /// Not made by this agent's key for this purpose and these values.
    #[error("the signature does not match")]
    Forged,
}

/// What a signature is for; part of every signed message.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Form,
    Link,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Form => b"backstop form v1",
            Purpose::Link => b"backstop link v1",
        }
    }
}

/// The agent's signing key.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

impl Signer {
    /// A key derived from an operator's secret (the same on every replica).
    pub fn from_secret(secret: &str) -> Self {
        Self { key: Sha256::digest(secret.as_bytes()).into() }
    }

    /// A key drawn now, for this process only.
    pub fn random() -> Self {
        Self { key: rand::random() }
    }

    fn mac(&self, purpose: Purpose, expires_ms: i64, parts: &[&str]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        m.update(purpose.tag());
        m.update(expires_ms.to_string().as_bytes());
        for p in parts {
            // Length-prefixed, so ("ab","c") and ("a","bc") sign differently.
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p.as_bytes());
        }
        m
    }

    fn sign(&self, purpose: Purpose, expires_ms: i64, parts: &[&str]) -> String {
        hex::encode(self.mac(purpose, expires_ms, parts).finalize().into_bytes())
    }

    fn check(
        &self,
        purpose: Purpose,
        expires_ms: i64,
        parts: &[&str],
        sig: &str,
        now_ms: i64,
    ) -> Result<(), SignatureRefusal> {
        let given = hex::decode(sig).ok().filter(|b| b.len() == 32).ok_or(SignatureRefusal::Malformed)?;
        // Checked before the expiry so an attacker learns nothing from which answer comes.
        self.mac(purpose, expires_ms, parts).verify_slice(&given).map_err(|_| SignatureRefusal::Forged)?;
        if now_ms > expires_ms {
            return Err(SignatureRefusal::Expired);
        }
        Ok(())
    }

    /// A form token for `identity`, valid for [`FORM_TTL_MS`] from `now_ms`.
    pub fn form_token(&self, identity: &str, now_ms: i64) -> String {
        let expires = now_ms.saturating_add(FORM_TTL_MS);
        format!("{expires}.{}", self.sign(Purpose::Form, expires, &[identity]))
    }

    /// Whether `token` was issued to `identity` by this key and is still valid.
    pub fn check_form_token(&self, identity: &str, token: &str, now_ms: i64) -> Result<(), SignatureRefusal> {
        let (expires, sig) = token.split_once('.').ok_or(SignatureRefusal::Malformed)?;
        let expires: i64 = expires.parse().map_err(|_| SignatureRefusal::Malformed)?;
        self.check(Purpose::Form, expires, &[identity], sig, now_ms)
    }

    /// The query of a shared link to `release`'s page for `request`, valid
    /// until `expires_ms`: `request=ID&exp=MS&sig=HEX` (the id is a
    /// backstop-made `apr-…`, safe in a query).
    pub fn link_query(&self, release: &str, request: &str, expires_ms: i64) -> String {
        let sig = self.sign(Purpose::Link, expires_ms, &[release, request]);
        format!("request={}&exp={expires_ms}&sig={sig}", crate::field::url_segment(request))
    }

    /// Whether a shared link's values were signed by this key and are still valid.
    pub fn check_link(
        &self,
        release: &str,
        request: &str,
        expires_ms: i64,
        sig: &str,
        now_ms: i64,
    ) -> Result<(), SignatureRefusal> {
        self.check(Purpose::Link, expires_ms, &[release, request], sig, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_token_holds_for_its_identity_until_it_expires() {
        let s = Signer::from_secret("a secret of some length");
        let t = s.form_token("alice@example.com", 1_000);
        assert_eq!(s.check_form_token("alice@example.com", &t, 1_000 + FORM_TTL_MS), Ok(()));
        assert_eq!(s.check_form_token("bob@example.com", &t, 2_000), Err(SignatureRefusal::Forged));
        assert_eq!(s.check_form_token("alice@example.com", &t, 1_001 + FORM_TTL_MS), Err(SignatureRefusal::Expired));
        // A later expiry written into the token breaks the signature.
        let (_, sig) = t.split_once('.').unwrap();
        let stretched = format!("{}.{sig}", 9_999_999_999_999i64);
        assert_eq!(s.check_form_token("alice@example.com", &stretched, 2_000), Err(SignatureRefusal::Forged));
        // Another key (another agent without the shared secret) does not accept it.
        let other = Signer::random();
        assert_eq!(other.check_form_token("alice@example.com", &t, 2_000), Err(SignatureRefusal::Forged));
        for bad in ["", "1", "x.y", "1.zz", "1.00"] {
            assert_eq!(s.check_form_token("alice@example.com", bad, 0), Err(SignatureRefusal::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_link_opens_one_release_for_one_request_and_is_never_a_form_token() {
        let s = Signer::from_secret("k");
        let q = s.link_query("payments", "apr-1", 5_000);
        let sig = q.rsplit_once("sig=").unwrap().1;
        assert_eq!(s.check_link("payments", "apr-1", 5_000, sig, 5_000), Ok(()));
        assert_eq!(s.check_link("checkout", "apr-1", 5_000, sig, 10), Err(SignatureRefusal::Forged));
        assert_eq!(s.check_link("payments", "apr-2", 5_000, sig, 10), Err(SignatureRefusal::Forged));
        assert_eq!(s.check_link("payments", "apr-1", 6_000, sig, 10), Err(SignatureRefusal::Forged));
        assert_eq!(s.check_link("payments", "apr-1", 5_000, sig, 5_001), Err(SignatureRefusal::Expired));
        // The parts are length-prefixed: moving a character between them changes the signature.
        assert_eq!(
            s.check_link("payments", "apr-1", 5_000, &s.sign(Purpose::Link, 5_000, &["payment", "sapr-1"]), 0),
            Err(SignatureRefusal::Forged)
        );
        // A form token's signature for the same values is not a link's.
        let form = s.sign(Purpose::Form, 5_000, &["payments", "apr-1"]);
        assert_eq!(s.check_link("payments", "apr-1", 5_000, &form, 0), Err(SignatureRefusal::Forged));
        assert!(q.starts_with("request=apr-1&exp=5000&sig="), "{q}");
    }
}
