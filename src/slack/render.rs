//! What backstop says in Slack, as pure functions of the agent's view of a
//! release: the release's one message (updated in place), its thread
//! details, and answers to commands. Everything from the watched system or
//! typed by a person is escaped; every text is cut to Block Kit's limits,
//! with a link to the agent's release page for the rest.

use super::wire::{Block, Button, Confirm, MAX_BLOCKS, Reply, ResponseType, Text, code, cut, escape};
use crate::assessor::Consultation;
use crate::judge::{Finding, MetricStatus};
use crate::policy::Proposal;
use crate::run::agent::{ReleaseState, ReleaseView};
use crate::run::fleet::{FleetNow, FleetPhase};

/// Who answered a request from Slack, and what came of it (shown on the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Slack user id.
    pub user: String,
    /// `approved`, `rejected`, `rolled back by request`, …
    pub what: String,
    /// What happened then (`rolled_back (verified)`, `not executed: …`).
    pub result: String,
}

/// The release page, when the agent's URL is known.
pub fn link(agent_url: Option<&str>, release: &str) -> Option<String> {
    agent_url.map(|u| format!("{}/releases/{}", u.trim_end_matches('/'), crate::field::url_segment(release)))
}

fn state_icon(v: &ReleaseView) -> &'static str {
    match (v.state, v.status.as_ref().map(|s| s.label())) {
        (ReleaseState::AwaitingApproval, _) => ":raising_hand:",
        (ReleaseState::Held, _) => ":double_vertical_bar:",
        (ReleaseState::Failed, _) => ":x:",
        (ReleaseState::Finished, Some("promoted")) => ":white_check_mark:",
        (ReleaseState::Finished, Some("rolled_back")) => ":rewind:",
        (ReleaseState::Finished, _) => ":stop_sign:",
        _ if !v.failing.is_empty() => ":warning:",
        _ => ":hourglass_flowing_sand:",
    }
}

/// One line saying where the release stands.
pub fn headline(v: &ReleaseView) -> String {
    let stands = match (&v.status, v.state) {
        (Some(s), ReleaseState::Finished) => s.label().replace('_', " "),
        (_, s) => s.label().replace('_', " "),
    };
    format!("{} {}: {}", state_icon(v), v.name, stands)
}

fn facts(v: &ReleaseView) -> String {
    let decision = v.decision.as_ref().map_or("not judged yet", |d| d.label());
    format!(
        "*{}* · service `{}` · target `{}` · revision `{}`\nt = {} s of {} s · policy: *{}*",
        escape(&v.name),
        code(&v.service),
        code(&v.target),
        code(&v.candidate_revision),
        v.now_s,
        v.duration_s,
        decision
    )
}

fn finding_line(f: &Finding) -> String {
    format!("• `{}` {}: {}", code(&f.metric), f.status, escape(&f.explanation))
}

fn proposal_text(p: &Proposal) -> String {
    match p {
        Proposal::Promote => "promote the canary".into(),
        Proposal::Rollback { plan } => format!(
            "roll `{}` back from `{}` to `{}`",
            code(&plan.target),
            code(&plan.from_revision),
            code(&plan.to_revision)
        ),
    }
}

/// Slack mentions of the people policy names (`slack:U…` → `<@U…>`,
/// `slack-group:S…` → `<!subteam^S…>`), so a request pages them; other
/// identities are not Slack users and are left out. Policy checked the ids'
/// shape when it loaded.
pub fn mentions(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| {
            if let Some(user) = n.strip_prefix("slack:") {
                Some(format!("<@{}>", escape(user)))
            } else {
                n.strip_prefix("slack-group:").map(|g| format!("<!subteam^{}>", escape(g)))
            }
        })
        .collect()
}

/// The executor's exact steps, numbered (what an approval runs).
fn steps_text(steps: &[String]) -> String {
    steps.iter().enumerate().map(|(i, s)| format!("{}. {}", i + 1, escape(s))).collect::<Vec<_>>().join("\n")
}

fn approval_blocks(v: &ReleaseView, approvers: &[String], shared: Option<&str>) -> Vec<Block> {
    let Some(a) = &v.pending_approval else { return vec![] };
    let id = &a.request.id;
    let what = proposal_text(&a.request.proposed);
    let expires = a.request.expires_at_ms / 1000;
    let mut ask = format!(
        ":raising_hand: *Approval needed* to {what}.\n{}\nRequest `{}` expires <!date^{expires}^{{date_short_pretty}} {{time}}|at {expires} (unix)>.",
        escape(&a.reason),
        code(id)
    );
    if !a.steps.is_empty() {
        ask.push_str(&format!("\n*Approving runs:*\n{}", steps_text(&a.steps)));
    }
    if let Some(url) = shared {
        ask.push_str(&format!(
            "\n<{url}|Review the evidence and the plan> (opens without a login until the request expires)"
        ));
    }
    let paged = mentions(approvers);
    if !paged.is_empty() {
        ask.push_str(&format!("\nApprovers: {}", paged.join(" ")));
    }
    let button = |label: &str, action: &str, style: &'static str, question: String| Button {
        kind: "button",
        text: Text::plain(label),
        action_id: action.into(),
        value: cut(id, super::wire::MAX_BUTTON_VALUE),
        style: Some(style),
        confirm: Some(Confirm {
            title: Text::plain(format!("{label}?")),
            text: Text::md(cut(&question, 300)),
            confirm: Text::plain(label),
            deny: Text::plain("Cancel"),
        }),
    };
    let yes = format!("Policy judges the release again at your click and runs only what it still proposes: {what}.");
    let no = "The release is held; nothing runs.".to_string();
    vec![
        Block::section(&ask),
        Block::Actions {
            block_id: format!("approval:{}", cut(id, 200)),
            elements: vec![button("Approve", "approve", "primary", yes), button("Reject", "reject", "danger", no)],
        },
    ]
}

/// What a release message points people to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Links<'a> {
    /// The agent as people reach it (`slack.agent_url`): the release page.
    pub agent_url: Option<&'a str>,
    /// A signed, expiring link to the release page for its open request.
    pub shared: Option<&'a str>,
}

/// The release's one message, as it should look now; `approvers`: who
/// policy lets answer its request (mentioned, so they are paged).
pub fn release_message(v: &ReleaseView, decided: Option<&Decided>, links: Links<'_>, approvers: &[String]) -> Reply {
    let agent_url = links.agent_url;
    let mut blocks = vec![Block::Header { text: Text::plain(cut(&headline(v), 150)) }, Block::section(&facts(v))];
    let failing: Vec<String> = v
        .judge
        .iter()
        .flat_map(|j| j.findings.iter().filter(|f| f.status == MetricStatus::Failing))
        .map(finding_line)
        .collect();
    if !failing.is_empty() {
        blocks.push(Block::section(&failing.join("\n")));
    }
    blocks.extend(approval_blocks(v, approvers, links.shared));
    if let Some(d) = decided {
        let line = format!("*{}* by <@{}>: {}", escape(&d.what), escape(&d.user), escape(&d.result));
        blocks.push(Block::section(&line));
    }
    if let (Some(status), ReleaseState::Finished) = (&v.status, v.state) {
        blocks.push(Block::section(&format!("Ended: *{}*", status.label().replace('_', " "))));
        if *status == crate::release::ReleaseStatus::RolledBack {
            blocks.push(Block::section(&quarantined(&v.service, &v.candidate_revision)));
            blocks.extend(super::quarantine::button(&v.service, &v.candidate_revision));
        }
    }
    if let Some(e) = &v.error {
        blocks.push(Block::section(&format!(":x: {}", escape(e))));
    }
    blocks.push(context(v, agent_url));
    finish(headline(v), blocks, None, agent_url.and(link(agent_url, &v.name)))
}

/// One item of cited evidence: its id, and its text (from the watched
/// system, so hostile) as a code block it cannot end.
fn cited_line(e: &crate::assessor::evidence::EvidenceItem) -> String {
    format!("• `{}` ```{}```", code(&e.id), code(&cut(&e.text, 500)))
}

/// A rollback quarantines the candidate for its service (release memory):
/// said where the on-call team looks, with the command that lifts it (and
/// a button under it that opens the same clearing as a form). A
/// revision is any printable text without spaces (`field::revision`), so
/// both names go through [`code`]: nothing in them mentions, links, formats
/// or ends a code span (a backtick shows as `'`; the button's form carries
/// the revision exactly).
fn quarantined(service: &str, revision: &str) -> String {
    let (service, revision) = (code(service), code(revision));
    format!(
        ":lock: `{revision}` is quarantined for {service}: a new release of it is not promoted without an approver. \
         An approver lifts it with `/backstop clear {service} {revision} &lt;reason&gt;`."
    )
}

/// A fleet release's one message: where it stands and every member wave by
/// wave; each member's own message (with its buttons) is in its thread.
pub fn fleet_message(f: &FleetNow, agent_url: Option<&str>) -> Reply {
    let s = f.summary();
    let icon = match f.phase {
        FleetPhase::Promoted => ":white_check_mark:",
        FleetPhase::Stopped | FleetPhase::Reverting => ":rewind:",
        FleetPhase::Interrupted => ":stop_sign:",
        FleetPhase::Running | FleetPhase::Baking => ":hourglass_flowing_sand:",
    };
    let at = s.wave.map(|w| format!(" at wave {w}")).unwrap_or_default();
    let headline = format!("{icon} fleet {}: {}{at}", s.name, f.phase.label());
    let mut blocks = vec![
        Block::Header { text: Text::plain(cut(&headline, 150)) },
        Block::section(&format!(
            "*{}* · service `{}` · revision `{}` · {} members in {} waves",
            escape(&s.name),
            code(&f.service),
            code(&f.revision),
            s.members.len(),
            s.members.iter().map(|m| m.wave).max().unwrap_or(0)
        )),
    ];
    if let Some(why) = &s.why {
        blocks.push(Block::section(&format!("Stopped: {}", escape(why))));
    }
    let mut waves: Vec<(usize, Vec<String>)> = vec![];
    for (m, view) in s.members.iter().zip(&f.outcome.members) {
        let revert = match view.revert {
            crate::orchestrator::fleet::MemberState::NotStarted => String::new(),
            _ => format!(" · revert *{}*", m.revert.replace('_', " ")),
        };
        let line = format!("• `{}` on `{}`: *{}*{revert}", code(&m.name), code(&m.target), m.status.replace('_', " "));
        match waves.last_mut() {
            Some((w, lines)) if *w == m.wave => lines.push(line),
            _ => waves.push((m.wave, vec![line])),
        }
    }
    for (w, lines) in waves {
        blocks.push(Block::section(&format!("*Wave {w}*\n{}", lines.join("\n"))));
    }
    blocks.push(Block::context("Each member's own message, with its buttons, is in this thread."));
    finish(headline, blocks, None, agent_url.map(|u| u.trim_end_matches('/').to_string()))
}

fn context(v: &ReleaseView, agent_url: Option<&str>) -> Block {
    let mut line = format!("ledger seq {} · release `{}`", v.ledger_seq, code(&v.release_id));
    if let Some(url) = link(agent_url, &v.name) {
        line.push_str(&format!(" · <{url}|report and charts>"));
    }
    Block::context(&line)
}

/// Blocks cut to Slack's limit, the last one saying where the rest is.
fn finish(text: String, mut blocks: Vec<Block>, response_type: Option<ResponseType>, more: Option<String>) -> Reply {
    if blocks.len() > MAX_BLOCKS {
        blocks.truncate(MAX_BLOCKS - 1);
        let rest = more
            .map_or("(cut: too long for one Slack message)".into(), |u| format!("(cut: the rest in <{u}|the report>)"));
        blocks.push(Block::context(&rest));
    }
    Reply { text: cut(&text, 3000), blocks, response_type }
}

fn model_lines(c: &Consultation) -> Vec<String> {
    let mut out = vec![];
    match (&c.verdict, &c.rejection, &c.error) {
        (_, _, Some(e)) => out.push(format!("*Model* `{}`: no verdict ({})", code(&c.model), escape(e))),
        (Some(v), Some(r), _) => out.push(format!(
            "*Model* `{}` answered {}/{} but it was *rejected*: {}",
            code(&c.model),
            v.health,
            v.action,
            escape(&r.to_string())
        )),
        (Some(v), None, _) => {
            out.push(format!(
                "*Model* `{}`: {}, recommends {} (confidence {:.2})",
                code(&c.model),
                v.health,
                v.action,
                v.confidence
            ));
            for f in &v.findings {
                out.push(format!("• {}: {} (cites {})", f.claim, escape(&f.summary), escape(&f.evidence.join(", "))));
            }
        }
        (None, _, None) => out.push(format!("*Model* `{}`: no verdict", code(&c.model))),
    }
    if !c.cited.is_empty() {
        out.push("*Evidence it cited* (text from the watched system, shown as data):".into());
        out.extend(c.cited.iter().map(cited_line));
    }
    out
}

/// `/backstop why <release>` or `@backstop why?`: findings, the model's
/// verdict with the evidence it cited, and where the chart is.
pub fn why(v: &ReleaseView, agent_url: Option<&str>, response_type: ResponseType) -> Reply {
    let mut blocks = vec![Block::section(&format!("{}\n{}", headline(v), facts(v)))];
    match &v.judge {
        None => blocks.push(Block::section("Not judged yet.")),
        Some(j) => {
            blocks.push(Block::section(&format!("*Judge*: {} — {}", j.verdict, escape(&j.summary))));
            for chunk in j.findings.chunks(8) {
                blocks.push(Block::section(&chunk.iter().map(finding_line).collect::<Vec<_>>().join("\n")));
            }
        }
    }
    if let Some(c) = &v.consultation {
        for chunk in model_lines(c).chunks(6) {
            blocks.push(Block::section(&chunk.join("\n")));
        }
    }
    blocks.push(context(v, agent_url));
    finish(format!("why: {}", headline(v)), blocks, Some(response_type), link(agent_url, &v.name))
}

/// `/backstop status`: one line per release.
pub fn status(views: &[ReleaseView], agent_url: Option<&str>) -> Reply {
    if views.is_empty() {
        return ephemeral("No releases.");
    }
    let lines: Vec<String> = views
        .iter()
        .map(|v| {
            let l = headline(v);
            match link(agent_url, &v.name) {
                Some(u) => format!("{} · t = {}/{} s · <{u}|report>", escape(&l), v.now_s, v.duration_s),
                None => format!("{} · t = {}/{} s", escape(&l), v.now_s, v.duration_s),
            }
        })
        .collect();
    let blocks = lines.chunks(20).map(|c| Block::section(&c.join("\n"))).collect();
    finish(format!("{} releases", views.len()), blocks, Some(ResponseType::Ephemeral), None)
}

/// A short answer only the asker sees.
pub fn ephemeral(text: &str) -> Reply {
    Reply { text: cut(text, 3000), blocks: vec![Block::section(text)], response_type: Some(ResponseType::Ephemeral) }
}

/// The thread post when a request opens: the findings in full.
pub fn approval_detail(v: &ReleaseView, agent_url: Option<&str>) -> Reply {
    let mut r = why(v, agent_url, ResponseType::InChannel);
    r.response_type = None;
    r
}

/// A post in a release's thread.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadItem {
    /// A message.
    Text(Reply),
    /// A chart as PNG.
    Chart {
        /// File name.
        name: String,
        /// What it shows (the PNG has no text).
        title: String,
        /// PNG bytes.
        png: Vec<u8>,
    },
}

/// Charts of the failing metrics (at most three), as PNG.
pub fn charts(v: &ReleaseView) -> Vec<ThreadItem> {
    let (Some(obs), Some(judge)) = (v.observation.as_ref(), v.judge.as_ref()) else { return vec![] };
    let failing = judge.failing().take(3);
    failing
        .filter_map(|f| {
            let m = obs.metrics.iter().find(|m| m.spec.name == f.metric)?;
            let png = crate::report::chart::metric_png(m, obs.step_s, obs.duration_s, (v.now_s, f.window_s))?;
            Some(ThreadItem::Chart {
                name: format!("{}-{}-t{}.png", v.name, f.metric, v.now_s),
                title: format!(
                    "{} {}: baseline blue, canary orange, judged window shaded, decision red",
                    v.name, f.metric
                ),
                png,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_keeps_names_safe_in_links() {
        assert_eq!(crate::field::url_segment("check out|<x>"), "check%20out%7C%3Cx%3E");
        assert_eq!(link(Some("http://a:1/"), "c"), Some("http://a:1/releases/c".into()));
    }

    #[test]
    fn too_many_blocks_are_cut_with_a_pointer_to_the_report() {
        let blocks = (0..80).map(|i| Block::section(&format!("{i}"))).collect();
        let r = finish("t".into(), blocks, None, Some("http://x/releases/c".into()));
        assert_eq!(r.blocks.len(), MAX_BLOCKS);
        assert!(
            matches!(r.blocks.last(), Some(Block::Context { elements }) if matches!(&elements[0], Text::Mrkdwn { text } if text.contains("http://x/releases/c")))
        );
    }

    /// A revision passes the door with any printable text but spaces, so the
    /// quarantine line escapes it: no mention, link or markup reaches Slack.
    #[test]
    fn a_hostile_revision_in_the_quarantine_line_mentions_and_links_nothing() {
        let revision = "v1`<!channel>`&<https://evil.example|click>";
        assert!(crate::field::revision("candidate_revision", revision).is_ok(), "the door lets it in");
        let line = quarantined("<@U0ADMIN>", revision);
        assert!(!line.contains('<') && !line.contains('>'), "{line}");
        assert!(
            line.contains("&lt;!channel&gt;") && line.contains("&amp;&lt;https://evil.example|click&gt;"),
            "{line}"
        );
        assert!(line.contains("for &lt;@U0ADMIN&gt;"), "{line}");
        // Two code spans, four backticks: the revision's own end no span.
        assert_eq!(line.matches('`').count(), 4, "{line}");
        assert!(line.contains("`v1'&lt;!channel&gt;'&amp;"), "{line}");
    }

    /// A log line the model cites is the watched system's text: a triple
    /// backtick in it must not close the block and format what follows.
    #[test]
    fn cited_text_cannot_end_its_code_block() {
        let e = crate::assessor::evidence::EvidenceItem {
            id: "log:`7".into(),
            fact: crate::assessor::evidence::Fact::CanaryOnly,
            untrusted: true,
            text: "ERROR ``` *approve now* <!here> ```".into(),
        };
        let line = cited_line(&e);
        assert_eq!(line.matches('`').count(), 8, "one span and one block: {line}");
        assert!(line.contains("```ERROR ''' *approve now* &lt;!here&gt; '''```"), "{line}");
    }
}
