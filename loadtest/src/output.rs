//! The report's files for a person (`--out DIR`): `report.json` (what `--report` writes),
//! `report.md` (the figures as Markdown tables) and SVG charts drawn with plotters:
//! `throughput.svg` (messages received in each second of the run) and, when bodies carried
//! timestamps, `latency.svg` (the run's latency percentiles).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::report::{HoldReport, Latency};
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

/// The run's latency percentiles (p50 to max), in milliseconds.
pub fn latency_svg(l: &Latency) -> std::result::Result<String, String> {
    let points = [
        (50.0, l.p50),
        (90.0, l.p90),
        (99.0, l.p99),
        (99.9, l.p999),
        (100.0, l.max),
    ];
    let ms = |us: u64| us as f64 / 1000.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let y_max = ms(l.max).max(0.001) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "latency by percentile (publish to arrival)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(50.0f64..100.0f64, 0.0f64..y_max)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .draw()
            .map_err(chart_err)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(p, us)| (p, ms(us))),
                &RED,
            ))
            .map_err(chart_err)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(p, us)| Circle::new((p, ms(us)), 3, RED.filled())),
            )
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
    s.push_str("![throughput](throughput.svg)\n");
    if r.latency_us.is_some() {
        s.push_str("\n![latency](latency.svg)\n");
    }
    s
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
    let svg = throughput_svg(&r.messages_per_sec).map_err(Error::Options)?;
    std::fs::write(dir.join("throughput.svg"), svg).map_err(|e| io("throughput.svg", e))?;
    if let Some(l) = &r.latency_us {
        let svg = latency_svg(l).map_err(Error::Options)?;
        std::fs::write(dir.join("latency.svg"), svg).map_err(|e| io("latency.svg", e))?;
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
        let l = Latency {
            samples: 5,
            mean: 2.0,
            p50: 1000,
            p90: 2000,
            p99: 3000,
            p999: 4000,
            max: 5000,
        };
        let svg = latency_svg(&l).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"));
    }
}
