//! The writes of users' own data: upsert (full replace), partial update (set/unset) and
//! guest creation, each one all-or-nothing batch, with who may write whom checked once.

use crate::events::UserEvent;
use crate::model::user::User;
use crate::protocol::{ApiError, ErrorCode, Timestamp};
use crate::store::{Expect, UserChange};
use crate::users::access::{authorize, Action};
use crate::users::requests::{CreateGuest, PartialUpdate, PatchEntry, UpsertEntry, UpsertUsers};
use crate::users::service::{
    deleted, missing, name_checks, not_allowed_role, same_team_roles, same_teams, updated, Caller,
    UsersService, GUEST_ROLE,
};

impl UsersService {
    /// `POST /users`: full replace of up to 100 users, all or nothing.
    pub async fn upsert_users(
        &self,
        req: &UpsertUsers,
        caller: &Caller,
    ) -> Result<Vec<User>, ApiError> {
        authorize(caller, Action::UpdateUser, None)?;
        for entry in &req.0 {
            authorize(caller, Action::UpdateUser, Some(&entry.id))?;
        }
        let inputs = &req.0;
        self.sync_settings().await?;
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let written = self
            .write_cycle(
                |svc| {
                    let caller = caller.clone();
                    Box::pin(async move {
                        let mut changes = Vec::with_capacity(inputs.len());
                        let mut out = Vec::with_capacity(inputs.len());
                        for UpsertEntry { id, fields } in inputs {
                            let stored = svc.load(id).await?;
                            let (mut user, expect, old) = match stored {
                                Some(s) => {
                                    if s.user.deleted_at.is_some() {
                                        return Err(deleted(id));
                                    }
                                    if s.user.deactivated_at.is_some() {
                                        return Err(ApiError::new(
                                            ErrorCode::DoesNotExist,
                                            format!("the user {id} was deactivated"),
                                        ));
                                    }
                                    (s.user.clone(), Expect::Version(s.version), Some(s.user))
                                }
                                None => (User::new(id, now), Expect::Absent, None),
                            };
                            user.replace_settable(fields)?;
                            if let Caller::User(_) = caller {
                                svc.check_client_owned(old.as_ref(), &user)?;
                            }
                            user.updated_at = now;
                            let check_names = name_checks(mode, old.as_ref(), &user);
                            out.push((user.clone(), takes_over_guest(old.as_ref(), &user)));
                            changes.push(UserChange::Put {
                                user,
                                expect,
                                check_names,
                                tombstone: false,
                            });
                        }
                        Ok((changes, out))
                    })
                },
                |written| {
                    written
                        .iter()
                        .flat_map(|(u, taken_over)| write_events(u, *taken_over, None))
                        .collect()
                },
            )
            .await?;
        Ok(written.into_iter().map(|(u, _)| u).collect())
    }

    /// A client may not change its own role or teams (403, code 17).
    fn check_client_owned(&self, old: Option<&User>, new: &User) -> Result<(), ApiError> {
        let (old_role, old_teams): (&str, &[String]) = match old {
            Some(o) => (&o.role, &o.teams),
            None => ("user", &[]),
        };
        if new.role != old_role {
            return Err(not_allowed_role(&new.id, old_role));
        }
        if !same_teams(&new.teams, old_teams) {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                format!("User '{}' is not allowed to change teams", new.id),
            ));
        }
        // Team roles are roles: a user may not grant itself one.
        if !same_team_roles(
            new.teams_role.as_ref(),
            old.and_then(|o| o.teams_role.as_ref()),
        ) {
            return Err(not_allowed_role(&new.id, old_role));
        }
        Ok(())
    }

    /// `PATCH /users`: set/unset on up to 100 users, all or nothing.
    pub async fn partial_update_users(
        &self,
        req: &PartialUpdate,
        caller: &Caller,
    ) -> Result<Vec<User>, ApiError> {
        authorize(caller, Action::UpdateUser, None)?;
        for entry in &req.0 {
            authorize(caller, Action::UpdateUser, Some(&entry.id))?;
        }
        let patches = &req.0;
        self.sync_settings().await?;
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let written = self
            .write_cycle(
                |svc| {
                    let caller = caller.clone();
                    Box::pin(async move {
                        let mut changes = Vec::new();
                        let mut out = Vec::new();
                        for PatchEntry { id, patch, revoke } in patches {
                            let stored = svc.load(id).await?.ok_or_else(|| missing(id))?;
                            if stored.user.deleted_at.is_some() {
                                return Err(deleted(id));
                            }
                            let old = stored.user;
                            let mut fields = old.settable_fields();
                            patch.apply(&mut fields);
                            let mut user = old.clone();
                            user.replace_settable(&fields)?;
                            if let Some(r) = revoke {
                                user.revoke_tokens_issued_before = *r;
                            }
                            if caller != Caller::Server {
                                svc.check_client_owned(Some(&old), &user)?;
                            }
                            user.updated_at = now;
                            let check_names = name_checks(mode, Some(&old), &user);
                            let taken_over = takes_over_guest(Some(&old), &user);
                            out.push((user.clone(), revoke.flatten(), taken_over));
                            changes.push(UserChange::Put {
                                user,
                                expect: Expect::Version(stored.version),
                                check_names,
                                tombstone: false,
                            });
                        }
                        Ok((changes, out))
                    })
                },
                |written| {
                    written
                        .iter()
                        .flat_map(|(u, revoke, taken_over)| write_events(u, *taken_over, *revoke))
                        .collect()
                },
            )
            .await?;
        Ok(written.into_iter().map(|(u, _, _)| u).collect())
    }

    /// `POST /guest`: creates (or re-enters) a guest user and mints its token.
    pub async fn create_guest(&self, req: &CreateGuest) -> Result<(User, String), ApiError> {
        self.sync_settings().await?;
        if self.settings().guests_disabled() {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "guest user creation is disabled",
            ));
        }
        if self.settings().multi_tenant() {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "guest users cannot be created while multi-tenancy is enabled",
            ));
        }
        let CreateGuest { id, fields } = req;
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let user = self
            .write_cycle(
                |svc| {
                    Box::pin(async move {
                        let stored = svc.load(id).await?;
                        let (mut user, expect, old) = match stored {
                            Some(s) if s.user.role != GUEST_ROLE => {
                                return Err(ApiError::input(format!(
                                    "user {id} already exists and is not a guest"
                                )))
                            }
                            Some(s) if !s.user.is_active() => return Err(deleted(id)),
                            Some(s) => (s.user.clone(), Expect::Version(s.version), Some(s.user)),
                            None => (User::new(id, now), Expect::Absent, None),
                        };
                        user.replace_settable(fields)?;
                        user.updated_at = now;
                        let check_names = name_checks(mode, old.as_ref(), &user);
                        let change = UserChange::Put {
                            user: user.clone(),
                            expect,
                            check_names,
                            tombstone: false,
                        };
                        Ok((vec![change], user))
                    })
                },
                |user| vec![updated(user)],
            )
            .await?;
        let token = self.mint_guest_token(&user.id);
        Ok((user, token))
    }
}

/// The events of a written user: `user.updated`; the end of its guest sessions when the back
/// end took a guest over; the revocation of its tokens when the write set one.
fn write_events(
    user: &User,
    taken_over: bool,
    revoked_before: Option<Timestamp>,
) -> Vec<UserEvent> {
    let mut events = vec![updated(user)];
    if taken_over {
        events.push(UserEvent::GuestTakenOver {
            user_id: user.id.clone(),
        });
    }
    if let Some(before) = revoked_before {
        events.push(UserEvent::TokensRevoked {
            user_id: Some(user.id.clone()),
            before,
        });
    }
    events
}

/// Whether a write turns a guest into another role: the back end takes the id over, and the
/// guest's tokens stop working.
fn takes_over_guest(old: Option<&User>, new: &User) -> bool {
    old.is_some_and(|o| o.role == GUEST_ROLE) && new.role != GUEST_ROLE
}
