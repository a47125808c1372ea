//! backstop — a release agent that judges canaries with statistics, acts only
//! inside guardrails written in code, and records every decision in a
//! hash-chained audit ledger.
//!
//! The loop (see `README.md`): [`signals`] → [`judge`] → [`policy`] →
//! [`executor`], with every step written to the [`ledger`] by the
//! [`orchestrator`], the only place that runs an action.

pub mod bench;
pub mod calibrate;
pub mod check;
pub mod clock;
pub mod config;
pub mod digest;
pub mod error;
pub mod eval;
pub mod executor;
pub mod field;
pub mod judge;
pub mod k8s;
pub mod ledger;
pub mod logs;
pub mod model;
pub mod orchestrator;
pub mod policy;
pub mod release;
pub mod report;
pub mod run;
pub mod secret;
pub mod serve;
pub mod signals;
pub mod slack;
pub mod telemetry;

pub use run::Error;
