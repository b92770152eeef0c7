//! Publisher keys: ed25519 key pairs stored as hex text files, and the set of trusted public keys
//! a follower checks manifests against.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey, PUBLIC_KEY_LENGTH, SECRET_KEY_LENGTH};

use crate::error::{DistributeError, Result};

/// Makes a new key pair from the operating system's random source.
pub fn generate() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; SECRET_KEY_LENGTH]>())
}

/// Writes the secret key (hex, mode 0600) and the public key (hex) beside each other.
pub fn write_pair(key: &SigningKey, secret_path: &Path, public_path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret_path)
        .map_err(DistributeError::io(secret_path))?;
    writeln!(file, "{}", hex(&key.to_bytes())).map_err(DistributeError::io(secret_path))?;
    std::fs::write(public_path, format!("{}\n", public_hex(&key.verifying_key())))
        .map_err(DistributeError::io(public_path))
}

pub fn public_hex(key: &VerifyingKey) -> String {
    hex(key.as_bytes())
}

pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let bytes = read_hex_file::<SECRET_KEY_LENGTH>(path)?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let bytes = read_hex_file::<PUBLIC_KEY_LENGTH>(path)?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| DistributeError::BadKey { path: path.to_owned(), reason: e.to_string() })
}

/// Parses a public key given as 64 hex digits (config files carry keys inline).
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey> {
    let bytes = parse_hex::<PUBLIC_KEY_LENGTH>(text.trim())
        .map_err(|reason| DistributeError::Config(format!("publisher key {text:?}: {reason}")))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| DistributeError::Config(format!("publisher key {text:?}: {e}")))
}

fn read_hex_file<const N: usize>(path: &Path) -> Result<[u8; N]> {
    let text = std::fs::read_to_string(path).map_err(DistributeError::io(path))?;
    parse_hex::<N>(text.trim()).map_err(|reason| DistributeError::BadKey { path: path.to_owned(), reason })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_hex<const N: usize>(text: &str) -> std::result::Result<[u8; N], String> {
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(format!("expected {} hex digits, found {} characters", 2 * N, text.len()));
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("not hex at character {}", 2 * i))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate();
        let (secret, public) = (dir.path().join("k"), dir.path().join("k.pub"));
        write_pair(&key, &secret, &public).unwrap();
        assert_eq!(read_signing_key(&secret).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        assert!(write_pair(&key, &secret, &public).is_err(), "an existing secret key is never overwritten");
    }

    #[test]
    fn malformed_keys_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        for text in ["", "zz", &"g".repeat(64), &"a".repeat(63)] {
            std::fs::write(&path, text).unwrap();
            assert!(matches!(read_verifying_key(&path), Err(DistributeError::BadKey { .. })), "{text:?}");
        }
        assert!(parse_verifying_key("12").is_err());
    }
}
