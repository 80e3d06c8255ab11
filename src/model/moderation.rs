//! What one user holds against others, and a ban held against it, stored on that user's
//! record so it is written, versioned, erased and exported with it: the users it muted (with
//! an optional expiry), the users it blocked, its ban (with an optional expiry). Expired mutes are not active from the instant they expire and are
//! dropped by the next write of the record.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::protocol::Timestamp;

/// Most users one user may mute, and most it may block (ours: Stream documents none). The
/// lists live in the user's record, which every connect reads.
pub const MAX_RELATIONS: usize = 1000;

/// Longest mute `timeout`, in minutes (ten years).
pub const MAX_TIMEOUT_MINUTES: f64 = 10.0 * 365.0 * 24.0 * 60.0;

/// A user muted by the record's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    /// The muted user.
    pub target_id: String,
    /// First muted.
    pub created_at: Timestamp,
    /// Last muted again (a new timeout, or none).
    pub updated_at: Timestamp,
    /// The mute ends then; `None`: until unmuted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

impl Mute {
    /// Whether the mute holds at `now`.
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    /// The wire form (Stream's `Mute`), with both users in their wire forms.
    pub fn to_wire(&self, user: &Map<String, Value>, target: &Map<String, Value>) -> Value {
        let mut m = json!({
            "user": user,
            "target": target,
            "created_at": self.created_at.to_wire(),
            "updated_at": self.updated_at.to_wire(),
        });
        if let Some(e) = self.expires {
            m["expires"] = json!(e.to_wire());
        }
        m
    }
}

/// A user blocked by the record's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The blocked user.
    pub blocked_user_id: String,
    /// When.
    pub created_at: Timestamp,
}

/// An app-wide ban of the record's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ban {
    /// When.
    pub created_at: Timestamp,
    /// The ban ends then; `None`: until unbanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// Why, as the back end put it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A shadow ban: no client is told.
    #[serde(default)]
    pub shadow: bool,
    /// Who banned (`banned_by_id`, or the admin client that called).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_by_id: Option<String>,
}

impl Ban {
    /// Whether the ban holds at `now`.
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// The instant `minutes` after `from` (fractions allowed).
pub fn after_minutes(from: Timestamp, minutes: f64) -> Timestamp {
    let micros = (minutes * 60_000_000.0).round() as i64;
    Timestamp(from.0 + time::Duration::microseconds(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mute_is_active_until_it_expires() {
        let now = Timestamp::now();
        let mut m = Mute {
            target_id: "t".into(),
            created_at: now,
            updated_at: now,
            expires: None,
        };
        assert!(m.active_at(after_minutes(now, 1e6)));
        m.expires = Some(after_minutes(now, 0.5));
        assert!(m.active_at(after_minutes(now, 0.49)));
        assert!(!m.active_at(after_minutes(now, 0.5)));
        assert_eq!(after_minutes(now, 1.0).unix() - now.unix(), 60);
    }
}
