//! A/B testing. Traffic assignment: which slice of traffic (staging, an experiment's arm, or control) each
//! ad request belongs to, decided from the snapshot's experiment table.
//!
//! [`assign`] is a pure function of the user's key and the table; it runs on every request, so it
//! allocates nothing, takes no lock and cannot panic. It follows `docs/catalog.md` ("Traffic
//! split and experiments") in three independent hashes of the key:
//!
//! 1. a **staging bucket** in `0..BUCKETS` (seeded by the table's salt and a staging domain):
//!    below `staging_share_bp` means [`Slice::Staging`];
//! 2. otherwise a **production bucket** (seeded by the table's salt and a production domain): the
//!    experiment whose `[bucket_start, bucket_end)` holds it takes the user, and no experiment
//!    means [`Slice::Control`];
//! 3. inside an experiment, an **arm bucket** (seeded by the experiment's own salt and an arm
//!    domain): the arm whose range holds it.
//!
//! Because each decision has its own hash, resizing one experiment moves only the users in the
//! buckets it gains or gives up: staging, other experiments and the arms within an experiment
//! stay where they were.
//!
//! [`Assignment::code`] packs an assignment into the number that events and tracking tokens carry.
//!
//! [`analysis`] reads the events those codes end up in and reports each experiment arm and
//! staging against control.
//!
//! [`BUCKETS`]: adsnap_snapshot::schema::BUCKETS

pub mod analysis;
mod assign;
mod code;
#[cfg(test)]
mod tests;

pub use assign::{assign, Assignment, Slice, UserKey};
pub use code::CODE_BITS as ASSIGNMENT_CODE_BITS;
