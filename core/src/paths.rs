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

/// Write `bytes` to `path` so that a reader sees the old file or the new one, never half of
/// one: a temporary file in the same directory (created there, removed if anything fails),
/// then a rename. Concurrent writers of the same path replace each other whole.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    publish_mode(tmp.path())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Give a file written through a temporary file (created 0600) the mode `File::create` gives
/// under the usual umask, 0644: results and checkpoints are meant to be read by others.
pub fn publish_mode(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn write_atomic_replaces_whole_and_leaves_nothing_beside() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.txt");
        super::write_atomic(&p, b"one").unwrap();
        super::write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let missing = t.path().join("no/such/dir/f");
        assert!(super::write_atomic(&missing, b"x").is_err());
    }
}
