//! All integration tests compile into one binary.
// Test helpers may unwrap: a panic there is a failed test with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
mod support;
