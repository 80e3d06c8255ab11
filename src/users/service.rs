//! The users service: writes that follow the rules of the spec (§5), run against the store as
//! single atomic batches, retried when a concurrent writer got there first, and published to
//! the event bus once durable.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::auth::{self, Identity, Secret, TokenClaims};
use crate::events::{EventBus, UserEvent};
use crate::model::query::UserQuery;
use crate::model::user::{user_id_of, validate_id, SettableFields, User, SERVER_OWNED_FIELDS};
use crate::model::username::{normalise, Enforcement};
use crate::presence::Presence;
use crate::protocol::{ApiError, ErrorCode, Timestamp};
use crate::store::{Expect, NameScope, Store, StoreError, StoredUser, UserChange};
use crate::users::answer::AnswerSize;
use crate::users::patch::Patch;
use crate::users::settings::AppSettings;

/// Most users in one upsert or partial update.
pub const MAX_BATCH: usize = 100;
/// The role of guest users; a guest token is good only for a user with it.
pub const GUEST_ROLE: &str = "guest";
/// Attempts at a read-compute-write cycle before giving up on a busy user.
const MAX_ATTEMPTS: usize = 16;

/// One read-compute step of a write: the batch to apply and what to return once applied.
pub(crate) type BoxedCompute<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Vec<UserChange>, T), ApiError>> + Send + 'a>,
>;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A back end with the server token.
    Server,
    /// An end user acting on their own behalf.
    User(String),
    /// An anonymous client.
    Anonymous,
}

/// The users service.
pub struct UsersService {
    pub(crate) store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    presence: Arc<dyn Presence>,
    /// The app settings as last read or saved, with their stored version.
    settings: RwLock<(u64, AppSettings)>,
    secret: Secret,
    api_key: String,
    max_answer_bytes: usize,
}

/// Maps a store failure to the wire, in the words of the rules.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::AnswerTooLarge(max) => crate::users::answer::too_large(max),
        StoreError::Tombstoned(id) => ApiError::new(
            ErrorCode::DoesNotExist,
            format!("the user {id} was deleted"),
        ),
        StoreError::NameTaken { name, team: None } => ApiError::new(
            ErrorCode::DuplicateUsername,
            format!("username '{name}' already exists"),
        ),
        StoreError::NameTaken {
            name,
            team: Some(t),
        } => ApiError::new(
            ErrorCode::DuplicateUsername,
            format!("username '{name}' already exists in team '{t}'"),
        ),
        // Refusals of a degraded store: the store logs entering and leaving that state once,
        // so a refused request is not worth a line of its own.
        StoreError::VolumeFull(why) => {
            tracing::debug!(reason = %why, "write refused: data volume full");
            ApiError::new(
                ErrorCode::Unavailable,
                "the data volume is full: writes are refused until space is freed",
            )
        }
        StoreError::Unavailable(why) => {
            tracing::debug!(reason = %why, "store unavailable");
            ApiError::new(
                ErrorCode::Unavailable,
                "storage is unavailable for now, retry later",
            )
        }
        other => {
            tracing::error!(error = %other, "store failure");
            ApiError::internal(other.to_string())
        }
    }
}

/// The name scopes in which `new` must not collide: only where the write gives the user a
/// name (or a team) it did not hold before — enforcement applies going forward only.
pub(crate) fn name_checks(mode: Enforcement, old: Option<&User>, new: &User) -> Vec<NameScope> {
    if mode == Enforcement::No || !new.is_active() {
        return Vec::new();
    }
    let norm = new.name.as_deref().map(normalise).unwrap_or_default();
    if norm.is_empty() {
        return Vec::new();
    }
    let held = old
        .filter(|o| o.is_active())
        .filter(|o| o.name.as_deref().map(normalise).unwrap_or_default() == norm);
    match (mode, held) {
        (Enforcement::App, Some(_)) => Vec::new(),
        (Enforcement::App, None) => vec![NameScope::App],
        (Enforcement::Team, held) => new
            .teams
            .iter()
            .filter(|t| held.is_none_or(|o| !o.teams.contains(t)))
            .map(|t| NameScope::Team(t.clone()))
            .collect(),
        (Enforcement::No, _) => Vec::new(),
    }
}

/// The same user twice in one batch: each change would expect the state the other one
/// replaces, so the batch could never apply (it used to spin into a 500).
fn duplicate_in_batch(id: &str) -> ApiError {
    ApiError::input(format!("user {id} appears more than once in the batch"))
}

pub(crate) fn deleted(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::DoesNotExist,
        format!("the user {id} was deleted"),
    )
}

pub(crate) fn missing(id: &str) -> ApiError {
    ApiError::new(ErrorCode::DoesNotExist, format!("user {id} does not exist"))
}

fn not_allowed_role(id: &str, role: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotAllowed,
        format!("User '{id}' with role '{role}' is not allowed to perform action UpdateUserRole"),
    )
}

/// Who may write users: the server any of them, a user only itself, an anonymous caller
/// none. `id: None` asks whether the caller may write at all.
fn authorize_write(caller: &Caller, id: Option<&str>) -> Result<(), ApiError> {
    match (caller, id) {
        (Caller::Server, _) => Ok(()),
        (Caller::Anonymous, _) => Err(ApiError::new(
            ErrorCode::NotAllowed,
            "anonymous users are not allowed to perform this action",
        )),
        (Caller::User(me), Some(id)) if me != id => Err(ApiError::new(
            ErrorCode::NotAllowed,
            format!("User '{me}' is not allowed to update user '{id}'"),
        )),
        (Caller::User(_), _) => Ok(()),
    }
}

/// Team roles compared with "none" and "empty" as the same.
fn same_team_roles(
    a: Option<&std::collections::BTreeMap<String, String>>,
    b: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    a.filter(|m| !m.is_empty()) == b.filter(|m| !m.is_empty())
}

/// Whether a write turns a guest into another role: the back end takes the id over, and the
/// guest's tokens stop working.
fn takes_over_guest(old: Option<&User>, new: &User) -> bool {
    old.is_some_and(|o| o.role == GUEST_ROLE) && new.role != GUEST_ROLE
}

fn same_teams(a: &[String], b: &[String]) -> bool {
    let a: HashSet<&String> = a.iter().collect();
    let b: HashSet<&String> = b.iter().collect();
    a == b
}

impl UsersService {
    /// A service over `store`, publishing to `bus`, with `presence` telling who is online.
    pub async fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        presence: Arc<dyn Presence>,
        api_key: String,
        secret: Secret,
    ) -> Result<Self, ApiError> {
        let stored = store.app_settings().await.map_err(store_error)?;
        Ok(Self {
            store,
            bus,
            presence,
            settings: RwLock::new((stored.version, AppSettings::from_stored(stored.settings))),
            secret,
            api_key,
            max_answer_bytes: crate::config::Config::defaults()
                .limits
                .max_query_response_bytes,
        })
    }

    /// Sets the largest query answer, in bytes of JSON (`limits.max_query_response_bytes`).
    pub fn with_max_answer_bytes(mut self, max: usize) -> Self {
        self.max_answer_bytes = max;
        self
    }

    /// The current app settings.
    pub fn settings(&self) -> AppSettings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The API key clients must present.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Publishes an event on the bus.
    pub(crate) fn publish(&self, event: UserEvent) {
        self.bus.publish(event);
    }

    /// Whether the user is online.
    pub async fn is_online(&self, user_id: &str) -> bool {
        self.presence.online(&[user_id]).await.first() == Some(&true)
    }

    /// Publishes `user.updated` for a written user.
    pub(crate) async fn publish_updated(&self, user: &User) {
        let online = self.is_online(&user.id).await;
        self.publish(UserEvent::Updated {
            user: user.clone(),
            online,
        });
    }

    /// Verifies a token's signature and claims (honouring `disable_auth_checks`); reads
    /// nothing stored, so it says nothing of revocation: see [`Self::authenticate`].
    pub fn verify_token(&self, token: &str) -> Result<Identity, ApiError> {
        auth::verify(token, &self.secret, self.settings().auth_checks_disabled())
    }

    /// Verifies a token and, for a user token, checks it against the stored user (REST): a
    /// revoked token, a deleted user and a guest token whose user is no longer a guest are
    /// refused.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, ApiError> {
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

    /// Runs `compute` against fresh reads until the store accepts the batch it builds.
    pub(crate) async fn write_cycle<'a, T, F>(&'a self, mut compute: F) -> Result<T, ApiError>
    where
        F: FnMut(&'a Self) -> BoxedCompute<'a, T>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let (changes, out) = compute(self).await?;
            match self.store.apply_user_batch(changes).await {
                Ok(()) => return Ok(out),
                Err(StoreError::Conflict(id)) => {
                    tracing::debug!(user_id = %id, "concurrent write, retrying");
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::internal("too much contention on the same users"))
    }

    pub(crate) async fn load(&self, id: &str) -> Result<Option<StoredUser>, ApiError> {
        self.store.get_user(id).await.map_err(store_error)
    }

    /// Users keyed by id, each in its wire form: the `users` object of write responses.
    pub async fn users_by_id(&self, users: &[User]) -> Value {
        let wire = self.wire_all(users).await;
        let m: Map<String, Value> = users
            .iter()
            .zip(wire)
            .map(|(u, w)| (u.id.clone(), Value::Object(w)))
            .collect();
        Value::Object(m)
    }

    /// Users in their wire form with live presence, in order.
    pub async fn wire_all(&self, users: &[User]) -> Vec<Map<String, Value>> {
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let online = self.presence.online(&ids).await;
        users
            .iter()
            .zip(online)
            .map(|(u, online)| u.to_wire(online))
            .collect()
    }

    /// A user's wire form with live presence.
    pub async fn wire(&self, user: &User) -> Map<String, Value> {
        user.to_wire(self.is_online(&user.id).await)
    }

    /// `POST /users`: full replace of up to 100 users, all or nothing.
    pub async fn upsert_users(&self, body: &Value, caller: &Caller) -> Result<Vec<User>, ApiError> {
        authorize_write(caller, None)?;
        let users = body
            .get("users")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::input("users is a required field"))?;
        if users.is_empty() {
            return Err(ApiError::input("users is a required field"));
        }
        if users.len() > MAX_BATCH {
            return Err(ApiError::input(format!(
                "users must contain at most {MAX_BATCH} items"
            )));
        }
        let mut inputs = Vec::with_capacity(users.len());
        for (key, value) in users {
            let fields = value
                .as_object()
                .ok_or_else(|| ApiError::input(format!("user {key} must be an object")))?;
            let id = user_id_of(fields)?;
            if inputs.iter().any(|(seen, _, _)| seen == &id) {
                return Err(duplicate_in_batch(&id));
            }
            let parsed = SettableFields::parse(fields)?;
            authorize_write(caller, Some(&id))?;
            inputs.push((id, fields.clone(), parsed));
        }
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let written = self
            .write_cycle(|svc| {
                let inputs = &inputs;
                let caller = caller.clone();
                Box::pin(async move {
                    let mut changes = Vec::with_capacity(inputs.len());
                    let mut out = Vec::with_capacity(inputs.len());
                    for (id, fields, _) in inputs {
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
            })
            .await?;
        let mut users = Vec::with_capacity(written.len());
        for (u, taken_over) in written {
            self.publish_update(&u, taken_over).await;
            users.push(u);
        }
        Ok(users)
    }

    /// Publishes a written user; a guest taken over by the back end loses its guest sessions.
    async fn publish_update(&self, user: &User, taken_over: bool) {
        self.publish_updated(user).await;
        if taken_over {
            self.publish(UserEvent::GuestTakenOver {
                user_id: user.id.clone(),
            });
        }
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
        body: &Value,
        caller: &Caller,
    ) -> Result<Vec<User>, ApiError> {
        authorize_write(caller, None)?;
        let entries = body
            .get("users")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::input("users is a required field"))?;
        if entries.is_empty() || entries.len() > MAX_BATCH {
            return Err(ApiError::input(format!(
                "users must contain between 1 and {MAX_BATCH} items"
            )));
        }
        let server_fields: &[&str] = match caller {
            Caller::Server => &["revoke_tokens_issued_before"],
            _ => &[],
        };
        let mut patches = Vec::with_capacity(entries.len());
        for entry in entries {
            let obj = entry
                .as_object()
                .ok_or_else(|| ApiError::input("each update must be an object"))?;
            let id = user_id_of(obj)?;
            if patches.iter().any(|(seen, _, _)| seen == &id) {
                return Err(duplicate_in_batch(&id));
            }
            authorize_write(caller, Some(&id))?;
            let mut patch = Patch::parse(obj.get("set"), obj.get("unset"), server_fields)?;
            let revoke = match patch.take_set("revoke_tokens_issued_before") {
                None if patch.take_unset("revoke_tokens_issued_before") => Some(None),
                None => None,
                Some(Value::Null) => Some(None),
                Some(Value::String(s)) => Some(Some(Timestamp::parse(&s).ok_or_else(|| {
                    ApiError::input("revoke_tokens_issued_before must be an RFC 3339 timestamp")
                })?)),
                Some(_) => {
                    return Err(ApiError::input(
                        "revoke_tokens_issued_before must be a timestamp or null",
                    ))
                }
            };
            patches.push((id, patch, revoke));
        }
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let written = self
            .write_cycle(|svc| {
                let patches = &patches;
                let caller = caller.clone();
                Box::pin(async move {
                    let mut changes = Vec::new();
                    let mut out = Vec::new();
                    for (id, patch, revoke) in patches {
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
            })
            .await?;
        let mut users = Vec::with_capacity(written.len());
        for (u, revoke, taken_over) in written {
            self.publish_update(&u, taken_over).await;
            if let Some(before) = revoke {
                self.publish(UserEvent::TokensRevoked {
                    user_id: Some(u.id.clone()),
                    before,
                });
            }
            users.push(u);
        }
        Ok(users)
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
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let (user, changed) = self
            .write_cycle(|svc| {
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
            })
            .await?;
        if changed {
            self.publish_updated(&user).await;
        }
        Ok((user, changed))
    }

    /// `POST /guest`: creates (or re-enters) a guest user and mints its token.
    pub async fn create_guest(&self, body: &Value) -> Result<(User, String), ApiError> {
        if self.settings().guests_disabled() {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "guest user creation is disabled",
            ));
        }
        let mut fields = body
            .get("user")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| ApiError::input("user is a required field"))?;
        if !fields.contains_key("id") {
            let generated = format!("guest-{}", uuid::Uuid::new_v4());
            fields.insert("id".into(), Value::String(generated));
        }
        let id = user_id_of(&fields)?;
        fields.insert("role".into(), Value::String(GUEST_ROLE.into()));
        fields.remove("teams");
        fields.remove("teams_role");
        let mode = self.settings().enforcement();
        let now = Timestamp::now();
        let user = self
            .write_cycle(|svc| {
                let fields = &fields;
                let id = &id;
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
            })
            .await?;
        self.publish_updated(&user).await;
        let token = self.mint_guest_token(&user.id);
        Ok((user, token))
    }

    /// `GET /users`: a query; clients never see revocation fields nor others' invisibility.
    pub async fn query_users(
        &self,
        payload: &Value,
        caller: &Caller,
    ) -> Result<Vec<Map<String, Value>>, ApiError> {
        let mut query = UserQuery::parse(payload)?;
        query.max_answer_bytes = self.max_answer_bytes;
        let users = self.store.query_users(&query).await.map_err(store_error)?;
        let me = match caller {
            Caller::User(id) => Some(id.as_str()),
            _ => None,
        };
        let mut answer = AnswerSize::new(self.max_answer_bytes);
        let mut out = Vec::with_capacity(users.len());
        let wire = self.wire_all(&users).await;
        for (u, mut w) in users.iter().zip(wire) {
            if *caller != Caller::Server {
                w.remove("revoke_tokens_issued_before");
                if me != Some(u.id.as_str()) {
                    if u.invisible {
                        w.insert("online".into(), Value::Bool(false));
                    }
                    w.remove("invisible");
                }
            }
            answer.add(&w)?;
            out.push(w);
        }
        Ok(out)
    }

    /// `PATCH /app`: validates and merges settings; app-level revocation ends connections.
    pub async fn update_app_settings(&self, body: &Value) -> Result<(), ApiError> {
        let patch = body
            .as_object()
            .ok_or_else(|| ApiError::input("body must be an object"))?;
        // A conditional write on the stored version: two writers (on this node or, with a
        // shared store, on two) merge into what the other saved instead of overwriting it.
        let mut attempts = 0;
        let next = loop {
            let stored = self.store.app_settings().await.map_err(store_error)?;
            let current = AppSettings::from_stored(stored.settings);
            let next = current.merged(patch)?;
            match self
                .store
                .save_app_settings(next.stored(), stored.version)
                .await
            {
                Ok(version) => break (version, next),
                Err(StoreError::SettingsChanged) if attempts < MAX_ATTEMPTS => attempts += 1,
                Err(e) => return Err(store_error(e)),
            }
        };
        let (version, next) = next;
        let revoke = next.revoke_before();
        {
            let mut cached = self.settings.write().unwrap_or_else(|p| p.into_inner());
            // Concurrent saves finish in any order; the cache keeps the newest.
            if cached.0 < version {
                *cached = (version, next);
            }
        }
        self.publish(UserEvent::AppSettingsChanged);
        if patch.contains_key("revoke_tokens_issued_before") {
            if let Some(before) = revoke {
                self.publish(UserEvent::TokensRevoked {
                    user_id: None,
                    before,
                });
            }
        }
        Ok(())
    }

    /// A connection of `user` was admitted on this node (`first_here`: the node held none of
    /// theirs). Announces that the user came online (invisible users stay offline to
    /// others) and records the activity unless the connect's own write did.
    pub async fn connection_opened(
        &self,
        user: &User,
        first_here: bool,
        activity_recorded: bool,
        at: Timestamp,
    ) {
        if self.presence.opened(&user.id, first_here).await && !user.invisible {
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
    /// the user went offline, records the activity and announces it.
    pub async fn connection_closed(&self, user_id: &str, invisible: bool, last_here: bool) {
        if !self.presence.closed(user_id, last_here).await {
            return;
        }
        let now = Timestamp::now();
        self.touch_last_active(user_id, now).await;
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

    /// Whether the store takes writes, for `/healthz`.
    pub fn store_health(&self) -> crate::store::StoreHealth {
        self.store.health()
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
        if matches!(*key, "online" | "last_active" | "updated_at" | "created_at") {
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
