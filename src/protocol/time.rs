//! Timestamps on the wire: RFC 3339 UTC with microseconds and `Z` out; RFC 3339 with any
//! offset, or zone-less (taken as UTC), in.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A point in time, serialised as `2024-01-01T00:00:00.000000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to microseconds so it round-trips through the wire form.
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        let micros = now.microsecond();
        Self(now.replace_microsecond(micros).unwrap_or(now))
    }

    /// Parses any accepted input form.
    pub fn parse(s: &str) -> Option<Self> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Self(t.to_offset(UtcOffset::UTC)));
        }
        let zoneless = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(s, zoneless)
            .ok()
            .map(|t| Self(t.assume_utc()))
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> i64 {
        self.0.unix_timestamp()
    }

    /// The wire form.
    pub fn to_wire(&self) -> String {
        let f = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        self.0
            .to_offset(UtcOffset::UTC)
            .format(f)
            .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid timestamp"))
    }
}

/// Formats a duration the way Stream does (`"1.23ms"`).
pub fn duration_text(d: std::time::Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_input_forms() {
        let a = Timestamp::parse("2024-01-01T00:00:00.000Z").unwrap();
        let b = Timestamp::parse("2024-01-01T00:00:00+00:00").unwrap();
        let c = Timestamp::parse("2024-01-01T00:00:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_wire(), "2024-01-01T00:00:00.000000Z");
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
