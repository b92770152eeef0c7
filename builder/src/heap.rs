//! The builder's side of the string heap: strings are appended to an anonymous spill file as they
//! are read, so memory holds only their offsets; short, repeated strings are interned.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use adsnap_snapshot::schema::StrRef;
use adsnap_snapshot::StringHeap;

use crate::error::BuildError;

const SPILL_BUFFER_BYTES: usize = 1 << 20;
/// Strings up to this length may be interned; longer ones are unlikely to repeat.
const INTERNED_BYTES_MAX: usize = 256;
/// Interned strings kept at most, so that interning cannot grow memory with the catalog.
const INTERNED_MAX: usize = 100_000;

pub struct HeapWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    len: u64,
    interned: HashMap<Box<str>, StrRef>,
}

impl HeapWriter {
    /// Creates the spill file in `dir` (the output's folder, so it is on the same disk).
    pub fn new(dir: &Path) -> Result<HeapWriter, BuildError> {
        let file =
            tempfile::tempfile_in(dir).map_err(|source| BuildError::Spill { dir: dir.to_owned(), source })?;
        Ok(HeapWriter {
            dir: dir.to_owned(),
            out: BufWriter::with_capacity(SPILL_BUFFER_BYTES, file),
            len: 0,
            interned: HashMap::new(),
        })
    }

    /// Appends a string and returns its reference.
    pub fn push(&mut self, s: &str) -> Result<StrRef, BuildError> {
        let len = u32::try_from(s.len())
            .map_err(|_| BuildError::Limit { what: "a string longer than 4 GiB".into() })?;
        let at = StrRef { offset: self.len, len };
        self.out
            .write_all(s.as_bytes())
            .map_err(|source| BuildError::Spill { dir: self.dir.clone(), source })?;
        self.len += s.len() as u64;
        Ok(at)
    }

    /// Appends a string once and returns the same reference for every later equal string.
    pub fn intern(&mut self, s: &str) -> Result<StrRef, BuildError> {
        if let Some(at) = self.interned.get(s) {
            return Ok(*at);
        }
        let at = self.push(s)?;
        if s.len() <= INTERNED_BYTES_MAX && self.interned.len() < INTERNED_MAX {
            self.interned.insert(s.into(), at);
        }
        Ok(at)
    }

    pub fn finish(self) -> Result<StringHeap, BuildError> {
        let dir = self.dir;
        let file = self
            .out
            .into_inner()
            .map_err(|err| BuildError::Spill { dir: dir.clone(), source: err.into_error() })?;
        Ok(StringHeap::Spilled { file, len: self.len })
    }
}
