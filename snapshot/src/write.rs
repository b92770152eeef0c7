//! Writing a snapshot atomically: temporary file, header after the streamed payload, fsync, full
//! verification of what was written, rename, fsync of the folder.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::ser::writer::IoWriter;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::header::{Header, FORMAT_VERSION, HEADER_LEN};
use crate::schema::Payload;
use crate::Snapshot;

const WRITE_BUFFER_BYTES: usize = 4 << 20;

/// What the header records about a build besides the payload itself.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub snapshot_version: u64,
    pub created_unix_ms: i64,
    pub builder_version: String,
}

/// An `io::Write` that hashes everything passing through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Xxh3,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Serializes `payload` into `path` atomically and returns the header written.
///
/// The file appears at `path` only once it is complete, on disk, and has passed the same
/// verification the server runs when it maps a snapshot; on any error nothing is left behind.
pub fn write_atomic(path: &Path, payload: &Payload, options: &WriteOptions) -> Result<Header> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let write_err = |source: io::Error| Error::Write { path: path.to_owned(), source };
    let temp =
        tempfile::Builder::new().prefix(".adsnap-").suffix(".tmp").tempfile_in(&dir).map_err(write_err)?;
    let header = write_payload(temp.as_file(), payload, options, path)?;
    temp.as_file().sync_all().map_err(write_err)?;

    // Check the written bytes exactly as a server would before anyone can see the file.
    Snapshot::open(temp.path()).map_err(|err| Error::Invariant {
        path: path.to_owned(),
        reason: format!("the file just written does not verify: {err}"),
    })?;

    temp.persist(path).map_err(|err| write_err(err.error))?;
    sync_dir(&dir).map_err(write_err)?;
    Ok(header)
}

fn write_payload(file: &File, payload: &Payload, options: &WriteOptions, path: &Path) -> Result<Header> {
    let write_err = |source: io::Error| Error::Write { path: path.to_owned(), source };
    let mut file = file;
    file.seek(SeekFrom::Start(0)).map_err(write_err)?;
    file.write_all(&[0u8; HEADER_LEN]).map_err(write_err)?;
    // Hash below the buffer, so the hasher sees large chunks rather than rkyv's many small writes.
    let buffered = BufWriter::with_capacity(
        WRITE_BUFFER_BYTES,
        HashingWriter { inner: file, hasher: Xxh3::new(), len: 0 },
    );
    let writer = rkyv::api::high::to_bytes_in::<_, rancor::Error>(payload, IoWriter::new(buffered))
        .map_err(|err| Error::Serialize { path: path.to_owned(), reason: err.to_string() })?;
    let hashing = writer.into_inner().into_inner().map_err(|err| write_err(err.into_error()))?;
    let payload_len = hashing.len;
    let payload_xxh3_128 = hashing.hasher.digest128();

    let header = Header {
        format_version: FORMAT_VERSION,
        snapshot_id: Header::derive_id(payload_xxh3_128, options.snapshot_version, options.created_unix_ms),
        snapshot_version: options.snapshot_version,
        created_unix_ms: options.created_unix_ms,
        payload_len,
        payload_xxh3_128,
        builder_version: options.builder_version.clone(),
    };
    file.seek(SeekFrom::Start(0)).map_err(write_err)?;
    file.write_all(&header.encode()).map_err(write_err)?;
    Ok(header)
}

/// Makes a rename inside `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).open(dir)?.sync_all()
}
