//! Node roots as the runtime lays them out, read and wiped by the launcher's helper modes.
//!
//! Memory roots: `MEMBASE/psls-UID/JOB/NODE` (made at init) and `MEMBASE/psls-UID/ckpt-SET/NODE`
//! (the checkpoint set: `ckpt.rankR` records, frames and recovery copies). Disk roots:
//! `DISKBASE/psls-UID/JOB/NODE` and `DISKBASE/psls-UID/pfs/NODE` (the PFS store, which holds
//! the permanent checkpoints). The bases come from `PSLS_MEMORY_BASE` and `PSLS_DISK_BASE`, with
//! the runtime's defaults (`/dev/shm`; `$TMPDIR` when absolute, else `/var/tmp`).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// This process's real user id, from `/proc/self/status` (the runtime keys roots by `getuid`).
pub fn uid() -> Result<u32, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status for the user id: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| "cannot find the user id in /proc/self/status".to_string())
}

/// This host's name, as `gethostname` returns it.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The memory base: `PSLS_MEMORY_BASE`, or the runtime's default.
pub fn memory_base() -> PathBuf {
    match std::env::var_os("PSLS_MEMORY_BASE") {
        Some(b) if !b.is_empty() => PathBuf::from(b),
        _ => PathBuf::from("/dev/shm"),
    }
}

/// The disk base: `PSLS_DISK_BASE`, or the runtime's default.
pub fn disk_base() -> PathBuf {
    if let Some(b) = std::env::var_os("PSLS_DISK_BASE").filter(|b| !b.is_empty()) {
        return PathBuf::from(b);
    }
    match std::env::var_os("TMPDIR") {
        Some(t) if !t.is_empty() && Path::new(&t).is_absolute() => PathBuf::from(t),
        _ => PathBuf::from("/var/tmp"),
    }
}

/// Whether `n` can be a node, job or set name: it becomes one directory name.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// What a node's roots hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootState {
    pub memory: bool,
    pub disk: bool,
    pub pfs: bool,
    pub ckpt_records: usize,
}

/// Looks at `node`'s roots for `job` and checkpoint set `set` under the two bases.
pub fn inspect(
    mem_base: &Path,
    disk_base: &Path,
    uid: u32,
    node: &str,
    job: &str,
    set: &str,
) -> RootState {
    let mem_user = mem_base.join(format!("psls-{uid}"));
    let disk_user = disk_base.join(format!("psls-{uid}"));
    let ckpt_dir = mem_user.join(format!("ckpt-{set}")).join(node);
    let ckpt_records = fs::read_dir(&ckpt_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("ckpt.rank")
                        .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0);
    RootState {
        memory: mem_user.join(job).join(node).is_dir(),
        disk: disk_user.join(job).join(node).is_dir(),
        pfs: disk_user.join("pfs").join(node).is_dir(),
        ckpt_records,
    }
}

/// Whether `node` is listed in `RUN_DIR/dead-nodes`.
pub fn is_marked_dead(run_dir: &Path, node: &str) -> bool {
    fs::read_to_string(run_dir.join("dead-nodes"))
        .map(|t| t.lines().any(|l| l.trim() == node))
        .unwrap_or(false)
}

/// Appends `node` to `RUN_DIR/dead-nodes` (once).
pub fn mark_dead(run_dir: &Path, node: &str) -> Result<(), String> {
    if is_marked_dead(run_dir, node) {
        return Ok(());
    }
    let path = run_dir.join("dead-nodes");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(node);
    text.push('\n');
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Removes every directory `BASE/psls-UID/*/NODE` (one per job id and checkpoint set), and
/// returns the paths removed. Nothing outside `BASE/psls-UID` is touched, and a symbolic link
/// there is removed as a link, never followed.
pub fn wipe_node(base: &Path, uid: u32, node: &str) -> Result<Vec<PathBuf>, String> {
    if !valid_name(node) {
        return Err(format!("{node:?} is not a node name"));
    }
    let user = base.join(format!("psls-{uid}"));
    match fs::symlink_metadata(&user) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "{} is not a directory: not wiping anything",
                user.display()
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", user.display())),
    }
    let entries =
        fs::read_dir(&user).map_err(|e| format!("cannot list {}: {e}", user.display()))?;
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", user.display()))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir {
            continue;
        }
        let target = entry.path().join(node);
        let r = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&target),
            Ok(_) => fs::remove_file(&target),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        r.map_err(|e| format!("cannot remove {}: {e}", target.display()))?;
        removed.push(target);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psls-launch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn inspect_and_wipe_stay_inside_the_user_directory() {
        let base = scratch("roots");
        let user = base.join("psls-7");
        for d in ["job/vnode1", "job/vnode2", "ckpt-s/vnode1"] {
            fs::create_dir_all(user.join(d)).unwrap();
        }
        fs::write(user.join("ckpt-s/vnode1/ckpt.rank2"), b"x").unwrap();
        fs::write(user.join("ckpt-s/vnode1/ckpt.rank3"), b"x").unwrap();
        fs::write(user.join("ckpt-s/vnode1/ckpt.rank3.tmp"), b"x").unwrap();
        fs::create_dir_all(base.join("other/vnode1")).unwrap();
        let st = inspect(&base, &base, 7, "vnode1", "job", "s");
        assert_eq!(
            st,
            RootState {
                memory: true,
                disk: true,
                pfs: false,
                ckpt_records: 2
            }
        );
        let mut removed = wipe_node(&base, 7, "vnode1").unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![user.join("ckpt-s/vnode1"), user.join("job/vnode1")]
        );
        assert!(user.join("job/vnode2").is_dir());
        assert!(base.join("other/vnode1").is_dir(), "outside psls-UID");
        assert!(!inspect(&base, &base, 7, "vnode1", "job", "s").memory);
        assert!(wipe_node(&base, 7, "..").is_err());
        assert_eq!(
            wipe_node(&base, 8, "vnode1").unwrap(),
            Vec::<PathBuf>::new()
        );
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn dead_nodes_file() {
        let dir = scratch("dead");
        assert!(!is_marked_dead(&dir, "vnode2"));
        mark_dead(&dir, "vnode2").unwrap();
        mark_dead(&dir, "vnode2").unwrap();
        mark_dead(&dir, "vnode3").unwrap();
        assert!(is_marked_dead(&dir, "vnode2"));
        assert_eq!(
            fs::read_to_string(dir.join("dead-nodes")).unwrap(),
            "vnode2\nvnode3\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
