//! Errors of the node-local page store. Each names the path, file or page concerned.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias of the page store.
pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the node-local page store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// An operating-system call on a store file failed.
    #[error("PFS store: cannot {what} {path}: {source}")]
    Io {
        /// What the store was doing (`write the data of page 3 to`, `fsync`, …).
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The disk root is full (`ENOSPC`) or the quota is exhausted (`EDQUOT`).
    #[error(
        "the disk root is full: cannot {what} {path} ({source}). The previous committed version \
         is intact; free space in the disk root (PSLS_DISK_BASE) or raise the quota, then run \
         the flush, checkpoint or import again"
    )]
    NoSpace {
        /// What the store was doing.
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// No good copy of a page is left: raised by the caller when both the primary and the
    /// mirror copy read as [`PageState::Corrupt`](super::PageState::Corrupt) or absent.
    #[error("PFS file {file:?}, page {page}: {what}")]
    Corrupt {
        /// The PFS file's name.
        file: String,
        /// The page number in the file.
        page: u64,
        /// What is wrong with each copy.
        what: String,
    },

    /// A record written in another format version: the whole volume was written by another
    /// PSLS version, so no node's copy can be used by this build.
    #[error(
        "PFS record {path} has format version {found}, and this build reads version {expected} \
         only: the volume was written by another PSLS version. Export its files with the build \
         that wrote them (`psls-pfs export`), remove the volume (DISK_BASE/psls-UID/pfs on every \
         node), and import them again with this build"
    )]
    Format {
        /// The record file.
        path: PathBuf,
        /// The version it has.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },

    /// A commit, prepare or in-flight record cannot be used. It is never taken as empty.
    #[error(
        "PFS record {path}: {why}. The store never takes a damaged record for an empty one: \
         restore the file, or remove this node's PFS directory so that the job treats the node's \
         disk root as lost and reads its pages from their mirrors"
    )]
    BadRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// A PFS file name is not allowed.
    #[error(
        "invalid PFS file name {name:?}: {why}; a name is 1 to 255 bytes, without '/' or NUL, \
         and not '.' or '..'"
    )]
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: String,
    },

    /// The store was used out of order (commit without prepare, a write at an old epoch, …).
    #[error("PFS store misuse: {0}")]
    Protocol(String),
}

/// Wraps `source`, met while doing `what` on `path`, into `NoSpace` for `ENOSPC`/`EDQUOT` and
/// into `Io` otherwise.
pub(crate) fn io_error(what: impl Into<String>, path: &Path, source: io::Error) -> StoreError {
    let what = what.into();
    let path = path.to_path_buf();
    match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::NoSpace { what, path, source },
        _ => StoreError::Io { what, path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_and_quota_become_no_space() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = io_error(
                "write",
                Path::new("/d/x"),
                io::Error::from_raw_os_error(errno),
            );
            let text = e.to_string();
            assert!(matches!(e, StoreError::NoSpace { .. }), "{text}");
            assert!(
                text.contains("/d/x") && text.contains("previous committed version is intact"),
                "{text}"
            );
        }
        let e = io_error(
            "fsync",
            Path::new("/d/y"),
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(matches!(e, StoreError::Io { .. }) && e.to_string().contains("fsync /d/y"));
    }
}
