//! The Aerospike backend: one record per user in `namespace/set`, keyed by the integer user key,
//! with a bin per field, map bins for installed apps and frequency counters, and every update
//! an atomic `operate()` of increments and map writes. Record TTL is the idle TTL: every write
//! sets it again. See docs/profiles.md for the bin layout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerospike::operations::maps::{self, MapOrder, MapPolicy, MapReturnType, MapWriteFlags};
use aerospike::operations::{self, Operation};
use aerospike::{
    Bin, Bins, Client, ClientPolicy, Error as AsError, Expiration, Key, ReadPolicy, Record,
    RecordExistsAction, ResultCode, Value, WritePolicy,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::ProfilesConfig;
use crate::error::{MissReason, ProfileError, Retry};
use crate::metrics::{Dropped, ProfilesHealth, StoreMetrics};
use crate::profile::{
    window_start, FrequencyCounter, Profile, ProfileFields, ProfileUpdate, UserKey, CODE_LIMIT,
    FREQUENCY_COUNTERS_MAX, INSTALLED_MAX, SEGMENTS_MAX,
};
use crate::record::RECORD_VERSION;
use crate::ProfileRead;

/// Bin names (Aerospike allows 15 bytes).
pub mod bin {
    pub const VERSION: &str = "v";
    pub const COUNTRY: &str = "country";
    pub const LANGUAGE: &str = "lang";
    pub const OS: &str = "os";
    pub const LAST_SEEN: &str = "last_seen";
    pub const IMPRESSIONS: &str = "n_imp";
    pub const CLICKS: &str = "n_clk";
    pub const INSTALLS: &str = "n_ins";
    pub const SEGMENTS: &str = "segs";
    /// Map: bundle hash (as a signed integer) -> 1.
    pub const APPS: &str = "apps";
    /// Map: `"{campaign_id}:{period_s}:{window_start}"` -> impressions in that window.
    pub const FREQUENCY: &str = "freq";
}

const MAP_POLICY: MapPolicy = MapPolicy::new(MapOrder::KeyOrdered, MapWriteFlags::DEFAULT);

enum Message {
    Update(ProfileUpdate),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    client: Client,
    config: ProfilesConfig,
    metrics: StoreMetrics,
    read_policy: ReadPolicy,
    write_policy: WritePolicy,
    last_error: Mutex<Option<String>>,
}

/// A connected Aerospike backend with its writer task.
pub struct AerospikeStore {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Message>,
}

fn as_error(context: &'static str, error: &AsError) -> ProfileError {
    let retry = if error.server_result_code().is_some() { Retry::WillNotHelp } else { Retry::MayHelp };
    ProfileError::Aerospike { context, message: error.to_string(), retry }
}

fn policies(config: &ProfilesConfig) -> (ClientPolicy, ReadPolicy, WritePolicy) {
    let a = &config.aerospike;
    // The server must start (and serve ads without profiles) while the cluster is down; the
    // client keeps looking for it in the background (`fail_if_not_connected: false`).
    let client = ClientPolicy {
        timeout: a.connect_timeout_ms as u32,
        max_conns_per_node: a.connections_per_node_max,
        fail_if_not_connected: false,
        seed_only_cluster: a.seed_only_cluster,
        ..ClientPolicy::default()
    };
    let mut read = ReadPolicy::default();
    read.base_policy.total_timeout = config.read_deadline_ms as u32;
    read.base_policy.socket_timeout = a.read_socket_timeout_ms as u32;
    read.base_policy.max_retries = a.read_retries_max;
    read.base_policy.sleep_between_retries = 0;
    let mut write = WritePolicy::default();
    write.base_policy.total_timeout = a.write_timeout_ms as u32;
    write.base_policy.socket_timeout = a.write_timeout_ms as u32;
    // Updates are increments: a retry after a timeout could apply one twice.
    write.base_policy.max_retries = 0;
    write.expiration = Expiration::Seconds(u32::try_from(config.idle_ttl_s).unwrap_or(u32::MAX));
    (client, read, write)
}

impl AerospikeStore {
    pub async fn open(
        config: &ProfilesConfig,
        metrics: StoreMetrics,
    ) -> Result<AerospikeStore, ProfileError> {
        let (client_policy, read_policy, write_policy) = policies(config);
        let client = Client::new(&client_policy, &config.aerospike.hosts)
            .await
            .map_err(|e| as_error("connecting to the seed hosts", &e))?;
        tracing::info!(hosts = %config.aerospike.hosts, connected = client.is_connected(), "aerospike profile store open");
        let shared = Arc::new(Shared {
            client,
            config: config.clone(),
            metrics,
            read_policy,
            write_policy,
            last_error: Mutex::new(None),
        });
        let (queue, receiver) = mpsc::channel(config.write_queue_len_max.max(1));
        tokio::spawn(write_loop(shared.clone(), receiver));
        Ok(AerospikeStore { shared, queue })
    }

    fn key(&self, user: UserKey) -> Result<Key, AsError> {
        let a = &self.shared.config.aerospike;
        Key::new(a.namespace.clone(), a.set.clone(), Value::Int(user.0 as i64))
    }

    pub async fn get(&self, user: UserKey) -> ProfileRead {
        let shared = &self.shared;
        let deadline = Duration::from_millis(shared.config.read_deadline_ms);
        let started = Instant::now();
        shared.metrics.backend_reads.inc();
        let read = async {
            let key = self.key(user)?;
            shared.client.get(&shared.read_policy, &key, Bins::All).await
        };
        let result = tokio::time::timeout(deadline, read).await;
        shared.metrics.backend_read_duration_s.observe(started.elapsed().as_secs_f64());
        let answer = match result {
            Err(_) => Err(MissReason::Deadline),
            Ok(Ok(record)) => decode(&record, shared.config.idle_ttl_s)
                .map(|profile| profile.map_or(ProfileRead::Absent, ProfileRead::Found)),
            Ok(Err(e)) if e.server_result_code() == Some(ResultCode::KeyNotFoundError) => {
                Ok(ProfileRead::Absent)
            }
            Ok(Err(e)) if matches!(e.kind(), aerospike::ErrorKind::Timeout) || e.is_client_timeout() => {
                Err(MissReason::Deadline)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "aerospike profile read failed");
                Err(MissReason::Unavailable)
            }
        };
        match answer {
            Ok(ProfileRead::Found(profile)) => {
                shared.metrics.found();
                ProfileRead::Found(profile)
            }
            Ok(_) => {
                shared.metrics.absent();
                ProfileRead::Absent
            }
            Err(reason) => {
                shared.metrics.miss(reason);
                ProfileRead::Unknown(reason)
            }
        }
    }

    pub fn record(&self, update: ProfileUpdate) {
        match self.queue.try_send(Message::Update(update)) {
            Ok(()) => self.shared.metrics.updates_queued.inc(),
            Err(_) => {
                self.shared.metrics.dropped(Dropped::QueueFull);
                0
            }
        };
    }

    /// Waits until every update queued before it has been written (or has failed).
    pub async fn flush(&self) -> Result<(), ProfileError> {
        let (reply, done) = oneshot::channel();
        self.queue.send(Message::Flush(reply)).await.map_err(|_| ProfileError::WriterStopped)?;
        done.await.map_err(|_| ProfileError::WriterStopped)?;
        match self.shared.last_error.lock().clone() {
            Some(message) => {
                Err(ProfileError::Aerospike { context: "writing updates", message, retry: Retry::MayHelp })
            }
            None => Ok(()),
        }
    }

    /// Deletes these users' records after every update queued before; returns how many
    /// existed. A delete is idempotent, so it is safe to retry after an error.
    pub async fn forget(&self, users: Vec<UserKey>) -> Result<usize, ProfileError> {
        self.flush().await?;
        let mut n_existed = 0;
        for user in users {
            let key = self.key(user).map_err(|e| as_error("making a key", &e))?;
            let existed = self.shared.client.delete(&self.shared.write_policy, &key).await;
            n_existed += usize::from(existed.map_err(|e| as_error("deleting a profile", &e))?);
        }
        Ok(n_existed)
    }

    /// Replaces whole records, `writes_in_flight_max` at a time.
    pub async fn import(&self, profiles: Vec<(UserKey, Profile)>) -> Result<usize, ProfileError> {
        let mut policy = self.shared.write_policy.clone();
        policy.record_exists_action = RecordExistsAction::Replace;
        let policy = Arc::new(policy);
        let permits = Arc::new(Semaphore::new(self.shared.config.aerospike.writes_in_flight_max.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let n = profiles.len();
        for (user, profile) in profiles {
            let key = self.key(user).map_err(|e| as_error("making a key", &e))?;
            let permit = permits.clone().acquire_owned().await.map_err(|_| ProfileError::WriterStopped)?;
            let (shared, policy) = (self.shared.clone(), policy.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let bins = encode_bins(&profile);
                shared.client.put(&policy, &key, &bins).await
            });
        }
        while let Some(result) = tasks.join_next().await {
            let written = result.map_err(|e| ProfileError::Config(format!("import task failed: {e}")))?;
            written.map_err(|e| as_error("importing a profile", &e))?;
            self.shared.metrics.writes.inc();
        }
        Ok(n)
    }

    pub fn health(&self) -> ProfilesHealth {
        let mut last_error = self.shared.last_error.lock().clone();
        if !self.shared.client.is_connected() {
            last_error = Some(format!("not connected to {}", self.shared.config.aerospike.hosts));
        }
        ProfilesHealth::from_metrics("aerospike", &self.shared.metrics, last_error)
    }
}

async fn write_loop(shared: Arc<Shared>, mut receiver: mpsc::Receiver<Message>) {
    let in_flight_max = shared.config.aerospike.writes_in_flight_max.max(1);
    let permits = Arc::new(Semaphore::new(in_flight_max));
    while let Some(message) = receiver.recv().await {
        shared.metrics.write_queue_len.set(receiver.len() as i64);
        match message {
            Message::Update(update) => {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let shared = shared.clone();
                tokio::spawn(async move {
                    write_update(&shared, &update).await;
                    drop(permit);
                });
            }
            Message::Flush(reply) => {
                // Every update before the flush holds a permit until written: taking them all
                // waits for exactly those.
                if let Ok(all) = permits.acquire_many(in_flight_max as u32).await {
                    drop(all);
                }
                let _ = reply.send(());
            }
        }
    }
}

async fn write_update(shared: &Shared, update: &ProfileUpdate) {
    let a = &shared.config.aerospike;
    let key = match Key::new(a.namespace.clone(), a.set.clone(), Value::Int(update.key().0 as i64)) {
        Ok(key) => key,
        Err(error) => return write_failed(shared, &error),
    };
    let ops = update_ops(update);
    match shared.client.operate(&shared.write_policy, &key, &ops).await {
        Ok(_) => {
            shared.metrics.writes.inc();
            shared.metrics.updates_applied.inc();
            *shared.last_error.lock() = None;
        }
        Err(error) => write_failed(shared, &error),
    }
}

fn write_failed(shared: &Shared, error: &AsError) {
    tracing::debug!(%error, "aerospike profile write failed");
    shared.metrics.write_failures.inc();
    shared.metrics.dropped(Dropped::WriteFailed);
    *shared.last_error.lock() = Some(error.to_string());
}

fn int(value: i64) -> Value {
    Value::Int(value)
}

fn counter_key(campaign_id: u32, period_s: u32, window_start_unix_s: i64) -> Value {
    Value::String(format!("{campaign_id}:{period_s}:{window_start_unix_s}"))
}

/// The operations of one update: one atomic `operate()` on the user's record.
pub fn update_ops(update: &ProfileUpdate) -> Vec<Operation> {
    let now = update.now_unix_s();
    let mut ops = vec![
        operations::put(&Bin::new(bin::VERSION, int(i64::from(RECORD_VERSION)))),
        operations::put(&Bin::new(bin::LAST_SEEN, int(now))),
    ];
    match *update {
        ProfileUpdate::Seen { country, language, os, .. } => {
            for (name, code) in [(bin::COUNTRY, country), (bin::LANGUAGE, language)] {
                if code < CODE_LIMIT {
                    ops.push(operations::put(&Bin::new(name, int(i64::from(code)))));
                }
            }
            if os != crate::profile::os::UNKNOWN && os <= crate::profile::os::MAX {
                ops.push(operations::put(&Bin::new(bin::OS, int(i64::from(os)))));
            }
        }
        ProfileUpdate::Impression { campaign_id, period_s, .. } => {
            ops.push(operations::add(&Bin::new(bin::IMPRESSIONS, int(1))));
            let start = window_start(period_s, now);
            ops.push(maps::increment_value(
                &MAP_POLICY,
                bin::FREQUENCY,
                counter_key(campaign_id, period_s, start),
                int(1),
            ));
            if period_s > 0 {
                // The previous window's counter is dead now: keep the map from growing.
                let previous = counter_key(campaign_id, period_s, start - i64::from(period_s));
                ops.push(maps::remove_by_key(bin::FREQUENCY, previous, MapReturnType::NONE));
            }
        }
        ProfileUpdate::Click { .. } => ops.push(operations::add(&Bin::new(bin::CLICKS, int(1)))),
        ProfileUpdate::Install { app_bundle_hash, .. } => {
            ops.push(operations::add(&Bin::new(bin::INSTALLS, int(1))));
            ops.push(maps::put(&MAP_POLICY, bin::APPS, int(app_bundle_hash as i64), int(1)));
        }
    }
    ops
}

/// The bins of a whole profile (bulk import).
pub fn encode_bins(profile: &Profile) -> Vec<Bin> {
    let mut bins = vec![
        Bin::new(bin::VERSION, int(i64::from(RECORD_VERSION))),
        Bin::new(bin::OS, int(i64::from(profile.os()))),
        Bin::new(bin::LAST_SEEN, int(profile.last_seen_unix_s())),
        Bin::new(bin::IMPRESSIONS, int(i64::from(profile.n_impressions()))),
        Bin::new(bin::CLICKS, int(i64::from(profile.n_clicks()))),
        Bin::new(bin::INSTALLS, int(i64::from(profile.n_installs()))),
        Bin::new(bin::SEGMENTS, Value::List(profile.segments().iter().map(|&s| int(i64::from(s))).collect())),
    ];
    if let Some(country) = profile.country() {
        bins.push(Bin::new(bin::COUNTRY, int(i64::from(country))));
    }
    if let Some(language) = profile.language() {
        bins.push(Bin::new(bin::LANGUAGE, int(i64::from(language))));
    }
    let apps: HashMap<Value, Value> = profile.installed().iter().map(|&h| (int(h as i64), int(1))).collect();
    bins.push(Bin::new(bin::APPS, Value::HashMap(apps)));
    let counters: HashMap<Value, Value> = profile
        .frequency_counters()
        .iter()
        .map(|c| {
            (counter_key(c.campaign_id, c.period_s, c.window_start_unix_s), int(i64::from(c.n_impressions)))
        })
        .collect();
    bins.push(Bin::new(bin::FREQUENCY, Value::HashMap(counters)));
    bins
}

fn bin_int(record: &Record, name: &str) -> Result<Option<i64>, MissReason> {
    match record.bins.get(name) {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Int(v)) => Ok(Some(*v)),
        Some(_) => Err(MissReason::Corrupt),
    }
}

fn small<T: TryFrom<i64>>(value: Option<i64>) -> Result<Option<T>, MissReason> {
    value.map(|v| T::try_from(v).map_err(|_| MissReason::Corrupt)).transpose()
}

fn map_entries(record: &Record, name: &str) -> Result<Vec<(Value, Value)>, MissReason> {
    Ok(match record.bins.get(name) {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::HashMap(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::OrderedMap(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::SortedMap(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::KeyValueList(m)) => m.clone(),
        Some(_) => return Err(MissReason::Corrupt),
    })
}

/// Keeps, per campaign and period, the counter of the latest window.
fn counters(entries: Vec<(Value, Value)>) -> Result<Vec<FrequencyCounter>, MissReason> {
    let mut latest: HashMap<(u32, u32), FrequencyCounter> = HashMap::new();
    for (key, value) in entries {
        let (Value::String(key), Value::Int(n)) = (key, value) else { return Err(MissReason::Corrupt) };
        let mut parts = key.split(':');
        let mut next = || parts.next().ok_or(MissReason::Corrupt);
        let campaign_id: u32 = next()?.parse().map_err(|_| MissReason::Corrupt)?;
        let period_s: u32 = next()?.parse().map_err(|_| MissReason::Corrupt)?;
        let window_start_unix_s: i64 = next()?.parse().map_err(|_| MissReason::Corrupt)?;
        let n_impressions = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        let counter = FrequencyCounter { campaign_id, period_s, window_start_unix_s, n_impressions };
        let slot = latest.entry((campaign_id, period_s)).or_insert(counter);
        if slot.window_start_unix_s < window_start_unix_s {
            *slot = counter;
        }
    }
    Ok(latest.into_values().collect())
}

/// A profile from a record's bins, checked like a stored embedded record; `None` when it has
/// been idle past the TTL.
pub fn decode(record: &Record, idle_ttl_s: u64) -> Result<Option<Arc<Profile>>, MissReason> {
    match bin_int(record, bin::VERSION)? {
        None => return Err(MissReason::Foreign),
        Some(v) if v != i64::from(RECORD_VERSION) => return Err(MissReason::UnknownVersion),
        Some(_) => {}
    }
    let segments = match record.bins.get(bin::SEGMENTS) {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| match v {
                Value::Int(s) => u32::try_from(*s).map_err(|_| MissReason::Corrupt),
                _ => Err(MissReason::Corrupt),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(MissReason::Corrupt),
    };
    let apps = map_entries(record, bin::APPS)?;
    let installed = apps
        .iter()
        .map(|(k, _)| if let Value::Int(h) = k { Ok(*h as u64) } else { Err(MissReason::Corrupt) })
        .collect::<Result<Vec<_>, _>>()?;
    let mut frequency = counters(map_entries(record, bin::FREQUENCY)?)?;
    if segments.len() > SEGMENTS_MAX || installed.len() > INSTALLED_MAX {
        return Err(MissReason::Oversized);
    }
    if frequency.len() > FREQUENCY_COUNTERS_MAX {
        frequency.sort_unstable_by_key(|c| std::cmp::Reverse(c.window_start_unix_s));
        frequency.truncate(FREQUENCY_COUNTERS_MAX);
    }
    let fields = ProfileFields {
        country: small(bin_int(record, bin::COUNTRY)?)?,
        language: small(bin_int(record, bin::LANGUAGE)?)?,
        os: small(bin_int(record, bin::OS)?)?.unwrap_or(0),
        last_seen_unix_s: bin_int(record, bin::LAST_SEEN)?.unwrap_or(0),
        n_impressions: small(bin_int(record, bin::IMPRESSIONS)?)?.unwrap_or(0),
        n_clicks: small(bin_int(record, bin::CLICKS)?)?.unwrap_or(0),
        n_installs: small(bin_int(record, bin::INSTALLS)?)?.unwrap_or(0),
        segments,
        installed,
        frequency,
    };
    let profile = Profile::from_fields(fields).map_err(|_| MissReason::Corrupt)?;
    // The server expires the record too; this covers a namespace configured without TTLs.
    Ok((!profile.is_idle(idle_ttl_s, crate::embedded::now_unix_s())).then(|| Arc::new(profile)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerospike::IndexMap;

    fn record(bins: Vec<Bin>) -> Record {
        // The server answers maps as key-ordered maps, not as the hash maps written.
        let bins: IndexMap<String, Value> = bins
            .into_iter()
            .map(|b| {
                let value = match b.value {
                    Value::HashMap(m) => Value::SortedMap(m.into_iter().collect()),
                    other => other,
                };
                (b.name, value)
            })
            .collect();
        Record::new(None, bins, None, 1, 0)
    }

    fn sample() -> Profile {
        Profile::from_fields(ProfileFields {
            country: Some(7),
            language: None,
            os: 1,
            last_seen_unix_s: crate::embedded::now_unix_s(),
            n_impressions: 10,
            n_clicks: 2,
            n_installs: 1,
            segments: vec![4, 2],
            installed: vec![u64::MAX - 3, 9],
            frequency: vec![FrequencyCounter {
                campaign_id: 3,
                period_s: 3600,
                window_start_unix_s: 7200,
                n_impressions: 4,
            }],
        })
        .unwrap()
    }

    #[test]
    fn bins_round_trip_and_bad_bins_are_typed() {
        let profile = sample();
        let decoded = decode(&record(encode_bins(&profile)), 86_400).unwrap().unwrap();
        assert_eq!(*decoded, profile);
        let mut bins = encode_bins(&profile);
        bins.retain(|b| b.name != bin::VERSION);
        assert_eq!(decode(&record(bins.clone()), 86_400).unwrap_err(), MissReason::Foreign);
        bins.push(Bin::new(bin::VERSION, int(2)));
        assert_eq!(decode(&record(bins.clone()), 86_400).unwrap_err(), MissReason::UnknownVersion);
        let mut bins = encode_bins(&profile);
        bins.push(Bin::new(bin::COUNTRY, Value::String("DE".into())));
        assert_eq!(decode(&record(bins), 86_400).unwrap_err(), MissReason::Corrupt);
        let mut bins = encode_bins(&profile);
        let too_many = (0..=SEGMENTS_MAX as i64).map(int).collect();
        bins.push(Bin::new(bin::SEGMENTS, Value::List(too_many)));
        assert_eq!(decode(&record(bins), 86_400).unwrap_err(), MissReason::Oversized);
    }

    #[test]
    fn the_latest_window_of_each_counter_wins() {
        let entries = vec![
            (counter_key(1, 60, 120), int(5)),
            (counter_key(1, 60, 180), int(2)),
            (counter_key(1, 3600, 0), int(9)),
        ];
        let mut counters = counters(entries).unwrap();
        counters.sort_by_key(|c| (c.campaign_id, c.period_s));
        assert_eq!(counters.len(), 2);
        assert_eq!((counters[0].window_start_unix_s, counters[0].n_impressions), (180, 2));
        assert!(super::counters(vec![(Value::String("x".into()), int(1))]).is_err());
    }

    #[test]
    fn an_impression_increments_its_window_and_drops_the_previous_one() {
        let update =
            ProfileUpdate::Impression { key: UserKey(1), campaign_id: 5, period_s: 60, now_unix_s: 3_630 };
        let ops = update_ops(&update);
        // version, last seen, impressions, the window's counter, the previous window's removal.
        assert_eq!(ops.len(), 5);
        let lifetime =
            ProfileUpdate::Impression { key: UserKey(1), campaign_id: 5, period_s: 0, now_unix_s: 3_630 };
        assert_eq!(update_ops(&lifetime).len(), 4);
    }
}
