//! Test support: real services started on loopback ports the tests choose.

pub mod haproxy;
pub mod pg;
pub mod prometheus;
