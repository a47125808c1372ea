//! A release that crosses a fleet in waves (`[[fleets]]`): an ordered list
//! of waves, each a set of targets of configured `[[releases]]`, with a bake
//! time after each wave's promotion. Every member is an ordinary release
//! (its own judgement, lease, permits and ledger records); the fleet only
//! says in which order they start and what a failure does to the others.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ReleaseConfig;
use crate::field::FieldError;

/// Most waves in one fleet release.
pub const WAVES_MAX: usize = 32;
/// Longest bake, seconds (a day).
pub const BAKE_MAX_S: u64 = 86_400;

/// `[[fleets]]` in `backstop.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Fleet release name (unique in the file).
    pub name: String,
    /// Ordered waves, each a list of targets; every target is the `target`
    /// of exactly one `[[releases]]` entry, all of one service and candidate.
    pub waves: Vec<Vec<String>>,
    /// Seconds a wave stays promoted before the next one starts: one number
    /// for every wave, or one per wave (the last wave's bake ends the fleet).
    #[serde(default)]
    pub bake_s: Bake,
}

/// A bake time for every wave, or one each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Bake {
    /// The same for every wave.
    Every(u64),
    /// One per wave, in order.
    Each(Vec<u64>),
}

impl Default for Bake {
    fn default() -> Self {
        Bake::Every(0)
    }
}

/// A fleet resolved against the configured releases: each wave's members
/// by index into `[[releases]]`, and each wave's bake.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlan {
    /// The fleet's name.
    pub name: String,
    /// The service every member releases.
    pub service: String,
    /// The revision every member releases.
    pub candidate_revision: String,
    /// Waves in order: indexes into the configured releases.
    pub waves: Vec<Vec<usize>>,
    /// Bake after each wave, milliseconds.
    pub bake_ms: Vec<i64>,
}

impl FleetConfig {
    /// The plan over `releases`, or the field that is wrong (relative to this fleet).
    pub fn plan(&self, releases: &[ReleaseConfig]) -> Result<FleetPlan, FieldError> {
        crate::field::name("name", &self.name)?;
        if self.waves.is_empty() || self.waves.len() > WAVES_MAX {
            return Err(FieldError::new("waves", format!("between 1 and {WAVES_MAX} waves of targets")));
        }
        let bake_ms = self.bake_ms()?;
        let mut waves = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (w, wave) in self.waves.iter().enumerate() {
            if wave.is_empty() {
                return Err(FieldError::of(format!("waves[{w}]"), "at least one target".into()));
            }
            let mut members = Vec::new();
            for (t, target) in wave.iter().enumerate() {
                let field = format!("waves[{w}][{t}]");
                let found: Vec<usize> =
                    releases.iter().enumerate().filter(|(_, r)| &r.target == target).map(|(i, _)| i).collect();
                let [i] = found[..] else {
                    let why = match found.len() {
                        0 => format!("the target of a [[releases]] entry; no release has target `{target}`"),
                        n => format!("a target only one [[releases]] entry names; {n} name `{target}`"),
                    };
                    return Err(FieldError::of(field, why));
                };
                if !seen.insert(i) {
                    return Err(FieldError::of(field, format!("each target in one wave only; `{target}` repeats")));
                }
                members.push(i);
            }
            waves.push(members);
        }
        let first = &releases[waves[0][0]];
        for (w, wave) in waves.iter().enumerate() {
            for (t, &i) in wave.iter().enumerate() {
                let r = &releases[i];
                if r.service != first.service || r.candidate_revision != first.candidate_revision {
                    return Err(FieldError::of(
                        format!("waves[{w}][{t}]"),
                        format!(
                            "a release of service `{}` revision `{}`, as the first wave's; release `{}` is `{}` `{}`",
                            first.service, first.candidate_revision, r.name, r.service, r.candidate_revision
                        ),
                    ));
                }
            }
        }
        let (service, candidate_revision) = (first.service.clone(), first.candidate_revision.clone());
        Ok(FleetPlan { name: self.name.clone(), service, candidate_revision, waves, bake_ms })
    }

    fn bake_ms(&self) -> Result<Vec<i64>, FieldError> {
        let each = match &self.bake_s {
            Bake::Every(s) => vec![*s; self.waves.len()],
            Bake::Each(v) if v.len() == self.waves.len() => v.clone(),
            Bake::Each(v) => {
                let expected =
                    format!("one bake per wave ({} waves), or one number; found {}", self.waves.len(), v.len());
                return Err(FieldError::new("bake_s", expected));
            }
        };
        if each.iter().any(|&s| s > BAKE_MAX_S) {
            return Err(FieldError::new("bake_s", format!("seconds between 0 and {BAKE_MAX_S}")));
        }
        Ok(each.into_iter().map(|s| s as i64 * 1000).collect())
    }
}
