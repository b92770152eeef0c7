//! A snapshot as the server holds it: the verified mapping, and what is prepared from it once,
//! when it is opened, instead of on every request (each creative's markup escaped for JSON
//! answers; which creatives load only over https, their VAST versions and their native assets,
//! for OpenRTB impressions). Opening, preparing and releasing a snapshot run on threads of their
//! own at the configured nice value, so a hot swap takes its CPU time from the request threads
//! as little as the machine allows.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use adsnap_events::lower_this_thread_priority;
use adsnap_snapshot::schema::ArchivedCreative;
use adsnap_snapshot::{MarkupKind, OpenOptions, Pages, Snapshot};
use tracing::{info, warn};

use crate::answer::{write_head, write_tail};
use crate::error::ServeError;
use crate::native;
use crate::render::{self, Fill, Piece, TrackingUrl};

/// What preparing a snapshot may use.
#[derive(Clone, Copy, Debug)]
pub struct Prepare {
    /// Nice value (0 to 19) of the opening and releasing threads.
    pub nice: i8,
    /// Bytes of escaped markup kept per snapshot at most; see [`EscapedMarkup`].
    pub escaped_markup_bytes_max: u32,
}

/// A verified snapshot, its escaped markup, its creatives' answer parts, and what OpenRTB
/// impressions ask of its creatives. Dereferences to the [`Snapshot`].
pub struct Served {
    /// Taken out only by `drop`.
    snapshot: ManuallyDrop<Snapshot>,
    markup: EscapedMarkup,
    parts: AnswerParts,
    facts: CreativeFacts,
    native: NativeAssets,
    /// The snapshot id as answers carry it (16 hex digits), formatted once.
    id_hex: String,
}

impl Served {
    /// Maps and verifies the snapshot at `path` and escapes its markup, on a thread of its own
    /// at `prepare.nice`: this reads the whole file, far too long for an async worker, and at
    /// normal priority it would take the request threads' CPU for as long as it runs.
    pub async fn open(path: &Path, prepare: Prepare) -> Result<Arc<Served>, ServeError> {
        let (path, shown) = (path.to_owned(), path.display().to_string());
        let (done, opened) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot-open".into())
            .spawn(move || {
                lower_this_thread_priority(prepare.nice, "the snapshot opener");
                let options = OpenOptions { pages: Pages::Huge, ..OpenOptions::default() };
                let _ = done.send(Snapshot::open_with(&path, &options).map(|s| Served::prepare(s, prepare)));
            })
            .map_err(|e| ServeError::Config(format!("cannot start the snapshot opener: {e}")))?;
        let served = opened.await.map_err(|_| ServeError::Config("the snapshot opener stopped".into()))??;
        release_on(prepare.nice);
        let (markup, parts) = (&served.markup, &served.parts);
        if markup.n_not_kept > 0 || parts.n_not_kept > 0 {
            warn!(
                path = shown,
                n_templates = markup.n_not_kept,
                n_answer_parts = parts.n_not_kept,
                escaped_markup_bytes_max = prepare.escaped_markup_bytes_max,
                "markup and answer parts past escaped_markup_bytes_max are written on every answer"
            );
        }
        info!(
            path = shown,
            snapshot_id = served.id_hex(),
            escaped_markup_bytes = markup.bytes(),
            answer_parts_bytes = parts.bytes(),
            huge_page_bytes = ?served.huge_page_bytes(),
            "snapshot opened"
        );
        Ok(Arc::new(served))
    }

    /// Wraps an open snapshot, escaping its markup and writing its answer parts here, the
    /// markup first within `escaped_markup_bytes_max`, the parts within what it leaves.
    pub fn prepare(snapshot: Snapshot, prepare: Prepare) -> Served {
        let markup = EscapedMarkup::build(&snapshot, prepare.escaped_markup_bytes_max);
        let left = (prepare.escaped_markup_bytes_max as usize).saturating_sub(markup.bytes());
        let parts = AnswerParts::build(&snapshot, left);
        let id_hex = snapshot.header().id_hex();
        let facts = CreativeFacts::build(&snapshot);
        let native = NativeAssets::build(&snapshot);
        Served { snapshot: ManuallyDrop::new(snapshot), markup, parts, facts, native, id_hex }
    }

    /// The assets of creative `creative_idx`'s native markup, in its order; empty for a creative
    /// that is not native.
    pub fn native_assets(&self, creative_idx: u32) -> &[native::Offered] {
        self.native.get(creative_idx)
    }

    /// The OpenRTB protocol code of creative `creative_idx`'s VAST; 0 for other markup.
    pub fn vast_protocol(&self, creative_idx: u32) -> u8 {
        self.facts.vast.get(creative_idx as usize).copied().unwrap_or(0)
    }

    /// The [`crate::vast::shape`] of creative `creative_idx`'s VAST; 0 for other markup.
    pub fn vast_shape(&self, creative_idx: u32) -> u8 {
        self.facts.vast_shape.get(creative_idx as usize).copied().unwrap_or(0)
    }

    /// The IAB creative attributes of creative `creative_idx`, bit `n` for attribute `n`: those
    /// the snapshot lists, 16 ("Ad Provides Skip Button") for VAST with a `skipoffset`, and those
    /// its HTML's video and audio show ([`html_attrs`]).
    pub fn creative_attrs(&self, creative_idx: u32) -> u32 {
        self.facts.attrs.get(creative_idx as usize).copied().unwrap_or(0)
    }

    /// The OpenRTB banner types of creative `creative_idx`'s HTML, bit `n` for type `n`
    /// ([`html_facts`]); 0 for other markup.
    pub fn banner_types(&self, creative_idx: u32) -> u32 {
        self.facts.html.get(creative_idx as usize).map_or(0, |&html| (html & !LOADS_MRAID) as u32)
    }

    /// Whether creative `creative_idx`'s HTML loads `mraid.js`, so that only a container that
    /// offers MRAID can show it ([`html_facts`]).
    pub fn loads_mraid(&self, creative_idx: u32) -> bool {
        self.facts.html.get(creative_idx as usize).is_some_and(|&html| html & LOADS_MRAID != 0)
    }

    /// Whether creative `creative_idx` loads only over https: every asset URL is `https://` and
    /// its markup names no `http://` URL that gets loaded ([`names_http`]). An OpenRTB impression
    /// with `secure` 1 takes only these.
    pub fn creative_is_secure(&self, creative_idx: u32) -> bool {
        let (word, bit) = (creative_idx as usize / 64, creative_idx % 64);
        self.facts.insecure.get(word).is_some_and(|w| w & (1 << bit) == 0)
    }

    /// The snapshot id as answers carry it.
    pub fn id_hex(&self) -> &str {
        &self.id_hex
    }

    /// The markup of creative `creative_idx` escaped as JSON string contents and split at its
    /// placeholders (for [`render::render_compiled`]), unless it did not fit within
    /// `escaped_markup_bytes_max`.
    pub fn escaped_markup(&self, creative_idx: u32) -> Option<(&[u8], &[Piece])> {
        self.markup.get(creative_idx)
    }

    /// Bytes of escaped markup kept (text and pieces).
    pub fn escaped_markup_bytes(&self) -> usize {
        self.markup.bytes()
    }

    /// Creative `creative_idx`'s answer head ([`crate::answer`]), unless it did not fit.
    pub fn answer_head(&self, creative_idx: u32) -> Option<&[u8]> {
        self.parts.head(creative_idx)
    }

    /// Campaign `campaign_idx`'s answer tail ([`crate::answer`]), unless it did not fit.
    pub fn answer_tail(&self, campaign_idx: u32) -> Option<&[u8]> {
        self.parts.tail(campaign_idx)
    }

    /// Bytes of answer parts kept.
    pub fn answer_parts_bytes(&self) -> usize {
        self.parts.bytes()
    }
}

impl Deref for Served {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// The assets of each native creative's markup ([`native::offered`]), read once from the markup
/// rendered with placeholder tracking URLs (URLs change no asset's kind, length or size), so that
/// a decision matches a native request against them without parsing JSON.
#[derive(Default)]
struct NativeAssets {
    assets: Vec<native::Offered>,
    /// Per creative index: start and count in `assets`.
    spans: Vec<(u32, u8)>,
}

impl NativeAssets {
    fn build(s: &Snapshot) -> NativeAssets {
        let creatives = &s.archive().creatives;
        let mut native = NativeAssets { spans: Vec::with_capacity(creatives.len()), ..Default::default() };
        let url = |path| TrackingUrl { base: "https://adsnap.invalid", path, token: "" };
        let fill = Fill { click_url: url("/v1/click?t="), impression_url: url("/v1/imp?t="), campaign_id: 0 };
        let mut markup = String::new();
        for creative in creatives.iter() {
            let start = native.assets.len();
            if creative.markup_kind.get() == MarkupKind::NativeJson {
                markup.clear();
                render::render(s, creative, &fill, &mut markup);
                native.assets.extend(native::offered(&markup));
            }
            // `offered` reads at most NATIVE_ASSETS_MAX (32) assets.
            let n = (native.assets.len() - start) as u8;
            native.spans.push((u32::try_from(start).unwrap_or(u32::MAX), n));
        }
        native
    }

    fn get(&self, creative_idx: u32) -> &[native::Offered] {
        let Some(&(start, n)) = self.spans.get(creative_idx as usize) else { return &[] };
        self.assets.get(start as usize..start as usize + n as usize).unwrap_or_default()
    }
}

/// Whether markup names a plain-http URL that a player or browser would load (the scheme in any
/// case). URLs that only name something are left out: XML namespaces (`xmlns="http://…"`,
/// `xmlns:xsi=…`), schema locations (`xsi:schemaLocation=…`) and document type declarations
/// (`<!DOCTYPE html PUBLIC … "http://…">`), which VAST and XHTML carry and nothing fetches.
fn names_http(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(6))
        .filter(|&i| bytes[i..i + 7].eq_ignore_ascii_case(b"http://"))
        .any(|i| !only_names(&bytes[..i]))
}

/// Whether a URL that starts right after `before` is an identifier nothing loads: the value of an
/// `xmlns` or `schemaLocation` attribute, or inside a `<!DOCTYPE …>`.
fn only_names(before: &[u8]) -> bool {
    let last_open = before.iter().rposition(|&b| b == b'<');
    if let Some(open) = last_open {
        let tag = &before[open..];
        if tag.len() >= 9 && tag[..9].eq_ignore_ascii_case(b"<!DOCTYPE") && !tag.contains(&b'>') {
            return true;
        }
    }
    // An attribute value: a quote, then `=` (spaces allowed around it), then the name.
    let trimmed =
        |b: &[u8]| -> usize { b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(0, |p| p + 1) };
    let Some((&quote, rest)) = before.split_last() else { return false };
    if quote != b'"' && quote != b'\'' {
        return false;
    }
    let rest = &rest[..trimmed(rest)];
    let Some((&b'=', rest)) = rest.split_last() else { return false };
    let rest = &rest[..trimmed(rest)];
    let name_start =
        rest.iter().rposition(|c| !(c.is_ascii_alphanumeric() || b":_.-".contains(c))).map_or(0, |p| p + 1);
    let name = &rest[name_start..];
    let lower = |b: &[u8]| b.to_ascii_lowercase();
    let name = lower(name);
    name == b"xmlns" || name.starts_with(b"xmlns:") || name.ends_with(b"schemalocation")
}

/// IAB creative attributes that markup shows: 1 and 2, audio that plays by itself or when the
/// user starts it; 6 and 7, the same for video in the ad; 16, "Ad Provides Skip Button".
const ATTR_AUDIO_AUTO_PLAY: u32 = 1;
const ATTR_AUDIO_USER_INITIATED: u32 = 2;
const ATTR_VIDEO_AUTO_PLAY: u32 = 6;
const ATTR_VIDEO_USER_INITIATED: u32 = 7;
const ATTR_SKIP_BUTTON: u32 = 16;

/// The IAB creative attributes an HTML creative's markup shows, whether its catalog entry lists
/// them or not: a `<video>` or `<audio>` element, which plays by itself when it has `autoplay`
/// (6 or 1) and when the user starts it otherwise (7 or 2).
pub fn html_attrs(html: &str) -> u32 {
    let mut attrs = 0;
    for (name, auto, user) in [
        ("<video", ATTR_VIDEO_AUTO_PLAY, ATTR_VIDEO_USER_INITIATED),
        ("<audio", ATTR_AUDIO_AUTO_PLAY, ATTR_AUDIO_USER_INITIATED),
    ] {
        for tag in start_tags(html, name) {
            attrs |= 1 << if has_attribute(tag, "autoplay") { auto } else { user };
        }
    }
    attrs
}

/// The start tags named `name` (with its `<`, any case) in `html`, each up to its `>`.
fn start_tags<'h>(html: &'h str, name: &'static str) -> impl Iterator<Item = &'h str> {
    let bytes = html.as_bytes();
    (0..bytes.len().saturating_sub(name.len() - 1))
        .filter(move |&at| bytes[at..at + name.len()].eq_ignore_ascii_case(name.as_bytes()))
        .filter(move |&at| {
            bytes.get(at + name.len()).is_none_or(|&c| c.is_ascii_whitespace() || c == b'>' || c == b'/')
        })
        .map(move |at| {
            let tag = &bytes[at..];
            let end = tag.iter().position(|&c| c == b'>').unwrap_or(tag.len());
            // `<` and `>` are ASCII, so both ends fall on character boundaries.
            &html[at..at + end]
        })
}

/// Whether an HTML start tag has the attribute `name` (a boolean attribute such as `autoplay`
/// needs no value), any case.
fn has_attribute(tag: &str, name: &str) -> bool {
    let bytes = tag.as_bytes();
    (1..bytes.len().saturating_sub(name.len() - 1)).any(|at| {
        bytes[at - 1].is_ascii_whitespace()
            && bytes[at..at + name.len()].eq_ignore_ascii_case(name.as_bytes())
            && bytes.get(at + name.len()).is_none_or(|&c| c.is_ascii_whitespace() || c == b'=' || c == b'/')
    })
}

/// The key of a creative's markup in the snapshot's strings: creatives that share a template
/// share it, so what is read from a template is read once.
fn template_key(creative: &ArchivedCreative) -> (u64, u32) {
    (creative.markup.offset.to_native(), creative.markup.len.to_native())
}

/// In [`html_facts`]: the HTML loads `mraid.js`.
const LOADS_MRAID: u8 = 1 << 7;

/// What an HTML creative's markup says of it, in one byte:
/// - the OpenRTB banner types (list "Banner Ad Types") it is, bit `n` for type `n`: 3
///   (JavaScript) when it has a `<script>`, 4 (iframe) when it has an `<iframe>`, and 2 (XHTML
///   banner) when it has neither. Type 1 (XHTML text ad) is never assumed: markup does not tell
///   a text ad from a banner whose image is a CSS background;
/// - [`LOADS_MRAID`] when it names `mraid.js`, the script an app's ad container injects to offer
///   MRAID: such an ad works only in a container that offers it.
pub fn html_facts(html: &str) -> u8 {
    let has = |tag: &[u8]| html.as_bytes().windows(tag.len()).any(|w| w.eq_ignore_ascii_case(tag));
    let types = u8::from(has(b"<script")) << 3 | u8::from(has(b"<iframe")) << 4;
    let types = if types == 0 { 1 << 2 } else { types };
    types | if has(b"mraid.js") { LOADS_MRAID } else { 0 }
}

/// What each creative's markup, assets and attributes are, for the checks of a slot's fit (OpenRTB
/// impressions, and SDK requests for ad units that block attributes), read in one pass.
#[derive(Default)]
struct CreativeFacts {
    /// One bit per creative: set when its markup or an asset loads over plain http.
    insecure: Vec<u64>,
    /// Per creative: the OpenRTB protocol code of its VAST ([`crate::vast::protocol_of`]); 0 for
    /// other markup.
    vast: Vec<u8>,
    /// Per creative: its VAST's [`crate::vast::shape`]; 0 for other markup.
    vast_shape: Vec<u8>,
    /// Per creative: its IAB creative attributes, listed in the snapshot or read from its markup.
    attrs: Vec<u32>,
    /// Per creative: its [`html_facts`] when it is HTML, else 0.
    html: Vec<u8>,
}

/// What is read once from a template that creatives share.
#[derive(Clone, Copy)]
struct TemplateFacts {
    /// It names a plain-http URL that gets loaded.
    insecure: bool,
    /// Its VAST protocol code.
    vast: u8,
    /// Its VAST's [`crate::vast::shape`].
    vast_shape: u8,
    /// Its [`html_facts`] when it is HTML.
    html: u8,
    /// The creative attributes it shows ([`html_attrs`], a VAST skip offset).
    attrs: u32,
}

impl CreativeFacts {
    fn build(s: &Snapshot) -> CreativeFacts {
        let creatives = &s.archive().creatives;
        let mut facts = CreativeFacts {
            insecure: vec![0; creatives.len().div_ceil(64)],
            vast: Vec::with_capacity(creatives.len()),
            vast_shape: Vec::with_capacity(creatives.len()),
            attrs: Vec::with_capacity(creatives.len()),
            html: Vec::with_capacity(creatives.len()),
        };
        let mut of_template: HashMap<(u64, u32), TemplateFacts> = HashMap::new();
        for (idx, creative) in creatives.iter().enumerate() {
            let kind = creative.markup_kind.get();
            let template = *of_template.entry(template_key(creative)).or_insert_with(|| {
                let markup = s.str(&creative.markup);
                let (vast, html) = (kind == MarkupKind::Vast, kind == MarkupKind::Html);
                let vast_shape = if vast { crate::vast::shape(markup) } else { 0 };
                let skippable = vast_shape & crate::vast::SKIPPABLE != 0;
                TemplateFacts {
                    insecure: names_http(markup),
                    vast: if vast { crate::vast::protocol_of(markup) } else { 0 },
                    vast_shape,
                    html: if html { html_facts(markup) } else { 0 },
                    attrs: u32::from(skippable) << ATTR_SKIP_BUTTON
                        | if html { html_attrs(markup) } else { 0 },
                }
            });
            let assets_insecure = s.pool_str(&creative.assets).iter().any(|url| {
                let url = s.str(url).as_bytes();
                !url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"https://"))
            });
            if template.insecure || assets_insecure {
                facts.insecure[idx / 64] |= 1 << (idx % 64);
            }
            facts.vast.push(template.vast);
            facts.vast_shape.push(template.vast_shape);
            facts.attrs.push(s.creative_attrs(idx) | template.attrs);
            facts.html.push(template.html);
        }
        facts
    }
}

/// Unmapping a snapshot of a hundred megabytes whose pages are mapped takes milliseconds; the
/// last request to let go of a replaced snapshot would pay them. The snapshot and its escaped
/// markup go to the releasing thread instead (dropped here when there is none).
impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: `self` is being dropped, so nothing reads `self.snapshot` again.
        let snapshot = unsafe { ManuallyDrop::take(&mut self.snapshot) };
        let released = Released {
            snapshot,
            markup: std::mem::take(&mut self.markup),
            parts: std::mem::take(&mut self.parts),
        };
        if let Some(releaser) = RELEASER.get() {
            let _ = releaser.send(released);
        }
    }
}

/// What a dropped [`Served`] hands to the releasing thread.
struct Released {
    #[allow(dead_code, reason = "held only to be dropped on the releasing thread")]
    snapshot: Snapshot,
    #[allow(dead_code, reason = "held only to be dropped on the releasing thread")]
    markup: EscapedMarkup,
    #[allow(dead_code, reason = "held only to be dropped on the releasing thread")]
    parts: AnswerParts,
}

static RELEASER: OnceLock<mpsc::Sender<Released>> = OnceLock::new();

/// Starts the releasing thread at `nice`, once per process. When it cannot start, snapshots
/// are released by whoever drops them last.
fn release_on(nice: i8) {
    RELEASER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Released>();
        let started = std::thread::Builder::new().name("snapshot-unmap".into()).spawn(move || {
            lower_this_thread_priority(nice, "the snapshot releaser");
            for released in receiver {
                drop(released);
            }
        });
        if let Err(err) = started {
            warn!(error = %err, "no snapshot releasing thread: replaced snapshots are unmapped by requests");
        }
        sender
    });
}

/// Each creative's markup escaped as the contents of a JSON string, as
/// [`crate::json::push_escaped`] writes it, and split at its placeholders once, so that an
/// answer copies the template's text instead of escaping and searching kilobytes of HTML or VAST
/// per request ([`render::render_compiled`]). A template shared by creatives is kept once.
///
/// Limits: at most `bytes_max` bytes of escaped text and pieces per snapshot (markup past it, in
/// the snapshot's creative order, is rendered and escaped per request as before), plus 8 bytes
/// per creative.
#[derive(Default)]
pub struct EscapedMarkup {
    text: Vec<u8>,
    pieces: Vec<Piece>,
    /// Per creative index: start and count in `pieces`; [`NOT_KEPT`] when not kept.
    spans: Vec<(u32, u32)>,
    /// Distinct templates that did not fit.
    n_not_kept: usize,
}

const NOT_KEPT: (u32, u32) = (u32::MAX, 0);

impl EscapedMarkup {
    pub fn build(s: &Snapshot, bytes_max: u32) -> EscapedMarkup {
        let creatives = &s.archive().creatives;
        let mut markup = EscapedMarkup { spans: Vec::with_capacity(creatives.len()), ..Default::default() };
        let mut kept: HashMap<(u64, u32), (u32, u32)> = HashMap::new();
        for creative in creatives.iter() {
            let template = s.str(&creative.markup);
            let span =
                *kept.entry(template_key(creative)).or_insert_with(|| markup.compile(template, bytes_max));
            markup.spans.push(span);
        }
        markup
    }

    /// Compiles one template when it fits; its span in `pieces`, or [`NOT_KEPT`].
    fn compile(&mut self, template: &str, bytes_max: u32) -> (u32, u32) {
        let (n_text, n_pieces) = (self.text.len(), self.pieces.len());
        let compiled = render::compile_escaped(template, &mut self.text, &mut self.pieces);
        let span = (u32::try_from(n_pieces), u32::try_from(self.pieces.len() - n_pieces));
        match span {
            (Ok(start), Ok(len)) if compiled && self.bytes() <= bytes_max as usize => (start, len),
            // Whatever stops it, a template not kept leaves nothing behind and is counted.
            _ => {
                self.text.truncate(n_text);
                self.pieces.truncate(n_pieces);
                self.n_not_kept += 1;
                NOT_KEPT
            }
        }
    }

    /// Bytes of escaped text and pieces kept.
    pub fn bytes(&self) -> usize {
        self.text.len() + self.pieces.len() * render::PIECE_BYTES
    }

    /// The escaped text and pieces of creative `creative_idx`'s markup, when kept.
    pub fn get(&self, creative_idx: u32) -> Option<(&[u8], &[Piece])> {
        let &(start, len) = self.spans.get(creative_idx as usize)?;
        if (start, len) == NOT_KEPT {
            return None;
        }
        let pieces = self.pieces.get(start as usize..start as usize + len as usize)?;
        Some((&self.text, pieces))
    }
}

/// Each creative's answer head and each campaign's tail ([`crate::answer`]: the members before
/// the markup, and those after the tracking URLs up to the price), written once, so that an
/// answer copies two runs of bytes instead of writing a dozen members from records and strings
/// spread over the mapping.
///
/// Limits: at most `bytes_max` bytes (what `escaped_markup_bytes_max` leaves after the markup),
/// heads first in the snapshot's creative order, then tails in its campaign order; those past
/// it are written per answer as before. Plus 8 bytes per creative and per campaign.
#[derive(Default)]
pub struct AnswerParts {
    text: Vec<u8>,
    /// Per creative index: start in `text` and length; [`PART_NOT_KEPT`] when not kept.
    heads: Vec<(u32, u16)>,
    /// Per campaign index, as `heads`.
    tails: Vec<(u32, u16)>,
    /// Parts that did not fit.
    n_not_kept: usize,
}

const PART_NOT_KEPT: (u32, u16) = (u32::MAX, 0);

impl AnswerParts {
    pub fn build(s: &Snapshot, bytes_max: usize) -> AnswerParts {
        let a = s.archive();
        let mut parts = AnswerParts {
            heads: Vec::with_capacity(a.creatives.len()),
            tails: Vec::with_capacity(a.campaigns.len()),
            ..Default::default()
        };
        for creative in a.creatives.iter() {
            let span = parts.keep(bytes_max, |text| write_head(text, s, creative));
            parts.heads.push(span);
        }
        for campaign in a.campaigns.iter() {
            let span = parts.keep(bytes_max, |text| write_tail(text, s, campaign));
            parts.tails.push(span);
        }
        parts.text.shrink_to_fit();
        parts
    }

    /// Writes one part and keeps it when it fits: its span, or [`PART_NOT_KEPT`].
    fn keep(&mut self, bytes_max: usize, write: impl FnOnce(&mut Vec<u8>)) -> (u32, u16) {
        let start = self.text.len();
        write(&mut self.text);
        match (u32::try_from(start), u16::try_from(self.text.len() - start)) {
            (Ok(start), Ok(len)) if self.text.len() <= bytes_max => (start, len),
            _ => {
                self.text.truncate(start);
                self.n_not_kept += 1;
                PART_NOT_KEPT
            }
        }
    }

    /// Bytes of parts kept.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// Creative `creative_idx`'s head, when kept.
    pub fn head(&self, creative_idx: u32) -> Option<&[u8]> {
        self.part(self.heads.get(creative_idx as usize)?)
    }

    /// Campaign `campaign_idx`'s tail, when kept.
    pub fn tail(&self, campaign_idx: u32) -> Option<&[u8]> {
        self.part(self.tails.get(campaign_idx as usize)?)
    }

    fn part(&self, &(start, len): &(u32, u16)) -> Option<&[u8]> {
        if (start, len) == PART_NOT_KEPT {
            return None;
        }
        self.text.get(start as usize..start as usize + usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::{html_attrs, html_facts, names_http, LOADS_MRAID};

    #[test]
    fn video_and_audio_in_html_are_attributes_whether_listed_or_not() {
        assert_eq!(html_attrs(r#"<video src="a.mp4" autoplay muted playsinline></video>"#), 1 << 6);
        assert_eq!(html_attrs(r#"<VIDEO controls src="a.mp4">"#), 1 << 7);
        assert_eq!(html_attrs(r#"<audio AUTOPLAY/><audio src=x>"#), 1 << 1 | 1 << 2);
        assert_eq!(html_attrs(r#"<video data-autoplay="1" src=x>"#), 1 << 7, "not the attribute");
        assert_eq!(html_attrs(r#"<videoplayer autoplay><img src="video.png" alt="<video">"#), 0);
        assert_eq!(html_attrs(r#"<a href="x"><img src="y"></a>"#), 0);
    }

    #[test]
    fn html_is_a_javascript_an_iframe_or_an_xhtml_banner_and_may_need_mraid() {
        assert_eq!(html_facts(r#"<a href="x"><img src="y"></a>"#), 1 << 2);
        assert_eq!(html_facts("<SCRIPT src=x></SCRIPT>"), 1 << 3);
        assert_eq!(html_facts("<iframe src=x></iframe>"), 1 << 4);
        assert_eq!(html_facts("<script>1</script><IFrame>"), 1 << 3 | 1 << 4);
        assert_eq!(html_facts("a script, not a tag; <scrip"), 1 << 2);
        assert_eq!(html_facts(r#"<script src="MRAID.js"></script>"#), 1 << 3 | LOADS_MRAID);
    }

    #[test]
    fn only_urls_that_load_count_as_plain_http() {
        for loads in [
            r#"<img src="http://cdn.example/a.png">"#,
            r#"<a href='HTTP://x.example'>"#,
            "<MediaFile><![CDATA[http://cdn.example/v.mp4]]></MediaFile>",
            r#"<script>fetch("http://x.example")</script>"#,
            r#"{"img":{"url":"http://cdn.example/i.png"}}"#,
            r#"<VAST xmlns="https://www.iab.com/VAST"><Impression>http://t.example/i</Impression>"#,
            r#"<a data-xmlns="x" href="http://x.example">"#,
        ] {
            assert!(names_http(loads), "{loads}");
        }
        for names in [
            r#"<VAST version="4.0" xmlns="http://www.iab.com/VAST">"#,
            r#"<VAST xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation = 'http://www.iab.com/VAST vast.xsd'>"#,
            r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">"#,
            r#"<html xmlns="http://www.w3.org/1999/xhtml"><img src="https://cdn.example/a.png"></html>"#,
            "https://only.example/secure",
            "http:/",
            "",
        ] {
            assert!(!names_http(names), "{names}");
        }
    }
}
