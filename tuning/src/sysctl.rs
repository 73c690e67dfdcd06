//! Sysctl values: where each lives under /proc/sys, how multi-field values compare, and how a
//! value is raised without lowering any field.

use std::path::{Path, PathBuf};

/// The sysctls the host reader reads (every key the profiles name is among them).
pub const KEYS: &[&str] = &[
    "fs.file-max",
    "fs.nr_open",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.netfilter.nf_conntrack_max",
    "net.core.netdev_max_backlog",
];

/// How a value compares with a wanted one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One number, or several compared field by field (tcp_rmem, tcp_wmem, tcp_mem): each
    /// field must be at least the wanted one.
    Fields,
    /// A range "low high" (ip_local_port_range): what counts is how many ports it holds, and
    /// raising it widens it (a lower low, a higher high).
    Range,
}

/// The kind of a sysctl key.
pub fn kind(key: &str) -> Kind {
    if key == "net.ipv4.ip_local_port_range" {
        Kind::Range
    } else {
        Kind::Fields
    }
}

/// The file of a sysctl under a root: `net.core.somaxconn` → ROOT/proc/sys/net/core/somaxconn.
pub fn path(root: &Path, key: &str) -> PathBuf {
    let mut p = root.join("proc/sys");
    p.extend(key.split('.'));
    p
}

/// Parses a sysctl's text ("65535\n", "4096\t131072\t6291456\n") into its fields; `None` when
/// it is empty or any field is not a number.
pub fn parse(text: &str) -> Option<Vec<u64>> {
    let fields: Option<Vec<u64>> = text.split_whitespace().map(|f| f.parse().ok()).collect();
    fields.filter(|f| !f.is_empty())
}

/// Prints fields as `sysctl -n` does after its tabs are squeezed: space-separated.
pub fn format(fields: &[u64]) -> String {
    fields
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many ports a range holds.
pub fn range_width(fields: &[u64]) -> u64 {
    match fields {
        [lo, hi] if hi >= lo => hi - lo + 1,
        _ => 0,
    }
}

/// True when `current` is at least `wanted` (per field, or by range width). Values with
/// different field counts never meet.
pub fn meets(kind: Kind, current: &[u64], wanted: &[u64]) -> bool {
    if current.len() != wanted.len() {
        return false;
    }
    match kind {
        Kind::Fields => current.iter().zip(wanted).all(|(c, w)| c >= w),
        Kind::Range => range_width(current) >= range_width(wanted),
    }
}

/// `current` raised to at least `wanted`, never lowered: each field the larger of the two (a
/// range: the lower low and the higher high). With different field counts, `wanted`.
pub fn raised(kind: Kind, current: &[u64], wanted: &[u64]) -> Vec<u64> {
    if current.len() != wanted.len() {
        return wanted.to_vec();
    }
    match (kind, current, wanted) {
        (Kind::Range, [clo, chi], [wlo, whi]) => vec![*clo.min(wlo), *chi.max(whi)],
        _ => current.iter().zip(wanted).map(|(c, w)| *c.max(w)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_field_values() {
        assert_eq!(
            parse("4096\t131072\t6291456\n"),
            Some(vec![4096, 131072, 6291456])
        );
        assert_eq!(parse("65535\n"), Some(vec![65535]));
        assert_eq!(parse(""), None);
        assert_eq!(parse("1 x"), None);
        assert_eq!(format(&[1024, 65000]), "1024 65000");
        // Field-wise: one field below is enough to miss; raising keeps the higher ones.
        let (cur, want) = ([4096, 131072, 33554432], [4096, 262144, 6291456]);
        assert!(!meets(Kind::Fields, &cur, &want));
        assert_eq!(
            raised(Kind::Fields, &cur, &want),
            vec![4096, 262144, 33554432]
        );
        assert!(meets(Kind::Fields, &[5, 5], &[5, 4]));
        assert!(!meets(Kind::Fields, &[5], &[5, 4]));
        // Ranges compare by width and widen.
        assert_eq!(range_width(&[32768, 60999]), 28232);
        assert!(meets(Kind::Range, &[1024, 65000], &[32768, 60999]));
        assert!(!meets(Kind::Range, &[40000, 60999], &[32768, 60999]));
        assert_eq!(
            raised(Kind::Range, &[2000, 60999], &[1024, 65000]),
            vec![1024, 65000]
        );
        assert_eq!(
            raised(Kind::Range, &[500, 61000], &[1024, 65000]),
            vec![500, 65000]
        );
        assert_eq!(
            path(Path::new("/r"), "net.core.somaxconn"),
            PathBuf::from("/r/proc/sys/net/core/somaxconn")
        );
    }
}
