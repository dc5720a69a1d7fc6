//! The raw produce rate of a Kafka broker, the way the Kafka log produces (for `bench/kafka.sh`):
//! librdkafka's idempotent producer with `acks=all`, one record per request
//! (`batch.num.messages=1`), to one partition, keeping `--outstanding` records in flight, for
//! `--seconds`. Prints `records/s <rate>`.
//!
//! ```sh
//! cargo run --release -p waitroom-log --features kafka --example kafka_produce -- \
//!     --brokers 127.0.0.1:9092 --topic bench-raw --seconds 10 --outstanding 64
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Bytes of each record's value: about a join record's size.
const RECORD_BYTES: usize = 64;
/// Most records in flight (`--outstanding`).
const OUTSTANDING_MAX: usize = 100_000;
/// Longest run (`--seconds`).
const SECONDS_MAX: u64 = 3_600;

struct Args {
    brokers: String,
    topic: String,
    seconds: u64,
    outstanding: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        brokers: String::new(),
        topic: "bench-raw".to_owned(),
        seconds: 10,
        outstanding: 64,
    };
    let mut given = std::env::args().skip(1);
    while let Some(name) = given.next() {
        let value = given.next().ok_or(format!("{name} needs a value"))?;
        match name.as_str() {
            "--brokers" => args.brokers = value,
            "--topic" => args.topic = value,
            "--seconds" => {
                args.seconds = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=SECONDS_MAX).contains(s))
                    .ok_or(format!("--seconds: 1 to {SECONDS_MAX}"))?
            }
            "--outstanding" => {
                args.outstanding = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=OUTSTANDING_MAX).contains(n))
                    .ok_or(format!("--outstanding: 1 to {OUTSTANDING_MAX}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.brokers.is_empty() {
        return Err("--brokers host:port is required".to_owned());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.brokers);
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| format!("admin client: {e}"))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(
            [&NewTopic::new(&args.topic, 1, TopicReplication::Fixed(-1))],
            &options,
        )
        .await
        .map_err(|e| format!("creating {}: {e}", args.topic))?;
    for result in created {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating {topic}: {code}")),
        }
    }
    let producer: FutureProducer = config
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let value = [b'x'; RECORD_BYTES];
    let mut in_flight = VecDeque::with_capacity(args.outstanding);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut acknowledged = 0u64;
    while Instant::now() < until {
        while in_flight.len() < args.outstanding {
            let record = FutureRecord::to(&args.topic)
                .partition(0)
                .key("bench")
                .payload(&value[..]);
            match producer.send_result(record) {
                Ok(delivery) => in_flight.push_back(delivery),
                Err((e, _)) => return Err(format!("producing: {e}")),
            }
        }
        if let Some(delivery) = in_flight.pop_front() {
            match delivery.await {
                Ok(Ok(_)) => acknowledged += 1,
                Ok(Err((e, _))) => return Err(format!("producing: {e}")),
                Err(_) => return Err("the producer went away".to_owned()),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for delivery in in_flight {
        let _ = delivery.await;
    }
    println!("records/s {:.0}", acknowledged as f64 / elapsed);
    Ok(())
}
