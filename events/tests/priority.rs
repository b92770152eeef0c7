//! The fsync thread's priority. In a test binary of its own: the test reads every thread of its
//! process, so no other log may be open in it.

use std::time::{Duration, Instant};

use adsnap_events::threads::nice_of_threads_named;
use adsnap_events::{EventLog, EventLogConfig};

#[test]
fn the_fsync_thread_runs_at_the_configured_nice_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = EventLogConfig { dir: dir.path().join("events"), background_nice: 7, ..Default::default() };
    let log = EventLog::open(&config).unwrap();
    // The thread sets its own priority as it starts: poll until it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nice = nice_of_threads_named("adsnap-events-f").unwrap();
        if nice == [7] {
            break;
        }
        assert!(Instant::now() < deadline, "the fsync thread's nice values: {nice:?}");
        std::thread::yield_now();
    }
    // The thread that opened the log keeps its priority.
    let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    assert_eq!(own[own.rfind(')').unwrap() + 2..].split(' ').nth(16), Some("0"));
    drop(log);
}
