//! `waitroom-servers`: the test kit's server launchers for shell scripts (`scripts/test`,
//! `bench/`), so that they start servers exactly as the Rust tests do.
//!
//! ```sh
//! eval "$(waitroom-servers redis --dir /tmp/x --persistence always)"   # sets URL and PID
//! waitroom-servers stop "$PID"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
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
