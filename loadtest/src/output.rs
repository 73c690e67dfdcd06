//! The report's files for a person (`--out DIR`): `report.json` (what `--report` writes),
//! `report.md` (the figures as Markdown tables, the warnings, the charts) and SVG charts drawn
//! with plotters: `throughput.svg` (messages received in each second of the run) and, when
//! bodies carried timestamps, `latency.svg` (latency p50/p90/p99/max in each second) and
//! `latency_cdf.svg` (the whole run's latency by percentile).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::report::{CdfPoint, HoldReport, SecondLatency};
use crate::{Error, Result};

fn chart_err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// Messages received per second over the run.
pub fn throughput_svg(series: &[u64]) -> std::result::Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let x_max = series.len().max(1) as u32;
        let y_max = series.iter().copied().max().unwrap_or(0).max(1) * 11 / 10 + 1;
        let mut chart = ChartBuilder::on(&root)
            .caption("messages received per second", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0u32..x_max, 0u64..y_max)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("messages/s")
            .draw()
            .map_err(chart_err)?;
        chart
            .draw_series(LineSeries::new(
                series.iter().enumerate().map(|(i, &v)| (i as u32, v)),
                &BLUE,
            ))
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// Milliseconds from microseconds.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Which figure of a second a line of the latency chart shows.
type Pick = fn(&SecondLatency) -> u64;

/// Latency p50, p90, p99 and max in each second of the run, in milliseconds; `seconds` is
/// the run's length (the x axis spans at least that).
pub fn latency_svg(
    by_sec: &[SecondLatency],
    seconds: usize,
) -> std::result::Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let x_max = by_sec
            .last()
            .map_or(0, |l| l.sec as usize + 1)
            .max(seconds)
            .max(1) as u32;
        let y_max = by_sec.iter().map(|l| ms(l.max)).fold(0.001, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "latency in each second (publish to arrival)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0u32..x_max, 0.0f64..y_max)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("ms")
            .draw()
            .map_err(chart_err)?;
        let lines: [(&str, RGBColor, Pick); 4] = [
            ("max", RGBColor(128, 128, 128), |l| l.max),
            ("p99", RED, |l| l.p99),
            ("p90", RGBColor(230, 140, 0), |l| l.p90),
            ("p50", BLUE, |l| l.p50),
        ];
        for (name, color, pick) in lines {
            chart
                .draw_series(LineSeries::new(
                    by_sec.iter().map(|l| (l.sec, ms(pick(l)))),
                    color,
                ))
                .map_err(chart_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// Where percentile `p` sits on the percentile chart's x axis: log10(1 / (1 - p/100)), so
/// 90 % is 1, 99 % is 2, 99.9 % is 3 (HdrHistogram's percentile plot). 100 % (the maximum)
/// goes to `top`, the axis' end.
fn percentile_x(p: f64, top: f64) -> f64 {
    if p >= 100.0 {
        top
    } else {
        (1.0 / (1.0 - p / 100.0)).log10().min(top)
    }
}

/// The x axis label at `x` of the percentile chart: `0%`, `90%`, `99%`, `99.9%`...
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x.round() as usize).saturating_sub(2).min(6);
    format!("{p:.digits$}%")
}

/// The run's latency by percentile (the points of [`crate::report::cdf`]): x the percentile
/// on HdrHistogram's log scale (90 %, 99 %, 99.9 %...), y the latency in milliseconds.
pub fn latency_cdf_svg(points: &[CdfPoint]) -> std::result::Result<String, String> {
    // The axis ends one decade past the last point below 100 %, where the maximum is drawn.
    let finite = points
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| percentile_x(p.percentile, f64::MAX))
        .fold(0.0, f64::max);
    let top = (finite.floor() + 1.0).clamp(1.0, 7.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let y_max = points.iter().map(|p| ms(p.us)).fold(0.001, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "latency by percentile, whole run (publish to arrival)",
                ("sans-serif", 20),
            )
            .margin(12)
            .margin_right(30)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0f64..top, 0.0f64..y_max)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_labels(top as usize + 1)
            .x_label_formatter(&|&x| {
                if x >= top {
                    "max".into()
                } else {
                    percentile_label(x)
                }
            })
            .draw()
            .map_err(chart_err)?;
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (percentile_x(p.percentile, top), ms(p.us)))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.iter().copied(), &RED))
            .map_err(chart_err)?;
        chart
            .draw_series(xy.iter().map(|&p| Circle::new(p, 2, RED.filled())))
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// The report as Markdown tables.
pub fn markdown(r: &HoldReport) -> String {
    let mut s = String::from("# corecast loadtest report\n\n");
    let _ = writeln!(
        s,
        "| connections asked | attempted | established | authenticated | open at end | closed by server |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |\n",
        r.connections,
        r.attempted,
        r.established,
        r.authenticated,
        r.open_at_end,
        r.closed_by_server
    );
    let _ = writeln!(
        s,
        "| auths/s | connect s | held s | run s | messages | frames | bytes | tester CPU s |\n|---|---|---|---|---|---|---|---|\n| {:.0} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {:.2} |\n",
        r.auth_rate,
        r.connect_secs,
        r.hold_secs,
        r.elapsed_secs,
        r.messages,
        r.frames,
        r.bytes,
        r.worker_cpu_secs
    );
    if let (Some(p), Some(expected), Some(missing)) =
        (&r.publish, r.expected_messages, r.missing_messages)
    {
        let errors: u64 = p.errors.values().sum();
        let _ = writeln!(
            s,
            "| pushes sent | ok | failed | late (>1 ms) | expected messages | missing |\n|---|---|---|---|---|---|\n| {} | {} | {errors} | {} | {expected} | {missing} |\n",
            p.sent, p.ok, p.late_over_1ms
        );
    }
    let o = &r.order;
    if o.checked > 0 {
        let _ = writeln!(
            s,
            "| sequence-checked | gaps | duplicates | reorders | bad bodies |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {} |\n",
            o.checked, o.gaps, o.duplicates, o.reorders, o.bad_bodies
        );
    }
    if let Some(l) = &r.latency_us {
        let _ = writeln!(
            s,
            "| latency (ms) | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n| {} samples | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            l.samples,
            l.p50 as f64 / 1000.0,
            l.p90 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.p999 as f64 / 1000.0,
            l.max as f64 / 1000.0
        );
    }
    for (name, map) in r.problems() {
        if !map.is_empty() {
            let _ = writeln!(s, "{name}:\n");
            for (k, v) in map {
                let _ = writeln!(s, "- {k}: {v}");
            }
            s.push('\n');
        }
    }
    if !r.warnings.is_empty() {
        s.push_str("## Warnings\n\n");
        for w in &r.warnings {
            let _ = writeln!(s, "- {w}");
        }
        s.push('\n');
    }
    s.push_str("## Charts\n\n");
    let charts = charts(r);
    for (file, what) in &charts {
        let _ = writeln!(s, "- [{file}]({file}): {what}");
    }
    if r.latency_cdf.is_empty() {
        s.push_str(
            "- no latency charts: no message carried a timestamp (`{\"seq\":N,\"ts\":T}` bodies, which `--publish` sends)\n",
        );
    }
    for (file, what) in &charts {
        let _ = write!(s, "\n![{what}]({file})\n");
    }
    s
}

/// The charts a report gets: file name and what it shows.
fn charts(r: &HoldReport) -> Vec<(&'static str, &'static str)> {
    let mut c = vec![(
        "throughput.svg",
        "messages received in each second of the run",
    )];
    if !r.latency_cdf.is_empty() {
        c.push((
            "latency.svg",
            "latency p50, p90, p99 and max in each second",
        ));
        c.push(("latency_cdf.svg", "the whole run's latency by percentile"));
    }
    c
}

/// Writes the JSON report to `path` (stdout when `None`) and, with `dir`, the files of
/// [`write_all`]: what `corecast loadtest` and `corecast loadtest merge` both end with.
pub fn emit(r: &HoldReport, path: Option<&Path>, dir: Option<&Path>) -> Result<()> {
    let json = serde_json::to_string_pretty(r).expect("a report always serializes");
    match path {
        Some(path) => std::fs::write(path, json + "\n").map_err(|source| Error::Report {
            path: path.display().to_string(),
            source,
        })?,
        None => println!("{json}"),
    }
    if let Some(dir) = dir {
        write_all(r, dir)?;
    }
    Ok(())
}

/// Writes `report.json`, `report.md` and the charts into `dir` (created if missing).
pub fn write_all(r: &HoldReport, dir: &Path) -> Result<()> {
    let io = |what: &str, source| Error::Report {
        path: dir.join(what).display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("", e))?;
    let json = serde_json::to_string_pretty(r).expect("a report always serializes");
    std::fs::write(dir.join("report.json"), json + "\n").map_err(|e| io("report.json", e))?;
    std::fs::write(dir.join("report.md"), markdown(r)).map_err(|e| io("report.md", e))?;
    for (file, _) in charts(r) {
        let svg = match file {
            "throughput.svg" => throughput_svg(&r.messages_per_sec),
            "latency.svg" => latency_svg(&r.latency_by_sec, r.messages_per_sec.len()),
            _ => latency_cdf_svg(&r.latency_cdf),
        }
        .map_err(Error::Options)?;
        std::fs::write(dir.join(file), svg).map_err(|e| io(file, e))?;
    }
    // No latency this time: an earlier run's charts in the same directory would mislead.
    if r.latency_cdf.is_empty() {
        for stale in ["latency.svg", "latency_cdf.svg"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render_as_svg() {
        let svg = throughput_svg(&[0, 10, 30, 20]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("messages received per second"));
        assert!(svg.contains("<polyline"), "a line is drawn");
        assert!(
            throughput_svg(&[]).unwrap().starts_with("<svg"),
            "an empty run still renders"
        );
        let by_sec = [
            SecondLatency {
                sec: 0,
                samples: 10,
                p50: 1_000,
                p90: 2_000,
                p99: 3_000,
                max: 5_000,
            },
            SecondLatency {
                sec: 3,
                samples: 10,
                p50: 1_500,
                p90: 2_500,
                p99: 4_000,
                max: 9_000,
            },
        ];
        let svg = latency_svg(&by_sec, 5).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("latency in each second"));
        assert!(
            svg.matches("<polyline").count() >= 4 + 4,
            "four lines and their legend"
        );
        assert!(svg.contains("\np99\n"), "the legend names the lines");
        let mut h = crate::timeline::run_histogram();
        for us in 1..=10_000 {
            h.record(us).unwrap();
        }
        let svg = latency_cdf_svg(&crate::report::cdf(&h)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"));
        assert!(
            svg.contains("\n99.9%\n") && svg.contains("\n90%\n"),
            "{svg}"
        );
        for empty in [latency_svg(&[], 0), latency_cdf_svg(&[])] {
            assert!(
                empty.unwrap().starts_with("<svg"),
                "no samples still renders"
            );
        }
    }

    #[test]
    fn markdown_lists_the_charts_and_the_warnings() {
        let dir = std::env::temp_dir().join(format!("loadtest-out-{}", std::process::id()));
        let mut r = HoldReport {
            messages_per_sec: vec![1, 2],
            warnings: vec!["busy".into()],
            ..HoldReport::default()
        };
        write_all(&r, &dir).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("## Warnings\n\n- busy\n"), "{md}");
        assert!(md.contains("- [throughput.svg](throughput.svg)"), "{md}");
        assert!(
            md.contains("no latency charts: no message carried a timestamp"),
            "{md}"
        );
        assert!(!dir.join("latency.svg").exists());

        let mut h = crate::timeline::run_histogram();
        let mut seconds = crate::timeline::Seconds::default();
        for us in [500, 800, 1_200] {
            h.record(us).unwrap();
            seconds.record(1, us);
        }
        r.set_latency(h, seconds);
        r.warnings.clear();
        write_all(&r, &dir).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(
            !md.contains("Warnings") && !md.contains("no latency charts"),
            "{md}"
        );
        for file in ["throughput.svg", "latency.svg", "latency_cdf.svg"] {
            assert!(md.contains(&format!("]({file})")), "{file} in {md}");
            let svg = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(svg.starts_with("<svg"), "{file}");
        }
        // A run without latency in the same directory takes the old latency charts away.
        r.set_latency(
            crate::timeline::run_histogram(),
            crate::timeline::Seconds::default(),
        );
        write_all(&r, &dir).unwrap();
        assert!(!dir.join("latency_cdf.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
