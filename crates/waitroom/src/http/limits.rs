//! The per-IP join rate limit (`--join-rate-per-ip`, `--join-burst-per-ip`): a GCRA token
//! bucket per client address, from the `governor` crate.
//!
//! Limits are generous by default (50 joins/s per IP, burst 500): many fans share one carrier
//! NAT or office address, and the limit is there against scripts, not people. Idle addresses are
//! dropped every `RETAIN_INTERVAL_MS`; under a flood from very many addresses the table holds
//! one entry per address seen within that interval.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How often addresses whose bucket refilled completely are dropped.
pub const RETAIN_INTERVAL_MS: u64 = 10_000;

pub struct JoinRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl JoinRateLimit {
    /// `None` when `per_second` or `burst` is 0 (disabled, as the API contract says of both).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst)?;
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        })
    }

    /// `Err(seconds to wait)` when `ip` is over its rate. An IPv6 /64 is one address (as for the
    /// connection cap: a subscriber holds a whole /64, and would otherwise get a bucket per
    /// address it makes up); an IPv4-mapped IPv6 address is its IPv4 address.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let key = crate::connections::address_key(ip);
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(self.clock.now());
            wait.as_secs().max(1)
        })
    }

    /// Drops addresses whose bucket is full again (call every `RETAIN_INTERVAL_MS`).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn tracked_addresses(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_address() {
        let limit = JoinRateLimit::new(1, 3).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.check(a), Ok(()));
        }
        assert_eq!(limit.check(a), Err(1));
        assert_eq!(limit.check(b), Ok(()));
        assert!(JoinRateLimit::new(0, 10).is_none());
        // One /64 shares one bucket, whatever address of it a join comes from.
        let limit = JoinRateLimit::new(1, 2).unwrap();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other_in_the_same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit.check(one), Ok(()));
        assert_eq!(limit.check(other_in_the_same_64), Ok(()));
        assert_eq!(limit.check(one), Err(1));
        assert_eq!(limit.check(next_64), Ok(()));
        assert_eq!(limit.tracked_addresses(), 2);
        assert!(JoinRateLimit::new(10, 0).is_none());
    }
}
