//! The command line of `corecast tune` (a clap [`Args`] the binary embeds) and running it:
//! `check [--profile P] [--apply]` prints one table and returns whether a blocker remains;
//! `generate [--profile P] [--out DIR]` prints or writes gateway.toml and dispatcher.toml.

use std::io::Write;
use std::path::PathBuf;

use crate::check::{Report, Status, check};
use crate::host::Host;
use crate::profile::{self, Profile};
use crate::{Error, Result, apply, generate, sysctl};

/// Check this host against a tuning profile, or generate per-core configs for it.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct Args {
    #[command(subcommand)]
    pub command: Tool,
    /// Read (and with --apply, write) the host under this directory instead of / (tests).
    #[arg(
        long,
        global = true,
        hide = true,
        env = "CORECAST_TUNE_ROOT",
        default_value = "/"
    )]
    pub root: PathBuf,
}

#[derive(clap::Subcommand, Clone, Debug, PartialEq)]
pub enum Tool {
    /// Compare the host with a profile: one row per item (current, recommended, status, why);
    /// exits non-zero when a row is a BLOCKER.
    Check {
        /// laptop, 16core or 64core-2socket; default: by online cores (≤4, ≤32, more).
        #[arg(long)]
        profile: Option<String>,
        /// Raise the sysctls below the profile (never lowering a value or a field) and print
        /// each change; print what must be changed by hand.
        #[arg(long)]
        apply: bool,
    },
    /// Write the profile's gateway.toml and dispatcher.toml with this host's cores.
    Generate {
        /// laptop, 16core or 64core-2socket; default: by online cores.
        #[arg(long)]
        profile: Option<String>,
        /// Directory to write gateway.toml and dispatcher.toml into; default: print both.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs the command, printing to `out`. `Ok(false)`: the check found a blocker.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<bool> {
    let host = Host::read(&args.root);
    match &args.command {
        Tool::Check { profile, apply } => run_check(args, host, profile.as_deref(), *apply, out),
        Tool::Generate { profile, out: dir } => {
            let profile = choose(profile.as_deref(), &host)?;
            let g = generate::generate(&host, profile)?;
            match dir {
                Some(dir) => {
                    let write = |name: &str, text: &str| {
                        let path = dir.join(name);
                        std::fs::create_dir_all(dir)
                            .and_then(|_| std::fs::write(&path, text))
                            .map_err(|source| Error::Write { path, source })
                    };
                    write("gateway.toml", &g.gateway_toml)?;
                    write("dispatcher.toml", &g.dispatcher_toml)?;
                    say(
                        out,
                        &format!(
                            "wrote {} and {} (profile {}, shards on cores {})\n",
                            dir.join("gateway.toml").display(),
                            dir.join("dispatcher.toml").display(),
                            profile.name,
                            crate::cpulist::format(&g.layout.shards())
                        ),
                    )?;
                }
                None => say(
                    out,
                    &format!(
                        "# ---- gateway.toml ----\n{}\n# ---- dispatcher.toml ----\n{}",
                        g.gateway_toml, g.dispatcher_toml
                    ),
                )?,
            }
            Ok(true)
        }
    }
}

fn run_check(
    args: &Args,
    host: Host,
    name: Option<&str>,
    apply: bool,
    out: &mut dyn Write,
) -> Result<bool> {
    let profile = choose(name, &host)?;
    let mut report = check(&host, profile)?;
    let mut applied = Vec::new();
    if apply {
        applied = apply::apply(&report)?;
        report = check(&Host::read(&args.root), profile)?;
    }
    let chosen = match (name, &host.online) {
        (Some(_), _) => "chosen with --profile".to_string(),
        (None, Some(c)) => format!("chosen for {} online cores", c.len()),
        (None, None) => "online cores unknown".to_string(),
    };
    let mut text = format!(
        "profile {}: {} ({chosen})\n\n{}\n",
        profile.name,
        profile.summary,
        report.table()
    );
    text.push_str(&summary(&report));
    if apply {
        if applied.is_empty() {
            text.push_str("applied: nothing to raise\n");
        }
        for r in &applied {
            text.push_str(&format!(
                "applied: {} {} -> {}\n",
                r.key,
                sysctl::format(&r.from),
                sysctl::format(&r.to)
            ));
        }
    } else {
        let n = report.rows.iter().filter(|r| r.raise.is_some()).count();
        if n > 0 {
            text.push_str(&format!(
                "--apply raises {n} sysctl(s) to the profile (never lowering a value or a field)\n"
            ));
        }
    }
    for r in report.rows.iter().filter(|r| r.status != Status::Ok) {
        if let Some(what) = &r.by_hand {
            text.push_str(&format!("by hand ({}): {what}\n", r.item));
        }
    }
    say(out, &text)?;
    Ok(report.count(Status::Blocker) == 0)
}

fn summary(report: &Report) -> String {
    let (b, a) = (report.count(Status::Blocker), report.count(Status::Advice));
    format!(
        "{b} blocker{}, {a} advice, {} ok\n",
        if b == 1 { "" } else { "s" },
        report.count(Status::Ok)
    )
}

/// The named profile, or the one for the host's online cores.
pub fn choose(name: Option<&str>, host: &Host) -> Result<&'static Profile> {
    match name {
        Some(name) => profile::named(name),
        None => Ok(profile::for_cores(
            host.online.as_ref().map_or(1, |c| c.len()),
        )),
    }
}

fn say(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).map_err(Error::Output)
}
