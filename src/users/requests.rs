//! Typed requests: the bodies of user operations decoded and checked by the listeners
//! (admin REST and WebSocket through the dispatch table, client REST) before any rule runs,
//! so the service works on values that are already well-formed. Errors are Stream's input
//! errors (code 4), worded as before the split. Query payloads and app settings patches stay
//! documents: the service interprets them field by field (`model::query`, `settings`).

use serde_json::{Map, Value};

use crate::model::bounds;
use crate::model::moderation::MAX_TIMEOUT_MINUTES;
use crate::model::user::{user_id_of, validate_id, SettableFields};
use crate::protocol::{ApiError, Timestamp};
use crate::users::patch::Patch;
use crate::users::service::{Caller, MAX_BATCH};

/// Most users in one export task.
pub const MAX_EXPORT: usize = 25;

/// How a user is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Marked deleted, data kept, restorable.
    Soft,
    /// Marked deleted, personal fields nulled, id tombstoned.
    Pruning,
    /// Erased; only a tombstone of the id stays.
    Hard,
}

impl DeleteMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "soft" => Some(Self::Soft),
            "pruning" => Some(Self::Pruning),
            "hard" => Some(Self::Hard),
            _ => None,
        }
    }
}

/// An optional string field; empty counts as absent.
fn opt_str<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::input(format!("{key} must be a string"))),
    }
}

/// The same user twice in one batch: each change would expect the state the other one
/// replaces, so the batch could never apply.
fn duplicate_in_batch(id: &str) -> ApiError {
    ApiError::input(format!("user {id} appears more than once in the batch"))
}

/// `user_ids`: 1 to `max` valid ids, repeats dropped.
#[derive(Debug, Clone)]
pub struct UserIds(pub Vec<String>);

impl UserIds {
    /// Decodes `user_ids` of `body`.
    pub fn parse(body: &Value, max: usize) -> Result<Self, ApiError> {
        let arr = body
            .get("user_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::input("user_ids is a required field"))?;
        if arr.is_empty() || arr.len() > max {
            return Err(ApiError::input(format!(
                "user_ids must contain between 1 and {max} items"
            )));
        }
        let mut ids: Vec<String> = Vec::with_capacity(arr.len());
        for v in arr {
            let id = v
                .as_str()
                .ok_or_else(|| ApiError::input("user_ids must be strings"))?;
            validate_id(id)?;
            if !ids.iter().any(|x| x == id) {
                ids.push(id.to_owned());
            }
        }
        Ok(Self(ids))
    }
}

/// One user of an upsert: its id and the fields the write replaces.
#[derive(Debug, Clone)]
pub struct UpsertEntry {
    /// The id.
    pub id: String,
    /// The user object as sent (checked by [`SettableFields`]).
    pub fields: Map<String, Value>,
}

/// `POST /users`: up to 100 users to replace, each once.
#[derive(Debug, Clone)]
pub struct UpsertUsers(pub Vec<UpsertEntry>);

impl UpsertUsers {
    /// Decodes the `users` object of `body`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
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
        let mut entries: Vec<UpsertEntry> = Vec::with_capacity(users.len());
        for (key, value) in users {
            let fields = value
                .as_object()
                .ok_or_else(|| ApiError::input(format!("user {key} must be an object")))?;
            let id = user_id_of(fields)?;
            if entries.iter().any(|e| e.id == id) {
                return Err(duplicate_in_batch(&id));
            }
            SettableFields::parse(fields)?;
            entries.push(UpsertEntry {
                id,
                fields: fields.clone(),
            });
        }
        Ok(Self(entries))
    }
}

/// One user of a partial update.
#[derive(Debug, Clone)]
pub struct PatchEntry {
    /// The id.
    pub id: String,
    /// Its set and unset, without the revocation.
    pub patch: Patch,
    /// `revoke_tokens_issued_before` set (`Some(Some)`) or cleared (`Some(None)`).
    pub revoke: Option<Option<Timestamp>>,
}

/// `PATCH /users`: set/unset on up to 100 users, each once.
#[derive(Debug, Clone)]
pub struct PartialUpdate(pub Vec<PatchEntry>);

impl PartialUpdate {
    /// Decodes the `users` list of `body`; only the server may set server-owned fields.
    pub fn parse(body: &Value, caller: &Caller) -> Result<Self, ApiError> {
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
        let mut patches: Vec<PatchEntry> = Vec::with_capacity(entries.len());
        for entry in entries {
            let obj = entry
                .as_object()
                .ok_or_else(|| ApiError::input("each update must be an object"))?;
            let id = user_id_of(obj)?;
            if patches.iter().any(|p| p.id == id) {
                return Err(duplicate_in_batch(&id));
            }
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
            patches.push(PatchEntry { id, patch, revoke });
        }
        Ok(Self(patches))
    }
}

/// `POST /users/delete`: the users and how deeply to delete them.
#[derive(Debug, Clone)]
pub struct DeleteUsers {
    /// The users.
    pub ids: Vec<String>,
    /// How.
    pub mode: DeleteMode,
}

impl DeleteUsers {
    /// Decodes `user_ids`, `user`, `messages` and `conversations`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let UserIds(ids) = UserIds::parse(body, MAX_BATCH)?;
        let mode = opt_str(body, "user")?
            .map(|s| {
                DeleteMode::parse(s)
                    .ok_or_else(|| ApiError::input("user must be one of [soft pruning hard]"))
            })
            .transpose()?
            .unwrap_or(DeleteMode::Soft);
        let messages = opt_str(body, "messages")?;
        if messages.is_some_and(|m| DeleteMode::parse(m).is_none()) {
            return Err(ApiError::input(
                "messages must be one of [soft pruning hard]",
            ));
        }
        let conversations = opt_str(body, "conversations")?;
        if conversations.is_some_and(|c| c != "soft" && c != "hard") {
            return Err(ApiError::input("conversations must be one of [soft hard]"));
        }
        if mode == DeleteMode::Hard
            && (messages.is_some_and(|m| m != "hard") || conversations.is_some_and(|c| c != "hard"))
        {
            return Err(ApiError::input(
                "hard user deletion requires hard messages and conversations deletion",
            ));
        }
        Ok(Self { ids, mode })
    }
}

/// The options of a deactivate or reactivate.
#[derive(Debug, Clone, Default)]
pub struct LifecycleOptions {
    /// `created_by_id`: who did it, named in the event.
    pub created_by_id: Option<String>,
    /// `name`: a new name on the way back (reactivating one user).
    pub name: Option<String>,
}

impl LifecycleOptions {
    /// Decodes `created_by_id`, and `name` when `with_name` (single reactivation).
    pub fn parse(body: &Value, with_name: bool) -> Result<Self, ApiError> {
        let created_by_id = opt_str(body, "created_by_id")?.map(str::to_owned);
        let name = if with_name {
            let name = opt_str(body, "name")?;
            if let Some(n) = name {
                bounds::check_length("name", n.len(), bounds::MAX_NAME_BYTES)?;
            }
            name.map(str::to_owned)
        } else {
            None
        };
        Ok(Self {
            created_by_id,
            name,
        })
    }
}

/// `POST /users/{id}/event`: a custom event for one user, `{"event": {"type": …, …}}`.
#[derive(Debug, Clone)]
pub struct CustomEvent {
    /// The event object as sent; its `type` is a non-empty string.
    pub event: Map<String, Value>,
}

impl CustomEvent {
    /// Decodes the `event` object of `body`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let event = body
            .get("event")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::input("event is a required field"))?;
        match event.get("type") {
            Some(Value::String(t)) if !t.is_empty() => {}
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(ApiError::input("event.type is a required field"))
            }
            Some(_) => return Err(ApiError::input("event.type must be a string")),
        }
        Ok(Self {
            event: event.clone(),
        })
    }

    /// The event's type.
    pub fn kind(&self) -> &str {
        self.event.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

/// The user a moderation call acts for: `user_id` (or `user.id`) of the body, which a back
/// end must give and a client may give (its own id, checked by the service).
fn acting_user(body: &Value) -> Result<Option<String>, ApiError> {
    let id = match opt_str(body, "user_id")? {
        Some(id) => Some(id),
        None => match body.get("user") {
            Some(user @ Value::Object(_)) => opt_str(user, "id")?,
            _ => None,
        },
    };
    id.map(|id| validate_id(id).map(|()| id.to_owned()))
        .transpose()
}

/// The targets of a mute or unmute: `target_id` and/or `target_ids`, 1 to 100 valid ids,
/// repeats dropped.
fn targets(body: &Value) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = Vec::new();
    if let Some(id) = opt_str(body, "target_id")? {
        ids.push(id.to_owned());
    }
    match body.get("target_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for v in list {
                let id = v
                    .as_str()
                    .ok_or_else(|| ApiError::input("target_ids must be strings"))?;
                ids.push(id.to_owned());
            }
        }
        Some(_) => return Err(ApiError::input("target_ids must be a list of user ids")),
    }
    if ids.is_empty() {
        return Err(ApiError::input(
            "target_id or target_ids is a required field",
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        validate_id(&id)?;
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    if unique.len() > MAX_BATCH {
        return Err(ApiError::input(format!(
            "target_ids must contain at most {MAX_BATCH} items"
        )));
    }
    Ok(unique)
}

/// `POST /moderation/mute`: users to mute, for whom, and for how long.
#[derive(Debug, Clone)]
pub struct MuteUsers {
    /// The muting user (`user_id`); required of a back end.
    pub user_id: Option<String>,
    /// The users to mute.
    pub target_ids: Vec<String>,
    /// `timeout` in minutes (fractions allowed); `None`: until unmuted.
    pub timeout_minutes: Option<f64>,
}

impl MuteUsers {
    /// Decodes `target_id`/`target_ids`, `user_id` and `timeout`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let timeout_minutes = match body.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(m) if m > 0.0 && m <= MAX_TIMEOUT_MINUTES => Some(m),
                _ => {
                    return Err(ApiError::input(format!(
                    "timeout must be a number of minutes above 0 and at most {MAX_TIMEOUT_MINUTES}"
                )))
                }
            },
        };
        Ok(Self {
            user_id: acting_user(body)?,
            target_ids: targets(body)?,
            timeout_minutes,
        })
    }
}

/// `POST /moderation/unmute`: users to unmute, for whom.
#[derive(Debug, Clone)]
pub struct UnmuteUsers {
    /// The muting user (`user_id`); required of a back end.
    pub user_id: Option<String>,
    /// The users to unmute.
    pub target_ids: Vec<String>,
}

impl UnmuteUsers {
    /// Decodes `target_id`/`target_ids` and `user_id`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        Ok(Self {
            user_id: acting_user(body)?,
            target_ids: targets(body)?,
        })
    }
}

/// `POST /users/block` and `/users/unblock`: the user to block or unblock, for whom.
#[derive(Debug, Clone)]
pub struct BlockUser {
    /// The blocking user (`user_id`); required of a back end.
    pub user_id: Option<String>,
    /// `blocked_user_id`.
    pub blocked_user_id: String,
}

impl BlockUser {
    /// Decodes `blocked_user_id` and `user_id`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let blocked = opt_str(body, "blocked_user_id")?
            .ok_or_else(|| ApiError::input("blocked_user_id is a required field"))?;
        validate_id(blocked)?;
        Ok(Self {
            user_id: acting_user(body)?,
            blocked_user_id: blocked.to_owned(),
        })
    }
}

/// `POST /moderation/ban`: whom to ban, how, for how long.
#[derive(Debug, Clone)]
pub struct BanUser {
    /// `target_user_id`.
    pub target_user_id: String,
    /// `timeout` in minutes (fractions allowed); `None`: until unbanned.
    pub timeout_minutes: Option<f64>,
    /// `reason`.
    pub reason: Option<String>,
    /// `shadow`: a shadow ban.
    pub shadow: bool,
    /// `banned_by_id` (or `user_id`): who bans, for a back end.
    pub banned_by_id: Option<String>,
}

/// Longest ban reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// `target_user_id`, required (a ban without a target: 400, code 4).
fn ban_target(body: &Value) -> Result<String, ApiError> {
    let target = opt_str(body, "target_user_id")?
        .ok_or_else(|| ApiError::input("target_user_id is a required field"))?;
    validate_id(target)?;
    Ok(target.to_owned())
}

/// A boolean field, absent is false; `"true"`/`"false"` too (query strings).
fn opt_bool(body: &Value, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // Query strings: `true`, or Python's `True` as requests writes it.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s == "0" || s.is_empty() => {
            Ok(false)
        }
        Some(_) => Err(ApiError::input(format!("{key} must be true or false"))),
    }
}

impl BanUser {
    /// Decodes `target_user_id`, `timeout`, `reason`, `shadow` and `banned_by_id`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let target_user_id = ban_target(body)?;
        let timeout_minutes = match body.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(m) if m > 0.0 && m <= MAX_TIMEOUT_MINUTES => Some(m),
                _ => {
                    return Err(ApiError::input(format!(
                    "timeout must be a number of minutes above 0 and at most {MAX_TIMEOUT_MINUTES}"
                )))
                }
            },
        };
        let reason = opt_str(body, "reason")?.map(str::to_owned);
        if let Some(r) = &reason {
            bounds::check_length("reason", r.len(), MAX_REASON_BYTES)?;
        }
        let banned_by_id = match opt_str(body, "banned_by_id")? {
            Some(id) => Some(id.to_owned()),
            None => acting_user(body)?,
        };
        if let Some(id) = &banned_by_id {
            validate_id(id)?;
        }
        Ok(Self {
            target_user_id,
            timeout_minutes,
            reason,
            shadow: opt_bool(body, "shadow")?,
            banned_by_id,
        })
    }
}

/// `DELETE /moderation/ban`: whose ban to lift, and which (`shadow`).
#[derive(Debug, Clone)]
pub struct UnbanUser {
    /// `target_user_id`.
    pub target_user_id: String,
    /// Lift a shadow ban (`removeShadowBan`) rather than an open one.
    pub shadow: bool,
}

impl UnbanUser {
    /// Decodes `target_user_id` and `shadow` (from the query string, as the SDKs send them,
    /// turned into an object by the caller).
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        Ok(Self {
            target_user_id: ban_target(body)?,
            shadow: opt_bool(body, "shadow")?,
        })
    }
}

/// `POST /guest`: the guest's fields (an id is generated when none is given).
#[derive(Debug, Clone)]
pub struct CreateGuest {
    /// The id.
    pub id: String,
    /// The user object, role `guest`, without teams.
    pub fields: Map<String, Value>,
}

impl CreateGuest {
    /// Decodes the `user` object of `body`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
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
        fields.insert(
            "role".into(),
            Value::String(crate::model::user::GUEST_ROLE.into()),
        );
        fields.remove("teams");
        fields.remove("teams_role");
        Ok(Self { id, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_are_refused_before_any_rule_runs() {
        let dup = json!({"users": [{"id": "a", "set": {"x": 1}}, {"id": "a", "set": {"x": 2}}]});
        let e = PartialUpdate::parse(&dup, &Caller::Server).unwrap_err();
        assert!(e.detail.contains("more than once"), "{}", e.detail);
        let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("u{i}")).collect();
        assert!(UserIds::parse(&json!({ "user_ids": too_many }), MAX_BATCH).is_err());
        let ids = UserIds::parse(&json!({"user_ids": ["a", "b", "a"]}), MAX_BATCH).unwrap();
        assert_eq!(ids.0, ["a", "b"]);
        assert!(DeleteUsers::parse(
            &json!({"user_ids": ["a"], "user": "hard", "messages": "soft"})
        )
        .is_err());
        assert!(UpsertUsers::parse(&json!({"users": {}})).is_err());
    }

    #[test]
    fn only_the_server_may_set_a_revocation() {
        let body = json!({"users": [{"id": "a", "set": {"revoke_tokens_issued_before": null}}]});
        let server = PartialUpdate::parse(&body, &Caller::Server).unwrap();
        assert_eq!(server.0[0].revoke, Some(None));
        assert!(PartialUpdate::parse(&body, &Caller::User("a".into())).is_err());
    }

    #[test]
    fn guests_get_an_id_and_the_guest_role_and_no_teams() {
        let req = CreateGuest::parse(&json!({"user": {"teams": ["x"], "role": "admin"}})).unwrap();
        assert!(req.id.starts_with("guest-"));
        assert_eq!(req.fields["role"], "guest");
        assert!(!req.fields.contains_key("teams"));
    }
}
