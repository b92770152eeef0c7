//! What can stop a build.

use std::io;
use std::path::PathBuf;

use crate::diag::Diagnostics;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write the builder's string spill file in {}: {source}", dir.display())]
    Spill { dir: PathBuf, source: io::Error },

    #[error("the catalog has {} problem(s); no snapshot was written:\n{diagnostics}", diagnostics.n_total)]
    Invalid { diagnostics: Diagnostics },

    #[error("the catalog is over a format limit: {what}")]
    Limit { what: String },

    #[error(transparent)]
    Snapshot(#[from] adsnap_snapshot::Error),
}
