//! A constant-rate (open-loop) load generator: latency at a fixed request rate rather than at
//! saturation. Each request has an intended send time on a fixed schedule and its latency is
//! counted from that time, so a server that stalls is charged for every request its stall
//! delayed (no coordinated omission, as in wrk2). wrk, closed-loop, only measures at peak.
//!
//! One thread, pinned to one CPU (the servers run on another), drives every connection: it
//! polls its non-blocking sockets without sleeping, sends each request when its time has come
//! and its connection is free, and reads the answers. A thread per connection, sleeping until
//! its next send, measured the load CPU's scheduler instead: with 64 threads on one core, a
//! thread that woke late charged the server milliseconds it never took (nginx's static file
//! then showed a p99 of 9 ms at half of its peak). Connection `c` of `n` carries requests
//! `c, c + n, c + 2n, …` of the schedule, one at a time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

/// Longest wait for one response; past it the request counts as an error.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read.
const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// Latencies recorded up to this (in microseconds), at 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Connections one run may open.
const CONNECTIONS_MAX: usize = 4096;

/// What one paced run measured; latencies in milliseconds from the intended send time.
#[derive(Debug)]
pub struct PacedFigures {
    pub completed: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Time the load thread was ready to run but waited for its CPU (other work held it), from
    /// its `/proc` schedstat; `None` where the kernel does not keep it.
    pub load_thread_waited_ms: Option<f64>,
}

/// Sends `requests` (raw HTTP/1.1 requests with keep-alive, used in turn) to `addr` at
/// `rate_per_s` for `duration` over `connections` connections, from one thread pinned to `cpu`.
pub fn run(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    rate_per_s: f64,
    connections: usize,
    duration: Duration,
    cpu: usize,
) -> anyhow::Result<PacedFigures> {
    if requests.is_empty()
        || !rate_per_s.is_finite()
        || rate_per_s <= 0.0
        || connections == 0
        || connections > CONNECTIONS_MAX
    {
        bail!("a paced run needs requests, a positive rate and 1 to {CONNECTIONS_MAX} connections");
    }
    let schedule = Schedule {
        n_total: (rate_per_s * duration.as_secs_f64()) as u64,
        interval: Duration::from_secs_f64(1.0 / rate_per_s),
        step: connections as u64,
    };
    let latency_us = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_to(cpu);
                let (driven, waited) = run_queue_wait_during("/proc/thread-self/schedstat", || {
                    drive(addr, requests, connections, &schedule, duration + RESPONSE_TIMEOUT)
                });
                driven.map(|d| (d, waited))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
    })?;
    let (Driven { latency_us, errors, non_2xx }, load_thread_waited) = latency_us;
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    Ok(PacedFigures {
        completed: latency_us.len(),
        errors,
        non_2xx,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latency_us.max() as f64 / 1000.0,
        load_thread_waited_ms: load_thread_waited,
    })
}

/// Runs `work` and returns, beside what it returns, the milliseconds the thread whose schedstat
/// file is `schedstat` spent waiting for its CPU meanwhile (see [`run_queue_wait`]).
pub fn run_queue_wait_during<T>(schedstat: &str, work: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = run_queue_wait(schedstat);
    let result = work();
    let waited = before.zip(run_queue_wait(schedstat)).map(|(b, a)| a.saturating_sub(b));
    (result, waited.map(|d| d.as_secs_f64() * 1000.0))
}

/// Time a thread spent ready to run but waiting for a CPU, from its schedstat file (second
/// field, in nanoseconds): how much other work delayed it, whatever that work was (this
/// machine's VM agent and DAMON's `kdamond` preempt for milliseconds at a time).
pub fn run_queue_wait(schedstat: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(schedstat).ok()?;
    text.split_whitespace().nth(1)?.parse().ok().map(Duration::from_nanos)
}

/// Request `i` is meant to leave at `start + i * interval`, on connection `i % step`.
struct Schedule {
    n_total: u64,
    interval: Duration,
    step: u64,
}

struct Driven {
    latency_us: Histogram<u64>,
    errors: u64,
    non_2xx: u64,
}

impl Driven {
    /// Requests of the schedule done with: answered or failed.
    fn n_done(&self) -> u64 {
        self.latency_us.len() + self.errors
    }
}

/// One connection's state: the request it carries (if any) and the answer read so far.
struct Connection {
    stream: mio::net::TcpStream,
    /// The next request of the schedule this connection sends.
    next: u64,
    /// The request in flight, from the first attempt to write it.
    in_flight: Option<InFlight>,
    buffer: Vec<u8>,
    filled: usize,
}

struct InFlight {
    /// When it was meant to leave: its latency counts from here.
    intended: Instant,
    /// When writing it began: its response timeout counts from here.
    sent: Instant,
    written: usize,
}

fn drive(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    connections: usize,
    schedule: &Schedule,
    run_time_max: Duration,
) -> anyhow::Result<Driven> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(connections);
    let mut conns = Vec::with_capacity(connections);
    for c in 0..connections {
        conns.push(Connection {
            stream: connect(&poll, addr, c)?,
            next: c as u64,
            in_flight: None,
            buffer: vec![0u8; 64 << 10],
            filled: 0,
        });
    }
    let mut driven =
        Driven { latency_us: Histogram::new_with_max(LATENCY_US_MAX, 3)?, errors: 0, non_2xx: 0 };
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + run_time_max;
    while driven.n_done() < schedule.n_total {
        let now = Instant::now();
        if now > deadline {
            bail!(
                "the paced run outlasted {run_time_max:?} ({} of {} done)",
                driven.n_done(),
                schedule.n_total
            );
        }
        for (c, conn) in conns.iter_mut().enumerate() {
            if conn.next >= schedule.n_total {
                continue;
            }
            let intended = start + schedule.interval.mul_f64(conn.next as f64);
            let request = requests_of(requests, conn.next);
            let flight = match &mut conn.in_flight {
                None if intended <= now => {
                    conn.in_flight.insert(InFlight { intended, sent: now, written: 0 })
                }
                Some(flight) if now.saturating_duration_since(flight.sent) > RESPONSE_TIMEOUT => {
                    fail(&poll, addr, c, conn, &mut driven, schedule)?;
                    continue;
                }
                Some(flight) if flight.written < request.len() => flight,
                _ => continue,
            };
            match conn.stream.write(&request[flight.written..]) {
                Ok(n) => flight.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => fail(&poll, addr, c, conn, &mut driven, schedule)?,
            }
        }
        poll.poll(&mut events, Some(Duration::ZERO))?;
        for event in events.iter() {
            let c = event.token().0;
            let conn = &mut conns[c];
            match read_answer(conn) {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let Some(InFlight { intended, .. }) = conn.in_flight.take() else { continue };
                    if !(200..300).contains(&status) {
                        driven.non_2xx += 1;
                    }
                    let latency_us = intended.elapsed().as_micros().min(LATENCY_US_MAX as u128) as u64;
                    driven.latency_us.record(latency_us.max(1))?;
                    conn.next += schedule.step;
                }
                Err(_) => fail(&poll, addr, c, conn, &mut driven, schedule)?,
            }
        }
    }
    Ok(driven)
}

fn requests_of(requests: &[Vec<u8>], i: u64) -> &[u8] {
    &requests[(i % requests.len() as u64) as usize]
}

/// Counts the connection's request as an error and carries on with the next on a new connection.
fn fail(
    poll: &Poll,
    addr: SocketAddr,
    c: usize,
    conn: &mut Connection,
    driven: &mut Driven,
    schedule: &Schedule,
) -> anyhow::Result<()> {
    driven.errors += 1;
    let _ = poll.registry().deregister(&mut conn.stream);
    conn.stream = connect(poll, addr, c)?;
    conn.in_flight = None;
    conn.filled = 0;
    conn.next += schedule.step;
    Ok(())
}

fn connect(poll: &Poll, addr: SocketAddr, c: usize) -> anyhow::Result<mio::net::TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut stream = mio::net::TcpStream::from_std(stream);
    poll.registry().register(&mut stream, Token(c), Interest::READABLE)?;
    Ok(stream)
}

/// Reads what the socket holds; the answer's status once the whole answer is in.
fn read_answer(conn: &mut Connection) -> anyhow::Result<Option<u16>> {
    loop {
        if conn.filled == conn.buffer.len() {
            if conn.buffer.len() >= RESPONSE_BYTES_MAX {
                bail!("response larger than {RESPONSE_BYTES_MAX} bytes");
            }
            conn.buffer.resize(conn.buffer.len() * 2, 0);
        }
        match conn.stream.read(&mut conn.buffer[conn.filled..]) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(n) => conn.filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some((status, total)) = parse_answer(&conn.buffer[..conn.filled])? else { return Ok(None) };
    if conn.filled < total {
        return Ok(None);
    }
    if conn.filled > total {
        bail!("bytes past the answer: the server sent what was not asked for");
    }
    conn.filled = 0;
    Ok(Some(status))
}

/// The status and whole length (head and body) of the answer at the start of `bytes`, once its
/// head is in.
fn parse_answer(bytes: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes)? else { return Ok(None) };
    let body_len = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .context("a response without content-length")?;
    let total = head_len + body_len;
    if total > RESPONSE_BYTES_MAX {
        bail!("response larger than {RESPONSE_BYTES_MAX} bytes");
    }
    Ok(Some((response.code.unwrap_or(0), total)))
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: the call only changes the calling thread's affinity, with a valid set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A keep-alive HTTP/1.1 request.
pub fn raw_request(method: &str, path: &str, addr: SocketAddr, body: &str) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
    if !body.is_empty() {
        request.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    request.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A tiny server answering every request on one connection with a fixed response.
    fn answer_forever(listener: TcpListener, response: &'static [u8]) {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(response).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn run_queue_wait_is_the_second_schedstat_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedstat");
        std::fs::write(&path, "451847 2500000 3\n").unwrap();
        assert_eq!(run_queue_wait(path.to_str().unwrap()), Some(Duration::from_micros(2500)));
        std::fs::write(&path, "451847\n").unwrap();
        assert_eq!(run_queue_wait(path.to_str().unwrap()), None);
        assert_eq!(run_queue_wait(dir.path().join("absent").to_str().unwrap()), None);
    }

    #[test]
    fn a_paced_run_sends_the_schedule_and_reads_every_response() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        answer_forever(listener, b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        let requests = vec![raw_request("GET", "/", addr, "")];
        let figures = run(addr, &requests, 2000.0, 4, Duration::from_millis(500), 0).unwrap();
        assert_eq!(figures.completed, 1000);
        assert_eq!((figures.errors, figures.non_2xx), (0, 0));
        assert!(figures.p50_ms > 0.0 && figures.p50_ms <= figures.p99_ms && figures.p99_ms <= figures.max_ms);
    }

    /// A server slower than the schedule: requests wait behind each other on the one connection,
    /// and each is charged from when it was meant to leave, not from when it could.
    #[test]
    fn requests_delayed_by_a_slow_server_are_charged_from_their_intended_time() {
        const ANSWER_MS: u64 = 10;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                // The server's own slowness, which the generator must charge.
                std::thread::sleep(Duration::from_millis(ANSWER_MS));
                if n == 0 || stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                    return;
                }
            }
        });
        let requests = vec![raw_request("GET", "/", addr, "")];
        // 50 requests meant 1 ms apart, answered 10 ms apart: the last waits about 450 ms.
        let figures = run(addr, &requests, 1000.0, 1, Duration::from_millis(50), 0).unwrap();
        assert_eq!((figures.completed, figures.errors), (50, 0));
        assert!(figures.max_ms >= 400.0, "{figures:?}");
        assert!(figures.p50_ms >= 200.0, "{figures:?}");
    }

    #[test]
    fn a_server_that_hangs_up_costs_errors_not_the_run() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buffer = [0u8; 4096];
                // Reads one request and closes without an answer.
                let _ = stream.read(&mut buffer);
            }
        });
        let requests = vec![raw_request("GET", "/", addr, "")];
        let figures = run(addr, &requests, 1000.0, 2, Duration::from_millis(20), 0).unwrap();
        assert_eq!((figures.completed, figures.errors), (0, 20));
    }
}
