//! One message per release in its channel, updated in place as it
//! progresses, with details in its thread. The notifier only reads the
//! agent's table and never writes to a release, so Slack being down, slow or
//! rate limiting never delays or changes a decision: what is to be shown is
//! kept per release (the latest message replaces an unsent one; thread posts
//! queue up to `queue`, the oldest dropped and recorded), posting is paced
//! per channel, 429's `Retry-After` is honoured, and what could not be
//! delivered is recorded in the ledger.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::app::SlackApp;
use super::render::{self, ThreadItem, charts};
use super::web::{Posted, WebError};
use super::wire::Reply;
use crate::ledger::ChatOpsRecord;
use crate::run::agent::{ReleaseState, ReleaseView};

/// What the notifier knows of one release.
#[derive(Default)]
struct Slot {
    channel: String,
    release_id: String,
    posted: Option<Posted>,
    /// The message as it should look, when it differs from what was sent.
    desired: Option<Reply>,
    sent: Option<Reply>,
    thread: VecDeque<ThreadItem>,
    /// Approval request and state seen last, to post thread details once per change.
    seen: Option<(ReleaseState, Option<String>)>,
    failures: u32,
    retry_at: Option<Instant>,
    /// An undelivered record was written for the current run of failures.
    recorded: bool,
    /// Slack refused the channel or the token: nothing more is sent for this release.
    refused: bool,
    /// What the message was last rendered from.
    version: Option<Version>,
}

/// What a release message shows, in brief: a new one means render again.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    seq: i64,
    state: ReleaseState,
    status: Option<&'static str>,
    request: Option<String>,
    decided: Option<render::Decided>,
    failed: bool,
}

/// What to do next for one slot.
enum Step {
    Post(Reply),
    Update(Posted, Reply),
    Thread(Posted, ThreadItem),
}

/// Slack's answers that no retry of any message to the channel will change.
const CHANNEL_REFUSALS: [&str; 9] = [
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "not_authed",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "restricted_action",
];

/// How often the table is read when nothing rings.
const POLL: Duration = Duration::from_millis(250);

/// Run until `stop`.
pub async fn run(app: Arc<SlackApp>, mut stop: watch::Receiver<bool>) {
    let mut n = Notifier { app, slots: BTreeMap::new(), channel_ready: HashMap::new() };
    loop {
        n.refresh().await;
        n.deliver().await;
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = n.app.changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

struct Notifier {
    app: Arc<SlackApp>,
    slots: BTreeMap<String, Slot>,
    channel_ready: HashMap<String, Instant>,
}

impl Notifier {
    async fn refresh(&mut self) {
        let url = self.app.settings.agent_url.clone();
        for v in self.app.agent.list() {
            let decided = self.app.decided(&v.name);
            let channel = self.app.settings.channel_for(&v.service).to_string();
            let slot = self.slots.entry(v.name.clone()).or_insert_with(|| Slot {
                channel,
                release_id: v.release_id.clone(),
                ..Slot::default()
            });
            // Rendered only when something the message shows has changed, not every pass.
            let version = Version {
                seq: v.ledger_seq,
                state: v.state,
                status: v.status.as_ref().map(|s| s.label()),
                request: v.pending_approval.as_ref().map(|a| a.request.id.clone()),
                decided: decided.clone(),
                failed: v.error.is_some(),
            };
            if slot.version.as_ref() != Some(&version) {
                let policy = &self.app.agent.runtime().policy;
                let approvers = policy.approvals.expand(crate::policy::approval::approvers_for(policy, &v.service));
                let shared = url.as_deref().zip(v.pending_approval.as_ref()).map(|(u, a)| {
                    crate::serve::dashboard::shared_link(
                        &self.app.signer,
                        u,
                        &v.name,
                        &a.request.id,
                        a.request.expires_at_ms,
                    )
                });
                let links = render::Links { agent_url: url.as_deref(), shared: shared.as_deref() };
                let message = render::release_message(&v, decided.as_ref(), links, &approvers);
                if slot.sent.as_ref() != Some(&message) {
                    slot.desired = Some(message);
                }
                slot.version = Some(version);
            }
            if let Some(a) = &v.pending_approval {
                self.app.remember_request(&a.request.id, &v.name, &v.release_id);
            }
            let items = thread_items(slot.seen.as_ref(), &v, url.as_deref());
            slot.seen = Some((v.state, v.pending_approval.as_ref().map(|a| a.request.id.clone())));
            let dropped = push_bounded(&mut slot.thread, items, self.app.settings.queue);
            if dropped > 0 {
                let id = slot.release_id.clone();
                self.app.record(&id, &self.app.agent_actor(), ChatOpsRecord::Dropped { count: dropped }).await;
            }
        }
    }

    /// At most one call per channel per pass, each channel paced.
    async fn deliver(&mut self) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let interval = Duration::from_millis(self.app.settings.post_interval_ms);
        for name in names {
            let now = Instant::now();
            let Some(slot) = self.slots.get_mut(&name) else { continue };
            if slot.refused
                || slot.retry_at.is_some_and(|t| t > now)
                || self.channel_ready.get(&slot.channel).is_some_and(|t| *t > now)
            {
                continue;
            }
            let Some(step) = next_step(slot) else { continue };
            let channel = slot.channel.clone();
            self.channel_ready.insert(channel.clone(), now + interval);
            let result = self.send(&name, &channel, step).await;
            if let Err(e) = result {
                self.failed(&name, &channel, e).await;
            }
        }
    }

    async fn send(&mut self, name: &str, channel: &str, step: Step) -> Result<(), WebError> {
        let web = &self.app.web;
        match step {
            Step::Post(msg) => {
                let at = web.post(channel, None, &msg).await?;
                self.app.threads.set(name, at.clone());
                self.sent(name, msg, Some(at));
            }
            Step::Update(at, msg) => match web.update(&at, &msg).await {
                Ok(_) => self.sent(name, msg, None),
                // Deleted by someone: post it again.
                Err(WebError::Api { code, .. }) if code == "message_not_found" => {
                    if let Some(s) = self.slots.get_mut(name) {
                        s.posted = None;
                    }
                }
                Err(e) => return Err(e),
            },
            Step::Thread(at, item) => {
                match &item {
                    ThreadItem::Text(msg) => web.post(&at.channel, Some(&at.ts), msg).await.map(|_| ())?,
                    ThreadItem::Chart { name, title, png } => web.upload(&at, name, title, png.clone()).await?,
                }
                if let Some(s) = self.slots.get_mut(name) {
                    s.thread.pop_front();
                    s.failures = 0;
                    s.recorded = false;
                }
            }
        }
        Ok(())
    }

    fn sent(&mut self, name: &str, msg: Reply, posted: Option<Posted>) {
        if let Some(s) = self.slots.get_mut(name) {
            if s.desired.as_ref() == Some(&msg) {
                s.desired = None;
            }
            s.sent = Some(msg);
            if posted.is_some() {
                s.posted = posted;
            }
            s.failures = 0;
            s.recorded = false;
            s.retry_at = None;
        }
    }

    async fn failed(&mut self, name: &str, channel: &str, e: WebError) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let now = Instant::now();
        let first = !slot.recorded;
        match &e {
            WebError::RateLimited { retry_after_s, .. } => {
                self.channel_ready.insert(channel.to_string(), now + Duration::from_secs((*retry_after_s).max(1)));
                return;
            }
            e if e.transient() => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = Duration::from_millis(250u64.saturating_mul(1 << slot.failures.min(8)))
                    .min(Duration::from_secs(60));
                slot.retry_at = Some(now + backoff);
            }
            // The channel or the token is refused: every later post would be too.
            WebError::Api { code, .. } if CHANNEL_REFUSALS.contains(&code.as_str()) => slot.refused = true,
            // A refusal of this one message (invalid_blocks, msg_too_long). Never posted:
            // nothing to update, so stop; an update: keep it as sent, so only a changed
            // message is tried again; a thread post: drop it.
            _ if slot.posted.is_none() => slot.refused = true,
            _ => match slot.desired.take() {
                Some(m) => slot.sent = Some(m),
                None => {
                    slot.thread.pop_front();
                }
            },
        }
        slot.recorded = true;
        let release_id = slot.release_id.clone();
        if first {
            warn!(release = name, error = %crate::error::chain(&e), "Slack message not delivered; decisions go on.");
            let rec = ChatOpsRecord::Undelivered { method: e.method().into(), error: e.to_string() };
            self.app.record(&release_id, &self.app.agent_actor(), rec).await;
        }
    }
}

fn next_step(slot: &Slot) -> Option<Step> {
    match (&slot.posted, &slot.desired) {
        (None, Some(msg)) => Some(Step::Post(msg.clone())),
        (None, None) => slot.sent.clone().map(Step::Post),
        (Some(at), Some(msg)) => Some(Step::Update(at.clone(), msg.clone())),
        (Some(at), None) => slot.thread.front().map(|item| Step::Thread(at.clone(), item.clone())),
    }
}

/// Add `items`, dropping the oldest beyond `cap`; how many were dropped.
fn push_bounded(queue: &mut VecDeque<ThreadItem>, items: Vec<ThreadItem>, cap: usize) -> u64 {
    let mut dropped = 0;
    for i in items {
        queue.push_back(i);
        while queue.len() > cap {
            queue.pop_front();
            dropped += 1;
        }
    }
    dropped
}

/// Thread posts for what changed since `seen`: the details and chart when an
/// approval request opens, the findings when the release ends.
fn thread_items(seen: Option<&(ReleaseState, Option<String>)>, v: &ReleaseView, url: Option<&str>) -> Vec<ThreadItem> {
    let (was_state, was_request) = match seen {
        Some((s, r)) => (Some(*s), r.as_deref()),
        None => (None, None),
    };
    let mut out = vec![];
    let request = v.pending_approval.as_ref().map(|a| a.request.id.as_str());
    if request.is_some() && request != was_request {
        out.push(ThreadItem::Text(render::approval_detail(v, url)));
        out.extend(charts(v));
    }
    let ended = matches!(v.state, ReleaseState::Finished | ReleaseState::Failed);
    if ended && was_state.is_some_and(|s| !matches!(s, ReleaseState::Finished | ReleaseState::Failed)) {
        out.push(ThreadItem::Text(render::approval_detail(v, url)));
    }
    out
}
