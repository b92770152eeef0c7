//! Priorities of background threads: the event log's fsync thread, the server's snapshot opener
//! and releaser, and the profile store's threads give way to the threads answering requests.

use std::io;

/// Checks a configured background nice value: 0 (normal priority) to 19 (the lowest); the
/// error names the `key` it was set by.
pub fn check_background_nice(key: &str, nice: i8) -> Result<(), String> {
    match (0..=19).contains(&nice) {
        true => Ok(()),
        false => Err(format!("{key} = {nice} is outside 0..=19")),
    }
}

/// Sets the calling thread's nice value (Linux: per thread, inherited by threads it starts).
/// Raising it needs no privilege; failing leaves the priority as it was, which only costs request
/// latency, and is logged naming `thread`.
pub fn lower_this_thread_priority(nice: i8, thread: &str) {
    if nice <= 0 {
        return;
    }
    // SAFETY: setpriority with `who` 0 changes only the calling thread on Linux; no pointers.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, libc::c_int::from(nice)) };
    if result != 0 {
        tracing::warn!(nice, thread, error = %io::Error::last_os_error(), "a background thread keeps normal priority");
    }
}

/// The nice value of every thread of this process named `name`, from /proc (the kernel keeps a
/// thread's first 15 bytes of name; nice is field 19 of `stat`). For health checks and tests.
pub fn nice_of_threads_named(name: &str) -> io::Result<Vec<i64>> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue; // the thread ended meanwhile
        };
        if comm.trim() != name {
            continue;
        }
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let field = stat.rfind(')').and_then(|end| stat.get(end + 2..)).and_then(|s| s.split(' ').nth(16));
        match field.and_then(|f| f.parse().ok()) {
            Some(value) => nice.push(value),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unreadable {}", path.display()),
                ))
            }
        }
    }
    Ok(nice)
}
