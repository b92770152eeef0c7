//! adsnap events: the record every ad decision, impression, click, win/bill/loss notice and
//! install becomes ([`Event`]), and the pipeline that makes it durable and replayable: a
//! compact versioned encoding ([`codec`]), the local segmented log ([`EventLog`], appended to
//! from the request path), the shipper that replicates it to NATS JetStream, and readers of the
//! log and the stream. Formats and policies: docs/events.md; states: events/STATE.md.

pub mod codec;
pub mod config;
pub mod error;
pub mod event;
pub mod export;
mod export_read;
pub mod journal;
pub mod json;
pub mod log;
pub mod read;
pub mod record;
pub mod segment;
pub mod shipper;
mod stats;
pub mod stream;
pub mod threads;

pub use config::{EventLogConfig, ShipperConfig};
pub use error::{AppendError, DecodeError, EventsError};
pub use event::{Channel, Event, EventKind, Privacy};
pub use log::{EventLog, EventLogHealth, RecoveryReport};
pub use read::{read_log, LogReader, Position};
pub use shipper::ShipperHealth;
pub use stream::{decode_batch, StreamBatch, StreamPosition, StreamReader};
pub use threads::lower_this_thread_priority;
