//! The signed manifest: what a publisher announces about one snapshot, and the only thing a
//! follower trusts before it has the bytes.
//!
//! The signature covers the manifest's canonical JSON (the serialized [`Manifest`], whose field
//! order is fixed and which holds no maps or floats) prefixed by [`SIGNATURE_DOMAIN`], so a
//! signature over some other message of the same key can never pass as a manifest's.

use std::net::SocketAddr;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey, SIGNATURE_LENGTH};
use serde::{Deserialize, Serialize};

use crate::error::{DistributeError, Result};
use crate::keys::{hex, parse_hex, public_hex};

/// Separates manifest signatures from any other use of a publisher key.
pub const SIGNATURE_DOMAIN: &[u8] = b"adsnap-manifest-v1\n";
/// A manifest is a few hundred bytes; anything much larger is not one.
pub const MANIFEST_BYTES_MAX: usize = 64 * 1024;
/// The manifest format this build writes and accepts. 2: the torrent lists the snapshot as
/// stripes (`n_stripes` files of whole pieces, see `stripes.rs`); 1 was a single-file torrent.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;
/// Bounds the explicit peers and trackers a manifest may name.
pub const MANIFEST_ADDRS_MAX: usize = 64;

/// Which slot of the server the snapshot goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Staging,
    Production,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Staging => "staging",
            Target::Production => "production",
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "staging" => Ok(Target::Staging),
            "production" => Ok(Target::Production),
            other => Err(format!("target must be staging or production, not {other:?}")),
        }
    }
}

/// What the publisher says about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`]; a manifest of another format is refused. (The default only lets
    /// a follower read the format-1 manifests of snapshots it installed before.)
    #[serde(default = "one")]
    pub format_version: u32,
    /// Files (stripes) the torrent lists the snapshot as; their concatenation is the snapshot.
    #[serde(default = "one")]
    pub n_stripes: u32,
    /// The snapshot id from its header, 16 hex digits.
    pub snapshot_id: String,
    /// The snapshot version from its header; grows with each publish.
    pub snapshot_version: u64,
    /// Size of the whole snapshot file.
    pub size_bytes: u64,
    /// xxh3-128 of the whole file (header included), 32 hex digits.
    pub file_xxh3_128: String,
    /// The torrent's info hash, 40 hex digits.
    pub info_hash: String,
    /// Magnet link with the info hash and the trackers.
    pub magnet: String,
    /// Where followers fetch the .torrent file (the origin serves it; peers can also supply it).
    pub torrent_url: Option<String>,
    /// Where the origin serves the snapshot itself over plain HTTP (followers set to
    /// `transport = "http"`, and the benchmark's baseline).
    pub http_url: Option<String>,
    /// Where followers ask which piece to start at (the origin spreads them out).
    pub start_hint_url: Option<String>,
    /// Milliseconds since the Unix epoch when the manifest was signed.
    pub created_unix_ms: i64,
    pub target: Target,
    /// True only when an operator re-published an older version on purpose.
    pub rollback: bool,
    /// Tracker announce URLs.
    pub trackers: Vec<String>,
    /// Peers known to seed the snapshot from the start (the origin).
    pub seed_peers: Vec<SocketAddr>,
}

fn one() -> u32 {
    1
}

/// A manifest with the publisher's public key and signature, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// 64 hex digits.
    pub public_key: String,
    /// 128 hex digits.
    pub signature: String,
}

impl Manifest {
    fn signed_message(&self) -> Vec<u8> {
        let mut message = SIGNATURE_DOMAIN.to_vec();
        // Serializing a struct of strings, integers and lists cannot fail.
        message.extend(serde_json::to_vec(self).expect("manifest serializes"));
        message
    }

    pub fn sign(self, key: &SigningKey) -> SignedManifest {
        let signature = key.sign(&self.signed_message());
        SignedManifest {
            public_key: public_hex(&key.verifying_key()),
            signature: hex(&signature.to_bytes()),
            manifest: self,
        }
    }

    /// Checks the fields a follower relies on before acting on them.
    pub fn check_fields(&self) -> Result<()> {
        let field = |field, reason: &str| DistributeError::ManifestField { field, reason: reason.into() };
        if self.format_version != MANIFEST_FORMAT_VERSION {
            return Err(field(
                "format_version",
                &format!("this follower reads format {MANIFEST_FORMAT_VERSION} only"),
            ));
        }
        if self.n_stripes == 0 || self.n_stripes > crate::stripes::STRIPES_MAX {
            return Err(field("n_stripes", "outside 1 to the most stripes a torrent may have"));
        }
        if parse_hex::<8>(&self.snapshot_id).is_err() {
            return Err(field("snapshot_id", "expected 16 hex digits"));
        }
        if parse_hex::<16>(&self.file_xxh3_128).is_err() {
            return Err(field("file_xxh3_128", "expected 32 hex digits"));
        }
        if parse_hex::<20>(&self.info_hash).is_err() {
            return Err(field("info_hash", "expected 40 hex digits"));
        }
        if self.size_bytes == 0 || self.size_bytes > adsnap_snapshot::SNAPSHOT_BYTES_MAX {
            return Err(field("size_bytes", "outside what a snapshot can be"));
        }
        if self.trackers.len() > MANIFEST_ADDRS_MAX || self.seed_peers.len() > MANIFEST_ADDRS_MAX {
            return Err(field("trackers", "too many trackers or seed peers"));
        }
        Ok(())
    }

    /// The file name followers give the snapshot: the id, so that two versions never collide.
    pub fn file_name(&self) -> String {
        format!("{}.snap", self.snapshot_id)
    }
}

impl SignedManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }

    /// Parses and verifies: the signature must be by one of `trusted` and the fields must be sane.
    pub fn verify(bytes: &[u8], trusted: &[VerifyingKey]) -> Result<Manifest> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(DistributeError::ManifestField {
                field: "manifest",
                reason: format!("{} bytes, over the limit of {MANIFEST_BYTES_MAX}", bytes.len()),
            });
        }
        let signed: SignedManifest = serde_json::from_slice(bytes)?;
        let bad = || DistributeError::BadSignature { key_hex: signed.public_key.clone() };
        let key_bytes = parse_hex::<32>(&signed.public_key).map_err(|_| bad())?;
        let key = trusted.iter().find(|k| k.as_bytes() == &key_bytes).ok_or_else(bad)?;
        let signature =
            Signature::from_bytes(&parse_hex::<SIGNATURE_LENGTH>(&signed.signature).map_err(|_| bad())?);
        key.verify(&signed.manifest.signed_message(), &signature).map_err(|_| bad())?;
        signed.manifest.check_fields()?;
        Ok(signed.manifest)
    }

    pub fn read(path: &Path) -> Result<SignedManifest> {
        let bytes = std::fs::read(path).map_err(DistributeError::io(path))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            n_stripes: 4,
            snapshot_id: "00112233445566ff".into(),
            snapshot_version: 7,
            size_bytes: 4096,
            file_xxh3_128: "0".repeat(32),
            info_hash: "a".repeat(40),
            magnet: "magnet:?xt=urn:btih:aaaa".into(),
            torrent_url: None,
            http_url: None,
            start_hint_url: None,
            created_unix_ms: 1,
            target: Target::Staging,
            rollback: false,
            trackers: vec!["http://127.0.0.1:1/announce".into()],
            seed_peers: vec!["127.0.0.1:2".parse().unwrap()],
        }
    }

    #[test]
    fn signed_manifest_verifies_with_its_key_only() {
        let key = crate::keys::generate();
        let other = crate::keys::generate();
        let bytes = sample().sign(&key).to_json();
        assert_eq!(
            SignedManifest::verify(&bytes, &[other.verifying_key(), key.verifying_key()]).unwrap(),
            sample()
        );
        let err = SignedManifest::verify(&bytes, &[other.verifying_key()]).unwrap_err();
        assert!(matches!(err, DistributeError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let key = crate::keys::generate();
        let signed = sample().sign(&key);
        let mut forgeries = Vec::new();
        let mut edit = |f: &dyn Fn(&mut Manifest)| {
            let mut forged = signed.clone();
            f(&mut forged.manifest);
            forgeries.push(forged.to_json());
        };
        edit(&|m| m.snapshot_version += 1);
        edit(&|m| m.target = Target::Production);
        edit(&|m| m.rollback = true);
        edit(&|m| m.info_hash = "b".repeat(40));
        edit(&|m| m.seed_peers.push("127.0.0.1:3".parse().unwrap()));
        edit(&|m| m.size_bytes += 1);
        for forged in forgeries {
            let err = SignedManifest::verify(&forged, &[key.verifying_key()]).unwrap_err();
            assert!(matches!(err, DistributeError::BadSignature { .. }), "{err}");
        }
    }

    #[test]
    fn a_key_swapped_in_by_the_forger_is_not_trusted() {
        let key = crate::keys::generate();
        let forger = crate::keys::generate();
        let mut m = sample();
        m.snapshot_version = 99;
        let bytes = m.sign(&forger).to_json();
        assert!(matches!(
            SignedManifest::verify(&bytes, &[key.verifying_key()]),
            Err(DistributeError::BadSignature { .. })
        ));
    }

    #[test]
    fn malformed_manifests_are_typed_errors() {
        let key = crate::keys::generate();
        let trusted = [key.verifying_key()];
        assert!(matches!(SignedManifest::verify(b"{", &trusted), Err(DistributeError::ManifestFormat(_))));
        assert!(SignedManifest::verify(&vec![b' '; MANIFEST_BYTES_MAX + 1], &trusted).is_err());
        let mut m = sample();
        m.info_hash = "xyz".into();
        let err = SignedManifest::verify(&m.sign(&key).to_json(), &trusted).unwrap_err();
        assert!(matches!(err, DistributeError::ManifestField { field: "info_hash", .. }), "{err}");
        let mut json: serde_json::Value = serde_json::from_slice(&sample().sign(&key).to_json()).unwrap();
        json["manifest"]["extra"] = 1.into();
        let err = SignedManifest::verify(json.to_string().as_bytes(), &trusted).unwrap_err();
        assert!(matches!(err, DistributeError::ManifestFormat(_)), "{err}");
        let mut m = sample();
        m.format_version = 1;
        let err = SignedManifest::verify(&m.sign(&key).to_json(), &trusted).unwrap_err();
        assert!(matches!(err, DistributeError::ManifestField { field: "format_version", .. }), "{err}");
    }
}
