//! The admin endpoints, on their own listener: install a snapshot file into a slot, promote
//! staging, roll back, reload, and list the slots. A distributor (`adsnap follow`) and the
//! `adsnap promote` / `adsnap rollback` commands call them.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::Request;
use serde_json::json;

use crate::error::ServeError;
use crate::handlers::{json_reply, snapshot_health, Reply};
use crate::served::Served;
use crate::server::State;
use crate::slots::Target;

/// Largest admin request body: a path and a word.
const ADMIN_BODY_BYTES_MAX: usize = 16 << 10;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    /// The snapshot file to install; it is linked or copied, never moved.
    path: PathBuf,
    target: Target,
}

pub(crate) async fn route(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Result<Reply, Infallible> {
    let reply = match (request.method().as_str(), request.uri().path()) {
        ("POST", "/admin/install") => install(&state, request).await,
        ("POST", "/admin/promote") => changed(&state, state.promote().await, "production"),
        ("POST", "/admin/rollback") => changed(&state, state.rollback().await, "production"),
        ("POST", "/admin/reload") => match state.reload().await {
            Ok(()) => snapshots(&state),
            Err(err) => refused(&err),
        },
        ("GET", "/admin/snapshots") => snapshots(&state),
        (method, path) => {
            crate::handlers::unrouted(method, path, crate::server::ADMIN_PATHS, "no admin endpoint")
        }
    };
    Ok(reply)
}

async fn install(state: &State, request: Request<hyper::body::Incoming>) -> Reply {
    let body = match http_body_util::Limited::new(request.into_body(), ADMIN_BODY_BYTES_MAX).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return json_reply(400, &json!({ "error": format!("the body could not be read: {err}") }))
        }
    };
    let install: InstallRequest = match serde_json::from_slice(&body) {
        Ok(install) => install,
        Err(err) => {
            let error =
                format!("expected {{\"path\": FILE, \"target\": \"production\" | \"staging\"}}: {err}");
            return json_reply(400, &json!({ "error": error }));
        }
    };
    let target = match install.target {
        Target::Production => "production",
        Target::Staging => "staging",
    };
    changed(state, state.install_snapshot(&install.path, install.target).await, target)
}

fn changed(state: &State, result: Result<Arc<Served>, ServeError>, target: &str) -> Reply {
    match result {
        Ok(snapshot) => {
            let header = snapshot.header();
            let body = json!({
                "snapshot_id": header.id_hex(),
                "version": header.snapshot_version,
                "target": target,
                "slots": slots_json(state),
            });
            json_reply(200, &body)
        }
        Err(err) => refused(&err),
    }
}

/// A refused change: the server goes on serving what it had.
fn refused(err: &ServeError) -> Reply {
    let status = match err {
        ServeError::Snapshot(adsnap_snapshot::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            404
        }
        ServeError::Slot { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 404,
        ServeError::Snapshot(_) | ServeError::Refused { .. } => 422,
        ServeError::NoStaging | ServeError::NoPrevious(_) => 409,
        _ => 500,
    };
    json_reply(status, &json!({ "error": err.to_string() }))
}

fn slots_json(state: &State) -> serde_json::Value {
    let now_ms = state.now_unix_s() * 1000;
    let slots = &state.slots;
    json!({
        "production": snapshot_health(&state.production.load(), &slots.production, now_ms),
        "staging": state.staging.load_full().map(|s| snapshot_health(&s, &slots.staging, now_ms)),
        "previous": { "path": slots.previous, "exists": slots.previous.exists() },
    })
}

fn snapshots(state: &State) -> Reply {
    json_reply(200, &slots_json(state))
}
