//! `corecast tune check --apply`: writes the sysctls a check found below the profile,
//! each field raised to the recommendation and none lowered.

use std::fs;

use crate::check::{Raise, Report};
use crate::{Error, Result};

/// Writes every raise of the report, in row order, and returns them (what changed, old and
/// new). Stops at the first write that fails, naming the file.
pub fn apply(report: &Report) -> Result<Vec<Raise>> {
    let mut done = Vec::new();
    for raise in report.rows.iter().filter_map(|r| r.raise.as_ref()) {
        if raise.to == raise.from {
            continue;
        }
        let text = crate::sysctl::format(&raise.to);
        fs::write(&raise.path, format!("{text}\n")).map_err(|source| Error::Write {
            path: raise.path.clone(),
            source,
        })?;
        done.push(raise.clone());
    }
    Ok(done)
}
