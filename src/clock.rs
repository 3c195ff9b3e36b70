//! The wall clock used for session and token expiry, which tests can move forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// System time plus an offset that only tests change.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(+{}ms)", self.offset_ms.load(Ordering::Relaxed))
    }
}

impl Clock {
    /// The current time as Sallyport sees it.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Seconds since the unix epoch.
    pub fn unix(&self) -> u64 {
        crate::session::unix(self.now())
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}
