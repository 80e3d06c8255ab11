//! Blocks: a user blocks others for itself (`POST /users/block`, `/users/unblock`, `GET
//! /users/block`). The blocks live on the blocking user's record, like mutes, and its `me`
//! lists them as `blocked_user_ids`.

use serde_json::{json, Value};

use crate::model::moderation::{Block, MAX_RELATIONS};
use crate::model::user::User;
use crate::protocol::{ApiError, Timestamp};
use crate::store::{Expect, UserChange};
use crate::users::access::{acting_user, Action};
use crate::users::requests::BlockUser;
use crate::users::service::{deleted, missing, Caller, UsersService};

impl UsersService {
    /// Applies `change` to the user's blocks in one versioned write; nothing is written when
    /// it says nothing changed. Returns the user as stored after the call.
    async fn write_blocks(
        &self,
        user_id: &str,
        change: impl Fn(&mut User, Timestamp) -> Result<bool, ApiError> + Sync,
    ) -> Result<User, ApiError> {
        let change = &change;
        self.write_cycle(
            |svc| {
                Box::pin(async move {
                    let stored = svc.load(user_id).await?.ok_or_else(|| missing(user_id))?;
                    if stored.user.deleted_at.is_some() {
                        return Err(deleted(user_id));
                    }
                    let mut user = stored.user;
                    if !change(&mut user, Timestamp::now())? {
                        return Ok((Vec::new(), user));
                    }
                    let write = UserChange::Put {
                        user: user.clone(),
                        expect: Expect::Version(stored.version),
                        check_names: Vec::new(),
                        tombstone: false,
                    };
                    Ok((vec![write], user))
                })
            },
            |_| Vec::new(),
        )
        .await
    }

    /// `POST /users/block`: the acting user (a client: itself; a back end: `user_id`) blocks
    /// `blocked_user_id`; blocking again keeps the first block. Answers the block.
    pub async fn block_user(&self, caller: &Caller, req: &BlockUser) -> Result<Block, ApiError> {
        let me = acting_user(caller, Action::BlockUser, req.user_id.as_deref())?;
        let target = &req.blocked_user_id;
        if *target == me {
            return Err(ApiError::input("a user cannot block themselves"));
        }
        match self.load(target).await? {
            Some(s) if s.user.deleted_at.is_none() => {}
            _ => return Err(missing(target)),
        }
        let user = self
            .write_blocks(&me, |user, now| {
                if user.blocks.iter().any(|b| &b.blocked_user_id == target) {
                    return Ok(false);
                }
                if user.blocks.len() >= MAX_RELATIONS {
                    return Err(ApiError::input(format!(
                        "a user may block at most {MAX_RELATIONS} users"
                    )));
                }
                user.blocks.push(Block {
                    blocked_user_id: target.clone(),
                    created_at: now,
                });
                Ok(true)
            })
            .await?;
        user.blocks
            .into_iter()
            .find(|b| &b.blocked_user_id == target)
            .ok_or_else(|| ApiError::internal("the block was not kept"))
    }

    /// `POST /users/unblock`: ends the acting user's block of `blocked_user_id`. Unblocking a
    /// user not blocked changes nothing; an unknown user is 16.
    pub async fn unblock_user(&self, caller: &Caller, req: &BlockUser) -> Result<(), ApiError> {
        let me = acting_user(caller, Action::BlockUser, req.user_id.as_deref())?;
        let target = &req.blocked_user_id;
        if *target == me {
            return Err(ApiError::input("a user cannot unblock themselves"));
        }
        let blocked = self
            .load(&me)
            .await?
            .is_some_and(|s| s.user.blocks.iter().any(|b| &b.blocked_user_id == target));
        if !blocked && self.load(target).await?.is_none() {
            return Err(missing(target));
        }
        self.write_blocks(&me, |user, _| {
            let before = user.blocks.len();
            user.blocks.retain(|b| &b.blocked_user_id != target);
            Ok(user.blocks.len() != before)
        })
        .await?;
        Ok(())
    }

    /// `GET /users/block`: the acting user's blocks, oldest first, each with both users
    /// (blocked users erased since are left out).
    pub async fn blocked_users(
        &self,
        caller: &Caller,
        user_id: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let me = acting_user(caller, Action::BlockUser, user_id)?;
        let stored = self.load(&me).await?.ok_or_else(|| missing(&me))?;
        if stored.user.deleted_at.is_some() {
            return Err(deleted(&me));
        }
        let own = self.wire(&stored.user).await;
        let mut out = Vec::new();
        for b in &stored.user.blocks {
            let Some(target) = self.load(&b.blocked_user_id).await? else {
                continue;
            };
            out.push(json!({
                "user_id": me,
                "user": own,
                "blocked_user_id": b.blocked_user_id,
                "blocked_user": self.wire(&target.user).await,
                "created_at": b.created_at.to_wire(),
            }));
        }
        Ok(out)
    }
}
