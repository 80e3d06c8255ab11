//! The user object: built-in, server-owned and custom fields, validation of what clients
//! and back ends send, and the flat JSON form returned on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::bounds::{self, MAX_ROLE_BYTES, MAX_TEAMS, MAX_TEAM_BYTES};
use crate::model::moderation::{Ban, Block, Mute};
use crate::protocol::{ApiError, Timestamp};

pub use crate::model::bounds::{check_custom_size, MAX_CUSTOM_BYTES};

/// Longest user id, in bytes.
pub const MAX_ID_BYTES: usize = 255;
/// Deepest nesting of arrays and objects in one field's value. The store encodes a user with
/// three more levels around its fields and decodes with serde_json's limit of 128, so a deeper
/// value would be written but never read back.
pub const MAX_VALUE_DEPTH: usize = 32;

/// The role of guest users.
pub const GUEST_ROLE: &str = "guest";

/// Fields a client or back end may set directly.
pub const BUILT_IN_FIELDS: &[&str] = &[
    "role",
    "teams",
    "teams_role",
    "name",
    "image",
    "language",
    "invisible",
    "privacy_settings",
    "push_preferences",
];

/// Fields only the gateway writes.
pub const SERVER_OWNED_FIELDS: &[&str] = &[
    "created_at",
    "updated_at",
    "last_active",
    "online",
    "banned",
    "deactivated_at",
    "deleted_at",
    "revoke_tokens_issued_before",
    "devices",
    "mutes",
    "channel_mutes",
    "blocked_user_ids",
    "unread_count",
    "total_unread_count",
    "unread_channels",
    "unread_threads",
];

/// A stored user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The id, `[@A-Za-z0-9_-]{1,255}`.
    pub id: String,
    /// Role: `user`, `admin`, `guest`, `anonymous` or a custom role.
    pub role: String,
    /// Teams the user belongs to, in the order given.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Role per team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams_role: Option<BTreeMap<String, String>>,
    /// Display name; the field unique usernames are checked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Language code.
    #[serde(default)]
    pub language: String,
    /// Appears offline to others.
    #[serde(default)]
    pub invisible: bool,
    /// Opaque privacy settings object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_settings: Option<Value>,
    /// Opaque push preferences object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_preferences: Option<Value>,
    /// When the user was created.
    pub created_at: Timestamp,
    /// When the user last changed.
    pub updated_at: Timestamp,
    /// Last connect or last disconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<Timestamp>,
    /// The user's ban, expired or not (the wire's `banned`, `shadow_banned`, `ban_expires`
    /// say whether it holds). Records from before bans hold a `banned: false` that is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<Ban>,
    /// Set while deactivated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<Timestamp>,
    /// Set once deleted (soft or pruning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// Tokens of this user issued before this instant (or without `iat`) are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_tokens_issued_before: Option<Timestamp>,
    /// Everything else, stored as given.
    #[serde(default)]
    pub custom: Map<String, Value>,
    /// Users this user muted, in the order muted (`me.mutes`). Absent from records written
    /// before mutes existed, which read back with none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutes: Vec<Mute>,
    /// Users this user blocked, in the order blocked (`blocked_user_ids`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
}

impl User {
    /// A fresh user with default built-ins.
    pub fn new(id: &str, now: Timestamp) -> Self {
        Self {
            id: id.to_owned(),
            role: "user".to_owned(),
            teams: Vec::new(),
            teams_role: None,
            name: None,
            image: None,
            language: String::new(),
            invisible: false,
            privacy_settings: None,
            push_preferences: None,
            created_at: now,
            updated_at: now,
            last_active: None,
            ban: None,
            deactivated_at: None,
            deleted_at: None,
            revoke_tokens_issued_before: None,
            custom: Map::new(),
            mutes: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Whether the user holds its name for unique-username purposes.
    pub fn is_active(&self) -> bool {
        self.deactivated_at.is_none() && self.deleted_at.is_none()
    }

    /// Whether the user's name counts as held for unique usernames: active users other than
    /// guests. A guest's name is checked when it is given (a guest cannot take a held name)
    /// but holds nothing, so anonymous guests cannot reserve names for later users.
    pub fn holds_name(&self) -> bool {
        self.is_active() && self.role != GUEST_ROLE
    }

    /// The flat wire form: built-ins, server-owned fields, then custom fields at the top level.
    pub fn to_wire(&self, online: bool) -> Map<String, Value> {
        let mut m = self.settable_fields();
        m.insert("created_at".into(), ts(self.created_at));
        m.insert("updated_at".into(), ts(self.updated_at));
        if let Some(t) = self.last_active {
            m.insert("last_active".into(), ts(t));
        }
        let ban = self.open_ban_at(Timestamp::now());
        m.insert("banned".into(), Value::Bool(ban.is_some()));
        if let Some(t) = ban.and_then(|b| b.expires) {
            m.insert("ban_expires".into(), ts(t));
        }
        m.insert("online".into(), Value::Bool(online));
        if let Some(t) = self.deactivated_at {
            m.insert("deactivated_at".into(), ts(t));
        }
        if let Some(t) = self.deleted_at {
            m.insert("deleted_at".into(), ts(t));
        }
        if let Some(t) = self.revoke_tokens_issued_before {
            m.insert("revoke_tokens_issued_before".into(), ts(t));
        }
        m
    }

    /// The `me` object of a connection's first frame: the wire form plus the per-user lists
    /// and counters the SDK expects (always present, arrays where it calls `.length`).
    /// `mutes` is left empty: its entries carry the muted users, which the users service
    /// reads and fills in.
    pub fn to_me(&self, online: bool) -> Map<String, Value> {
        let mut m = self.to_wire(online);
        for key in ["devices", "mutes", "channel_mutes"] {
            m.insert(key.into(), Value::Array(Vec::new()));
        }
        m.insert(
            "blocked_user_ids".into(),
            serde_json::json!(self.blocked_ids()),
        );
        for key in [
            "unread_count",
            "total_unread_count",
            "unread_channels",
            "unread_threads",
        ] {
            m.insert(key.into(), Value::from(0));
        }
        m
    }

    /// The open (not shadow) ban that holds at `now`: the wire's `banned`.
    pub fn open_ban_at(&self, now: Timestamp) -> Option<&Ban> {
        self.ban.as_ref().filter(|b| !b.shadow && b.active_at(now))
    }

    /// Whether a shadow ban holds at `now`: `shadow_banned`, for the back end only.
    pub fn shadow_banned_at(&self, now: Timestamp) -> bool {
        self.ban
            .as_ref()
            .is_some_and(|b| b.shadow && b.active_at(now))
    }

    /// Ids of the users this user blocked, in the order blocked.
    pub fn blocked_ids(&self) -> Vec<&str> {
        self.blocks
            .iter()
            .map(|b| b.blocked_user_id.as_str())
            .collect()
    }

    /// The mutes that hold at `now`.
    pub fn active_mutes(&self, now: Timestamp) -> impl Iterator<Item = &Mute> {
        self.mutes.iter().filter(move |m| m.active_at(now))
    }

    /// The id, built-ins and custom fields as one flat object — what a partial update edits.
    pub fn settable_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("role".into(), Value::String(self.role.clone()));
        m.insert("teams".into(), serde_json::json!(self.teams));
        if let Some(tr) = &self.teams_role {
            m.insert("teams_role".into(), serde_json::json!(tr));
        }
        if let Some(n) = &self.name {
            m.insert("name".into(), Value::String(n.clone()));
        }
        if let Some(i) = &self.image {
            m.insert("image".into(), Value::String(i.clone()));
        }
        m.insert("language".into(), Value::String(self.language.clone()));
        m.insert("invisible".into(), Value::Bool(self.invisible));
        if let Some(p) = &self.privacy_settings {
            m.insert("privacy_settings".into(), p.clone());
        }
        if let Some(p) = &self.push_preferences {
            m.insert("push_preferences".into(), p.clone());
        }
        for (k, v) in &self.custom {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    /// Replaces id-independent settable fields with those of `fields` (full replace):
    /// built-ins not given return to their defaults, custom fields not given are dropped.
    /// Server-owned keys in `fields` are ignored. The result must fit the size bounds
    /// (`model::bounds`); on an error `self` is left half-replaced and must be dropped.
    pub fn replace_settable(&mut self, fields: &Map<String, Value>) -> Result<(), ApiError> {
        let parsed = SettableFields::parse(fields)?;
        self.role = parsed.role.unwrap_or_else(|| "user".to_owned());
        self.teams = parsed.teams.unwrap_or_default();
        self.teams_role = parsed.teams_role;
        self.name = parsed.name;
        self.image = parsed.image;
        self.language = parsed.language.unwrap_or_default();
        self.invisible = parsed.invisible.unwrap_or(false);
        self.privacy_settings = parsed.privacy_settings;
        self.push_preferences = parsed.push_preferences;
        self.custom = parsed.custom;
        bounds::check_user_size(self)
    }
}

fn ts(t: Timestamp) -> Value {
    Value::String(t.to_wire())
}

/// The settable part of a user, parsed and validated from a JSON object.
#[derive(Debug, Default)]
pub struct SettableFields {
    /// `role`, when given.
    pub role: Option<String>,
    /// `teams`, when given.
    pub teams: Option<Vec<String>>,
    /// `teams_role`, when given.
    pub teams_role: Option<BTreeMap<String, String>>,
    /// `name`, when given.
    pub name: Option<String>,
    /// `image`, when given.
    pub image: Option<String>,
    /// `language`, when given.
    pub language: Option<String>,
    /// `invisible`, when given.
    pub invisible: Option<bool>,
    /// `privacy_settings`, when given.
    pub privacy_settings: Option<Value>,
    /// `push_preferences`, when given.
    pub push_preferences: Option<Value>,
    /// Custom fields.
    pub custom: Map<String, Value>,
}

impl SettableFields {
    /// Parses the settable fields of `fields`, skipping `id` and server-owned keys.
    pub fn parse(fields: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut out = Self::default();
        for (key, value) in fields {
            if too_deep(value, MAX_VALUE_DEPTH) {
                let key: String = key.chars().take(64).collect();
                return Err(ApiError::input(format!(
                    "user.{key} is nested more than {MAX_VALUE_DEPTH} levels deep"
                )));
            }
            if value.is_null() && key != "teams_role" {
                // A null built-in means "not given"; a null custom field is kept as null.
                if BUILT_IN_FIELDS.contains(&key.as_str()) {
                    continue;
                }
            }
            match key.as_str() {
                "id" => {}
                "role" => out.role = Some(role(value)?),
                "teams" => out.teams = Some(teams(value)?),
                "teams_role" => out.teams_role = teams_role(value)?,
                "name" => out.name = Some(string_field("name", value)?),
                "image" => out.image = Some(string_field("image", value)?),
                "language" => out.language = Some(string_field("language", value)?),
                "invisible" => {
                    out.invisible = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| type_error("invisible", "boolean"))?,
                    )
                }
                "privacy_settings" | "push_preferences" => {
                    if !value.is_object() {
                        return Err(type_error(key, "object"));
                    }
                    bounds::check_settings(key, value)?;
                    if key == "privacy_settings" {
                        check_privacy_settings(value)?;
                        out.privacy_settings = Some(value.clone());
                    } else {
                        out.push_preferences = Some(value.clone());
                    }
                }
                k if SERVER_OWNED_FIELDS.contains(&k) => {}
                _ => {
                    out.custom.insert(key.clone(), value.clone());
                }
            }
        }
        check_custom_size(&out.custom)?;
        Ok(out)
    }
}

/// Whether a value nests arrays and objects more than `levels` deep (a scalar is level 0).
fn too_deep(value: &Value, levels: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(m) => Box::new(m.values()),
        _ => return false,
    };
    levels == 0 || children.into_iter().any(|v| too_deep(v, levels - 1))
}

/// Checks a user id against `[@A-Za-z0-9_-]{1,255}`.
pub fn validate_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'@' || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        let shown: String = id.chars().take(300).collect();
        Err(ApiError::input(format!(
            "\"{shown}\" is not a valid user id. a-z, 0-9, @, _ and - are allowed."
        ))
        .with_field("user.id", "user.id is not a valid user id"))
    }
}

/// Reads the `id` of a user object.
pub fn user_id_of(fields: &Map<String, Value>) -> Result<String, ApiError> {
    match fields.get("id") {
        Some(Value::String(s)) if !s.is_empty() => {
            validate_id(s)?;
            Ok(s.clone())
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::input("user.id is a required field")
                .with_field("user.id", "user.id is a required field"))
        }
        Some(_) => Err(type_error("id", "string")),
    }
}

fn type_error(field: &str, ty: &str) -> ApiError {
    ApiError::input(format!("user.{field} must be a {ty}"))
        .with_field(&format!("user.{field}"), format!("must be a {ty}"))
}

/// A built-in string field, within its length bound.
fn string_field(field: &str, value: &Value) -> Result<String, ApiError> {
    let s = value.as_str().ok_or_else(|| type_error(field, "string"))?;
    if let Some(max) = bounds::string_bound(field) {
        bounds::check_length(field, s.len(), max)?;
    }
    Ok(s.to_owned())
}

fn role(value: &Value) -> Result<String, ApiError> {
    let r = value.as_str().ok_or_else(|| type_error("role", "string"))?;
    if r.is_empty() || r.len() > MAX_ROLE_BYTES {
        return Err(ApiError::input(format!(
            "user.role must be 1 to {MAX_ROLE_BYTES} characters"
        )));
    }
    Ok(r.to_owned())
}

fn teams(value: &Value) -> Result<Vec<String>, ApiError> {
    let arr = value
        .as_array()
        .ok_or_else(|| type_error("teams", "list of strings"))?;
    if arr.len() > MAX_TEAMS {
        return Err(ApiError::input(format!(
            "user.teams has {} entries, the maximum is {MAX_TEAMS}",
            arr.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(arr.len());
    for t in arr {
        let t = t
            .as_str()
            .ok_or_else(|| type_error("teams", "list of strings"))?;
        if t.is_empty() || t.len() > MAX_TEAM_BYTES {
            return Err(ApiError::input(format!(
                "team names must be 1 to {MAX_TEAM_BYTES} bytes long"
            )));
        }
        if !out.iter().any(|x| x == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

fn teams_role(value: &Value) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    let obj = value
        .as_object()
        .ok_or_else(|| type_error("teams_role", "map of team to role"))?;
    if obj.len() > MAX_TEAMS {
        return Err(ApiError::input(format!(
            "user.teams_role has {} entries, the maximum is {MAX_TEAMS}",
            obj.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (team, role) in obj {
        let role = role
            .as_str()
            .ok_or_else(|| type_error("teams_role", "map of team to role"))?;
        if team.is_empty() || team.len() > MAX_TEAM_BYTES {
            return Err(ApiError::input(format!(
                "teams_role team names must be 1 to {MAX_TEAM_BYTES} bytes long"
            )));
        }
        if role.is_empty() || role.len() > MAX_ROLE_BYTES {
            return Err(ApiError::input(format!(
                "teams_role roles must be 1 to {MAX_ROLE_BYTES} bytes long"
            )));
        }
        out.insert(team.clone(), role.to_owned());
    }
    Ok(Some(out))
}

/// The kinds of `privacy_settings` Stream knows, each `{"enabled": bool}`.
pub const PRIVACY_SETTINGS: &[&str] = &["typing_indicators", "read_receipts", "delivery_receipts"];

/// Refuses `privacy_settings` that are not Stream's shape.
fn check_privacy_settings(value: &Value) -> Result<(), ApiError> {
    let Some(settings) = value.as_object() else {
        return Err(type_error("privacy_settings", "object"));
    };
    for (kind, setting) in settings {
        if !PRIVACY_SETTINGS.contains(&kind.as_str()) {
            return Err(ApiError::input(format!(
                "privacy_settings.{kind} is not one of [{}]",
                PRIVACY_SETTINGS.join(" ")
            )));
        }
        let shape_ok = setting.as_object().is_some_and(|s| {
            s.iter()
                .all(|(k, v)| k == "enabled" && (v.is_boolean() || v.is_null()))
        });
        if !shape_ok {
            return Err(ApiError::input(format!(
                "privacy_settings.{kind} must be {{\"enabled\": true|false}}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use serde_json::json;

    #[test]
    fn ids() {
        assert!(validate_id("alice-1_@x").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("é").is_err());
        assert!(validate_id(&"a".repeat(255)).is_ok());
        assert!(validate_id(&"a".repeat(256)).is_err());
    }

    #[test]
    fn full_replace_drops_custom_and_resets_role() {
        let mut u = User::new("a", Timestamp::now());
        let first = json!({"id":"a","role":"admin","color":"red","teams":["x"]});
        u.replace_settable(first.as_object().unwrap()).unwrap();
        assert_eq!(u.role, "admin");
        let second = json!({"id":"a","name":"A"});
        u.replace_settable(second.as_object().unwrap()).unwrap();
        assert_eq!(u.role, "user");
        assert!(u.teams.is_empty());
        assert!(u.custom.is_empty());
        let wire = u.to_wire(false);
        assert_eq!(wire["name"], "A");
    }

    /// Regression: a value nested beyond what the store decodes (via connect's `json`, whose
    /// envelope is shallow) was stored and then broke every query over the users.
    #[test]
    fn values_nested_beyond_the_limit_are_refused() {
        let nest = |n: usize| {
            let mut v = json!(1);
            for _ in 0..n {
                v = json!([v]);
            }
            v
        };
        let ok = json!({"id":"a","deep":nest(MAX_VALUE_DEPTH),"push_preferences":{"x":nest(30)}});
        assert!(SettableFields::parse(ok.as_object().unwrap()).is_ok());
        for key in ["deep", "push_preferences"] {
            let mut bad = ok.clone();
            bad[key] = json!({ "x": nest(MAX_VALUE_DEPTH) });
            let err = SettableFields::parse(bad.as_object().unwrap()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InputError, "{key}");
        }
    }

    /// Records written before mutes and blocks existed read back with none, and a user
    /// without any writes none (so such records stay byte-for-byte what they were).
    #[test]
    fn records_without_mutes_or_blocks_read_back() {
        let old = json!({"id": "a", "role": "user", "created_at": "2024-01-01T00:00:00Z",
                         "updated_at": "2024-01-01T00:00:00Z", "custom": {"k": 1}});
        let u: User = serde_json::from_value(old).unwrap();
        assert!(u.mutes.is_empty() && u.blocks.is_empty());
        let written = serde_json::to_value(&u).unwrap();
        assert!(written.get("mutes").is_none() && written.get("blocks").is_none());
        assert_eq!(u.to_me(false)["blocked_user_ids"], json!([]));
    }

    #[test]
    fn custom_size_limit() {
        let big = json!({"id":"a","blob":"x".repeat(6000)});
        let err = SettableFields::parse(big.as_object().unwrap()).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooBig);
    }
}
