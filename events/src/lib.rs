//! adsnap events: the record every ad decision, impression, click, win/bill/loss notice and
//! install becomes ([`Event`]), and the pipeline that makes it durable and replayable.

pub mod event;

pub use event::{Channel, Event, EventKind, Privacy};
