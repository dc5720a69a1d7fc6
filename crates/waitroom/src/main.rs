//! The `waitroom` binary: parses flags and wires them; the work is in the library.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use waitroom::backend::Fsync;
use waitroom::node::NodeOptions;
use waitroom::server::{self, ServeOptions};

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
    Serve(ServeArgs),
    /// Simulate a crowd against any waitroom deployment and measure how well it meters it.
    Load(Box<waitroom_load::Args>),
    /// Try it: a node with a demo room, a simulated crowd and a seat-selection page to be sent to.
    Demo(waitroom::demo::DemoArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FsyncArg {
    /// Acknowledge an append after an fdatasync (survives power loss); concurrent appends share
    /// one fdatasync.
    Always,
    /// Acknowledge after write(2) (survives a process crash); fdatasync every --fsync-interval-ms.
    Interval,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WAITROOM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the embedded log, the generated admin token and signing key live.
    #[arg(long, env = "WAITROOM_DATA_DIR", default_value = "./waitroom-data")]
    data_dir: PathBuf,
    /// The log backend: file: (default, inside the data dir), memory:, redis://host:port[/db].
    #[arg(long, env = "WAITROOM_BACKEND", default_value = "file:")]
    backend: String,
    /// Bearer token of the admin endpoints; generated into the data dir if absent.
    #[arg(long, env = "WAITROOM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Ed25519 PKCS#8 PEM (a path, or the PEM itself) signing admission tokens; generated into
    /// the data dir if absent with an embedded backend; required for shared backends.
    #[arg(long, env = "WAITROOM_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
    /// The `iss` claim of admission tokens.
    #[arg(long, env = "WAITROOM_ISSUER", default_value = "waitroom")]
    issuer: String,
    /// A TOML file of rooms to create or update at start (`[rooms.<id>]` tables with the fields
    /// of the PUT body).
    #[arg(long, env = "WAITROOM_CONFIG")]
    config: Option<PathBuf>,
    /// When the embedded log syncs to disk.
    #[arg(long, env = "WAITROOM_FSYNC", value_enum, default_value = "interval")]
    fsync: FsyncArg,
    /// With --fsync interval: at most this long between fdatasyncs (power loss loses at most
    /// this window; a process crash loses nothing acknowledged).
    #[arg(long, env = "WAITROOM_FSYNC_INTERVAL_MS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    fsync_interval_ms: u64,
    /// Joins per second per client address (0 disables the limit).
    #[arg(long, env = "WAITROOM_JOIN_RATE_PER_IP", default_value_t = 50)]
    join_rate_per_ip: u32,
    /// Burst of joins per client address (0 disables the limit).
    #[arg(long, env = "WAITROOM_JOIN_BURST_PER_IP", default_value_t = 500)]
    join_burst_per_ip: u32,
    /// Take the client address from this header (e.g. X-Forwarded-For) — only behind a proxy
    /// that sets it.
    #[arg(long, env = "WAITROOM_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// On SIGTERM/SIGINT, requests in flight get this long to finish.
    #[arg(long, env = "WAITROOM_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    drain_timeout_ms: u64,
    /// How long a write waits to be appended and applied before answering 503.
    #[arg(long, env = "WAITROOM_WRITE_WAIT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    write_wait_ms: u64,
    /// How long a read of an unknown room or session waits for this node to catch up.
    #[arg(long, env = "WAITROOM_CATCH_UP_WAIT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    catch_up_wait_ms: u64,
    /// Ticks are appended this often for rooms with live sessions.
    #[arg(long, env = "WAITROOM_TICK_INTERVAL_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    tick_interval_ms: u64,
    /// Heartbeats within this window share one record per room.
    #[arg(long, env = "WAITROOM_HEARTBEAT_FLUSH_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    heartbeat_flush_ms: u64,
}

impl ServeArgs {
    fn options(self) -> ServeOptions {
        ServeOptions {
            data_dir: self.data_dir,
            backend: self.backend,
            admin_token: self.admin_token,
            signing_key: self.signing_key,
            issuer: self.issuer,
            rooms_file: self.config,
            fsync: match self.fsync {
                FsyncArg::Always => Fsync::Always,
                FsyncArg::Interval => {
                    Fsync::Interval(Duration::from_millis(self.fsync_interval_ms))
                }
            },
            join_rate_per_ip: self.join_rate_per_ip,
            join_burst_per_ip: self.join_burst_per_ip,
            client_ip_header: self.client_ip_header,
            drain_timeout_ms: self.drain_timeout_ms,
            node: NodeOptions {
                write_wait_ms: self.write_wait_ms,
                catch_up_wait_ms: self.catch_up_wait_ms,
                tick_interval_ms: self.tick_interval_ms,
                heartbeat_flush_ms: self.heartbeat_flush_ms,
                ..NodeOptions::default()
            },
            extra_routes: None,
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let listener = server::listen(&args.listen).await?;
    server::run_with(
        listener,
        server::shutdown_signal(),
        args.options(),
        |started| {
            println!("waitroom is serving at {}", started.url);
        },
    )
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
        Commands::Serve(args) => runtime.block_on(serve(args)),
        Commands::Demo(args) => runtime.block_on(waitroom::demo::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waitroom: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
