//! Helpers shared by the integration tests: realistic events and log configurations.

#![allow(dead_code)]

pub mod cluster;
pub mod stream;

use std::borrow::Cow;
use std::path::Path;

use adsnap_events::{Channel, Event, EventKind, EventLogConfig, Privacy};

/// A distinct, realistic event for index `n` (ids derived from `n`, so a test can tell which
/// events arrived).
pub fn event(n: u64) -> Event<'static> {
    Event {
        event_id: (0xadu128 << 120) | n as u128,
        kind: EventKind::ALL[(n % 7) as usize],
        time_unix_ms: 1_795_000_000_000 + (n as i64) * 10,
        request_id: (n as u128) << 32,
        snapshot_id: 0x5eed,
        assignment_code: (n % 4) as u128,
        channel: if n.is_multiple_of(5) { Channel::OpenRtb } else { Channel::Sdk },
        app_id: Cow::Owned(format!("com.example.game{}", n % 97)),
        ad_unit_id: Cow::Borrowed("interstitial-main"),
        campaign_id: (n % 1000) as u32,
        creative_id: (n % 3000) as u32,
        price_micros: 2_500_000,
        revenue_micros: 2500,
        currency: *b"USD",
        country: 0x5553,
        os: 1 + (n % 2) as u8,
        user_key: if n.is_multiple_of(10) { None } else { Some(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) },
        privacy: if n.is_multiple_of(10) { Privacy(Privacy::COPPA) } else { Privacy(0) },
        no_fill_reason: 0,
        test: n % 7 == 3,
    }
}

/// Which `n` an event from [`event`] was made from.
pub fn index_of(event: &Event<'_>) -> u64 {
    (event.event_id & u64::MAX as u128) as u64
}

pub fn local_config(dir: &Path, segment_bytes_max: u64) -> EventLogConfig {
    EventLogConfig {
        dir: dir.to_owned(),
        segment_bytes_max,
        fsync_interval_ms: 10,
        log_bytes_max: 1 << 30,
        ..EventLogConfig::default()
    }
}
