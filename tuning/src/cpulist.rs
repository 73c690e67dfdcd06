//! Linux cpulists ("0-3,8-11", as in /sys/devices/system/cpu/online and
//! /proc/irq/N/smp_affinity_list): parsing and printing.

/// Parses a cpulist into sorted, distinct core numbers. An empty (or all-blank) list is an
/// empty set, as the kernel writes for /sys/devices/system/cpu/isolated.
pub fn parse(text: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("{s:?} in cpulist {text:?} is not a core number"))
        };
        // The kernel also accepts "0-31:2/8" (a stride); hosts print plain ranges only.
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if hi < lo {
                    return Err(format!("range {part:?} in cpulist {text:?} runs backwards"));
                }
                cores.extend(lo..=hi);
            }
            None => cores.push(number(part)?),
        }
    }
    cores.sort_unstable();
    cores.dedup();
    Ok(cores)
}

/// Prints cores as a cpulist, runs collapsed: [0, 1, 2, 3, 8] → "0-3,8". Empty → "".
pub fn format(cores: &[usize]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_singles() {
        assert_eq!(parse("0-3,8-11").unwrap(), vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(parse("5\n").unwrap(), vec![5]);
        assert_eq!(parse("2,0-1,1").unwrap(), vec![0, 1, 2]);
        assert_eq!(parse("\n").unwrap(), Vec::<usize>::new());
        assert!(parse("3-1").unwrap_err().contains("backwards"));
        assert!(parse("0-x").unwrap_err().contains("\"x\""));
        assert_eq!(format(&[0, 1, 2, 3, 8, 9, 10, 11]), "0-3,8-11");
        assert_eq!(format(&[4, 0, 2]), "0,2,4");
        assert_eq!(format(&[]), "");
    }
}
