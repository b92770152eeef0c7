//! The JSON Lines view of an event for people and tools: ids too wide for a double are hex
//! strings, codes are names, and the time is also given in RFC 3339. Layout: docs/events.md.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::event::{Channel, Event};

#[derive(Serialize)]
struct JsonEvent<'e> {
    #[serde(skip_serializing_if = "Option::is_none")]
    log_id: Option<String>,
    seq: u64,
    event_id: String,
    kind: &'static str,
    time_unix_ms: i64,
    time: String,
    request_id: String,
    snapshot_id: String,
    assignment_code: String,
    channel: &'static str,
    app_id: &'e str,
    ad_unit_id: &'e str,
    campaign_id: u32,
    creative_id: u32,
    price_micros: i64,
    revenue_micros: i64,
    currency: String,
    country: u16,
    os: u8,
    user_key: Option<String>,
    privacy: u8,
    no_fill_reason: u8,
    test: bool,
}

pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Sdk => "sdk",
        Channel::OpenRtb => "open_rtb",
        Channel::Partner => "partner",
    }
}

/// The channel [`channel_name`] names.
pub fn channel_from_name(name: &str) -> Option<Channel> {
    [Channel::Sdk, Channel::OpenRtb, Channel::Partner].into_iter().find(|c| channel_name(*c) == name)
}

/// RFC 3339 with milliseconds, UTC; times before 1970 are shown as 1970.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// One line (without the newline).
pub fn to_json_line(log_id: Option<u64>, seq: u64, e: &Event<'_>) -> String {
    let view = JsonEvent {
        log_id: log_id.map(|id| format!("{id:016x}")),
        seq,
        event_id: format!("{:032x}", e.event_id),
        kind: e.kind.name(),
        time_unix_ms: e.time_unix_ms,
        time: rfc3339_ms(e.time_unix_ms),
        request_id: format!("{:032x}", e.request_id),
        snapshot_id: format!("{:016x}", e.snapshot_id),
        assignment_code: format!("{:032x}", e.assignment_code),
        channel: channel_name(e.channel),
        app_id: &e.app_id,
        ad_unit_id: &e.ad_unit_id,
        campaign_id: e.campaign_id,
        creative_id: e.creative_id,
        price_micros: e.price_micros,
        revenue_micros: e.revenue_micros,
        currency: String::from_utf8_lossy(&e.currency).into_owned(),
        country: e.country,
        os: e.os,
        user_key: e.user_key.map(|k| format!("{k:016x}")),
        privacy: e.privacy.0,
        no_fill_reason: e.no_fill_reason,
        test: e.test,
    };
    serde_json::to_string(&view).expect("plain fields always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_codes_are_names() {
        let e = crate::codec::tests::sample(12);
        let line = to_json_line(Some(0xab), 7, &e);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["log_id"], "00000000000000ab");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["event_id"], format!("{:032x}", e.event_id));
        assert_eq!(value["kind"], e.kind.name());
        assert_eq!(value["channel"], "sdk");
        assert_eq!(value["currency"], "USD");
        assert_eq!(value["time"], rfc3339_ms(e.time_unix_ms));
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
        assert!(to_json_line(None, 0, &e).find("log_id").is_none());
    }
}

#[cfg(test)]
mod docs {
    use std::borrow::Cow;

    use super::to_json_line;
    use crate::event::{Channel, Event, EventKind, Privacy};

    /// The example in docs/events.md is this event's line, so that the document stays true.
    #[test]
    fn the_documented_example_is_what_the_code_writes() {
        let event = Event {
            event_id: 0x5f1c_8a2e_77d0_4b19_9c3e_0a6b_d2f4_1e07,
            kind: EventKind::Impression,
            time_unix_ms: 1_795_000_000_120,
            request_id: 0x0b7e_4d21_c9a0_4f3e_8d11_6a5c_2b90_e4f3,
            snapshot_id: 0x9d3a_61f0_5c2e_7b18,
            assignment_code: 0x0201,
            channel: Channel::Sdk,
            app_id: Cow::Borrowed("com.example.puzzle"),
            ad_unit_id: Cow::Borrowed("rewarded-main"),
            campaign_id: 1042,
            creative_id: 3127,
            price_micros: 4_200_000,
            revenue_micros: 4200,
            currency: *b"USD",
            country: 0x5553,
            os: 1,
            user_key: Some(0xa8f5_f167_f44f_4964),
            privacy: Privacy(0),
            no_fill_reason: 0,
            test: false,
        };
        let line = to_json_line(Some(0x3c9e_10d4_aa72_5b06), 12, &event);
        let docs = include_str!("../../docs/events.md");
        assert!(docs.lines().any(|l| l == line), "docs/events.md should show:\n{line}");
    }
}
