//! Load balancing: the order in which one request tries the upstreams.
//!
//! `round-robin` rotates the starting upstream per request; `least-inflight` prefers the
//! upstream with the fewest requests in flight (from every worker), ties broken by the
//! same rotation so equal upstreams still alternate. Either way, usable upstreams
//! (healthy, breaker not open) come first and unusable ones stay as a last resort.
//! Pure: it reads a snapshot and never waits.

use smallvec::SmallVec;

/// How requests are spread over upstreams (`PROXY_BALANCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// Each request starts at the next upstream in turn.
    RoundRobin,
    /// Each request starts at the upstream with the fewest requests in flight.
    LeastInflight,
}

/// One upstream's state as the balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub in_flight: usize,
    pub usable: bool,
}

/// Indices of `loads` in the order to try them; `turn` is this request's rotation.
pub fn order(balance: Balance, turn: usize, loads: &[Load]) -> SmallVec<[usize; 8]> {
    let n = loads.len();
    let mut idx: SmallVec<[usize; 8]> = (0..n).map(|i| (i + turn) % n.max(1)).collect();
    // Stable sorts: rotation order survives among equals.
    if balance == Balance::LeastInflight {
        idx.sort_by_key(|&i| loads[i].in_flight);
    }
    idx.sort_by_key(|&i| !loads[i].usable);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(v: &[(usize, bool)]) -> Vec<Load> {
        v.iter()
            .map(|&(in_flight, usable)| Load { in_flight, usable })
            .collect()
    }

    #[test]
    fn round_robin_rotates_and_puts_unusable_last() {
        let l = loads(&[(0, true), (5, true), (0, true)]);
        assert_eq!(&order(Balance::RoundRobin, 0, &l)[..], &[0, 1, 2]);
        assert_eq!(&order(Balance::RoundRobin, 1, &l)[..], &[1, 2, 0]);
        assert_eq!(&order(Balance::RoundRobin, 5, &l)[..], &[2, 0, 1]);
        let l = loads(&[(0, false), (0, true), (0, true)]);
        assert_eq!(&order(Balance::RoundRobin, 0, &l)[..], &[1, 2, 0]);
    }

    #[test]
    fn least_inflight_prefers_the_idlest_and_rotates_ties() {
        let l = loads(&[(3, true), (1, true), (1, true), (0, false)]);
        assert_eq!(&order(Balance::LeastInflight, 0, &l)[..], &[1, 2, 0, 3]);
        assert_eq!(&order(Balance::LeastInflight, 2, &l)[..], &[2, 1, 0, 3]);
        assert!(order(Balance::LeastInflight, 7, &[]).is_empty());
    }
}
