//! A constant-rate (open-loop) load generator: latency at a fixed request rate rather than at
//! saturation. Each request has an intended send time on a fixed schedule and its latency is
//! counted from that time, so a server that stalls is charged for every request its stall
//! delayed (no coordinated omission, as in wrk2). wrk, closed-loop, only measures at peak.
//!
//! Every connection is a blocking thread pinned to one CPU (the servers run on another) that
//! serves its share of the schedule: requests `c, c + n, c + 2n, …` of `n` connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

/// Longest wait for one response; past it the request counts as an error.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read.
const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// Latencies recorded up to this (in microseconds), at 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

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
}

/// Sends `requests` (raw HTTP/1.1 requests with keep-alive, used in turn) to `addr` at
/// `rate_per_s` for `duration` over `connections` connections, each thread pinned to `cpu`.
pub fn run(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    rate_per_s: f64,
    connections: usize,
    duration: Duration,
    cpu: usize,
) -> anyhow::Result<PacedFigures> {
    if requests.is_empty() || rate_per_s <= 0.0 || connections == 0 {
        bail!("a paced run needs requests, a positive rate and connections");
    }
    let n_total = (rate_per_s * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate_per_s);
    let start = Instant::now() + Duration::from_millis(100);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|c| {
                scope.spawn(move || {
                    pin_to(cpu);
                    connection(addr, requests, c as u64, connections as u64, n_total, start, interval)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a load thread panicked")))
            .collect::<Vec<_>>()
    });
    let mut total = Histogram::<u64>::new_with_max(LATENCY_US_MAX, 3)?;
    let (mut errors, mut non_2xx) = (0, 0);
    for result in results {
        let share = result??;
        total.add(&share.latency_us)?;
        errors += share.errors;
        non_2xx += share.non_2xx;
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Ok(PacedFigures {
        completed: total.len(),
        errors,
        non_2xx,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: total.max() as f64 / 1000.0,
    })
}

struct Share {
    latency_us: Histogram<u64>,
    errors: u64,
    non_2xx: u64,
}

fn connection(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    first: u64,
    step: u64,
    n_total: u64,
    start: Instant,
    interval: Duration,
) -> anyhow::Result<Share> {
    let mut share = Share { latency_us: Histogram::new_with_max(LATENCY_US_MAX, 3)?, errors: 0, non_2xx: 0 };
    let mut stream = connect(addr)?;
    let mut buffer = vec![0u8; 64 << 10];
    let mut i = first;
    while i < n_total {
        let intended = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let request = &requests[(i % requests.len() as u64) as usize];
        match exchange(&mut stream, request, &mut buffer) {
            Ok(status) => {
                if !(200..300).contains(&status) {
                    share.non_2xx += 1;
                }
                let latency_us = intended.elapsed().as_micros().min(LATENCY_US_MAX as u128) as u64;
                share.latency_us.record(latency_us.max(1))?;
            }
            Err(_) => {
                share.errors += 1;
                stream = connect(addr)?;
            }
        }
        i += step;
    }
    Ok(share)
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    Ok(stream)
}

/// Writes one request and reads its whole response; returns the status.
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> anyhow::Result<u16> {
    stream.write_all(request)?;
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            if buffer.len() >= RESPONSE_BYTES_MAX {
                bail!("response larger than {RESPONSE_BYTES_MAX} bytes");
            }
            buffer.resize(buffer.len() * 2, 0);
        }
        let n = stream.read(&mut buffer[filled..])?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = response.parse(&buffer[..filled])? {
            let status = response.code.unwrap_or(0);
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
            if buffer.len() < total {
                buffer.resize(total, 0);
            }
            while filled < total {
                let n = stream.read(&mut buffer[filled..total])?;
                if n == 0 {
                    bail!("the server closed the connection mid-response");
                }
                filled += n;
            }
            return Ok(status);
        }
    }
}

/// Pins the calling thread to `cpu` and makes its sleeps precise: the default 50 µs timer slack
/// would otherwise be added to every measured latency.
fn pin_to(cpu: usize) {
    // SAFETY: both calls only change attributes of the calling thread, with valid arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
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
}
