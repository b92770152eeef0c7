//! Loopback ports for test processes that must be told their port before they start (a NATS
//! node's routes, a BitTorrent origin's peer address), shared by the test crates that start such
//! processes.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port picked.
const LOW: u32 = 10_000;

/// A loopback port free for TCP and UDP a moment ago. It is picked below the kernel's ephemeral
/// range, where no outgoing connection and no port-0 listener of the other tests running
/// meanwhile can take it before the process binds it (a port-0 pick was taken so once, by a
/// connection made in between), and a counter keeps this process's picks apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW).max(1_000);
    // Test binaries of other runs on the machine start elsewhere in the span.
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..span {
        let port = (LOW + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + span)
}

/// `n` ports from [`free_port`], each different.
#[allow(dead_code)] // Not every test crate that includes this file asks for several.
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}
