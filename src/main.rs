//! The `corecast` binary: parses the command line and hands each subcommand to its crate.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "corecast",
    version,
    about = "goim-compatible push gateway on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (goim's comet): TCP :3101, WebSocket :3102 at /sub.
    Gateway {
        /// Gateway TOML config (see gateway/gateway.toml); defaults when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the effective config and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Hold goim connections to a gateway and count what arrives (the bundled load tester).
    Loadtest(loadtest::cli::Args),
    /// Mint a signed auth token (hmac mode) and print the op-7 JSON body.
    Token {
        /// Secret to sign with (the first of the gateway's [auth] secrets).
        #[arg(long, env = "CORECAST_SECRET")]
        secret: String,
        #[arg(long, default_value_t = 0)]
        mid: i64,
        #[arg(long, default_value = "")]
        key: String,
        #[arg(long, default_value = "")]
        room: String,
        #[arg(long, default_value = "")]
        platform: String,
        /// Ops accepted for key pushes and broadcasts, comma-separated.
        #[arg(long, value_delimiter = ',')]
        accepts: Vec<i32>,
        /// Lifetime in seconds from now.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Gateway {
            config,
            print_config,
        } => {
            let config = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    gateway::Config::from_toml(&text)
                        .with_context(|| format!("in {}", path.display()))?
                }
                None => gateway::Config::default(),
            };
            if print_config {
                print!("{}", config.to_toml());
                return Ok(());
            }
            gateway::signal::block_termination_signals();
            let gw = gateway::Gateway::start(config)?;
            let sig = gateway::signal::wait_for_termination();
            tracing::info!(signal = sig, "draining");
            gw.drain();
            gw.wait();
            Ok(())
        }
        Command::Loadtest(args) => {
            let report = loadtest::cli::run(&args)?;
            if report.error_count() > 0 {
                tracing::warn!(
                    errors = report.error_count(),
                    "the run saw errors (see the report)"
                );
            }
            Ok(())
        }
        Command::Token {
            secret,
            mid,
            key,
            room,
            platform,
            accepts,
            ttl,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let token = protocol::token::Token {
                mid,
                key,
                room_id: room,
                platform,
                accepts,
                ..Default::default()
            }
            .sign(secret.as_bytes(), now + ttl);
            println!("{}", token.to_json());
            Ok(())
        }
    }
}
