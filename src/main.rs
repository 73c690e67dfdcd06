//! The `corecast` binary: parses the command line and hands each subcommand to its crate.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod up;

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
    /// Run everything in one process (the default main job): a gateway (TCP :3101, WebSocket
    /// :3102) and a dispatcher (goim's HTTP API :3111) joined by the internal link, with the
    /// embedded queue and the in-memory session registry.
    Up {
        /// Gateway TOML config (see gateway/gateway.toml); defaults when absent.
        #[arg(long)]
        gateway_config: Option<PathBuf>,
        /// Dispatcher TOML config (see dispatcher/dispatcher.toml); defaults when absent.
        #[arg(long)]
        dispatcher_config: Option<PathBuf>,
        /// Print both effective configs and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Run the gateway (goim's comet): TCP :3101, WebSocket :3102 at /sub, and WSS (:3103 in
    /// goim) when wss_bind is set. SIGTERM drains; SIGHUP reloads the WSS certificate.
    Gateway {
        /// Gateway TOML config (see gateway/gateway.toml); defaults when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the effective config and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Run a dispatcher (goim's logic and job roles): HTTP API :3111, gateway links :3119.
    Dispatcher {
        /// Dispatcher TOML config (see dispatcher/dispatcher.toml); defaults when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the effective config and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Join a room as a goim client (TCP or WebSocket) and print every message that arrives.
    Listen(loadtest::listen::ListenArgs),
    /// Hold goim connections to a gateway and count what arrives (the bundled load tester).
    Loadtest(Box<loadtest::cli::Args>),
    /// Check this host against a tuning profile (`check [--profile P] [--apply]`), or write
    /// per-core gateway and dispatcher configs for it (`generate [--profile P] [--out DIR]`).
    Tune(tuning::cli::Args),
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
            let config = gateway_config(config)?;
            if print_config {
                print!("{}", config.to_toml());
                return Ok(());
            }
            gateway::signal::block_gateway_signals();
            let gw = gateway::Gateway::start(config)?;
            // SIGHUP reloads the WSS certificate; SIGTERM/SIGINT drain.
            let sig = gateway::signal::serve_until_terminated(&gw);
            tracing::info!(signal = sig, "draining");
            gw.drain();
            gw.wait();
            Ok(())
        }
        Command::Up {
            gateway_config: g,
            dispatcher_config: d,
            print_config,
        } => up::run(gateway_config(g)?, dispatcher_config(d)?, print_config),
        Command::Dispatcher {
            config,
            print_config,
        } => {
            let config = dispatcher_config(config)?;
            if print_config {
                print!("{}", config.to_toml());
                return Ok(());
            }
            gateway::signal::block_termination_signals();
            let d = dispatcher::Dispatcher::start(config)?;
            let sig = gateway::signal::wait_for_termination();
            tracing::info!(signal = sig, "stopping");
            d.stop();
            Ok(())
        }
        Command::Listen(args) => {
            let mut out = std::io::stdout().lock();
            match loadtest::listen::run(&args, &mut out) {
                Ok(_) => Ok(()),
                // `corecast listen | head`: the reader left, which is not a failure.
                Err(loadtest::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
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
        Command::Tune(args) => {
            let fine = tuning::cli::run(&args, &mut std::io::stdout().lock())?;
            if !fine {
                // The table above names each blocker; the exit status says there was one.
                std::process::exit(1);
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

fn gateway_config(path: Option<PathBuf>) -> anyhow::Result<gateway::Config> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            gateway::Config::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => gateway::Config::default(),
    })
}

fn dispatcher_config(path: Option<PathBuf>) -> anyhow::Result<dispatcher::Config> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            dispatcher::Config::from_toml(&text)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => dispatcher::Config::default(),
    })
}
