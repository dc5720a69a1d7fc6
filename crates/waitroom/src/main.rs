//! The `waitroom` binary: parses flags and wires them; the work is in the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use waitroom::node::{NodeOptions, SnapshotMode};
use waitroom::server::{self, ServeOptions, defaults};

// Status polls and joins allocate a little each (ids, JSON, the response); mimalloc's per-thread
// free lists make that measurably cheaper than glibc's malloc under two busy worker threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "waitroom",
    version,
    about = "A virtual waiting room for ticket on-sales"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run a node: the API, the waiting page, metrics.
    Serve(Box<ServeArgs>),
    /// Simulate a crowd against any waitroom deployment and measure how well it meters it.
    Load(Box<waitroom_load::Args>),
    /// Try it: a node with a demo room, a simulated crowd and a seat-selection page to be sent to.
    Demo(waitroom::demo::DemoArgs),
    /// Read the log of any backend.
    Log {
        #[command(subcommand)]
        command: LogCommands,
    },
}

#[derive(Subcommand, Debug)]
enum LogCommands {
    /// A room's records as JSON lines (position, time, command, session), from the start of what
    /// the log holds: the audit trail of who joined and who was admitted when.
    Dump(waitroom::dump::DumpArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SnapshotsArg {
    /// Restore rooms from snapshots at start, take snapshots, trim the log.
    On,
    /// Replay every room from its first record; take no snapshot, trim nothing (needs a log
    /// that kept its whole history).
    Off,
}

/// The defaults, written once (in the library).
const NODE: NodeOptions = NodeOptions::DEFAULT;

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WAITROOM_LISTEN", default_value = defaults::LISTEN)]
    listen: String,
    /// Where the embedded log, the generated admin token and signing key live.
    #[arg(long, env = "WAITROOM_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// The log backend, its options as URL query parameters: file: (default, inside the data
    /// dir; file:?fsync=always to sync every write), memory:, redis://host:port[/db],
    /// kafka://host:port[,host:port…]?topic=…, rabbitmq-stream://user:password@host:5552/vhost,
    /// sqs://?bucket=…&region=… (built with the sqs feature). Every backend takes
    /// keep-history=24h to keep trimmed history for audit.
    #[arg(long, env = "WAITROOM_BACKEND", default_value = defaults::BACKEND)]
    backend: String,
    /// Bearer token of the admin endpoints; generated into the data dir if absent.
    #[arg(long, env = "WAITROOM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Ed25519 PKCS#8 PEM (a path, or the PEM itself) signing admission tokens; generated into
    /// the data dir if absent with an embedded backend; required for shared backends.
    #[arg(long, env = "WAITROOM_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
    /// Key rotation: the key the fleet signs with next, published in the JWKS and accepted
    /// already (a path or the PEM; its public key PEM is enough). Give it to every node, wait
    /// for the protected services to refresh their JWKS, then make it the --signing-key.
    #[arg(long, env = "WAITROOM_NEXT_SIGNING_KEY", hide_env_values = true)]
    next_signing_key: Option<String>,
    /// Key rotation: a key the fleet signed with before, still published and accepted until the
    /// tokens it signed expire (5 minutes); repeatable (comma-separated in the variable), at most
    /// 4. A path or the PEM; its public key PEM is enough.
    #[arg(
        long,
        env = "WAITROOM_RETIRED_SIGNING_KEYS",
        hide_env_values = true,
        value_delimiter = ',',
        num_args = 1
    )]
    retired_signing_key: Vec<String>,
    /// The `iss` claim of admission tokens.
    #[arg(long, env = "WAITROOM_ISSUER", default_value = defaults::ISSUER)]
    issuer: String,
    /// A TOML file of rooms to create at start (`[rooms.<id>]` tables with the fields of the PUT
    /// body). An entry unchanged since it was last applied to its room is skipped, so settings
    /// changed through the API survive a restart; a changed entry is applied whole.
    #[arg(long, env = "WAITROOM_CONFIG")]
    config: Option<PathBuf>,
    /// Joins per second per client address (0 disables the limit).
    #[arg(long, env = "WAITROOM_JOIN_RATE_PER_IP", default_value_t = defaults::JOIN_RATE_PER_IP)]
    join_rate_per_ip: u32,
    /// Burst of joins per client address (0 disables the limit).
    #[arg(long, env = "WAITROOM_JOIN_BURST_PER_IP", default_value_t = defaults::JOIN_BURST_PER_IP)]
    join_burst_per_ip: u32,
    /// Take the client address from this header (e.g. X-Forwarded-For) — only behind a proxy
    /// that sets it.
    #[arg(long, env = "WAITROOM_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// On SIGTERM/SIGINT, requests in flight get this long to finish.
    #[arg(long, env = "WAITROOM_DRAIN_TIMEOUT_MS", default_value_t = defaults::DRAIN_TIMEOUT_MS)]
    drain_timeout_ms: u64,
    /// Open client connections at most; more wait in the kernel's listen backlog. Keep the
    /// open-files limit (`ulimit -n`) above it.
    #[arg(long, env = "WAITROOM_CONNECTIONS_MAX", default_value_t = defaults::CONNECTIONS_MAX as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    connections_max: u64,
    /// Open connections per client address (an IPv6 /64 counts as one); a connection past it is
    /// closed at once. 0: no cap. Behind a proxy, every connection comes from the proxy's
    /// addresses: set it above what one of them opens, or to 0.
    #[arg(long, env = "WAITROOM_CONNECTIONS_PER_ADDRESS_MAX", default_value_t = defaults::CONNECTIONS_PER_ADDRESS_MAX as u64, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    connections_per_address_max: u64,
    /// Status reads held at once for a change (`GET …/sessions/{id}?waitSeconds=`, used by
    /// waiting pages near the front of the line); one past it is answered at once.
    #[arg(long, env = "WAITROOM_HELD_READS_MAX", default_value_t = defaults::HELD_READS_MAX as u64, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    held_reads_max: u64,
    /// A request's headers must arrive within this long of its first byte (of the connection's
    /// opening for its first request), else the connection is closed.
    #[arg(long, env = "WAITROOM_HEADER_READ_TIMEOUT_MS", default_value_t = defaults::HEADER_READ_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    header_read_timeout_ms: u64,
    /// A connection waiting this long for its next request is closed (keep-alive). Behind a load
    /// balancer, keep it above the balancer's idle timeout.
    #[arg(long, env = "WAITROOM_IDLE_TIMEOUT_MS", default_value_t = defaults::IDLE_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    idle_timeout_ms: u64,
    /// An external join verifier: every new join without a pass is POSTed to this http:// or
    /// https:// URL first (room id, client address, user agent, a few headers), and refused (403) if it
    /// answers {"allow": false}. See docs/operations.md ("Bot checks").
    #[arg(long, env = "WAITROOM_JOIN_VERIFIER_URL")]
    join_verifier_url: Option<String>,
    /// How long a join waits for the verifier at most.
    #[arg(long, env = "WAITROOM_JOIN_VERIFIER_TIMEOUT_MS", default_value_t = defaults::JOIN_VERIFIER_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=waitroom::limits::JOIN_VERIFIER_TIMEOUT_MS_MAX))]
    join_verifier_timeout_ms: u64,
    /// When the verifier times out or fails: `open` lets the join go on, `closed` refuses it
    /// (503).
    #[arg(
        long,
        env = "WAITROOM_JOIN_VERIFIER_FAILS",
        value_enum,
        default_value = "open"
    )]
    join_verifier_fails: waitroom::verifier::FailMode,
    /// PEM certificates an https:// join verifier's certificate must chain to, instead of the
    /// system's root certificates (a private CA).
    #[arg(long, env = "WAITROOM_JOIN_VERIFIER_CA_FILE")]
    join_verifier_ca_file: Option<PathBuf>,
    /// How long a write waits to be appended and applied before answering 503.
    #[arg(long, env = "WAITROOM_WRITE_WAIT_MS", default_value_t = NODE.write_wait_ms, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    write_wait_ms: u64,
    /// How long a read of an unknown room or session waits for this node to catch up.
    #[arg(long, env = "WAITROOM_CATCH_UP_WAIT_MS", default_value_t = NODE.catch_up_wait_ms, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    catch_up_wait_ms: u64,
    /// Ticks are appended this often for rooms with live sessions.
    #[arg(long, env = "WAITROOM_TICK_INTERVAL_MS", default_value_t = NODE.tick_interval_ms, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    tick_interval_ms: u64,
    /// Heartbeats within this window share one record per room.
    #[arg(long, env = "WAITROOM_HEARTBEAT_FLUSH_MS", default_value_t = NODE.heartbeat_flush_ms, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    heartbeat_flush_ms: u64,
    /// Room snapshots: restore rooms from them at start, take them, and trim the log below them.
    #[arg(long, env = "WAITROOM_SNAPSHOTS", value_enum, default_value = "on")]
    snapshots: SnapshotsArg,
    /// Take a room's snapshot once this many of its records were applied since the last one...
    #[arg(long, env = "WAITROOM_SNAPSHOT_EVERY_RECORDS", default_value_t = NODE.snapshot_every_records, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    snapshot_every_records: u64,
    /// ...or this many bytes of them...
    #[arg(long, env = "WAITROOM_SNAPSHOT_EVERY_BYTES", default_value_t = NODE.snapshot_every_bytes, value_parser = clap::value_parser!(u64).range(1024..=(64 << 30)))]
    snapshot_every_bytes: u64,
    /// ...or this long after the first of them.
    #[arg(long, env = "WAITROOM_SNAPSHOT_EVERY_MS", default_value_t = NODE.snapshot_every_ms, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    snapshot_every_ms: u64,
    /// Busy rooms get a digest check in their log this often: every node compares it with its
    /// own copy, and a node most others disagree with rebuilds the room (0: off). Use one value
    /// across a fleet: checks written with another are not compared.
    #[arg(long, env = "WAITROOM_DIGEST_CHECK_EVERY_MS", default_value_t = NODE.digest_check_every_ms, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    digest_check_every_ms: u64,
}

impl ServeArgs {
    fn options(self) -> ServeOptions {
        ServeOptions {
            data_dir: self.data_dir,
            backend: self.backend,
            admin_token: self.admin_token,
            signing_key: self.signing_key,
            next_signing_key: self.next_signing_key,
            retired_signing_keys: self.retired_signing_key,
            issuer: self.issuer,
            rooms_file: self.config,
            join_rate_per_ip: self.join_rate_per_ip,
            join_burst_per_ip: self.join_burst_per_ip,
            client_ip_header: self.client_ip_header,
            drain_timeout_ms: self.drain_timeout_ms,
            connections_max: usize::try_from(self.connections_max).unwrap_or(usize::MAX),
            connections_per_address_max: usize::try_from(self.connections_per_address_max)
                .unwrap_or(usize::MAX),
            header_read_timeout_ms: self.header_read_timeout_ms,
            held_reads_max: usize::try_from(self.held_reads_max).unwrap_or(usize::MAX),
            join_verifier_url: self.join_verifier_url,
            join_verifier_timeout_ms: self.join_verifier_timeout_ms,
            join_verifier_fails: self.join_verifier_fails,
            join_verifier_ca_file: self.join_verifier_ca_file,
            idle_timeout_ms: self.idle_timeout_ms,
            request_timeout_ms: None,
            node: NodeOptions {
                write_wait_ms: self.write_wait_ms,
                catch_up_wait_ms: self.catch_up_wait_ms,
                tick_interval_ms: self.tick_interval_ms,
                heartbeat_flush_ms: self.heartbeat_flush_ms,
                snapshots: match self.snapshots {
                    SnapshotsArg::On => SnapshotMode::On,
                    SnapshotsArg::Off => SnapshotMode::Off,
                },
                snapshot_every_records: self.snapshot_every_records,
                snapshot_every_bytes: self.snapshot_every_bytes,
                snapshot_every_ms: self.snapshot_every_ms,
                digest_check_every_ms: self.digest_check_every_ms,
                ..NODE
            },
            extra_routes: None,
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let listener = server::listen(&args.listen).await?;
    let options = args.options();
    server::raise_open_files_limit(options.connections_max);
    server::run_with(listener, server::shutdown_signal(), options, |started| {
        println!("waitroom is serving at {}", started.url);
    })
    .await
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAITROOM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("waitroom: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Commands::Load(args) => return runtime.block_on(waitroom_load::cli_main(*args)),
        Commands::Serve(args) => runtime.block_on(serve(*args)),
        Commands::Demo(args) => runtime.block_on(waitroom::demo::run(args)),
        Commands::Log {
            command: LogCommands::Dump(args),
        } => runtime.block_on(waitroom::dump::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waitroom: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
