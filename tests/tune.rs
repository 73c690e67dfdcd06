//! `corecast tune` as a user runs it, on a fake host tree (`--root`, hidden, for tests): the
//! check's exit status says whether a row is a BLOCKER and the table names the row; --apply
//! fixes a low sysctl; generate prints configs the gateway loads.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::TempDir;

fn tune(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("tune")
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_exits_non_zero_on_a_blocker_and_names_the_row() {
    let dir = TempDir::new("tune");
    tuning::fake_host::sixteen_core(&dir.0).unwrap();
    let fine = tune(&dir.0, &["check"]);
    assert!(fine.status.success(), "{}", stdout(&fine));
    assert!(stdout(&fine).contains("0 blockers"), "{}", stdout(&fine));

    tuning::fake_host::set_sysctl(&dir.0, "net.core.somaxconn", "128").unwrap();
    let blocked = tune(&dir.0, &["check"]);
    assert_eq!(blocked.status.code(), Some(1), "{}", stdout(&blocked));
    let row = stdout(&blocked)
        .lines()
        .find(|l| l.starts_with("net.core.somaxconn"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(row.contains("128") && row.contains("BLOCKER"), "{row}");

    // The root also comes from the environment.
    let env = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args(["tune", "check", "--profile", "16core"])
        .env("CORECAST_TUNE_ROOT", &dir.0)
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(1), "{}", stdout(&env));

    let applied = tune(&dir.0, &["check", "--apply"]);
    assert!(applied.status.success(), "{}", stdout(&applied));
    assert!(
        stdout(&applied).contains("applied: net.core.somaxconn 128 -> 65535"),
        "{}",
        stdout(&applied)
    );

    let unknown = tune(&dir.0, &["check", "--profile", "8core"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown profile \"8core\""));
}

#[test]
fn generate_prints_configs_for_the_host() {
    let dir = TempDir::new("tune-generate");
    tuning::fake_host::sixteen_core(&dir.0).unwrap();
    let out = tune(&dir.0, &["generate"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let (g, d) = text
        .split_once("# ---- dispatcher.toml ----\n")
        .expect("both files printed");
    let g = gateway::Config::from_toml(g).unwrap();
    assert_eq!(g.cores, (2..16).collect::<Vec<_>>());
    dispatcher::Config::from_toml(d).unwrap();
}
