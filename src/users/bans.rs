//! Bans: a back end (or a client whose role is `admin`) bans a user app-wide (`POST
//! /moderation/ban`), for `timeout` minutes or until unbanned (`DELETE /moderation/ban`), in
//! the open (`banned`, `user.banned` to the user's connections) or in the shadow
//! (`shadow_banned`, told to no client). The ban lives on the banned user's record, and
//! `GET /query_banned_users` lists the bans that hold.

use serde_json::{json, Map, Value};

use crate::events::UserEvent;
use crate::model::ban_query::BannedQuery;
use crate::model::moderation::{after_minutes, Ban};
use crate::model::user::User;
use crate::protocol::{ApiError, ErrorCode, Timestamp};
use crate::store::{Expect, UserChange};
use crate::users::requests::{BanUser, UnbanUser};
use crate::users::service::{deleted, missing, store_error, updated, Caller, UsersService};

/// The role whose clients may ban, as Stream's default permissions allow.
const MODERATOR_ROLE: &str = "admin";

impl UsersService {
    /// Who bans: the server, or a client whose stored role is `admin` (17 otherwise).
    async fn banning_user(&self, caller: &Caller) -> Result<Option<String>, ApiError> {
        match caller {
            Caller::Server => Ok(None),
            Caller::User(me) => match self.load(me).await? {
                Some(s) if s.user.role == MODERATOR_ROLE && s.user.is_active() => {
                    Ok(Some(me.clone()))
                }
                _ => Err(ApiError::new(
                    ErrorCode::NotAllowed,
                    format!("User '{me}' is not allowed to perform action BanUser"),
                )),
            },
            Caller::Anonymous => Err(ApiError::new(
                ErrorCode::NotAllowed,
                "anonymous users are not allowed to perform this action",
            )),
        }
    }

    /// Writes the target with its ban replaced by `ban`; `None` when nothing changed.
    async fn write_ban(
        &self,
        target: &str,
        ban: Option<Ban>,
        only_if: impl Fn(Option<&Ban>) -> bool + Sync,
    ) -> Result<Option<(User, Option<Ban>)>, ApiError> {
        let (ban, only_if) = (&ban, &only_if);
        self.write_cycle(
            |svc| {
                Box::pin(async move {
                    let stored = svc.load(target).await?.ok_or_else(|| missing(target))?;
                    if stored.user.deleted_at.is_some() {
                        return Err(deleted(target));
                    }
                    if !only_if(stored.user.ban.as_ref()) {
                        return Ok((Vec::new(), None));
                    }
                    let mut user = stored.user;
                    let before = std::mem::replace(&mut user.ban, ban.clone());
                    let write = UserChange::Put {
                        user: user.clone(),
                        expect: Expect::Version(stored.version),
                        check_names: Vec::new(),
                        tombstone: false,
                    };
                    Ok((vec![write], Some((user, before))))
                })
            },
            |out| match out {
                None => Vec::new(),
                // A shadow ban changes nothing any client sees: only admin subscribers hear.
                Some((user, before)) => match (&user.ban, before) {
                    (Some(ban), _) => {
                        let mut events = Vec::new();
                        if !ban.shadow {
                            events.push(updated(user));
                        }
                        events.push(UserEvent::Banned {
                            user: user.clone(),
                            ban: ban.clone(),
                        });
                        events
                    }
                    (None, Some(was)) => {
                        let mut events = Vec::new();
                        if !was.shadow {
                            events.push(updated(user));
                        }
                        events.push(UserEvent::Unbanned {
                            user: user.clone(),
                            shadow: was.shadow,
                        });
                        events
                    }
                    (None, None) => Vec::new(),
                },
            },
        )
        .await
    }

    /// `POST /moderation/ban`: bans `target_user_id` (replacing an earlier ban of it).
    pub async fn ban_user(&self, caller: &Caller, req: &BanUser) -> Result<User, ApiError> {
        let by_caller = self.banning_user(caller).await?;
        let banned_by = req.banned_by_id.clone().or(by_caller);
        if banned_by.as_deref() == Some(req.target_user_id.as_str()) {
            return Err(ApiError::input("a user cannot ban themselves"));
        }
        if let Some(by) = &banned_by {
            match self.load(by).await? {
                Some(s) if s.user.deleted_at.is_none() => {}
                _ => return Err(missing(by)),
            }
        }
        let now = Timestamp::now();
        let ban = Ban {
            created_at: now,
            expires: req.timeout_minutes.map(|m| after_minutes(now, m)),
            reason: req.reason.clone(),
            shadow: req.shadow,
            banned_by_id: banned_by,
        };
        let written = self
            .write_ban(&req.target_user_id, Some(ban), |_| true)
            .await?;
        written
            .map(|(user, _)| user)
            .ok_or_else(|| ApiError::internal("a ban wrote nothing"))
    }

    /// `DELETE /moderation/ban`: lifts the ban of `target_user_id` (with `shadow`, only a
    /// shadow ban; without, only an open one). Lifting a ban that is not there changes
    /// nothing.
    pub async fn unban_user(&self, caller: &Caller, req: &UnbanUser) -> Result<(), ApiError> {
        self.banning_user(caller).await?;
        let shadow = req.shadow;
        self.write_ban(&req.target_user_id, None, |ban| {
            ban.is_some_and(|b| b.shadow == shadow)
        })
        .await?;
        Ok(())
    }

    /// `GET /query_banned_users`: the bans that hold now, newest first unless sorted by
    /// `created_at` ascending, filtered by `user_id`, `banned_by_id`, `reason` and `shadow`.
    pub async fn query_banned_users(
        &self,
        caller: &Caller,
        query: &BannedQuery,
    ) -> Result<Vec<Value>, ApiError> {
        self.banning_user(caller).await?;
        let now = Timestamp::now();
        let mut bans: Vec<(User, Ban)> = Vec::new();
        // The users with a ban that holds, a page of the store's query at a time.
        let mut offset = 0;
        loop {
            let page = self
                .store
                .query_users(&query.users_page(offset)?)
                .await
                .map_err(store_error)?;
            let n = page.len();
            for user in page {
                if let Some(ban) = user.ban.clone().filter(|b| b.active_at(now)) {
                    if query.admits(&user.id, &ban) {
                        bans.push((user, ban));
                    }
                }
            }
            offset += n;
            if n < BannedQuery::PAGE || offset >= BannedQuery::MAX_SCANNED {
                break;
            }
        }
        bans.sort_by(|(ua, a), (ub, b)| {
            let ord = a.created_at.cmp(&b.created_at).then(ua.id.cmp(&ub.id));
            if query.ascending {
                ord
            } else {
                ord.reverse()
            }
        });
        let page: Vec<(User, Ban)> = bans
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .collect();
        let by_ids: Vec<String> = page
            .iter()
            .filter_map(|(_, b)| b.banned_by_id.clone())
            .collect();
        let mut by: Map<String, Value> = Map::new();
        for id in by_ids {
            if let Some(s) = self.load(&id).await? {
                by.insert(id, Value::Object(self.wire(&s.user).await));
            }
        }
        let mut out = Vec::with_capacity(page.len());
        for (user, ban) in page {
            let mut entry = json!({
                "user": self.wire(&user).await,
                "created_at": ban.created_at.to_wire(),
                "shadow": ban.shadow,
            });
            if let Some(e) = ban.expires {
                entry["expires"] = json!(e.to_wire());
            }
            if let Some(r) = &ban.reason {
                entry["reason"] = json!(r);
            }
            if let Some(b) = ban.banned_by_id.as_ref().and_then(|id| by.get(id)) {
                entry["banned_by"] = b.clone();
            }
            out.push(entry);
        }
        Ok(out)
    }
}
