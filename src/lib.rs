//! backstop — a release agent that judges canaries with statistics, acts only
//! inside guardrails written in code, and records every decision in a
//! hash-chained audit ledger.
//!
//! The loop: [`signals`] → [`judge`] (→ [`assessor`], optional) → [`policy`]
//! → [`executor`], every step written to the [`ledger`] by the
//! [`orchestrator`], the only place that runs an action; [`run`] turns
//! configuration into running releases for the front ends.
//!
//! **The layers.** The modules below are declared bottom up, and that order
//! is the architecture: a module may use only modules declared *above* its
//! own line. Nothing imports upward and no two modules import each other —
//! `tests/suite/layers.rs` reads this file and every module's imports and
//! fails on any that runs up.

// Leaves: nothing else of the crate.
pub mod clock;
pub mod digest;
pub mod error;
pub mod field;
pub mod k8s;
pub mod secret;
pub mod telemetry;

// What the watched systems say: metrics, events, logs.
pub mod signals;
pub mod logs;

// Judgement: statistics, learned tolerances, policy's rules, the model's advice.
pub mod judge;
pub mod calibrate;
pub mod policy;
pub mod assessor;

// What may change a system.
pub mod executor;

// The record: a release as configured and persisted, and the ledger.
pub mod release;
pub mod ledger;

// The configuration file.
pub mod config;

// The loop.
pub mod orchestrator;

// Reading releases back: replays and reports.
pub mod eval;
pub mod report;

// The service every front end runs on.
pub mod run;

// Front ends.
pub mod serve;
pub mod slack;
pub mod bench;
pub mod check;

pub use run::Error;
