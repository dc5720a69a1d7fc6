//! The seeded plan of a run: when each user arrives and what it will do (hold time,
//! abandonment). Pure: the same options and seed give the same plan, so a run can be replayed.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::options::{ArrivalProfile, LoadOptions, SecondsRange};

/// What one simulated user will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPlan {
    /// Arrival, µs after the start of the run.
    pub arrival_offset_us: u64,
    /// How long it holds its slot once seen ACTIVE, µs.
    pub hold_us: u64,
    /// If set, it leaves this long after its join was answered, if still waiting then (µs).
    pub abandon_waiting_after_us: Option<u64>,
    /// Whether it leaves (DELETE) instead of completing at the end of its hold.
    pub abandon_active: bool,
}

/// Arrival offsets (µs after the start, non-decreasing) of `users` users.
///
/// - all-at-once: every offset is 0;
/// - `ramp:S`: user `i` arrives at `floor(i × S ÷ users)`, so all arrive within `[0, S)`;
/// - `poisson:R`: gaps are exponential with mean `1 ÷ R` (inverse transform of a uniform draw),
///   the first one after the start included.
pub fn arrival_offsets_us(profile: ArrivalProfile, users: u32, rng: &mut SmallRng) -> Vec<u64> {
    match profile {
        ArrivalProfile::AllAtOnce => vec![0; users as usize],
        ArrivalProfile::Ramp { seconds } => {
            let ramp_us = (seconds * 1e6).round() as u128;
            (0..users)
                .map(|index| (u128::from(index) * ramp_us / u128::from(users)) as u64)
                .collect()
        }
        ArrivalProfile::Poisson { per_second } => {
            let mut at_seconds = 0.0_f64;
            (0..users)
                .map(|_| {
                    // 1 − U lies in (0, 1], so the logarithm is finite.
                    let uniform: f64 = rng.random();
                    at_seconds += -(1.0 - uniform).ln() / per_second;
                    (at_seconds * 1e6).round() as u64
                })
                .collect()
        }
    }
}

fn draw(range: SecondsRange, rng: &mut SmallRng) -> u64 {
    if range.min_us == range.max_us {
        // Still consume a draw, so a plan's other choices do not depend on this range's width.
        let _: u64 = rng.random();
        range.min_us
    } else {
        rng.random_range(range.min_us..=range.max_us)
    }
}

/// The plan of every user, in arrival order. Each user makes the same number of draws whatever
/// the outcome, so changing one ratio does not reshuffle everyone's hold times.
pub fn plan_users(options: &LoadOptions) -> Vec<UserPlan> {
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let offsets = arrival_offsets_us(options.arrival, options.users, &mut rng);
    offsets
        .into_iter()
        .map(|arrival_offset_us| {
            let hold_us = draw(options.hold_seconds, &mut rng);
            let abandons_waiting = rng.random::<f64>() < options.abandon_waiting_ratio;
            let abandon_after_us = draw(options.abandon_waiting_after_seconds, &mut rng);
            let abandon_active = rng.random::<f64>() < options.abandon_active_ratio;
            UserPlan {
                arrival_offset_us,
                hold_us,
                abandon_waiting_after_us: abandons_waiting.then_some(abandon_after_us),
                abandon_active,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Args;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn options(extra: &[&str]) -> LoadOptions {
        let mut argv = vec!["load", "--url", "http://h:1", "--admin-token", "t"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
            .unwrap()
            .args
            .to_options()
            .unwrap()
    }

    #[test]
    fn all_at_once_arrives_at_zero() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(
            arrival_offsets_us(ArrivalProfile::AllAtOnce, 4, &mut rng),
            vec![0; 4]
        );
    }

    #[test]
    fn ramp_spreads_evenly_within_its_length() {
        let mut rng = SmallRng::seed_from_u64(1);
        let offsets = arrival_offsets_us(ArrivalProfile::Ramp { seconds: 10.0 }, 4, &mut rng);
        assert_eq!(offsets, vec![0, 2_500_000, 5_000_000, 7_500_000]);
        let offsets = arrival_offsets_us(ArrivalProfile::Ramp { seconds: 1.0 }, 3, &mut rng);
        assert_eq!(offsets, vec![0, 333_333, 666_666]);
    }

    #[test]
    fn poisson_has_the_requested_rate_and_exponential_gaps() {
        let mut rng = SmallRng::seed_from_u64(7);
        let users = 100_000;
        let offsets = arrival_offsets_us(
            ArrivalProfile::Poisson { per_second: 1000.0 },
            users,
            &mut rng,
        );
        assert!(offsets.windows(2).all(|pair| pair[0] <= pair[1]));
        // 100 000 arrivals at 1000/s take 100 s; the sum of n exponential gaps has a relative
        // standard deviation of 1/√n ≈ 0.3 %, so 2 % is over six sigmas.
        let total_seconds = *offsets.last().unwrap() as f64 / 1e6;
        assert!((total_seconds - 100.0).abs() < 2.0, "{total_seconds}");
        // For an exponential distribution, P(gap > mean) = e⁻¹ ≈ 0.368.
        let mut previous = 0;
        let long_gaps = offsets
            .iter()
            .filter(|&&at| {
                let long = at - previous > 1000;
                previous = at;
                long
            })
            .count() as f64
            / f64::from(users);
        assert!((long_gaps - (-1.0_f64).exp()).abs() < 0.01, "{long_gaps}");
    }

    #[test]
    fn plans_are_reproducible_from_the_seed() {
        let first = plan_users(&options(&["--seed", "42", "--users", "50"]));
        let second = plan_users(&options(&["--seed", "42", "--users", "50"]));
        let other = plan_users(&options(&["--seed", "43", "--users", "50"]));
        assert_eq!(first, second);
        assert_ne!(first, other);
    }

    #[test]
    fn plans_follow_the_ranges_and_ratios() {
        let plans = plan_users(&options(&[
            "--seed",
            "3",
            "--users",
            "10000",
            "--hold-seconds",
            "1..2",
            "--abandon-waiting-ratio",
            "0.25",
            "--abandon-waiting-after-seconds",
            "3",
            "--abandon-active-ratio",
            "0.5",
        ]));
        assert!(
            plans
                .iter()
                .all(|plan| (1_000_000..=2_000_000).contains(&plan.hold_us))
        );
        let waiting = plans
            .iter()
            .filter(|plan| plan.abandon_waiting_after_us == Some(3_000_000))
            .count();
        assert_eq!(
            waiting,
            plans
                .iter()
                .filter(|plan| plan.abandon_waiting_after_us.is_some())
                .count()
        );
        let active = plans.iter().filter(|plan| plan.abandon_active).count();
        // Binomial(10 000, p): σ ≤ 50, so ±300 is six sigmas.
        assert!((2_200..=2_800).contains(&waiting), "{waiting}");
        assert!((4_700..=5_300).contains(&active), "{active}");
    }

    #[test]
    fn changing_a_ratio_keeps_hold_times() {
        let base = plan_users(&options(&["--seed", "9", "--users", "100"]));
        let abandoning = plan_users(&options(&[
            "--seed",
            "9",
            "--users",
            "100",
            "--abandon-active-ratio",
            "0.9",
        ]));
        let holds = |plans: &[UserPlan]| plans.iter().map(|plan| plan.hold_us).collect::<Vec<_>>();
        assert_eq!(holds(&base), holds(&abandoning));
    }
}
