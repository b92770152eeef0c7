//! `adsnap profiles` end to end through the binary: gen, load (with bad lines), get, and the
//! store configured from the `[profiles]` table of a config file.

use std::path::Path;
use std::process::{Command, Output};

fn adsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adsnap"))
        .args(args)
        .env("ADSNAP_LOG", "warn")
        .env_remove("ADSNAP_CONFIG")
        .env_remove("ADSNAP_PROFILES_EMBEDDED_PATH")
        .output()
        .expect("adsnap runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn gen_load_get_round_trip_with_bad_lines_reported() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("users.jsonl");
    let out = adsnap(&["profiles", "gen", "--users", "2000", "--seed", "5", "--out", &path(&generated)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = std::fs::read_to_string(&generated).unwrap();
    assert_eq!(lines.lines().count(), 2000);
    let user_7: serde_json::Value = serde_json::from_str(lines.lines().nth(7).unwrap()).unwrap();
    assert_eq!(user_7["user"], "gen-5-7");

    let mut input = lines.clone();
    input.push_str("{\"user\":\"u-bad-country\",\"country\":\"ZZ\"}\n");
    input.push('\n');
    input.push_str("{\"user\":\"u-ok\",\"country\":\"JP\",\"language\":\"ja\",\"os\":\"ios\",\"segments\":[9,3],\"installed\":[\"com.example.app\"],\"n_clicks\":4}\n");
    input.push_str("{\"user\":\"u-extra\",\"colour\":\"red\"}\n");
    let file = dir.path().join("import.jsonl");
    std::fs::write(&file, &input).unwrap();
    let store = path(&dir.path().join("store"));
    let out = adsnap(&["profiles", "--path", &store, "load", &path(&file), "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "bad lines give exit status 2: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{}:2001: country \"ZZ\"", path(&file))), "{stderr}");
    assert!(stderr.contains(&format!("{}:2004: unknown field `colour`", path(&file))), "{stderr}");
    assert!(!stderr.contains(":2002:"), "blank lines are skipped: {stderr}");
    assert!(text(&out.stdout).contains("loaded 2,001 profiles"), "{}", text(&out.stdout));

    let out = adsnap(&["profiles", "--path", &store, "get", "u-ok"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let profile: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(profile["country"], "JP");
    assert_eq!(profile["os"], "ios");
    assert_eq!(profile["segments"], serde_json::json!([3, 9]));
    assert_eq!(profile["n_clicks"], 4);
    assert_eq!(profile["installed_hashes"][0], adsnap_snapshot::key_hash("com.example.app"));

    // A generated user reads back as generated, through its hex key this time.
    let key = format!("{:016x}", adsnap_profile_store::UserKey::of_id("gen-5-7").0);
    let out = adsnap(&["profiles", "--path", &store, "get", "--key", &key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in
        ["country", "language", "os", "segments", "installed_hashes", "n_impressions", "last_seen_unix_s"]
    {
        assert_eq!(read[field], user_7[field], "{field}");
    }

    let out = adsnap(&["profiles", "--path", &store, "get", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no profile for user key"), "{}", text(&out.stderr));
}

#[test]
fn delete_erases_one_user_for_good_and_says_whether_there_was_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.jsonl");
    std::fs::write(
        &file,
        "{\"user\":\"u-1\",\"country\":\"DE\",\"n_clicks\":2}\n{\"user\":\"u-2\",\"country\":\"FR\"}\n",
    )
    .unwrap();
    let store = path(&dir.path().join("store"));
    let out = adsnap(&["profiles", "--path", &store, "load", &path(&file), "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = adsnap(&["profiles", "--path", &store, "delete", "u-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["deleted"], true);
    // Gone in a new process (the deletion is on disk), and only that user.
    let out = adsnap(&["profiles", "--path", &store, "get", "u-1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = adsnap(&["profiles", "--path", &store, "get", "u-2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Deleting again finds nothing.
    let out = adsnap(&["profiles", "--path", &store, "delete", "u-1"]);
    assert_eq!(out.status.code(), Some(1));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["deleted"], false);
}

#[test]
fn the_store_is_configured_from_the_profiles_table_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("from-config");
    let config = dir.path().join("adsnap.toml");
    std::fs::write(
        &config,
        format!("listen_addr = \"127.0.0.1:0\"\n\n[profiles]\nread_deadline_ms = 3\n\n[profiles.embedded]\npath = {:?}\n", path(&store)),
    )
    .unwrap();
    let file = dir.path().join("one.jsonl");
    std::fs::write(&file, "{\"user\":\"alice\",\"segments\":[1]}\n").unwrap();
    let out = adsnap(&["profiles", "--config", &path(&config), "load", &path(&file), "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(store.is_dir(), "the store went where the config said");
    let out = adsnap(&["profiles", "--config", &path(&config), "get", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::write(&config, "[profiles]\nread_deadline = 3\n").unwrap();
    let out = adsnap(&["profiles", "--config", &path(&config), "get", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("read_deadline"), "{}", text(&out.stderr));
}
