//! Where rlcode keeps what `scripts/setup.sh` fetched and what it caches.

use std::path::PathBuf;

/// The data directory that `scripts/setup.sh` fills: `$RLCODE_HOME`, or `.rlcode/` in the
/// workspace these binaries were built from.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("RLCODE_HOME") {
        return PathBuf::from(h);
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.rlcode"))
}

/// The cache directory: `$RLCODE_CACHE_DIR`, or `rlcode/` under the user's cache directory
/// (`$XDG_CACHE_HOME` or `~/.cache` on Linux), or `.rlcode/cache` when there is none.
pub fn cache_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("RLCODE_CACHE_DIR") {
        return PathBuf::from(h);
    }
    match dirs::cache_dir() {
        Some(d) => d.join("rlcode"),
        None => home().join("cache"),
    }
}
