//! What the server knows about one user between requests, and how each kind of update changes it.

/// The most segments one profile keeps; a bulk import with more is refused line by line.
pub const SEGMENTS_MAX: usize = 1024;
/// The most installed app bundles one profile keeps; past it, new installs are counted but the
/// bundle is not added (the oldest knowledge is the most likely to matter for exclusions).
pub const INSTALLED_MAX: usize = 2048;
/// The most frequency counters one profile keeps; past it, the counter whose window started
/// earliest makes room (it is the most likely to have expired).
pub const FREQUENCY_COUNTERS_MAX: usize = 512;

/// xxh3_64 of the raw user or device id. The server computes it; the store never sees raw ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(pub u64);

impl UserKey {
    /// The key of a raw user or device id, as the server computes it.
    pub fn of_id(id: &str) -> UserKey {
        UserKey(xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
    }
}

/// The stored country or language code when it is not known (packed codes are below 676).
pub const CODE_UNKNOWN: u16 = u16::MAX;
/// Packed two-letter codes are below this.
pub const CODE_LIMIT: u16 = 26 * 26;

/// OS codes a profile stores.
pub mod os {
    pub const UNKNOWN: u8 = 0;
    pub const ANDROID: u8 = 1;
    pub const IOS: u8 = 2;
    /// The largest valid code.
    pub const MAX: u8 = IOS;
}

/// Impressions of one campaign inside one fixed window of `period_s` seconds.
///
/// Windows are aligned to the Unix epoch (`window_start = now - now mod period_s`), so every
/// server agrees on them without coordination. `period_s == 0` is a lifetime counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrequencyCounter {
    pub campaign_id: u32,
    pub period_s: u32,
    pub window_start_unix_s: i64,
    pub n_impressions: u32,
}

/// The start of the window of `period_s` that contains `now_unix_s`.
pub fn window_start(period_s: u32, now_unix_s: i64) -> i64 {
    if period_s == 0 {
        return 0;
    }
    now_unix_s - now_unix_s.rem_euclid(i64::from(period_s))
}

/// One user's profile. Lists are kept sorted and without duplicates, so look-ups are binary
/// searches and two profiles with the same content have the same encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub(crate) country: u16,
    pub(crate) language: u16,
    pub(crate) os: u8,
    pub(crate) last_seen_unix_s: i64,
    pub(crate) n_impressions: u32,
    pub(crate) n_clicks: u32,
    pub(crate) n_installs: u32,
    pub(crate) segments: Vec<u32>,
    pub(crate) installed: Vec<u64>,
    pub(crate) frequency: Vec<FrequencyCounter>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            country: CODE_UNKNOWN,
            language: CODE_UNKNOWN,
            os: os::UNKNOWN,
            last_seen_unix_s: 0,
            n_impressions: 0,
            n_clicks: 0,
            n_installs: 0,
            segments: Vec::new(),
            installed: Vec::new(),
            frequency: Vec::new(),
        }
    }
}

/// The fields of a profile, for building one from outside (imports, generators, tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileFields {
    /// `adsnap_snapshot::pack_country`.
    pub country: Option<u16>,
    /// `adsnap_snapshot::pack_language`.
    pub language: Option<u16>,
    /// See [`os`].
    pub os: u8,
    pub last_seen_unix_s: i64,
    pub n_impressions: u32,
    pub n_clicks: u32,
    pub n_installs: u32,
    /// Catalog segment ids, in any order.
    pub segments: Vec<u32>,
    /// `adsnap_snapshot::key_hash(bundle)` of each installed app, in any order.
    pub installed: Vec<u64>,
    pub frequency: Vec<FrequencyCounter>,
}

/// Why a set of fields cannot be a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("{n} segments, more than the {max} a profile keeps")]
    TooManySegments { n: usize, max: usize },
    #[error("{n} installed apps, more than the {max} a profile keeps")]
    TooManyInstalled { n: usize, max: usize },
    #[error("{n} frequency counters, more than the {max} a profile keeps")]
    TooManyCounters { n: usize, max: usize },
    #[error("os code {0} is not 0 (unknown), 1 (android) or 2 (ios)")]
    Os(u8),
    #[error("packed country or language code {0} is not below {CODE_LIMIT}")]
    Code(u16),
    #[error("two frequency counters for campaign {campaign_id} with period {period_s} s")]
    DuplicateCounter { campaign_id: u32, period_s: u32 },
}

impl Profile {
    /// A profile from its fields, sorted and checked against the limits.
    pub fn from_fields(mut fields: ProfileFields) -> Result<Profile, FieldsError> {
        check_len(fields.segments.len(), SEGMENTS_MAX, |n, max| FieldsError::TooManySegments { n, max })?;
        check_len(fields.installed.len(), INSTALLED_MAX, |n, max| FieldsError::TooManyInstalled { n, max })?;
        check_len(fields.frequency.len(), FREQUENCY_COUNTERS_MAX, |n, max| FieldsError::TooManyCounters {
            n,
            max,
        })?;
        if fields.os > os::MAX {
            return Err(FieldsError::Os(fields.os));
        }
        if let Some(code) = [fields.country, fields.language].into_iter().flatten().find(|&c| c >= CODE_LIMIT)
        {
            return Err(FieldsError::Code(code));
        }
        fields.segments.sort_unstable();
        fields.segments.dedup();
        fields.installed.sort_unstable();
        fields.installed.dedup();
        fields.frequency.sort_unstable_by_key(|c| (c.campaign_id, c.period_s));
        if let Some(w) = fields.frequency.windows(2).find(|w| counter_slot(&w[0]) == counter_slot(&w[1])) {
            return Err(FieldsError::DuplicateCounter {
                campaign_id: w[0].campaign_id,
                period_s: w[0].period_s,
            });
        }
        Ok(Profile {
            country: fields.country.unwrap_or(CODE_UNKNOWN),
            language: fields.language.unwrap_or(CODE_UNKNOWN),
            os: fields.os,
            last_seen_unix_s: fields.last_seen_unix_s,
            n_impressions: fields.n_impressions,
            n_clicks: fields.n_clicks,
            n_installs: fields.n_installs,
            segments: fields.segments,
            installed: fields.installed,
            frequency: fields.frequency,
        })
    }

    /// The profile's fields (a copy), e.g. to print it.
    pub fn to_fields(&self) -> ProfileFields {
        ProfileFields {
            country: self.country(),
            language: self.language(),
            os: self.os,
            last_seen_unix_s: self.last_seen_unix_s,
            n_impressions: self.n_impressions,
            n_clicks: self.n_clicks,
            n_installs: self.n_installs,
            segments: self.segments.clone(),
            installed: self.installed.clone(),
            frequency: self.frequency.clone(),
        }
    }

    pub fn has_installed(&self, bundle_hash: u64) -> bool {
        self.installed.binary_search(&bundle_hash).is_ok()
    }

    /// Impressions of this campaign inside the window of `period_s` that contains now.
    pub fn impressions_in_window(&self, campaign_id: u32, period_s: u32, now_unix_s: i64) -> u32 {
        match self.counter_idx(campaign_id, period_s) {
            Ok(idx) if self.frequency[idx].window_start_unix_s == window_start(period_s, now_unix_s) => {
                self.frequency[idx].n_impressions
            }
            _ => 0,
        }
    }

    pub fn in_segment(&self, segment_id: u32) -> bool {
        self.segments.binary_search(&segment_id).is_ok()
    }

    /// Catalog segment ids, sorted.
    pub fn segments(&self) -> &[u32] {
        &self.segments
    }

    /// Installed app bundle hashes, sorted.
    pub fn installed(&self) -> &[u64] {
        &self.installed
    }

    /// Frequency counters, sorted by campaign id and period.
    pub fn frequency_counters(&self) -> &[FrequencyCounter] {
        &self.frequency
    }

    /// Packed country code last seen, if known.
    pub fn country(&self) -> Option<u16> {
        (self.country != CODE_UNKNOWN).then_some(self.country)
    }

    /// Packed language code last seen, if known.
    pub fn language(&self) -> Option<u16> {
        (self.language != CODE_UNKNOWN).then_some(self.language)
    }

    pub fn os(&self) -> u8 {
        self.os
    }

    pub fn last_seen_unix_s(&self) -> i64 {
        self.last_seen_unix_s
    }

    pub fn n_impressions(&self) -> u32 {
        self.n_impressions
    }

    pub fn n_clicks(&self) -> u32 {
        self.n_clicks
    }

    pub fn n_installs(&self) -> u32 {
        self.n_installs
    }

    /// Whether the profile has been idle for longer than `idle_ttl_s` at `now_unix_s`.
    pub fn is_idle(&self, idle_ttl_s: u64, now_unix_s: i64) -> bool {
        now_unix_s.saturating_sub(self.last_seen_unix_s) > idle_ttl_s.min(i64::MAX as u64) as i64
    }

    /// Bytes this profile occupies on the heap, for the memory layer's budget.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Profile>()
            + self.segments.capacity() * 4
            + self.installed.capacity() * 8
            + self.frequency.capacity() * std::mem::size_of::<FrequencyCounter>()
    }

    fn counter_idx(&self, campaign_id: u32, period_s: u32) -> Result<usize, usize> {
        self.frequency.binary_search_by_key(&(campaign_id, period_s), counter_slot)
    }

    pub(crate) fn touch(&mut self, now_unix_s: i64) {
        self.last_seen_unix_s = self.last_seen_unix_s.max(now_unix_s);
    }

    pub(crate) fn apply_seen(&mut self, country: u16, language: u16, os_code: u8, now_unix_s: i64) {
        // A late update must not overwrite what a newer request already recorded.
        // A request that did not say leaves what an earlier one said.
        if now_unix_s >= self.last_seen_unix_s {
            if said_code(country) {
                self.country = country;
            }
            if said_code(language) {
                self.language = language;
            }
            if said_os(os_code) {
                self.os = os_code;
            }
        }
        self.touch(now_unix_s);
    }

    pub(crate) fn apply_impression(&mut self, campaign_id: u32, period_s: u32, now_unix_s: i64) {
        self.n_impressions = self.n_impressions.saturating_add(1);
        self.touch(now_unix_s);
        let start = window_start(period_s, now_unix_s);
        match self.counter_idx(campaign_id, period_s) {
            Ok(idx) => {
                let counter = &mut self.frequency[idx];
                if counter.window_start_unix_s == start {
                    counter.n_impressions = counter.n_impressions.saturating_add(1);
                } else if counter.window_start_unix_s < start {
                    counter.window_start_unix_s = start;
                    counter.n_impressions = 1;
                }
                // An impression for a window older than the counter's is too late to count.
            }
            Err(idx) => self.insert_counter(idx, campaign_id, period_s, start),
        }
    }

    fn insert_counter(&mut self, mut idx: usize, campaign_id: u32, period_s: u32, start: i64) {
        if self.frequency.len() >= FREQUENCY_COUNTERS_MAX {
            let oldest = (0..self.frequency.len())
                .min_by_key(|&i| {
                    self.frequency[i].window_start_unix_s + i64::from(self.frequency[i].period_s)
                })
                .unwrap_or(0);
            self.frequency.remove(oldest);
            if oldest < idx {
                idx -= 1;
            }
        }
        let counter =
            FrequencyCounter { campaign_id, period_s, window_start_unix_s: start, n_impressions: 1 };
        self.frequency.insert(idx, counter);
    }

    pub(crate) fn apply_click(&mut self, now_unix_s: i64) {
        self.n_clicks = self.n_clicks.saturating_add(1);
        self.touch(now_unix_s);
    }

    /// Records an install; returns false when the bundle could not be kept (list full).
    pub(crate) fn apply_install(&mut self, bundle_hash: u64, now_unix_s: i64) -> bool {
        self.n_installs = self.n_installs.saturating_add(1);
        self.touch(now_unix_s);
        match self.installed.binary_search(&bundle_hash) {
            Ok(_) => true,
            Err(_) if self.installed.len() >= INSTALLED_MAX => false,
            Err(idx) => {
                self.installed.insert(idx, bundle_hash);
                true
            }
        }
    }
}

fn counter_slot(counter: &FrequencyCounter) -> (u32, u32) {
    (counter.campaign_id, counter.period_s)
}

fn check_len(n: usize, max: usize, error: impl Fn(usize, usize) -> FieldsError) -> Result<(), FieldsError> {
    if n > max {
        Err(error(n, max))
    } else {
        Ok(())
    }
}

/// One change to a profile. Updates leave the request path at once (see `Profiles::record`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileUpdate {
    /// The user sent a request: country, language and OS as last seen. `CODE_UNKNOWN` and
    /// `os::UNKNOWN` leave the stored value as it is.
    Seen {
        key: UserKey,
        country: u16,
        language: u16,
        os: u8,
        now_unix_s: i64,
    },
    /// An impression of a campaign that caps frequency over windows of `period_s` seconds.
    Impression {
        key: UserKey,
        campaign_id: u32,
        period_s: u32,
        now_unix_s: i64,
    },
    Click {
        key: UserKey,
        campaign_id: u32,
        now_unix_s: i64,
    },
    Install {
        key: UserKey,
        app_bundle_hash: u64,
        now_unix_s: i64,
    },
}

/// Whether a `Seen` carries this packed country or language code (unknown codes say nothing).
fn said_code(code: u16) -> bool {
    code < CODE_LIMIT
}

/// Whether a `Seen` carries this OS code.
fn said_os(code: u8) -> bool {
    code != os::UNKNOWN && code <= os::MAX
}

impl ProfileUpdate {
    pub fn key(&self) -> UserKey {
        match *self {
            ProfileUpdate::Seen { key, .. }
            | ProfileUpdate::Impression { key, .. }
            | ProfileUpdate::Click { key, .. }
            | ProfileUpdate::Install { key, .. } => key,
        }
    }

    pub fn now_unix_s(&self) -> i64 {
        match *self {
            ProfileUpdate::Seen { now_unix_s, .. }
            | ProfileUpdate::Impression { now_unix_s, .. }
            | ProfileUpdate::Click { now_unix_s, .. }
            | ProfileUpdate::Install { now_unix_s, .. } => now_unix_s,
        }
    }

    /// Whether applying this update to `profile` would change nothing worth writing: a `Seen`
    /// that repeats the country, language and OS the profile holds, within `seen_refresh_s` of
    /// its last-seen time. Last-seen only serves the idle TTL (days), so keeping it to
    /// `seen_refresh_s` spares a write per request for a user who comes back often.
    pub fn is_redundant(&self, profile: &Profile, seen_refresh_s: u32) -> bool {
        let ProfileUpdate::Seen { country, language, os, now_unix_s, .. } = *self else { return false };
        (!said_code(country) || country == profile.country)
            && (!said_code(language) || language == profile.language)
            && (!said_os(os) || os == profile.os)
            && now_unix_s.saturating_sub(profile.last_seen_unix_s) < i64::from(seen_refresh_s)
    }

    /// Applies the update; returns false when part of it could not be kept (a full list).
    pub fn apply(&self, profile: &mut Profile) -> bool {
        match *self {
            ProfileUpdate::Seen { country, language, os, now_unix_s, .. } => {
                profile.apply_seen(country, language, os, now_unix_s);
                true
            }
            ProfileUpdate::Impression { campaign_id, period_s, now_unix_s, .. } => {
                profile.apply_impression(campaign_id, period_s, now_unix_s);
                true
            }
            ProfileUpdate::Click { now_unix_s, .. } => {
                profile.apply_click(now_unix_s);
                true
            }
            ProfileUpdate::Install { app_bundle_hash, now_unix_s, .. } => {
                profile.apply_install(app_bundle_hash, now_unix_s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_S: u32 = 86_400;
    const T0: i64 = 1_795_000_000;

    fn impression(campaign_id: u32, period_s: u32, now_unix_s: i64) -> ProfileUpdate {
        ProfileUpdate::Impression { key: UserKey(1), campaign_id, period_s, now_unix_s }
    }

    #[test]
    fn frequency_counts_reset_with_each_window() {
        let mut profile = Profile::default();
        let start = window_start(DAY_S, T0);
        for _ in 0..3 {
            impression(7, DAY_S, start + 10).apply(&mut profile);
        }
        impression(7, 3600, start + 10).apply(&mut profile);
        assert_eq!(profile.impressions_in_window(7, DAY_S, start + 100), 3);
        assert_eq!(profile.impressions_in_window(7, 3600, start + 100), 1);
        assert_eq!(profile.impressions_in_window(8, DAY_S, start + 100), 0);
        assert_eq!(profile.impressions_in_window(7, DAY_S, start + i64::from(DAY_S)), 0);
        impression(7, DAY_S, start + i64::from(DAY_S) + 5).apply(&mut profile);
        assert_eq!(profile.impressions_in_window(7, DAY_S, start + i64::from(DAY_S) + 6), 1);
        // A late impression from the previous window does not disturb the current one.
        impression(7, DAY_S, start + 20).apply(&mut profile);
        assert_eq!(profile.impressions_in_window(7, DAY_S, start + i64::from(DAY_S) + 6), 1);
        assert_eq!(profile.n_impressions(), 6);
    }

    #[test]
    fn lifetime_counter_never_resets() {
        let mut profile = Profile::default();
        impression(1, 0, T0).apply(&mut profile);
        impression(1, 0, T0 + 1_000_000).apply(&mut profile);
        assert_eq!(profile.impressions_in_window(1, 0, T0 + 9_000_000), 2);
    }

    #[test]
    fn counters_past_the_limit_replace_the_oldest_window() {
        let mut profile = Profile::default();
        for campaign_id in 0..FREQUENCY_COUNTERS_MAX as u32 {
            impression(campaign_id, 3600, T0 + i64::from(campaign_id) * 3600).apply(&mut profile);
        }
        let now = T0 + FREQUENCY_COUNTERS_MAX as i64 * 3600;
        impression(100_000, 3600, now).apply(&mut profile);
        assert_eq!(profile.frequency_counters().len(), FREQUENCY_COUNTERS_MAX);
        assert_eq!(profile.impressions_in_window(100_000, 3600, now), 1);
        assert!(profile.frequency_counters().iter().all(|c| c.campaign_id != 0));
        assert!(profile.frequency_counters().windows(2).all(|w| counter_slot(&w[0]) < counter_slot(&w[1])));
    }

    #[test]
    fn installs_are_a_bounded_sorted_set() {
        let mut profile = Profile::default();
        for hash in (0..INSTALLED_MAX as u64).rev() {
            assert!(ProfileUpdate::Install { key: UserKey(1), app_bundle_hash: hash * 3, now_unix_s: T0 }
                .apply(&mut profile));
        }
        assert!(profile.has_installed(3));
        assert!(!profile.has_installed(4));
        let full = ProfileUpdate::Install { key: UserKey(1), app_bundle_hash: 4, now_unix_s: T0 };
        assert!(!full.apply(&mut profile));
        assert!(!profile.has_installed(4));
        assert_eq!(profile.n_installs() as usize, INSTALLED_MAX + 1);
    }

    #[test]
    fn a_late_seen_does_not_overwrite_a_newer_one() {
        let mut profile = Profile::default();
        ProfileUpdate::Seen { key: UserKey(1), country: 5, language: 6, os: os::IOS, now_unix_s: T0 }
            .apply(&mut profile);
        ProfileUpdate::Seen { key: UserKey(1), country: 9, language: 9, os: os::ANDROID, now_unix_s: T0 - 5 }
            .apply(&mut profile);
        assert_eq!((profile.country(), profile.language(), profile.os()), (Some(5), Some(6), os::IOS));
        ProfileUpdate::Seen {
            key: UserKey(1),
            country: CODE_UNKNOWN,
            language: 7,
            os: os::UNKNOWN,
            now_unix_s: T0,
        }
        .apply(&mut profile);
        assert_eq!((profile.country(), profile.language(), profile.os()), (Some(5), Some(7), os::IOS));
        assert_eq!(profile.last_seen_unix_s(), T0);
    }

    #[test]
    fn fields_are_checked_and_sorted() {
        let fields = ProfileFields { segments: vec![9, 1, 9], installed: vec![5, 2], ..Default::default() };
        let profile = Profile::from_fields(fields).unwrap();
        assert_eq!(profile.segments(), &[1, 9]);
        assert!(profile.in_segment(9) && !profile.in_segment(2));
        let too_many =
            ProfileFields { segments: (0..SEGMENTS_MAX as u32 + 1).collect(), ..Default::default() };
        assert_eq!(
            Profile::from_fields(too_many),
            Err(FieldsError::TooManySegments { n: SEGMENTS_MAX + 1, max: SEGMENTS_MAX })
        );
        assert_eq!(
            Profile::from_fields(ProfileFields { os: 7, ..Default::default() }),
            Err(FieldsError::Os(7))
        );
        let code = ProfileFields { country: Some(CODE_LIMIT), ..Default::default() };
        assert_eq!(Profile::from_fields(code), Err(FieldsError::Code(CODE_LIMIT)));
        assert_eq!(Profile::from_fields(ProfileFields::default()).unwrap().country(), None);
        let counter =
            FrequencyCounter { campaign_id: 1, period_s: 60, window_start_unix_s: 0, n_impressions: 1 };
        let twice = ProfileFields { frequency: vec![counter, counter], ..Default::default() };
        assert!(matches!(Profile::from_fields(twice), Err(FieldsError::DuplicateCounter { .. })));
    }
}
