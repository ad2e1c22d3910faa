//! The runtime's only direct calls into libc (besides MPI, which lives in `rma`).
//!
//! Every function here is safe to call; each unsafe block says why it is sound.

pub(crate) mod fault;
pub mod global;
pub(crate) mod vm;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `TMPFS_MAGIC` from `<linux/magic.h>`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The real user id of this process.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// This host's name, as `gethostname` returns it.
pub fn host_name() -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of buf.len() bytes; gethostname NUL-terminates within it
    // when the name fits, and we pass len - 1 so that the last byte always stays 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Whether `path` lives on a tmpfs file system.
pub fn is_tmpfs(path: &Path) -> io::Result<bool> {
    let c = cstring(path)?;
    // SAFETY: statfs is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st is a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    Ok(st.f_type as i64 == TMPFS_MAGIC)
}

/// Whether this process may write into and search the directory `path`.
pub fn can_write_dir(path: &Path) -> io::Result<bool> {
    let c = cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path; access only reads it.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) };
    Ok(rc == 0)
}

/// Total physical memory of this host in bytes, from `sysconf` (used when hwloc reports none).
pub fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages <= 0 || page <= 0 {
        0
    } else {
        pages as u64 * page as u64
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Kills this process at once with `SIGKILL`: no destructors, no flush, as in a crash.
pub(crate) fn kill_self() -> ! {
    // SAFETY: getpid and kill have no memory preconditions; SIGKILL to our own pid ends the
    // process, which is the intent.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    // SIGKILL cannot be caught, so this only runs if kill itself failed.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_shm_is_tmpfs_and_root_is_not() {
        if Path::new("/dev/shm").exists() {
            assert!(is_tmpfs(Path::new("/dev/shm")).unwrap());
        }
        assert!(!is_tmpfs(Path::new("/proc")).unwrap());
    }

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().unwrap().is_empty());
    }

    #[test]
    fn physical_memory_is_plausible() {
        assert!(physical_memory() > 64 << 20);
    }
}
