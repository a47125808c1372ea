//! `/backstop …` and `@backstop …`, parsed. Pure: text in, a command or a
//! usage error out. Release names are checked against the agent later.

use thiserror::Error;

/// What a person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// What the commands are.
    Help,
    /// Every release, or one.
    Status {
        /// Release name.
        release: Option<String>,
    },
    /// Findings, the model's verdict and its evidence.
    Why {
        /// Release name; `None` from a mention in a release's thread.
        release: Option<String>,
    },
    /// Stop acting on a release (judging continues).
    Hold {
        /// Release name.
        release: String,
        /// Why (recorded).
        reason: String,
    },
    /// Act within policy again.
    Resume {
        /// Release name.
        release: String,
        /// Why (recorded).
        reason: String,
    },
    /// Roll back now, as a person's decision: approvers only, through policy.
    Rollback {
        /// Release name.
        release: String,
        /// Why (required, recorded).
        reason: String,
    },
    /// Lift a revision's quarantine (release memory): approvers only, through policy.
    Clear {
        /// The service.
        service: String,
        /// The quarantined revision.
        revision: String,
        /// Why it is safe again (required, recorded).
        reason: String,
    },
}

/// The text is not a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsageError {
    /// An unknown verb.
    #[error("unknown command `{0}`; try `/backstop help`")]
    Unknown(String),
    /// A verb that needs a release got none.
    #[error("`{0}` needs a release name: `/backstop {0} <release>`")]
    NoRelease(&'static str),
    /// A rollback without a reason.
    #[error("a rollback needs a reason: `/backstop rollback <release> <reason>`")]
    NoReason,
    /// A clearing short of its service, revision or reason (or with a name past 253 characters).
    #[error("`clear` needs a service, a revision and a reason: `/backstop clear <service> <revision> <reason>`")]
    ClearUsage,
}

impl Command {
    /// Whether it changes anything (and so needs an approver who is still active).
    pub fn changes(&self) -> bool {
        match self {
            Command::Help | Command::Status { .. } | Command::Why { .. } => false,
            Command::Hold { .. } | Command::Resume { .. } | Command::Rollback { .. } | Command::Clear { .. } => true,
        }
    }

    /// The release it names (a clearing names a revision, not a release).
    pub fn release(&self) -> Option<&str> {
        match self {
            Command::Help | Command::Clear { .. } => None,
            Command::Status { release } | Command::Why { release } => release.as_deref(),
            Command::Hold { release, .. } | Command::Resume { release, .. } | Command::Rollback { release, .. } => {
                Some(release)
            }
        }
    }
}

/// The help text.
pub const HELP: &str = "*backstop* commands:\n\
• `/backstop status [release]` — where releases stand\n\
• `/backstop why <release>` — findings, the model's verdict and the evidence it cited\n\
• `/backstop hold <release> [reason]` — keep judging, stop acting (approvers)\n\
• `/backstop resume <release> [reason]` — act within policy again (approvers)\n\
• `/backstop rollback <release> <reason>` — roll back now, through policy (approvers)\n\
• `/backstop clear <service> <revision> <reason>` — lift a rolled-back revision's quarantine (approvers)\n\
• `@backstop why?` in a release's thread answers there\n\
Approval requests come with Approve / Reject buttons; only approvers' clicks count.";

/// Parse a slash command's text.
pub fn parse(text: &str) -> Result<Command, UsageError> {
    let text = text.trim();
    let (verb, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let rest = rest.trim();
    let (release, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let release = (!release.is_empty()).then(|| release.to_string());
    let reason = reason.trim().to_string();
    let need = |verb: &'static str| release.clone().ok_or(UsageError::NoRelease(verb));
    match verb.to_ascii_lowercase().trim_end_matches('?') {
        "" | "help" => Ok(Command::Help),
        "status" => Ok(Command::Status { release }),
        "why" => Ok(Command::Why { release: Some(need("why")?) }),
        "hold" => Ok(Command::Hold { release: need("hold")?, reason }),
        "resume" => Ok(Command::Resume { release: need("resume")?, reason }),
        "rollback" => {
            let release = need("rollback")?;
            if reason.is_empty() {
                return Err(UsageError::NoReason);
            }
            Ok(Command::Rollback { release, reason })
        }
        "clear" => {
            let (revision, reason) = reason.split_once(char::is_whitespace).unwrap_or((reason.as_str(), ""));
            clearing(release.ok_or(UsageError::ClearUsage)?, revision, reason)
        }
        other => Err(UsageError::Unknown(super::wire::cut(other, 40))),
    }
}

/// The longest service or revision name a command takes (a Kubernetes name is at most 253).
const MAX_NAME: usize = 253;

/// A clearing of `service`'s `revision` for `reason`, from the command or
/// the form. The names go into a ledger id even when the clearing is
/// refused, so they are bounded; the reason must say something.
pub fn clearing(service: String, revision: &str, reason: &str) -> Result<Command, UsageError> {
    let reason = reason.trim();
    let name_ok = |n: &str| {
        !n.is_empty() && n.chars().count() <= MAX_NAME && !n.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    if name_ok(&service) && name_ok(revision) && !reason.is_empty() {
        Ok(Command::Clear { service, revision: revision.into(), reason: reason.into() })
    } else {
        Err(UsageError::ClearUsage)
    }
}

/// Parse a mention (`<@U0BOT> why?`): mentions removed, then as a command;
/// `why` alone asks about the thread's release.
pub fn parse_mention(text: &str) -> Result<Command, UsageError> {
    let plain: Vec<&str> = text.split_whitespace().filter(|w| !(w.starts_with("<@") && w.ends_with('>'))).collect();
    let plain = plain.join(" ");
    let lowered = plain.to_ascii_lowercase();
    let words: Vec<&str> = lowered.split_whitespace().collect();
    if words.first().is_some_and(|w| w.trim_end_matches('?') == "why") && words.len() == 1 {
        return Ok(Command::Why { release: None });
    }
    parse(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_usage_errors_say_what_is_missing() {
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("status"), Ok(Command::Status { release: None }));
        assert_eq!(parse(" status  checkout "), Ok(Command::Status { release: Some("checkout".into()) }));
        assert_eq!(parse("why checkout"), Ok(Command::Why { release: Some("checkout".into()) }));
        assert_eq!(parse("why"), Err(UsageError::NoRelease("why")));
        assert_eq!(
            parse("hold checkout  db migration running"),
            Ok(Command::Hold { release: "checkout".into(), reason: "db migration running".into() })
        );
        assert_eq!(parse("rollback checkout"), Err(UsageError::NoReason));
        assert_eq!(
            parse("ROLLBACK checkout p99 doubled"),
            Ok(Command::Rollback { release: "checkout".into(), reason: "p99 doubled".into() })
        );
        assert!(matches!(parse("deploy prod"), Err(UsageError::Unknown(v)) if v == "deploy"));
        assert_eq!(
            parse("clear checkout v42  the spike was the cache, fixed"),
            Ok(Command::Clear {
                service: "checkout".into(),
                revision: "v42".into(),
                reason: "the spike was the cache, fixed".into()
            })
        );
        let long = format!("clear checkout v{} fixed", "4".repeat(300));
        for short in
            ["clear", "clear checkout", "clear checkout v42", "clear checkout v42   ", &long, "clear a\u{7}b v1 x"]
        {
            assert_eq!(parse(short), Err(UsageError::ClearUsage), "{short}");
        }
        assert!(parse("clear checkout v42 fixed").unwrap().changes());
        assert_eq!(parse("clear checkout v42 fixed").unwrap().release(), None);
    }

    #[test]
    fn a_mention_asking_why_means_the_threads_release() {
        assert_eq!(parse_mention("<@U0BOT> why?"), Ok(Command::Why { release: None }));
        assert_eq!(parse_mention("<@U0BOT> why checkout"), Ok(Command::Why { release: Some("checkout".into()) }));
        assert_eq!(parse_mention("<@U0BOT> status"), Ok(Command::Status { release: None }));
    }

    #[test]
    fn any_text_parses_or_gives_a_usage_error_without_panicking() {
        for text in ["\u{0}", "why \u{202e}x", "   ", "rollback a \n b", &"x".repeat(100_000)] {
            let _ = parse(text);
            let _ = parse_mention(text);
        }
        assert!(matches!(parse(&"y".repeat(1000)), Err(UsageError::Unknown(v)) if v.chars().count() <= 40));
    }
}
