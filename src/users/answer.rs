//! The size bound of a query answer (`limits.max_query_response_bytes`), counted user by
//! user as the answer is built, without encoding it twice.

use serde_json::{Map, Value};

use crate::protocol::{ApiError, ErrorCode};

/// The running size of a query answer, against its bound. Users stored before the size
/// bounds of a user may be far larger than a user can be now: a page of them is refused
/// (413, code 22) rather than cut short, so that a client paging by `offset` never skips a
/// user without knowing.
pub struct AnswerSize {
    bytes: usize,
    max: usize,
}

impl AnswerSize {
    /// An empty answer that may grow to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { bytes: 0, max }
    }

    /// Adds one user's wire form (its JSON encoding and a separating comma).
    pub fn add(&mut self, wire: &Map<String, Value>) -> Result<(), ApiError> {
        let mut counter = ByteCounter(0);
        // Writing into a counter cannot fail: a map of JSON values always encodes.
        let _ = serde_json::to_writer(&mut counter, wire);
        self.bytes = self.bytes.saturating_add(counter.0 + 1);
        if self.bytes > self.max {
            return Err(too_large(self.max));
        }
        Ok(())
    }
}

/// The refusal of an answer over `max` bytes (413, code 22).
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooBig,
        format!(
            "the answer would be larger than {max} bytes: ask for fewer users (a smaller limit)"
        ),
    )
}

/// An `io::Write` that only counts.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bounds::{self, MAX_ROLE_BYTES, MAX_TEAMS, MAX_TEAM_BYTES, MAX_USER_BYTES};
    use crate::model::user::User;
    use crate::protocol::Timestamp;
    use serde_json::json;

    /// The largest user the bounds allow, as a query returns it.
    fn largest_legal_user(i: usize) -> Map<String, Value> {
        let now = Timestamp::now();
        let mut u = User::new(&format!("{i:0>255}"), now);
        u.teams = (0..MAX_TEAMS)
            .map(|t| format!("{t:0>width$}", width = MAX_TEAM_BYTES))
            .collect();
        u.teams_role = Some(
            u.teams
                .iter()
                .map(|t| (t.clone(), "r".repeat(MAX_ROLE_BYTES)))
                .collect(),
        );
        u.last_active = Some(now);
        u.deactivated_at = Some(now);
        u.revoke_tokens_issued_before = Some(now);
        u.custom.insert("c".into(), json!(""));
        let room = MAX_USER_BYTES - bounds::user_size(&u);
        u.custom.insert("c".into(), json!("x".repeat(room)));
        assert_eq!(bounds::user_size(&u), MAX_USER_BYTES);
        u.to_wire(true)
    }

    #[test]
    fn the_default_bound_fits_every_page_of_users_within_their_bounds() {
        let max = crate::config::Config::defaults()
            .limits
            .max_query_response_bytes;
        let mut answer = AnswerSize::new(max);
        for i in 0..crate::model::query::MAX_LIMIT {
            answer.add(&largest_legal_user(i)).unwrap();
        }
    }

    #[test]
    fn counts_each_user_with_its_separator() {
        let user = json!({"id": "a"});
        let user = user.as_object().unwrap();
        let one = serde_json::to_vec(user).unwrap().len() + 1;
        let mut answer = AnswerSize::new(2 * one);
        assert!(answer.add(user).is_ok());
        assert!(answer.add(user).is_ok());
        let err = answer.add(user).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooBig);
    }
}
