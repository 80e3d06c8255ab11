//! App settings: the known keys, their validation and defaults, and unknown keys kept as given.

use serde_json::{json, Map, Value};

use crate::model::username::Enforcement;
use crate::protocol::{ApiError, Timestamp};

/// The app settings object as stored (only keys ever set).
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    raw: Map<String, Value>,
}

impl AppSettings {
    /// Wraps a stored object.
    pub fn from_stored(raw: Map<String, Value>) -> Self {
        Self { raw }
    }

    /// The stored object.
    pub fn stored(&self) -> &Map<String, Value> {
        &self.raw
    }

    fn flag(&self, key: &str) -> bool {
        self.raw.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// `enforce_unique_usernames`.
    pub fn enforcement(&self) -> Enforcement {
        self.raw
            .get("enforce_unique_usernames")
            .and_then(Value::as_str)
            .and_then(Enforcement::parse)
            .unwrap_or_default()
    }

    /// `disable_auth_checks`.
    pub fn auth_checks_disabled(&self) -> bool {
        self.flag("disable_auth_checks")
    }

    /// `multi_tenant_enabled`: users see only users of their teams, and no guests are made.
    pub fn multi_tenant(&self) -> bool {
        self.flag("multi_tenant_enabled")
    }

    /// `guest_user_creation_disabled`.
    pub fn guests_disabled(&self) -> bool {
        self.flag("guest_user_creation_disabled")
    }

    /// App-level `revoke_tokens_issued_before`.
    pub fn revoke_before(&self) -> Option<Timestamp> {
        self.raw
            .get("revoke_tokens_issued_before")
            .and_then(Value::as_str)
            .and_then(Timestamp::parse)
    }

    /// Validates a `PATCH /app` body and merges it in. Returns the new settings.
    pub fn merged(&self, patch: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut raw = self.raw.clone();
        for (key, value) in patch {
            let value = match key.as_str() {
                "enforce_unique_usernames" => {
                    let ok = value.as_str().and_then(Enforcement::parse).is_some();
                    if !ok {
                        return Err(ApiError::input(
                            "enforce_unique_usernames must be one of [no app team]",
                        ));
                    }
                    value.clone()
                }
                "disable_auth_checks"
                | "disable_permissions_checks"
                | "guest_user_creation_disabled" => {
                    if !value.is_boolean() {
                        return Err(ApiError::input(format!("{key} must be a boolean")));
                    }
                    value.clone()
                }
                "revoke_tokens_issued_before" => match value {
                    Value::Null => Value::Null,
                    Value::String(s) => match Timestamp::parse(s) {
                        Some(t) => Value::String(t.to_wire()),
                        None => {
                            return Err(ApiError::input(
                                "revoke_tokens_issued_before must be an RFC 3339 timestamp",
                            ))
                        }
                    },
                    _ => {
                        return Err(ApiError::input(
                            "revoke_tokens_issued_before must be a timestamp or null",
                        ))
                    }
                },
                _ => value.clone(),
            };
            raw.insert(key.clone(), value);
        }
        Ok(Self { raw })
    }

    /// The `app` object returned by `GET /app`: defaults, then everything stored. `api_key`
    /// is always the key the gateway runs with: a stored key of that name (an unknown key to
    /// `PATCH /app`) must not pass for it.
    pub fn to_wire(&self, api_key: &str) -> Map<String, Value> {
        let mut out = json!({
            "name": "chat-gateway",
            "api_key": api_key,
            "enforce_unique_usernames": "no",
            "disable_auth_checks": false,
            "disable_permissions_checks": false,
            "guest_user_creation_disabled": false,
            "revoke_tokens_issued_before": null,
            "event_hooks": [],
        })
        .as_object()
        .expect("object")
        .clone();
        for (k, v) in &self.raw {
            if k != "api_key" {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}
