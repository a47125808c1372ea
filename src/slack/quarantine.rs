//! The clearing form: the quarantine line's "Clear quarantine…" button, the
//! modal it opens, and what a submission of it asks. Pure: the button's
//! value and the modal's metadata carry the names, the submission is read
//! back into the same [`Command::Clear`] that `/backstop clear` parses, so
//! both ways in meet the same bounds, policy rule and record.

use serde::{Deserialize, Serialize};

use super::command::{self, Command, UsageError};
use super::wire::{
    Block, Button, MAX_BUTTON_VALUE, MAX_PRIVATE_METADATA, Modal, SubmittedView, Text, TextInput, cut, escape,
};

/// The button's `action_id` and the modal's `callback_id`.
pub const CLEAR: &str = "clear_quarantine";
/// The reason field's block and action id.
const REASON: &str = "reason";
/// The longest reason the form takes (Slack's `plain_text_input` allows 3000).
const MAX_REASON: usize = 3000;

/// Which quarantine a button or form is about (the button's value, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The service.
    pub service: String,
    /// The quarantined revision.
    pub revision: String,
}

/// The modal's `private_metadata`: the target, and the channel the button
/// was in, where the outcome is said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    /// What is cleared.
    pub target: Target,
    /// Channel id.
    pub channel: String,
}

/// The button under a quarantine line; `None` when the names do not fit a
/// button's value (the line still gives the command).
pub fn button(service: &str, revision: &str) -> Option<Block> {
    let target = Target { service: service.into(), revision: revision.into() };
    let value = serde_json::to_string(&target).ok().filter(|v| v.chars().count() <= MAX_BUTTON_VALUE)?;
    let element = Button {
        kind: "button",
        text: Text::plain("Clear quarantine…"),
        action_id: CLEAR.into(),
        value,
        style: None,
        // The click only opens the form; the submission is what acts.
        confirm: None,
    };
    Some(Block::Actions { block_id: CLEAR.into(), elements: vec![element] })
}

/// The target a clicked button names, if its value is one backstop made.
pub fn clicked(value: &str) -> Option<Target> {
    serde_json::from_str(value).ok()
}

/// The form for `target`, opened from a message in `channel`; `None` when
/// the names do not fit the modal's metadata.
pub fn modal(target: &Target, channel: &str) -> Option<Modal> {
    let opened = Opened { target: target.clone(), channel: channel.into() };
    let private_metadata = serde_json::to_string(&opened).ok().filter(|m| m.chars().count() <= MAX_PRIVATE_METADATA)?;
    let about = format!(
        "Lift the quarantine of `{}` for *{}*: a new release of it may then be promoted without an approver. \
         Policy decides whether you may; the reason is recorded in the ledger and shown in the channel.",
        super::wire::code(&target.revision),
        escape(&target.service)
    );
    Some(Modal {
        kind: "modal",
        callback_id: CLEAR.into(),
        title: Text::plain("Clear quarantine"),
        submit: Text::plain("Clear"),
        close: Text::plain("Cancel"),
        private_metadata,
        blocks: vec![
            Block::section(&cut(&about, 3000)),
            Block::Input {
                block_id: REASON.into(),
                label: Text::plain("Why is it safe again?"),
                element: TextInput {
                    kind: "plain_text_input",
                    action_id: REASON.into(),
                    multiline: true,
                    max_length: MAX_REASON,
                },
            },
        ],
    })
}

/// A submitted form's metadata is not what [`modal`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the form's metadata is not one backstop wrote")]
pub struct NotOurs;

/// Which quarantine a submitted form is about, and where it was opened.
pub fn opened(view: &SubmittedView) -> Result<Opened, NotOurs> {
    serde_json::from_str(&view.private_metadata).map_err(|_| NotOurs)
}

/// The clearing a submitted form asks: the same bounds as the command's.
pub fn asked(opened: &Opened, view: &SubmittedView) -> Result<Command, UsageError> {
    let reason = view.input(REASON, REASON).unwrap_or_default();
    command::clearing(opened.target.service.clone(), &opened.target.revision, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::wire::{InputValue, ViewState};

    /// Why a submission is not a clearing: the two refusals the app tells apart.
    #[derive(Debug, PartialEq, Eq)]
    enum Refused {
        NotOurs(NotOurs),
        Usage(UsageError),
    }

    fn submitted(view: &SubmittedView) -> Result<(Command, String), Refused> {
        let o = opened(view).map_err(Refused::NotOurs)?;
        Ok((asked(&o, view).map_err(Refused::Usage)?, o.channel))
    }

    fn submission(metadata: &str, reason: Option<&str>) -> SubmittedView {
        let mut state = ViewState::default();
        state
            .values
            .entry(REASON.into())
            .or_default()
            .insert(REASON.into(), InputValue { value: reason.map(str::to_string) });
        SubmittedView { id: "V1".into(), callback_id: CLEAR.into(), private_metadata: metadata.into(), state }
    }

    #[test]
    fn the_button_and_the_form_carry_the_names_to_the_same_clearing_the_command_makes() {
        let hostile = Target { service: "orders".into(), revision: "v2`<!channel>\"]}".into() };
        let Some(Block::Actions { elements, .. }) = button(&hostile.service, &hostile.revision) else {
            panic!("no button")
        };
        assert!(elements[0].confirm.is_none(), "the click opens a form; it does not act");
        let target = clicked(&elements[0].value).unwrap();
        assert_eq!(target, hostile);
        let m = modal(&target, "C1").unwrap();
        let shown = serde_json::to_string(&m.blocks).unwrap();
        assert!(!shown.contains("<!channel>"), "names are escaped in the form: {shown}");
        let (c, channel) = submitted(&submission(&m.private_metadata, Some("  cache fixed  "))).unwrap();
        assert_eq!(channel, "C1");
        assert_eq!(
            c,
            Command::Clear {
                service: hostile.service.clone(),
                revision: hostile.revision,
                reason: "cache fixed".into()
            }
        );
        let simple = modal(&Target { service: "orders".into(), revision: "v2".into() }, "C1").unwrap();
        let (c, _) = submitted(&submission(&simple.private_metadata, Some("cache fixed"))).unwrap();
        assert_eq!(Ok(c), command::parse("clear orders v2 cache fixed"));
    }

    #[test]
    fn a_blank_reason_forged_metadata_or_names_too_long_are_refused_before_policy() {
        let ok = modal(&Target { service: "orders".into(), revision: "v2".into() }, "C1").unwrap().private_metadata;
        let usage = Err(Refused::Usage(UsageError::ClearUsage));
        assert_eq!(submitted(&submission(&ok, Some("   "))), usage);
        assert_eq!(submitted(&submission(&ok, None)), usage);
        assert_eq!(submitted(&submission("{\"service\":1}", Some("x"))), Err(Refused::NotOurs(NotOurs)));
        let long = Opened { target: Target { service: "s".repeat(300), revision: "v".into() }, channel: "C".into() };
        let forged = serde_json::to_string(&long).unwrap();
        assert_eq!(submitted(&submission(&forged, Some("x"))), usage);
        assert!(button("s", &"v".repeat(MAX_BUTTON_VALUE)).is_none(), "a value past Slack's limit is not sent");
        assert!(clicked("approve-123").is_none());
    }
}
