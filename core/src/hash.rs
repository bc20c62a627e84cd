//! Content hashing: sha256 over length-prefixed parts, so `("ab", "c")` and `("a", "bc")` differ.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// sha256 of the parts, each prefixed by its length: the digest's 32 bytes (for seeds).
pub fn content_digest<I, B>(parts: I) -> [u8; 32]
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut h = Sha256::new();
    for p in parts {
        let p = p.as_ref();
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// [`content_digest`] in hex (for names and keys).
pub fn content_hash<I, B>(parts: I) -> String
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    hex::encode(content_digest(parts))
}

/// Word `i` (0..4) of a digest: bytes 8i..8i+8, big-endian (the value of hex digits 16i..16i+16).
pub fn digest_word(digest: &[u8; 32], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&digest[8 * i..8 * i + 8]);
    u64::from_be_bytes(w)
}

/// Hex sha256 of a file's bytes.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(content_hash(["ab", "c"]), content_hash(["a", "bc"]));
        assert_eq!(content_hash(["x"]), content_hash([b"x".to_vec()]));
        assert_eq!(content_hash(["x"]).len(), 64);
        let d = content_digest(["x"]);
        let hex = content_hash(["x"]);
        for i in 0..4 {
            let want = u64::from_str_radix(&hex[16 * i..16 * (i + 1)], 16).unwrap();
            assert_eq!(digest_word(&d, i), want);
        }
    }
}
