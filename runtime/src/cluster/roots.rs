//! Node roots: `BASE/psls-UID/JOB/NODE`, for the memory root (tmpfs) and the disk root.
//!
//! Every level is created with mode 0700 and must belong to this user, so a job never opens
//! another user's roots, and the job id level keeps jobs apart. Symbolic links are refused at
//! every level, so nobody can redirect a root somewhere else.

use crate::error::{Error, Result};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Which root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// The node-local memory root (tmpfs): page frames and recovery copies.
    Memory,
    /// The node-local disk root: the PFS and the permanent checkpoint.
    Disk,
}

impl RootKind {
    fn name(self) -> &'static str {
        match self {
            RootKind::Memory => "memory",
            RootKind::Disk => "disk",
        }
    }

    fn key(self) -> &'static str {
        match self {
            RootKind::Memory => "PSLS_MEMORY_BASE",
            RootKind::Disk => "PSLS_DISK_BASE",
        }
    }
}

/// Creates (or checks) the root of `node` for `job_id` under `base` and returns its path.
///
/// Several ranks of one node may call this at the same time.
pub fn prepare_root(
    kind: RootKind,
    base: &Path,
    job_id: &str,
    node: &str,
    require_tmpfs: bool,
) -> Result<PathBuf> {
    let err = |path: &Path, message: String| Error::Root {
        kind: kind.name(),
        path: path.to_path_buf(),
        message,
    };
    let meta = fs::metadata(base).map_err(|e| {
        err(
            base,
            format!(
                "cannot use it as a base directory ({e}); set {} to an existing directory",
                kind.key()
            ),
        )
    })?;
    if !meta.is_dir() {
        return Err(err(
            base,
            format!("is not a directory; set {} to a directory", kind.key()),
        ));
    }
    if !crate::sys::can_write_dir(base).unwrap_or(false) {
        return Err(err(
            base,
            format!(
                "is not writable by this user; set {} to a directory you can write",
                kind.key()
            ),
        ));
    }
    if kind == RootKind::Memory && require_tmpfs {
        let tmpfs =
            crate::sys::is_tmpfs(base).map_err(|e| err(base, format!("statfs failed: {e}")))?;
        if !tmpfs {
            return Err(err(
                base,
                format!(
                    "is not on tmpfs, so recovery copies held there would not be memory; set {} to a \
                     tmpfs directory such as /dev/shm, or PSLS_REQUIRE_TMPFS=false to allow it",
                    kind.key()
                ),
            ));
        }
    }
    let uid = crate::sys::uid();
    let mut path = base.to_path_buf();
    for part in [format!("psls-{uid}"), job_id.to_string(), node.to_string()] {
        path.push(part);
        private_dir(&path, uid)
            .map_err(|m| err(&path, format!("{m} (the base is set by {})", kind.key())))?;
    }
    // Prove the root is writable now rather than at the first checkpoint.
    let probe = path.join(format!(".probe-{}", std::process::id()));
    fs::write(&probe, b"psls").map_err(|e| {
        let fix = match e.raw_os_error() {
            // Full: what is there (a checkpoint, the PFS) must not be abandoned for another base.
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                "free space there (or raise the quota); moving the base elsewhere would leave \
                 this node's checkpoint and PFS files behind"
                    .to_string()
            }
            _ => format!("set {} to a writable directory", kind.key()),
        };
        err(&path, format!("cannot write into it: {e}; {fix}"))
    })?;
    let _ = fs::remove_file(&probe);
    Ok(path)
}

/// Creates `path` with mode 0700, or checks that the existing directory is ours and private.
fn private_dir(path: &Path, uid: u32) -> std::result::Result<(), String> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create it: {e}")),
    }
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot stat it: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(
            "is a symbolic link; PSLS refuses to follow links in its roots. Remove it".into(),
        );
    }
    if !meta.is_dir() {
        return Err("exists and is not a directory; remove it".into());
    }
    if meta.uid() != uid {
        return Err(format!(
            "belongs to uid {}, not to you (uid {uid}); PSLS never opens another user's roots. \
             Use another base directory",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {mode:04o}, which lets other users in; PSLS roots must be private. Run \
             `chmod 700 {}` or remove it",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psls-roots-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_private_levels_and_is_idempotent() {
        let base = scratch("ok");
        let p = prepare_root(RootKind::Disk, &base, "job1", "vnode0", true).unwrap();
        assert!(p.ends_with(format!("psls-{}/job1/vnode0", crate::sys::uid())));
        for dir in [
            p.parent().unwrap().parent().unwrap(),
            p.parent().unwrap(),
            &p,
        ] {
            assert_eq!(
                fs::metadata(dir).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        assert_eq!(
            prepare_root(RootKind::Disk, &base, "job1", "vnode0", true).unwrap(),
            p
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn refuses_open_modes_links_and_missing_base() {
        let base = scratch("mode");
        let user = base.join(format!("psls-{}", crate::sys::uid()));
        fs::create_dir(&user).unwrap();
        fs::set_permissions(&user, fs::Permissions::from_mode(0o755)).unwrap();
        let e = prepare_root(RootKind::Disk, &base, "j", "n", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0755") && e.contains("chmod 700"), "{e}");
        fs::remove_dir(&user).unwrap();
        std::os::unix::fs::symlink("/tmp", &user).unwrap();
        let e = prepare_root(RootKind::Disk, &base, "j", "n", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        fs::remove_dir_all(&base).unwrap();

        let e = prepare_root(RootKind::Disk, Path::new("/no/such/base"), "j", "n", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such/base") && e.contains("PSLS_DISK_BASE"),
            "{e}"
        );
    }

    #[test]
    fn memory_root_must_be_tmpfs_when_required() {
        let base = scratch("tmpfs");
        if crate::sys::is_tmpfs(&base).unwrap() {
            return; // TMPDIR itself is tmpfs here: nothing to refuse.
        }
        let e = prepare_root(RootKind::Memory, &base, "j", "n", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not on tmpfs") && e.contains("PSLS_MEMORY_BASE"),
            "{e}"
        );
        prepare_root(RootKind::Memory, &base, "j", "n", false).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
