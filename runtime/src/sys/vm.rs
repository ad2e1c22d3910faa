//! Address space and frames: the fixed global range, the frame file behind it, and its two
//! mappings.
//!
//! The global range is reserved at the same address on every rank. Page frames live in one sparse
//! tmpfs file per rank under the node's memory root, at the page's offset in the range, so a
//! page's frame needs no lookup and a page never touched costs no memory. The file is mapped
//! twice: over the reserved range as the application's view, whose protections the fault path
//! changes page by page, and once more read-write as the alias that the runtime and MPI use. MPI
//! never touches a protected address.
//!
//! **Write-protection.** With `mprotect` alone, every page whose protection differs from its
//! neighbours' is a mapping of its own in the kernel: a writer of every tenth page splits the
//! view into thousands of mappings, and the checkpoint that protects them again pays for merging
//! them all (and `vm.max_map_count` bounds how sparse a writer may be). Where the kernel offers
//! it (Linux 5.19 or later: `userfaultfd` write-protection of shared memory, with faults
//! delivered as `SIGBUS`), the view instead keeps every accessible page read-write in the page
//! tables' protection, and a readable page is write-protected in its page table entry by
//! `UFFDIO_WRITEPROTECT`, which never splits a mapping. `mprotect` then only separates pages
//! with no access from accessible ones. See [`WriteProtect`] and `docs/design.md`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The access the application has to a page of its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// No access: the next load or store faults.
    #[default]
    None,
    /// Loads only.
    Read,
    /// Loads and stores.
    Write,
}

impl Access {
    fn prot(self) -> libc::c_int {
        match self {
            Access::None => libc::PROT_NONE,
            Access::Read => libc::PROT_READ,
            Access::Write => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// Why the global range could not be set up.
#[derive(Debug)]
pub enum VmError {
    /// Something is already mapped inside the requested range.
    Taken,
    /// Any other failure of the system call.
    Os(io::Error),
}

/// The application view: the frame file mapped `MAP_SHARED | MAP_FIXED` at `base`, initially
/// with no access. Unmapped on drop.
#[derive(Debug)]
pub struct AppView {
    base: usize,
    len: usize,
    /// The userfaultfd that write-protects readable pages, when the view uses one.
    uffd: Option<std::os::fd::OwnedFd>,
}

/// How the view write-protects readable pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteProtect {
    /// `mprotect(PROT_READ)`: a write raises `SIGSEGV`.
    Mprotect,
    /// `userfaultfd` write-protection: a write raises `SIGBUS`.
    Userfaultfd,
}

// userfaultfd's ABI (linux/userfaultfd.h; the same numbers on x86_64 and aarch64).
const UFFD_API: u64 = 0xaa;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// One rank's sparse frame file on the memory root.
#[derive(Debug)]
pub struct FrameFile {
    file: File,
    len: usize,
}

impl FrameFile {
    /// Opens the frame file `path` with `len` bytes: emptied when `fresh`, else with the frames
    /// a crashed run left in it (a restart keeps its recovery copies).
    pub fn open(path: &Path, len: usize, fresh: bool) -> io::Result<FrameFile> {
        let file = open_sized(path, len as u64, fresh)?;
        Ok(FrameFile { file, len })
    }

    /// Maps the whole file over `[base, base + len)`, with no access, failing with
    /// [`VmError::Taken`] if anything is mapped there already. Every rank calls this with the
    /// same base, so global pointers mean the same on every rank.
    pub fn map_view(&self, base: usize) -> Result<AppView, VmError> {
        if base % page_size() != 0 {
            return Err(VmError::Os(io::Error::new(
                io::ErrorKind::InvalidInput,
                "base is not page aligned",
            )));
        }
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails with EEXIST
        // instead, so no memory the process uses can be unmapped here. The fd is open for the
        // call's duration.
        let p = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                self.len,
                libc::PROT_NONE,
                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE | libc::MAP_NORESERVE,
                self.file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EEXIST) {
                VmError::Taken
            } else {
                VmError::Os(e)
            });
        }
        if p as usize != base {
            // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat the address as a hint.
            // SAFETY: p..p+len is the mapping just created, used by nobody else.
            unsafe { libc::munmap(p, self.len) };
            return Err(VmError::Taken);
        }
        Ok(AppView {
            base,
            len: self.len,
            uffd: None,
        })
    }

    /// Maps the whole file read-write at an address the kernel picks: the alias that the runtime
    /// and MPI use.
    pub fn map_alias(&self) -> io::Result<memmap2::MmapMut> {
        // SAFETY: the file is ours (created and truncated by this value) and only the runtime
        // writes it through this alias; the application's view of it is a separate mapping whose
        // accesses the coherence protocol orders with the runtime's.
        unsafe {
            memmap2::MmapOptions::new()
                .len(self.len)
                .map_mut(&self.file)
        }
    }

    /// Frees the memory of `len` bytes at `offset` (both page aligned): the next read of them
    /// through either mapping returns zeros.
    pub fn punch_hole(&self, offset: usize, len: usize) -> io::Result<()> {
        punch_file(&self.file, offset, len)
    }

    /// Gives `len` bytes at `offset` (both page aligned) memory if they are a hole, without
    /// changing any data: fails with `ENOSPC` when the memory root is full, and with
    /// `UnexpectedEof` when the file no longer reaches that far (someone truncated it).
    pub fn allocate(&self, offset: usize, len: usize) -> io::Result<()> {
        let end = offset.saturating_add(len) as u64;
        if self.file.metadata()?.len() < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the frame file was truncated",
            ));
        }
        // SAFETY: fallocate only changes the file's blocks; the fd is valid.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Bytes of memory the file holds now.
    #[cfg(test)]
    pub fn resident_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.blocks() * 512)
    }
}

impl AppView {
    /// Write-protects readable pages with `userfaultfd` from now on (call it before any page
    /// has access). Fails when the kernel does not offer write-protection of shared memory with
    /// faults delivered as `SIGBUS` (Linux before 5.19 or 6.4, `userfaultfd` forbidden by
    /// `vm.unprivileged_userfaultfd` or a seccomp filter); the view then keeps `mprotect`.
    pub fn use_userfaultfd(&mut self) -> io::Result<()> {
        // SAFETY: userfaultfd takes flags only and returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("the userfaultfd system call failed ({e}): it is missing or forbidden"),
            ));
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let wanted =
            UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: wanted,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api`, which `api` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("the kernel refused userfaultfd's features ({e})"),
            ));
        }
        if api.features & wanted != wanted {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel lacks userfaultfd write-protection of shared memory",
            ));
        }
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: self.base as u64,
                len: self.len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register`; the range is
        // this view's own mapping.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("the global range cannot be write-protected with userfaultfd ({e}): its frames must be in shared memory, a memory root on tmpfs"),
            ));
        }
        self.uffd = Some(fd);
        Ok(())
    }

    /// How this view write-protects readable pages.
    pub fn write_protect(&self) -> WriteProtect {
        if self.uffd.is_some() {
            WriteProtect::Userfaultfd
        } else {
            WriteProtect::Mprotect
        }
    }

    /// Sets the application's access to `len` bytes at `offset` in the range (page aligned).
    ///
    /// Fails with `ENOMEM` when the process would exceed `vm.max_map_count` mappings (each run
    /// of pages with one protection is a mapping); the caller turns that into an error naming
    /// the fix.
    ///
    /// With `userfaultfd`, a readable page is write-protected before it gets `PROT_READ |
    /// PROT_WRITE`, and a writable one loses its write-protection: the protection of the
    /// mapping only changes between no access and access, and is left alone (no split, no
    /// merge) between reading and writing.
    pub fn protect(&self, offset: usize, len: usize, access: Access) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "protect outside the global range",
            ));
        }
        let prot = match (&self.uffd, access) {
            (Some(fd), Access::Read | Access::Write) => {
                let mut wp = UffdioWriteprotect {
                    range: UffdioRange {
                        start: (self.base + offset) as u64,
                        len: len as u64,
                    },
                    mode: if access == Access::Read {
                        UFFDIO_WRITEPROTECT_MODE_WP
                    } else {
                        0
                    },
                };
                // SAFETY: UFFDIO_WRITEPROTECT reads and writes a `struct
                // uffdio_writeprotect`; the range lies inside this view, registered with fd.
                if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut wp) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Access::Write.prot()
            }
            _ => access.prot(),
        };
        // SAFETY: the range lies inside this view (checked above), which only the application's
        // global data lives in; changing its protection cannot affect any other memory.
        let rc = unsafe { libc::mprotect((self.base + offset) as *mut libc::c_void, len, prot) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for AppView {
    fn drop(&mut self) {
        // SAFETY: base..base+len is the mapping this value created; after this nobody may touch
        // global addresses, which the runtime guarantees by dropping the view at finalize only.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// Opens (creating, mode 0600) the private file `path` of `len` bytes, read-write: emptied when
/// `fresh`, else keeping what a previous process left in it.
pub fn open_sized(path: &Path, len: u64, fresh: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(fresh)
        .mode(0o600)
        .open(path)?;
    file.set_len(len)?;
    Ok(file)
}

/// Frees the memory of `len` bytes at `offset` of `file` (both page aligned): they read as
/// zeros afterwards.
pub fn punch_file(file: &File, offset: usize, len: usize) -> io::Result<()> {
    // SAFETY: fallocate only changes the file's blocks; the fd is valid.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// The current `vm.max_map_count`.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_and_alias_share_frames_and_holes_read_zero() {
        let dir = std::env::temp_dir().join(format!("psls-vm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let len = 16 * 4096;
        let ff = FrameFile::open(&dir.join("frames"), len, true).unwrap();
        let base = 0x3e00_0000_0000usize + (std::process::id() as usize % 1024) * (1 << 30);
        let view = ff.map_view(base).unwrap();
        // The same base cannot be taken twice.
        assert!(matches!(ff.map_view(base), Err(VmError::Taken)));
        let mut alias = ff.map_alias().unwrap();
        alias[4096 * 3 + 5] = 42;
        view.protect(4096 * 3, 4096, Access::Read).unwrap();
        // SAFETY: page 3 of the view was just made readable.
        let v = unsafe { std::ptr::read_volatile((base + 4096 * 3 + 5) as *const u8) };
        assert_eq!(v, 42);
        view.protect(4096 * 3, 4096, Access::Write).unwrap();
        // SAFETY: page 3 is now writable.
        unsafe { std::ptr::write_volatile((base + 4096 * 3 + 6) as *mut u8, 7) };
        assert_eq!(alias[4096 * 3 + 6], 7);
        assert!(ff.resident_bytes().unwrap() >= 4096);
        ff.punch_hole(4096 * 3, 4096).unwrap();
        assert_eq!(alias[4096 * 3 + 5], 0);
        assert!(view.protect(len, 4096, Access::Read).is_err());
        drop(view);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The kernel mappings that lie in `[base, base + len)`.
    fn mappings_in(base: usize, len: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|l| {
                let (range, _) = l.split_once(' ')?;
                let (a, _) = range.split_once('-')?;
                usize::from_str_radix(a, 16).ok()
            })
            .filter(|&a| a.wrapping_sub(base) < len)
            .count()
    }

    #[test]
    fn userfaultfd_write_protection_does_not_split_the_view() {
        // userfaultfd write-protects shared memory (tmpfs), not files on disk.
        let dir =
            std::path::Path::new("/dev/shm").join(format!("psls-vm-wp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pages = 16;
        let len = pages * 4096;
        let ff = FrameFile::open(&dir.join("frames"), len, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let base = 0x3d00_0000_0000usize + (std::process::id() as usize % 1024) * (1 << 30);
        for uffd in [false, true] {
            let mut view = ff.map_view(base).unwrap();
            if uffd {
                if let Err(e) = view.use_userfaultfd() {
                    assert!(
                        !crate::sys::fault::tests::kernel_has_shmem_uffd_wp(),
                        "userfaultfd write-protection failed on a kernel that has it: {e}"
                    );
                    eprintln!("skipped the userfaultfd half: {e}");
                    return;
                }
                assert_eq!(view.write_protect(), WriteProtect::Userfaultfd);
            }
            // Every page accessible; every other one writable.
            view.protect(0, len, Access::Read).unwrap();
            for p in (0..pages).step_by(2) {
                view.protect(p * 4096, 4096, Access::Write).unwrap();
            }
            let n = mappings_in(base, len);
            if uffd {
                assert_eq!(n, 1, "one mapping, whatever the pages' write-protection");
            } else {
                assert_eq!(n, pages, "mprotect makes a mapping of each page");
            }
            // Reads of readable pages work (their data is the frame file's: zeros).
            // SAFETY: page 1 is readable.
            let v = unsafe { std::ptr::read_volatile((base + 4096 + 8) as *const u64) };
            assert_eq!(v, 0);
        }
    }
}
