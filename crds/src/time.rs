//! Wall-clock time as the store sees it: milliseconds since the Unix epoch.
//!
//! Records carry absolute wall-clock instants (a binding's expiry must survive a restart), so
//! they use [`UnixMillis`] rather than `Instant`. Sans-IO code receives the current value as an
//! input; only drivers call [`UnixMillis::now`].

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The current wall-clock time. Only drivers should call this.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// This instant plus a duration, saturating.
    pub fn plus(self, d: Duration) -> Self {
        UnixMillis(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Time from `self` until `later`, zero when `later` is not after `self`.
    pub fn until(self, later: UnixMillis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// RFC 1123 date as SIP's `Date` header wants it: `Sat, 21 Nov 2026 10:00:00 GMT`.
    pub fn to_sip_date(self) -> String {
        let secs = i64::try_from(self.as_secs()).unwrap_or(i64::MAX);
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 GMT".to_owned())
    }

    /// RFC 3339 text (UTC, second precision), for APIs and logs.
    pub fn to_rfc3339(self) -> String {
        let secs = i64::try_from(self.as_secs()).unwrap_or(i64::MAX);
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(UnixMillis(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            UnixMillis(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            UnixMillis(1_795_000_000_999).to_rfc3339(),
            "2026-11-18T11:06:40Z"
        );
    }

    #[test]
    fn sip_date() {
        assert_eq!(
            UnixMillis(1_795_000_000_999).to_sip_date(),
            "Wed, 18 Nov 2026 11:06:40 GMT"
        );
    }

    #[test]
    fn until_saturates() {
        assert_eq!(UnixMillis(10).until(UnixMillis(5)), Duration::ZERO);
        assert_eq!(
            UnixMillis(5).until(UnixMillis(1005)),
            Duration::from_secs(1)
        );
    }
}
