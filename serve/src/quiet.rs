//! Closing public connections that stop making progress, without a timer per request.
//!
//! A client has `header_read_timeout_ms` to send a request (its headers and its body) after the
//! connection opens or its previous answer is ready, and as long to take each answer. hyper can
//! time the headers alone, but it arms a timer for every request: a boxed `Sleep`, registered in
//! tokio's timer wheel and dropped again, about 750 of a 29,200-instruction ad request (callgrind).
//! It does not time the body at all.
//!
//! Here each connection counts its requests begun and answered, a plain store per step, and a
//! watchdog task beside it looks at the count every half of the limit. Two looks in a row that
//! find it unchanged close the connection: one quiet for the limit is closed after between once
//! and one and a half times the limit. The admin listener keeps hyper's timer: its requests
//! (a snapshot upload, opening one) may rightly take longer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;

/// Requests begun and answered on one connection, counted by its task alone.
#[derive(Default)]
pub(crate) struct Progress(AtomicU64);

impl Progress {
    /// Counts a request begun or answered. Only the connection's task writes, so a load and a
    /// store suffice (no locked add).
    pub(crate) fn step(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A request's answer being made: counts a step when it is ready. A future of its own, not
    /// an `async` block, which would copy the whole answer future (kilobytes) on its first poll.
    pub(crate) struct Answering<F> {
        #[pin]
        answer: F,
        progress: Arc<Progress>,
    }
}

impl<F> Answering<F> {
    /// Counts the request begun, and its answer once `answer` is ready.
    pub(crate) fn new(progress: &Arc<Progress>, answer: F) -> Self {
        progress.step();
        Answering { answer, progress: progress.clone() }
    }
}

impl<F: Future> Future for Answering<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let answer = ready!(this.answer.poll(cx));
        this.progress.step();
        Poll::Ready(answer)
    }
}

/// Waits for `connection` to end, aborting it once `progress` has stood still for `limit` (checked
/// every half of it). Aborting drops the connection: its socket closes and its slot frees.
pub(crate) async fn watch(mut connection: JoinHandle<()>, progress: Arc<Progress>, limit: Duration) {
    let look = limit / 2;
    let mut last = progress.count();
    let mut quiet_looks = 0;
    loop {
        tokio::select! {
            _ = &mut connection => return,
            () = tokio::time::sleep(look) => {}
        }
        let now = progress.count();
        if now != last {
            last = now;
            quiet_looks = 0;
            continue;
        }
        quiet_looks += 1;
        if quiet_looks == 2 {
            tracing::debug!(
                limit_ms = limit.as_millis() as u64,
                "closing a connection that made no progress"
            );
            connection.abort();
            return;
        }
    }
}
