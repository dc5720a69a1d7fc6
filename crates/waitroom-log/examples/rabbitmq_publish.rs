//! The raw confirmed-publish rate of a RabbitMQ stream (for `bench/rabbitmq.sh`): one message
//! per publish and per confirm, `--outstanding` publishers sharing one connection (the way the
//! RabbitMQ log appends), for `--seconds`. Prints `messages/s <rate>`. With `--subscribers N`,
//! the round-trip rate instead: each publisher also waits until the first of N subscribers (the
//! nodes of a fleet) has received its message.
//!
//! ```sh
//! cargo run --release -p waitroom-log --features rabbitmq --example rabbitmq_publish -- \
//!     --url rabbitmq-stream://guest:guest@127.0.0.1:5552/%2F --seconds 10 --outstanding 64
//! ```

use std::time::Duration;

use waitroom_log::rabbitmq::{
    RAW_OUTSTANDING_MAX, RAW_SUBSCRIBERS_MAX, confirmed_publish_rate, round_trip_rate,
};

/// Longest run (`--seconds`).
const SECONDS_MAX: u64 = 3_600;

#[tokio::main]
async fn main() -> Result<(), String> {
    let (mut url, mut stream, mut seconds, mut outstanding) =
        (String::new(), "bench-raw".to_owned(), 10_u64, 64_usize);
    let mut subscribers = 0_usize;
    let mut given = std::env::args().skip(1);
    while let Some(name) = given.next() {
        let value = given.next().ok_or(format!("{name} needs a value"))?;
        match name.as_str() {
            "--url" => url = value,
            "--stream" => stream = value,
            "--seconds" => {
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=SECONDS_MAX).contains(s))
                    .ok_or(format!("--seconds: 1 to {SECONDS_MAX}"))?
            }
            "--outstanding" => {
                outstanding = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=RAW_OUTSTANDING_MAX).contains(n))
                    .ok_or(format!("--outstanding: 1 to {RAW_OUTSTANDING_MAX}"))?
            }
            "--subscribers" => {
                subscribers = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=RAW_SUBSCRIBERS_MAX).contains(n))
                    .ok_or(format!("--subscribers: 1 to {RAW_SUBSCRIBERS_MAX}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if url.is_empty() {
        return Err("--url rabbitmq-stream://… is required".to_owned());
    }
    let run = Duration::from_secs(seconds);
    let rate = if subscribers == 0 {
        confirmed_publish_rate(&url, &stream, outstanding, run).await
    } else {
        round_trip_rate(&url, &stream, outstanding, subscribers, run).await
    }
    .map_err(|e| e.to_string())?;
    println!("messages/s {rate:.0}");
    Ok(())
}
