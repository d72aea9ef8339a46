//! Per-client budgets for what a client can make the node keep (meetings): a token bucket
//! per client address, time passed in, the table bounded (the quietest clients go first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Meetings one client may create at once, and per minute after that.
pub const CREATE_BURST: f64 = 20.0;
pub const CREATE_PER_MINUTE: f64 = 10.0;
/// Clients remembered.
const MAX_CLIENTS: usize = 4096;

/// A token bucket per client.
#[derive(Debug, Default)]
pub struct PerClient {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl PerClient {
    /// Take one token for `client` at `now`; false when it has none left.
    pub fn take(&mut self, client: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&client) && self.buckets.len() >= MAX_CLIENTS {
            // Forget the client whose bucket refilled longest ago: it would be full again.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let (tokens, at) = self.buckets.entry(client).or_insert((CREATE_BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * CREATE_PER_MINUTE / 60.0;
        *tokens = (*tokens + refill).min(CREATE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_a_steady_rate_per_client() {
        let mut l = PerClient::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let made = (0..100).filter(|_| l.take(a, t0)).count();
        assert_eq!(made, CREATE_BURST as usize);
        assert!(l.take(b, t0), "another client has its own budget");
        assert!(!l.take(a, t0 + Duration::from_secs(1)));
        assert!(l.take(a, t0 + Duration::from_secs(7)), "one more after 6 s");
    }
}
