//! The body of a filled `POST /v1/ad` (docs/openapi.yaml), written by hand (see [`crate::json`]):
//!
//! ```text
//! {"request_id":…,"snapshot_id":…,"assignment":…,"ad":{HEAD markup ","impression_url":…,
//!  "click_url":… TAIL price_micros,"currency":…,"ttl_s":…}}
//! ```
//!
//! A creative's head (its campaign and creative ids, format, size, MIME type, markup kind, up to
//! the markup's opening quote) and its campaign's tail (from the click URL's closing quote: the
//! advertiser's domain, the campaign's bundle, up to the price) are the same on every answer.
//! [`crate::served::Served`] writes them once per snapshot and answers copy them: a few
//! contiguous bytes instead of three records and four strings scattered over the mapping, and
//! a dozen members written one by one. [`write_head`] and [`write_tail`] write them either way,
//! so an answer is the same bytes whether its creative's parts were kept or not.

use adsnap_abtest::Slice;
use adsnap_snapshot::schema::{ArchivedCampaign, ArchivedCreative, MarkupKind};
use adsnap_snapshot::Snapshot;

use crate::json::{push_escaped, push_str, push_u64, Escaped};
use crate::render::{render, render_compiled, Fill, TrackingUrl};
use crate::served::Served;

/// Bytes reserved for a body up front: most fit.
const BODY_BYTES_TYPICAL: usize = 4096;

/// What an answer says beyond its creative's own fields.
pub struct Answer<'a> {
    pub request_id: &'a str,
    pub slice: &'a Slice,
    pub creative_idx: u32,
    pub impression_url: TrackingUrl<'a>,
    pub click_url: TrackingUrl<'a>,
    pub price_micros: u64,
    pub ttl_s: u32,
}

/// The answer's body.
pub fn ad_body(s: &Served, answer: &Answer) -> Vec<u8> {
    let a = s.archive();
    let creative = &a.creatives[answer.creative_idx as usize];
    let campaign_idx = creative.campaign_idx.to_native();
    let campaign = &a.campaigns[campaign_idx as usize];
    let mut body = Vec::with_capacity(BODY_BYTES_TYPICAL);
    body.extend_from_slice(b"{\"request_id\":");
    push_str(&mut body, answer.request_id);
    body.extend_from_slice(b",\"snapshot_id\":\"");
    body.extend_from_slice(s.id_hex().as_bytes());
    body.extend_from_slice(b"\",\"assignment\":\"");
    push_slice_name(&mut body, answer.slice);
    body.extend_from_slice(b"\",\"ad\":{");
    match s.answer_head(answer.creative_idx) {
        Some(head) => body.extend_from_slice(head),
        None => write_head(&mut body, s, creative),
    }
    let campaign_id = campaign.id.to_native();
    let fill = Fill { click_url: answer.click_url, impression_url: answer.impression_url, campaign_id };
    match s.escaped_markup(answer.creative_idx) {
        Some(compiled) => render_compiled(s, creative, &fill, compiled, &mut body),
        None => render(s, creative, &fill, &mut Escaped(&mut body)),
    }
    body.extend_from_slice(b"\",\"impression_url\":\"");
    answer.impression_url.write(&mut Escaped(&mut body));
    body.extend_from_slice(b"\",\"click_url\":\"");
    answer.click_url.write(&mut Escaped(&mut body));
    match s.answer_tail(campaign_idx) {
        Some(tail) => body.extend_from_slice(tail),
        None => write_tail(&mut body, s, campaign),
    }
    push_u64(&mut body, answer.price_micros);
    body.extend_from_slice(b",\"currency\":");
    push_str(&mut body, a.meta.currency.as_str());
    body.extend_from_slice(b",\"ttl_s\":");
    push_u64(&mut body, answer.ttl_s.into());
    body.extend_from_slice(b"}}");
    body
}

/// The creative's members before its markup, through the markup's opening quote.
pub fn write_head(out: &mut Vec<u8>, s: &Snapshot, creative: &ArchivedCreative) {
    let campaign = &s.archive().campaigns[creative.campaign_idx.to_native() as usize];
    out.extend_from_slice(b"\"campaign_id\":");
    push_u64(out, campaign.id.to_native().into());
    out.extend_from_slice(b",\"creative_id\":");
    push_u64(out, creative.id.to_native().into());
    out.extend_from_slice(b",\"format\":\"");
    out.extend_from_slice(creative.format.get().name().as_bytes());
    out.extend_from_slice(b"\",\"width\":");
    push_u64(out, creative.width.to_native().into());
    out.extend_from_slice(b",\"height\":");
    push_u64(out, creative.height.to_native().into());
    out.extend_from_slice(b",\"mime\":");
    push_str(out, s.str(&creative.mime));
    out.extend_from_slice(b",\"markup_kind\":\"");
    out.extend_from_slice(markup_kind_name(creative.markup_kind.get()).as_bytes());
    out.extend_from_slice(b"\",\"markup\":\"");
}

/// The campaign's members after the click URL, from its closing quote through `"price_micros":`.
pub fn write_tail(out: &mut Vec<u8>, s: &Snapshot, campaign: &ArchivedCampaign) {
    let a = s.archive();
    let advertiser = &a.advertisers[campaign.advertiser_idx.to_native() as usize];
    out.extend_from_slice(b"\",\"advertiser_domain\":\"");
    push_escaped(out, s.str(&advertiser.domain));
    out.extend_from_slice(b"\",\"bundle\":\"");
    push_escaped(out, s.str(&campaign.app_bundle));
    out.extend_from_slice(b"\",\"price_micros\":");
}

pub fn markup_kind_name(kind: MarkupKind) -> &'static str {
    match kind {
        MarkupKind::Html => "html",
        MarkupKind::Vast => "vast",
        MarkupKind::NativeJson => "native_json",
    }
}

/// The slice's name as `Slice`'s `Display` writes it (answers carry it), without `fmt`: it needs
/// no escaping.
fn push_slice_name(out: &mut Vec<u8>, slice: &Slice) {
    match *slice {
        Slice::Staging => out.extend_from_slice(b"staging"),
        Slice::Control => out.extend_from_slice(b"control"),
        Slice::Experiment { experiment_id, arm_id, .. } => {
            let mut number = itoa::Buffer::new();
            out.extend_from_slice(b"experiment-");
            out.extend_from_slice(number.format(experiment_id).as_bytes());
            out.extend_from_slice(b"/arm-");
            out.extend_from_slice(number.format(arm_id).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_are_written_as_displayed() {
        let experiment = |experiment_id, arm_id| Slice::Experiment {
            experiment_idx: 1,
            arm_idx: 2,
            experiment_id,
            arm_id,
        };
        for slice in [
            Slice::Staging,
            Slice::Control,
            experiment(7, 3),
            experiment(u32::MAX, 1),
            experiment(1, u32::MAX),
        ] {
            let mut out = Vec::new();
            push_slice_name(&mut out, &slice);
            assert_eq!(String::from_utf8(out).unwrap(), slice.to_string());
        }
    }
}
