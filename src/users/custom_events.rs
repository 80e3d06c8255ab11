//! Custom events a back end sends to one user (`sendUserCustomEvent`): server-side only, never
//! one of Stream's own event types, at most 5 KiB; published on the event bus, which hands
//! them to every connection of the user on every node.

use serde_json::json;

use crate::events::UserEvent;
use crate::model::user::validate_id;
use crate::protocol::{ApiError, ErrorCode, Timestamp};
use crate::users::access::{authorize, Action};
use crate::users::requests::CustomEvent;
use crate::users::service::{missing, Caller, UsersService};

/// Largest custom event, in bytes of its JSON encoding (Stream's limit on custom data).
pub const MAX_CUSTOM_EVENT_BYTES: usize = 5 * 1024;

/// Longest custom event type, in bytes.
pub const MAX_TYPE_BYTES: usize = 255;

/// Refuses a type Stream keeps for its own events: every built-in type has a `.` in it
/// (`message.new`, `user.updated`, `health.check`), and Stream refuses any custom type that
/// does, so that a client can always tell its own events from the platform's.
fn check_type(kind: &str) -> Result<(), ApiError> {
    if kind.contains('.') {
        return Err(ApiError::input(format!(
            "event type '{kind}' is reserved: custom event types may not contain '.'"
        )));
    }
    if kind.len() > MAX_TYPE_BYTES {
        return Err(ApiError::input(format!(
            "event.type is longer than {MAX_TYPE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Refuses an event whose JSON encoding is over [`MAX_CUSTOM_EVENT_BYTES`] (413, code 22).
fn check_size(event: &CustomEvent) -> Result<(), ApiError> {
    let size = serde_json::to_vec(&event.event).map_or(0, |v| v.len());
    if size > MAX_CUSTOM_EVENT_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooBig,
            format!("the event is {size} bytes, more than the limit of 5KB"),
        ));
    }
    Ok(())
}

impl UsersService {
    /// `POST /users/{id}/event`: delivers `event` to every live connection of the user, on
    /// every node. The user must exist (16 otherwise); a user without connections simply
    /// receives nothing, as with Stream.
    pub async fn send_user_custom_event(
        &self,
        caller: &Caller,
        user_id: &str,
        event: &CustomEvent,
    ) -> Result<(), ApiError> {
        authorize(caller, Action::SendCustomEvent, Some(user_id))?;
        validate_id(user_id)?;
        check_type(event.kind())?;
        check_size(event)?;
        match self.load(user_id).await? {
            Some(stored) if stored.user.deleted_at.is_none() => {}
            _ => return Err(missing(user_id)),
        }
        let mut frame = event.event.clone();
        frame.insert("created_at".into(), json!(Timestamp::now().to_wire()));
        self.publish(UserEvent::Custom {
            user_id: user_id.to_owned(),
            event: frame,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn event(v: Value) -> CustomEvent {
        CustomEvent::parse(&json!({ "event": v })).unwrap()
    }

    #[test]
    fn stream_types_and_oversized_events_are_refused() {
        assert!(check_type("friendship_request").is_ok());
        for reserved in ["user.updated", "message.new", "health.check", "x."] {
            assert_eq!(
                check_type(reserved).unwrap_err().code,
                ErrorCode::InputError
            );
        }
        let fits = event(json!({"type": "t", "blob": "x".repeat(5000)}));
        assert!(check_size(&fits).is_ok());
        let big = event(json!({"type": "t", "blob": "x".repeat(MAX_CUSTOM_EVENT_BYTES)}));
        assert_eq!(check_size(&big).unwrap_err().code, ErrorCode::PayloadTooBig);
        assert!(CustomEvent::parse(&json!({"event": {"text": "no type"}})).is_err());
        assert!(CustomEvent::parse(&json!({"type": "t"})).is_err());
    }
}
