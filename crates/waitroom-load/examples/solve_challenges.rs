//! `cargo run --release -p waitroom-load --example solve_challenges -- [bits] [samples]`: the native
//! solver's time per challenge on one core (one thread), at `bits` (default: the suggested
//! difficulty, 22) over `samples` (default 101) random challenges of the node's shape (72
//! base64url characters). Prints each solve, then the median, the mean and the hash rate, and
//! what 1 000 joins cost a bot with one core at that median.

use std::time::Instant;

use sha2::Digest as _;

fn main() {
    let mut args = std::env::args().skip(1);
    let bits: u32 = args
        .next()
        .map_or(22, |a| a.parse().expect("bits: a number"));
    let samples: usize = args
        .next()
        .map_or(101, |a| a.parse().expect("samples: a number"));
    let mut seconds = Vec::with_capacity(samples);
    let mut tries_total = 0u64;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for sample in 0..samples {
        // Challenge-shaped bytes, different for every sample and run (their content does not
        // matter: SHA-256 makes every challenge as hard as any other).
        let mut bytes = Vec::with_capacity(64);
        for half in 0..2u8 {
            let mut hasher = sha2::Sha256::new();
            hasher.update(seed.to_le_bytes());
            hasher.update(sample.to_le_bytes());
            hasher.update([half]);
            bytes.extend_from_slice(&hasher.finalize());
        }
        let challenge = base64url(&bytes[..54]);
        let started = Instant::now();
        let solved = waitroom_load::pow::solve(&challenge, bits, 0, u64::MAX).expect("solved");
        let elapsed = started.elapsed().as_secs_f64();
        assert!(waitroom_load::pow::work_bits(&challenge, &solved.solution) >= bits);
        println!("solve_s={elapsed:.4} tries={}", solved.tries);
        seconds.push(elapsed);
        tries_total += solved.tries;
    }
    let total: f64 = seconds.iter().sum();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "bits={bits} samples={samples} median_s={median:.4} mean_s={:.4} hashes_per_second={:.0}",
        total / samples as f64,
        tries_total as f64 / total
    );
    println!(
        "bot_1000_joins_one_core_s={:.0} (1000 x median; {:.0} s at the mean)",
        1000.0 * median,
        1000.0 * total / samples as f64
    );
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bytes
        .chunks(3)
        .flat_map(|chunk| {
            let n =
                chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            (0..=chunk.len()).map(move |i| ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char)
        })
        .collect()
}
