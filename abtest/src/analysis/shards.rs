//! Per-user counters kept by one thread or split by user key over several: where the streaming
//! pass's random memory traffic goes. Users never cross shards, so each shard's moments are
//! complete for its users and merge exactly (see [`Moments::merge`]).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::stats::{Moments, N_QUANTITIES};
use super::user_table::{Update, UserCounters, UserTable};

/// Updates sent to a shard at once: amortises the channel over many updates.
pub const SHARD_BATCH_UPDATES: usize = 4096;
/// Batches in flight per shard before the reader waits: bounds memory when a shard falls behind.
pub const SHARD_BATCHES_QUEUED_MAX: usize = 8;
/// Shard threads at most.
pub const SHARDS_MAX: usize = 64;

fn quantities(c: &UserCounters) -> [f64; N_QUANTITIES] {
    [
        f64::from(c.requests),
        f64::from(c.filled),
        f64::from(c.impressions),
        f64::from(c.clicks),
        f64::from(c.installs),
        c.revenue_micros as f64 / 1e6,
    ]
}

/// Every group's moments over one table.
fn table_moments(table: &mut UserTable, n_groups: usize) -> Vec<Moments> {
    table.flush();
    let mut moments = vec![Moments::default(); n_groups];
    for (group, counters) in table.iter() {
        if let Some(m) = moments.get_mut(usize::from(group)) {
            m.push(&quantities(counters));
        }
    }
    moments
}

enum Message {
    Updates(Vec<Update>),
    /// Reply with every group's moments (over `n_groups` groups) so far.
    Moments {
        n_groups: usize,
        reply: SyncSender<Vec<Moments>>,
    },
}

pub struct Shard {
    sender: SyncSender<Message>,
    batch: Vec<Update>,
    thread: Option<JoinHandle<()>>,
}

/// The users' counters: in this thread, or in shard threads by user key.
pub enum Users {
    Local(Box<UserTable>),
    Sharded(Vec<Shard>),
}

fn run_shard(receiver: Receiver<Message>) {
    let mut table = UserTable::default();
    for message in receiver {
        match message {
            Message::Updates(updates) => updates.into_iter().for_each(|u| table.push(u)),
            Message::Moments { n_groups, reply } => {
                // The requester waits for this reply; if it has gone, nobody needs it.
                let _ = reply.send(table_moments(&mut table, n_groups));
            }
        }
    }
}

impl Users {
    /// `n_threads` shard threads, or this thread alone for 0 or 1.
    pub fn new(n_threads: usize) -> Users {
        if n_threads <= 1 {
            return Users::Local(Box::default());
        }
        let shards = (0..n_threads.min(SHARDS_MAX))
            .map(|shard_idx| {
                let (sender, receiver) = sync_channel(SHARD_BATCHES_QUEUED_MAX);
                let thread = std::thread::Builder::new()
                    .name(format!("abtest-shard-{shard_idx}"))
                    .spawn(move || run_shard(receiver))
                    .ok();
                Shard { sender, batch: Vec::with_capacity(SHARD_BATCH_UPDATES), thread }
            })
            .collect::<Vec<_>>();
        if shards.iter().any(|s| s.thread.is_none()) {
            // No threads to be had: count here rather than fail.
            tracing::warn!(n_threads, "could not start shard threads; aggregating on one thread");
            return Users::Local(Box::default());
        }
        Users::Sharded(shards)
    }

    pub fn push(&mut self, update: Update) {
        match self {
            Users::Local(table) => table.push(update),
            Users::Sharded(shards) => {
                // The key's high bits pick the shard (keys are xxh3 hashes, evenly spread).
                let shard_idx = ((u128::from(update.user_key) * shards.len() as u128) >> 64) as usize;
                let shard = &mut shards[shard_idx];
                shard.batch.push(update);
                if shard.batch.len() == SHARD_BATCH_UPDATES {
                    send(&shard.sender, Message::Updates(std::mem::take(&mut shard.batch)));
                    shard.batch.reserve(SHARD_BATCH_UPDATES);
                }
            }
        }
    }

    /// Every group's moments over all users so far.
    pub fn moments(&mut self, n_groups: usize) -> Vec<Moments> {
        match self {
            Users::Local(table) => table_moments(table, n_groups),
            Users::Sharded(shards) => {
                let mut replies = Vec::with_capacity(shards.len());
                for shard in shards.iter_mut() {
                    let batch = std::mem::take(&mut shard.batch);
                    if !batch.is_empty() {
                        send(&shard.sender, Message::Updates(batch));
                    }
                    let (reply, receiver) = sync_channel(1);
                    send(&shard.sender, Message::Moments { n_groups, reply });
                    replies.push(receiver);
                }
                let mut total = vec![Moments::default(); n_groups];
                for receiver in replies {
                    // A shard thread only stops when its channel closes, which happens in drop.
                    let part = receiver.recv().expect("a running shard answers");
                    for (sum, m) in total.iter_mut().zip(&part) {
                        sum.merge(m);
                    }
                }
                total
            }
        }
    }
}

/// Sends to a shard; its thread runs until the channel closes, so a send cannot fail unless
/// the thread panicked, which would be a bug worth surfacing.
fn send(sender: &SyncSender<Message>, message: Message) {
    sender.send(message).expect("a running shard receives");
}

impl Drop for Users {
    fn drop(&mut self) {
        if let Users::Sharded(shards) = self {
            for shard in shards.iter_mut() {
                // Closing the channel ends the thread's loop.
                let (closed, _) = sync_channel(0);
                drop(std::mem::replace(&mut shard.sender, closed));
                if let Some(thread) = shard.thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}
