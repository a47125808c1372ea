//! The model's structured verdict, its JSON Schema for `response_format`
//! (normalised for OpenAI strict mode), and the checks a verdict must pass
//! before policy sees it.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::evidence::{EvidenceItem, Fact};
use crate::policy::{ModelInput, ModelRecommendation};

/// Overall health of the canary as the model sees it.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Health {
    /// No harm seen.
    Healthy,
    /// Some harm, not yet clearly failing.
    Degraded,
    /// Clearly hurting users.
    Failing,
    /// Not enough evidence.
    Inconclusive,
}

/// What the model recommends.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RecommendedAction {
    /// Send all traffic to the canary.
    Promote,
    /// Keep watching.
    Continue,
    /// Stop and ask a human.
    Hold,
    /// Send traffic back to the last-known-good revision.
    Rollback,
}

/// What a finding claims about the canary.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Claim {
    /// The canary is worse than the baseline.
    CanaryWorse,
    /// The canary is no worse than the baseline.
    CanaryOk,
    /// A problem that the baseline has too (not the release's fault).
    SharedProblem,
    /// The evidence does not decide it.
    Inconclusive,
}

/// One finding, citing the evidence ids it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictFinding {
    /// What the finding claims.
    pub claim: Claim,
    /// One or two sentences a human can check against the cited evidence.
    pub summary: String,
    /// Ids of the evidence items this finding rests on (at least one).
    pub evidence: Vec<String>,
}

/// The model's answer, validated before policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryVerdict {
    /// Health of the canary.
    pub health: Health,
    /// What to do.
    pub action: RecommendedAction,
    /// Confidence from 0 to 1.
    pub confidence: f64,
    /// Findings, each citing evidence ids.
    pub findings: Vec<VerdictFinding>,
    /// What evidence would change this recommendation.
    pub what_would_change_my_mind: String,
}

/// Why a verdict was not accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "rejected", rename_all = "snake_case")]
pub enum Rejection {
    /// Not JSON, or not the schema.
    Schema {
        /// The parse error.
        error: String,
    },
    /// A cited id was never shown to the model.
    UnknownEvidence {
        /// The id.
        id: String,
    },
    /// A claim the cited evidence contradicts, or an answer inconsistent with itself.
    Contradicted {
        /// What is wrong.
        detail: String,
    },
    /// A claim none of its cited evidence shows (citing only context or
    /// missing data is not support).
    Unsupported {
        /// Which claim.
        detail: String,
    },
    /// An answer that came after its tick no longer describes the release.
    Stale {
        /// Release time (s) of the tick it was asked about.
        asked_at_s: u64,
        /// Release time (s) of the tick it arrived at.
        arrived_at_s: u64,
        /// Why it no longer counts.
        why: Staleness,
    },
}

/// Why a late verdict no longer counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "staleness", rename_all = "snake_case")]
pub enum Staleness {
    /// It arrived more than `verdict_valid_s` release seconds after the tick it describes.
    Expired {
        /// `model.verdict_valid_s`.
        valid_s: u64,
    },
    /// A cited item is no longer what it was: it left the window, or the judge's view of it changed.
    OutOfForce {
        /// The evidence id as cited.
        id: String,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Schema { error } => write!(f, "verdict rejected: not the schema ({error})"),
            Rejection::UnknownEvidence { id } => write!(f, "verdict rejected: cites evidence `{id}` never shown"),
            Rejection::Contradicted { detail } => write!(f, "verdict rejected: {detail}"),
            Rejection::Unsupported { detail } => write!(f, "verdict rejected: unsupported claim: {detail}"),
            Rejection::Stale { asked_at_s, arrived_at_s, why: Staleness::Expired { valid_s } } => write!(
                f,
                "late verdict dropped: asked at t={asked_at_s}s, arrived at t={arrived_at_s}s, past verdict_valid_s = {valid_s}"
            ),
            Rejection::Stale { asked_at_s, arrived_at_s, why: Staleness::OutOfForce { id } } => write!(
                f,
                "late verdict dropped: asked at t={asked_at_s}s, arrived at t={arrived_at_s}s; its evidence `{id}` is no longer in force"
            ),
        }
    }
}

/// Parse the model's reply text.
pub fn parse(content: &str) -> Result<CanaryVerdict, Rejection> {
    // Some servers wrap JSON mode output in a Markdown fence.
    let trimmed = content.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(trimmed);
    let body = body.trim();
    serde_json::from_str(body).or_else(|e| {
        // Some grammars let raw control characters into strings, which JSON forbids. Outside
        // strings they are whitespace anyway, so a space in their place changes no value's meaning.
        let cleaned: String = body.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        serde_json::from_str(&cleaned).map_err(|_| Rejection::Schema { error: e.to_string() })
    })
}

fn contradicts(claim: Claim, fact: Fact) -> bool {
    match claim {
        // "worse" resting on an item that shows no difference, or on a baseline-only problem.
        Claim::CanaryWorse => matches!(fact, Fact::NoDifference | Fact::BaselineOnly),
        // "fine" resting on an item that shows the canary worse or alone in error.
        Claim::CanaryOk => matches!(fact, Fact::CanaryWorse | Fact::CanaryOnly),
        // "shared" resting on something only the canary shows.
        Claim::SharedProblem => matches!(fact, Fact::CanaryOnly),
        Claim::Inconclusive => false,
    }
}

/// Whether `fact` shows what `claim` says: a claim counts only if at least
/// one cited item supports it, not merely fails to contradict it.
fn supports(claim: Claim, fact: Fact) -> bool {
    match claim {
        Claim::CanaryWorse => matches!(fact, Fact::CanaryWorse | Fact::CanaryOnly),
        Claim::CanaryOk => matches!(fact, Fact::NoDifference),
        Claim::SharedProblem => matches!(fact, Fact::BothSides),
        Claim::Inconclusive => true,
    }
}

/// Check a parsed verdict against the evidence shown (ids → facts) and turn
/// it into what policy sees. Each claim must be supported by a cited item
/// whose machine-known fact shows it. Evidence is "verified" for a
/// model-initiated rollback only when the canary-worse findings cite both a
/// judge finding that is at least suspect and a canary-only pattern seen
/// often enough: a log line alone (which anyone can inject) never suffices.
pub fn validate(v: &CanaryVerdict, shown: &HashMap<String, EvidenceItem>) -> Result<ModelInput, Rejection> {
    let bad = |d: String| Err(Rejection::Contradicted { detail: d });
    if !(0.0..=1.0).contains(&v.confidence) {
        return bad(format!("confidence {} is outside 0..1", v.confidence));
    }
    for (i, f) in v.findings.iter().enumerate() {
        if f.evidence.is_empty() {
            return bad(format!("finding {} cites no evidence", i + 1));
        }
        let mut supported = false;
        for id in &f.evidence {
            let item = shown.get(id).ok_or_else(|| Rejection::UnknownEvidence { id: id.clone() })?;
            if contradicts(f.claim, item.fact) {
                return bad(format!("finding {} claims {} but `{id}` shows {}", i + 1, f.claim, item.fact));
            }
            supported |= supports(f.claim, item.fact);
        }
        if !supported {
            let detail = format!("finding {} claims {} but none of {} shows it", i + 1, f.claim, f.evidence.join(", "));
            return Err(Rejection::Unsupported { detail });
        }
    }
    let worse: Vec<&VerdictFinding> = v.findings.iter().filter(|f| f.claim == Claim::CanaryWorse).collect();
    match (v.action, v.health) {
        (RecommendedAction::Promote, h) if h != Health::Healthy => {
            return bad(format!("recommends promote while calling the canary {h:?}"));
        }
        (RecommendedAction::Promote, _) if !worse.is_empty() => {
            return bad("recommends promote while finding the canary worse".into());
        }
        (RecommendedAction::Rollback, _) if worse.is_empty() => {
            return bad("recommends rollback without a finding that the canary is worse".into());
        }
        _ => {}
    }
    let cites = |fact: Fact| {
        worse.iter().any(|f| {
            f.evidence
                .iter()
                .any(|id| shown.get(id).is_some_and(|e| e.fact == fact && !(fact == Fact::CanaryWorse && e.untrusted)))
        })
    };
    let verified = !worse.is_empty() && cites(Fact::CanaryWorse) && cites(Fact::CanaryOnly);
    let recommendation = match v.action {
        RecommendedAction::Promote => ModelRecommendation::Promote,
        RecommendedAction::Continue => ModelRecommendation::Continue,
        RecommendedAction::Hold => ModelRecommendation::Hold,
        RecommendedAction::Rollback => ModelRecommendation::Rollback,
    };
    Ok(ModelInput::Verdict { recommendation, evidence_verified: verified })
}

/// The verdict's JSON Schema in the subset OpenAI strict mode accepts:
/// subschemas inlined, every object closed with all properties required,
/// no `format` or `$schema`.
pub fn strict_schema<T: JsonSchema>() -> serde_json::Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.meta_schema = None;
        s.inline_subschemas = true;
    });
    let mut v = settings.into_generator().into_root_schema_for::<T>().to_value();
    normalise(&mut v);
    v
}

/// Normalise one schema object. Property maps hold schemas by name, so their
/// keys are never mistaken for keywords (a property may be called `format`).
fn normalise(v: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = v else { return };
    for k in ["$schema", "format", "title", "$defs", "definitions", "default"] {
        map.remove(k);
    }
    // `oneOf` of single-value `const`s (documented enums) becomes one `enum`.
    if let Some(Value::Array(alts)) = map.get("oneOf")
        && let Some(values) = alts.iter().map(|a| a.get("const").cloned()).collect::<Option<Vec<Value>>>()
    {
        map.remove("oneOf");
        map.insert("type".into(), Value::String("string".into()));
        map.insert("enum".into(), Value::Array(values));
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.values_mut().for_each(normalise);
        let names: Vec<Value> = props.keys().map(|k| Value::String(k.clone())).collect();
        if map.get("type").and_then(Value::as_str) == Some("object") {
            map.insert("required".into(), Value::Array(names));
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    for key in ["items", "anyOf", "oneOf", "allOf"] {
        match map.get_mut(key) {
            Some(Value::Array(list)) => list.iter_mut().for_each(normalise),
            Some(schema) => normalise(schema),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown() -> HashMap<String, EvidenceItem> {
        let item = |id: &str, fact| {
            (id.to_string(), EvidenceItem { id: id.into(), fact, untrusted: false, text: String::new() })
        };
        [
            item("judge:errors", Fact::CanaryWorse),
            item("judge:latency", Fact::NoDifference),
            item("log:1", Fact::CanaryOnly),
            item("log:2", Fact::BothSides),
            item("judge:cpu", Fact::NoData),
            item("metric:errors", Fact::Context),
        ]
        .into_iter()
        .collect()
    }

    fn verdict(action: RecommendedAction, health: Health, findings: Vec<(Claim, &[&str])>) -> CanaryVerdict {
        CanaryVerdict {
            health,
            action,
            confidence: 0.8,
            findings: findings
                .into_iter()
                .map(|(claim, ids)| VerdictFinding {
                    claim,
                    summary: "s".into(),
                    evidence: ids.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            what_would_change_my_mind: "w".into(),
        }
    }

    #[test]
    fn rollback_is_verified_only_with_a_judge_finding_and_canary_only_evidence() {
        let both = verdict(
            RecommendedAction::Rollback,
            Health::Failing,
            vec![(Claim::CanaryWorse, &["judge:errors", "log:1"])],
        );
        assert_eq!(
            validate(&both, &shown()),
            Ok(ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, evidence_verified: true })
        );
        // A log pattern alone (anyone can inject one) or a judge finding alone is not enough to act on.
        for ids in [&["log:1"][..], &["judge:errors"][..]] {
            let v = verdict(RecommendedAction::Rollback, Health::Failing, vec![(Claim::CanaryWorse, ids)]);
            assert_eq!(
                validate(&v, &shown()),
                Ok(ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, evidence_verified: false }),
                "{ids:?}"
            );
        }
    }

    #[test]
    fn raw_control_characters_in_strings_are_tolerated() {
        let text = "{\"health\": \"degraded\", \"action\": \"hold\", \"confidence\": 0.5, \"findings\": [{\"claim\": \"canary_worse\", \"summary\": \"line one\nline\ttwo\u{7}\", \"evidence\": [\"judge:errors\"]}], \"what_would_change_my_mind\": \"w\"}";
        let v = parse(text).unwrap();
        assert_eq!(v.findings[0].summary, "line one line two ");
        assert!(matches!(parse("{\"health\": 1}"), Err(Rejection::Schema { .. })));
    }

    #[test]
    fn a_claim_must_be_supported_not_merely_uncontradicted() {
        for (claim, ids) in [
            (Claim::CanaryWorse, &["judge:cpu"][..]),
            (Claim::CanaryWorse, &["metric:errors"][..]),
            (Claim::CanaryWorse, &["log:2"][..]),
            (Claim::SharedProblem, &["judge:cpu"][..]),
            (Claim::CanaryOk, &["metric:errors"][..]),
        ] {
            let v = verdict(RecommendedAction::Rollback, Health::Failing, vec![(claim, ids)]);
            assert!(matches!(validate(&v, &shown()), Err(Rejection::Unsupported { .. })), "{claim:?} on {ids:?}");
        }
    }

    #[test]
    fn unknown_ids_contradictions_and_inconsistencies_are_rejected() {
        let s = shown();
        let v = verdict(RecommendedAction::Hold, Health::Degraded, vec![(Claim::CanaryWorse, &["log:7"])]);
        assert_eq!(validate(&v, &s), Err(Rejection::UnknownEvidence { id: "log:7".into() }));
        for (v, why) in [
            (
                verdict(RecommendedAction::Hold, Health::Degraded, vec![(Claim::CanaryWorse, &["judge:latency"])]),
                "worse on no difference",
            ),
            (
                verdict(RecommendedAction::Promote, Health::Healthy, vec![(Claim::CanaryOk, &["judge:errors"])]),
                "ok on worse",
            ),
            (
                verdict(RecommendedAction::Hold, Health::Degraded, vec![(Claim::SharedProblem, &["log:1"])]),
                "shared on canary-only",
            ),
            (verdict(RecommendedAction::Promote, Health::Degraded, vec![]), "promote while degraded"),
            (
                verdict(RecommendedAction::Rollback, Health::Failing, vec![(Claim::Inconclusive, &["log:2"])]),
                "rollback without a worse finding",
            ),
            (verdict(RecommendedAction::Hold, Health::Degraded, vec![(Claim::CanaryWorse, &[])]), "no citation"),
        ] {
            assert!(
                matches!(validate(&v, &s), Err(Rejection::Contradicted { .. } | Rejection::Unsupported { .. })),
                "{why}"
            );
        }
        let mut v = verdict(RecommendedAction::Hold, Health::Degraded, vec![]);
        v.confidence = 1.5;
        assert!(validate(&v, &s).is_err());
    }

    #[test]
    fn replies_parse_with_or_without_a_markdown_fence_and_prose_is_a_schema_error() {
        let v = verdict(RecommendedAction::Continue, Health::Inconclusive, vec![]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(parse(&json), Ok(v.clone()));
        assert_eq!(parse(&format!("```json\n{json}\n```")), Ok(v));
        assert!(matches!(parse("looks fine, promote"), Err(Rejection::Schema { .. })));
        assert!(matches!(parse(&json.replace("\"continue\"", "\"yolo\"")), Err(Rejection::Schema { .. })));
    }

    #[test]
    fn a_property_named_like_a_keyword_is_kept() {
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Args {
            format: String,
            title: Option<u32>,
        }
        let schema = strict_schema::<Args>();
        assert_eq!(schema["required"], serde_json::json!(["format", "title"]));
        assert!(schema["properties"]["title"].get("format").is_none(), "keyword `format` still dropped inside");
    }

    #[test]
    fn strict_schema_closes_every_object_and_requires_every_property() {
        let schema = strict_schema::<CanaryVerdict>();
        fn walk(v: &serde_json::Value) {
            if let Some(m) = v.as_object() {
                assert!(!m.contains_key("$ref") && !m.contains_key("$schema") && !m.contains_key("format"));
                if m.get("type").and_then(|t| t.as_str()) == Some("object") {
                    assert_eq!(m["additionalProperties"], false);
                    let props: Vec<&String> = m["properties"].as_object().unwrap().keys().collect();
                    let req: Vec<&str> =
                        m["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
                    assert_eq!(props.len(), req.len());
                }
                m.values().for_each(walk);
            } else if let Some(a) = v.as_array() {
                a.iter().for_each(walk);
            }
        }
        walk(&schema);
        insta::assert_json_snapshot!("canary_verdict_strict_schema", schema);
    }
}
