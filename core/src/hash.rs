//! Content hashing: sha256 over length-prefixed parts, so `("ab", "c")` and `("a", "bc")` differ.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Hex sha256 of the parts, each prefixed by its length.
pub fn content_hash<I, B>(parts: I) -> String
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
    hex::encode(h.finalize())
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
    }
}
