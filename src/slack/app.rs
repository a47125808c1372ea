//! One place where Slack deliveries become agent calls. Both transports hand
//! every delivery to [`SlackApp::accept`], which answers at once (what goes
//! into the acknowledgement or the HTTP response, within Slack's 3 s) and
//! does anything slow — asking Slack who the user is, waiting for policy's
//! ruling and the action — in a task of its own, answering through the
//! `response_url` or an ephemeral message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tracing::warn;

use super::command::{self, Command, HELP};
use super::identity::{Directory, Unrecognised};
use super::render::{self, Decided};
use super::web::WebApi;
use super::wire::{Event, Interaction, Reply, ResponseType, SlashCommand};
use super::{Secrets, SlackError, SlackSettings};
use crate::ledger::{Actor, ChatAction, ChatOpsRecord, OperatorAction, Record, RevisionRecord};
use crate::orchestrator::human::AnswerReply;
use crate::orchestrator::human::PersonAction;
use crate::policy::approval::{Answer, Principal, Refusal, Ruling, approvers_for};
use crate::release::ReleaseStatus;
use crate::run::agent::{Agent, AnswerError, ReleaseView};
use crate::run::memory::{self, ClearError};

/// One delivery from Slack, whichever transport brought it.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A slash command.
    Command(SlashCommand),
    /// A click.
    Interaction(Interaction),
    /// An event (`event_id` de-duplicates retries).
    Event {
        /// Unique per event.
        event_id: String,
        /// The event.
        event: Event,
    },
}

/// What a delivery needs: an answer now, and work to start once acknowledged.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Goes into the acknowledgement (Socket Mode) or the HTTP response.
    pub reply: Option<Reply>,
    /// Started after the acknowledgement.
    pub work: Vec<Work>,
}

impl Accepted {
    fn reply(r: Reply) -> Self {
        Self { reply: Some(r), work: vec![] }
    }
}

/// Slow work a delivery asks for.
#[derive(Debug)]
pub enum Work {
    /// Hold, resume or rollback as `user`.
    Change {
        /// Slack user id.
        user: String,
        /// What they asked.
        command: Command,
        /// Where to answer.
        to: Responder,
    },
    /// An Approve or Reject click.
    Click {
        /// Slack user id.
        user: String,
        /// The button's value.
        approval_id: String,
        /// Which button.
        answer: Answer,
        /// Where to answer.
        to: Responder,
    },
    /// Open the clearing form for whoever clicked "Clear quarantine…".
    OpenForm {
        /// The click's trigger (valid for 3 s).
        trigger_id: String,
        /// What the button named.
        target: super::quarantine::Target,
        /// Where the button was, and where the outcome is said.
        channel: String,
        /// Who clicked.
        user: String,
    },
    /// Upload charts into a thread.
    Charts {
        /// The thread.
        at: super::web::Posted,
        /// The charts.
        items: Vec<super::render::ThreadItem>,
    },
    /// Post an answer.
    Respond {
        /// Where.
        to: Responder,
        /// What.
        reply: Reply,
    },
}

/// Where an answer goes.
#[derive(Debug, Clone)]
pub enum Responder {
    /// The delivery's `response_url` (works in any channel, also where the bot is not a member).
    Url(String),
    /// An ephemeral message to `user` in `channel`; an answer meant for the
    /// channel (`in_channel`) is posted there instead.
    Ephemeral {
        /// Channel id.
        channel: String,
        /// User id.
        user: String,
    },
    /// A reply in a thread.
    Thread {
        /// Channel id.
        channel: String,
        /// The thread's ts.
        ts: String,
    },
}

/// Keys already handled (envelope ids, event ids, trigger ids, clicks), oldest dropped first.
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

const SEEN: usize = 4096;

/// Chat-ops records read back to find a replayed delivery: more than a busy
/// channel's five minutes of requests (the signature's lifetime).
const RECENT_DELIVERIES: i64 = 5_000;

impl Seen {
    fn first(&mut self, key: &str) -> bool {
        if self.set.contains(key) {
            return false;
        }
        if self.order.len() >= SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key.to_string());
        self.set.insert(key.to_string());
        true
    }
}

/// The release messages' addresses, shared with the notifier.
#[derive(Default)]
pub struct Threads {
    by_release: Mutex<HashMap<String, super::web::Posted>>,
}

impl Threads {
    /// Where `release`'s message is.
    pub fn get(&self, release: &str) -> Option<super::web::Posted> {
        self.by_release.lock().unwrap_or_else(PoisonError::into_inner).get(release).cloned()
    }

    /// Remember where `release`'s message is.
    pub fn set(&self, release: &str, at: super::web::Posted) {
        self.by_release.lock().unwrap_or_else(PoisonError::into_inner).insert(release.into(), at);
    }

    /// The release whose message starts thread `ts` in `channel`.
    pub fn release_for(&self, channel: &str, ts: &str) -> Option<String> {
        let m = self.by_release.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().find(|(_, p)| p.channel == channel && p.ts == ts).map(|(name, _)| name.clone())
    }
}

/// The Slack app: settings, clients, and what it remembers.
pub struct SlackApp {
    /// The agent every action goes to.
    pub agent: Arc<Agent>,
    /// Web API with the bot token.
    pub web: WebApi,
    /// Settings.
    pub settings: SlackSettings,
    /// Credentials.
    pub secrets: Secrets,
    /// Release messages' addresses.
    pub threads: Threads,
    /// Rung when a person's action changed something, so messages update at once.
    pub changed: Notify,
    /// Signs the expiring links to release pages that messages carry.
    pub signer: Arc<crate::serve::signing::Signer>,
    dir: Directory,
    seen: Mutex<Seen>,
    decided: Mutex<HashMap<String, Decided>>,
    /// Approval request id → (release name, release id), for clicks after a request closed.
    requests: Mutex<HashMap<String, (String, String)>>,
}

impl SlackApp {
    /// The app for `agent`.
    pub fn new(
        agent: Arc<Agent>,
        settings: SlackSettings,
        secrets: Secrets,
        signer: Arc<crate::serve::signing::Signer>,
    ) -> Result<Arc<Self>, SlackError> {
        let web = WebApi::new(&settings.api_url, secrets.bot.clone()).map_err(SlackError::Client)?;
        let dir = Directory::new(web.clone(), std::time::Duration::from_secs(settings.cache_s));
        Ok(Arc::new(Self {
            agent,
            web,
            settings,
            secrets,
            threads: Threads::default(),
            changed: Notify::new(),
            signer,
            dir,
            seen: Mutex::new(Seen { order: VecDeque::new(), set: HashSet::new() }),
            decided: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether `key` is new (a retried delivery repeats its key: one action per delivery).
    pub fn first(&self, key: &str) -> bool {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).first(key)
    }

    /// Whether the verified request signed `signature` is taken for the first
    /// time: not in memory, and not in the ledger's recent chat-ops records
    /// (another agent, or this one before a restart). Recorded when new.
    pub async fn first_delivery(&self, signature: &str) -> bool {
        let key = crate::digest::digest(signature.as_bytes());
        if !self.first(&format!("signature:{key}")) {
            return false;
        }
        let ledger = &self.agent.runtime().ledger;
        let recent = ledger.of_kind(crate::ledger::RecordKind::ChatOps, None, 0, RECENT_DELIVERIES).await;
        let seen = recent.map(|rows| {
            rows.iter().any(|(_, r)| matches!(r, Record::ChatOps(ChatOpsRecord::Delivery { key: k }) if *k == key))
        });
        match seen {
            Ok(true) => false,
            // Unreadable ledger: the action itself will need the ledger and fail there.
            Ok(false) | Err(_) => {
                self.record("slack", &self.agent_actor(), ChatOpsRecord::Delivery { key }).await;
                true
            }
        }
    }

    /// Who decided `release`'s last request from Slack, for its message.
    pub fn decided(&self, release: &str) -> Option<Decided> {
        self.decided.lock().unwrap_or_else(PoisonError::into_inner).get(release).cloned()
    }

    /// Remember which release a request shown in Slack belongs to.
    pub fn remember_request(&self, id: &str, release: &str, release_id: &str) {
        let mut m = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry(id.into()).or_insert_with(|| (release.into(), release_id.into()));
    }

    fn agent_url(&self) -> Option<&str> {
        self.settings.agent_url.as_deref()
    }

    /// Take one delivery: the immediate answer (for the acknowledgement or
    /// the HTTP response) and the slow work, which the transport starts with
    /// [`SlackApp::start`] only after acknowledging.
    pub fn accept(&self, d: Delivery) -> Accepted {
        match d {
            Delivery::Command(c) => self.command(c),
            Delivery::Interaction(Interaction::BlockActions { user, container, actions, trigger_id, .. }) => {
                let work = actions
                    .into_iter()
                    .filter_map(|a| self.clicked(a, &user.id, &container.channel_id, &trigger_id))
                    .collect();
                Accepted { reply: None, work }
            }
            Delivery::Interaction(Interaction::ViewSubmission { user, view })
                if view.callback_id == super::quarantine::CLEAR
                    && (view.id.is_empty() || self.first(&format!("view:{}", view.id))) =>
            {
                // An empty acknowledgement closes the form; the outcome follows as a message.
                Accepted { reply: None, work: self.submitted(&user.id, &view).into_iter().collect() }
            }
            Delivery::Interaction(_) => Accepted::default(),
            Delivery::Event { event_id, event } if self.first(&format!("event:{event_id}")) => self.event(event),
            Delivery::Event { .. } => Accepted::default(),
        }
    }

    /// One clicked button's work: an Approve or Reject answer, or the
    /// clearing form to open. A retried delivery repeats the click's key.
    fn clicked(&self, a: super::wire::Action, user: &str, channel: &str, trigger_id: &str) -> Option<Work> {
        let key = format!("click:{user}:{}:{}", a.action_ts, a.value);
        if !a.action_ts.is_empty() && !self.first(&key) {
            return None;
        }
        // Refusals and results go to the clicker alone; the message itself shows the decision.
        let to = Responder::Ephemeral { channel: channel.into(), user: user.into() };
        let answer = match a.action_id.as_str() {
            "approve" => Answer::Approve,
            "reject" => Answer::Reject,
            super::quarantine::CLEAR => {
                let target = super::quarantine::clicked(&a.value)?;
                return Some(Work::OpenForm {
                    trigger_id: trigger_id.into(),
                    target,
                    channel: channel.into(),
                    user: user.into(),
                });
            }
            _ => return None,
        };
        Some(Work::Click { user: user.into(), approval_id: a.value, answer, to })
    }

    /// A submitted clearing form: the clearing it asks, or why it is not one.
    fn submitted(&self, user: &str, view: &super::wire::SubmittedView) -> Option<Work> {
        let opened = match super::quarantine::opened(view) {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "A submitted clearing form is ignored.");
                return None;
            }
        };
        let to = Responder::Ephemeral { channel: opened.channel.clone(), user: user.into() };
        Some(match super::quarantine::asked(&opened, view) {
            Ok(command) => Work::Change { user: user.into(), command, to },
            Err(e) => Work::Respond { to, reply: render::ephemeral(&super::wire::escape(&e.to_string())) },
        })
    }

    /// Start the slow work of an accepted delivery.
    pub fn start(self: &Arc<Self>, work: Vec<Work>) {
        for w in work {
            let app = self.clone();
            tokio::spawn(async move {
                match w {
                    Work::Change { user, command: Command::Clear { service, revision, reason }, to } => {
                        app.clear(&user, (&service, &revision), &reason, to).await
                    }
                    Work::Change { user, command, to } => app.change(&user, command, to).await,
                    Work::Click { user, approval_id, answer, to } => app.click(&user, &approval_id, answer, to).await,
                    Work::Respond { to, reply } => app.respond(&to, &reply).await,
                    Work::OpenForm { trigger_id, target, channel, user } => {
                        app.open_form(&trigger_id, &target, &channel, &user).await
                    }
                    Work::Charts { at, items } => app.upload(&at, items).await,
                }
            });
        }
    }

    fn command(&self, c: SlashCommand) -> Accepted {
        let parsed = match command::parse(&c.text) {
            Ok(p) => p,
            Err(e) => return Accepted::reply(render::ephemeral(&super::wire::escape(&e.to_string()))),
        };
        if let Some(r) = self.read_only(&parsed, None) {
            return Accepted::reply(r);
        }
        let to = if c.response_url.is_empty() {
            Responder::Ephemeral { channel: c.channel_id.clone(), user: c.user_id.clone() }
        } else {
            Responder::Url(c.response_url.clone())
        };
        Accepted {
            reply: Some(render::ephemeral(":hourglass_flowing_sand: Asking policy…")),
            work: vec![Work::Change { user: c.user_id, command: parsed, to }],
        }
    }

    /// Help, status and why: answered from the agent's memory, at once.
    fn read_only(&self, c: &Command, thread_release: Option<String>) -> Option<Reply> {
        let unknown = |name: &str| render::ephemeral(&format!("No release named `{}`.", super::wire::code(name)));
        match c {
            Command::Help => Some(render::ephemeral(HELP)),
            Command::Status { release: None } => Some(render::status(&self.agent.list(), self.agent_url())),
            Command::Status { release: Some(name) } => Some(match self.agent.get(name) {
                Some(v) => render::status(&[v], self.agent_url()),
                None => unknown(name),
            }),
            Command::Why { release } => {
                let Some(name) = release.clone().or(thread_release) else {
                    return Some(render::ephemeral("Which release? `/backstop why <release>`, or ask in its thread."));
                };
                Some(match self.agent.get(&name) {
                    Some(v) => render::why(&v, self.agent_url(), ResponseType::Ephemeral),
                    None => unknown(&name),
                })
            }
            _ => None,
        }
    }

    fn event(&self, e: Event) -> Accepted {
        let Event::AppMention { user, text, channel, ts, thread_ts } = e else { return Accepted::default() };
        if user.is_empty() {
            return Accepted::default();
        }
        let thread = thread_ts.clone().unwrap_or(ts);
        let release = thread_ts.as_deref().and_then(|t| self.threads.release_for(&channel, t));
        let parsed = command::parse_mention(&text);
        let reply = match &parsed {
            Ok(c) if !c.changes() => self.read_only(c, release.clone()),
            Ok(_) => Some(render::ephemeral(
                "Changes go through `/backstop …` so they are yours alone: try `/backstop help`.",
            )),
            Err(e) => Some(render::ephemeral(&super::wire::escape(&e.to_string()))),
        };
        let Some(mut reply) = reply else { return Accepted::default() };
        reply.response_type = None;
        let at = super::web::Posted { channel, ts: thread };
        let mut work =
            vec![Work::Respond { to: Responder::Thread { channel: at.channel.clone(), ts: at.ts.clone() }, reply }];
        // "why?" in a release's own thread: its charts follow the answer there.
        let asked = match parsed {
            Ok(Command::Why { release: named }) => named.or(release),
            _ => None,
        };
        if let Some(v) = asked.and_then(|name| self.agent.get(&name)) {
            work.push(Work::Charts { at, items: super::render::charts(&v) });
        }
        Accepted { reply: None, work }
    }

    async fn respond(&self, to: &Responder, reply: &Reply) {
        let sent = match to {
            Responder::Url(url) => self.web.respond(url, reply).await,
            Responder::Ephemeral { channel, .. } if reply.response_type == Some(ResponseType::InChannel) => {
                self.web.post(channel, None, reply).await.map(|_| ())
            }
            Responder::Ephemeral { channel, user } => {
                self.web.ephemeral(channel, user, &reply.text, &reply.blocks).await
            }
            Responder::Thread { channel, ts } => self.web.post(channel, Some(ts), reply).await.map(|_| ()),
        };
        if let Err(e) = sent {
            warn!(error = %crate::error::chain(&e), "Could not answer in Slack.");
            self.record(
                "slack",
                &self.agent_actor(),
                ChatOpsRecord::Undelivered { method: e.method().into(), error: e.to_string() },
            )
            .await;
        }
    }

    /// Show the clearing form; if Slack will not (an expired trigger, names
    /// past the form's limits), say so to the clicker with the command that does the same.
    async fn open_form(&self, trigger_id: &str, target: &super::quarantine::Target, channel: &str, user: &str) {
        let failed = match super::quarantine::modal(target, channel) {
            None => "the names do not fit Slack's form".to_string(),
            Some(modal) => match self.web.open_view(trigger_id, &modal).await {
                Ok(()) => return,
                Err(e) => {
                    let rec = ChatOpsRecord::Undelivered { method: e.method().into(), error: e.to_string() };
                    self.record("slack", &self.agent_actor(), rec).await;
                    e.to_string()
                }
            },
        };
        let esc = super::wire::escape;
        let text = format!(
            ":warning: Could not open the form ({}). `/backstop clear {} {} &lt;reason&gt;` does the same.",
            esc(&failed),
            super::wire::code(&target.service),
            super::wire::code(&target.revision)
        );
        let to = Responder::Ephemeral { channel: channel.into(), user: user.into() };
        self.respond(&to, &render::ephemeral(&text)).await;
    }

    async fn upload(&self, at: &super::web::Posted, items: Vec<super::render::ThreadItem>) {
        for item in items {
            let super::render::ThreadItem::Chart { name, title, png } = item else { continue };
            if let Err(e) = self.web.upload(at, &name, &title, png).await {
                let rec = ChatOpsRecord::Undelivered { method: e.method().into(), error: e.to_string() };
                self.record("slack", &self.agent_actor(), rec).await;
            }
        }
    }

    pub(super) fn agent_actor(&self) -> Actor {
        self.agent.runtime().agent.actor()
    }

    /// Append a chat-ops record; a ledger failure is logged (Slack's side never stops a release).
    pub(super) async fn record(&self, release_id: &str, by: &Actor, rec: ChatOpsRecord) {
        let at = self.agent.runtime().agent.clock.now_ms();
        if let Err(e) = self.agent.runtime().ledger.append(release_id, by, at, Record::ChatOps(rec)).await {
            warn!(error = %crate::error::chain(&e), "Could not record a chat-ops event.");
        }
    }

    /// The user as policy sees them, or a refusal already recorded and told.
    async fn principal(&self, user: &str, action: ChatAction, release_id: &str, to: &Responder) -> Option<Principal> {
        let policy = &self.agent.runtime().policy;
        let wanted = policy.approvals.external_groups(policy.services.values().map(|s| s.approvers.as_slice()));
        match self.dir.principal(user, &wanted).await {
            Ok(p) => Some(p),
            Err(refusal) => {
                let reason = crate::error::chain(&refusal);
                let identity = format!("slack:{user}");
                let by = slack_actor(&identity);
                self.record(release_id, &by, ChatOpsRecord::Refused { identity, action, reason: reason.clone() }).await;
                let text = match refusal {
                    Unrecognised::Lookup { .. } => format!(":no_entry: {reason}. Try again in a moment."),
                    _ => format!(":no_entry: Refused: {reason}."),
                };
                self.respond(to, &render::ephemeral(&text)).await;
                None
            }
        }
    }

    /// Hold, resume or rollback, as `user`.
    async fn change(&self, user: &str, c: Command, to: Responder) {
        let Some(name) = c.release().map(str::to_string) else { return };
        let Some(view) = self.agent.get(&name) else {
            return self
                .respond(&to, &render::ephemeral(&format!("No release named `{}`.", super::wire::code(&name))))
                .await;
        };
        let action = match &c {
            Command::Hold { .. } => ChatAction::Hold,
            Command::Resume { .. } => ChatAction::Resume,
            Command::Rollback { .. } => ChatAction::Rollback,
            Command::Clear { .. } | Command::Help | Command::Status { .. } | Command::Why { .. } => return,
        };
        let Some(who) = self.principal(user, action, &view.release_id, &to).await else { return };
        let actor = slack_actor(&who.identity);
        let text = match c {
            Command::Hold { reason, .. } | Command::Resume { reason, .. } => {
                let policy = &self.agent.runtime().policy;
                if !policy.approvals.names(approvers_for(policy, &view.service), &who) {
                    let reason = format!("{} is not an approver for {}", who.identity, view.service);
                    self.record(
                        &view.release_id,
                        &actor,
                        ChatOpsRecord::Refused { identity: who.identity.clone(), action, reason },
                    )
                    .await;
                    format!(":no_entry: You are not an approver for {}.", view.service)
                } else {
                    let op = if action == ChatAction::Hold { OperatorAction::Hold } else { OperatorAction::Resume };
                    match self.agent.operate(&name, op, &actor, &reason).await {
                        Ok(v) => {
                            let what =
                                format!("{} {}", if op == OperatorAction::Hold { "held" } else { "resumed" }, v.name);
                            self.note(&name, user, &what, v.state.label());
                            format!("{what}: it is now {}", v.state.label().replace('_', " "))
                        }
                        Err(e) => format!(":warning: {}", crate::error::chain(&e)),
                    }
                }
            }
            Command::Rollback { reason, .. } => {
                match self.agent.request(&name, PersonAction::Rollback, (actor, who), reason).await {
                    Ok(reply) => self.ruled(&name, &view, user, "rollback requested", &reply),
                    Err(e) => format!(":warning: {}", crate::error::chain(&e)),
                }
            }
            _ => return,
        };
        self.respond(&to, &render::ephemeral(&super::wire::escape(&text))).await;
    }

    /// Lift `service`'s quarantine of `revision` as `user`: the rule and the
    /// record are the API's (`run::memory::clear`); a refusal is recorded
    /// under the revision, as the chat's other refusals are.
    async fn clear(&self, user: &str, (service, revision): (&str, &str), reason: &str, to: Responder) {
        let under = RevisionRecord::ledger_id(service, revision);
        let Some(who) = self.principal(user, ChatAction::Clear, &under, &to).await else { return };
        let actor = slack_actor(&who.identity);
        let rt = self.agent.runtime();
        let now_ms = rt.agent.clock.now_ms();
        let cleared =
            memory::clear(&rt.ledger, &rt.policy, (service, revision), (&actor, &who), (reason, now_ms)).await;
        let esc = super::wire::escape;
        let reply = match cleared {
            // The team sees a quarantine lifted, and by whom (a mention, so not escaped).
            Ok(_) => Reply {
                text: format!(
                    ":white_check_mark: <@{user}> cleared {} {}: no longer quarantined. Reason: {}",
                    esc(service),
                    esc(revision),
                    esc(reason)
                ),
                blocks: vec![],
                response_type: Some(ResponseType::InChannel),
            },
            Err(ClearError::Refused(why)) => {
                let rec = ChatOpsRecord::Refused {
                    identity: who.identity,
                    action: ChatAction::Clear,
                    reason: why.to_string(),
                };
                self.record(&under, &actor, rec).await;
                render::ephemeral(&esc(&format!(":no_entry: Not cleared: {why}.")))
            }
            Err(e @ ClearError::Ledger(_)) => {
                render::ephemeral(&esc(&format!(":warning: {}", crate::error::chain(&e))))
            }
        };
        self.respond(&to, &reply).await;
    }

    /// Approve or reject button, as `user`.
    async fn click(&self, user: &str, approval_id: &str, answer: Answer, to: Responder) {
        let action = if answer == Answer::Approve { ChatAction::Approve } else { ChatAction::Reject };
        let view = self
            .agent
            .list()
            .into_iter()
            .find(|v| v.pending_approval.as_ref().is_some_and(|a| a.request.id == approval_id));
        let remembered = self.requests.lock().unwrap_or_else(PoisonError::into_inner).get(approval_id).cloned();
        let release_id = match (&view, remembered) {
            (Some(v), _) => v.release_id.clone(),
            (None, Some((_, id))) => id,
            (None, None) => "slack".to_string(),
        };
        let Some(who) = self.principal(user, action, &release_id, &to).await else { return };
        let actor = slack_actor(&who.identity);
        let identity = who.identity.clone();
        let reason = format!("clicked {} in Slack", if answer == Answer::Approve { "Approve" } else { "Reject" });
        let text = match self.agent.answer(approval_id, (actor.clone(), who), answer, reason).await {
            Ok(reply) => match &view {
                Some(v) => self.ruled(
                    &v.name,
                    v,
                    user,
                    if answer == Answer::Approve { "approved" } else { "rejected" },
                    &reply,
                ),
                None => crate::policy::approval::ruling_label(&reply.ruling).to_string(),
            },
            Err(e) => {
                let reason = crate::error::chain(&e);
                if matches!(e, AnswerError::Closed { .. } | AnswerError::NotFound(_)) {
                    self.record(
                        &release_id,
                        &actor,
                        ChatOpsRecord::Refused { identity, action, reason: reason.clone() },
                    )
                    .await;
                }
                format!(":no_entry: {reason}")
            }
        };
        self.respond(&to, &render::ephemeral(&super::wire::escape(&text))).await;
    }

    /// Tell the person what policy ruled; remember who decided for the message.
    fn ruled(&self, name: &str, view: &ReleaseView, user: &str, what: &str, reply: &AnswerReply) -> String {
        match &reply.ruling {
            Ruling::Refused { why: Refusal::NotAnApprover { .. }, .. } => {
                format!(":no_entry: You are not an approver for {}.", view.service)
            }
            Ruling::Refused { reason, .. } => format!(":no_entry: Refused: {reason}"),
            Ruling::Stale { reason } => {
                self.note(name, user, what, &format!("not executed: {reason}"));
                format!("Not executed: {reason}")
            }
            Ruling::Closed { closure } => format!("Not executed: the request is {}", closure.describe()),
            Ruling::Rejected => {
                self.note(name, user, what, "release held, nothing ran");
                "Rejected: the release is held and nothing runs.".into()
            }
            Ruling::Execute { decision } => {
                let result = match &reply.status {
                    Some(s @ (ReleaseStatus::RolledBack | ReleaseStatus::Promoted)) => {
                        format!("{}, verified", s.label().replace('_', " "))
                    }
                    Some(s) => s.label().replace('_', " "),
                    None => format!("{} started", decision.label()),
                };
                self.note(name, user, what, &result);
                format!(":white_check_mark: {}: {result}", what)
            }
        }
    }

    fn note(&self, release: &str, user: &str, what: &str, result: &str) {
        let d = Decided { user: user.into(), what: what.into(), result: result.into() };
        self.decided.lock().unwrap_or_else(PoisonError::into_inner).insert(release.into(), d);
        self.changed.notify_one();
    }
}

/// The ledger writer for a Slack user.
pub fn slack_actor(identity: &str) -> Actor {
    Actor::Human { channel: "slack".into(), identity: identity.into() }
}
