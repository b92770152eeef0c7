//! The striped torrent layout and how a follower walks it.
//!
//! librqbit asks for pieces in file order (then the first and last piece of each file before the
//! rest), so followers that start together would all ask the origin for the same pieces and have
//! nothing to give each other. A published torrent therefore lists the snapshot as `n` stripes:
//! files `stripe-000`, `stripe-001`, ... of whole pieces, whose concatenation is the snapshot byte
//! for byte (same pieces, same SHA-1s; any BitTorrent client downloads it as a folder of stripes).
//!
//! A follower claims a run of stripes: it starts on the stripe the origin's start hint points at and
//! goes on to the next stripes until it reaches one where another follower started. While it walks,
//! a librqbit stream on the stripe being walked makes its pieces the first the follower asks any peer
//! for; every other stripe stays selected, so pieces other followers have flow in from them at the
//! same time. The origin thus sends each stripe about once, to the follower that claimed it.
//!
//! On disk nothing is striped: [`OneFileStorage`] maps the stripes onto the one snapshot file at
//! their offsets, so the follower keeps one copy, which it seeds and its server maps.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use librqbit::storage::{BoxStorageFactory, StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{ByteBufOwned, CreateTorrentResult, ManagedTorrent, ManagedTorrentShared, TorrentMetadata};
use serde::Serialize;

use crate::error::{DistributeError, Result};

/// Default for the most stripes a torrent is split into: at least the number of followers that
/// start together, so that each can claim a run of its own.
pub const STRIPES_DEFAULT: u32 = 64;
/// The most stripes a walk reads at once that are less than half read. Each open stripe's stream
/// puts its pieces first; with one stripe of a few pieces open, the request loop to the origin
/// often found them all in flight and fell back on librqbit's file order, asking the origin for
/// pieces of other followers' runs (measured with `bench/distribute.sh`). Several open stripes keep
/// the follower's own run ahead of that fallback.
pub const STRIPES_AHEAD_MAX: usize = 4;
/// The most stripe readers (open librqbit streams) a walk keeps. Each open stream holds one of the
/// session's blocking permits until it ends, and librqbit writes every chunk it receives and reads
/// every chunk it uploads under one of those permits too: with all permits held by streams waiting
/// for pieces, no piece could be written. Kept well under [`crate::session::BLOCKING_PERMITS`].
pub const STRIPE_READERS_MAX: usize = 6;
/// Stripe file names have three digits (they must sort in stripe order: librqbit orders files by name).
pub const STRIPES_MAX: u32 = 999;

/// The name of stripe `idx` inside the torrent's folder.
pub fn stripe_name(idx: usize) -> String {
    format!("stripe-{idx:03}")
}

/// Whole pieces per stripe so that `n_pieces` pieces make at most `n_stripes_max` stripes.
fn pieces_per_stripe(n_pieces: u64, n_stripes_max: u32) -> u64 {
    n_pieces.div_ceil(u64::from(n_stripes_max.clamp(1, STRIPES_MAX))).max(1)
}

/// Stripe lengths for a file of `size_bytes` cut into pieces of `piece_bytes`.
pub fn stripe_lengths(size_bytes: u64, piece_bytes: u32, n_stripes_max: u32) -> Vec<u64> {
    let n_pieces = size_bytes.div_ceil(u64::from(piece_bytes)).max(1);
    let stripe_bytes = pieces_per_stripe(n_pieces, n_stripes_max) * u64::from(piece_bytes);
    let mut lengths = Vec::new();
    let mut left = size_bytes;
    while left > 0 {
        lengths.push(left.min(stripe_bytes));
        left -= left.min(stripe_bytes);
    }
    lengths
}

/// Rewrites a single-file torrent made by librqbit into the striped layout: folder `name`, the same
/// pieces. Returns the number of stripes; the caller re-reads the info hash from the new bytes.
pub(crate) fn stripe_torrent(
    made: &mut CreateTorrentResult,
    name: &str,
    n_stripes_max: u32,
) -> Result<usize> {
    let info = &mut made.meta.info.data;
    let size_bytes = info.length.ok_or_else(|| {
        DistributeError::Torrent(anyhow::anyhow!("expected a single-file torrent to stripe"))
    })?;
    let lengths = stripe_lengths(size_bytes, info.piece_length, n_stripes_max);
    info.files = Some(
        lengths
            .iter()
            .enumerate()
            .map(|(idx, &length)| librqbit::TorrentMetaV1File {
                length,
                path: vec![ByteBufOwned::from(stripe_name(idx).as_bytes())],
                attr: None,
                sha1: None,
                symlink_path: None,
            })
            .collect(),
    );
    info.length = None;
    info.name = Some(ByteBufOwned::from(name.as_bytes()));
    Ok(lengths.len())
}

/// Stores every file of a torrent in one file, each at its offset in the torrent: a striped
/// torrent's data is the snapshot file itself. Works for single-file torrents too.
#[derive(Clone)]
pub struct OneFileStorageFactory {
    path: PathBuf,
}

impl OneFileStorageFactory {
    pub fn boxed_for(path: PathBuf) -> BoxStorageFactory {
        OneFileStorageFactory { path }.boxed()
    }
}

impl StorageFactory for OneFileStorageFactory {
    type Storage = OneFileStorage;

    fn create(
        &self,
        _shared: &ManagedTorrentShared,
        metadata: &TorrentMetadata,
    ) -> anyhow::Result<OneFileStorage> {
        let offsets: Vec<u64> = metadata.file_infos.iter().map(|f| f.offset_in_torrent).collect();
        let total_bytes = metadata.file_infos.iter().map(|f| f.offset_in_torrent + f.len).max().unwrap_or(0);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", self.path.display()))?;
        Ok(OneFileStorage { path: self.path.clone(), file: Arc::new(file), offsets, total_bytes })
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

pub struct OneFileStorage {
    path: PathBuf,
    file: Arc<std::fs::File>,
    offsets: Vec<u64>,
    total_bytes: u64,
}

impl OneFileStorage {
    fn at(&self, file_id: usize, offset: u64) -> anyhow::Result<u64> {
        let base =
            self.offsets.get(file_id).ok_or_else(|| anyhow::anyhow!("no file {file_id} in the torrent"))?;
        Ok(base + offset)
    }
}

impl TorrentStorage for OneFileStorage {
    fn init(&mut self, _shared: &ManagedTorrentShared, _metadata: &TorrentMetadata) -> anyhow::Result<()> {
        // A shorter file is a download under way; a longer one is not this torrent's and is cut.
        if self.file.metadata()?.len() != self.total_bytes {
            self.file.set_len(self.total_bytes)?;
        }
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        Ok(self.file.read_exact_at(buf, self.at(file_id, offset)?)?)
    }

    fn pwrite_all(&self, file_id: usize, offset: u64, buf: &[u8]) -> anyhow::Result<()> {
        Ok(self.file.write_all_at(buf, self.at(file_id, offset)?)?)
    }

    fn remove_file(&self, _file_id: usize, _filename: &std::path::Path) -> anyhow::Result<()> {
        // Called once per stripe; the first call removes the one file.
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn remove_directory_if_empty(&self, _path: &std::path::Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, _file_id: usize, _length: u64) -> anyhow::Result<()> {
        // The one file has the torrent's whole length from `init` on.
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        // librqbit swaps the storage after its initial check; torrents here are never paused, so
        // both may share the file.
        Ok(Box::new(OneFileStorage {
            path: self.path.clone(),
            file: self.file.clone(),
            offsets: self.offsets.clone(),
            total_bytes: self.total_bytes,
        }))
    }
}

/// Where a follower's start hint puts it: the fraction of the torrent, and how many followers the
/// origin had handed out starts to by then (itself included), when the origin said.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StartHint {
    pub fraction: f64,
    pub n_starts: Option<u64>,
}

/// The stripe a start fraction falls on.
pub fn stripe_at(fraction: f64, n_stripes: usize) -> usize {
    ((fraction.clamp(0.0, 1.0) * n_stripes as f64) as usize).min(n_stripes.saturating_sub(1))
}

/// The stripes where the first `n_starts` followers started, as the origin hands starts out.
pub fn start_stripes(n_starts: u64, n_stripes: usize) -> Vec<usize> {
    // The first 2^k points of the sequence are the multiples of 1/2^k: past that many, every stripe
    // already has a start and more points add none.
    let n_counted = n_starts.min((n_stripes as u64).next_power_of_two());
    (0..n_counted).map(|k| stripe_at(crate::origin::van_der_corput(k), n_stripes)).collect()
}

/// What a follower's walk over the stripes did, for `/status`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Walk {
    pub snapshot_id: String,
    pub n_stripes: usize,
    /// The stripe the follower started on.
    pub start_stripe: usize,
    /// The stripes it claimed, in the order it walked them (the start stripe first).
    pub claimed_stripes: Vec<usize>,
}

/// Walks the stripes from the hinted one, reading each stripe it takes through a librqbit stream
/// (which puts that stripe's pieces first). Claim: the start stripe and the next ones while no
/// other follower started there (`count_starts` asks the origin how many starts it has handed out).
/// Help: then, one after the other, a missing stripe far ahead of the follower whose run it is in
/// ([`stripes_ahead`], [`pick_far_ahead`]). Without the help, librqbit's file order would send a follower whose claim
/// ended early to the origin for the first missing pieces in file order, which other followers
/// mostly have already, while the run of a follower with a small share of the origin's uplink
/// would wait. The next stripe is decided and its stream opened while fewer than
/// [`STRIPES_AHEAD_MAX`] stripes taken are less than half read, so requests do not fall back on
/// file order between stripes. Dropping the walk stops it.
pub(crate) async fn walk<F, Fut>(
    handle: Arc<ManagedTorrent>,
    hint: StartHint,
    count_starts: F,
    record: Arc<Mutex<Walk>>,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let Ok(lengths) = handle.with_metadata(|m| m.file_infos.iter().map(|f| f.len).collect::<Vec<u64>>())
    else {
        return;
    };
    let n_stripes = lengths.len();
    let start = stripe_at(hint.fraction, n_stripes);
    {
        let mut walk = record.lock().expect("walk lock");
        walk.n_stripes = n_stripes;
        walk.start_stripe = start;
    }
    let mut walker =
        Walker { handle, lengths, record, readers: tokio::task::JoinSet::new(), ahead: Default::default() };
    let mut last = start;
    let n_starts = loop {
        if !walker.take(last).await {
            return;
        }
        let next = (last + 1) % n_stripes;
        // Without the origin's count, nobody's start is known: the start stripe alone is claimed.
        let Some(n_starts) = count_starts().await.or(hint.n_starts) else { return };
        if next == start || start_stripes(n_starts, n_stripes).contains(&next) {
            break n_starts;
        }
        last = next;
    };
    let n_claimed = walker.record.lock().expect("walk lock").claimed_stripes.len();
    tracing::info!(start_stripe = start, n_claimed, n_stripes, "stripe claim ended");
    let mut n_starts = n_starts;
    loop {
        n_starts = count_starts().await.unwrap_or(n_starts);
        let starts = start_stripes(n_starts, n_stripes);
        let missing: Vec<bool> = {
            let progress = walker.handle.stats().file_progress;
            let taken = &walker.record.lock().expect("walk lock").claimed_stripes;
            (0..n_stripes)
                .map(|x| progress.get(x).copied().unwrap_or(0) == 0 && !taken.contains(&x))
                .collect()
        };
        let Some(stripe) = pick_far_ahead(&stripes_ahead(&missing, &starts)) else { break };
        if !walker.take(stripe).await {
            return;
        }
    }
    while walker.readers.join_next().await.is_some() {}
}

/// Every missing stripe that is not the next one its run's follower needs, with how far ahead of
/// that follower it is (walking forwards from the first stripe of its run still missing here).
/// A run whose follower is slow (a small share of the origin's uplink) has the most stripes far
/// ahead, so helpers go there first.
fn stripes_ahead(missing: &[bool], starts: &[usize]) -> Vec<(usize, usize)> {
    let n_stripes = missing.len();
    let mut sorted: Vec<usize> = starts.iter().copied().filter(|&s| s < n_stripes).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ahead = Vec::new();
    for (idx, &run_first) in sorted.iter().enumerate() {
        let next = sorted.get(idx + 1).copied().unwrap_or(sorted[0] + n_stripes);
        let run: Vec<usize> = (run_first..next).map(|x| x % n_stripes).collect();
        let Some(frontier) = run.iter().position(|&x| missing[x]) else { continue };
        let far = run.iter().enumerate().skip(frontier + 1).filter(|&(_, &x)| missing[x]);
        ahead.extend(far.map(|(offset, &x)| (x, offset - frontier)));
    }
    ahead
}

/// A random one of the stripes at least half as far ahead as the farthest. Helpers see the swarm
/// with a few seconds' delay and would all pick the same farthest stripe (and ask the origin for it
/// together); picking at random among the far ones spreads them.
fn pick_far_ahead(ahead: &[(usize, usize)]) -> Option<usize> {
    let farthest = ahead.iter().map(|&(_, a)| a).max()?;
    let far: Vec<usize> = ahead.iter().filter(|&&(_, a)| a * 2 >= farthest).map(|&(x, _)| x).collect();
    Some(far[rand::random_range(0..far.len())])
}

/// The stripe readers of one walk and its record.
struct Walker {
    handle: Arc<ManagedTorrent>,
    lengths: Vec<u64>,
    record: Arc<Mutex<Walk>>,
    readers: tokio::task::JoinSet<()>,
    /// Half-read signals of the stripes taken that are not yet half read, oldest first.
    ahead: std::collections::VecDeque<tokio::sync::oneshot::Receiver<()>>,
}

impl Walker {
    /// Takes a stripe: records it, starts reading it; returns once fewer than
    /// [`STRIPES_AHEAD_MAX`] of the stripes taken are less than half read (false if a reader
    /// stopped first).
    async fn take(&mut self, stripe: usize) -> bool {
        self.record.lock().expect("walk lock").claimed_stripes.push(stripe);
        let (half_read, half_read_rx) = tokio::sync::oneshot::channel();
        self.readers.spawn(read_stripe(self.handle.clone(), stripe, self.lengths[stripe], half_read));
        self.ahead.push_back(half_read_rx);
        while self.ahead.len() >= STRIPES_AHEAD_MAX {
            let Some(oldest) = self.ahead.pop_front() else { break };
            if oldest.await.is_err() {
                return false;
            }
        }
        while self.readers.len() >= STRIPE_READERS_MAX {
            if self.readers.join_next().await.is_none() {
                break;
            }
        }
        true
    }
}

/// Reads stripe `idx` through a stream, dropping the bytes; says when half of it has been read.
async fn read_stripe(
    handle: Arc<ManagedTorrent>,
    idx: usize,
    length: u64,
    half_read: tokio::sync::oneshot::Sender<()>,
) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut stream = handle.stream(idx).await?;
        tokio::io::copy(&mut (&mut stream).take(length / 2), &mut tokio::io::sink()).await?;
        let _ = half_read.send(());
        tokio::io::copy(&mut stream, &mut tokio::io::sink()).await?;
        anyhow::Ok(())
    };
    if let Err(err) = read.await {
        tracing::debug!(stripe = idx, error = %err, "stripe reader stopped; librqbit's own order goes on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_whole_pieces_and_cover_the_file() {
        let check = |size: u64, piece: u32, max: u32, expected: &[u64]| {
            let lengths = stripe_lengths(size, piece, max);
            assert_eq!(lengths, expected, "size {size} piece {piece} max {max}");
            assert_eq!(lengths.iter().sum::<u64>(), size);
        };
        check(10 * 16, 16, 4, &[48, 48, 48, 16]); // 10 pieces, at most 4 stripes: 3 pieces each
        check(10 * 16 - 5, 16, 64, &[16, 16, 16, 16, 16, 16, 16, 16, 16, 11]); // one piece each
        check(100, 16, 1, &[100]);
        check(5, 16, 8, &[5]);
    }

    #[tokio::test]
    async fn a_striped_torrent_has_the_single_file_pieces_as_stripes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.snap");
        let data: Vec<u8> = (0..10 * 16 * 1024 + 100).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
        let options = || librqbit::CreateTorrentOptions {
            name: Some("id"),
            trackers: vec![],
            piece_length: Some(16 * 1024),
        };
        let single = librqbit::create_torrent(&path, options(), &spawner).await.unwrap();
        let mut striped = librqbit::create_torrent(&path, options(), &spawner).await.unwrap();
        assert_eq!(stripe_torrent(&mut striped, "id", 4).unwrap(), 4);
        let bytes = striped.as_bytes().unwrap();
        let parsed = librqbit::torrent_from_bytes(&bytes).unwrap();
        assert_ne!(parsed.info_hash, single.info_hash(), "the layout is part of the info");
        let info = &parsed.info.data;
        assert_eq!(info.pieces.as_ref(), single.meta.info.data.pieces.as_ref(), "same pieces, same hashes");
        let files = info.files.as_ref().unwrap();
        let names: Vec<String> =
            files.iter().map(|f| String::from_utf8(f.path[0].as_ref().to_vec()).unwrap()).collect();
        assert_eq!(names, ["stripe-000", "stripe-001", "stripe-002", "stripe-003"]);
        let lengths: Vec<u64> = files.iter().map(|f| f.length).collect();
        assert_eq!(lengths, [3 * 16384, 3 * 16384, 3 * 16384, 16384 + 100]);
    }

    #[test]
    fn starts_fall_on_evenly_spread_stripes() {
        assert_eq!(start_stripes(4, 64), [0, 32, 16, 48]);
        assert_eq!(start_stripes(3, 9), [0, 4, 2]);
        assert_eq!(stripe_at(1.0, 9), 8);
        assert_eq!(stripe_name(7), "stripe-007");
        // Runs 0-3 and 4-7: the second's follower is at 5, the first's at 1. Stripe 7 is two ahead
        // of its follower, stripe 3 two as well, but 3 comes first; then 7 once 3 is taken.
        let missing = [false, true, true, true, false, true, true, true];
        assert_eq!(stripes_ahead(&missing, &[0, 4]), [(2, 1), (3, 2), (6, 1), (7, 2)]);
        for _ in 0..32 {
            assert!([2, 3, 6, 7].contains(&pick_far_ahead(&stripes_ahead(&missing, &[0, 4])).unwrap()));
            assert!([3, 7].contains(&pick_far_ahead(&[(2, 1), (3, 3), (6, 1), (7, 2)]).unwrap()));
        }
        // Only the next stripe of each follower is missing: nothing to help with.
        assert_eq!(pick_far_ahead(&stripes_ahead(&[false, true, false, true], &[0, 2])), None);
        // A single run wraps around.
        assert_eq!(stripes_ahead(&[true, false, true, true], &[2]), [(3, 1), (0, 2)]);
    }
}
