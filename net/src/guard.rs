//! Admission control before any cryptography: a per-source handshake rate limit (a token
//! bucket) and an exponential back-off after failed authentication.
//!
//! Both are keyed by the peer's IP address and decided when a connection is established; a
//! refused client is told why and when to retry in the server preamble, and the host spends no
//! Diffie-Hellman operation on it. The table is bounded: when it is full, sources with nothing
//! to remember are forgotten first, and new sources are refused as busy if none can be.

use std::collections::HashMap;

use kaos_protocol::handshake::Verdict;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpAddress;

use crate::session::Admission;

/// Limits.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Handshakes a source may start at once.
    pub burst: u32,
    /// Handshakes per second a source may start, sustained.
    pub per_second: u32,
    /// Back-off after the first failed authentication; doubles with each further failure.
    pub backoff_first: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Most sources remembered.
    pub max_sources: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            burst: 128,
            per_second: 32,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_sources: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// Thousandths of a handshake.
    tokens: u64,
    refilled: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// The admission state of every recent source.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    sources: HashMap<IpAddress, Source>,
}

impl Guard {
    /// An empty table.
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            sources: HashMap::new(),
        }
    }

    fn full_bucket(&self) -> u64 {
        u64::from(self.config.burst) * 1000
    }

    /// Decides on a new connection from `ip`, taking one token if it proceeds.
    pub fn admit(&mut self, ip: IpAddress, now: Instant) -> Admission {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.config.max_sources {
            self.forget_idle(now);
            if self.sources.len() >= self.config.max_sources {
                return refuse(Verdict::Busy, Duration::from_secs(1));
            }
        }
        let full = self.full_bucket();
        let per_second = u64::from(self.config.per_second.max(1));
        let source = self.sources.entry(ip).or_insert(Source {
            tokens: full,
            refilled: now,
            failures: 0,
            blocked_until: None,
        });
        let elapsed = (now - source.refilled).total_millis();
        source.tokens = (source.tokens + elapsed * per_second).min(full);
        source.refilled = now;
        if let Some(until) = source.blocked_until.filter(|&u| u > now) {
            return refuse(Verdict::BackingOff, until - now);
        }
        if source.tokens < 1000 {
            let wait_ms = (1000 - source.tokens).div_ceil(per_second);
            return refuse(Verdict::RateLimited, Duration::from_millis(wait_ms));
        }
        source.tokens -= 1000;
        Admission::PROCEED
    }

    /// Records a failed authentication from `ip`: it backs off, longer after each failure.
    pub fn failed(&mut self, ip: IpAddress, now: Instant) {
        let (first, max) = (self.config.backoff_first, self.config.backoff_max);
        if let Some(source) = self.sources.get_mut(&ip) {
            source.failures = source.failures.saturating_add(1);
            let shift = source.failures.saturating_sub(1).min(16);
            let delay = Duration::from_millis(first.total_millis() << shift).min(max);
            source.blocked_until = Some(now + delay);
        }
    }

    /// Records a successful authentication from `ip`: its failures are forgotten.
    pub fn succeeded(&mut self, ip: IpAddress) {
        if let Some(source) = self.sources.get_mut(&ip) {
            source.failures = 0;
            source.blocked_until = None;
        }
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True if no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Forgets sources whose bucket has refilled and that are not backing off.
    fn forget_idle(&mut self, now: Instant) {
        let full = self.full_bucket();
        let per_second = u64::from(self.config.per_second.max(1));
        self.sources.retain(|_, s| {
            let tokens = s.tokens + (now - s.refilled).total_millis() * per_second;
            tokens < full || s.blocked_until.is_some_and(|u| u > now)
        });
    }
}

/// A refusal; the delay is at least 1 ms, because 0 means "do not retry".
fn refuse(verdict: Verdict, wait: Duration) -> Admission {
    Admission {
        verdict,
        retry_after_ms: u16::try_from(wait.total_millis())
            .unwrap_or(u16::MAX)
            .max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::Ipv4Address;

    const A: IpAddress = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1));
    const B: IpAddress = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2));

    fn small() -> GuardConfig {
        GuardConfig {
            burst: 3,
            per_second: 10,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            max_sources: 2,
        }
    }

    #[test]
    fn burst_then_rate_limited_then_refilled() {
        let mut g = Guard::new(small());
        let t0 = Instant::from_secs(100);
        for _ in 0..3 {
            assert_eq!(g.admit(A, t0), Admission::PROCEED);
        }
        let refused = g.admit(A, t0);
        assert_eq!(refused.verdict, Verdict::RateLimited);
        assert_eq!(
            refused.retry_after_ms, 100,
            "10 per second: one token per 100 ms"
        );
        assert_eq!(
            g.admit(B, t0),
            Admission::PROCEED,
            "other sources unaffected"
        );
        assert_eq!(
            g.admit(A, t0 + Duration::from_millis(100)),
            Admission::PROCEED
        );
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let mut g = Guard::new(small());
        let t0 = Instant::from_secs(100);
        let mut now = t0;
        for want_ms in [1000, 2000, 4000, 4000] {
            assert_eq!(g.admit(A, now), Admission::PROCEED);
            g.failed(A, now);
            let refused = g.admit(A, now);
            assert_eq!(refused.verdict, Verdict::BackingOff);
            assert_eq!(refused.retry_after_ms, want_ms);
            now += Duration::from_millis(want_ms.into());
        }
        assert_eq!(g.admit(A, now), Admission::PROCEED, "back-off over");
        g.succeeded(A);
        g.failed(A, now);
        assert_eq!(
            g.admit(A, now).retry_after_ms,
            1000,
            "success resets the count"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut g = Guard::new(small());
        let t0 = Instant::from_secs(100);
        let c = IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 3));
        assert_eq!(g.admit(A, t0), Admission::PROCEED);
        assert_eq!(g.admit(B, t0), Admission::PROCEED);
        assert_eq!(
            g.admit(c, t0).verdict,
            Verdict::Busy,
            "full of busy sources"
        );
        // Once A and B have refilled, they are forgotten to make room.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(g.admit(c, later), Admission::PROCEED);
        assert!(g.len() <= 2);
    }
}
