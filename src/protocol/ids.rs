//! Monotonic ULIDs for event ids, and the ULID syntax check used by the validators.
//!
//! Ids must strictly increase within one response. Each worker thread owns one
//! generator: a new millisecond draws a fresh random part, the same (or an earlier)
//! millisecond increments the last id by one. It never runs ahead of the clock except
//! in the 2^-80 case where the random part overflows. This module must never allocate.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};
use ulid::Ulid;

/// Length of a ULID in its canonical text form.
pub const ULID_LEN: usize = 26;

const RANDOM_MASK: u128 = (1u128 << 80) - 1;

thread_local! {
    static LAST: Cell<Ulid> = const { Cell::new(Ulid::nil()) };
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Returns a ULID greater than every ULID this thread returned before.
pub fn next_ulid() -> Ulid {
    LAST.with(|last| {
        let prev = last.get();
        let now = now_ms();
        let next = if now > prev.timestamp_ms() {
            Ulid::from_parts(now, fastrand::u128(..) & RANDOM_MASK)
        } else {
            match prev.increment() {
                Ok(n) => n,
                // Random part exhausted within one millisecond: move to the next one.
                Err(_) => Ulid::from_parts(prev.timestamp_ms() + 1, 0),
            }
        };
        last.set(next);
        next
    })
}

/// Writes `id` in canonical form into `buf` and returns it as `&str`.
pub fn encode(id: Ulid, buf: &mut [u8; ULID_LEN]) -> &str {
    id.array_to_str(buf)
}

const fn crockford_table() -> [bool; 256] {
    let mut t = [false; 256];
    let alphabet = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut i = 0;
    while i < alphabet.len() {
        t[alphabet[i] as usize] = true;
        i += 1;
    }
    t
}
static CROCKFORD: [bool; 256] = crockford_table();

/// True when `s` is a canonical ULID: 26 upper-case Crockford base32 characters whose
/// first is `0`-`7` (a larger first character overflows 128 bits).
pub fn is_canonical_ulid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == ULID_LEN && (b'0'..=b'7').contains(&b[0]) && b.iter().all(|&c| CROCKFORD[c as usize])
}

/// Parses a canonical ULID (see [`is_canonical_ulid`]).
pub fn parse_canonical_ulid(s: &str) -> Option<Ulid> {
    if is_canonical_ulid(s) {
        Ulid::from_string(s).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_within_a_thread() {
        let mut prev = next_ulid();
        for _ in 0..100_000 {
            let n = next_ulid();
            assert!(n > prev, "{n} <= {prev}");
            let (mut a, mut b) = ([0; ULID_LEN], [0; ULID_LEN]);
            assert!(encode(n, &mut a) > encode(prev, &mut b));
            prev = n;
        }
    }

    #[test]
    fn never_ahead_of_the_clock_by_more_than_a_millisecond() {
        for _ in 0..10_000 {
            let id = next_ulid();
            assert!(id.timestamp_ms() <= now_ms() + 1);
        }
    }

    #[test]
    fn canonical_syntax() {
        assert!(is_canonical_ulid("01JDX3ABCDEFGHJKMNPQRSTVWX"));
        assert!(is_canonical_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(
            !is_canonical_ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"),
            "overflows 128 bits"
        );
        assert!(
            !is_canonical_ulid("01jdx3abcdefghjkmnpqrstvwx"),
            "lower case"
        );
        assert!(
            !is_canonical_ulid("01JDX3ABCDEFGHJKMNPQRSTVWI"),
            "I is not Crockford"
        );
        assert!(!is_canonical_ulid("01JDX3ABCDEFGHJKMNPQRSTVW"), "25 chars");
        assert!(
            !is_canonical_ulid("01JDX3ABCDEFGHJKMNPQRSTVWXY"),
            "27 chars"
        );
        assert!(parse_canonical_ulid("01JDX3ABCDEFGHJKMNPQRSTVWX").is_some());
    }
}
