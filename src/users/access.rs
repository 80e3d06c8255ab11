//! Who may do what: the one authorization check of every user operation. The server may do
//! anything; a client acts for itself only (writes its own user, mutes and blocks for itself)
//! and never bans nor sends custom events; an anonymous client does none of it.

use crate::protocol::{ApiError, ErrorCode};
use crate::users::service::Caller;

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write a user (upsert, partial update): the caller's own, for a client.
    UpdateUser,
    /// Send a custom event to a user: the server only, as with Stream.
    SendCustomEvent,
    /// Mute or unmute users: for the caller itself, for a client.
    MuteUser,
    /// Block or unblock users, list blocks: for the caller itself, for a client.
    BlockUser,
    /// Ban, unban, query bans: the server only.
    BanUser,
}

impl Action {
    /// Whether a client may do this for itself (never for others).
    fn open_to_clients(self) -> bool {
        matches!(self, Self::UpdateUser | Self::MuteUser | Self::BlockUser)
    }

    /// The action's name in refusals, as Stream's permission errors name it.
    fn name(self) -> &'static str {
        match self {
            Self::UpdateUser => "UpdateUser",
            Self::SendCustomEvent => "SendCustomEvent",
            Self::MuteUser => "MuteUser",
            Self::BlockUser => "BlockUser",
            Self::BanUser => "BanUser",
        }
    }
}

/// Checks that `caller` may do `action` for (or on) the user `on`; `on: None` asks whether
/// the caller may do it at all, before the request's body is read.
pub fn authorize(caller: &Caller, action: Action, on: Option<&str>) -> Result<(), ApiError> {
    match caller {
        Caller::Server => Ok(()),
        Caller::Anonymous => Err(ApiError::new(
            ErrorCode::NotAllowed,
            "anonymous users are not allowed to perform this action",
        )),
        Caller::User(me) if !action.open_to_clients() => Err(ApiError::new(
            ErrorCode::NotAllowed,
            format!(
                "User '{me}' is not allowed to perform action {} (server-side only)",
                action.name()
            ),
        )),
        Caller::User(me) => match on {
            Some(id) if id != me => Err(ApiError::new(
                ErrorCode::NotAllowed,
                match action {
                    Action::UpdateUser => {
                        format!("User '{me}' is not allowed to update user '{id}'")
                    }
                    _ => format!(
                        "User '{me}' is not allowed to perform action {} for user '{id}'",
                        action.name()
                    ),
                },
            )),
            _ => Ok(()),
        },
    }
}

/// The user a call of `action` acts for: the user `given` names (a client may name only
/// itself), or the client itself when none is named. A back end must name one (400, code 4).
pub fn acting_user(
    caller: &Caller,
    action: Action,
    given: Option<&str>,
) -> Result<String, ApiError> {
    authorize(caller, action, given)?;
    match (caller, given) {
        (_, Some(id)) => Ok(id.to_owned()),
        (Caller::User(me), None) => Ok(me.clone()),
        _ => Err(ApiError::input("user_id is a required field")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_act_for_themselves_only_and_never_ban() {
        let me = Caller::User("me".into());
        assert!(authorize(&me, Action::MuteUser, Some("me")).is_ok());
        assert!(authorize(&me, Action::MuteUser, None).is_ok());
        let other = authorize(&me, Action::BlockUser, Some("you")).unwrap_err();
        assert_eq!(other.code, ErrorCode::NotAllowed);
        for server_only in [Action::BanUser, Action::SendCustomEvent] {
            assert!(authorize(&me, server_only, Some("me")).is_err());
            assert!(authorize(&Caller::Server, server_only, Some("x")).is_ok());
        }
        let anon = authorize(&Caller::Anonymous, Action::UpdateUser, None).unwrap_err();
        assert_eq!(anon.code, ErrorCode::NotAllowed);
        assert_eq!(acting_user(&me, Action::MuteUser, None).unwrap(), "me");
        let server = acting_user(&Caller::Server, Action::MuteUser, None).unwrap_err();
        assert_eq!(server.code, ErrorCode::InputError);
        assert_eq!(
            acting_user(&Caller::Server, Action::BlockUser, Some("x")).unwrap(),
            "x"
        );
    }
}
