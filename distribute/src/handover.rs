//! How a follower gives a verified snapshot to the server beside it.
//!
//! The follower's own file stays where it is (it keeps seeding it); the receiver links or copies
//! it into its own slot. Two receivers exist: the server's admin listener (`POST /admin/install`),
//! and a pair of file paths (for servers configured with `snapshot_path`/`staging_snapshot_path`
//! that are told to reload by a command, e.g. `kill -HUP`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{DistributeError, Result};
use crate::manifest::{Manifest, Target};

/// Deadline of one install request; the server verifies the snapshot before it answers.
pub const ADMIN_REQUEST_TIMEOUT_MS: u64 = 120_000;

/// Something that takes a verified snapshot file and makes a server serve it.
pub trait Handover: Send + Sync {
    /// Returns the snapshot id the receiver now serves in `manifest.target`.
    fn install(&self, path: &Path, manifest: &Manifest) -> impl Future<Output = Result<String>> + Send;
}

/// The server's admin listener.
pub struct AdminApi {
    base_url: String,
    client: reqwest::Client,
}

impl AdminApi {
    pub fn new(base_url: &str) -> Result<AdminApi> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(ADMIN_REQUEST_TIMEOUT_MS))
            .build()
            .map_err(|e| DistributeError::Config(format!("http client: {e}")))?;
        Ok(AdminApi { base_url: base_url.trim_end_matches('/').to_owned(), client })
    }
}

impl Handover for AdminApi {
    async fn install(&self, path: &Path, manifest: &Manifest) -> Result<String> {
        let url = format!("{}/admin/install", self.base_url);
        let body = serde_json::json!({"path": path, "target": manifest.target.as_str()});
        let response = self
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| DistributeError::Handover { reason: format!("{url}: {e}"), retry: true })?;
        let status = response.status();
        let reply: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            // A 4xx means the server refused this file; retrying the same bytes cannot help.
            return Err(DistributeError::Handover {
                reason: format!("{url} answered {status}: {reply}"),
                retry: status.is_server_error(),
            });
        }
        reply["snapshot_id"].as_str().map(str::to_owned).ok_or_else(|| DistributeError::Handover {
            reason: format!("{url} answered without a snapshot_id: {reply}"),
            retry: false,
        })
    }
}

/// Links the file to the server's configured snapshot paths, then runs a reload command.
pub struct FilePaths {
    pub production_path: PathBuf,
    pub staging_path: PathBuf,
    /// Run after the link is in place, e.g. `["kill", "-HUP", "<server pid>"]`; may be empty.
    pub reload_command: Vec<String>,
}

impl Handover for FilePaths {
    async fn install(&self, path: &Path, manifest: &Manifest) -> Result<String> {
        let slot = match manifest.target {
            Target::Production => &self.production_path,
            Target::Staging => &self.staging_path,
        };
        let tmp = slot.with_extension("incoming");
        let _ = std::fs::remove_file(&tmp);
        crate::origin::link_or_copy(path, &tmp)?;
        // rename over the old name: a server that has the old file mapped keeps its mapping.
        std::fs::rename(&tmp, slot).map_err(DistributeError::io(slot))?;
        if let Some((program, args)) = self.reload_command.split_first() {
            let status =
                tokio::process::Command::new(program).args(args).status().await.map_err(|e| {
                    DistributeError::Handover { reason: format!("{program}: {e}"), retry: true }
                })?;
            if !status.success() {
                return Err(DistributeError::Handover {
                    reason: format!("{program}: {status}"),
                    retry: true,
                });
            }
        }
        Ok(manifest.snapshot_id.clone())
    }
}
