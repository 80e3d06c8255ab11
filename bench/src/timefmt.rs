//! RFC 3339 UTC timestamps without a date-time crate (the harness needs only "now").

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, the common clock child processes report on.
pub fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `now` as `2026-06-24T11:44:48.215772Z`.
pub fn rfc3339_now() -> String {
    rfc3339_from_micros(epoch_micros())
}

/// An epoch-microsecond instant as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339_from_micros(us: u64) -> String {
    let secs = us / 1_000_000;
    let frac = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_from_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_from_micros(1_782_301_488_215_772),
            "2026-06-24T11:44:48.215772Z"
        );
        assert_eq!(
            rfc3339_from_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
