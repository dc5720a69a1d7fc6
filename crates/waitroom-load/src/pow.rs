//! The proof of work of a join challenge (docs/api.md, "Challenges"): what counts as work, and a
//! native solver.
//!
//! The work of `solution` for `challenge` is the number of leading zero bits of
//! SHA-256(`challenge` ‖ `solution`), both as their UTF-8 bytes (the challenge is the 72-character
//! base64url text the node hands out, the solution what the client found, 1 to
//! [`SOLUTION_CHARS_MAX`] characters). A join passes when the work reaches the room's
//! `challengeDifficultyBits`. One definition here serves the node (which checks it: one hash,
//! well under a microsecond), this tool (which solves it natively) and the tests; the waiting page's
//! Web Worker and the JavaScript client compute the same hash in JavaScript.
//!
//! Solving takes `2^bits` hashes on average (each try succeeds with probability `2^-bits`; the
//! median is `ln 2 × 2^bits`). The solver tries decimal counters from 0: the challenge's first
//! 64 bytes are hashed once and every try costs one SHA-256 block.

use sha2::{Digest as _, Sha256};

/// A solution is 1 to 64 characters (decimal counters need at most 20).
pub const SOLUTION_CHARS_MAX: usize = 64;

/// Leading zero bits of SHA-256(`challenge` ‖ `solution`).
pub fn work_bits(challenge: &str, solution: &str) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(challenge.as_bytes());
    hasher.update(solution.as_bytes());
    leading_zero_bits(&hasher.finalize().into())
}

/// Leading zero bits of a digest (256 when it is all zeros).
pub fn leading_zero_bits(digest: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for &byte in digest {
        if byte != 0 {
            return bits + byte.leading_zeros();
        }
        bits += 8;
    }
    bits
}

/// A solution found by [`solve`] and the hashes it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Solved {
    pub solution: String,
    pub tries: u64,
}

/// The first decimal counter from `start` whose work for `challenge` reaches `bits` (at most
/// 256), trying at most `max_tries` counters (`None` past them).
pub fn solve(challenge: &str, bits: u32, start: u64, max_tries: u64) -> Option<Solved> {
    let mut prefix = Sha256::new();
    prefix.update(challenge.as_bytes());
    let mut digits = itoa_buffer();
    for tries in 1..=max_tries {
        let counter = start.checked_add(tries - 1)?;
        let text = format_u64(counter, &mut digits);
        let mut hasher = prefix.clone();
        hasher.update(text.as_bytes());
        if leading_zero_bits(&hasher.finalize().into()) >= bits {
            return Some(Solved {
                solution: text.to_owned(),
                tries,
            });
        }
    }
    None
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// `value` in decimal, written into `buffer` (no allocation per try).
fn format_u64(mut value: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros_count_bits_across_bytes() {
        let mut digest = [0xff; 32];
        assert_eq!(leading_zero_bits(&digest), 0);
        digest[0] = 0;
        digest[1] = 0x10;
        assert_eq!(leading_zero_bits(&digest), 11);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }

    /// SHA-256("abc") is ba7816bf…: no leading zero bit; the solver's answers really have the
    /// work it claims, and no earlier counter does.
    #[test]
    fn solutions_have_the_work() {
        assert_eq!(work_bits("ab", "c"), 0);
        let challenge = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2";
        for bits in [1, 4, 8, 12] {
            let solved = solve(challenge, bits, 0, 1 << 20).unwrap();
            assert!(work_bits(challenge, &solved.solution) >= bits);
            assert_eq!(solved.solution, (solved.tries - 1).to_string());
            for earlier in 0..solved.tries - 1 {
                assert!(work_bits(challenge, &earlier.to_string()) < bits);
            }
        }
        assert_eq!(solve(challenge, 256, 0, 10), None);
        assert_eq!(
            solve(challenge, 0, u64::MAX, 5).unwrap().solution,
            u64::MAX.to_string()
        );
        let mut buffer = itoa_buffer();
        assert_eq!(format_u64(0, &mut buffer), "0");
        assert_eq!(format_u64(u64::MAX, &mut buffer), "18446744073709551615");
    }
}
