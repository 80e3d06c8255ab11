//! The users service's core: its state, the write cycle (every write is one atomic store
//! batch, retried when a concurrent writer got there first, published to the event bus once
//! durable), queries, app settings, and store errors in the words of the rules. The
//! operations themselves are in `connect`, `writes` and `lifecycle`.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::auth::Secret;
use crate::events::{EventBus, EventSink, UserEvent};
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::model::username::{normalise, Enforcement};
use crate::presence::Presence;
use crate::protocol::{ApiError, ErrorCode};
use crate::store::{NameScope, Store, StoreError, StoredUser, UserChange};
use crate::users::answer::AnswerSize;
use crate::users::settings::AppSettings;

/// Most users in one upsert or partial update.
pub const MAX_BATCH: usize = 100;
/// The role of guest users; a guest token is good only for a user with it.
pub use crate::model::user::GUEST_ROLE;
/// Attempts at a read-compute-write cycle before giving up on a busy user.
const MAX_ATTEMPTS: usize = 16;

/// One read-compute step of a write: the batch to apply and what to return once applied.
pub(crate) type BoxedCompute<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Vec<UserChange>, T), ApiError>> + Send + 'a>,
>;

/// Re-reads the service's app settings when the bus says they changed: on a cluster node,
/// when another node saved them.
pub struct SettingsWatch(std::sync::Weak<UsersService>);

impl SettingsWatch {
    /// A watch for `svc`.
    pub fn new(svc: &Arc<UsersService>) -> Arc<Self> {
        Arc::new(Self(Arc::downgrade(svc)))
    }
}

impl EventSink for SettingsWatch {
    fn deliver(&self, event: &UserEvent, _frame: Option<&Arc<str>>) {
        if !matches!(event, UserEvent::AppSettingsChanged) {
            return;
        }
        if let (Some(svc), Ok(rt)) = (self.0.upgrade(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move { svc.reload_settings().await });
        }
    }
}

/// The pause before retrying a write that lost a race: none at first (on one node the winner
/// is done by then), then a random pause growing to tens of milliseconds, so that writers
/// racing from several nodes (each retry a round trip to the database) stop meeting in
/// lockstep and none of them starves.
async fn retry_pause(attempt: usize) {
    if attempt < 2 {
        tokio::task::yield_now().await;
        return;
    }
    let cap_ms = 1u64 << attempt.min(6);
    let ms = rand::random_range(0..=cap_ms);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// `user.updated` for a written user (its `online` is set by the write cycle).
pub(crate) fn updated(user: &User) -> UserEvent {
    UserEvent::Updated {
        user: user.clone(),
        online: false,
    }
}

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
    pub(crate) presence: Arc<dyn Presence>,
    /// The app settings as last read or saved, with their stored version.
    settings: RwLock<(u64, Arc<AppSettings>)>,
    pub(crate) secret: Secret,
    api_key: String,
    max_answer_bytes: usize,
    /// Other nodes save the app settings too: rule checks re-read them first.
    shared_settings: bool,
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
        .filter(|o| o.holds_name())
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

pub(crate) fn deleted(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::DoesNotExist,
        format!("the user {id} was deleted"),
    )
}

pub(crate) fn missing(id: &str) -> ApiError {
    ApiError::new(ErrorCode::DoesNotExist, format!("user {id} does not exist"))
}

pub(crate) fn not_allowed_role(id: &str, role: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotAllowed,
        format!("User '{id}' with role '{role}' is not allowed to perform action UpdateUserRole"),
    )
}

/// Team roles compared with "none" and "empty" as the same.
pub(crate) fn same_team_roles(
    a: Option<&std::collections::BTreeMap<String, String>>,
    b: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    a.filter(|m| !m.is_empty()) == b.filter(|m| !m.is_empty())
}

pub(crate) fn same_teams(a: &[String], b: &[String]) -> bool {
    let a: HashSet<&String> = a.iter().collect();
    let b: HashSet<&String> = b.iter().collect();
    a == b
}

/// Fields a client may neither filter nor sort on: they would tell who is invisible, who was
/// revoked and when, or who is shadow banned (clients never see them on other users either).
pub const HIDDEN_FIELDS: &[&str] = &["invisible", "revoke_tokens_issued_before", "shadow_banned"];

/// Refuses a client's query that filters or sorts on a hidden field.
fn refuse_hidden_fields(payload: &Value) -> Result<(), ApiError> {
    fn walk(filter: &Value) -> Option<&str> {
        match filter {
            Value::Object(m) => m.iter().find_map(|(k, v)| {
                if HIDDEN_FIELDS.contains(&k.as_str()) {
                    Some(k.as_str())
                } else {
                    walk(v)
                }
            }),
            Value::Array(items) => items.iter().find_map(walk),
            _ => None,
        }
    }
    let in_filter = payload.get("filter_conditions").and_then(walk);
    let in_sort = payload
        .get("sort")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("field").and_then(Value::as_str))
        .find(|f| HIDDEN_FIELDS.contains(f));
    match in_filter.or(in_sort) {
        Some(field) => Err(ApiError::input(format!(
            "{field} cannot be used to filter or sort users"
        ))),
        None => Ok(()),
    }
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
            settings: RwLock::new((
                stored.version,
                Arc::new(AppSettings::from_stored(stored.settings)),
            )),
            secret,
            api_key,
            max_answer_bytes: crate::config::Config::defaults()
                .limits
                .max_query_response_bytes,
            shared_settings: false,
        })
    }

    /// The app settings are shared with other nodes (a cluster): token checks, connects,
    /// guest creation and name rules re-read them from the store before they decide, so that
    /// a change another node acknowledged (a revocation, guests disabled, unique names on)
    /// holds here at once, not once its event arrives.
    pub fn with_shared_settings(mut self) -> Self {
        self.shared_settings = true;
        self
    }

    /// Brings the cached app settings up to date when other nodes may have saved them.
    pub(crate) async fn sync_settings(&self) -> Result<(), ApiError> {
        if self.shared_settings {
            let stored = self.store.app_settings().await.map_err(store_error)?;
            self.adopt_settings(stored.version, stored.settings);
        }
        Ok(())
    }

    /// Keeps `settings` at `version` unless the cache holds a newer version.
    fn adopt_settings(&self, version: u64, settings: Map<String, Value>) {
        let mut cached = self.settings.write().unwrap_or_else(|p| p.into_inner());
        if cached.0 < version {
            *cached = (version, Arc::new(AppSettings::from_stored(settings)));
        }
    }

    /// Sets the largest query answer, in bytes of JSON (`limits.max_query_response_bytes`).
    pub fn with_max_answer_bytes(mut self, max: usize) -> Self {
        self.max_answer_bytes = max;
        self
    }

    /// The current app settings (shared: reading them copies nothing, as every connect does).
    pub fn settings(&self) -> Arc<AppSettings> {
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

    /// Sets the `online` of `user.updated` events from presence (events are made without it),
    /// asking presence once for the whole batch.
    async fn with_presence(&self, events: &mut [UserEvent]) {
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                UserEvent::Updated { user, .. } => Some(user.id.as_str()),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return;
        }
        let online = self.presence.online(&ids).await;
        let updated = events.iter_mut().filter_map(|e| match e {
            UserEvent::Updated { online, .. } => Some(online),
            _ => None,
        });
        for (slot, now) in updated.zip(online) {
            *slot = now;
        }
    }

    /// Runs `compute` against fresh reads until the store accepts the batch it builds, with
    /// the events `events_of` tells of its outcome: recorded with the batch for other nodes
    /// (when the bus has any), and handed to this node's subscribers once it is durable.
    pub(crate) async fn write_cycle<'a, T, F, E>(
        &'a self,
        mut compute: F,
        events_of: E,
    ) -> Result<T, ApiError>
    where
        F: FnMut(&'a Self) -> BoxedCompute<'a, T>,
        E: Fn(&T) -> Vec<UserEvent>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let (changes, out) = compute(self).await?;
            let mut events = events_of(&out);
            self.with_presence(&mut events).await;
            let encoded = events.iter().filter_map(|e| self.bus.encode(e)).collect();
            match self.store.apply_user_batch_emitting(changes, encoded).await {
                Ok(()) => {
                    for e in events {
                        self.bus.committed(e);
                    }
                    return Ok(out);
                }
                Err(StoreError::Conflict(id)) => {
                    tracing::debug!(user_id = %id, attempt, "concurrent write, retrying");
                    retry_pause(attempt).await;
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

    /// `GET /users`: a query; clients never see revocation fields nor others' invisibility.
    pub async fn query_users(
        &self,
        payload: &Value,
        caller: &Caller,
    ) -> Result<Vec<Map<String, Value>>, ApiError> {
        if *caller != Caller::Server {
            refuse_hidden_fields(payload)?;
        }
        let restricted = self.tenant_restricted(payload, caller).await?;
        let mut query = UserQuery::parse(restricted.as_ref().unwrap_or(payload))?;
        query.max_answer_bytes = self.max_answer_bytes;
        if query.reads_online() {
            // Asking a cluster's presence costs a round trip: only when the query needs it.
            query.online = self.presence.online_check().await;
        }
        query.invisible_offline = *caller != Caller::Server;
        let users = self.store.query_users(&query).await.map_err(store_error)?;
        let me = match caller {
            Caller::User(id) => Some(id.as_str()),
            _ => None,
        };
        let mut answer = AnswerSize::new(self.max_answer_bytes);
        let mut out = Vec::with_capacity(users.len());
        let wire = self.wire_all(&users).await;
        for (u, mut w) in users.iter().zip(wire) {
            if *caller == Caller::Server {
                w.insert(
                    "shadow_banned".into(),
                    Value::Bool(u.shadow_banned_at(crate::protocol::Timestamp::now())),
                );
            } else {
                w.remove("revoke_tokens_issued_before");
                if me != Some(u.id.as_str()) {
                    if u.invisible {
                        // Offline to others, and no activity to watch either.
                        w.insert("online".into(), Value::Bool(false));
                        w.remove("last_active");
                    }
                    w.remove("invisible");
                }
            }
            answer.add(&w)?;
            out.push(w);
        }
        Ok(out)
    }

    /// With multi-tenancy, a client's query sees only the users sharing a team with it (a
    /// caller without teams, only users without teams): the payload with its filter ANDed with
    /// that condition. `None` when nothing is restricted (the server, or multi-tenancy off).
    async fn tenant_restricted(
        &self,
        payload: &Value,
        caller: &Caller,
    ) -> Result<Option<Value>, ApiError> {
        if *caller == Caller::Server || !self.settings().multi_tenant() {
            return Ok(None);
        }
        let teams = match caller {
            Caller::User(id) => self
                .load(id)
                .await?
                .map(|s| s.user.teams)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let tenancy = if teams.is_empty() {
            serde_json::json!({"teams": {"$eq": []}})
        } else {
            serde_json::json!({"teams": {"$in": teams}})
        };
        let mut restricted = payload.clone();
        let filter = match payload.get("filter_conditions") {
            Some(f) if f.as_object().is_some_and(|m| !m.is_empty()) => {
                serde_json::json!({"$and": [f, tenancy]})
            }
            _ => tenancy,
        };
        if let Some(obj) = restricted.as_object_mut() {
            obj.insert("filter_conditions".into(), filter);
        }
        Ok(Some(restricted))
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
            let mut events = vec![UserEvent::AppSettingsChanged];
            if patch.contains_key("revoke_tokens_issued_before") {
                if let Some(before) = next.revoke_before() {
                    events.push(UserEvent::TokensRevoked {
                        user_id: None,
                        before,
                    });
                }
            }
            let encoded = events.iter().filter_map(|e| self.bus.encode(e)).collect();
            match self
                .store
                .save_app_settings_emitting(next.stored(), stored.version, encoded)
                .await
            {
                Ok(version) => break (version, next, events),
                Err(StoreError::SettingsChanged) if attempts < MAX_ATTEMPTS => attempts += 1,
                Err(e) => return Err(store_error(e)),
            }
        };
        let (version, next, events) = next;
        {
            let mut cached = self.settings.write().unwrap_or_else(|p| p.into_inner());
            // Concurrent saves finish in any order; the cache keeps the newest.
            if cached.0 < version {
                *cached = (version, Arc::new(next));
            }
        }
        for e in events {
            self.bus.committed(e);
        }
        Ok(())
    }

    /// Re-reads the app settings (another node saved them), keeping the newest version.
    pub async fn reload_settings(&self) {
        match self.store.app_settings().await {
            Ok(stored) => self.adopt_settings(stored.version, stored.settings),
            Err(e) => tracing::warn!(error = %e, "app settings not re-read"),
        }
    }

    /// Whether the store takes writes, for `/healthz`.
    pub fn store_health(&self) -> crate::store::StoreHealth {
        self.store.health()
    }
}
