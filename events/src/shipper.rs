//! The shipper: a tokio task that forwards the local log to a NATS JetStream stream. It reads
//! committed frames, publishes them in batches (the raw frames, checksums and all) under a
//! message id made from the batch's first event id, keeps a window of acknowledgements in
//! flight and polls them all at once, resends failed batches unchanged after a backoff, records
//! its position in the journal and deletes segments the stream has acknowledged. See
//! `events/STATE.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError, message::PublishMessage, publish::PublishAck};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::codec;
use crate::config::ShipperConfig;
use crate::error::EventsError;
use crate::journal::Journal;
use crate::log::EventLog;
use crate::read::{CursorItem, SegmentCursor};
use crate::record::FRAME_HEADER_BYTES;
use crate::segment;
use crate::stats::{counter, gauge};

/// Headers of every published batch (besides `Nats-Msg-Id`).
pub const HEADER_LOG_ID: &str = "Adsnap-Log-Id";
pub const HEADER_SEQ: &str = "Adsnap-Seq";
pub const HEADER_BATCH_FORMAT: &str = "Adsnap-Batch-Format";
/// Version of the batch layout: concatenated log frames.
pub const BATCH_FORMAT: &str = "1";

/// The shipper's state for `/health`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShipperHealth {
    pub connected: bool,
    /// The stream exists and the shipper has found it.
    pub stream_ready: bool,
    /// Every event below this sequence number is acknowledged by the stream.
    pub acked_seq: u64,
    /// Events appended but not yet acknowledged.
    pub backlog_events: u64,
    pub in_flight_messages: u64,
    pub shipped_events_total: u64,
    pub published_messages_total: u64,
    pub publish_failures_total: u64,
    /// Resent batches the stream recognised by their message id and did not store again.
    pub duplicate_messages_total: u64,
    pub segments_deleted_total: u64,
    pub corrupt_records_skipped_total: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Status {
    connected: AtomicBool,
    stream_ready: AtomicBool,
    acked_seq: AtomicU64,
    in_flight: AtomicU64,
    shipped_events: AtomicU64,
    published_messages: AtomicU64,
    publish_failures: AtomicU64,
    duplicates: AtomicU64,
    segments_deleted: AtomicU64,
    corrupt_skipped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// Owned by the log: reads the shipper's status and stops it.
#[derive(Debug)]
pub(crate) struct ShipperHandle {
    status: Arc<Status>,
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl ShipperHandle {
    /// The shipper's state; `next_seq` is the log's, for the backlog.
    pub fn health(&self, next_seq: u64) -> ShipperHealth {
        let s = &self.status;
        let acked = s.acked_seq.load(Ordering::Acquire);
        ShipperHealth {
            connected: s.connected.load(Ordering::Relaxed),
            stream_ready: s.stream_ready.load(Ordering::Relaxed),
            acked_seq: acked,
            backlog_events: next_seq.saturating_sub(acked),
            in_flight_messages: s.in_flight.load(Ordering::Relaxed),
            shipped_events_total: s.shipped_events.load(Ordering::Relaxed),
            published_messages_total: s.published_messages.load(Ordering::Relaxed),
            publish_failures_total: s.publish_failures.load(Ordering::Relaxed),
            duplicate_messages_total: s.duplicates.load(Ordering::Relaxed),
            segments_deleted_total: s.segments_deleted.load(Ordering::Relaxed),
            corrupt_records_skipped_total: s.corrupt_skipped.load(Ordering::Relaxed),
            last_error: s.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Stops publishing new batches, waits up to `deadline` for the acknowledgements in flight,
    /// records the position and ends the task.
    pub async fn stop(self, deadline: Duration) {
        let _ = self.stop.send(Some(deadline));
        if tokio::time::timeout(deadline + Duration::from_secs(1), self.task).await.is_err() {
            tracing::warn!("event shipper did not stop in time");
        }
    }
}

pub(crate) fn start(log: EventLog, config: ShipperConfig) -> Result<ShipperHandle, EventsError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| EventsError::NoRuntime)?;
    let (journal, state) = Journal::open(log.dir())?;
    let status = Arc::new(Status::default());
    status.acked_seq.store(state.acked_seq, Ordering::Release);
    let (stop_tx, stop_rx) = watch::channel(None);
    let span = tracing::info_span!("event_shipper", stream = %config.stream);
    let shipper = Shipper {
        reader: BatchReader { dir: log.dir().to_owned(), cursor: None, next_seq: state.acked_seq },
        replay: state.planned,
        acked_seq: state.acked_seq,
        synced_acked_seq: state.acked_seq,
        journal,
        status: status.clone(),
        in_flight: BTreeMap::new(),
        retry: BTreeSet::new(),
        acks: FuturesUnordered::new(),
        backoff: Duration::from_millis(config.retry_backoff_ms_min),
        paused_until: None,
        config,
        log,
    };
    let task = runtime.spawn(shipper.run(stop_rx).instrument(span));
    Ok(ShipperHandle { status, stop: stop_tx, task })
}

type AckFuture = Pin<Box<dyn Future<Output = (u64, Result<PublishAck, PublishError>)> + Send>>;

/// A batch published and not yet part of the acknowledged prefix.
struct InFlight {
    last_seq: u64,
    n_events: u64,
    msg_id: String,
    payload: Bytes,
    acked: bool,
}

struct Shipper {
    log: EventLog,
    config: ShipperConfig,
    status: Arc<Status>,
    journal: Journal,
    reader: BatchReader,
    /// Batches planned by an earlier run and not known to be acknowledged: resent first, with
    /// the same boundaries, so the stream recognises them.
    replay: BTreeMap<u64, u64>,
    in_flight: BTreeMap<u64, InFlight>,
    /// First sequence numbers of in-flight batches whose publish failed, to resend.
    retry: BTreeSet<u64>,
    acks: FuturesUnordered<AckFuture>,
    acked_seq: u64,
    synced_acked_seq: u64,
    backoff: Duration,
    paused_until: Option<Instant>,
}

impl Shipper {
    async fn run(mut self, mut stop: watch::Receiver<Option<Duration>>) {
        let Some((client, js)) = self.connect(&mut stop).await else { return };
        let mut position_tick =
            tokio::time::interval(Duration::from_millis(self.config.position_sync_interval_ms));
        let mut stop_at: Option<Instant> = None;
        loop {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            self.status.connected.store(connected, Ordering::Relaxed);
            if stop_at.is_none() && connected && self.paused_until.is_none_or(|t| Instant::now() >= t) {
                self.paused_until = None;
                if let Err(err) = self.fill_window(&js).await {
                    self.note_error(format!("reading the log: {err}"));
                    self.pause();
                }
            }
            self.status.in_flight.store(self.in_flight.len() as u64, Ordering::Relaxed);
            if let Some(at) = stop_at {
                if self.acks.is_empty() || Instant::now() >= at {
                    break;
                }
            }
            let wait = self.idle_wait();
            tokio::select! {
                Some((first_seq, result)) = self.acks.next(), if !self.acks.is_empty() => {
                    self.on_ack(first_seq, result);
                }
                _ = position_tick.tick() => self.sync_position(),
                changed = stop.changed(), if stop_at.is_none() => {
                    let deadline = if changed.is_ok() { (*stop.borrow()).unwrap_or_default() } else { Duration::ZERO };
                    stop_at = Some(Instant::now() + deadline);
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.sync_position();
        tracing::info!(acked_seq = self.acked_seq, "event shipper stopped");
    }

    /// Connects (the client keeps reconnecting on its own) and finds or creates the stream,
    /// retrying with backoff until it succeeds or the shipper is stopped.
    async fn connect(
        &mut self,
        stop: &mut watch::Receiver<Option<Duration>>,
    ) -> Option<(async_nats::Client, jetstream::Context)> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .connect(self.config.urls.clone())
            .await;
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                self.note_error(format!("connecting to {:?}: {err}", self.config.urls));
                return None;
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(self.config.ack_timeout_ms))
            .build(client.clone());
        loop {
            match ensure_stream(&self.config, &js).await {
                Ok(()) => break,
                Err(err) => self.note_error(err.to_string()),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.backoff) => self.backoff = (self.backoff * 2).min(self.backoff_max()),
                _ = stop.changed() => return None,
            }
        }
        self.backoff = Duration::from_millis(self.config.retry_backoff_ms_min);
        self.status.stream_ready.store(true, Ordering::Relaxed);
        tracing::info!(urls = ?self.config.urls, acked_seq = self.acked_seq, replay = self.replay.len(), "event shipper connected");
        Some((client, js))
    }

    fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.config.retry_backoff_ms_max)
    }

    /// How long to sleep when there is nothing to wait for but time: until the pause ends, or
    /// the poll interval when caught up.
    fn idle_wait(&self) -> Duration {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        match self.paused_until {
            Some(t) => t.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
            None => poll,
        }
    }

    fn pause(&mut self) {
        self.paused_until = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.backoff_max());
    }

    fn note_error(&self, message: String) {
        tracing::warn!(error = %message, "event shipper");
        self.status.error(message);
    }

    /// Publishes until the window is full: failed batches first, then batches an earlier run
    /// planned, then new ones.
    async fn fill_window(&mut self, js: &jetstream::Context) -> Result<(), EventsError> {
        while self.acks.len() < self.config.acks_in_flight_max {
            let first_seq = if let Some(first) = self.retry.pop_first() {
                first
            } else if self.in_flight.len() < self.config.acks_in_flight_max {
                match self.next_batch()? {
                    Some(first) => first,
                    None => return Ok(()),
                }
            } else {
                return Ok(());
            };
            if !self.publish(js, first_seq).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads the next batch from the log into `in_flight` and returns its first sequence number.
    fn next_batch(&mut self) -> Result<Option<u64>, EventsError> {
        let committed = self.log.next_seq();
        let next = self.reader.next_seq;
        while self.replay.first_key_value().is_some_and(|(_, last)| *last < next) {
            self.replay.pop_first();
        }
        let (stop_seq, planned) = match self.replay.first_key_value() {
            Some((&first, &last)) if first <= next => (last + 1, true),
            Some((&first, _)) => (first, false),
            None => (u64::MAX, false),
        };
        let limits = if planned {
            (usize::MAX, usize::MAX)
        } else {
            (self.config.batch_events_max, self.config.batch_bytes_max)
        };
        let batch = self.reader.read(stop_seq.min(committed), limits.0, limits.1, &self.status)?;
        let Some(batch) = batch else { return Ok(None) };
        if planned {
            self.replay.pop_first();
        } else if let Err(err) = self.journal.planned(batch.first_seq, batch.last_seq) {
            // Unplanned batches must not be sent; read them again next time.
            self.reader.rewind(batch.first_seq);
            return Err(err);
        }
        let first_seq = batch.first_seq;
        self.in_flight.insert(
            first_seq,
            InFlight {
                last_seq: batch.last_seq,
                n_events: batch.n_events,
                msg_id: format!("{:032x}-{}", batch.first_event_id, batch.n_events),
                payload: Bytes::from(batch.bytes),
                acked: false,
            },
        );
        Ok(Some(first_seq))
    }

    /// Sends one in-flight batch; its acknowledgement joins the ones polled together. Returns
    /// false (and queues the batch for a resend) if it could not even be sent.
    async fn publish(&mut self, js: &jetstream::Context, first_seq: u64) -> bool {
        let batch = &self.in_flight[&first_seq];
        let publish = PublishMessage::build()
            .payload(batch.payload.clone())
            .message_id(&batch.msg_id)
            .header(HEADER_LOG_ID, format!("{:016x}", self.log.log_id()).as_str())
            .header(HEADER_SEQ, format!("{first_seq}-{}", batch.last_seq).as_str())
            .header(HEADER_BATCH_FORMAT, BATCH_FORMAT);
        match js.send_publish(self.config.subject.clone(), publish).await {
            Ok(ack) => {
                self.status.published_messages.fetch_add(1, Ordering::Relaxed);
                self.acks.push(Box::pin(async move { (first_seq, ack.await) }));
                true
            }
            Err(err) => {
                self.on_ack(first_seq, Err(err));
                false
            }
        }
    }

    fn on_ack(&mut self, first_seq: u64, result: Result<PublishAck, PublishError>) {
        match result {
            Ok(ack) => {
                if self.status.publish_failures.load(Ordering::Relaxed) > 0 {
                    // The error is history once the stream acknowledges again.
                    *self.status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                self.backoff = Duration::from_millis(self.config.retry_backoff_ms_min);
                if ack.duplicate {
                    self.status.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(batch) = self.in_flight.get_mut(&first_seq) {
                    batch.acked = true;
                }
                self.advance();
            }
            Err(err) => {
                self.status.publish_failures.fetch_add(1, Ordering::Relaxed);
                self.note_error(format!("publishing events {first_seq}..: {err}"));
                self.retry.insert(first_seq);
                if self.paused_until.is_none() {
                    self.pause();
                }
            }
        }
    }

    /// Moves the acknowledged position over the acknowledged prefix of the window.
    fn advance(&mut self) {
        while let Some(entry) = self.in_flight.first_entry() {
            if !entry.get().acked {
                break;
            }
            let batch = entry.remove();
            self.acked_seq = batch.last_seq + 1;
            self.status.shipped_events.fetch_add(batch.n_events, Ordering::Relaxed);
        }
        self.status.acked_seq.store(self.acked_seq, Ordering::Release);
    }

    /// Makes the position durable, then deletes the segments entirely below it.
    fn sync_position(&mut self) {
        if self.acked_seq == self.synced_acked_seq {
            return;
        }
        let mut outstanding: BTreeMap<u64, u64> =
            self.in_flight.iter().map(|(f, b)| (*f, b.last_seq)).collect();
        outstanding.extend(self.replay.iter().map(|(f, l)| (*f, *l)));
        if let Err(err) = self.journal.acked(self.acked_seq, &outstanding) {
            self.note_error(format!("recording the position: {err}"));
            return;
        }
        self.synced_acked_seq = self.acked_seq;
        match delete_shipped(self.log.dir(), self.acked_seq) {
            Ok(0) => {}
            Ok(n) => {
                self.status.segments_deleted.fetch_add(n, Ordering::Relaxed);
                self.log.inner.segments_deleted();
            }
            Err(err) => self.note_error(format!("deleting shipped segments: {err}")),
        }
    }
}

/// Finds the stream, or creates it (file storage, replicas, duplicate window) when allowed.
async fn ensure_stream(config: &ShipperConfig, js: &jetstream::Context) -> Result<(), EventsError> {
    if !config.create_stream {
        js.get_stream(&config.stream).await.map_err(|e| EventsError::nats("finding the stream", e, true))?;
        return Ok(());
    }
    let stream = jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.subject.clone()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(config.duplicate_window_s),
        ..Default::default()
    };
    js.get_or_create_stream(stream).await.map_err(|e| EventsError::nats("creating the stream", e, true))?;
    Ok(())
}

/// Deletes every segment whose events all lie below `acked_seq` (its successor starts at or
/// below it). The newest segment is never deleted: it is the one being appended to.
fn delete_shipped(dir: &std::path::Path, acked_seq: u64) -> Result<u64, EventsError> {
    let segments = segment::list(dir)?;
    let mut n_deleted = 0;
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first > acked_seq {
            break;
        }
        std::fs::remove_file(path).map_err(|source| EventsError::Segment { path: path.clone(), source })?;
        tracing::debug!(segment = %path.display(), "deleted a shipped segment");
        n_deleted += 1;
    }
    Ok(n_deleted)
}

/// Frames read from the log for one message.
struct RawBatch {
    first_seq: u64,
    last_seq: u64,
    n_events: u64,
    first_event_id: u128,
    bytes: Vec<u8>,
}

/// Reads committed frames in sequence order across segments.
struct BatchReader {
    dir: std::path::PathBuf,
    cursor: Option<SegmentCursor>,
    /// The next sequence number to read.
    next_seq: u64,
}

impl BatchReader {
    /// Reads frames from `next_seq` up to (not including) `stop_seq`, at most `max_events` and
    /// `max_bytes` (at least one frame).
    fn read(
        &mut self,
        stop_seq: u64,
        max_events: usize,
        max_bytes: usize,
        status: &Status,
    ) -> Result<Option<RawBatch>, EventsError> {
        let mut batch =
            RawBatch { first_seq: 0, last_seq: 0, n_events: 0, first_event_id: 0, bytes: Vec::new() };
        let mut looked_again = false;
        while self.next_seq < stop_seq && (batch.n_events as usize) < max_events {
            if !self.open_cursor_for_next()? {
                break;
            }
            let cursor = self.cursor.as_mut().expect("opened above");
            let before = cursor.offset();
            match cursor.next_item()? {
                Some(CursorItem::Frame { seq, start, end }) => {
                    looked_again = false;
                    if seq < self.next_seq {
                        continue;
                    }
                    if seq >= stop_seq
                        || (batch.n_events > 0 && batch.bytes.len() + (end - start) > max_bytes)
                    {
                        cursor.rewind_to(before);
                        break;
                    }
                    let frame = &cursor.bytes()[start..end];
                    if batch.n_events == 0 {
                        batch.first_seq = seq;
                        batch.first_event_id =
                            codec::peek_event_id(&frame[FRAME_HEADER_BYTES..]).unwrap_or(seq as u128);
                    }
                    batch.bytes.extend_from_slice(frame);
                    batch.last_seq = seq;
                    batch.n_events += 1;
                    self.next_seq = seq + 1;
                }
                Some(CursorItem::Corrupt { offset }) | Some(CursorItem::Unframeable { offset }) => {
                    if !looked_again {
                        // Possibly bytes buffered before the writer finished them: read again.
                        cursor.rewind_to(before);
                        cursor.look_again();
                        looked_again = true;
                        continue;
                    }
                    looked_again = false;
                    status.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(segment = %cursor.path().display(), offset, "skipping a damaged record");
                }
                None if !looked_again => {
                    cursor.look_again();
                    looked_again = true;
                }
                None => {
                    looked_again = false;
                    if !self.move_to_next_segment()? {
                        break;
                    }
                }
            }
        }
        Ok((batch.n_events > 0).then_some(batch))
    }

    /// Makes `seq` the next sequence number to read (its segment is found again).
    fn rewind(&mut self, seq: u64) {
        self.next_seq = seq;
        self.cursor = None;
    }

    fn open_cursor_for_next(&mut self) -> Result<bool, EventsError> {
        if self.cursor.is_none() {
            let segments = segment::list(&self.dir)?;
            let found = segments.iter().rev().find(|(first, _)| *first <= self.next_seq).or(segments.first());
            if let Some((first, path)) = found {
                if *first > self.next_seq {
                    tracing::error!(
                        expected = self.next_seq,
                        first_available = first,
                        "events missing from the log before the first segment"
                    );
                    self.next_seq = *first;
                }
                self.cursor = Some(SegmentCursor::open(path)?);
            }
        }
        Ok(self.cursor.is_some())
    }

    /// At the end of the current segment's data: moves to the next segment if one exists.
    fn move_to_next_segment(&mut self) -> Result<bool, EventsError> {
        let current = self.cursor.as_ref().map_or(0, |c| c.header.first_seq);
        let segments = segment::list(&self.dir)?;
        match segments.into_iter().find(|(first, _)| *first > current) {
            Some((_, path)) => {
                self.cursor = Some(SegmentCursor::open(&path)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

pub(crate) fn encode_metrics(
    e: &mut DescriptorEncoder,
    s: &ShipperHealth,
    _next_seq: u64,
) -> Result<(), std::fmt::Error> {
    gauge(e, "adsnap_events_shipper_connected", "1 when connected to the NATS cluster", s.connected as i64)?;
    gauge(
        e,
        "adsnap_events_shipper_acked_seq",
        "Every event below this is acknowledged by the stream",
        s.acked_seq as i64,
    )?;
    gauge(
        e,
        "adsnap_events_shipper_backlog",
        "Events appended and not yet acknowledged by the stream",
        s.backlog_events as i64,
    )?;
    gauge(
        e,
        "adsnap_events_shipper_in_flight",
        "Published batches awaiting acknowledgement",
        s.in_flight_messages as i64,
    )?;
    counter(e, "adsnap_events_shipped", "Events acknowledged by the stream", s.shipped_events_total)?;
    counter(
        e,
        "adsnap_events_shipper_published",
        "Batches published (resends included)",
        s.published_messages_total,
    )?;
    counter(
        e,
        "adsnap_events_shipper_publish_failures",
        "Publishes that failed or timed out",
        s.publish_failures_total,
    )?;
    counter(
        e,
        "adsnap_events_shipper_duplicates",
        "Resent batches the stream dropped as duplicates",
        s.duplicate_messages_total,
    )?;
    counter(
        e,
        "adsnap_events_shipper_segments_deleted",
        "Segments deleted after acknowledgement",
        s.segments_deleted_total,
    )?;
    counter(
        e,
        "adsnap_events_shipper_corrupt_skipped",
        "Damaged records the shipper skipped",
        s.corrupt_records_skipped_total,
    )
}
