//! `waitroom-servers`: the test kit's server launchers for shell scripts (`scripts/test`,
//! `bench/`), so that they start servers exactly as the Rust tests do.
//!
//! ```sh
//! eval "$(waitroom-servers redis --dir /tmp/x --persistence always)"   # sets URL and PID
//! eval "$(waitroom-servers kafka --dir /tmp/y --storage sqlite)"        # tansu: URL and PID
//! eval "$(waitroom-servers moto --dir /tmp/z)"                          # SQS and S3: URL, LOG, PID
//! eval "$(waitroom-servers rabbitmq --dir /tmp/r)"                      # URL, PID, EPMD_PID
//! eval "$(waitroom-servers postgres --dir /tmp/p)"                      # PostgreSQL: URL and PID
//! waitroom-servers stop "$PID"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use waitroom_log::testkit::kafka::{Storage, TansuServer};
use waitroom_log::testkit::moto::MotoServer;
use waitroom_log::testkit::postgres::PostgresServer;
use waitroom_log::testkit::rabbitmq::RabbitMqServer;
use waitroom_log::testkit::redis::{Persistence, RedisServer};

#[derive(Parser)]
#[command(
    name = "waitroom-servers",
    about = "Start and stop the servers waitroom's tests use"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start a redis-server on 127.0.0.1 and print `URL=…` and `PID=…` (shell assignments).
    Redis {
        /// Where the server keeps its files and its log.
        #[arg(long)]
        dir: PathBuf,
        /// none, everysec or always.
        #[arg(long, default_value = "none", value_parser = Persistence::parse)]
        persistence: Persistence,
        /// The port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Start the Kafka-compatible broker tansu on 127.0.0.1 and print `URL=…` (a `--backend` URL
    /// with the client properties that work around tansu's bugs) and `PID=…`.
    Kafka {
        /// Where the broker keeps its files and its log.
        #[arg(long)]
        dir: PathBuf,
        /// memory (nothing survives a stop) or sqlite (a file in --dir).
        #[arg(long, default_value = "memory", value_parser = Storage::parse)]
        storage: Storage,
        /// The port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Start moto_server (SQS and S3) on 127.0.0.1 with the test bucket, from a Python venv
    /// (made and given moto[server] unless it has it already), and print `URL=…` (a `--backend`
    /// URL with static test credentials), `LOG=…` (moto's request log) and `PID=…`.
    Moto {
        /// Where the server keeps its request log.
        #[arg(long)]
        dir: PathBuf,
        /// The venv (default: $WAITROOM_MOTO_VENV, else moto-venv in the cargo target dir).
        #[arg(long)]
        venv: Option<PathBuf>,
        /// The port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Start a private RabbitMQ node (stream plugin on) on 127.0.0.1 and print `URL=…` (a
    /// `--backend` URL), `PID=…` (the broker) and `EPMD_PID=…` (its port mapper): stop both.
    Rabbitmq {
        /// Where the node keeps its data, home (Erlang cookie), configuration and logs.
        #[arg(long)]
        dir: PathBuf,
        /// The stream protocol's port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Start a private PostgreSQL on 127.0.0.1 (a cluster `initdb` makes in --dir, or the one
    /// already there; as root it runs as `nobody`) and print `URL=…` (`postgres://…`) and
    /// `PID=…`. `stop` sends SIGTERM: PostgreSQL's smart shutdown, which waits for its clients.
    Postgres {
        /// Where the cluster, its Unix sockets and its log are kept.
        #[arg(long)]
        dir: PathBuf,
        /// The port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Stop servers by PID: SIGTERM, then SIGKILL if they are still there after --wait-ms.
    Stop {
        pids: Vec<i32>,
        #[arg(long, default_value_t = 10_000)]
        wait_ms: u64,
    },
}

fn alive(pid: Pid) -> bool {
    // Signal 0 checks that the process exists; a zombie (exited, not reaped by its parent, which
    // is gone) counts as stopped.
    kill(pid, None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split(' ').nth(2) == Some("Z"))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Commands::Redis {
            dir,
            persistence,
            port,
        } => {
            let port = port.unwrap_or_else(waitroom_log::testkit::free_port);
            match RedisServer::start_with(port, &dir, persistence, &[]) {
                Ok(server) => {
                    let url = server.url();
                    let pid = server.detach().unwrap_or_default();
                    println!("URL={url}\nPID={pid}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("waitroom-servers: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Kafka { dir, storage, port } => {
            let port = port.unwrap_or_else(waitroom_log::testkit::free_port);
            match TansuServer::start_on(port, &dir, storage) {
                Ok(server) => {
                    let url = server.url();
                    let pid = server.detach().unwrap_or_default();
                    println!("URL='{url}'\nPID={pid}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("waitroom-servers: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Moto { dir, venv, port } => {
            let port = port.unwrap_or_else(waitroom_log::testkit::free_port);
            let venv = venv.unwrap_or_else(waitroom_log::testkit::moto::default_venv);
            match MotoServer::start_on(port, &dir, &venv) {
                Ok(server) => {
                    let (url, log) = (server.url(), server.log_path());
                    let pid = server.detach().unwrap_or_default();
                    println!("URL='{url}'\nLOG='{}'\nPID={pid}", log.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("waitroom-servers: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Rabbitmq { dir, port } => {
            let port = port.unwrap_or_else(waitroom_log::testkit::free_port);
            match RabbitMqServer::start_on(&dir, port) {
                Ok(server) => {
                    let url = server.url();
                    let (pid, epmd) = server.detach();
                    println!(
                        "URL='{url}'\nPID={}\nEPMD_PID={}",
                        pid.unwrap_or_default(),
                        epmd.unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("waitroom-servers: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Postgres { dir, port } => {
            let port = port.unwrap_or_else(waitroom_log::testkit::free_port);
            match PostgresServer::start_on(&dir, port) {
                Ok(server) => {
                    let url = server.url();
                    let pid = server.detach().unwrap_or_default();
                    println!("URL='{url}'\nPID={pid}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("waitroom-servers: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Stop { pids, wait_ms } => {
            for pid in pids.into_iter().map(Pid::from_raw) {
                if kill(pid, Signal::SIGTERM).is_err() {
                    continue;
                }
                let deadline = Instant::now() + Duration::from_millis(wait_ms);
                while alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if alive(pid) {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
            ExitCode::SUCCESS
        }
    }
}
