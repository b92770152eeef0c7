//! Streaming aggregation: events in, one pass, per-user counters per group (staging, control,
//! each experiment arm) and per-group moments out. Events are never held: memory is one small
//! record per (group, user) seen, plus a record per group and per snapshot id.

use std::collections::HashMap;

use adsnap_events::{Event, EventKind};
use serde::Serialize;

use super::shards::Users;
use super::stats::Moments;
use super::user_table::Update;
use crate::{Assignment, Slice};

/// Distinct groups (staging, control, experiment arms) tracked at most. A real table has at most
/// 2 + 3 × 8; anything beyond this limit can only come from corrupt assignment codes, and those
/// events are counted as bad instead.
pub const GROUPS_MAX: usize = 1024;
/// Distinct snapshot ids tracked at most; events of further ids are counted as untracked, which
/// the report treats like events from an unknown snapshot.
pub const SNAPSHOT_IDS_MAX: usize = 4096;
/// Assignment codes remembered in the scanned list (2 × (staging, control and 3 × 8 arms) fit).
const CODES_SCANNED_MAX: usize = 64;
/// Snapshot ids kept in the scanned list before the hash map.
const SNAPSHOTS_SCANNED_MAX: usize = 8;

/// A group of traffic compared in a report, named by ids (stable across snapshots), not by the
/// indexes a single snapshot's table gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "slice", rename_all = "snake_case")]
pub enum GroupKey {
    Control,
    Staging,
    Arm { experiment_id: u32, arm_id: u32 },
}

impl GroupKey {
    fn of(slice: Slice) -> GroupKey {
        match slice {
            Slice::Control => GroupKey::Control,
            Slice::Staging => GroupKey::Staging,
            Slice::Experiment { experiment_id, arm_id, .. } => GroupKey::Arm { experiment_id, arm_id },
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupKey::Control => f.write_str("control"),
            GroupKey::Staging => f.write_str("staging"),
            GroupKey::Arm { experiment_id, arm_id } => write!(f, "experiment-{experiment_id}/arm-{arm_id}"),
        }
    }
}

/// The half-open time range `[from_unix_ms, to_unix_ms)` a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
}

impl TimeRange {
    /// A range that holds at least one millisecond.
    pub fn new(from_unix_ms: i64, to_unix_ms: i64) -> Result<TimeRange, super::AnalysisError> {
        if from_unix_ms >= to_unix_ms {
            return Err(super::AnalysisError::BadRange { from_unix_ms, to_unix_ms });
        }
        Ok(TimeRange { from_unix_ms, to_unix_ms })
    }

    pub fn contains(&self, time_unix_ms: i64) -> bool {
        (self.from_unix_ms..self.to_unix_ms).contains(&time_unix_ms)
    }
}

/// Counts of every event of a group in range, anonymous and key-less ones included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub n_decisions: u64,
    pub n_filled: u64,
    pub n_impressions: u64,
    pub n_clicks: u64,
    pub n_wins: u64,
    pub n_bills: u64,
    pub n_losses: u64,
    pub n_installs: u64,
    pub revenue_micros: i64,
}

impl EventCounts {
    fn add(&mut self, event: &Event<'_>) {
        let n = match event.kind {
            EventKind::Decision => {
                self.n_filled += u64::from(event.filled());
                &mut self.n_decisions
            }
            EventKind::Impression => &mut self.n_impressions,
            EventKind::Click => &mut self.n_clicks,
            EventKind::Win => &mut self.n_wins,
            EventKind::Bill => &mut self.n_bills,
            EventKind::Loss => &mut self.n_losses,
            EventKind::Install => &mut self.n_installs,
        };
        *n += 1;
        self.revenue_micros = self.revenue_micros.saturating_add(event.revenue_micros);
    }
}

/// What happened to the events read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InputCounts {
    pub n_events_read: u64,
    /// Outside the time range: skipped.
    pub n_events_out_of_range: u64,
    /// In range, from a test request (an exchange's OpenRTB `test` 1): skipped, as test
    /// traffic is not part of any experiment's results.
    pub n_events_test: u64,
    /// In range and in a group's totals.
    pub n_events_in_range: u64,
    /// In range, assigned per request (no stable user): in totals, left out of per-user metrics.
    pub n_events_anonymous: u64,
    /// In range, from a user-assigned slice but without a user key (privacy): in totals, left
    /// out of per-user metrics.
    pub n_events_without_user_key: u64,
    /// In range, with an assignment code that is not a code (or past [`GROUPS_MAX`]): skipped.
    pub n_events_bad_assignment: u64,
    /// In range, from a snapshot id past [`SNAPSHOT_IDS_MAX`].
    pub n_events_snapshot_untracked: u64,
}

/// Events in range of one snapshot id, by the slice they were assigned to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotTally {
    pub n_events: u64,
    pub n_staging_events: u64,
}

/// The streaming aggregator. Feed it every event with [`Aggregator::push`] (or
/// [`Aggregator::extend`]), then [`Aggregator::finish`].
pub struct Aggregator {
    range: TimeRange,
    groups: Vec<GroupKey>,
    group_idx: HashMap<GroupKey, u16>,
    /// Codes seen and what they resolved to, scanned before hashing: a table yields a few dozen
    /// codes, and scanning them beats hashing a u128 on every event.
    recent_codes: Vec<(u128, Option<(u16, bool)>)>,
    totals: Vec<EventCounts>,
    users: Users,
    /// The first snapshot ids seen; later ones go to `snapshots`.
    recent_snapshots: Vec<(u64, SnapshotTally)>,
    snapshots: HashMap<u64, SnapshotTally>,
    input: InputCounts,
    time_min_ms: Option<i64>,
    time_max_ms: Option<i64>,
}

impl Aggregator {
    /// An aggregator that keeps every counter on this thread.
    pub fn new(range: TimeRange) -> Aggregator {
        Aggregator::with_threads(range, 1)
    }

    /// An aggregator whose per-user counters are split by user key over `n_threads` threads
    /// (up to [`SHARDS_MAX`](super::SHARDS_MAX); 0 or 1 keeps them on this thread). This thread
    /// still decodes every event; the shards take the random memory traffic.
    pub fn with_threads(range: TimeRange, n_threads: usize) -> Aggregator {
        Aggregator {
            range,
            groups: Vec::new(),
            group_idx: HashMap::new(),
            recent_codes: Vec::with_capacity(CODES_SCANNED_MAX),
            totals: Vec::new(),
            users: Users::new(n_threads),
            recent_snapshots: Vec::new(),
            snapshots: HashMap::new(),
            input: InputCounts::default(),
            time_min_ms: None,
            time_max_ms: None,
        }
    }

    pub fn push(&mut self, event: &Event<'_>) {
        self.input.n_events_read += 1;
        if !self.range.contains(event.time_unix_ms) {
            self.input.n_events_out_of_range += 1;
            return;
        }
        if event.test {
            self.input.n_events_test += 1;
            return;
        }
        let Some((group, anonymous)) = self.resolve(event.assignment_code) else {
            self.input.n_events_bad_assignment += 1;
            return;
        };
        self.input.n_events_in_range += 1;
        self.time_min_ms = Some(self.time_min_ms.map_or(event.time_unix_ms, |t| t.min(event.time_unix_ms)));
        self.time_max_ms = Some(self.time_max_ms.map_or(event.time_unix_ms, |t| t.max(event.time_unix_ms)));
        self.tally_snapshot(event.snapshot_id, self.groups[usize::from(group)] == GroupKey::Staging);
        self.totals[usize::from(group)].add(event);
        match (anonymous, event.user_key) {
            (true, _) => self.input.n_events_anonymous += 1,
            (false, None) => self.input.n_events_without_user_key += 1,
            (false, Some(user_key)) => self.users.push(Update {
                group,
                user_key,
                kind: event.kind,
                filled: event.filled(),
                revenue_micros: event.revenue_micros,
            }),
        }
    }

    fn resolve(&mut self, code: u128) -> Option<(u16, bool)> {
        if let Some((_, resolved)) = self.recent_codes.iter().find(|(c, _)| *c == code) {
            return *resolved;
        }
        let resolved =
            Assignment::from_code(code).and_then(|a| Some((self.group(GroupKey::of(a.slice))?, a.anonymous)));
        if self.recent_codes.len() < CODES_SCANNED_MAX {
            self.recent_codes.push((code, resolved));
        }
        resolved
    }

    fn group(&mut self, key: GroupKey) -> Option<u16> {
        if let Some(&idx) = self.group_idx.get(&key) {
            return Some(idx);
        }
        if self.groups.len() >= GROUPS_MAX {
            return None;
        }
        let idx = self.groups.len() as u16;
        self.groups.push(key);
        self.totals.push(EventCounts::default());
        self.group_idx.insert(key, idx);
        Some(idx)
    }

    fn tally_snapshot(&mut self, snapshot_id: u64, staging: bool) {
        // A range holds a handful of snapshots: scan the first few before hashing.
        if let Some((_, tally)) = self.recent_snapshots.iter_mut().find(|(id, _)| *id == snapshot_id) {
            tally.n_events += 1;
            tally.n_staging_events += u64::from(staging);
            return;
        }
        if self.recent_snapshots.len() < SNAPSHOTS_SCANNED_MAX && !self.snapshots.contains_key(&snapshot_id) {
            self.recent_snapshots
                .push((snapshot_id, SnapshotTally { n_events: 1, n_staging_events: u64::from(staging) }));
            return;
        }
        let n_tracked = self.snapshots.len() + self.recent_snapshots.len();
        let tally = match self.snapshots.get_mut(&snapshot_id) {
            Some(tally) => tally,
            None if n_tracked >= SNAPSHOT_IDS_MAX => {
                self.input.n_events_snapshot_untracked += 1;
                return;
            }
            None => self.snapshots.entry(snapshot_id).or_default(),
        };
        tally.n_events += 1;
        tally.n_staging_events += u64::from(staging);
    }

    /// The moments of every group, sorted by group (control, staging, then arms by ids).
    pub fn finish(mut self) -> Aggregates {
        self.current()
    }

    /// The aggregates of the events pushed so far, leaving the aggregator running: a look at
    /// results in the middle of the stream. Costs one pass over the users.
    pub fn current(&mut self) -> Aggregates {
        let moments = self.users.moments(self.groups.len());
        let mut groups: Vec<GroupAggregate> = self
            .groups
            .iter()
            .zip(moments)
            .zip(&self.totals)
            .map(|((&key, moments), events)| GroupAggregate { key, moments, events: *events })
            .collect();
        groups.sort_by_key(|g| g.key);
        let mut snapshots: Vec<(u64, SnapshotTally)> = self
            .snapshots
            .iter()
            .map(|(id, t)| (*id, *t))
            .chain(self.recent_snapshots.iter().copied())
            .collect();
        snapshots.sort_by_key(|(id, _)| *id);
        Aggregates {
            range: self.range,
            input: self.input,
            groups,
            snapshots,
            time_min_ms: self.time_min_ms,
            time_max_ms: self.time_max_ms,
        }
    }
}

impl<'a> Extend<Event<'a>> for Aggregator {
    fn extend<I: IntoIterator<Item = Event<'a>>>(&mut self, events: I) {
        for event in events {
            self.push(&event);
        }
    }
}

/// One group's aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupAggregate {
    pub key: GroupKey,
    /// Over the group's users (with a key, not anonymous): `moments.n` is the number of users.
    pub moments: Moments,
    /// Every event of the group in range.
    pub events: EventCounts,
}

/// Everything a report is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregates {
    pub range: TimeRange,
    pub input: InputCounts,
    pub groups: Vec<GroupAggregate>,
    /// Events in range per snapshot id, sorted by id.
    pub snapshots: Vec<(u64, SnapshotTally)>,
    pub time_min_ms: Option<i64>,
    pub time_max_ms: Option<i64>,
}

impl Aggregates {
    pub fn group(&self, key: GroupKey) -> Option<&GroupAggregate> {
        self.groups.iter().find(|g| g.key == key)
    }
}
