//! Human approvals as policy: who may approve what, and whether an approval
//! given now still applies. Pure, like [`super::evaluate`]: the agent brings
//! the request, the human's answer and a fresh decision (the release judged
//! again at the moment of the answer), and gets back what to do.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::memory::QuarantineAction;
use super::{Decision, PolicyFile, Proposal, RuleHit, RuleId};
use crate::field::FieldError;

/// `[approvals]` in a policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Who may approve or reject for services that name no approvers of
    /// their own: identities (`alice@example.com`, `slack:U024BE7LH`) or
    /// groups (`group:sre`). Empty: nobody can approve, and requests expire.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Who may approve rolling back a release marked irreversible (the
    /// explicit override). Empty: such a rollback can only be rejected.
    #[serde(default)]
    pub irreversible_approvers: Vec<String>,
    /// Minutes a request stays open; then the release is held (1..=10080).
    #[serde(default = "default_expiry")]
    pub expiry_minutes: u32,
    /// Groups by name: `group:NAME` in an approvers list means any member.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

fn default_expiry() -> u32 {
    60
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            approvers: vec![],
            irreversible_approvers: vec![],
            expiry_minutes: default_expiry(),
            groups: BTreeMap::new(),
        }
    }
}

impl ApprovalPolicy {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if !(1..=10080).contains(&self.expiry_minutes) {
            return Err(FieldError::of("approvals.expiry_minutes".into(), "minutes from 1 to 10080 (one week)".into()));
        }
        let lists = [
            ("approvals.approvers", &self.approvers),
            ("approvals.irreversible_approvers", &self.irreversible_approvers),
        ];
        for (field, list) in lists {
            for (i, who) in list.iter().enumerate() {
                self.check_entry(&format!("{field}[{i}]"), who)?;
            }
        }
        Ok(())
    }

    /// One approvers entry: an identity, `group:NAME` defined here,
    /// `slack:U…` (a Slack user id: names can be changed by their owner, so
    /// they never authorise) or `slack-group:S…` (a Slack user group id).
    /// `field` names the entry in errors, as every validation here does.
    pub(super) fn check_entry(&self, field: &str, who: &str) -> Result<(), FieldError> {
        let bad = |expected: String| Err(FieldError::of(field.to_string(), expected));
        let slack_id = |id: &str, first: &[char]| {
            id.len() >= 3 && id.starts_with(first) && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        if who.trim().is_empty() {
            return bad("an identity or group:NAME, not an empty string".into());
        }
        if let Some(g) = who.strip_prefix("group:")
            && !self.groups.contains_key(g)
        {
            return bad(format!("a group defined under [approvals.groups]; `{g}` is not"));
        }
        if let Some(id) = who.strip_prefix("slack:")
            && !slack_id(id, &['U', 'W'])
        {
            return bad(format!("slack:<user id> such as slack:U024BE7LH (ids, never names); `{id}` is not one"));
        }
        if let Some(id) = who.strip_prefix("slack-group:")
            && !slack_id(id, &['S'])
        {
            return bad(format!("slack-group:<user group id> such as slack-group:S0614TZR7; `{id}` is not one"));
        }
        Ok(())
    }

    /// Whether `who` is named in `list`: directly, through a `group:` of
    /// this file, or through a `slack-group:` their channel verified they
    /// are in (`who.groups`). Identities compare exactly: `slack:U024BE7LH`
    /// is a user id, never a name.
    pub fn names(&self, list: &[String], who: &Principal) -> bool {
        list.iter().any(|entry| {
            if let Some(g) = entry.strip_prefix("group:") {
                return self.groups.get(g).is_some_and(|members| members.contains(&who.identity));
            }
            if entry.starts_with("slack-group:") {
                return who.groups.iter().any(|g| g == entry);
            }
            *entry == who.identity
        })
    }

    /// Everyone `list` names: `group:` entries of this file expanded to
    /// their members, other entries (identities, `slack-group:`) as written;
    /// sorted, each once. Who to page about a request.
    pub fn expand(&self, list: &[String]) -> Vec<String> {
        let mut out: Vec<String> = list
            .iter()
            .flat_map(|entry| match entry.strip_prefix("group:") {
                Some(g) => self.groups.get(g).cloned().unwrap_or_default(),
                None => vec![entry.clone()],
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every `slack-group:` entry in the file's approver lists (what the
    /// Slack channel must look up for a user before an answer counts).
    pub fn external_groups<'a>(&'a self, services: impl Iterator<Item = &'a [String]>) -> Vec<String> {
        let mut out: Vec<String> = [self.approvers.as_slice(), self.irreversible_approvers.as_slice()]
            .into_iter()
            .chain(services)
            .flatten()
            .filter(|e| e.starts_with("slack-group:"))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Who answers, as policy sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Principal {
    /// `alice@example.com`, `slack:U024BE7LH`.
    pub identity: String,
    /// External groups the channel verified this identity is in at the time
    /// of the answer (`slack-group:S0614TZR7`); empty for API callers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Principal {
    /// An identity with no external groups.
    pub fn named(identity: &str) -> Self {
        Self { identity: identity.into(), groups: vec![] }
    }
}

/// An approval request as policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingApproval {
    /// Request id.
    pub id: String,
    /// Service (selects approvers).
    pub service: String,
    /// What approval would do.
    pub proposed: Proposal,
    /// The release is marked irreversible.
    pub irreversible: bool,
    /// Unix ms after which the request no longer applies.
    pub expires_at_ms: i64,
}

/// What the human said.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Answer {
    /// Carry out the proposal.
    Approve,
    /// Do not.
    Reject,
}

/// What to do with a human's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "ruling", rename_all = "snake_case")]
pub enum Ruling {
    /// Run this decision (the approved proposal, unchanged).
    Execute {
        /// Rollback or promote, exactly as proposed.
        decision: Decision,
    },
    /// The human rejected it: nothing runs and the release is held.
    Rejected,
    /// The answer does not count (not an approver, no override for an
    /// irreversible release, too late); the request stays as it was.
    Refused {
        /// Why, typed: what code branches on.
        #[serde(default)]
        why: Refusal,
        /// Why, for the human, as it was said at the time.
        reason: String,
    },
    /// The situation changed since the request (the canary recovered, or
    /// policy now proposes something else): nothing runs; the agent keeps
    /// judging and asks again if it still needs a human.
    Stale {
        /// What changed.
        reason: String,
    },
    /// The request was closed without an answer deciding it: it expired, an
    /// operator stopped the release, or the judge acted on its own. Nothing
    /// runs on it, ever; a later answer is refused.
    Closed {
        /// What closed it.
        closure: Closure,
    },
}

impl Ruling {
    /// One line for people: what came of an answer or a person's request.
    pub fn describe(&self) -> String {
        match self {
            Ruling::Execute { decision } => format!("accepted: {} runs", decision.label()),
            Ruling::Rejected => "rejected: nothing runs; the release is held".into(),
            Ruling::Refused { reason, .. } => format!("refused: {reason}"),
            Ruling::Stale { reason } => format!("not executed: {reason}"),
            Ruling::Closed { closure } => format!("not executed: {}", closure.describe()),
        }
    }
}

/// Why an answer or a request did not count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// Policy does not name them for this service.
    NotAnApprover {
        /// Who answered.
        identity: String,
        /// The service.
        service: String,
    },
    /// The request's expiry has passed.
    Expired {
        /// The request.
        request: String,
    },
    /// An irreversible release's rollback needs `approvals.irreversible_approvers`.
    IrreversibleOverride {
        /// Who answered.
        identity: String,
    },
    /// Judged again now, policy cannot confirm the proposal (it holds or denies); the request stays open.
    CannotConfirm {
        /// Policy's decision now.
        decision: String,
        /// Its reason.
        reason: String,
    },
    /// The target is not declared in configuration.
    NotDeclared {
        /// The target.
        target: String,
    },
    /// No last-known-good revision: nothing to roll back to.
    NoLastKnownGood,
    /// The rollback rate limit is reached.
    RateLimit {
        /// Rollbacks in the window.
        recent: usize,
        /// The target.
        target: String,
        /// The window, minutes.
        window_minutes: u32,
    },
    /// The answer names another request than the one open.
    NotThisRequest {
        /// The request answered.
        asked: String,
        /// The one open.
        open: String,
    },
    /// This agent does not hold the target's lease (another agent holds it, or this one advises).
    NotHolder,
    /// A person asked to promote a canary the judge finds failing.
    CanaryFailing,
    /// A person asked to promote a quarantined revision, and policy refuses it until it is cleared.
    Quarantined {
        /// The revision.
        revision: String,
        /// Its quarantine, for a person.
        quarantine: String,
    },
    /// Recorded before refusals were typed: see the reason text.
    #[default]
    Unstated,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAnApprover { identity, service } => write!(f, "{identity} is not an approver for {service}"),
            Refusal::Expired { request } => write!(f, "request {request} has expired; the release is held"),
            Refusal::IrreversibleOverride { identity } => write!(
                f,
                "the release is irreversible: only approvals.irreversible_approvers may approve its rollback, and {identity} is not one"
            ),
            Refusal::CannotConfirm { decision, reason } => {
                write!(f, "judged again now, policy says {decision} ({reason}): not executed; the request stays open")
            }
            Refusal::NotDeclared { target } => write!(f, "target `{target}` is not declared in configuration"),
            Refusal::NoLastKnownGood => {
                f.write_str("no last-known-good revision is recorded for this target: nothing to roll back to")
            }
            Refusal::RateLimit { recent, target, window_minutes } => {
                write!(f, "rate limit: {recent} rollbacks of `{target}` in the last {window_minutes} minutes")
            }
            Refusal::NotThisRequest { asked, open } => {
                write!(f, "no open request {asked} on this release (open: {open})")
            }
            Refusal::NotHolder => f.write_str(
                "this agent does not hold the target's lease (another agent holds it, or this one advises): ask the agent that holds it (see `holder`)",
            ),
            Refusal::CanaryFailing => {
                f.write_str("the judge finds the canary failing: it is not promoted by anyone (roll it back, or abort)")
            }
            Refusal::Quarantined { revision, quarantine } => write!(
                f,
                "quarantined: {quarantine}; policy refuses to promote {revision} until an approver clears it \
                 (`backstop revisions clear`)"
            ),
            Refusal::Unstated => f.write_str("refused"),
        }
    }
}

impl Ruling {
    /// A refusal, with its text for people.
    pub fn refused(why: Refusal) -> Self {
        Ruling::Refused { reason: why.to_string(), why }
    }
}

/// Stable name of a ruling, for logs, metrics and replies.
pub fn ruling_label(r: &Ruling) -> &'static str {
    match r {
        Ruling::Execute { .. } => "executed",
        Ruling::Rejected => "rejected",
        Ruling::Refused { .. } => "refused",
        Ruling::Stale { .. } => "stale",
        Ruling::Closed { .. } => "closed",
    }
}

impl Ruling {
    /// Whether this ruling ends its request (every ruling but a refusal,
    /// which leaves the request open for someone who counts).
    pub fn closes(&self) -> bool {
        !matches!(self, Ruling::Refused { .. })
    }
}

/// What closed a request without an answer deciding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Closure {
    /// Nobody answered before it expired; the release is held.
    Expired,
    /// An operator held the release: a held release never acts, so an approval of it runs nothing.
    OperatorHold,
    /// An operator aborted the release (or a rollout engine moved to another revision).
    OperatorAbort,
    /// The judge's own decision rolled the release back, as it would have had nobody been asked.
    JudgeRolledBack,
    /// The judge's own decision promoted the release.
    JudgePromoted,
    /// The release ended otherwise (policy denied, the window ended held).
    ReleaseEnded,
    /// The agent stopped between ticks; the release asks again when it continues.
    AgentStopped,
}

impl Closure {
    /// One line for people.
    pub fn describe(self) -> &'static str {
        match self {
            Closure::Expired => "expired unanswered; the release is held",
            Closure::OperatorHold => "closed: an operator held the release",
            Closure::OperatorAbort => "closed: an operator aborted the release",
            Closure::JudgeRolledBack => "superseded: the judge rolled the release back on its own",
            Closure::JudgePromoted => "superseded: the judge promoted the release on its own",
            Closure::ReleaseEnded => "closed: the release ended",
            Closure::AgentStopped => "closed: the agent stopped; it asks again when the release continues",
        }
    }

    /// The rule id recorded with the closure.
    pub fn rule(self) -> RuleId {
        match self {
            Closure::Expired => RuleId::ApprovalExpired,
            Closure::OperatorHold => RuleId::ClosedByHold,
            Closure::OperatorAbort => RuleId::ClosedByAbort,
            Closure::JudgeRolledBack | Closure::JudgePromoted => RuleId::SupersededByJudge,
            Closure::ReleaseEnded | Closure::AgentStopped => RuleId::ClosedByEnd,
        }
    }
}

/// A ruling and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalOutcome {
    /// The ruling.
    pub ruling: Ruling,
    /// Rules in the order they fired.
    pub trace: Vec<RuleHit>,
}

/// Everything an answer is ruled on.
#[derive(Debug, Clone)]
pub struct AnswerInput<'a> {
    /// The open request.
    pub request: &'a PendingApproval,
    /// Who answered (the authenticated identity, never a display name, and
    /// the external groups their channel verified).
    pub who: &'a Principal,
    /// Approve or reject.
    pub answer: Answer,
    /// Policy's decision on the release judged again now.
    pub current: &'a Decision,
    /// Wall-clock unix ms.
    pub now_ms: i64,
}

/// Approvers for `service`: its own list when it names one, else the default.
pub fn approvers_for<'p>(policy: &'p PolicyFile, service: &str) -> &'p [String] {
    match policy.services.get(service).map(|s| s.approvers.as_slice()) {
        Some(list) if !list.is_empty() => list,
        _ => &policy.approvals.approvers,
    }
}

/// Whether `who` may answer `req`: an approver of its service, or — for an
/// irreversible release's rollback — one of `irreversible_approvers`, the
/// named override (who need not also be an approver).
fn may_answer(policy: &PolicyFile, req: &PendingApproval, who: &Principal) -> bool {
    let overrides = req.irreversible
        && matches!(req.proposed, Proposal::Rollback { .. })
        && policy.approvals.names(&policy.approvals.irreversible_approvers, who);
    overrides || policy.approvals.names(approvers_for(policy, &req.service), who)
}

/// Rule on a human's answer. The approver can only say yes or no to the
/// proposal as it stands: target and revisions come from the request, and
/// an approval executes only when policy, asked again now, still proposes
/// exactly that (invariants, rate limits and freezes all apply again).
pub fn rule(policy: &PolicyFile, input: &AnswerInput) -> ApprovalOutcome {
    let mut trace = Vec::new();
    let mut hit = |rule: RuleId, detail: String| trace.push(RuleHit { rule, detail });
    let req = input.request;
    let ruling = if input.now_ms >= req.expires_at_ms {
        hit(RuleId::ApprovalExpired, format!("request {} expired", req.id));
        Ruling::refused(Refusal::Expired { request: req.id.clone() })
    } else if !may_answer(policy, req, input.who) {
        hit(RuleId::NotAnApprover, input.who.identity.clone());
        Ruling::refused(Refusal::NotAnApprover { identity: input.who.identity.clone(), service: req.service.clone() })
    } else if input.answer == Answer::Reject {
        hit(RuleId::ApprovalRejected, input.who.identity.clone());
        Ruling::Rejected
    } else if req.irreversible
        && matches!(req.proposed, Proposal::Rollback { .. })
        && !policy.approvals.names(&policy.approvals.irreversible_approvers, input.who)
    {
        hit(RuleId::IrreversibleOverride, input.who.identity.clone());
        Ruling::refused(Refusal::IrreversibleOverride { identity: input.who.identity.clone() })
    } else {
        still_proposed(req, input.current, &mut hit)
    };
    ApprovalOutcome { ruling, trace }
}

/// A person asking to roll a release back now (chat-ops, or the API).
#[derive(Debug, Clone)]
pub struct RollbackAsk<'a> {
    /// Who asks.
    pub who: &'a Principal,
    /// The release.
    pub release: &'a super::ReleaseFacts,
    /// Rollbacks of the target in the rate limit's window.
    pub history: &'a super::History,
    /// Why, as typed.
    pub reason: &'a str,
    /// Wall-clock unix ms.
    pub now_ms: i64,
}

/// Rule on a person's rollback request. It replaces the judge's opinion,
/// never the guardrails: only the service's approvers may ask, the target
/// must be declared and have a last-known-good revision, an irreversible
/// release needs an irreversible approver, and the rollback rate limit holds.
pub fn rule_rollback(policy: &PolicyFile, ask: &RollbackAsk) -> ApprovalOutcome {
    let mut trace = Vec::new();
    let mut hit = |rule: RuleId, detail: String| trace.push(RuleHit { rule, detail });
    let r = ask.release;
    let refuse = Ruling::refused;
    let window_ms = i64::from(policy.rate_limit.window_minutes) * 60_000;
    let recent = ask.history.recent(ask.now_ms, window_ms).len();
    let override_names = policy.approvals.names(&policy.approvals.irreversible_approvers, ask.who);
    let named =
        policy.approvals.names(approvers_for(policy, &r.service), ask.who) || (r.irreversible && override_names);
    let ruling = if !named {
        hit(RuleId::NotAnApprover, ask.who.identity.clone());
        refuse(Refusal::NotAnApprover { identity: ask.who.identity.clone(), service: r.service.clone() })
    } else if !r.declared_targets.iter().any(|d| d == &r.target) {
        hit(RuleId::DeclaredTarget, r.target.clone());
        refuse(Refusal::NotDeclared { target: r.target.clone() })
    } else if r.last_known_good.is_none() {
        hit(RuleId::LastKnownGood, "no last-known-good revision recorded".into());
        refuse(Refusal::NoLastKnownGood)
    } else if r.irreversible && !override_names {
        hit(RuleId::IrreversibleOverride, ask.who.identity.clone());
        refuse(Refusal::IrreversibleOverride { identity: ask.who.identity.clone() })
    } else if recent >= policy.rate_limit.max_rollbacks as usize {
        let window_minutes = policy.rate_limit.window_minutes;
        hit(RuleId::RateLimit, format!("{recent} rollbacks in {window_minutes} min"));
        refuse(Refusal::RateLimit { recent, target: r.target.clone(), window_minutes })
    } else {
        hit(RuleId::HumanRollback, format!("{} asked: {}", ask.who.identity, ask.reason));
        let plan = super::RollbackPlan {
            target: r.target.clone(),
            from_revision: r.candidate_revision.clone(),
            to_revision: r.last_known_good.clone().unwrap_or_default(),
            reason: format!("requested by {}: {}", ask.who.identity, ask.reason),
        };
        Ruling::Execute { decision: Decision::Rollback { plan } }
    };
    ApprovalOutcome { ruling, trace }
}

/// A person asking to promote the release now (the API, `backstop releases promote`).
#[derive(Debug, Clone)]
pub struct PromoteAsk<'a> {
    /// Who asks.
    pub who: &'a Principal,
    /// The release.
    pub release: &'a super::ReleaseFacts,
    /// The judge's verdict at the last tick (`None`: nothing judged yet).
    pub judge: Option<crate::judge::Verdict>,
    /// Why, as typed.
    pub reason: &'a str,
}

/// Rule on a person's promotion. Like a person's rollback it replaces the
/// judge's wait, never its finding: only the service's approvers may ask,
/// the target must be declared, and a canary the judge finds failing is not
/// promoted by anyone (roll it back or abort instead).
pub fn rule_promote(policy: &PolicyFile, ask: &PromoteAsk) -> ApprovalOutcome {
    let mut trace = Vec::new();
    let mut hit = |rule: RuleId, detail: String| trace.push(RuleHit { rule, detail });
    let r = ask.release;
    let ruling = if !policy.approvals.names(approvers_for(policy, &r.service), ask.who) {
        hit(RuleId::NotAnApprover, ask.who.identity.clone());
        Ruling::refused(Refusal::NotAnApprover { identity: ask.who.identity.clone(), service: r.service.clone() })
    } else if !r.declared_targets.iter().any(|d| d == &r.target) {
        hit(RuleId::DeclaredTarget, r.target.clone());
        Ruling::refused(Refusal::NotDeclared { target: r.target.clone() })
    } else if ask.judge == Some(crate::judge::Verdict::Fail) {
        hit(RuleId::JudgeVerdict, "the judge finds the canary failing".into());
        Ruling::refused(Refusal::CanaryFailing)
    } else if let Some(q) = r.quarantine.as_ref().filter(|_| policy.quarantine.action == QuarantineAction::Refuse) {
        hit(RuleId::QuarantineRefuses, q.describe());
        Ruling::refused(Refusal::Quarantined { revision: q.revision.clone(), quarantine: q.describe() })
    } else {
        hit(RuleId::HumanPromote, format!("{} asked: {}", ask.who.identity, ask.reason));
        Ruling::Execute { decision: Decision::Promote }
    };
    ApprovalOutcome { ruling, trace }
}

fn still_proposed(req: &PendingApproval, current: &Decision, hit: &mut impl FnMut(RuleId, String)) -> Ruling {
    let same = match (current, &req.proposed) {
        (Decision::RequireApproval { proposed, .. }, p) => proposed.same_action(p),
        (Decision::Rollback { plan }, Proposal::Rollback { plan: asked }) => plan.same_action(asked),
        (Decision::Promote, Proposal::Promote) => true,
        _ => false,
    };
    if let Decision::Hold { reason } | Decision::Deny { reason } = current
        && !same
    {
        let why = Refusal::CannotConfirm { decision: current.label().into(), reason: reason.clone() };
        hit(RuleId::ApprovalCannotConfirm, why.to_string());
        return Ruling::refused(why);
    }
    if !same {
        let why = match current {
            Decision::Continue | Decision::Promote => {
                "the canary no longer fails: judged again now, policy says ".to_string() + current.label()
            }
            other => format!("judged again now, policy says {} instead of the proposal", other.label()),
        };
        hit(RuleId::ApprovalStale, why.clone());
        return Ruling::Stale { reason: why };
    }
    hit(RuleId::ApprovalApproved, "policy, asked again now, still proposes it".into());
    let decision = match &req.proposed {
        Proposal::Rollback { plan } => Decision::Rollback { plan: plan.clone() },
        Proposal::Promote => Decision::Promote,
    };
    Ruling::Execute { decision }
}

/// Why a person may not clear a quarantine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClearRefused {
    /// Policy does not name them as an approver of the service.
    #[error("{identity} is not an approver for {service} (policy's approvers decide who clears a quarantine)")]
    NotAnApprover {
        /// Who asked.
        identity: String,
        /// The service.
        service: String,
    },
    /// Nothing to clear.
    #[error("revision {revision} of {service} is not quarantined")]
    NotQuarantined {
        /// The service.
        service: String,
        /// The revision.
        revision: String,
    },
    /// A clearing needs a reason a later reader can weigh.
    #[error("a reason is needed: say why the revision is safe again")]
    NoReason,
}

/// Rule on a person clearing `revision`'s quarantine: an approver of the
/// service (as for approvals), a quarantine in force, and a reason.
pub fn rule_clear(
    policy: &PolicyFile,
    (service, revision): (&str, &str),
    who: &Principal,
    reason: &str,
    known: &super::memory::ServiceRevisions,
) -> Result<(), ClearRefused> {
    if !policy.approvals.names(approvers_for(policy, service), who) {
        return Err(ClearRefused::NotAnApprover { identity: who.identity.clone(), service: service.into() });
    }
    if known.quarantine(revision).is_none() {
        return Err(ClearRefused::NotQuarantined { service: service.into(), revision: revision.into() });
    }
    if reason.trim().is_empty() {
        return Err(ClearRefused::NoReason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RollbackPlan;

    fn policy(extra: &str) -> PolicyFile {
        let text = format!(
            "version = 1\nrate_limit = {{ max_rollbacks = 3, window_minutes = 60 }}\n\
             [services.checkout]\nautonomy = \"approve\"\n{extra}"
        );
        PolicyFile::parse(std::path::Path::new("p.toml"), &text).unwrap()
    }

    fn plan() -> RollbackPlan {
        RollbackPlan { target: "t".into(), from_revision: "v2".into(), to_revision: "v1".into(), reason: "r".into() }
    }

    fn request(irreversible: bool) -> PendingApproval {
        PendingApproval {
            id: "a1".into(),
            service: "checkout".into(),
            proposed: Proposal::Rollback { plan: plan() },
            irreversible,
            expires_at_ms: 10_000,
        }
    }

    fn still() -> Decision {
        Decision::RequireApproval { reason: "autonomy".into(), proposed: Proposal::Rollback { plan: plan() } }
    }

    fn ruling(
        p: &PolicyFile,
        req: &PendingApproval,
        who: &str,
        answer: Answer,
        current: &Decision,
        now: i64,
    ) -> Ruling {
        rule(p, &AnswerInput { request: req, who: &Principal::named(who), answer, current, now_ms: now }).ruling
    }

    const SRE: &str = "[approvals]\napprovers = [\"group:sre\"]\n[approvals.groups]\nsre = [\"alice@example.com\"]\n";

    #[test]
    fn a_group_member_approves_and_the_plan_is_the_requests() {
        let p = policy(SRE);
        let r = ruling(&p, &request(false), "alice@example.com", Answer::Approve, &still(), 5);
        assert_eq!(r, Ruling::Execute { decision: Decision::Rollback { plan: plan() } });
    }

    #[test]
    fn someone_not_named_is_refused_even_to_reject() {
        let p = policy(SRE);
        for answer in [Answer::Approve, Answer::Reject] {
            let r = ruling(&p, &request(false), "mallory@example.com", answer, &still(), 5);
            assert!(matches!(r, Ruling::Refused { why: Refusal::NotAnApprover { .. }, .. }), "{r:?}");
        }
        // A display name that looks like a group is just a name.
        let r = ruling(&p, &request(false), "group:sre", Answer::Approve, &still(), 5);
        assert!(matches!(r, Ruling::Refused { .. }), "{r:?}");
    }

    #[test]
    fn a_late_answer_is_refused() {
        let p = policy(SRE);
        let r = ruling(&p, &request(false), "alice@example.com", Answer::Approve, &still(), 10_000);
        assert!(matches!(r, Ruling::Refused { why: Refusal::Expired { .. }, .. }), "{r:?}");
    }

    #[test]
    fn an_irreversible_rollback_needs_the_named_override() {
        let p = policy(SRE);
        let r = ruling(&p, &request(true), "alice@example.com", Answer::Approve, &still(), 5);
        assert!(matches!(r, Ruling::Refused { why: Refusal::IrreversibleOverride { .. }, .. }), "{r:?}");
        let mut p2 = p.clone();
        p2.approvals.irreversible_approvers = vec!["alice@example.com".into()];
        assert!(matches!(
            ruling(&p2, &request(true), "alice@example.com", Answer::Approve, &still(), 5),
            Ruling::Execute { .. }
        ));
    }

    #[test]
    fn a_recovered_canary_or_another_proposal_makes_the_approval_stale() {
        let p = policy(SRE);
        let r = ruling(
            &p,
            &request(false),
            "alice@example.com",
            Answer::Approve,
            &Decision::Hold { reason: "x".into() },
            5,
        );
        assert!(matches!(r, Ruling::Refused { why: Refusal::CannotConfirm { .. }, .. }), "{r:?}");
        for current in [
            Decision::Continue,
            Decision::Promote,
            Decision::RequireApproval {
                reason: "x".into(),
                proposed: Proposal::Rollback { plan: RollbackPlan { to_revision: "v0".into(), ..plan() } },
            },
        ] {
            let r = ruling(&p, &request(false), "alice@example.com", Answer::Approve, &current, 5);
            assert!(matches!(r, Ruling::Stale { .. }), "{current:?}: {r:?}");
        }
    }

    #[test]
    fn rejecting_needs_no_fresh_judgement() {
        let p = policy(SRE);
        let r = ruling(&p, &request(false), "alice@example.com", Answer::Reject, &Decision::Continue, 5);
        assert_eq!(r, Ruling::Rejected);
    }

    #[test]
    fn a_service_list_replaces_the_default() {
        let p = policy(&format!("approvers = [\"bob@example.com\"]\n{SRE}"));
        assert!(matches!(
            ruling(&p, &request(false), "alice@example.com", Answer::Approve, &still(), 5),
            Ruling::Refused { .. }
        ));
        assert!(matches!(
            ruling(&p, &request(false), "bob@example.com", Answer::Approve, &still(), 5),
            Ruling::Execute { .. }
        ));
    }

    #[test]
    fn an_undefined_group_is_named_at_load() {
        let e = PolicyFile::parse(
            std::path::Path::new("p.toml"),
            "version = 1\nrate_limit = { max_rollbacks = 3, window_minutes = 60 }\n[approvals]\napprovers = [\"group:dba\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("approvals.approvers[0]") && e.contains("dba"), "{e}");
    }

    const SLACK: &str = "[approvals]\napprovers = [\"slack:U024BE7LH\", \"slack-group:S0614TZR7\"]\n";

    #[test]
    fn slack_approvers_are_ids_and_groups_count_only_when_verified() {
        let p = policy(SLACK);
        let member = Principal { identity: "slack:U111".into(), groups: vec!["slack-group:S0614TZR7".into()] };
        let outsider = Principal::named("slack:U111");
        let named = Principal::named("slack:U024BE7LH");
        let (req, current) = (request(false), still());
        let input = |who| AnswerInput { request: &req, who, answer: Answer::Approve, current: &current, now_ms: 5 };
        assert!(matches!(rule(&p, &input(&member)).ruling, Ruling::Execute { .. }));
        assert!(matches!(rule(&p, &input(&named)).ruling, Ruling::Execute { .. }));
        assert!(matches!(rule(&p, &input(&outsider)).ruling, Ruling::Refused { .. }));
        // Claiming the group as an identity does nothing.
        assert!(matches!(rule(&p, &input(&Principal::named("slack-group:S0614TZR7"))).ruling, Ruling::Refused { .. }));
        for bad in ["slack:alice", "slack:u024", "slack-group:sre", "slack-group:U024BE7LH"] {
            let text = format!(
                "version = 1\nrate_limit = {{ max_rollbacks = 3, window_minutes = 60 }}\n[approvals]\napprovers = [\"{bad}\"]\n"
            );
            let e = PolicyFile::parse(std::path::Path::new("p.toml"), &text).unwrap_err().to_string();
            assert!(e.contains("approvals.approvers[0]") && e.contains("id"), "{bad}: {e}");
        }
    }

    fn facts(irreversible: bool, lkg: Option<&str>) -> crate::policy::ReleaseFacts {
        crate::policy::ReleaseFacts {
            release_id: "r1".into(),
            service: "checkout".into(),
            target: "t".into(),
            service_targets: 0,
            declared_targets: vec!["t".into()].into(),
            candidate_revision: "v2".into(),
            last_known_good: lkg.map(Into::into),
            quarantine: None,
            last_known_good_from: None,
            irreversible,
            environment: "production".into(),
        }
    }

    fn ask_rollback(p: &PolicyFile, who: &str, f: &crate::policy::ReleaseFacts, recent: usize) -> Ruling {
        let past = crate::policy::PastRollback { at_ms: 1_000, release_id: "r".into() };
        let history = crate::policy::History { automated_rollbacks: vec![past; recent] };
        let who = Principal::named(who);
        rule_rollback(p, &RollbackAsk { who: &who, release: f, history: &history, reason: "p99", now_ms: 5_000 }).ruling
    }

    #[test]
    fn a_persons_rollback_keeps_every_guardrail() {
        let p = policy(SRE);
        let ok = ask_rollback(&p, "alice@example.com", &facts(false, Some("v1")), 0);
        assert!(
            matches!(ok, Ruling::Execute { decision: Decision::Rollback { ref plan } } if plan.to_revision == "v1" && plan.reason.contains("alice")),
            "{ok:?}"
        );
        let refused = |r: Ruling, why: &str| {
            assert!(matches!(&r, Ruling::Refused { reason, .. } if reason.contains(why)), "{why}: {r:?}")
        };
        refused(ask_rollback(&p, "mallory@example.com", &facts(false, Some("v1")), 0), "not an approver");
        refused(ask_rollback(&p, "alice@example.com", &facts(false, None), 0), "last-known-good");
        refused(ask_rollback(&p, "alice@example.com", &facts(true, Some("v1")), 0), "irreversible");
        refused(ask_rollback(&p, "alice@example.com", &facts(false, Some("v1")), 3), "rate limit");
        let undeclared = crate::policy::ReleaseFacts { target: "other".into(), ..facts(false, Some("v1")) };
        refused(ask_rollback(&p, "alice@example.com", &undeclared, 0), "not declared");
    }

    #[test]
    fn a_persons_promotion_needs_an_approver_a_declared_target_and_a_canary_not_failing() {
        use crate::judge::Verdict;
        let p = policy(SRE);
        let ask = |who: &str, f: &crate::policy::ReleaseFacts, judge: Option<Verdict>| {
            let who = Principal::named(who);
            rule_promote(&p, &PromoteAsk { who: &who, release: f, judge, reason: "checked by hand" })
        };
        for judge in [None, Some(Verdict::Pass), Some(Verdict::Inconclusive)] {
            let ok = ask("alice@example.com", &facts(false, Some("v1")), judge);
            assert_eq!(ok.ruling, Ruling::Execute { decision: Decision::Promote }, "{judge:?}");
            assert!(ok.trace.iter().any(|h| h.rule == crate::policy::RuleId::HumanPromote));
        }
        let refused =
            |r: Ruling, why: Refusal| assert!(matches!(&r, Ruling::Refused { .. }) && r == Ruling::refused(why));
        let f = facts(false, Some("v1"));
        refused(ask("alice@example.com", &f, Some(Verdict::Fail)).ruling, Refusal::CanaryFailing);
        let who = Refusal::NotAnApprover { identity: "mallory@example.com".into(), service: "checkout".into() };
        refused(ask("mallory@example.com", &f, None).ruling, who);
        let undeclared = crate::policy::ReleaseFacts { target: "other".into(), ..facts(false, Some("v1")) };
        refused(ask("alice@example.com", &undeclared, None).ruling, Refusal::NotDeclared { target: "other".into() });
    }

    #[test]
    fn only_an_approver_clears_a_quarantine_in_force_and_says_why() {
        let mut policy = crate::policy::PolicyFile::embedded_default().unwrap();
        policy.approvals.approvers = vec!["alice@example.com".into()];
        let condemned = crate::policy::memory::Condemned {
            release_id: "r".into(),
            target: "eu-1".into(),
            rolled_back_to: "v41".into(),
            reason: "error_ratio +5 pt".into(),
            evidence: vec![],
        };
        let known = crate::policy::memory::ServiceRevisions::fold([crate::policy::memory::RevisionFact {
            revision: "v42".into(),
            at_ms: 10,
            by: "agent:a".into(),
            event: crate::policy::memory::RevisionEvent::Condemned(condemned),
        }]);
        let alice = Principal::named("alice@example.com");
        let mallory = Principal::named("mallory@example.com");
        let rule = |who, rev, why| rule_clear(&policy, ("checkout", rev), who, why, &known);
        assert_eq!(rule(&alice, "v42", "fixed upstream"), Ok(()));
        assert!(matches!(rule(&mallory, "v42", "fixed"), Err(ClearRefused::NotAnApprover { .. })));
        assert!(matches!(rule(&alice, "v41", "fixed"), Err(ClearRefused::NotQuarantined { .. })));
        assert_eq!(rule(&alice, "v42", "  "), Err(ClearRefused::NoReason));
    }
}
