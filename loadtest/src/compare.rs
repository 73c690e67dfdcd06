//! `corecast loadtest --compare previous.json`: the headline figures of this run beside those
//! of an earlier report (the JSON `--report` writes), with the change of each. Pure: two JSON
//! values in, text out; a figure missing from either side shows as `-`.

use std::fmt::Write;

use serde_json::Value;

/// (label, JSON pointer, whether a higher value is better).
const FIGURES: &[(&str, &str, bool)] = &[
    ("authenticated", "/authenticated", true),
    ("auths/s", "/auth_rate", true),
    ("messages received", "/messages", true),
    ("messages missing", "/missing_messages", false),
    ("pushes ok", "/publish/ok", true),
    ("order gaps", "/order/gaps", false),
    ("order reorders", "/order/reorders", false),
    ("latency p50 (us)", "/latency_us/p50", false),
    ("latency p99 (us)", "/latency_us/p99", false),
    ("latency p99.9 (us)", "/latency_us/p999", false),
    ("latency max (us)", "/latency_us/max", false),
    ("closed by server", "/closed_by_server", false),
    ("tester cpu (s)", "/worker_cpu_secs", false),
];

fn num(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr).and_then(Value::as_f64)
}

fn show(x: Option<f64>) -> String {
    match x {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

/// One line per figure: `label: before -> now (+x.y%)`, with `better`/`worse` when it moved.
pub fn compare(before: &Value, now: &Value) -> String {
    let mut out = String::from("compared with the previous report:\n");
    for (label, ptr, higher_is_better) in FIGURES {
        let (b, n) = (num(before, ptr), num(now, ptr));
        if b.is_none() && n.is_none() {
            continue;
        }
        let change = match (b, n) {
            (Some(b), Some(n)) if b != 0.0 => {
                let pct = (n - b) / b.abs() * 100.0;
                let verdict = if n == b {
                    ""
                } else if (n > b) == *higher_is_better {
                    ", better"
                } else {
                    ", worse"
                };
                format!(" ({pct:+.1}%{verdict})")
            }
            (Some(b), Some(n)) if n != b => {
                let verdict = if (n > b) == *higher_is_better {
                    "better"
                } else {
                    "worse"
                };
                format!(" ({verdict})")
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "  {label}: {} -> {}{change}", show(b), show(n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deltas_with_direction() {
        let before = json!({"authenticated": 100, "messages": 1000, "latency_us": {"p99": 2000},
                            "order": {"gaps": 0}, "worker_cpu_secs": 1.5});
        let now = json!({"authenticated": 100, "messages": 1100, "latency_us": {"p99": 3000},
                         "order": {"gaps": 4}, "missing_messages": 0});
        let text = compare(&before, &now);
        assert!(
            text.contains("  authenticated: 100 -> 100 (+0.0%)\n"),
            "{text}"
        );
        assert!(
            text.contains("  messages received: 1000 -> 1100 (+10.0%, better)\n"),
            "{text}"
        );
        assert!(
            text.contains("  latency p99 (us): 2000 -> 3000 (+50.0%, worse)\n"),
            "{text}"
        );
        assert!(text.contains("  order gaps: 0 -> 4 (worse)\n"), "{text}");
        assert!(text.contains("  messages missing: - -> 0\n"), "{text}");
        assert!(text.contains("  tester cpu (s): 1.50 -> -\n"), "{text}");
        assert!(!text.contains("pushes ok"), "absent on both sides: {text}");
    }
}
