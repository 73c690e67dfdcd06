//! /proc/self/limits: the soft and hard resource limits of a process (nofile and memlock are
//! the ones the check reads).

/// One limit value: a number (in the file's unit) or "unlimited".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Unlimited,
    Of(u64),
}

impl Value {
    /// True when this value is at least `n`.
    pub fn at_least(self, n: u64) -> bool {
        match self {
            Value::Unlimited => true,
            Value::Of(v) => v >= n,
        }
    }
}

/// A soft and a hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub soft: Value,
    pub hard: Value,
}

/// The limits the check reads; a line missing from the file is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// "Max open files" (RLIMIT_NOFILE), descriptors.
    pub nofile: Option<Limit>,
    /// "Max locked memory" (RLIMIT_MEMLOCK), bytes.
    pub memlock: Option<Limit>,
}

/// Parses the text of /proc/PID/limits. Lines look like
/// `Max open files            20000                20000                files`;
/// lines that do not parse are skipped.
pub fn parse(text: &str) -> Limits {
    let mut limits = Limits::default();
    for line in text.lines() {
        let slot = if let Some(rest) = line.strip_prefix("Max open files") {
            Some((&mut limits.nofile, rest))
        } else {
            line.strip_prefix("Max locked memory")
                .map(|rest| (&mut limits.memlock, rest))
        };
        let Some((slot, rest)) = slot else { continue };
        let mut fields = rest.split_whitespace().map(value);
        if let (Some(Some(soft)), Some(Some(hard))) = (fields.next(), fields.next()) {
            *slot = Some(Limit { soft, hard });
        }
    }
    limits
}

fn value(field: &str) -> Option<Value> {
    if field == "unlimited" {
        Some(Value::Unlimited)
    } else {
        field.parse().ok().map(Value::Of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nofile_and_memlock() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            20000                40000                files     \n\
            Max locked memory         8388608              unlimited            bytes     \n";
        let l = parse(text);
        assert_eq!(
            l.nofile,
            Some(Limit {
                soft: Value::Of(20000),
                hard: Value::Of(40000)
            })
        );
        assert_eq!(
            l.memlock,
            Some(Limit {
                soft: Value::Of(8388608),
                hard: Value::Unlimited
            })
        );
        assert!(Value::Unlimited.at_least(u64::MAX));
        assert!(!Value::Of(5).at_least(6));
        // Missing or garbled lines are unknown, not errors.
        assert_eq!(parse("Max open files  lots  more\n"), Limits::default());
        assert_eq!(parse(""), Limits::default());
    }
}
