//! Encoding of the events and frames the hub sends, each serialised once per event.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::protocol::Timestamp;

/// A `user.*` event with the full user (its wire form), plus extra top-level keys.
pub fn user_event(kind: &str, user: Map<String, Value>, extra: Option<Value>) -> Arc<str> {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("user".into(), Value::Object(user));
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m.insert(k, v);
        }
    }
    m.insert("created_at".into(), json!(Timestamp::now().to_wire()));
    Value::Object(m).to_string().into()
}

/// `user.presence.changed`.
pub fn presence_event(user_id: &str, online: bool, last_active: Option<Timestamp>) -> Arc<str> {
    json!({
        "type": "user.presence.changed",
        "user": {"id": user_id, "online": online, "last_active": last_active.map(|t| t.to_wire())},
        "created_at": Timestamp::now().to_wire(),
    })
    .to_string()
    .into()
}

/// A `health.check` frame: the first frame of a connection carries `me`, the others not.
pub fn health_check(conn_id: &str, me: Option<Map<String, Value>>) -> String {
    let mut m = Map::new();
    m.insert("type".into(), json!("health.check"));
    m.insert("connection_id".into(), json!(conn_id));
    m.insert("cid".into(), json!("*"));
    m.insert("created_at".into(), json!(Timestamp::now().to_wire()));
    if let Some(me) = me {
        m.insert("me".into(), Value::Object(me));
    }
    Value::Object(m).to_string()
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
