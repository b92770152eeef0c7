// adsnap patch (PATCHES.md, change 3): super-seeding, opt-in with
// `AddTorrentOptions::super_seed`.
//
// A complete torrent that super-seeds sends no bitfield. It advertises pieces to each peer with
// HAVE messages, a few at a time, choosing pieces no connected peer holds or is being sent, so
// that every piece leaves it about once and peers take the rest from each other. Requests are
// never refused: a peer asking for a piece it was not advertised still gets it.
//
// So that nothing can stall on a peer that does not pass a piece on (it died, or cannot reach the
// others), a piece that some peer holds is advertised again, to one peer lacking it, once
// `RESEND_AFTER` has passed since it was last advertised or sent; and a holder that disconnects
// stops counting at once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::type_aliases::{BF, PeerHandle};

/// Pieces advertised to one peer and not yet sent to it in full. Enough to keep a fast link busy
/// (the HAVE for the next piece goes out when the previous one is written), few enough that the
/// pieces of the torrent are spread over every connected peer.
pub(crate) const PENDING_PIECES_PER_PEER: usize = 4;

/// An advertised piece the peer did not ask for within this long, while it was not busy fetching
/// other pieces from us, no longer counts as pending (it got the piece elsewhere, or does not want
/// it), so its slot is given to another piece. While the peer is busy its request window may be
/// full, so an unrequested advertisement does not expire then.
pub(crate) const UNREQUESTED_ADVERT_EXPIRES: Duration = Duration::from_secs(2);

/// A piece that `h` connected peers hold is advertised again, to one peer lacking it, only once
/// `h` times this long has passed since it was last advertised or sent in full: a piece with one
/// holder that does not pass it on is offered again soon, a piece spreading well hardly ever.
pub(crate) const RESEND_AFTER: Duration = Duration::from_secs(4);

/// How often every peer's advertisements are topped up (after expiries, disconnects, resends).
pub(crate) const TICK: Duration = Duration::from_millis(250);

struct Advert {
    since: Instant,
    requested: bool,
    uploaded_bytes: u64,
    done: bool,
}

impl Advert {
    /// `busy`: the peer is being sent another piece it asked for.
    fn is_pending(&self, busy: bool, now: Instant) -> bool {
        !self.done && (self.requested || busy || now.duration_since(self.since) < UNREQUESTED_ADVERT_EXPIRES)
    }
}

fn is_busy(adverts: &HashMap<u32, Advert>) -> bool {
    adverts.values().any(|a| a.requested && !a.done)
}

/// What the super-seeder knows: per peer connection, every piece advertised to it; per piece,
/// when it was last advertised or sent in full to anyone.
pub(crate) struct SuperSeedState {
    clock: Vec<Option<Instant>>,
    peers: HashMap<PeerHandle, HashMap<u32, Advert>>,
}

/// One connected peer as the super-seeder sees it: its address and the pieces it told us of.
pub(crate) struct PeerView<'a> {
    pub addr: PeerHandle,
    pub bitfield: &'a BF,
}

impl SuperSeedState {
    pub(crate) fn new(total_pieces: u32) -> Self {
        Self { clock: vec![None; total_pieces as usize], peers: HashMap::new() }
    }

    /// A new connection to `peer`: it knows of no advertisement yet.
    pub(crate) fn reset_peer(&mut self, peer: PeerHandle) {
        self.peers.insert(peer, HashMap::new());
    }

    pub(crate) fn on_request(&mut self, peer: PeerHandle, piece: u32) {
        if let Some(advert) = self.peers.get_mut(&peer).and_then(|a| a.get_mut(&piece)) {
            advert.requested = true;
        }
    }

    /// Counts a chunk written to `peer`; true when that completes the piece, freeing a slot.
    pub(crate) fn on_uploaded(
        &mut self,
        peer: PeerHandle,
        piece: u32,
        bytes: u32,
        piece_bytes: u32,
        now: Instant,
    ) -> bool {
        let Some(adverts) = self.peers.get_mut(&peer) else {
            return false;
        };
        let advert = adverts.entry(piece).or_insert(Advert {
            since: now,
            requested: true,
            uploaded_bytes: 0,
            done: false,
        });
        advert.uploaded_bytes += u64::from(bytes);
        if advert.done || advert.uploaded_bytes < u64::from(piece_bytes) {
            return false;
        }
        advert.done = true;
        if let Some(clock) = self.clock.get_mut(piece as usize) {
            *clock = Some(now);
        }
        true
    }

    /// Chooses the pieces to advertise to `peer` now and records them as advertised. `live` is
    /// every connected peer, `peer` included.
    #[cfg(test)]
    pub(crate) fn pick(&mut self, peer: PeerHandle, live: &[PeerView<'_>], now: Instant) -> Vec<u32> {
        let mut counts = self.counts(live, now);
        self.pick_counted(peer, live, &mut counts, now)
    }

    /// Forgets peers no longer connected and counts, per piece, the connected peers holding it
    /// and whether one is being sent it. One count serves the picks for every peer of a top-up
    /// ([`SuperSeedState::pick_counted`] keeps it up to date).
    pub(crate) fn counts(&mut self, live: &[PeerView<'_>], now: Instant) -> Counts {
        self.peers.retain(|addr, _| live.iter().any(|v| v.addr == *addr));
        let n = self.clock.len();
        let mut counts = Counts { holders: vec![0u32; n], in_flight: vec![false; n] };
        for view in live {
            let adverts = self.peers.get(&view.addr);
            let busy = adverts.is_some_and(is_busy);
            for (i, h) in counts.holders.iter_mut().enumerate() {
                let advert = adverts.and_then(|a| a.get(&(i as u32)));
                if view.bitfield.get(i).is_some_and(|b| *b) || advert.is_some_and(|a| a.done) {
                    *h += 1;
                } else if advert.is_some_and(|a| a.is_pending(busy, now)) {
                    counts.in_flight[i] = true;
                }
            }
        }
        counts
    }

    /// [`SuperSeedState::pick`] from `counts` made by [`SuperSeedState::counts`] for the same
    /// `live` and `now`; the pieces chosen are marked in flight in `counts`, as counting again
    /// would find them.
    pub(crate) fn pick_counted(
        &mut self,
        peer: PeerHandle,
        live: &[PeerView<'_>],
        counts: &mut Counts,
        now: Instant,
    ) -> Vec<u32> {
        let Some(own) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let own_busy = is_busy(own);
        let pending = own.values().filter(|a| a.is_pending(own_busy, now)).count();
        let free = PENDING_PIECES_PER_PEER.saturating_sub(pending);
        if free == 0 {
            return Vec::new();
        }
        let n = self.clock.len();
        let Counts { holders, in_flight } = &*counts;
        let own_bitfield = live.iter().find(|v| v.addr == peer).map(|v| v.bitfield);
        let lacks = |i: usize| {
            !own.contains_key(&(i as u32)) && !own_bitfield.is_some_and(|b| b.get(i).is_some_and(|b| *b))
        };
        // Pieces nobody holds or is being sent, starting at a place that differs per peer so that
        // peers connecting together start apart.
        let start = peer_offset(peer, n);
        let mut chosen: Vec<u32> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| lacks(i) && holders[i] == 0 && !in_flight[i])
            .take(free)
            .map(|i| i as u32)
            .collect();
        // Then, if slots are left, the rarest pieces that their holders have had for long enough.
        if chosen.len() < free {
            let mut stale: Vec<usize> = (0..n)
                .filter(|&i| lacks(i) && holders[i] > 0)
                .filter(|&i| self.clock[i].is_none_or(|t| now.duration_since(t) >= RESEND_AFTER * holders[i]))
                .collect();
            stale.sort_by_key(|&i| (holders[i], self.clock[i]));
            chosen.extend(stale.into_iter().take(free - chosen.len()).map(|i| i as u32));
        }
        let own = self.peers.entry(peer).or_default();
        for &i in &chosen {
            own.insert(i, Advert { since: now, requested: false, uploaded_bytes: 0, done: false });
            self.clock[i as usize] = Some(now);
            // A fresh, unrequested advertisement to a peer lacking the piece is pending.
            counts.in_flight[i as usize] = true;
        }
        chosen
    }
}

/// Per piece: how many connected peers hold it, and whether one is being sent it.
pub(crate) struct Counts {
    holders: Vec<u32>,
    in_flight: Vec<bool>,
}

fn peer_offset(peer: PeerHandle, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut hasher);
    (hasher.finish() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn peer(id: u8) -> PeerHandle {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, id)), 6881)
    }

    fn empty(n: usize) -> BF {
        BF::from_boxed_slice(vec![0u8; n.div_ceil(8)].into_boxed_slice())
    }

    #[test]
    fn peers_are_advertised_distinct_pieces_and_the_rest_after_a_holder_leaves() {
        let n = 16;
        let mut s = SuperSeedState::new(n as u32);
        let (a, b) = (peer(1), peer(2));
        let (bf_a, bf_b) = (empty(n), empty(n));
        let live = [PeerView { addr: a, bitfield: &bf_a }, PeerView { addr: b, bitfield: &bf_b }];
        s.reset_peer(a);
        s.reset_peer(b);
        let t0 = Instant::now();
        let to_a = s.pick(a, &live, t0);
        let to_b = s.pick(b, &live, t0);
        assert_eq!(to_a.len(), PENDING_PIECES_PER_PEER);
        assert_eq!(to_b.len(), PENDING_PIECES_PER_PEER);
        assert!(to_a.iter().all(|p| !to_b.contains(p)), "{to_a:?} {to_b:?}");
        // All slots taken: nothing more until a piece is sent.
        assert!(s.pick(a, &live, t0).is_empty());
        assert!(s.on_uploaded(a, to_a[0], 16384, 16384, t0));
        let next = s.pick(a, &live, t0);
        assert_eq!(next.len(), 1);
        assert!(!to_a.contains(&next[0]) && !to_b.contains(&next[0]));

        // A leaves: what it held or was being sent is free again, and B is given every piece,
        // each once, as it takes them.
        let only_b = [PeerView { addr: b, bitfield: &bf_b }];
        let mut given: Vec<u32> = to_b.clone();
        let mut waiting = to_b;
        while let Some(piece) = waiting.pop() {
            assert!(s.on_uploaded(b, piece, 16384, 16384, t0));
            let more = s.pick(b, &only_b, t0);
            given.extend(&more);
            waiting.extend(more);
        }
        given.sort_unstable();
        assert_eq!(given, (0..n as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_held_piece_is_advertised_again_only_after_resend_after() {
        let n = 1;
        let mut s = SuperSeedState::new(n as u32);
        let (a, b) = (peer(1), peer(2));
        let (bf_a, bf_b) = (empty(n), empty(n));
        let live = [PeerView { addr: a, bitfield: &bf_a }, PeerView { addr: b, bitfield: &bf_b }];
        s.reset_peer(a);
        s.reset_peer(b);
        let t0 = Instant::now();
        assert_eq!(s.pick(a, &live, t0), vec![0]);
        assert!(s.on_uploaded(a, 0, 100, 100, t0));
        assert!(s.pick(b, &live, t0 + RESEND_AFTER / 2).is_empty());
        assert_eq!(s.pick(b, &live, t0 + RESEND_AFTER), vec![0]);
    }
}
