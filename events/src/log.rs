//! The local durable log: [`EventLog`] appends framed events into a memory-mapped, preallocated
//! segment from the request thread, a flusher thread makes them durable in groups, and the
//! shipper (when configured) replicates and then deletes them. See `events/STATE.md`.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};
use serde::Serialize;

use crate::codec;
use crate::config::EventLogConfig;
use crate::error::{AppendError, EventsError};
use crate::event::Event;
use crate::record::{self, FRAME_HEADER_BYTES};
use crate::segment::{self, SegmentHeader, HEADER_BYTES};
use crate::shipper::{ShipperHandle, ShipperHealth};
use crate::stats::Stats;

const LOG_ID_FILE: &str = "log-id";
const LOCK_FILE: &str = "lock";
/// How long `open` waits for another writer (a process just killed, a log just dropped) to
/// release the folder.
pub const LOCK_WAIT_MS: u64 = 2000;

/// The local event log. Cheap to clone (an `Arc` inside), `Send + Sync`. With a shipper, the
/// shipper task holds a clone: call [`EventLog::shutdown`] to stop it and release the folder.
#[derive(Clone, Debug)]
pub struct EventLog {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: EventLogConfig,
    pub dir: PathBuf,
    pub log_id: u64,
    writer: Mutex<Writer>,
    sync_state: Mutex<SyncState>,
    pub stats: Stats,
    stop: AtomicBool,
    flusher: Mutex<Option<JoinHandle<()>>>,
    shipper: Mutex<Option<ShipperHandle>>,
    /// Held (flock) for the log's lifetime: two writers in one folder would interleave frames.
    _lock: File,
}

/// Everything the append path touches, behind one uncontended-in-practice mutex.
#[derive(Debug)]
struct Writer {
    active: Option<Active>,
    next_seq: u64,
    refusing: Option<(AppendError, Instant)>,
    /// Segments rolled away from, waiting for the flusher to make them durable and trim them.
    to_seal: Vec<Rolled>,
}

/// The segment appends go into.
#[derive(Debug)]
struct Active {
    first_seq: u64,
    map: Arc<MmapRaw>,
    file: Arc<File>,
    path: PathBuf,
    offset: usize,
}

#[derive(Debug)]
struct Rolled {
    active: Active,
}

/// What the flusher has made durable so far.
#[derive(Debug, Default)]
struct SyncState {
    segment_first_seq: u64,
    offset: usize,
}

/// What recovery found when the log was opened.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unsealed segments scanned (the one appended to when the process stopped, and any
    /// rolled away from but not yet trimmed).
    pub n_segments_scanned: u64,
    pub n_records_recovered: u64,
    /// Non-zero bytes after the last whole record, cut away (a torn write).
    pub torn_bytes_cut: u64,
    pub n_segments_torn: u64,
    /// Damaged records between whole ones, left in place and skipped by readers.
    pub n_corrupt_records: u64,
    /// Files with a `.seg` name but no valid header, renamed to `.corrupt`.
    pub n_segments_quarantined: u64,
}

/// The log's state for `/health`.
#[derive(Clone, Debug, Serialize)]
pub struct EventLogHealth {
    /// `"ok"`, or `"refusing"` when appends fail (the server sheds load).
    pub status: &'static str,
    pub writable: bool,
    /// Why appends are refused, or the last sealing / sync failure.
    pub error: Option<String>,
    pub dir: PathBuf,
    pub log_id: String,
    /// Sequence number the next event will get.
    pub next_seq: u64,
    /// Every event below this is on disk (fsynced).
    pub synced_seq: u64,
    pub appended_since_start: u64,
    pub refused_total: u64,
    pub n_segments: u64,
    pub bytes_on_disk: u64,
    pub log_bytes_max: u64,
    pub recovery: RecoveryReport,
    pub shipper: Option<ShipperHealth>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop events from being written: the data under these locks is
    // consistent between statements.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl EventLog {
    /// Opens the log in `config.dir` (creating it), recovers the tail left by a crash, starts the
    /// flusher thread and, when `config.nats` is set, the shipper task (which needs a tokio runtime).
    pub fn open(config: &EventLogConfig) -> Result<EventLog, EventsError> {
        config.validate()?;
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|source| EventsError::Folder { dir: dir.clone(), source })?;
        let folder_lock = lock_folder(&dir)?;
        let log_id = read_or_create_log_id(&dir)?;
        let (next_seq, recovery) = recover(&dir)?;
        let stats = Stats::new(next_seq, recovery);
        let inner = Arc::new(Inner {
            config: config.clone(),
            dir,
            log_id,
            writer: Mutex::new(Writer { active: None, next_seq, refusing: None, to_seal: Vec::new() }),
            sync_state: Mutex::new(SyncState::default()),
            stats,
            stop: AtomicBool::new(false),
            flusher: Mutex::new(None),
            shipper: Mutex::new(None),
            _lock: folder_lock,
        });
        inner.refresh_disk_usage();
        {
            let mut writer = lock(&inner.writer);
            writer.roll(&inner).map_err(|err| EventsError::Folder {
                dir: inner.dir.clone(),
                source: io::Error::other(err.to_string()),
            })?;
        }
        segment::sync_dir(&inner.dir)
            .map_err(|source| EventsError::Folder { dir: inner.dir.clone(), source })?;
        let log = EventLog { inner };
        log.start_flusher()?;
        if let Some(nats) = &config.nats {
            let handle = crate::shipper::start(log.clone(), nats.clone())?;
            *lock(&log.inner.shipper) = Some(handle);
        }
        tracing::info!(dir = %log.inner.dir.display(), next_seq, "event log open");
        Ok(log)
    }

    /// Appends one event. Synchronous and cheap (an encode and a copy into the mapped segment
    /// under a mutex): once it returns `Ok` the event survives the process being killed, and
    /// reaches the disk within `fsync_interval_ms`. Never touches the network.
    pub fn append(&self, event: &Event<'_>) -> Result<(), AppendError> {
        let payload_len = codec::encoded_len(event)
            .map_err(|bytes| AppendError::TooLarge { bytes, bytes_max: codec::EVENT_BYTES_MAX })?;
        if event.user_key.is_some() && !event.privacy.allows_user_key() {
            self.inner.stats.user_keys_withheld.fetch_add(1, Ordering::Relaxed);
        }
        let frame_len = FRAME_HEADER_BYTES + payload_len;
        let mut writer = lock(&self.inner.writer);
        let result = writer.append(&self.inner, frame_len, |frame, seq| {
            codec::encode_into(event, &mut frame[FRAME_HEADER_BYTES..]);
            record::seal_frame(frame, seq);
        });
        if let Ok(next_seq) = result {
            self.inner.stats.committed_seq.store(next_seq, Ordering::Release);
        }
        drop(writer);
        result.map(|_| ())
    }

    /// Makes everything appended so far durable (fsync), as the flusher does every interval.
    pub fn sync(&self) -> Result<(), EventsError> {
        self.inner.sync_once()
    }

    pub fn health(&self) -> EventLogHealth {
        let next_seq = self.next_seq();
        let shipper = lock(&self.inner.shipper).as_ref().map(|handle| handle.health(next_seq));
        self.inner.stats.health(&self.inner, shipper)
    }

    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(crate::stats::LogCollector { log: self.clone() }));
    }

    /// The folder the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Identifies this log among all the servers shipping to one stream.
    pub fn log_id(&self) -> u64 {
        self.inner.log_id
    }

    /// Sequence number the next appended event will get; every event below it is readable.
    pub fn next_seq(&self) -> u64 {
        self.inner.stats.committed_seq.load(Ordering::Acquire)
    }

    /// Stops the shipper (waiting up to `deadline` for acknowledgements in flight), syncs, and
    /// stops the flusher. Appends after this still work but are synced only by [`EventLog::sync`].
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), EventsError> {
        let shipper = lock(&self.inner.shipper).take();
        if let Some(handle) = shipper {
            handle.stop(deadline).await;
        }
        self.inner.stop.store(true, Ordering::Release);
        let flusher = lock(&self.inner.flusher).take();
        if let Some(thread) = flusher {
            thread.thread().unpark();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.sync()
    }

    fn start_flusher(&self) -> Result<(), EventsError> {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.fsync_interval();
        let nice = self.inner.config.background_nice;
        let thread = std::thread::Builder::new()
            .name("adsnap-events-fsync".into())
            .spawn(move || {
                crate::threads::lower_this_thread_priority(nice, "the event log's fsync thread");
                flusher_loop(weak, interval)
            })
            .map_err(|source| EventsError::Folder { dir: self.inner.dir.clone(), source })?;
        *lock(&self.inner.flusher) = Some(thread);
        Ok(())
    }
}

fn flusher_loop(weak: std::sync::Weak<Inner>, interval: Duration) {
    loop {
        std::thread::park_timeout(interval);
        let Some(inner) = weak.upgrade() else { return };
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        if let Err(err) = inner.sync_once() {
            inner.stats.note_error(format!("fsync failed: {err}"));
            inner.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, "event log fsync failed");
        }
    }
}

impl Writer {
    /// Reserves `frame_len` bytes (rolling to a new segment when they do not fit), lets `fill`
    /// write the frame, and returns the next sequence number.
    #[inline]
    fn append(
        &mut self,
        inner: &Inner,
        frame_len: usize,
        fill: impl FnOnce(&mut [u8], u64),
    ) -> Result<u64, AppendError> {
        let fits = self.active.as_ref().is_some_and(|a| a.offset + frame_len <= a.map.len());
        if !fits {
            self.roll_or_refuse(inner)?;
        }
        let active = self.active.as_mut().expect("roll_or_refuse leaves an active segment");
        // SAFETY: the range lies inside the mapping (checked above); only this writer, under the
        // mutex, writes to the mapping, and nothing holds a reference into it: readers use pread
        // and the flusher only asks the kernel to write pages back.
        let frame =
            unsafe { std::slice::from_raw_parts_mut(active.map.as_mut_ptr().add(active.offset), frame_len) };
        fill(frame, self.next_seq);
        active.offset += frame_len;
        self.next_seq += 1;
        Ok(self.next_seq)
    }

    #[cold]
    fn roll_or_refuse(&mut self, inner: &Inner) -> Result<(), AppendError> {
        if let Some((error, retry_at)) = self.refusing {
            if Instant::now() < retry_at {
                inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        }
        match self.roll(inner) {
            Ok(()) => {
                if self.refusing.take().is_some() {
                    inner.stats.writable.store(true, Ordering::Release);
                    tracing::warn!(dir = %inner.dir.display(), "event log accepts appends again");
                }
                Ok(())
            }
            Err(error) => {
                let retry_at = Instant::now() + Duration::from_millis(inner.config.unwritable_retry_ms);
                self.refusing = Some((error, retry_at));
                inner.stats.writable.store(false, Ordering::Release);
                inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                inner.stats.note_error(error.to_string());
                tracing::error!(dir = %inner.dir.display(), %error, "event log refuses appends; the server must shed load");
                Err(error)
            }
        }
    }

    /// Creates the next segment and hands the current one to the flusher.
    fn roll(&mut self, inner: &Inner) -> Result<(), AppendError> {
        let capacity = inner.config.segment_bytes_max;
        if inner.stats.bytes_on_disk.load(Ordering::Acquire) + capacity > inner.config.log_bytes_max {
            return Err(AppendError::BacklogFull);
        }
        let header = SegmentHeader {
            log_id: inner.log_id,
            first_seq: self.next_seq,
            capacity_bytes: capacity,
            created_unix_ms: now_unix_ms(),
        };
        let (path, file) = segment::create(&inner.dir, &header).map_err(|err| classify(&err))?;
        let map = MmapOptions::new().map_raw(&file).map_err(|err| {
            let _ = fs::remove_file(&path);
            classify(&err)
        })?;
        // Without this, a fault in the segment reads around it: the kernel fills a whole
        // read-ahead window (for a preallocated segment, with zeroes) in one step that does not
        // give way, and with the request thread sharing its core that held the core for 20 to
        // 30 ms every few seconds. With random access each fault fills one page. Failing costs
        // only that latency, so it is ignored.
        let _ = map.advise(memmap2::Advice::Random);
        inner.stats.bytes_on_disk.fetch_add(capacity, Ordering::AcqRel);
        inner.stats.n_segments.fetch_add(1, Ordering::AcqRel);
        let next = Active {
            first_seq: self.next_seq,
            map: Arc::new(map),
            file: Arc::new(file),
            path,
            offset: HEADER_BYTES,
        };
        if let Some(previous) = self.active.replace(next) {
            self.to_seal.push(Rolled { active: previous });
        }
        inner.stats.dir_dirty.store(true, Ordering::Release);
        Ok(())
    }
}

/// Bytes ahead of the write position the flusher faults in, writable, every round.
pub const PREFAULT_BYTES: usize = 4 * 1024 * 1024;

/// Faults in the pages the next appends will write, so that the request path does not take the
/// page fault (a few microseconds each, once per 4 KiB). It changes no data, so it may run while
/// the writer copies frames into the same mapping. Kernels without `MADV_POPULATE_WRITE` (before
/// 5.14) refuse it, and the appends take the faults themselves. It goes in steps of
/// [`PREFAULT_STEP_BYTES`], yielding the CPU after each, and stops at `until`: what is left is
/// faulted in next round, or by the appends.
fn prefault(map: &MmapRaw, offset: usize, until: Instant) {
    let page = 4096;
    let mut at = offset / page * page;
    let end = (offset + PREFAULT_BYTES).min(map.len());
    while at < end && Instant::now() < until {
        let len = (end - at).min(PREFAULT_STEP_BYTES);
        let _ = map.advise_range(memmap2::Advice::PopulateWrite, at, len);
        at += len;
        std::thread::yield_now();
    }
}

/// Bytes the flusher faults in at a time before it yields its CPU, so that a request thread
/// sharing the CPU waits for one step rather than the whole range. With the server and its
/// flusher on one saturated core, faulting in one go held the CPU for about 340 µs at a time on
/// average and the request thread waited 2.8% of the time; in steps, about 130 to 200 µs (what
/// is left is mostly the write-back) and 1.4 to 1.8%.
pub const PREFAULT_STEP_BYTES: usize = 256 * 1024;

fn classify(err: &io::Error) -> AppendError {
    match err.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => AppendError::DiskFull,
        kind => AppendError::Unwritable(kind),
    }
}

impl Inner {
    /// One round of the flusher: seal rolled segments, write back the active one, fsync the
    /// folder if segments came or went.
    fn sync_once(&self) -> Result<(), EventsError> {
        // Faulting pages in ahead is a help, not a duty: it stops at half the interval, so that
        // on a busy CPU it never delays the next round's fsync.
        let prefault_until = Instant::now() + self.config.fsync_interval() / 2;
        let mut state = lock(&self.sync_state);
        let (rolled, map, first_seq, offset, next_seq) = {
            let mut writer = lock(&self.writer);
            let rolled = std::mem::take(&mut writer.to_seal);
            let active = writer.active.as_ref();
            (
                rolled,
                active.map(|a| a.map.clone()),
                active.map_or(0, |a| a.first_seq),
                active.map_or(0, |a| a.offset),
                writer.next_seq,
            )
        };
        for segment in rolled {
            self.seal(segment)?;
        }
        if let Some(map) = map {
            if state.segment_first_seq != first_seq {
                *state = SyncState { segment_first_seq: first_seq, offset: 0 };
            }
            if offset > state.offset {
                map.flush_range(state.offset, offset - state.offset).map_err(|source| {
                    EventsError::Segment { path: self.dir.join(segment::file_name(first_seq)), source }
                })?;
                state.offset = offset;
            }
            prefault(&map, offset, prefault_until);
        }
        if self.stats.dir_dirty.swap(false, Ordering::AcqRel) {
            segment::sync_dir(&self.dir)
                .map_err(|source| EventsError::Folder { dir: self.dir.clone(), source })?;
        }
        self.stats.synced_seq.fetch_max(next_seq, Ordering::AcqRel);
        Ok(())
    }

    /// Makes a rolled segment durable and trims it to its records, which marks it sealed.
    fn seal(&self, rolled: Rolled) -> Result<(), EventsError> {
        let Rolled { active } = rolled;
        let err = |source| EventsError::Segment { path: active.path.clone(), source };
        active.map.flush_range(0, active.offset).map_err(err)?;
        drop(active.map);
        active.file.set_len(active.offset as u64).map_err(err)?;
        active.file.sync_all().map_err(err)?;
        self.refresh_disk_usage();
        Ok(())
    }

    /// After the shipper deleted segments: recount, and fsync the folder in the next round.
    pub(crate) fn segments_deleted(&self) {
        self.refresh_disk_usage();
        self.stats.dir_dirty.store(true, Ordering::Release);
    }

    /// Recounts the segments' bytes from the folder (after deletions, and at open).
    pub(crate) fn refresh_disk_usage(&self) {
        let Ok(segments) = segment::list(&self.dir) else { return };
        let bytes: u64 =
            segments.iter().filter_map(|(_, path)| fs::metadata(path).ok()).map(|m| m.len()).sum();
        self.stats.bytes_on_disk.store(bytes, Ordering::Release);
        self.stats.n_segments.store(segments.len() as u64, Ordering::Release);
    }
}

/// Takes the folder's writer lock, waiting up to [`LOCK_WAIT_MS`].
fn lock_folder(dir: &Path) -> Result<File, EventsError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| EventsError::Folder { dir: dir.to_owned(), source })?;
    let deadline = Instant::now() + Duration::from_millis(LOCK_WAIT_MS);
    loop {
        // SAFETY: flock only reads the descriptor, which `file` owns and keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::WouldBlock {
            return Err(EventsError::Folder { dir: dir.to_owned(), source: err });
        }
        if Instant::now() >= deadline {
            return Err(EventsError::Locked { dir: dir.to_owned() });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_or_create_log_id(dir: &Path) -> Result<u64, EventsError> {
    let path = dir.join(LOG_ID_FILE);
    let err = |source| EventsError::Folder { dir: dir.to_owned(), source };
    match fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|_| {
            EventsError::Config(format!("{} does not hold a hexadecimal log id", path.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = fresh_log_id(dir);
            let tmp = dir.join(format!("{LOG_ID_FILE}.tmp"));
            fs::write(&tmp, format!("{id:016x}\n")).map_err(err)?;
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(err)?;
            fs::rename(&tmp, &path).map_err(err)?;
            Ok(id)
        }
        Err(e) => Err(err(e)),
    }
}

/// A log id that differs between servers and between folders: the time, the process and the
/// folder hashed together.
fn fresh_log_id(dir: &Path) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}:{}:{}", std::process::id(), dir.display());
    xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
}

/// Scans and seals every segment left unsealed (at most the one appended to when the process
/// stopped and ones rolled away from but not yet trimmed), and returns the next sequence number.
fn recover(dir: &Path) -> Result<(u64, RecoveryReport), EventsError> {
    let mut report = RecoveryReport::default();
    let mut next_seq = 0u64;
    let segments = segment::list(dir)?;
    let n_segments = segments.len();
    for (idx, (name_seq, path)) in segments.into_iter().enumerate() {
        let is_last = idx + 1 == n_segments;
        let seg_err = |source| EventsError::Segment { path: path.clone(), source };
        let file = fs::OpenOptions::new().read(true).write(true).open(&path).map_err(seg_err)?;
        let len = file.metadata().map_err(seg_err)?.len();
        let mut head = [0u8; HEADER_BYTES];
        let header = file
            .read_exact_at(&mut head, 0)
            .map_err(|e| EventsError::NotASegment { path: path.clone(), reason: e.to_string() })
            .and_then(|()| SegmentHeader::parse(&path, &head));
        let header = match header {
            Ok(header) if header.first_seq == name_seq => header,
            Ok(_) | Err(_) => {
                quarantine(&path, &mut report)?;
                continue;
            }
        };
        next_seq = next_seq.max(header.first_seq);
        if len < header.capacity_bytes {
            // Sealed: trimmed to its records when it was rolled away from. Only the last one
            // matters for numbering; its last record gives the next sequence number.
            if is_last {
                next_seq = next_seq.max(last_seq_of(&path)?.map_or(header.first_seq, |s| s + 1));
            }
            continue;
        }
        let bytes = segment::read_all(&path)?;
        let scan = segment::scan(&bytes);
        report.n_segments_scanned += 1;
        report.n_records_recovered += scan.n_records;
        report.n_corrupt_records += scan.n_corrupt;
        if scan.torn_bytes > 0 {
            report.torn_bytes_cut += scan.torn_bytes;
            report.n_segments_torn += 1;
            tracing::warn!(segment = %path.display(), torn_bytes = scan.torn_bytes, "cut a torn tail");
        }
        if let Some(last) = scan.last_seq {
            next_seq = next_seq.max(last + 1);
        }
        // Trimming seals it. An empty last segment stays too (so the folder always names the
        // next sequence number); the new active segment replaces it under the same name.
        file.set_len(scan.valid_end).map_err(seg_err)?;
        file.sync_all().map_err(seg_err)?;
    }
    segment::sync_dir(dir).map_err(|source| EventsError::Folder { dir: dir.to_owned(), source })?;
    Ok((next_seq, report))
}

fn last_seq_of(path: &Path) -> Result<Option<u64>, EventsError> {
    Ok(segment::scan(&segment::read_all(path)?).last_seq)
}

fn quarantine(path: &Path, report: &mut RecoveryReport) -> Result<(), EventsError> {
    let target = path.with_extension("corrupt");
    tracing::error!(segment = %path.display(), "not a valid segment; renamed to .corrupt and left for inspection");
    fs::rename(path, &target).map_err(|source| EventsError::Segment { path: path.to_owned(), source })?;
    report.n_segments_quarantined += 1;
    Ok(())
}
