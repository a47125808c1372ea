//! The release as every layer above the executors knows it: its
//! configuration ([`spec`]), its identity in the ledger ([`release_id`],
//! [`lease_name`]) and how it ended ([`status`]). Persisted records name
//! these types, so they sit below the ledger.

mod fleet;
mod spec;
mod status;

pub use fleet::{BAKE_MAX_S, Bake, FleetConfig, FleetPlan, WAVES_MAX};

pub use spec::{
    AgentTarget, LABEL_VALUE_MAX, LABELS_MAX, RAMP_STEPS_MAX, RampConfig, Registration, ReleaseConfig, SignalTemplate,
};
pub use status::ReleaseStatus;

use crate::executor::ExecutorConfig;

/// A release's stable identity: the same configuration (name, target,
/// candidate revision, and what it is judged from: source, pods, logs, tick)
/// gives the same id in every run and on every replica, so a restart
/// continues the release and replicas share it. A changed source — a query
/// fixed after a failed run — is a new analysis, not the old one replayed;
/// [`release_id_prefix`] finds the earlier ones.
pub fn release_id(cfg: &ReleaseConfig) -> String {
    // serde_json of these types is deterministic (structs and BTreeMaps only).
    let judged = serde_json::to_string(&(&cfg.source, &cfg.pods, &cfg.logs, cfg.tick_s)).unwrap_or_default();
    let key = format!("{}\0{}\0{}\0{judged}", cfg.name, cfg.target, cfg.candidate_revision);
    let h = crate::digest::digest(key.as_bytes());
    format!("{}{}", release_id_prefix(cfg), &h[..8])
}

/// What every id of this release and candidate starts with, whatever it is judged from.
pub fn release_id_prefix(cfg: &ReleaseConfig) -> String {
    format!("{}-{}-", cfg.name, cfg.candidate_revision)
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
