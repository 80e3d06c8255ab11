//! Tokens and connects: verifying a token and checking it against the stored user
//! (revocation, deletion, a guest taken over), connectUser's create-or-merge, and the
//! presence and activity a connection's opening and closing report.

use serde_json::{Map, Value};

use crate::auth::{self, Identity, TokenClaims};
use crate::events::UserEvent;
use crate::model::user::{validate_id, User, SERVER_OWNED_FIELDS};
use crate::presence::OpenRefused;
use crate::protocol::{ApiError, ErrorCode, Timestamp};
use crate::store::{Expect, StoreError, UserChange};
use crate::users::service::{
    deleted, name_checks, not_allowed_role, same_team_roles, same_teams, store_error, updated,
    UsersService, GUEST_ROLE,
};

impl UsersService {
    /// Verifies a token's signature and claims (honouring `disable_auth_checks`); reads
    /// nothing stored, so it says nothing of revocation: see [`Self::authenticate`].
    pub fn verify_token(&self, token: &str) -> Result<Identity, ApiError> {
        auth::verify(token, &self.secret, self.settings().auth_checks_disabled())
    }

    /// Verifies a token and, for a user token, checks it against the stored user (REST): a
    /// revoked token, a deleted user and a guest token whose user is no longer a guest are
    /// refused.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, ApiError> {
        self.sync_settings().await?;
        let identity = self.verify_token(token)?;
        if let Identity::User(claims) = &identity {
            let stored = self.load(&claims.user_id).await?;
            let user = stored.as_ref().map(|s| &s.user);
            self.check_token_holder(claims, user)?;
            let gone = match user {
                Some(u) => u.deleted_at.is_some(),
                None => self
                    .store
                    .is_tombstoned(&claims.user_id)
                    .await
                    .map_err(store_error)?,
            };
            if gone {
                return Err(deleted(&claims.user_id));
            }
        }
        Ok(identity)
    }

    /// Whether the holder of a token with `claims` may still act as `user` (as stored now;
    /// `None` when not stored): not when the token is revoked, at the user's level or the
    /// app's, nor when it is a guest's token and the user is not a guest (any more).
    pub(crate) fn check_token_holder(
        &self,
        claims: &TokenClaims,
        user: Option<&User>,
    ) -> Result<(), ApiError> {
        let revoked = |cutoff: Option<Timestamp>| {
            cutoff.is_some_and(|c| claims.iat.is_none_or(|iat| iat < c.unix()))
        };
        if revoked(user.and_then(|u| u.revoke_tokens_issued_before))
            || revoked(self.settings().revoke_before())
        {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "This token has been revoked, please generate a new token",
            ));
        }
        if claims.guest && user.is_none_or(|u| u.role != GUEST_ROLE) {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "This guest token is no longer valid: the user is not a guest",
            ));
        }
        Ok(())
    }

    /// Mints a guest's token.
    pub fn mint_guest_token(&self, user_id: &str) -> String {
        auth::guest_token(user_id, &self.secret)
    }

    /// connectUser: create the user or merge `details` into it (§5.2), for the holder of a
    /// token with `claims`, checked against the user as read in the same cycle. Returns the
    /// user and whether it changed (a changed user's record already holds the connect as
    /// `last_active`).
    pub async fn connect_user(
        &self,
        claims: &TokenClaims,
        details: &Map<String, Value>,
    ) -> Result<(User, bool), ApiError> {
        let user_id = claims.user_id.as_str();
        validate_id(user_id)?;
        if let Some(given) = details.get("id") {
            if given.as_str() != Some(user_id) {
                return Err(ApiError::input("user_details.id must match user_id"));
            }
        }
        self.sync_settings().await?;
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let (user, changed) = self
            .write_cycle(
                |svc| {
                    Box::pin(async move {
                        let stored = svc.load(user_id).await?;
                        let (old, expect) = match &stored {
                            Some(s) => (Some(&s.user), Expect::Version(s.version)),
                            None => (None, Expect::Absent),
                        };
                        svc.check_token_holder(claims, old)?;
                        if let Some(o) = old {
                            if o.deleted_at.is_some() {
                                return Err(deleted(user_id));
                            }
                            if o.deactivated_at.is_some() {
                                return Err(ApiError::new(
                                    ErrorCode::NotAllowed,
                                    format!("the user {user_id} was deactivated"),
                                ));
                            }
                        }
                        let merged = merge_details(user_id, old, details, now)?;
                        if old == Some(&merged) {
                            return Ok((Vec::new(), (merged, false)));
                        }
                        let mut user = merged;
                        user.updated_at = now;
                        // The record is written anyway: it carries the connect's activity too.
                        user.last_active = Some(now);
                        let check_names = name_checks(mode, old, &user);
                        let change = UserChange::Put {
                            user: user.clone(),
                            expect,
                            check_names,
                            tombstone: false,
                        };
                        Ok((vec![change], (user, true)))
                    })
                },
                |(user, changed)| {
                    if *changed {
                        vec![updated(user)]
                    } else {
                        Vec::new()
                    }
                },
            )
            .await?;
        Ok((user, changed))
    }

    /// Counts an admitted connection of `user_id` in presence, before its first frame
    /// (`first_here`: the node held none of theirs). Returns whether the user came online, or
    /// the refusal to send: too many connections across the cluster (code 71), or presence
    /// unreachable (503, a retryable close).
    pub async fn count_connection(
        &self,
        user_id: &str,
        first_here: bool,
    ) -> Result<bool, ApiError> {
        self.presence
            .opened(user_id, first_here)
            .await
            .map_err(|refused| match refused {
                OpenRefused::TooMany => ApiError::new(
                    ErrorCode::TooManyConnections,
                    format!("user {user_id} has too many connections"),
                ),
                OpenRefused::Unavailable(why) => {
                    tracing::debug!(reason = %why, "presence unreachable");
                    ApiError::new(
                        ErrorCode::Unavailable,
                        "presence is unavailable, retry later",
                    )
                }
            })
    }

    /// A counted connection of `user` sent its first frame (`came_online`: what
    /// [`Self::count_connection`] said). Announces that the user came online (invisible users
    /// stay offline to others) and records the activity unless the connect's own write did.
    pub async fn connection_opened(
        &self,
        user: &User,
        came_online: bool,
        activity_recorded: bool,
        at: Timestamp,
    ) {
        if came_online && !user.invisible {
            self.publish(UserEvent::PresenceChanged {
                user_id: user.id.clone(),
                online: true,
                last_active: Some(at),
            });
        }
        if !activity_recorded {
            self.touch_last_active(&user.id, at).await;
        }
    }

    /// A connection of `user_id` on this node closed (`last_here`: none is left here). When
    /// the user went offline, records the activity and announces it, unless the user is
    /// invisible (or cannot be read: then nothing is announced rather than too much).
    pub async fn connection_closed(&self, user_id: &str, last_here: bool) {
        // The activity is recorded before presence can say "offline", so that no reader ever
        // sees the user offline with an older `last_active` than its last session's (on a
        // cluster the two are separate round trips, and other nodes read in between).
        let now = Timestamp::now();
        if last_here {
            self.touch_last_active(user_id, now).await;
        }
        if !self.presence.closed(user_id, last_here).await {
            return;
        }
        // Invisible as the user is now, not as it connected: a user who turned invisible
        // mid-session leaves without telling her watchers.
        let invisible = match self.load(user_id).await {
            Ok(Some(stored)) => stored.user.invisible,
            Ok(None) => false,
            Err(_) => true,
        };
        if !invisible {
            self.publish(UserEvent::PresenceChanged {
                user_id: user_id.to_owned(),
                online: false,
                last_active: Some(now),
            });
        }
    }

    /// Records a user's last activity (connect, last disconnect).
    pub async fn touch_last_active(&self, user_id: &str, at: Timestamp) {
        match self.store.touch_last_active(user_id, at).await {
            Ok(()) => {}
            // Every connect and disconnect would say it again while the volume is full.
            Err(StoreError::VolumeFull(_) | StoreError::Unavailable(_)) => {
                tracing::debug!(user_id, "last_active not recorded: writes are refused");
            }
            Err(e) => tracing::warn!(user_id, error = %e, "could not record last_active"),
        }
    }
}

/// The user a connect produces: `details` merged over `old` (or a new user), refusing role,
/// teams and server-owned changes.
fn merge_details(
    user_id: &str,
    old: Option<&User>,
    details: &Map<String, Value>,
    now: Timestamp,
) -> Result<User, ApiError> {
    let base = old.cloned().unwrap_or_else(|| User::new(user_id, now));
    let current_wire = base.to_me(true);
    if let Some(role) = details.get("role").filter(|v| !v.is_null()) {
        if role.as_str() != Some(base.role.as_str()) {
            return Err(not_allowed_role(user_id, &base.role));
        }
    }
    if let Some(given) = details.get("teams_role").filter(|v| !v.is_null()) {
        let given = serde_json::from_value(given.clone()).ok();
        if given.is_none() || !same_team_roles(given.as_ref(), base.teams_role.as_ref()) {
            return Err(not_allowed_role(user_id, &base.role));
        }
    }
    if let Some(teams) = details.get("teams").filter(|v| !v.is_null()) {
        let given: Vec<String> = serde_json::from_value(teams.clone())
            .map_err(|_| ApiError::input("user.teams must be a list of strings"))?;
        if !same_teams(&given, &base.teams) {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "user teams cannot be changed at connection time",
            ));
        }
    }
    for key in SERVER_OWNED_FIELDS {
        let Some(given) = details.get(*key) else {
            continue;
        };
        if matches!(
            *key,
            "online" | "last_active" | "updated_at" | "created_at" | "mutes"
        ) {
            // Echoes of a previous `me`; the gateway owns them and ignores the echo.
            continue;
        }
        let stored = current_wire.get(*key).unwrap_or(&Value::Null);
        let same = given == stored
            || (given.is_null() && stored.is_null())
            || (*key == "revoke_tokens_issued_before"
                && given.as_str().and_then(Timestamp::parse)
                    == stored.as_str().and_then(Timestamp::parse));
        if !same {
            return Err(ApiError::input(format!("{key} is a read-only field")));
        }
    }
    let current = base.settable_fields();
    let mut fields = current.clone();
    for (k, v) in details {
        if v.is_null()
            || k == "id"
            || k == "role"
            || k == "teams"
            || SERVER_OWNED_FIELDS.contains(&k.as_str())
        {
            continue;
        }
        fields.insert(k.clone(), v.clone());
    }
    if fields == current {
        // Nothing to change, so nothing to validate: a user stored before the size bounds
        // (`model::bounds`) still connects as long as it does not grow.
        return Ok(base);
    }
    let mut user = base;
    user.replace_settable(&fields)?;
    Ok(user)
}
