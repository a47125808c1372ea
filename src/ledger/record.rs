//! The ledger's records as typed values: what the orchestrator writes and
//! `audit` reads. One enum tagged by `kind`; its payload is the stored body.
//!
//! Records written before `record_version` 2 (bodies built by hand) still
//! read: [`Record::from_stored`] converts their two differing shapes (intent
//! and outcome) in one place.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::assessor::{Consultation, ToolCallRecord, Usage};
use crate::executor::ActionPlan;
use crate::judge::JudgeResult;
use crate::policy::approval::{Answer, PendingApproval, Ruling};
use crate::policy::{Decision, ModelInput, ReleaseFacts, RuleHit, RunMode};
use crate::release::ReleaseStatus;

use super::chain::StoredRecord;

/// Version of the record format and hash this code writes. Version 1 bodies
/// were untyped JSON and their hash left out `seq`.
pub const RECORD_VERSION: i64 = 2;

/// One ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Record {
    /// A release began (or was continued after a restart).
    ReleaseStarted(ReleaseStarted),
    /// One analysis tick: inputs digest, findings, decision, rules.
    Tick(Box<TickRecord>),
    /// An action is about to run; written before it runs.
    Intent(IntentRecord),
    /// What an action did, or what recovery found it did.
    Outcome(OutcomeRecord),
    /// A target's lease was taken, taken over or given back.
    Lease(LeaseRecord),
    /// The release ended.
    ReleaseFinished(ReleaseFinished),
    /// Policy asked a human; the request's id, proposal and expiry.
    ApprovalRequested(ApprovalRequested),
    /// A human answered a request (or it expired, or went stale); the actor is who.
    ApprovalResolved(ApprovalResolved),
    /// A human's answer taken by an agent that does not hold the request (another
    /// replica); the holder rules on it and records `approval_resolved`. The actor is who.
    ApprovalAnswer(ApprovalAnswer),
    /// A person or pipeline registered, held, resumed or aborted the release; the actor is who.
    Operator(OperatorRecord),
    /// The agent stopped (SIGTERM) between ticks; the release resumes when an agent starts again.
    ReleasePaused(ReleasePaused),
    /// Something on the chat channel no other record shows: a refused
    /// action, an unverified request, a message that could not be delivered.
    ChatOps(ChatOpsRecord),
    /// Tolerances learned from a service's past releases (`backstop
    /// calibrate`): its inputs and numbers, under `calibration <service>`.
    Calibration(Box<crate::calibrate::Calibration>),
    /// What happened to one revision of a service (release memory), under
    /// `revision <service> <revision>`: rolled back (quarantined, with the
    /// evidence), verified on a target, or cleared by a person.
    Revision(RevisionRecord),
    /// A finished release's tick records, removed after `ledger.compact_after_days`
    /// and summed up here; their hashes stay in `ledger_compacted`, so the
    /// chain still verifies across the gaps.
    Compacted(CompactedRecord),
    /// A person's rollback or promotion asked of an agent that does not hold
    /// the release, relayed to the one that does; that one rules on it and
    /// records `approval_resolved` under the same id. The actor is who.
    PersonRequest(PersonRequestRecord),
}

/// The stored `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RecordKind {
    /// See [`Record::ReleaseStarted`].
    ReleaseStarted,
    /// See [`Record::Tick`].
    Tick,
    /// See [`Record::Intent`].
    Intent,
    /// See [`Record::Outcome`].
    Outcome,
    /// See [`Record::Lease`].
    Lease,
    /// See [`Record::ReleaseFinished`].
    ReleaseFinished,
    /// See [`Record::ApprovalRequested`].
    ApprovalRequested,
    /// See [`Record::ApprovalResolved`].
    ApprovalResolved,
    /// See [`Record::ApprovalAnswer`].
    ApprovalAnswer,
    /// See [`Record::Operator`].
    Operator,
    /// See [`Record::ReleasePaused`].
    ReleasePaused,
    /// See [`Record::ChatOps`].
    ChatOps,
    /// See [`Record::Calibration`].
    Calibration,
    /// See [`Record::Revision`].
    Revision,
    /// See [`Record::Compacted`].
    Compacted,
    /// See [`Record::PersonRequest`].
    PersonRequest,
}

impl RecordKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Record {
    /// Its kind, for the `kind` column.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::ReleaseStarted(_) => RecordKind::ReleaseStarted,
            Record::Tick(_) => RecordKind::Tick,
            Record::Intent(_) => RecordKind::Intent,
            Record::Outcome(_) => RecordKind::Outcome,
            Record::Lease(_) => RecordKind::Lease,
            Record::ReleaseFinished(_) => RecordKind::ReleaseFinished,
            Record::ApprovalRequested(_) => RecordKind::ApprovalRequested,
            Record::ApprovalResolved(_) => RecordKind::ApprovalResolved,
            Record::ApprovalAnswer(_) => RecordKind::ApprovalAnswer,
            Record::Operator(_) => RecordKind::Operator,
            Record::ReleasePaused(_) => RecordKind::ReleasePaused,
            Record::ChatOps(_) => RecordKind::ChatOps,
            Record::Calibration(_) => RecordKind::Calibration,
            Record::Revision(_) => RecordKind::Revision,
            Record::Compacted(_) => RecordKind::Compacted,
            Record::PersonRequest(_) => RecordKind::PersonRequest,
        }
    }

    /// The stored body: the payload alone (the kind is its own column).
    pub fn body_json(&self) -> Result<String, serde_json::Error> {
        let mut tagged = serde_json::to_value(self)?;
        let body = tagged.get_mut("body").map(serde_json::Value::take).unwrap_or(serde_json::Value::Null);
        serde_json::to_string(&body)
    }

    /// Read a stored row back as a typed record, whichever version wrote it.
    pub fn from_stored(row: &StoredRecord) -> Result<Record, RecordError> {
        let bad = |source| RecordError::Body { seq: row.seq, kind: row.kind.clone(), source };
        if row.record_version < RECORD_VERSION && matches!(row.kind.as_str(), "intent" | "outcome") {
            let body: serde_json::Value = serde_json::from_str(&row.body).map_err(bad)?;
            return match row.kind.as_str() {
                "intent" => legacy::intent(body).map(Record::Intent).map_err(bad),
                _ => legacy::outcome(body).map(Record::Outcome).map_err(bad),
            };
        }
        // The tagged form read straight from the text, the tag first: no
        // intermediate JSON tree (a tick's body is kilobytes of findings, and
        // recovery and takeover read every tick of a release).
        // The body must be one JSON value on its own before it is wrapped.
        let body: &serde_json::value::RawValue = serde_json::from_str(&row.body).map_err(bad)?;
        let kind = serde_json::to_string(&row.kind).map_err(bad)?;
        serde_json::from_str(&format!("{{\"kind\":{kind},\"body\":{}}}", body.get())).map_err(bad)
    }
}

/// A stored record could not be read as a typed record.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The body does not have the shape its kind requires.
    #[error("ledger record {seq} (`{kind}`): body does not match its kind")]
    Body {
        /// Sequence number.
        seq: i64,
        /// Stored kind.
        kind: String,
        /// What did not match.
        #[source]
        source: serde_json::Error,
    },
}

/// Who wrote a record. Stored as text: `agent:INSTANCE`, `human:CHANNEL:IDENTITY`,
/// `pipeline:IDENTITY` (and `agent` alone in version-1 ledgers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub enum Actor {
    /// A backstop process; `instance` is its agent id (absent in old ledgers).
    Agent {
        /// Agent instance id.
        instance: Option<String>,
    },
    /// A named person, through a channel (`cli`, `api`, `slack`).
    Human {
        /// How they acted.
        channel: String,
        /// Who they are, e.g. `alice@example.com`.
        identity: String,
    },
    /// A CI/CD pipeline, e.g. `ci:github:org/repo`.
    Pipeline {
        /// Pipeline identity.
        identity: String,
    },
}

impl Actor {
    /// An agent instance.
    pub fn agent(instance: &str) -> Self {
        Actor::Agent { instance: Some(instance.to_string()) }
    }

    /// Whether the agent (not a human) wrote this: what rate limits count.
    pub fn is_agent(&self) -> bool {
        matches!(self, Actor::Agent { .. })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Agent { instance: None } => write!(f, "agent"),
            Actor::Agent { instance: Some(i) } => write!(f, "agent:{i}"),
            Actor::Human { channel, identity } => write!(f, "human:{channel}:{identity}"),
            Actor::Pipeline { identity } => write!(f, "pipeline:{identity}"),
        }
    }
}

/// An actor string that is none of the known forms.
#[derive(Debug, Error)]
#[error("actor `{0}`: expected agent[:INSTANCE], human:CHANNEL:IDENTITY or pipeline:IDENTITY")]
pub struct ActorParseError(String);

impl FromStr for Actor {
    type Err = ActorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ActorParseError(s.to_string());
        match s.split_once(':') {
            None if s == "agent" => Ok(Actor::Agent { instance: None }),
            Some(("agent", i)) if !i.is_empty() => Ok(Actor::agent(i)),
            Some(("pipeline", i)) if !i.is_empty() => Ok(Actor::Pipeline { identity: i.into() }),
            Some(("human", rest)) => match rest.split_once(':') {
                Some((c, i)) if !c.is_empty() && !i.is_empty() => {
                    Ok(Actor::Human { channel: c.into(), identity: i.into() })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A release began. A continued release (after a crash or SIGTERM) writes
/// another one with `continued_from_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseStarted {
    /// Release facts as policy sees them.
    pub facts: ReleaseFacts,
    /// Signal source name.
    pub source: String,
    /// Acting or advisory.
    pub mode: RunMode,
    /// Analysis window, seconds.
    pub duration_s: u64,
    /// SHA-256 of the policy in force.
    pub policy_digest: String,
    /// Release time (seconds) this run continues from, when it continues one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued_from_s: Option<u64>,
    /// Time 0 of the canary's samples (ms since the epoch), when a continued
    /// run reads them from elsewhere than the first start: read again from
    /// now after the release went unobserved too long. A later restart reads from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_from_ms: Option<i64>,
}

/// One tick. Field names match version-1 bodies, so old ticks read as these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TickRecord {
    /// Tick number from 1.
    pub tick: u64,
    /// Release clock, seconds.
    pub now_s: u64,
    /// Acting or advisory.
    pub mode: RunMode,
    /// SHA-256 of the observation judged, or `none` when the source failed.
    pub inputs_digest: String,
    /// The judge's result.
    pub judge: JudgeResult,
    /// What policy saw of the model.
    pub model: ModelInput,
    /// The consultation made at this tick, if one was.
    pub consultation: Option<Consultation>,
    /// Prompt version of that consultation.
    pub prompt_version: Option<String>,
    /// Its tool calls.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallRecord>,
    /// Policy's decision.
    pub decision: Decision,
    /// The rules that produced it.
    pub rules: Vec<RuleHit>,
    /// This agent's lease on the target at this tick (absent in old ledgers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRole>,
    /// Advisory runs only: the ramp step acting would have raised the
    /// canary to at this tick, in percent (absent otherwise, and in ledgers
    /// written before it), so a report rebuilt from the ledger and a resumed
    /// run see the ramp the run rehearsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rehearsed_raise: Option<u8>,
}

/// What one agent may do on a target at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum LeaseRole {
    /// This agent holds the lease: it may act, fenced by `token`.
    Holder {
        /// Fencing token; only grows per target.
        token: i64,
    },
    /// Another agent holds it: judge, never act. (Spelled `observer` in
    /// records written before the rename, read through the alias.)
    #[serde(alias = "observer")]
    Follower {
        /// The holder's instance id.
        holder: String,
        /// The holder's token.
        token: i64,
    },
}

/// An action about to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntentRecord {
    /// Exactly what will change.
    pub plan: ActionPlan,
    /// Fencing token of the lease it ran under (absent in old ledgers).
    pub fence: Option<i64>,
}

/// What became of an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeRecord {
    /// The intent's plan id.
    pub plan_id: String,
    /// What happened.
    pub result: ActionResult,
}

/// What an action did, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(tag = "result", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ActionResult {
    /// Executed, and the target reads back in the planned state.
    Verified {
        /// What the executor reported.
        output: String,
        /// What was read back.
        observed: String,
    },
    /// Executed, but the read-back does not show the planned state.
    NotVerified {
        /// What the executor reported.
        output: String,
        /// What was read back.
        observed: String,
    },
    /// Executed; reading the target back failed.
    VerifyFailed {
        /// What the executor reported.
        output: String,
        /// Why the read-back failed.
        error: String,
    },
    /// The executor failed: the target may be in either state.
    Failed {
        /// Why.
        error: String,
    },
    /// Found after a restart: the target already shows the plan done. Not executed again.
    Reconciled {
        /// What was read back.
        observed: String,
    },
    /// Found after a restart: the target does not show the plan done, or the
    /// executor cannot tell. Held for a human; never retried blindly.
    Unresolved {
        /// What was read back, or why it could not be.
        observed: String,
    },
    /// A human said what became of it (`backstop audit resolve`).
    ResolvedByHuman {
        /// The action took effect.
        done: bool,
        /// Their reason.
        reason: String,
    },
}

impl ActionResult {
    /// The stored tag, for metrics and one-line listings.
    pub fn label(&self) -> &'static str {
        self.into()
    }

    /// Whether this settles the intent. An `Unresolved` intent is checked
    /// again at every start until the target shows it or a human resolves it.
    pub fn settles(&self) -> bool {
        !matches!(self, ActionResult::Unresolved { .. })
    }

    /// Whether the action is known to have taken effect.
    pub fn took_effect(&self) -> bool {
        matches!(
            self,
            ActionResult::Verified { .. }
                | ActionResult::Reconciled { .. }
                | ActionResult::ResolvedByHuman { done: true, .. }
        )
    }
}

/// A lease change worth recording (renewals are not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaseRecord {
    /// The target leased.
    pub target: String,
    /// New holder's instance id.
    pub holder: String,
    /// Fencing token.
    pub token: i64,
    /// Unix ms the lease lapses unless renewed.
    pub expires_ms: i64,
    /// What happened.
    pub event: LeaseEvent,
}

/// How a lease changed hands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LeaseEvent {
    /// Nobody held it.
    Acquired,
    /// The previous holder's lease had lapsed.
    TakenOver {
        /// Instance id of the previous holder.
        from: String,
    },
    /// The previous holder gave it to this one (it held more than its share).
    HandedOver {
        /// Instance id of the previous holder.
        from: String,
    },
}

/// The release ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseFinished {
    /// How.
    pub status: ReleaseStatus,
    /// Ticks judged in this run.
    pub ticks: u64,
    /// Release time of the final decision, seconds.
    pub decided_at_s: u64,
    /// Model calls and tokens spent.
    pub model_usage: Usage,
}

/// An approval request: what a human is asked to allow, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequested {
    /// The request as policy rules on it (id, service, proposal, expiry).
    pub request: PendingApproval,
    /// Why policy asks a human.
    pub reason: String,
    /// Digest of the tick record whose decision asked (the evidence).
    pub evidence_digest: String,
    /// Ledger seq of that tick.
    pub evidence_seq: i64,
    /// The executor's exact steps for the proposal, as planned when asked
    /// (what the approver approves; absent in older records, or when the
    /// executor could not plan).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
}

/// How a request ended, or an answer that did not count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalResolved {
    /// Request id.
    pub id: String,
    /// What the human said; `None` when the request expired or was superseded.
    pub answer: Option<Answer>,
    /// The human's reason, as typed (untrusted text).
    pub reason: String,
    /// Policy's ruling on the answer.
    pub ruling: Ruling,
    /// Rules that produced the ruling.
    pub trace: Vec<RuleHit>,
}

impl ApprovalResolved {
    /// Whether this record ends its request. Records written before typed
    /// closures spelled an expiry as a refusal (see `legacy`).
    pub fn closes(&self) -> bool {
        self.ruling.closes() || legacy::expiry_refusal(&self.ruling)
    }

    /// The record that closes request `id` without an answer.
    pub fn closure(id: &str, closure: crate::policy::approval::Closure) -> Self {
        ApprovalResolved {
            id: id.to_string(),
            answer: None,
            reason: String::new(),
            ruling: Ruling::Closed { closure },
            trace: vec![RuleHit { rule: closure.rule(), detail: closure.describe().into() }],
        }
    }
}

/// An answer relayed through the ledger to the agent holding the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalAnswer {
    /// Request id.
    pub id: String,
    /// Approve or reject.
    pub answer: Answer,
    /// The identity policy checks (`alice@example.com`, `slack:U…`).
    pub identity: String,
    /// Their reason, as typed (untrusted text).
    pub reason: String,
    /// Slack groups the channel verified the identity is in (`slack-group:S…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// What an operator did to a release.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OperatorAction {
    /// Registered the release with a running agent.
    Register,
    /// Stopped automated actions; judging continues.
    Hold,
    /// Allowed automated actions again.
    Resume,
    /// Ended the release without acting.
    Abort,
}

/// An operator's request on a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OperatorRecord {
    /// What.
    pub action: OperatorAction,
    /// Why, as typed (untrusted text).
    pub reason: String,
    /// For `register`: the release as registered (with the declared target's
    /// executor), so every agent on the ledger can run it and a restarted one resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Box<crate::release::ReleaseConfig>>,
}

/// What a person asked for on the chat channel.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ChatAction {
    /// Approve button.
    Approve,
    /// Reject button.
    Reject,
    /// `/backstop hold`.
    Hold,
    /// `/backstop resume`.
    Resume,
    /// `/backstop rollback`.
    Rollback,
    /// `/backstop clear` (a revision's quarantine).
    Clear,
}

/// Which message a posted one is: a release's own, or its fleet's (recorded
/// under the fleet's first member, whose own message is the other kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "of", rename_all = "snake_case")]
pub enum ChatMessage {
    /// The release's message.
    Release,
    /// The fleet's message, by the fleet's name.
    Fleet {
        /// The fleet's name.
        name: String,
    },
}

/// A chat-ops event worth keeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChatOpsRecord {
    /// A person's action refused before policy could rule on it (a
    /// deactivated user, a lookup that failed, a request no longer open).
    Refused {
        /// `slack:U…`.
        identity: String,
        /// What they asked.
        action: ChatAction,
        /// Why it was refused.
        reason: String,
    },
    /// A request to the Slack endpoints that did not come from Slack
    /// (missing, forged or stale signature); refused with 401.
    Unverified {
        /// Path requested.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A message could not be delivered (Slack down, a refusal); decisions
    /// never wait for Slack, so this is the trace of what people did not see.
    Undelivered {
        /// Web API method.
        method: String,
        /// Slack's error, or the transport's.
        error: String,
    },
    /// Thread posts dropped because the release's queue was full while Slack was away.
    Dropped {
        /// Posts dropped.
        count: u64,
    },
    /// A message was posted for a release or a fleet: where it is, so an
    /// agent restarted mid-release (or another sharing the ledger) updates
    /// it in place instead of posting a second one.
    Posted {
        /// Which message of the release's.
        message: ChatMessage,
        /// Channel id.
        channel: String,
        /// The message's `ts`: its id for `chat.update`.
        ts: String,
    },
    /// A verified request from Slack was taken (its signature's digest), so
    /// a captured copy replayed within the signature's five minutes — after
    /// a restart, or to another agent sharing the ledger — is not acted on again.
    Delivery {
        /// SHA-256 of the request's signature, hex.
        key: String,
    },
}

/// One event of one revision of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevisionRecord {
    /// The service.
    pub service: String,
    /// The revision.
    pub revision: String,
    /// What happened.
    pub event: crate::policy::memory::RevisionEvent,
}

impl RevisionRecord {
    /// The ledger id its records go under: `revision <service> <revision>`
    /// (neither may contain spaces, so the id reads back unambiguously).
    pub fn ledger_id(service: &str, revision: &str) -> String {
        format!("{REVISION_PREFIX}{service} {revision}")
    }
}

/// How every revision record's ledger id begins.
pub const REVISION_PREFIX: &str = "revision ";

/// The agent paused the release on shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleasePaused {
    /// Ticks judged so far.
    pub tick: u64,
    /// Release time reached, seconds.
    pub now_s: u64,
}

/// What a person asks of a running release, on their own authority.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PersonAction {
    /// Roll back now ([`crate::policy::approval::rule_rollback`]).
    Rollback,
    /// Promote now ([`crate::policy::approval::rule_promote`]).
    Promote,
}

/// A person's request relayed through the ledger to the agent holding the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PersonRequestRecord {
    /// The id its ruling (`approval_resolved`) is recorded under.
    pub id: String,
    /// Which.
    pub action: PersonAction,
    /// The identity policy checks (`alice@example.com`, `slack:U…`).
    pub identity: String,
    /// Slack groups the channel verified the identity is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Their reason, as typed (untrusted text).
    pub reason: String,
}

/// What compaction removed of one finished release, and what those ticks said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompactedRecord {
    /// Sequence number of the release's final `release_finished` record:
    /// only ticks before it were removed (a later continuation is compacted
    /// by a later summary).
    pub finished_seq: i64,
    /// Tick records removed.
    pub removed: u64,
    /// Their lowest and highest sequence numbers.
    pub removed_seqs: (i64, i64),
    /// SHA-256 over each removed record's sequence number and hash, in
    /// sequence order: what `ledger_compacted` must still hold for this summary.
    pub removed_digest: String,
    /// What the removed ticks said.
    pub ticks: TickSummary,
}

/// Counts over a run of tick records (the last tick, and the last one
/// with a consultation, are kept whole and not counted here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TickSummary {
    /// Ticks counted.
    pub count: u64,
    /// First and last tick number.
    pub ticks: (u64, u64),
    /// First and last release time, seconds.
    pub now_s: (u64, u64),
    /// Ticks by the judge's verdict.
    pub verdicts: std::collections::BTreeMap<crate::judge::Verdict, u64>,
    /// Ticks by policy's decision (its label).
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// Ticks whose source failed (inputs digest `none`).
    pub source_failures: u64,
    /// Ticks that consulted the model.
    pub consultations: u64,
}

impl TickSummary {
    /// Count one more tick.
    pub fn add(&mut self, t: &TickRecord) {
        if self.count == 0 {
            self.ticks = (t.tick, t.tick);
            self.now_s = (t.now_s, t.now_s);
        }
        self.count += 1;
        self.ticks = (self.ticks.0.min(t.tick), self.ticks.1.max(t.tick));
        self.now_s = (self.now_s.0.min(t.now_s), self.now_s.1.max(t.now_s));
        *self.verdicts.entry(t.judge.verdict).or_default() += 1;
        *self.decisions.entry(t.decision.label().to_string()).or_default() += 1;
        self.source_failures += u64::from(t.inputs_digest == "none");
        self.consultations += u64::from(t.consultation.is_some());
    }
}

/// Version-1 bodies of the two kinds whose shape changed.
mod legacy {
    use serde::Deserialize;

    /// Before `Ruling::Closed`, an expired request was closed by a refusal
    /// whose reason said so; such a record still closes its request.
    pub fn expiry_refusal(r: &crate::policy::approval::Ruling) -> bool {
        use crate::policy::approval::{Refusal, Ruling};
        matches!(r, Ruling::Refused { why: Refusal::Unstated, reason } if reason.contains("expired"))
    }

    use super::{ActionPlan, ActionResult, IntentRecord, OutcomeRecord};
    use crate::executor::Verification;

    /// Version 1 stored the plan itself as the intent body.
    pub fn intent(body: serde_json::Value) -> Result<IntentRecord, serde_json::Error> {
        let plan: ActionPlan = serde_json::from_value(body)?;
        Ok(IntentRecord { plan, fence: None })
    }

    #[derive(Deserialize)]
    enum Res<T> {
        Ok(T),
        Err(String),
    }

    #[derive(Deserialize)]
    struct Outcome {
        plan_id: String,
        result: Res<String>,
        verification: Option<Res<Verification>>,
    }

    /// Version 1 stored `Result`s as `{"Ok": …}` / `{"Err": …}`.
    pub fn outcome(body: serde_json::Value) -> Result<OutcomeRecord, serde_json::Error> {
        let o: Outcome = serde_json::from_value(body)?;
        let result = match (o.result, o.verification) {
            (Res::Err(error), _) => ActionResult::Failed { error },
            (Res::Ok(output), Some(Res::Ok(v))) if v.verified => {
                ActionResult::Verified { output, observed: v.observed }
            }
            (Res::Ok(output), Some(Res::Ok(v))) => ActionResult::NotVerified { output, observed: v.observed },
            (Res::Ok(output), Some(Res::Err(error))) => ActionResult::VerifyFailed { output, error },
            (Res::Ok(output), None) => ActionResult::NotVerified { output, observed: "not verified".into() },
        };
        Ok(OutcomeRecord { plan_id: o.plan_id, result })
    }
}

/// JSON Schema of every record (`backstop schema ledger`).
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_round_trips_through_its_text() {
        for a in [
            Actor::Agent { instance: None },
            Actor::agent("host-1:42"),
            Actor::Human { channel: "slack".into(), identity: "U123".into() },
            Actor::Pipeline { identity: "ci:github:org/repo".into() },
        ] {
            assert_eq!(a.to_string().parse::<Actor>().unwrap(), a);
        }
        assert!("root".parse::<Actor>().is_err());
        assert!("human:cli".parse::<Actor>().is_err());
    }

    fn stored(kind: &str, body: &str) -> StoredRecord {
        StoredRecord {
            seq: 3,
            record_id: "r3".into(),
            release_id: "rel".into(),
            kind: kind.into(),
            actor: "agent".into(),
            at_ms: 0,
            body: body.into(),
            record_version: RECORD_VERSION,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_body_is_read_as_one_value_of_its_own_kind_and_a_planted_one_is_refused() {
        let end = ReleaseFinished {
            status: crate::release::ReleaseStatus::Promoted,
            ticks: 3,
            decided_at_s: 30,
            model_usage: Default::default(),
        };
        let end = &serde_json::to_string(&end).unwrap();
        assert!(matches!(Record::from_stored(&stored("release_finished", end)), Ok(Record::ReleaseFinished(_))));
        // A body written to smuggle a second kind and body past the wrapper, or
        // not JSON at all, or the right text under the wrong kind: refused, naming the record.
        for (kind, body) in [
            ("tick", &format!(r#"{{}}, "kind": "release_finished", "body": {end}"#)[..]),
            ("release_finished", &format!("{end} trailing")),
            ("release_finished", "not json"),
            ("tick", end),
        ] {
            let err = Record::from_stored(&stored(kind, body)).unwrap_err();
            assert!(err.to_string().contains(&format!("ledger record 3 (`{kind}`)")), "{err}");
        }
    }

    #[test]
    fn unresolved_does_not_settle_an_intent() {
        assert!(!ActionResult::Unresolved { observed: String::new() }.settles());
        assert!(ActionResult::Reconciled { observed: String::new() }.settles());
        assert!(ActionResult::Failed { error: String::new() }.settles());
    }
}
