//! Mutes: a user mutes others for itself (`POST /moderation/mute`, `/moderation/unmute`),
//! until unmuted or for `timeout` minutes. The mutes live on the muting user's record (one
//! versioned write, durable as users are, erased with the user), are listed in its `me`, and
//! each change is announced to its own connections with `notification.mutes_updated`.

use serde_json::{Map, Value};

use crate::events::UserEvent;
use crate::model::moderation::{after_minutes, Mute, MAX_RELATIONS};
use crate::model::user::User;
use crate::protocol::{ApiError, Timestamp};
use crate::store::{Expect, UserChange};
use crate::users::access::{acting_user, Action};
use crate::users::requests::{MuteUsers, UnmuteUsers};
use crate::users::service::{deleted, missing, Caller, UsersService};

/// The event that tells a user's connections its mutes changed.
pub const MUTES_UPDATED: &str = "notification.mutes_updated";

/// What a mute call did: the user after it, its `me`, and the mutes it made.
pub struct Muted {
    /// The muting user as written.
    pub user: User,
    /// Its `me` (with the muted users in `mutes`).
    pub me: Map<String, Value>,
    /// The mutes of this call, in their wire form.
    pub mutes: Vec<Value>,
}

fn not_yourself(verb: &str) -> ApiError {
    ApiError::input(format!("a user cannot {verb} themselves"))
}

impl UsersService {
    /// The user's `me`: its wire form and lists, with its active mutes and the users they
    /// name (muted users erased since are left out).
    pub async fn own_user(
        &self,
        user: &User,
        online: bool,
    ) -> Result<Map<String, Value>, ApiError> {
        let now = Timestamp::now();
        let mut me = user.to_me(online);
        let mut pairs = Vec::new();
        for m in user.active_mutes(now) {
            if let Some(target) = self.load(&m.target_id).await? {
                if target.user.deleted_at.is_none() {
                    pairs.push((m, target.user));
                }
            }
        }
        if pairs.is_empty() {
            return Ok(me);
        }
        let targets: Vec<User> = pairs.iter().map(|(_, t)| t.clone()).collect();
        let wires = self.wire_all(&targets).await;
        let own = user.to_wire(online);
        let mutes = pairs
            .iter()
            .zip(wires)
            .map(|((m, _), target)| m.to_wire(&own, &target))
            .collect();
        me.insert("mutes".into(), Value::Array(mutes));
        Ok(me)
    }

    /// Loads the users of `ids`, refusing unknown and deleted ones (16).
    async fn existing_targets(&self, ids: &[String]) -> Result<(), ApiError> {
        for id in ids {
            match self.load(id).await? {
                Some(s) if s.user.deleted_at.is_none() => {}
                _ => return Err(missing(id)),
            }
        }
        Ok(())
    }

    /// Applies `change` to the user's mutes (expired ones dropped first) in one versioned
    /// write, and announces the result to its connections. `change` says whether it changed
    /// anything; when nothing changed, nothing is written (`None`).
    async fn write_mutes(
        &self,
        me_id: &str,
        change: impl Fn(&mut User, Timestamp) -> Result<bool, ApiError> + Sync,
    ) -> Result<Option<(User, Map<String, Value>)>, ApiError> {
        let change = &change;
        self.write_cycle(
            |svc| {
                Box::pin(async move {
                    let stored = svc.load(me_id).await?.ok_or_else(|| missing(me_id))?;
                    if stored.user.deleted_at.is_some() {
                        return Err(deleted(me_id));
                    }
                    let now = Timestamp::now();
                    let mut user = stored.user;
                    let expired = user.mutes.len();
                    user.mutes.retain(|m| m.active_at(now));
                    let pruned = user.mutes.len() != expired;
                    if !change(&mut user, now)? && !pruned {
                        return Ok((Vec::new(), None));
                    }
                    let me = svc.own_user(&user, true).await?;
                    let write = UserChange::Put {
                        user: user.clone(),
                        expect: Expect::Version(stored.version),
                        check_names: Vec::new(),
                        tombstone: false,
                    };
                    Ok((vec![write], Some((user, me))))
                })
            },
            |out| match out {
                Some((user, me)) => vec![UserEvent::OwnUserChanged {
                    user_id: user.id.clone(),
                    event_type: MUTES_UPDATED.into(),
                    me: me.clone(),
                }],
                None => Vec::new(),
            },
        )
        .await
    }

    /// `POST /moderation/mute`: mutes the targets for the acting user (a client: itself; a
    /// back end: `user_id`), again with a new timeout when already muted.
    pub async fn mute_users(&self, caller: &Caller, req: &MuteUsers) -> Result<Muted, ApiError> {
        let me_id = acting_user(caller, Action::MuteUser, req.user_id.as_deref())?;
        if req.target_ids.contains(&me_id) {
            return Err(not_yourself("mute"));
        }
        self.existing_targets(&req.target_ids).await?;
        let targets = &req.target_ids;
        let timeout = req.timeout_minutes;
        let written = self
            .write_mutes(&me_id, |user, now| {
                let expires = timeout.map(|m| after_minutes(now, m));
                for t in targets {
                    match user.mutes.iter_mut().find(|m| &m.target_id == t) {
                        Some(m) => {
                            m.updated_at = now;
                            m.expires = expires;
                        }
                        None => user.mutes.push(Mute {
                            target_id: t.clone(),
                            created_at: now,
                            updated_at: now,
                            expires,
                        }),
                    }
                }
                if user.mutes.len() > MAX_RELATIONS {
                    return Err(ApiError::input(format!(
                        "a user may mute at most {MAX_RELATIONS} users"
                    )));
                }
                Ok(true)
            })
            .await?;
        let (user, me) = written.ok_or_else(|| ApiError::internal("a mute wrote nothing"))?;
        let mutes = me
            .get("mutes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| {
                m.pointer("/target/id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| targets.iter().any(|t| t == id))
            })
            .cloned()
            .collect();
        Ok(Muted { user, me, mutes })
    }

    /// `POST /moderation/unmute`: ends the acting user's mutes of the targets. Unmuting a user
    /// not muted changes nothing; an unknown user is 16.
    pub async fn unmute_users(&self, caller: &Caller, req: &UnmuteUsers) -> Result<(), ApiError> {
        let me_id = acting_user(caller, Action::MuteUser, req.user_id.as_deref())?;
        if req.target_ids.contains(&me_id) {
            return Err(not_yourself("unmute"));
        }
        let targets = &req.target_ids;
        if let Some(stored) = self.load(&me_id).await? {
            let not_muted: Vec<String> = targets
                .iter()
                .filter(|t| !stored.user.mutes.iter().any(|m| m.target_id == **t))
                .cloned()
                .collect();
            self.existing_targets(&not_muted).await?;
        }
        self.write_mutes(&me_id, |user, _now| {
            let before = user.mutes.len();
            user.mutes.retain(|m| !targets.contains(&m.target_id));
            Ok(user.mutes.len() != before)
        })
        .await?;
        Ok(())
    }
}
