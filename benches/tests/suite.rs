//! `corecast-bench suite --short` end to end: the real binary runs every shape (memory, room
//! fan-out, goim's shape through a real `corecast up`, criterion estimates) against the
//! gateway and the bare writer, and the files it writes are checked. Named `heavy_` so that
//! nextest gives it the machine to itself (.config/nextest.toml).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `corecast` built in the same profile and target directory as `corecast-bench`: cargo
/// builds a test's own package's binaries first, not the root package's, so build it here
/// (a no-op when it is up to date).
fn corecast() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_corecast-bench"));
    let profile_dir = bench.parent().expect("target/<profile>");
    let target = profile_dir.parent().expect("target");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(p) => p,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace)
        .args(["build", "--bin", "corecast", "--profile", profile])
        .arg("--target-dir")
        .arg(target)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --bin corecast: {status}");
    let bin = profile_dir.join("corecast");
    assert!(bin.exists(), "{}", bin.display());
    bin
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("corecast-suite-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f64_of(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// Both sides of a pushing row delivered everything they were asked to.
fn assert_complete(row: &Value, what: &str) {
    for side in ["gateway", "bare_writer"] {
        let x = &row[side];
        let expected = x["expected"].as_u64().unwrap_or(0);
        assert!(expected > 0, "{what} {side}: nothing expected: {x}");
        assert_eq!(x["delivered"], x["expected"], "{what} {side}: {x}");
        assert!(
            f64_of(&x["deliveries_per_cpu_sec"], "deliveries per CPU-s") > 0.0,
            "{what} {side}"
        );
    }
    let share = f64_of(&row["share_of_bare_writer"], "share");
    assert!(share.is_finite() && share > 0.0, "{what}: share {share}");
}

#[test]
fn heavy_suite_short_runs_every_shape_for_gateway_and_bare_writer() {
    let dir = tempdir();
    let out = dir.join("out");
    // A criterion result, as `cargo bench` leaves them.
    let est = dir.join("criterion/frame/encode/new");
    std::fs::create_dir_all(&est).unwrap();
    std::fs::write(
        est.join("estimates.json"),
        r#"{"mean":{"point_estimate":123.5},"median":{"point_estimate":120.0}}"#,
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_corecast-bench"))
        .env("CORECAST_BIN", corecast())
        .arg("--out")
        .arg(&out)
        .args(["--label", "ci", "suite", "--short", "--criterion-dir"])
        .arg(dir.join("criterion"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");

    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let stem = names
        .iter()
        .find_map(|n| n.strip_suffix("-ci.json"))
        .unwrap_or_else(|| panic!("no <date>-<host>-ci.json in {names:?}"))
        .to_string()
        + "-ci";
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{stem}.json"))).unwrap())
            .unwrap();
    assert_eq!(doc["what"], "suite");
    assert!(doc["command"].as_str().unwrap().contains("suite --short"));
    for k in ["cpu", "cores", "memory_gib", "kernel", "host"] {
        assert!(
            !doc["machine"][k].is_null(),
            "machine.{k}: {}",
            doc["machine"]
        );
    }
    assert!(stem.starts_with(doc["date"].as_str().unwrap()), "{stem}");
    let r = &doc["result"];

    let m = &r["memory"];
    for side in ["gateway", "bare_writer"] {
        assert_eq!(m[side]["conns"], 2_000, "{m}");
        assert!(
            f64_of(&m[side]["kernel_bytes_per_pair"], "kernel bytes") > 0.0,
            "{m}"
        );
        assert!(!m[side]["user_bytes_per_conn"].is_null(), "{m}");
    }
    let ratio = f64_of(&m["kernel_gateway_over_bare_writer"], "kernel ratio");
    assert!(ratio.is_finite() && ratio > 0.0, "{m}");

    let fanout = r["fanout"].as_array().unwrap();
    assert_eq!(fanout.len(), 2, "one row per rate: {fanout:?}");
    for row in fanout {
        assert_complete(row, "fan-out");
        assert_eq!(row["gateway"]["gaps"], 0, "{row}");
    }

    let goim = r["goim"].as_array().unwrap();
    assert_eq!(goim.len(), 2, "goim's body and the seq body: {goim:?}");
    assert_eq!(goim[0]["body"], r#"{"test":1}"#);
    for row in goim {
        assert_complete(row, "goim shape");
        let g = &row["gateway"];
        assert_eq!(g["lost"], 0, "{g}");
        assert_eq!(
            g["pushes_ok"].as_u64().unwrap() * 1_000,
            g["expected"].as_u64().unwrap()
        );
        assert!(f64_of(&g["process_cpu_secs"], "up CPU") > 0.0, "{g}");
        assert!(
            f64_of(&g["rss_bytes_per_conn_peak"], "RSS per conn") > 0.0,
            "{g}"
        );
        let report = out
            .join(g["report_dir"].as_str().unwrap())
            .join("report.md");
        assert!(report.exists(), "{}", report.display());
    }
    let seq = &goim[1]["gateway"]["latency_us"];
    assert!(
        seq["p50"].as_u64().unwrap() <= seq["p99"].as_u64().unwrap(),
        "{seq}"
    );
    assert!(!seq["p999"].is_null(), "{seq}");

    let benches = r["criterion"]["benchmarks"].as_array().unwrap();
    assert_eq!(benches.len(), 1, "{benches:?}");
    assert_eq!(benches[0]["name"], "frame/encode");
    assert_eq!(benches[0]["mean_ns"], 123.5);

    let md = std::fs::read_to_string(out.join(format!("{stem}.md"))).unwrap();
    for heading in [
        "## Memory",
        "## Room fan-out",
        "## goim's shape",
        "## Criterion",
        "## Charts",
    ] {
        assert!(md.contains(heading), "{heading} in {md}");
    }
    assert!(
        md.contains("| `frame/encode` | 123.5 ns | 120.0 ns |"),
        "{md}"
    );
    assert!(md.contains(&format!("]({stem}.json)")), "{md}");
    let charts = doc["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 3, "{charts:?}");
    for c in charts {
        let file = c["file"].as_str().unwrap();
        assert!(
            md.contains(&format!("]({file})\n")) && md.contains(&format!("]({file}): ")),
            "{file} linked and shown in {md}"
        );
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
