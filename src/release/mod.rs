//! The release as every layer above the executors knows it: its
//! configuration ([`spec`]), its identity in the ledger ([`release_id`],
//! [`lease_name`]) and how it ended ([`status`]). Persisted records name
//! these types, so they sit below the ledger.

mod spec;
mod status;

pub use spec::{AgentTarget, LABEL_VALUE_MAX, LABELS_MAX, Registration, ReleaseConfig, SignalTemplate};
pub use status::ReleaseStatus;

use crate::executor::ExecutorConfig;

/// A release's stable identity: the same configuration (name, target,
/// candidate revision) gives the same id in every run and on every replica,
/// so a restart continues the release and replicas share it.
pub fn release_id(cfg: &ReleaseConfig) -> String {
    let key = format!("{}\0{}\0{}", cfg.name, cfg.target, cfg.candidate_revision);
    let h = crate::digest::digest(key.as_bytes());
    format!("{}-{}-{}", cfg.name, cfg.candidate_revision, &h[..8])
}

/// The name of a release's target lease: `resource ` and the resource the
/// executor changes where it is known (so agents whose configurations call
/// one HAProxy backend by different target names still exclude each other),
/// else the target. Existing ledgers keyed leases by the bare target; a
/// lapsed old lease row is simply never claimed again.
pub fn lease_name(cfg: &ReleaseConfig) -> String {
    match cfg.executor.as_ref().and_then(ExecutorConfig::resource) {
        Some(resource) => format!("resource {resource}"),
        None => cfg.target.clone(),
    }
}
