//! Output files written safely: into a new temporary file beside the
//! destination (created exclusively, with a random name, so a planted
//! symlink is never followed), renamed over the destination only when
//! complete, removed on any failure.

use anyhow::{Context, Result};
use std::path::Path;
use tempfile::NamedTempFile;

/// Mode bits of written files before the umask, as fopen's 0666.
#[cfg(unix)]
const OUTPUT_MODE: u32 = 0o666;

/// A new, exclusively created temporary file in `dst`'s directory.
pub fn beside(dst: &Path) -> Result<NamedTempFile> {
    let dir = match dst.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(".rllama-tmp");
    // an ordinary output file's mode (the umask still applies), not 0600
    #[cfg(unix)]
    b.permissions(std::os::unix::fs::PermissionsExt::from_mode(OUTPUT_MODE));
    b.tempfile_in(dir).with_context(|| format!("cannot create a temporary file beside {}", dst.display()))
}

/// Move the finished temporary file to `dst` (replacing it, or a link there,
/// never writing through one).
pub fn persist(tmp: NamedTempFile, dst: &Path) -> Result<()> {
    tmp.persist(dst).map(|_| ()).map_err(|e| e.error).with_context(|| format!("cannot write {}", dst.display()))
}
