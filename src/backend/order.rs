//! The order in which one request tries a set of backends, for LLM providers
//! (`LLM_STRATEGY`, stickiness) and upstream agents (`PROXY_BALANCE`) alike.
//!
//! `RoundRobin` rotates the starting backend per request; `LeastInflight` prefers the
//! fewest requests in flight (ties broken by the same rotation, so equal backends still
//! alternate); `LeastLatency` prefers the lowest measured time to first token
//! (unmeasured ones first, so every backend gets measured); `Weighted` draws the first
//! in proportion to the caller's weights and orders the rest by weight. A sticky key
//! then pins one backend first. Whatever the policy, usable backends come first and
//! unusable ones stay as a last resort.
//!
//! Pure apart from the weighted draw: it reads a snapshot and never waits or locks.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use smallvec::SmallVec;

/// How requests are spread over backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastInflight,
    LeastLatency,
    Weighted,
}

impl Policy {
    /// Whether the policy starts each request at the next backend in turn.
    fn rotates(self) -> bool {
        matches!(self, Policy::RoundRobin | Policy::LeastInflight)
    }
}

/// One backend as the ordering sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub usable: bool,
    pub in_flight: usize,
    pub ttft: Option<Duration>,
    /// The weighted policy's score (ignored by the others).
    pub weight: f64,
}

/// The rotation shared by every worker.
#[derive(Debug, Default)]
pub struct Rotation(AtomicUsize);

impl Rotation {
    /// This request's turn (only rotating policies advance it).
    pub fn turn(&self, policy: Policy) -> usize {
        if policy.rotates() {
            self.0.fetch_add(1, Relaxed)
        } else {
            0
        }
    }
}

/// Indices of `candidates` in the order to try them; `turn` is this request's
/// rotation (see [`Rotation::turn`]), `sticky` a key that pins `key % n` first.
pub fn order(
    policy: Policy,
    turn: usize,
    candidates: &[Candidate],
    sticky: Option<u128>,
) -> SmallVec<[usize; 8]> {
    let n = candidates.len();
    let mut idx: SmallVec<[usize; 8]> = (0..n).map(|i| (i + turn) % n.max(1)).collect();
    // Stable sorts: rotation order survives among equals.
    match policy {
        Policy::RoundRobin => {}
        Policy::LeastInflight => idx.sort_by_key(|&i| candidates[i].in_flight),
        Policy::LeastLatency => {
            idx.sort_by_key(|&i| candidates[i].ttft.unwrap_or(Duration::ZERO));
        }
        Policy::Weighted => {
            // Weighted random draw for the first; the rest by weight.
            let total: f64 = candidates.iter().map(|c| c.weight).sum();
            let mut pick = fastrand::f64() * total;
            let mut first = 0;
            for (i, c) in candidates.iter().enumerate() {
                if pick < c.weight {
                    first = i;
                    break;
                }
                pick -= c.weight;
            }
            idx.sort_by(|&a, &b| candidates[b].weight.total_cmp(&candidates[a].weight));
            to_front(&mut idx, first);
        }
    }
    if let Some(key) = sticky {
        to_front(&mut idx, (key % n.max(1) as u128) as usize);
    }
    idx.sort_by_key(|&i| !candidates[i].usable);
    idx
}

fn to_front(idx: &mut SmallVec<[usize; 8]>, i: usize) {
    if let Some(pos) = idx.iter().position(|&x| x == i) {
        let f = idx.remove(pos);
        idx.insert(0, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(v: &[(usize, bool)]) -> Vec<Candidate> {
        v.iter()
            .map(|&(in_flight, usable)| Candidate {
                usable,
                in_flight,
                ttft: None,
                weight: 1.0,
            })
            .collect()
    }

    #[test]
    fn round_robin_rotates_and_puts_unusable_last() {
        let l = loads(&[(0, true), (5, true), (0, true)]);
        assert_eq!(&order(Policy::RoundRobin, 0, &l, None)[..], &[0, 1, 2]);
        assert_eq!(&order(Policy::RoundRobin, 1, &l, None)[..], &[1, 2, 0]);
        assert_eq!(&order(Policy::RoundRobin, 5, &l, None)[..], &[2, 0, 1]);
        let l = loads(&[(0, false), (0, true), (0, true)]);
        assert_eq!(&order(Policy::RoundRobin, 0, &l, None)[..], &[1, 2, 0]);
    }

    #[test]
    fn least_inflight_prefers_the_idlest_and_rotates_ties() {
        let l = loads(&[(3, true), (1, true), (1, true), (0, false)]);
        assert_eq!(
            &order(Policy::LeastInflight, 0, &l, None)[..],
            &[1, 2, 0, 3]
        );
        assert_eq!(
            &order(Policy::LeastInflight, 2, &l, None)[..],
            &[2, 1, 0, 3]
        );
        assert!(order(Policy::LeastInflight, 7, &[], None).is_empty());
    }

    #[test]
    fn sticky_pins_then_usable_first() {
        let l = loads(&[(0, true), (0, true), (0, true)]);
        assert_eq!(&order(Policy::RoundRobin, 0, &l, Some(7))[..], &[1, 0, 2]);
        let l = loads(&[(0, true), (0, false), (0, true)]);
        assert_eq!(&order(Policy::RoundRobin, 0, &l, Some(7))[..], &[0, 2, 1]);
    }

    #[test]
    fn rotation_advances_only_for_rotating_policies() {
        let r = Rotation::default();
        assert_eq!(r.turn(Policy::LeastLatency), 0);
        assert_eq!(r.turn(Policy::RoundRobin), 0);
        assert_eq!(r.turn(Policy::LeastInflight), 1);
        assert_eq!(r.turn(Policy::Weighted), 0);
    }
}
