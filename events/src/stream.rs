//! Reading events back from the JetStream stream: decoding a shipped batch (verifying every
//! frame's checksum again on this side of the wire) and an ordered consumer from a stream
//! sequence number or a time.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures_util::StreamExt;

use crate::codec;
use crate::error::EventsError;
use crate::event::Event;
use crate::record::{self, Frame, FRAME_HEADER_BYTES};
use crate::shipper::{BATCH_FORMAT, HEADER_BATCH_FORMAT, HEADER_LOG_ID};

/// Where reading the stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamPosition {
    Start,
    /// A stream sequence number (one per batch message).
    Seq(u64),
    /// The first message stored at or after this time.
    TimeUnixMs(i64),
    /// Only messages stored from now on.
    End,
}

/// One message of the stream, decoded.
#[derive(Clone, Debug)]
pub struct StreamBatch {
    pub stream_seq: u64,
    /// The log that shipped it.
    pub log_id: Option<u64>,
    /// Each event with its sequence number in that log.
    pub events: Vec<(u64, Event<'static>)>,
}

/// Decodes a batch (concatenated log frames), checking every frame.
pub fn decode_batch(stream_seq: u64, payload: &[u8]) -> Result<Vec<(u64, Event<'static>)>, EventsError> {
    let bad = |reason: String| EventsError::BadBatch { stream_seq, reason };
    let mut events = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        match record::parse(payload, at) {
            Frame::Record { seq, payload: bytes, next } => {
                let event = codec::decode(bytes).map_err(|e| bad(format!("event {seq}: {e}")))?;
                events.push((seq, event));
                at = next;
            }
            other => return Err(bad(format!("frame at byte {at}: {other:?}"))),
        }
    }
    debug_assert!(events.is_empty() || at >= FRAME_HEADER_BYTES);
    Ok(events)
}

/// Reads a stream in order with an ordered consumer (nothing to acknowledge, nothing left on
/// the server afterwards).
pub struct StreamReader {
    messages: jetstream::consumer::pull::Ordered,
    /// Without following: the stream's last sequence number when reading started.
    last_seq: Option<u64>,
    done: bool,
}

/// How long one wait for the next message may take while following before checking again.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

impl StreamReader {
    /// Connects to `urls` and starts reading `stream` at `from`. Without `follow`, reading ends
    /// at the message that was last when it started.
    pub async fn open(
        urls: &[String],
        stream: &str,
        from: StreamPosition,
        follow: bool,
    ) -> Result<StreamReader, EventsError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(urls.to_vec())
            .await
            .map_err(|e| EventsError::nats("connecting", e, true))?;
        let js = jetstream::new(client);
        let mut stream =
            js.get_stream(stream).await.map_err(|e| EventsError::nats("finding the stream", e, true))?;
        let state = stream.info().await.map_err(|e| EventsError::nats("stream info", e, true))?.state.clone();
        let last = state.last_sequence;
        let last_unix_ms = (state.last_timestamp.unix_timestamp_nanos() / 1_000_000) as i64;
        let deliver_policy = match from {
            StreamPosition::Start => DeliverPolicy::All,
            StreamPosition::Seq(seq) => DeliverPolicy::ByStartSequence { start_sequence: seq.max(1) },
            StreamPosition::TimeUnixMs(t) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(t as i128 * 1_000_000)
                    .map_err(|e| EventsError::Config(format!("time {t}: {e}")))?,
            },
            StreamPosition::End => DeliverPolicy::New,
        };
        let consumer = create_ordered_consumer(&stream, deliver_policy).await?;
        let messages =
            consumer.messages().await.map_err(|e| EventsError::nats("reading messages", e, true))?;
        let starts_after_last = match from {
            StreamPosition::Seq(seq) => seq > last,
            StreamPosition::TimeUnixMs(t) => t > last_unix_ms,
            StreamPosition::End => true,
            _ => false,
        };
        Ok(StreamReader {
            messages,
            last_seq: (!follow).then_some(last),
            done: !follow && (last == 0 || starts_after_last),
        })
    }

    /// The next batch, or `None` at the end (without following).
    pub async fn next_batch(&mut self) -> Option<Result<StreamBatch, EventsError>> {
        loop {
            if self.done {
                return None;
            }
            let next = match self.last_seq {
                // Not following: every message up to `last` exists, so waiting long is fine.
                Some(_) => tokio::time::timeout(Duration::from_secs(30), self.messages.next()).await,
                None => tokio::time::timeout(FOLLOW_POLL, self.messages.next()).await,
            };
            let message = match next {
                Err(_) if self.last_seq.is_none() => continue,
                Err(_) => return Some(Err(EventsError::nats("reading the stream", "timed out", true))),
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some(Err(EventsError::nats("reading the stream", e, true))),
                Ok(Some(Ok(message))) => message,
            };
            let stream_seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => return Some(Err(EventsError::nats("message info", e, false))),
            };
            if self.last_seq.is_some_and(|last| stream_seq >= last) {
                self.done = true;
            }
            return Some(batch_of(stream_seq, &message));
        }
    }
}

/// How long one request to create the reader's consumer may take. On a healthy cluster it takes
/// milliseconds.
const CREATE_CONSUMER_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests to create the reader's consumer before reading fails: see [`create_ordered_consumer`].
const CREATE_CONSUMER_ATTEMPTS: u32 = 8;

/// Creates the ordered consumer, asking again when a request goes unanswered.
///
/// An ordered consumer has one replica. nats-server before 2.9.12 (Debian 12 ships 2.9.10) places
/// it on any of the stream's peers, an offline one included, and then never answers (fixed
/// upstream by "select from online peers", nats-server e15eb22). With one node of three down,
/// about one request in three is lost that way; each new request is placed afresh, so eight of
/// them all lost is a chance of 1 in 6,561. A lost one leaves an ephemeral consumer that the
/// server removes after its inactivity threshold once the node is back. Errors other than a
/// timeout (no such stream, a refused configuration) are returned at once.
async fn create_ordered_consumer(
    stream: &jetstream::stream::Stream,
    deliver_policy: DeliverPolicy,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::OrderedConfig>, EventsError> {
    let mut attempt = 1;
    loop {
        let config = jetstream::consumer::pull::OrderedConfig { deliver_policy, ..Default::default() };
        let timed_out =
            match tokio::time::timeout(CREATE_CONSUMER_TIMEOUT, stream.create_consumer(config)).await {
                Ok(Ok(consumer)) => return Ok(consumer),
                Ok(Err(e)) if e.kind() != jetstream::stream::ConsumerErrorKind::TimedOut => {
                    return Err(EventsError::nats("creating an ordered consumer", e, true))
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
        if attempt == CREATE_CONSUMER_ATTEMPTS {
            let message = format!("{timed_out}, {attempt} times in a row");
            return Err(EventsError::nats("creating an ordered consumer", message, true));
        }
        tracing::debug!(attempt, "creating an ordered consumer timed out; asking again");
        attempt += 1;
    }
}

fn batch_of(stream_seq: u64, message: &async_nats::Message) -> Result<StreamBatch, EventsError> {
    let headers = message.headers.as_ref();
    let format = headers.and_then(|h| h.get(HEADER_BATCH_FORMAT)).map(|v| v.as_str().to_owned());
    if format.as_deref() != Some(BATCH_FORMAT) {
        return Err(EventsError::BadBatch { stream_seq, reason: format!("batch format {format:?}") });
    }
    let log_id =
        headers.and_then(|h| h.get(HEADER_LOG_ID)).and_then(|v| u64::from_str_radix(v.as_str(), 16).ok());
    Ok(StreamBatch { stream_seq, log_id, events: decode_batch(stream_seq, &message.payload)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_decode_and_damage_is_refused() {
        let events: Vec<_> = (0..5).map(crate::codec::tests::sample).collect();
        let mut payload = Vec::new();
        for (seq, event) in events.iter().enumerate() {
            record::push_frame(&mut payload, 100 + seq as u64, &codec::encode(event));
        }
        let decoded = decode_batch(1, &payload).unwrap();
        assert_eq!(decoded.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![100, 101, 102, 103, 104]);
        assert_eq!(decoded.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), events);
        payload[FRAME_HEADER_BYTES + 30] ^= 4;
        assert!(matches!(decode_batch(1, &payload), Err(EventsError::BadBatch { stream_seq: 1, .. })));
        assert!(decode_batch(2, &payload[..payload.len() - 3]).is_err());
    }
}
