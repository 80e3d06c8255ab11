//! Encoding of the events and frames the hub sends, each serialised once per event.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::protocol::Timestamp;
use crate::users::model::User;

/// A `user.*` event with the full user, plus extra top-level keys.
pub fn user_event(kind: &str, user: &User, online: bool, extra: Option<Value>) -> Arc<str> {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("user".into(), Value::Object(user.to_wire(online)));
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m.insert(k, v);
        }
    }
    m.insert("created_at".into(), json!(Timestamp::now().to_wire()));
    Value::Object(m).to_string().into()
}

/// `user.presence.changed`.
pub fn presence_event(user: &User, online: bool) -> Arc<str> {
    let last_active = user.last_active.map(|t| t.to_wire());
    json!({
        "type": "user.presence.changed",
        "user": {"id": user.id, "online": online, "last_active": last_active},
        "created_at": Timestamp::now().to_wire(),
    })
    .to_string()
    .into()
}

/// A `connection.error` frame.
pub fn connection_error(code: i32, message: &str, status: u16) -> Arc<str> {
    json!({
        "type": "connection.error",
        "connection_id": "",
        "created_at": Timestamp::now().to_wire(),
        "error": {"code": code, "message": message, "StatusCode": status,
                  "duration": "", "more_info": "", "details": []},
    })
    .to_string()
    .into()
}
