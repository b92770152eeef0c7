//! The snapshot files a server serves from and the operations that change them: install a new
//! file as production or staging, promote staging to production, roll production back to the
//! previous file. See `STATE.md` for the states and invariants.
//!
//! Three files, in the folder of `snapshot_path` unless configured otherwise:
//!
//! | slot | file |
//! |---|---|
//! | production | `snapshot_path` |
//! | staging | `staging_snapshot_path`, else `<snapshot_path>.staging` (optional) |
//! | previous | `<snapshot_path>.previous`: what production was before the last change |
//!
//! Every change is a sequence of renames that leaves a verified file at the production path at
//! every instant, so a crash at any point restarts on a snapshot that opens.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::ServeConfig;

/// Where an installed snapshot goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Production,
    Staging,
}

/// The slot files of one server.
#[derive(Clone, Debug)]
pub struct SlotPaths {
    pub production: PathBuf,
    pub staging: PathBuf,
    /// Whether the staging file was configured by name: then it must exist at start.
    pub staging_required: bool,
    pub previous: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

impl SlotPaths {
    pub fn new(config: &ServeConfig) -> SlotPaths {
        let production = config.snapshot_path.clone();
        SlotPaths {
            staging: config
                .staging_snapshot_path
                .clone()
                .unwrap_or_else(|| with_suffix(&production, ".staging")),
            staging_required: config.staging_snapshot_path.is_some(),
            previous: with_suffix(&production, ".previous"),
            production,
        }
    }

    /// The file a new snapshot for `target` is put in while it is verified.
    pub fn incoming(&self, target: Target) -> PathBuf {
        with_suffix(self.path(target), ".incoming")
    }

    pub fn path(&self, target: Target) -> &Path {
        match target {
            Target::Production => &self.production,
            Target::Staging => &self.staging,
        }
    }
}

/// Puts `source` at `dest` without touching `source`: a hard link when both are on one file
/// system (snapshot files are never modified in place, so sharing the inode is safe and the
/// distributor keeps seeding its copy), else a copy. A stale `dest` is replaced.
pub fn link_or_copy(source: &Path, dest: &Path) -> io::Result<()> {
    remove_if_exists(dest)?;
    match std::fs::hard_link(source, dest) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(err),
        Err(_) => {
            std::fs::copy(source, dest)?;
            std::fs::File::open(dest)?.sync_all()
        }
    }
}

pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Makes `path` the new previous file and keeps `path` where it is: a link to a temporary name
/// renamed over the previous file, so the previous file is never missing either.
pub fn keep_as_previous(slots: &SlotPaths, path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let temporary = with_suffix(&slots.previous, ".tmp");
    link_or_copy(path, &temporary)?;
    std::fs::rename(&temporary, &slots.previous)
}

/// Makes the renames in `path`'s folder durable.
pub fn sync_folder(path: &Path) -> io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_files_sit_beside_the_production_file() {
        let config = ServeConfig { snapshot_path: "/srv/ads/current.snap".into(), ..ServeConfig::default() };
        let slots = SlotPaths::new(&config);
        assert_eq!(slots.staging, Path::new("/srv/ads/current.snap.staging"));
        assert_eq!(slots.previous, Path::new("/srv/ads/current.snap.previous"));
        assert_eq!(slots.incoming(Target::Production), Path::new("/srv/ads/current.snap.incoming"));
        assert!(!slots.staging_required);
        let config = ServeConfig { staging_snapshot_path: Some("/srv/s.snap".into()), ..config };
        let slots = SlotPaths::new(&config);
        assert_eq!(slots.staging, Path::new("/srv/s.snap"));
        assert!(slots.staging_required);
    }

    #[test]
    fn link_or_copy_leaves_the_source_and_replaces_a_stale_destination() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a");
        let dest = dir.path().join("b");
        std::fs::write(&source, b"new").unwrap();
        std::fs::write(&dest, b"stale").unwrap();
        link_or_copy(&source, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::read(&source).unwrap(), b"new");
        let missing = link_or_copy(&dir.path().join("absent"), &dest).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
