//! Distribution of snapshots: the origin publishes a snapshot once (a torrent and a signed
//! manifest), followers find the manifest, download the snapshot from the swarm (BitTorrent via
//! librqbit, peers from the tracker, the manifest and each other), verify it, and hand it to the
//! server beside them. See `STATE.md` for the follower's lifecycle.

mod error;
pub mod follow;
pub mod handover;
mod http;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod origin;
pub mod session;
pub mod stripes;
pub mod verify;

pub use error::{DistributeError, Result};
pub use follow::{FollowConfig, Follower, FollowerState, Phase};
pub use handover::{AdminApi, FilePaths, Handover};
pub use manifest::{Manifest, SignedManifest, Target};
pub use origin::{publish, Origin, OriginConfig, PublishRequest};
pub use session::SwarmConfig;
