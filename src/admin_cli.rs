//! `adsnap install`, `adsnap promote` and `adsnap rollback`: ask a running server, through its
//! admin endpoints, to change the snapshot it serves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// How long an admin call may take: an install verifies the whole file first.
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The server's admin address (`admin_listen_addr`).
    #[arg(long, env = "ADSNAP_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    admin_url: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InstallTarget {
    Production,
    Staging,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The snapshot file; the server links or copies it into its slot and verifies it.
    snapshot: PathBuf,
    /// The slot to serve it from.
    #[arg(long, value_enum, default_value = "staging")]
    target: InstallTarget,
    #[command(flatten)]
    admin: AdminArgs,
}

fn call(admin: &AdminArgs, path: &str, body: Option<String>) -> anyhow::Result<ExitCode> {
    let url = format!("{}{path}", admin.admin_url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ADMIN_CALL_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let request = agent.post(&url).header("content-type", "application/json");
    let mut response = request
        .send(body.unwrap_or_default())
        .with_context(|| format!("calling {url}; is the server running with this admin address?"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().with_context(|| format!("reading the reply of {url}"))?;
    let reply: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url} answered {status} with {text:?}"))?;
    if status == 200 {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        Ok(ExitCode::SUCCESS)
    } else {
        let error = reply["error"].as_str().unwrap_or(&text);
        eprintln!("error: the server refused ({status}): {error}");
        Ok(ExitCode::from(1))
    }
}

pub fn run_install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    // The server resolves the path, possibly from another working folder.
    let path = std::path::absolute(&args.snapshot)
        .with_context(|| format!("resolving {}", args.snapshot.display()))?;
    let target = match args.target {
        InstallTarget::Production => "production",
        InstallTarget::Staging => "staging",
    };
    let body = serde_json::json!({ "path": path, "target": target }).to_string();
    call(&args.admin, "/admin/install", Some(body))
}

pub fn run_promote(args: AdminArgs) -> anyhow::Result<ExitCode> {
    call(&args, "/admin/promote", None)
}

pub fn run_rollback(args: AdminArgs) -> anyhow::Result<ExitCode> {
    call(&args, "/admin/rollback", None)
}
