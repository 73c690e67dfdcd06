//! /proc/interrupts: which interrupt lines belong to a network interface.

/// One numbered interrupt line of /proc/interrupts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The IRQ number (the first column).
    pub irq: u32,
    /// What follows the per-core counts: the controller, the trigger, and the device names
    /// (e.g. `PCI-MSIX-0000:00:03.0 1-edge virtio2-input.0`, `... eth0-TxRx-3`).
    pub description: String,
}

/// Parses the numbered lines of /proc/interrupts (the NMI/LOC/... summary lines and anything
/// garbled are skipped). The header names the cores, which tells how many counts to skip.
pub fn parse(text: &str) -> Vec<Line> {
    let mut lines = text.lines();
    let cores = lines
        .next()
        .map(|h| {
            h.split_whitespace()
                .filter(|c| c.starts_with("CPU"))
                .count()
        })
        .unwrap_or(0);
    let mut out = Vec::new();
    for line in lines {
        let Some((head, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = head.trim().parse::<u32>() else {
            continue;
        };
        let mut fields = rest.split_whitespace().peekable();
        let mut skipped = 0;
        while skipped < cores && fields.peek().is_some_and(|f| f.parse::<u64>().is_ok()) {
            fields.next();
            skipped += 1;
        }
        out.push(Line {
            irq,
            description: fields.collect::<Vec<_>>().join(" "),
        });
    }
    out
}

/// True when this line names the interface, or its device (e.g. `virtio2`, or a PCI address
/// such as `0000:3b:00.0` in `mlx5_comp0@pci:0000:3b:00.0`), as a whole word: `eth0` matches
/// `eth0-TxRx-0` but not `eth01`.
pub fn names(line: &Line, interface: &str, device: Option<&str>) -> bool {
    std::iter::once(interface)
        .chain(device)
        .filter(|n| !n.is_empty())
        .any(|name| contains_word(&line.description, name))
}

fn contains_word(text: &str, word: &str) -> bool {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
    text.match_indices(word).any(|(at, _)| {
        boundary(text[..at].chars().next_back()) && boundary(text[at + word.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "           CPU0       CPU1       \n\
  26:          0         15  IO-APIC   4-edge      ttyS0\n\
  38:          0      10188  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
  39:       7640          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
  40:          3          0  PCI-MSIX-0000:00:04.0   1-edge      virtio21-input.0\n\
  41:          3          0  IR-PCI-MSI 524288-edge      eth0-TxRx-0\n\
  42:          3          0  IR-PCI-MSI 524289-edge      eth01-TxRx-0\n\
  43:          3          0  IR-PCI-MSI 1-edge      mlx5_comp0@pci:0000:3b:00.0\n\
 NMI:          0          0   Non-maskable interrupts\n\
 ERR:          0\n";

    #[test]
    fn numbered_lines_and_names() {
        let lines = parse(TEXT);
        assert_eq!(
            lines.iter().map(|l| l.irq).collect::<Vec<_>>(),
            vec![26, 38, 39, 40, 41, 42, 43]
        );
        assert_eq!(
            lines[1].description,
            "PCI-MSIX-0000:00:03.0 1-edge virtio2-input.0"
        );
        let of = |iface, dev| {
            lines
                .iter()
                .filter(|l| names(l, iface, dev))
                .map(|l| l.irq)
                .collect::<Vec<_>>()
        };
        assert_eq!(of("eth9", Some("virtio2")), vec![38, 39]);
        assert_eq!(of("eth0", None), vec![41]);
        assert_eq!(of("ens1", Some("0000:3b:00.0")), vec![43]);
        assert!(parse("").is_empty());
    }
}
