//! A snapshot as the server holds it: the verified mapping, and what is prepared from it once,
//! when it is opened, instead of on every request (each creative's markup escaped for JSON
//! answers). Opening, preparing and releasing a snapshot run on threads of their own at the
//! configured nice value, so a hot swap takes its CPU time from the request threads as little
//! as the machine allows.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use adsnap_events::lower_this_thread_priority;
use adsnap_snapshot::{OpenOptions, Pages, Snapshot};
use tracing::{info, warn};

use crate::error::ServeError;
use crate::render::{self, Piece};

/// What preparing a snapshot may use.
#[derive(Clone, Copy, Debug)]
pub struct Prepare {
    /// Nice value (0 to 19) of the opening and releasing threads.
    pub nice: i8,
    /// Bytes of escaped markup kept per snapshot at most; see [`EscapedMarkup`].
    pub escaped_markup_bytes_max: u32,
}

/// A verified snapshot and its escaped markup. Dereferences to the [`Snapshot`].
pub struct Served {
    /// Taken out only by `drop`.
    snapshot: ManuallyDrop<Snapshot>,
    markup: EscapedMarkup,
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
        let markup = &served.markup;
        if markup.n_not_kept > 0 {
            warn!(
                path = shown,
                n_templates = markup.n_not_kept,
                escaped_markup_bytes_max = prepare.escaped_markup_bytes_max,
                "markup past escaped_markup_bytes_max is escaped on every answer"
            );
        }
        info!(
            path = shown,
            snapshot_id = served.id_hex(),
            escaped_markup_bytes = markup.bytes(),
            huge_page_bytes = ?served.huge_page_bytes(),
            "snapshot opened"
        );
        Ok(Arc::new(served))
    }

    /// Wraps an open snapshot, escaping its markup here.
    pub fn prepare(snapshot: Snapshot, prepare: Prepare) -> Served {
        let markup = EscapedMarkup::build(&snapshot, prepare.escaped_markup_bytes_max);
        let id_hex = snapshot.header().id_hex();
        Served { snapshot: ManuallyDrop::new(snapshot), markup, id_hex }
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
}

impl Deref for Served {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// Unmapping a snapshot of a hundred megabytes whose pages are mapped takes milliseconds; the
/// last request to let go of a replaced snapshot would pay them. The snapshot and its escaped
/// markup go to the releasing thread instead (dropped here when there is none).
impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: `self` is being dropped, so nothing reads `self.snapshot` again.
        let snapshot = unsafe { ManuallyDrop::take(&mut self.snapshot) };
        let released = Released { snapshot, markup: std::mem::take(&mut self.markup) };
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
            let template = &creative.markup;
            let key = (template.offset.to_native(), template.len.to_native());
            let span = *kept.entry(key).or_insert_with(|| markup.compile(s.str(template), bytes_max));
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
