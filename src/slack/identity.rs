//! Who a Slack user is, as far as authorisation goes: active or not
//! (`users.info`; deleted, deactivated and bot users are refused) and which
//! of the policy's `slack-group:S…` groups they are in
//! (`usergroups.users.list`). Standing is asked on every action that changes
//! something (a deactivation counts at once; `users.info` allows 100+ calls a
//! minute); group members are cached for `cache_s`. A lookup that fails
//! denies (fail closed) and is not cached, so the next click asks again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::web::{WebApi, WebError};
use crate::policy::approval::Principal;

/// Why Slack could not vouch for a user, so they may not act at all.
#[derive(Debug, thiserror::Error)]
pub enum Unrecognised {
    /// `users.info` says deleted (deactivated accounts are deleted to the API).
    #[error("<@{0}> is deactivated in Slack")]
    Deleted(String),
    /// Bots do not approve (nor does an answer about another id).
    #[error("<@{0}> is a bot")]
    Bot(String),
    /// The lookup failed: nobody is authorised on an unknown standing.
    #[error("could not check <@{user}> with Slack, so the action is refused")]
    Lookup {
        /// User id.
        user: String,
        /// Why.
        #[source]
        source: WebError,
    },
}

/// Users and groups, cached.
pub struct Directory {
    web: WebApi,
    ttl: Duration,
    groups: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl Directory {
    /// A directory asking Slack through `web`, caching answers for `ttl`.
    pub fn new(web: WebApi, ttl: Duration) -> Self {
        Self { web, ttl, groups: Mutex::new(HashMap::new()) }
    }

    fn fresh(&self, group: &str) -> Option<Vec<String>> {
        let m = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        m.get(group).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    /// The user as policy sees them, or why they may not act at all.
    /// `wanted`: the `slack-group:S…` entries policy names.
    pub async fn principal(&self, user: &str, wanted: &[String]) -> Result<Principal, Unrecognised> {
        self.active(user).await?;
        let mut groups = vec![];
        for g in wanted {
            let Some(id) = g.strip_prefix("slack-group:") else { continue };
            match self.members(id).await {
                Ok(members) if members.iter().any(|m| m == user) => groups.push(g.clone()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group = %id, error = %crate::error::chain(&e), "Group lookup failed; its members are not authorised until it succeeds.")
                }
            }
        }
        Ok(Principal { identity: format!("slack:{user}"), groups })
    }

    async fn active(&self, user: &str) -> Result<(), Unrecognised> {
        let info = self.web.user(user).await.map_err(|source| Unrecognised::Lookup { user: user.into(), source })?;
        if info.deleted {
            return Err(Unrecognised::Deleted(user.into()));
        }
        if info.is_bot || info.id != user {
            return Err(Unrecognised::Bot(user.into()));
        }
        Ok(())
    }

    async fn members(&self, group: &str) -> Result<Vec<String>, WebError> {
        if let Some(m) = self.fresh(group) {
            return Ok(m);
        }
        let members = self.web.group_members(group).await?;
        let mut m = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        m.insert(group.into(), (Instant::now(), members.clone()));
        Ok(members)
    }
}
