//! Size bounds of a user (§5.1): the longest value of each built-in field, and the largest
//! JSON encoding of the user as a whole. Every write path (upsert, partial update, connect,
//! guest creation, reactivate with a new name) ends in these checks.
//!
//! A built-in field over its bound is an input error (400, code 4, naming the field); custom
//! data or the whole user over its bound is "payload too big" (413, code 22). Team membership
//! (`teams`, `teams_role`) has its own bounds (entries × length) and is left out of the
//! whole-user size, so that every legal team list stays legal: 250 teams of 100 bytes alone
//! encode to about 25 KiB.

use serde_json::{Map, Value};

use crate::model::user::User;
use crate::protocol::{ApiError, ErrorCode};

/// Largest custom-data size (its JSON encoding) a user may carry.
pub const MAX_CUSTOM_BYTES: usize = 5 * 1024;
/// Largest JSON encoding of a user's id, built-in and custom fields, without `teams` and
/// `teams_role`: custom data at its full 5 KiB plus room for the built-ins.
pub const MAX_USER_BYTES: usize = 8 * 1024;
/// Longest `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest `image` (a URL), in bytes.
pub const MAX_IMAGE_BYTES: usize = 2048;
/// Longest `language` (a language tag), in bytes.
pub const MAX_LANGUAGE_BYTES: usize = 64;
/// Longest `role` (and role in `teams_role`), in bytes.
pub const MAX_ROLE_BYTES: usize = 64;
/// Most teams a user may belong to (and most `teams_role` entries).
pub const MAX_TEAMS: usize = 250;
/// Longest team name (and `teams_role` key), in bytes.
pub const MAX_TEAM_BYTES: usize = 100;
/// Largest JSON encoding of `privacy_settings` and of `push_preferences`.
pub const MAX_SETTINGS_BYTES: usize = 1024;

/// The byte bound of a built-in string field, if it has one.
pub fn string_bound(field: &str) -> Option<usize> {
    match field {
        "name" => Some(MAX_NAME_BYTES),
        "image" => Some(MAX_IMAGE_BYTES),
        "language" => Some(MAX_LANGUAGE_BYTES),
        "role" => Some(MAX_ROLE_BYTES),
        _ => None,
    }
}

/// Refuses a built-in field value longer than `max` bytes (400, code 4).
pub fn check_length(field: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if len <= max {
        return Ok(());
    }
    Err(ApiError::input(format!(
        "user.{field} is {len} bytes long, the maximum is {max}"
    ))
    .with_field(
        &format!("user.{field}"),
        format!("must be at most {max} bytes long"),
    ))
}

/// Refuses a `privacy_settings` or `push_preferences` object whose JSON encoding is over
/// [`MAX_SETTINGS_BYTES`] (400, code 4).
pub fn check_settings(field: &str, value: &Value) -> Result<(), ApiError> {
    check_length(field, encoded_len(value), MAX_SETTINGS_BYTES)
}

/// Refuses custom data whose JSON encoding exceeds [`MAX_CUSTOM_BYTES`] (413, code 22).
pub fn check_custom_size(custom: &Map<String, Value>) -> Result<(), ApiError> {
    let size = serde_json::to_vec(custom).map(|v| v.len()).unwrap_or(0);
    if size > MAX_CUSTOM_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooBig,
            format!("user custom data is {size} bytes, more than the limit of 5KB"),
        ));
    }
    Ok(())
}

/// Refuses a user whose id, built-in and custom fields (teams aside) encode to more than
/// [`MAX_USER_BYTES`] (413, code 22).
pub fn check_user_size(user: &User) -> Result<(), ApiError> {
    let size = user_size(user);
    if size > MAX_USER_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooBig,
            format!(
                "user {} is {size} bytes without its teams, more than the limit of {}KB",
                user.id,
                MAX_USER_BYTES / 1024
            ),
        ));
    }
    Ok(())
}

/// The size [`check_user_size`] measures.
pub fn user_size(user: &User) -> usize {
    let mut fields = user.settable_fields();
    fields.remove("teams");
    fields.remove("teams_role");
    encoded_len(&Value::Object(fields))
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Timestamp;
    use serde_json::json;

    #[test]
    fn lengths_at_the_bound_pass_and_one_byte_more_fails() {
        assert!(check_length("name", MAX_NAME_BYTES, MAX_NAME_BYTES).is_ok());
        let err = check_length("name", MAX_NAME_BYTES + 1, MAX_NAME_BYTES).unwrap_err();
        assert_eq!(err.code, ErrorCode::InputError);
        assert!(err.fields.contains_key("user.name"));
    }

    #[test]
    fn teams_do_not_count_toward_the_user_size() {
        let mut u = User::new("a", Timestamp::now());
        u.teams = (0..MAX_TEAMS)
            .map(|i| format!("{i:0>width$}", width = MAX_TEAM_BYTES))
            .collect();
        u.teams_role = Some(
            u.teams
                .iter()
                .map(|t| (t.clone(), "r".repeat(MAX_ROLE_BYTES)))
                .collect(),
        );
        u.custom.insert("c".into(), json!("x".repeat(5000)));
        assert!(check_user_size(&u).is_ok());
        u.custom.insert("d".into(), json!("x".repeat(4000)));
        let err = check_user_size(&u).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooBig);
    }
}
