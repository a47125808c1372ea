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
use crate::ledger::{ChatMessage, ChatOpsRecord, Record, RecordKind};
use crate::run::agent::{ReleaseState, ReleaseView};

/// Whose message a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// A release's, by name.
    Release(String),
    /// A fleet's, by name: one message for the whole fleet, its members' in its thread.
    Fleet(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Release(n) | Key::Fleet(n) => n,
        }
    }

    /// Which message of the ledger's this is.
    fn message(&self) -> ChatMessage {
        match self {
            Key::Release(_) => ChatMessage::Release,
            Key::Fleet(name) => ChatMessage::Fleet { name: name.clone() },
        }
    }
}

/// What the notifier knows of one release (or fleet).
#[derive(Default)]
struct Slot {
    channel: String,
    /// The fleet this release is a member of: its message goes in the fleet's thread.
    fleet: Option<String>,
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
    /// The ledger was asked where this message was posted before (a restart).
    restored: bool,
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
    /// Post it, in the thread at this ts if one is given.
    Post(Reply, Option<String>),
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

/// A release's chat-ops records searched for where its message was posted
/// (newest first; each post is one, and refusals or outages add a few more).
const POSTED_LOOKBACK: i64 = 1000;

/// How often the table is read when nothing rings.
const POLL: Duration = Duration::from_millis(250);

/// Run until `stop`.
pub async fn run(app: Arc<SlackApp>, mut stop: watch::Receiver<bool>) {
    let fleets = Fleets::of(&app);
    let mut n = Notifier { app, slots: BTreeMap::new(), channel_ready: HashMap::new(), fleets };
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
    slots: BTreeMap<Key, Slot>,
    channel_ready: HashMap<String, Instant>,
    fleets: Fleets,
}

/// The configured fleets, as Slack shows them.
struct Fleets {
    /// Member release name → its fleet's name.
    member_of: HashMap<String, String>,
    /// Each fleet's first member's release id: where an undelivered fleet message is recorded.
    first_id: HashMap<String, String>,
    /// When the ledger was last read for them.
    read_at: Option<Instant>,
}

/// How often the fleets' state is read from the ledger (two queries per member).
const FLEET_READ: Duration = Duration::from_secs(1);

impl Fleets {
    fn of(app: &SlackApp) -> Self {
        let settings = &app.agent.runtime().settings;
        let (mut member_of, mut first_id) = (HashMap::new(), HashMap::new());
        for plan in settings.fleet_plans().unwrap_or_default() {
            for (k, &i) in plan.waves.iter().flatten().enumerate() {
                let cfg = &settings.releases[i];
                member_of.insert(cfg.name.clone(), plan.name.clone());
                if k == 0 {
                    first_id.insert(plan.name.clone(), crate::release::release_id(cfg));
                }
            }
        }
        Fleets { member_of, first_id, read_at: None }
    }
}

impl Notifier {
    async fn refresh(&mut self) {
        self.refresh_fleets().await;
        let url = self.app.settings.agent_url.clone();
        for v in self.app.agent.list() {
            // The agent holding a release speaks for it (one standing by would
            // show "standby" over the holder's message); a new holder takes
            // the message up from the ledger ([`Notifier::posted_before`]).
            if v.state == ReleaseState::Standby {
                continue;
            }
            let decided = self.app.decided(&v.name);
            let channel = self.app.settings.channel_for(&v.service).to_string();
            let fleet = self.fleets.member_of.get(&v.name).cloned();
            let slot = self.slots.entry(Key::Release(v.name.clone())).or_insert_with(|| Slot {
                channel,
                fleet,
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

    /// Each fleet's message as it should look, at most once per [`FLEET_READ`].
    async fn refresh_fleets(&mut self) {
        if self.fleets.first_id.is_empty() || self.fleets.read_at.is_some_and(|t| t.elapsed() < FLEET_READ) {
            return;
        }
        self.fleets.read_at = Some(Instant::now());
        let now = match self.app.agent.runtime().fleets_now().await {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %crate::error::chain(&e), "Fleet messages not refreshed: the ledger cannot be read.");
                return;
            }
        };
        let url = self.app.settings.agent_url.clone();
        for f in now {
            let channel = self.app.settings.channel_for(&f.service).to_string();
            let release_id = self.fleets.first_id.get(&f.outcome.name).cloned().unwrap_or_default();
            let slot = self.slots.entry(Key::Fleet(f.outcome.name.clone())).or_insert_with(|| Slot {
                channel,
                release_id,
                ..Slot::default()
            });
            let message = render::fleet_message(&f, url.as_deref());
            if slot.sent.as_ref() != Some(&message) && slot.desired.as_ref() != Some(&message) {
                slot.desired = Some(message);
            }
        }
    }

    /// At most one call per channel per pass, each channel paced.
    async fn deliver(&mut self) {
        let names: Vec<Key> = self.slots.keys().cloned().collect();
        let interval = Duration::from_millis(self.app.settings.post_interval_ms);
        for name in names {
            let now = Instant::now();
            let root = self.root(&name);
            let Some(slot) = self.slots.get_mut(&name) else { continue };
            if slot.refused
                || slot.retry_at.is_some_and(|t| t > now)
                || self.channel_ready.get(&slot.channel).is_some_and(|t| *t > now)
            {
                continue;
            }
            if !slot.restored {
                slot.restored = true;
                if slot.posted.is_none() {
                    let found = self.posted_before(&name).await;
                    self.restore(&name, found);
                }
            }
            let Some(slot) = self.slots.get(&name) else { continue };
            let Some(step) = next_step(slot, root) else { continue };
            let channel = slot.channel.clone();
            self.channel_ready.insert(channel.clone(), now + interval);
            let result = self.send(&name, &channel, step).await;
            if let Err(e) = result {
                self.failed(&name, &channel, e).await;
            }
        }
    }

    /// For a fleet member: `Some(None)` until its fleet's message is posted,
    /// then `Some(Some(where))`; `None` for a release on its own or a fleet.
    fn root(&self, key: &Key) -> Option<Option<Posted>> {
        if matches!(key, Key::Fleet(_)) {
            return None;
        }
        let fleet = self.slots.get(key)?.fleet.clone()?;
        Some(self.slots.get(&Key::Fleet(fleet)).and_then(|s| s.posted.clone()))
    }

    async fn send(&mut self, name: &Key, channel: &str, step: Step) -> Result<(), WebError> {
        let web = &self.app.web;
        match step {
            Step::Post(msg, thread_ts) => {
                let at = web.post(channel, thread_ts.as_deref(), &msg).await?;
                if let (Key::Release(release), None) = (name, &thread_ts) {
                    // A mention in this thread is about this release (a fleet's thread has several).
                    self.app.threads.set(release, at.clone());
                }
                self.record_posted(name, &at).await;
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

    /// Where `key`'s message was posted before this process started, from
    /// the ledger (its newest record); `None` when never, or unreadable (then
    /// a new message is posted: better twice than not at all).
    async fn posted_before(&self, key: &Key) -> Option<Posted> {
        let release_id = &self.slots.get(key)?.release_id;
        let wanted = key.message();
        let ledger = &self.app.agent.runtime().ledger;
        let rows = match ledger.of_kind(RecordKind::ChatOps, Some(release_id), 0, POSTED_LOOKBACK).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %crate::error::chain(&e), "Where the message was posted is unknown: the ledger cannot be read.");
                return None;
            }
        };
        rows.into_iter().rev().find_map(|(_, r)| match r {
            Record::ChatOps(ChatOpsRecord::Posted { message, channel, ts }) if message == wanted => {
                Some(Posted { channel, ts })
            }
            _ => None,
        })
    }

    /// Take up a message posted before a restart: updated in place from now on.
    fn restore(&mut self, key: &Key, found: Option<Posted>) {
        let (Some(at), Some(slot)) = (found, self.slots.get_mut(key)) else { return };
        if at.channel != slot.channel {
            // The service's channel changed across the restart: a new message there.
            return;
        }
        if let (Key::Release(release), None) = (key, &slot.fleet) {
            self.app.threads.set(release, at.clone());
        }
        slot.posted = Some(at);
    }

    async fn record_posted(&self, key: &Key, at: &Posted) {
        let Some(slot) = self.slots.get(key) else { return };
        let rec = ChatOpsRecord::Posted { message: key.message(), channel: at.channel.clone(), ts: at.ts.clone() };
        self.app.record(&slot.release_id, &self.app.agent_actor(), rec).await;
    }

    fn sent(&mut self, name: &Key, msg: Reply, posted: Option<Posted>) {
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

    async fn failed(&mut self, name: &Key, channel: &str, e: WebError) {
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
            warn!(release = name.name(), error = %crate::error::chain(&e), "Slack message not delivered; decisions go on.");
            let rec = ChatOpsRecord::Undelivered { method: e.method().into(), error: e.to_string() };
            self.app.record(&release_id, &self.app.agent_actor(), rec).await;
        }
    }
}

/// The next call for `slot`. `root`: for a fleet member, where the fleet's
/// message is (`None` inside: not posted yet, so the member waits); the
/// member's message and thread posts go in that thread (Slack threads one level deep).
fn next_step(slot: &Slot, root: Option<Option<Posted>>) -> Option<Step> {
    let thread = match root {
        Some(None) => return None,
        Some(Some(root)) => Some(root),
        None => None,
    };
    let ts = thread.as_ref().map(|t| t.ts.clone());
    match (&slot.posted, &slot.desired) {
        (None, Some(msg)) => Some(Step::Post(msg.clone(), ts)),
        (None, None) => slot.sent.clone().map(|m| Step::Post(m, ts)),
        (Some(at), Some(msg)) => Some(Step::Update(at.clone(), msg.clone())),
        (Some(at), None) => {
            let at = thread.unwrap_or_else(|| at.clone());
            slot.thread.front().map(|item| Step::Thread(at, item.clone()))
        }
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
