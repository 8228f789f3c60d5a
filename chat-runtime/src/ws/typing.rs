//! How often one socket may pass typing indicators on to a channel's
//! members. Every indicator is sent to every member's sockets, so without a
//! bound one client could flood a large group, or push a member's socket
//! past its send queue.

use std::time::Duration;

use tokio::time::Instant;

/// A repeated `start` for one channel within this interval is absorbed.
/// Clients repeat `start` while the user types, often on every key.
pub const MIN_START_INTERVAL: Duration = Duration::from_secs(1);

/// Indicators a socket may pass on at once.
const BURST: f64 = 10.0;

/// Indicators a socket may pass on per second once the burst is spent.
const PER_SECOND: f64 = 5.0;

/// A token bucket of typing indicators for one socket.
pub struct TypingBudget {
    tokens: f64,
    refilled_at: Instant,
}

impl TypingBudget {
    pub fn new(now: Instant) -> Self {
        TypingBudget {
            tokens: BURST,
            refilled_at: now,
        }
    }

    /// Takes one indicator from the bucket. Returns false when it is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * PER_SECOND).min(BURST);
        self.refilled_at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let mut budget = TypingBudget::new(start);
        let passed = (0..100).filter(|_| budget.take(start)).count();
        assert_eq!(passed, BURST as usize);

        let later = start + Duration::from_secs(2);
        let passed = (0..100).filter(|_| budget.take(later)).count();
        assert_eq!(passed, (2.0 * PER_SECOND) as usize);
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let start = Instant::now();
        let mut budget = TypingBudget::new(start);
        let much_later = start + Duration::from_secs(3600);
        let passed = (0..100).filter(|_| budget.take(much_later)).count();
        assert_eq!(passed, BURST as usize);
    }
}
