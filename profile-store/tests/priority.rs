//! The store's threads and their priority. In a test binary of its own: the test reads every
//! thread of its process, so no other store may be open in it.

use adsnap_profile_store::{Profiles, ProfilesConfig};

/// (thread name, nice value) of every thread of this process, from /proc.
fn threads_nice() -> Vec<(String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let (Ok(name), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue; // the thread ended meanwhile
        };
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        threads.push((name.trim().to_owned(), nice));
    }
    threads
}

#[tokio::test]
async fn the_store_background_threads_run_at_the_configured_nice_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProfilesConfig::default();
    config.embedded.path = dir.path().join("profiles");
    config.embedded.background_nice = 7;
    let profiles = Profiles::open(&config).await.unwrap();
    // A new thread carries its parent's name until it sets its own: wait until every thread
    // the store started has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let threads = loop {
        let threads = threads_nice();
        let named = threads.iter().any(|(name, _)| name == "profile-writer")
            && threads.iter().any(|(name, _)| name == "profile-persist")
            && !threads.iter().any(|(name, _)| name == "profile-open");
        if named {
            break threads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store's threads never took their names: {threads:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let background: Vec<_> = threads
        .iter()
        // The scan at open keeps the opener's priority (it may also have finished already).
        .filter(|(name, _)| {
            (name.starts_with("profile-") && name != "profile-keys") || name.starts_with("fjall")
        })
        .collect();
    assert!(background.iter().any(|(name, _)| name == "profile-writer"), "{threads:?}");
    assert!(background.iter().any(|(name, _)| name.starts_with("fjall")), "{threads:?}");
    assert!(background.iter().all(|(_, nice)| *nice == 7), "{threads:?}");
    assert!(
        threads.iter().filter(|(name, _)| name == "profile-keys").all(|(_, nice)| *nice == 0),
        "{threads:?}"
    );
    // The thread that opened the store keeps its priority.
    let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    assert_eq!(own[own.rfind(')').unwrap() + 2..].split(' ').nth(16), Some("0"));
    drop(profiles);
}
