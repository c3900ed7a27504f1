//! `Idempotency-Key`s of submissions. A submit split into several requests sends
//! `<base>-<chunk index>` with each, where the base is the caller's `--idempotency-key`
//! or a digest of everything that decides the requests' contents (the input, how it is
//! split, the options). Running the same submit again after a network error therefore
//! sends the same keys, and the API answers the batches it already created instead of
//! creating new ones; changing the input or an option gives new keys.

use sha2::{Digest, Sha256};

/// Builds the digest of a submission's identity from its parts, each length-prefixed so
/// that no two different sequences of parts hash alike.
pub(crate) struct Identity(Sha256);

impl Identity {
    /// `kind` names the input kind (`dir`, `manifest`, `s3`): equal parts of different
    /// kinds never share a key.
    pub(crate) fn new(kind: &str) -> Identity {
        let mut identity = Identity(Sha256::new());
        identity.part(b"voxq-cli submit v1");
        identity.part(kind.as_bytes());
        identity
    }

    pub(crate) fn part(&mut self, bytes: &[u8]) -> &mut Identity {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub(crate) fn number(&mut self, n: u64) -> &mut Identity {
        self.part(&n.to_le_bytes())
    }

    /// The base of the keys: `voxq-` and 32 hex digits (128 bits of the digest).
    pub(crate) fn base(self) -> String {
        let digest = self.0.finalize();
        format!("voxq-{}", hex::encode(&digest[..16]))
    }
}

/// The key of request `index` (0-based) of a submission.
pub(crate) fn chunk_key(base: &str, index: usize) -> String {
    format!("{base}-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_the_documented_digest() {
        // Recomputed here from the definition, so a change of the encoding (which would
        // make re-runs after an upgrade create duplicates) fails this test.
        let mut identity = Identity::new("s3");
        identity.part(b"s3://bucket/prefix/").number(7);
        let mut expected = Sha256::new();
        for part in [
            &b"voxq-cli submit v1"[..],
            b"s3",
            b"s3://bucket/prefix/",
            &7u64.to_le_bytes(),
        ] {
            expected.update((part.len() as u64).to_le_bytes());
            expected.update(part);
        }
        let expected = format!("voxq-{}", hex::encode(&expected.finalize()[..16]));
        assert_eq!(identity.base(), expected);
        assert_eq!(expected.len(), "voxq-".len() + 32);
    }

    #[test]
    fn the_same_input_gives_the_same_keys_and_others_do_not() {
        let base = |kind: &str, parts: &[&str]| {
            let mut identity = Identity::new(kind);
            for part in parts {
                identity.part(part.as_bytes());
            }
            identity.base()
        };
        assert_eq!(base("dir", &["a", "b"]), base("dir", &["a", "b"]));
        assert_ne!(base("dir", &["a", "b"]), base("manifest", &["a", "b"]));
        // Length prefixes: moving a boundary between parts changes the key.
        assert_ne!(base("dir", &["ab", ""]), base("dir", &["a", "b"]));
        assert_eq!(chunk_key("job-42", 3), "job-42-3");
    }
}
