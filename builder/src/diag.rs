//! Diagnostics: every problem found in a catalog, with file, line, field and reason.

use std::fmt;

/// How many diagnostics a build keeps to print; the rest are counted. A catalog with more
/// problems than this has one systematic problem, and its first few thousand examples show it.
pub const DIAGNOSTICS_KEPT_MAX: usize = 2_000;

/// One problem in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: &'static str,
    /// 1-based line (the CSV header is line 1); 0 when the problem is not on one line.
    pub line: u64,
    /// The field's path inside the record, e.g. `targeting.countries[2]`; empty for the record.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Collected diagnostics: the first [`DIAGNOSTICS_KEPT_MAX`] kept, all counted.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    pub kept: Vec<Diagnostic>,
    pub n_total: u64,
}

impl Diagnostics {
    pub fn push(
        &mut self,
        file: &'static str,
        line: u64,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.n_total += 1;
        if self.kept.len() < DIAGNOSTICS_KEPT_MAX {
            self.kept.push(Diagnostic { file, line, field: field.into(), reason: reason.into() });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.n_total == 0
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.kept {
            writeln!(f, "{d}")?;
        }
        let n_more = self.n_total - self.kept.len() as u64;
        if n_more > 0 {
            writeln!(f, "... and {n_more} more")?;
        }
        Ok(())
    }
}
