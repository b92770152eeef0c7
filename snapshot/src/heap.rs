//! The string heap: every string of a snapshot in one UTF-8 byte array, archived as an
//! `ArchivedVec<u8>` but filled by streaming, so the builder never holds all strings in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::Writer;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Place, Serialize};

/// Bytes copied from the spill file per write while serializing.
const STREAM_CHUNK_BYTES: usize = 1 << 20;

/// Where the heap's bytes are while a snapshot is being written.
#[derive(Debug)]
pub enum StringHeap {
    /// Small heaps (tests, tools) kept in memory.
    Memory(Vec<u8>),
    /// The builder's spill file: `len` bytes from its start.
    Spilled { file: File, len: u64 },
}

impl StringHeap {
    pub fn len(&self) -> u64 {
        match self {
            StringHeap::Memory(bytes) => bytes.len() as u64,
            StringHeap::Spilled { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Archive for StringHeap {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::<u8>::resolve_from_len(self.len() as usize, resolver, out);
    }
}

impl<S> Serialize<S> for StringHeap
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        // Bytes need no alignment, so the vector's data starts exactly here.
        let pos = serializer.pos();
        match self {
            StringHeap::Memory(bytes) => serializer.write(bytes)?,
            StringHeap::Spilled { file, len } => stream_file(file, *len, serializer)?,
        }
        Ok(VecResolver::from_pos(pos))
    }
}

fn stream_file<S>(mut file: &File, len: u64, serializer: &mut S) -> Result<(), S::Error>
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    file.seek(SeekFrom::Start(0)).map_err(S::Error::new)?;
    let mut buf = vec![0u8; STREAM_CHUNK_BYTES];
    let mut remaining = len;
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want]).map_err(S::Error::new)?;
        serializer.write(&buf[..want])?;
        remaining -= want as u64;
    }
    Ok(())
}
