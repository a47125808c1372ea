//! Slack's wire formats, typed: what arrives (slash commands, button clicks,
//! events, Socket Mode envelopes) and what is sent (Block Kit messages).
//! Inbound types name only the fields backstop uses and ignore the rest, so
//! every field Slack has been seen to send parses (tested against the
//! union-of-fields samples in `fixtures/slack/`).

use serde::{Deserialize, Serialize};

/// A slash command (sent form-encoded over HTTP, as JSON inside a Socket Mode envelope).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SlashCommand {
    /// Workspace.
    #[serde(default)]
    pub team_id: String,
    /// Where it was typed.
    pub channel_id: String,
    /// Who typed it (an id; names are never trusted).
    pub user_id: String,
    /// `/backstop`.
    pub command: String,
    /// What followed the command (untrusted).
    #[serde(default)]
    pub text: String,
    /// Where to answer (ephemeral or in channel) for 30 minutes.
    #[serde(default)]
    pub response_url: String,
    /// Unique per invocation; the de-duplication key over HTTP.
    #[serde(default)]
    pub trigger_id: String,
}

/// The user who acted (`user.id`; the name fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserRef {
    /// `U…` or `W…`.
    pub id: String,
}

/// Where a clicked message lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Container {
    /// Message ts.
    #[serde(default)]
    pub message_ts: String,
    /// Channel.
    #[serde(default)]
    pub channel_id: String,
}

/// One clicked element.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Action {
    /// Which button (`approve` / `reject`).
    pub action_id: String,
    /// The button's value: the approval request id.
    #[serde(default)]
    pub value: String,
    /// When clicked; with the user, the de-duplication key for a click.
    #[serde(default)]
    pub action_ts: String,
}

/// An interactivity payload (`payload` form field / Socket Mode `interactive`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Interaction {
    /// Buttons.
    BlockActions {
        /// Who clicked.
        user: UserRef,
        /// Channel and message.
        #[serde(default)]
        container: Container,
        /// What was clicked.
        #[serde(default)]
        actions: Vec<Action>,
        /// Where to answer.
        #[serde(default)]
        response_url: String,
        /// Opens a modal within 3 s of the click (`views.open`).
        #[serde(default)]
        trigger_id: String,
    },
    /// A modal was submitted (the clearing form is backstop's only one).
    ViewSubmission {
        /// Who submitted it.
        user: UserRef,
        /// The modal as submitted.
        #[serde(default)]
        view: SubmittedView,
    },
    /// Anything else Slack sends (shortcuts, closed views): acknowledged, ignored.
    #[serde(other)]
    Other,
}

/// A submitted modal: which form, what backstop put in it, what was typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SubmittedView {
    /// Unique per modal; one submission per view is acted on.
    #[serde(default)]
    pub id: String,
    /// Which form (`clear_quarantine`).
    #[serde(default)]
    pub callback_id: String,
    /// What backstop stored when it opened the modal (untrusted as any input is).
    #[serde(default)]
    pub private_metadata: String,
    /// The inputs' values.
    #[serde(default)]
    pub state: ViewState,
}

/// `view.state`: block id → action id → the input's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ViewState {
    /// Input values.
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, std::collections::BTreeMap<String, InputValue>>,
}

/// One input's value (a `plain_text_input`'s text; absent when left empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InputValue {
    /// What was typed (untrusted).
    #[serde(default)]
    pub value: Option<String>,
}

impl SubmittedView {
    /// The text typed into input `block`'s element `action`.
    pub fn input(&self, block: &str, action: &str) -> Option<&str> {
        self.state.values.get(block)?.get(action)?.value.as_deref()
    }
}

/// An Events API event backstop handles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// `@backstop …` in a channel or thread.
    AppMention {
        /// Who (absent for bot messages, which are ignored).
        #[serde(default)]
        user: String,
        /// What they wrote (untrusted).
        #[serde(default)]
        text: String,
        /// Channel.
        #[serde(default)]
        channel: String,
        /// Message ts.
        #[serde(default)]
        ts: String,
        /// The thread it was written in, if any.
        #[serde(default)]
        thread_ts: Option<String>,
    },
    /// Any other event: ignored.
    #[serde(other)]
    Other,
}

/// An Events API body (HTTP) or `events_api` envelope payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// Slack checking the request URL; answer with the challenge.
    UrlVerification {
        /// Echoed back.
        challenge: String,
    },
    /// An event.
    EventCallback {
        /// Unique per event; retried deliveries repeat it.
        event_id: String,
        /// The event.
        event: Event,
    },
    /// Anything else (app_rate_limited, …): acknowledged, ignored.
    #[serde(other)]
    Other,
}

/// A Socket Mode frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// Connected.
    Hello {},
    /// Slack will close this connection; open a new one.
    Disconnect {
        /// `warning`, `refresh_requested`, `too_many_websockets`, …
        #[serde(default)]
        reason: String,
    },
    /// An Events API event.
    EventsApi(Envelope<EventBody>),
    /// A button click or view submission.
    Interactive(Envelope<serde_json::Value>),
    /// A slash command.
    SlashCommands(Envelope<SlashCommand>),
    /// A frame type this version does not know: acknowledged if it has an id.
    #[serde(other)]
    Other,
}

/// A Socket Mode envelope around one delivery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope<P> {
    /// Acknowledge with this id.
    pub envelope_id: String,
    /// The delivery.
    pub payload: P,
    /// The acknowledgement may carry a response payload.
    #[serde(default)]
    pub accepts_response_payload: bool,
    /// 0 on first delivery; a retry repeats the envelope id.
    #[serde(default)]
    pub retry_attempt: u32,
}

/// The acknowledgement sent back for an envelope.
#[derive(Debug, Clone, Serialize)]
pub struct Ack {
    /// The envelope acknowledged.
    pub envelope_id: String,
    /// Shown to the user at once (slash commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Reply>,
}

/// A message as Slack renders it: fallback text plus blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reply {
    /// Fallback and notification text.
    pub text: String,
    /// Layout; at most [`MAX_BLOCKS`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
    /// `ephemeral` (only the asker sees it) or `in_channel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_type: Option<ResponseType>,
}

/// Who sees a command's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseType {
    /// Only the person who typed it.
    Ephemeral,
    /// Everyone in the channel.
    InChannel,
}

/// Block Kit's limits (Slack's reference, "Blocks" and "Block elements").
pub const MAX_BLOCKS: usize = 50;
/// Characters in one section's text.
pub const MAX_SECTION_TEXT: usize = 3000;
/// Characters in a button's value.
pub const MAX_BUTTON_VALUE: usize = 2000;
/// Elements in a context block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Characters in a modal's title.
pub const MAX_MODAL_TITLE: usize = 24;
/// Characters in a modal's `private_metadata`.
pub const MAX_PRIVATE_METADATA: usize = 3000;

/// The blocks backstop sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// A title.
    Header {
        /// Plain text, at most 150 characters.
        text: Text,
    },
    /// Text.
    Section {
        /// mrkdwn, at most [`MAX_SECTION_TEXT`] characters.
        text: Text,
    },
    /// Small print.
    Context {
        /// At most [`MAX_CONTEXT_ELEMENTS`].
        elements: Vec<Text>,
    },
    /// Buttons.
    Actions {
        /// Identifies the block in click payloads.
        block_id: String,
        /// The buttons.
        elements: Vec<Button>,
    },
    /// A rule.
    Divider {},
    /// A form field (modals only).
    Input {
        /// Names the value in the submission's `state.values`.
        block_id: String,
        /// Shown above the field (plain text, at most 2000 characters).
        label: Text,
        /// The field.
        element: TextInput,
    },
}

/// A `plain_text_input` element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextInput {
    /// Always `plain_text_input`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Names the value within its block.
    pub action_id: String,
    /// Several lines.
    pub multiline: bool,
    /// Characters at most (Slack allows up to 3000).
    pub max_length: usize,
}

/// A modal (`views.open`), at most [`MAX_BLOCKS`] blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Modal {
    /// Always `modal`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Which form, echoed in the submission.
    pub callback_id: String,
    /// Title (plain text, at most [`MAX_MODAL_TITLE`] characters).
    pub title: Text,
    /// The submit button's label.
    pub submit: Text,
    /// The close button's label.
    pub close: Text,
    /// Echoed in the submission (at most [`MAX_PRIVATE_METADATA`] characters).
    pub private_metadata: String,
    /// Content and inputs.
    pub blocks: Vec<Block>,
}

/// A text object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Text {
    /// Literal.
    PlainText {
        /// The text.
        text: String,
    },
    /// Slack's markdown.
    Mrkdwn {
        /// The text.
        text: String,
    },
}

/// A button, with a confirmation dialog where the click itself acts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Button {
    /// Always `button`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Label.
    pub text: Text,
    /// `approve` / `reject`.
    pub action_id: String,
    /// The approval request id (at most [`MAX_BUTTON_VALUE`]).
    pub value: String,
    /// `primary` / `danger`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<&'static str>,
    /// "Are you sure?" before the click counts (none for a button that only opens a form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirm>,
}

/// A confirmation dialog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confirm {
    /// Title (plain text).
    pub title: Text,
    /// What will happen (mrkdwn).
    pub text: Text,
    /// Yes.
    pub confirm: Text,
    /// No.
    pub deny: Text,
}

/// `s` cut to at most `max` characters on a character boundary, marked with `…`.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Text as Slack mrkdwn shows it literally: `&`, `<` and `>` escaped, so
/// untrusted text cannot mention `@channel`, link, or break formatting.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text for inside a mrkdwn code span or block: [`escape`]d, and each
/// backtick shown as `'`. Slack's mrkdwn has no escape for a backtick, so one
/// in a revision or in text from the watched system would end the span and
/// let the rest format (`*bold*`, `_italic_`); the report does the same
/// (`report::text::code`).
pub fn code(s: &str) -> String {
    escape(s).replace('`', "'")
}

impl Text {
    /// mrkdwn text.
    pub fn md(s: impl Into<String>) -> Self {
        Text::Mrkdwn { text: s.into() }
    }

    /// Plain text.
    pub fn plain(s: impl Into<String>) -> Self {
        Text::PlainText { text: s.into() }
    }
}

impl Block {
    /// A section, cut to the section limit.
    pub fn section(md: &str) -> Self {
        Block::Section { text: Text::md(cut(md, MAX_SECTION_TEXT)) }
    }

    /// A context line.
    pub fn context(md: &str) -> Self {
        Block::Context { elements: vec![Text::md(cut(md, MAX_SECTION_TEXT))] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_text_cannot_end_its_span() {
        assert_eq!(code("v1`*b*`<!here>"), "v1'*b*'&lt;!here&gt;");
    }

    #[test]
    fn untrusted_text_cannot_mention_link_or_exceed_a_limit() {
        assert_eq!(
            escape("<!channel> <https://evil|click> & co"),
            "&lt;!channel&gt; &lt;https://evil|click&gt; &amp; co"
        );
        let long = "é".repeat(5000);
        let c = cut(&long, MAX_SECTION_TEXT);
        assert_eq!(c.chars().count(), MAX_SECTION_TEXT);
        assert!(c.ends_with('…'));
        assert_eq!(cut("short", 10), "short");
        match Block::section(&long) {
            Block::Section { text: Text::Mrkdwn { text } } => assert!(text.chars().count() <= MAX_SECTION_TEXT),
            other => panic!("{other:?}"),
        }
    }
}
