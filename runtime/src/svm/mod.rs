//! `svm`: the shared virtual memory. One global address range at the same base on every rank;
//! pages fetched and invalidated underneath by a write-invalidate protocol over MPI RMA, so that
//! memory is sequentially consistent for every program (see `service.rs` for the protocol).
//!
//! Frames live in a sparse tmpfs file per rank on the node's memory root, at the page's offset in
//! the range, mapped twice (`sys::vm`): the protected application view at the global base, and a
//! read-write alias exposed in an RMA window, through which other ranks fetch pages. The
//! directory (`directory.rs`) is distributed over the ranks: page p's home is rank p mod size.

mod checkpoint;
mod directory;
mod files;
mod service;
mod table;

pub(crate) use checkpoint::{Phase1, Placement};
pub(crate) use files::FileMap;

pub use table::PageInfo;

use crate::config::DirectoryRequests;
use crate::error::{Error, Result};
use crate::rma::{Comm, LockedWindow, ReduceOp, Window};
use crate::sys::fault::{FaultHandler, Watched};
use crate::sys::vm::{Access, FrameFile, VmError};
use directory::Directory;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use table::PageTable;

/// The most ranks the directory's copyset bitmask can name.
pub const MAX_RANKS: usize = 64;

/// Counters of the SVM on one rank.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub read_faults: AtomicU64,
    pub write_faults: AtomicU64,
    pub fetches: AtomicU64,
    pub prefetches: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub invalidations_sent: AtomicU64,
    pub invalidations_received: AtomicU64,
    pub downgrades: AtomicU64,
    pub pages_loaded: AtomicU64,
    pub pages_flushed: AtomicU64,
    pub claimed: AtomicU64,
    pub cow: AtomicU64,
    pub local_upgrades: AtomicU64,
    pub home_locks: AtomicU64,
}

/// A snapshot of one rank's SVM counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SvmStats {
    /// Read faults served.
    pub read_faults: u64,
    /// Write faults served.
    pub write_faults: u64,
    /// Pages fetched from another rank (prefetched ones included).
    pub fetches: u64,
    /// Pages fetched ahead of a fault (`PSLS_PREFETCH`).
    pub prefetches: u64,
    /// Bytes fetched from other ranks.
    pub bytes_moved: u64,
    /// Invalidations this rank sent.
    pub invalidations_sent: u64,
    /// Invalidations this rank received.
    pub invalidations_received: u64,
    /// Downgrades (write to read) this rank received.
    pub downgrades: u64,
    /// Pages of mapped files this rank loaded from its node's disk root.
    pub pages_loaded: u64,
    /// Dirty pages of mapped files this rank held and flushed.
    pub pages_flushed: u64,
    /// Untouched pages taken for writing ahead of a write fault (`PSLS_PREFETCH`).
    pub claimed: u64,
    /// Recovery frames copied out to pure recovery slots before a write (copy-on-write).
    pub copied_on_write: u64,
    /// Write faults on pages this rank still owned for writing (a checkpoint or a flush had
    /// protected them locally), served without the directory.
    pub local_upgrades: u64,
    /// Directory entries this rank's faults locked through a request to the entry's home
    /// (`PSLS_DIRECTORY`), not with RMA atomics.
    pub home_locks: u64,
}

/// State shared by the application threads and the service thread.
pub(crate) struct Core {
    rank: usize,
    page_size: usize,
    base: usize,
    npages: usize,
    table: PageTable,
    /// The current epoch: pages written now are dirty since it (the checkpoint advances it).
    epoch: AtomicU32,
    /// Adjacent pages fetched along with a read miss (`PSLS_PREFETCH`).
    prefetch: std::sync::atomic::AtomicUsize,
    /// Sequential misses, for working ahead without `PSLS_PREFETCH`: read misses, first
    /// writes to untouched pages, and rewrites after a checkpoint (`try_local_upgrade`).
    seq_fetch: service::Sequential,
    seq_claim: service::Sequential,
    seq_upgrade: service::Sequential,
    /// Work ahead of a served fault (prefetch, claims) still running on the service thread.
    ahead_in_flight: std::sync::atomic::AtomicUsize,
    /// Whether faults on pages homed elsewhere lock and update the directory through requests
    /// to the home's service thread (`PSLS_DIRECTORY`), rather than with RMA atomics.
    home_requests: bool,
    /// Directory unlocks sent to homes and not yet acknowledged.
    unlocks_in_flight: std::sync::atomic::AtomicUsize,
    /// Pages this rank's service thread is sending (`MPI_Isend`) and MPI may still be reading.
    pending_sends: Mutex<Vec<crate::rma::PendingSend>>,
    allocated: Vec<AtomicBool>,
    counters: Counters,
    seq: AtomicU64,
    stop: AtomicBool,
    max_sleep: std::time::Duration,
    faults: FaultHandler,
    /// Mapped PFS files.
    files: std::sync::RwLock<Vec<FileMap>>,
    /// The PFS volume (absent in unit tests that run the SVM alone).
    volume: Option<Arc<crate::pfs::Volume>>,
    /// The directory of the frame file and the recovery area.
    ckpt_dir: std::path::PathBuf,
    /// This rank's recovery copies (open once the job checkpoints or restarts).
    recovery: std::sync::OnceLock<crate::ckpt::area::RecoveryArea>,
    /// What a restart restored, installed as the application allocates again.
    restored: Mutex<checkpoint::Restored>,
    // Dropped in this order: windows (collective frees), then the service communicator, then the
    // view and the frame file.
    dir: Directory,
    frames_win: LockedWindow<'static>,
    comm: Comm,
    view: crate::sys::vm::AppView,
    frames: FrameFile,
}

/// A live global array: the how-manieth allocation it was (allocations happen in the same
/// order on every rank and in every run, so a restarted job finds its arrays by this number),
/// and its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArrayRec {
    pub serial: u64,
    pub first: usize,
    pub pages: usize,
}

/// The handler's fast path for write faults (see [`Core::try_local_upgrade`]); `ctx` is the
/// `Core`, which `Svm` keeps alive until `shutdown` has removed this function.
fn fast_write(ctx: usize, addr: usize) -> bool {
    // SAFETY: ctx is `Arc::as_ptr` of the Svm's Core, installed in `Svm::new` and removed in
    // `Svm::shutdown` before the Svm (and so its Arc) can be dropped.
    let core = unsafe { &*(ctx as *const Core) };
    let Some(off) = addr.checked_sub(core.base) else {
        return false;
    };
    let page = off / core.page_size;
    page < core.npages
        && core.allocated[page].load(Ordering::Acquire)
        && core.try_local_upgrade(page)
}

/// A remote RMA atomic at least this slow (in µs) makes `PSLS_DIRECTORY=auto` send directory
/// requests to the homes. Shared memory with CPU atomics (Open MPI's `osc/sm`) answers in well
/// under a microsecond, and network atomics in hardware in a few; software emulations need the
/// target to poll: MPICH 4.0 on one host measured 21 µs to 8 ms, UCX over TCP ~200 µs.
const AUTO_HOME_ATOMIC_US: u64 = 5;

/// Whether faults send their directory requests to the pages' homes (collective over `comm`).
fn home_requests(setting: DirectoryRequests, dir: &Directory, comm: &Comm) -> Result<bool> {
    let home = match setting {
        DirectoryRequests::Rma => false,
        DirectoryRequests::Home => true,
        DirectoryRequests::Auto => {
            let mine = dir.remote_atomic_us(comm.rank());
            let slowest = crate::api::agree(comm, mine)?;
            let slowest = comm.allreduce_u64(slowest, ReduceOp::Max)?;
            let home = slowest >= AUTO_HOME_ATOMIC_US;
            if comm.rank() == 0 {
                tracing::info!(target: "psls::svm", "directory requests: {} (a remote RMA atomic takes {slowest} µs; PSLS_DIRECTORY)", if home { "to the homes" } else { "RMA" });
            }
            home
        }
    };
    Ok(home)
}

/// The SVM of this rank.
pub(crate) struct Svm {
    core: Arc<Core>,
    service: Option<JoinHandle<()>>,
    free: Mutex<Vec<(usize, usize)>>,
    arrays: Mutex<Vec<ArrayRec>>,
    next_serial: AtomicU64,
}

impl std::fmt::Debug for Svm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Svm {{ base: {:#x}, pages: {} }}",
            self.core.base, self.core.npages
        )
    }
}

/// Sets up how `view` write-protects readable pages, as `PSLS_WRITE_PROTECT` asks.
fn write_protection(
    asked: crate::config::WriteProtection,
    view: &mut crate::sys::vm::AppView,
) -> Result<()> {
    use crate::config::WriteProtection as W;
    if asked == W::Mprotect {
        return Ok(());
    }
    match view.use_userfaultfd() {
        Ok(()) => {
            tracing::debug!(target: "psls::svm", "write-protection: userfaultfd");
            Ok(())
        }
        Err(e) if asked == W::Auto => {
            tracing::debug!(target: "psls::svm", "write-protection: mprotect (userfaultfd: {e})");
            Ok(())
        }
        Err(e) => Err(Error::Config {
            key: "PSLS_WRITE_PROTECT".into(),
            value: "userfaultfd".into(),
            source_name: format!("unavailable here: {e}"),
            allowed: "auto or mprotect here; userfaultfd needs Linux 6.4 or later, userfaultfd allowed (root, vm.unprivileged_userfaultfd, no seccomp filter against it) and the memory root on tmpfs".into(),
        }),
    }
}

impl Svm {
    /// Sets up the global range on this rank (collective over `comm`'s ranks, which must all
    /// pass the same base, size and page size).
    pub fn new(
        cfg: &crate::Config,
        comm: &Comm,
        memory_root: &Path,
        fresh: bool,
        volume: Option<Arc<crate::pfs::Volume>>,
    ) -> Result<Svm> {
        let (rank, size) = (comm.rank(), comm.size());
        if size > MAX_RANKS {
            return Err(Error::Protocol(format!(
                "this version of PSLS supports at most {MAX_RANKS} ranks (the directory's copyset is a 64-bit mask); the job has {size}"
            )));
        }
        let page_size = cfg.page_size;
        if page_size % crate::sys::vm::page_size() != 0 {
            return Err(Error::Config {
                key: "PSLS_PAGE_SIZE".into(),
                value: page_size.to_string(),
                source_name: "configuration".into(),
                allowed: format!(
                    "a multiple of the system page size ({})",
                    crate::sys::vm::page_size()
                ),
            });
        }
        let len = cfg.svm_size - cfg.svm_size % page_size;
        let npages = len / page_size;
        let frames_path = memory_root.join(format!("frames.rank{rank}"));
        // Every rank learns whether every rank could create and map its frames (a full memory
        // root or an address range in use on one node stops them all, with its error).
        let mapped = FrameFile::open(&frames_path, len, fresh)
            .map_err(|e| {
                Error::io(
                    format!("creating the frame file {}", frames_path.display()),
                    e,
                )
            })
            .and_then(|frames| {
                let mut view = frames.map_view(cfg.svm_base).map_err(|e| match e {
                    VmError::Taken => Error::AddressTaken {
                        base: cfg.svm_base,
                        len,
                    },
                    VmError::Os(e) => Error::io(
                        format!(
                            "mapping the global range {:#x}..{:#x} (PSLS_SVM_BASE, \
                             PSLS_SVM_SIZE; a lower base or a smaller size may fit)",
                            cfg.svm_base,
                            cfg.svm_base + len
                        ),
                        e,
                    ),
                })?;
                write_protection(cfg.write_protect, &mut view)?;
                let alias = frames.map_alias().map_err(|e| {
                    Error::io(format!("mapping the alias of {}", frames_path.display()), e)
                })?;
                Ok((frames, view, alias))
            });
        let (frames, view, alias) = crate::api::agree(comm, mapped)?;
        let alias_range = (alias.as_ptr() as usize, alias.len());
        let svc_comm = comm.dup()?;
        let frames_win = LockedWindow::new(Window::over_mapping(&svc_comm, alias)?)?;
        let dir = Directory::new(&svc_comm, npages)?;
        let home_requests = home_requests(cfg.directory, &dir, &svc_comm)?;
        let faults = crate::api::agree(
            comm,
            FaultHandler::install(cfg.svm_base, len)
                .map_err(|e| Error::io("installing the SIGSEGV handler", e)),
        )?;
        faults.watch(Watched::FramesAlias, alias_range.0, alias_range.1);
        faults.set_write_protect_bus(
            view.write_protect() == crate::sys::vm::WriteProtect::Userfaultfd,
        );
        let core = Arc::new(Core {
            rank,
            page_size,
            base: cfg.svm_base,
            npages,
            table: PageTable::new(npages),
            epoch: AtomicU32::new(1),
            prefetch: std::sync::atomic::AtomicUsize::new(service::encode_prefetch(cfg.prefetch)),
            seq_fetch: Default::default(),
            seq_claim: Default::default(),
            seq_upgrade: Default::default(),
            ahead_in_flight: std::sync::atomic::AtomicUsize::new(0),
            home_requests,
            unlocks_in_flight: std::sync::atomic::AtomicUsize::new(0),
            pending_sends: Mutex::new(Vec::new()),
            allocated: (0..npages).map(|_| AtomicBool::new(false)).collect(),
            counters: Counters::default(),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            max_sleep: cfg.service_max_sleep,
            faults,
            files: std::sync::RwLock::new(Vec::new()),
            volume,
            ckpt_dir: memory_root.to_path_buf(),
            recovery: std::sync::OnceLock::new(),
            restored: Mutex::new(checkpoint::Restored::default()),
            dir,
            frames_win,
            comm: svc_comm,
            view,
            frames,
        });
        // Write faults on pages this rank still owns for writing are served in the handler.
        crate::sys::fault::set_fast_path(Some((fast_write, Arc::as_ptr(&core) as usize)));
        let svc = Arc::clone(&core);
        let spawned = std::thread::Builder::new()
            .name(format!("psls-service-{rank}"))
            .spawn(move || svc.service_loop())
            .map_err(|e| Error::io("starting the service thread", e));
        // A rank that could not start its thread stops every rank (they would wait for it in
        // `init`'s next collective); a thread started elsewhere is told to stop.
        let service = match crate::api::agree(comm, spawned) {
            Ok(s) => s,
            Err(e) => {
                crate::sys::fault::set_fast_path(None);
                core.stop.store(true, Ordering::Release);
                return Err(e);
            }
        };
        tracing::debug!(target: "psls::svm", "global range {:#x}+{:#x}, {} pages of {} bytes", cfg.svm_base, len, npages, page_size);
        Ok(Svm {
            core,
            service: Some(service),
            free: Mutex::new(vec![(0, npages)]),
            arrays: Mutex::new(Vec::new()),
            next_serial: AtomicU64::new(0),
        })
    }

    /// The page size.
    pub fn page_size(&self) -> usize {
        self.core.page_size
    }

    /// The home rank of the page holding `addr`, if `addr` is in the global range.
    pub fn home_of(&self, addr: usize) -> Option<usize> {
        let c = &self.core;
        (addr >= c.base && addr < c.base + c.npages * c.page_size)
            .then(|| self.core.dir.home((addr - c.base) / c.page_size).0)
    }

    /// Allocates `bytes` of global memory (collective over `comm`): every rank gets the same
    /// address. Pages read as zeros until written.
    ///
    /// `backing` is the hidden PFS file a permanent checkpoint saved this array to (a restarted
    /// job gets it back): its written pages load from disk on first touch, like a mapped file's.
    pub fn alloc(
        &self,
        comm: &Comm,
        bytes: usize,
        backing: Option<crate::pfs::FileMeta>,
    ) -> Result<usize> {
        let pages = bytes.div_ceil(self.core.page_size).max(1);
        let start = self.reserve(comm, bytes)?;
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        self.arrays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ArrayRec {
                serial,
                first: start,
                pages,
            });
        let backed = backing.is_some();
        if let Some(meta) = backing {
            self.attach(start, pages, meta);
        }
        for p in start..start + pages {
            self.core.allocated[p].store(true, Ordering::Release);
        }
        if backed {
            // Nobody may touch the array before every rank knows its backing file: a leader
            // serving a LOAD looks the page up in it.
            comm.barrier()?;
        }
        Ok(self.core.base + start * self.core.page_size)
    }

    /// The allocation serial the next `alloc` gets.
    pub(crate) fn next_array_serial(&self) -> u64 {
        self.next_serial.load(Ordering::Relaxed)
    }

    /// The live global arrays.
    pub(crate) fn arrays(&self) -> Vec<ArrayRec> {
        self.arrays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Backs the array at pages `first..first + pages` with the PFS file `meta` (its hidden
    /// checkpoint file): from now on its pages are flushed to and loaded from that file.
    pub(crate) fn attach(&self, first: usize, pages: usize, meta: crate::pfs::FileMeta) {
        let mut files = self.core.files.write().unwrap_or_else(|p| p.into_inner());
        files.retain(|m| m.first != first);
        files.push(FileMap {
            first,
            reserved: pages,
            meta,
        });
    }

    /// Reserves pages for `bytes` of the global range (collective) and returns the first page
    /// number; the pages are not usable until marked allocated.
    fn reserve(&self, comm: &Comm, bytes: usize) -> Result<usize> {
        let pages = bytes.div_ceil(self.core.page_size).max(1);
        let found = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            let slot = free.iter().position(|&(_, n)| n >= pages);
            slot.map(|i| {
                let (start, n) = free[i];
                if n == pages {
                    free.remove(i);
                } else {
                    free[i] = (start + pages, n - pages);
                }
                start
            })
        };
        // The directory entries of the pages are initialized before the reductions below: no
        // rank leaves them before every rank has entered them, so no peer can reach an entry
        // that its home has not cleared yet. (If the ranks disagree, the pages stay free, and
        // clearing a free page's entries is harmless.)
        // A rank that fails here (an `mprotect` refused) fails the reservation on every rank.
        let installed = match found {
            Some(start) => self
                .core
                .dir
                .clear_local(self.core.rank, start..start + pages)
                .and_then(|()| self.core.install_restored(start..start + pages)),
            None => Ok(()),
        };
        let mine = [found.map_or(u64::MAX, |s| s as u64), pages as u64];
        let all = crate::api::agree_gather(comm, installed.map(|()| mine.to_vec()));
        // Every rank must have reserved the same pages; otherwise none keeps them (so that the
        // next allocation, made the same way everywhere, still succeeds).
        let same = all
            .as_ref()
            .ok()
            .map(|all| all.iter().all(|a| a[..] == mine[..]));
        if same != Some(true) {
            if let Some(start) = found {
                self.release(start, pages);
            }
        }
        let all = all?;
        if let Some((r, a)) = all.iter().enumerate().find(|(_, a)| a[1] != pages as u64) {
            return Err(Error::Protocol(format!(
                "global allocation is collective: every rank must allocate the same sizes in the same order, and this rank asked for {pages} pages where rank {r} asked for {}",
                a[1]
            )));
        }
        let Some(start) = found else {
            return Err(Error::OutOfRange {
                requested: bytes,
                size: self.core.npages * self.core.page_size,
            });
        };
        if same != Some(true) {
            return Err(Error::Protocol(
                "global allocation is collective: every rank must allocate the same sizes in the same order (the ranks' free space differs: a collective allocation or free was made on some ranks only)".into(),
            ));
        }
        Ok(start)
    }

    /// Puts `pages` pages from `start` back in the free list, merged with their neighbours.
    fn release(&self, start: usize, pages: usize) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push((start, pages));
        free.sort_unstable();
        // Merge neighbours so that large allocations fit again.
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(free.len());
        for &(s, n) in free.iter() {
            match merged.last_mut() {
                Some((ls, ln)) if *ls + *ln == s => *ln += n,
                _ => merged.push((s, n)),
            }
        }
        *free = merged;
    }

    /// Every page in a global array or a mapped file, ascending.
    pub(crate) fn used_pages(&self) -> impl Iterator<Item = usize> {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut used = Vec::new();
        let mut at = 0;
        for (s, n) in free {
            if s > at {
                used.push(at..s);
            }
            at = s + n;
        }
        if at < self.core.npages {
            used.push(at..self.core.npages);
        }
        used.into_iter().flatten()
    }

    /// Frees global memory allocated by [`Svm::alloc`] (collective).
    pub fn free(&self, comm: &Comm, addr: usize, bytes: usize) -> Result<()> {
        let c = &self.core;
        let start = (addr - c.base) / c.page_size;
        let pages = bytes.div_ceil(c.page_size).max(1);
        // Nobody may still be using the memory, and the service threads must be quiet on it;
        // and every rank must free the same array.
        self.quiesce();
        let all = comm.allgather_u64s(&[start as u64, pages as u64])?;
        if let Some((r, a)) = all
            .iter()
            .enumerate()
            .find(|(_, a)| a[..] != [start as u64, pages as u64])
        {
            return Err(Error::Protocol(format!(
                "free is collective: every rank must free the same array, and this rank freed {pages} pages at page {start} where rank {r} freed {} at page {}",
                a.get(1).copied().unwrap_or(0),
                a.first().copied().unwrap_or(0)
            )));
        }
        let freed = (|| {
            for p in start..start + pages {
                c.allocated[p].store(false, Ordering::Release);
            }
            // One `mprotect` over the whole range: it joins mappings, never splits them.
            c.set_access_run(start..start + pages, Access::None)?;
            for p in start..start + pages {
                // The last checkpoint may still need the page: its recovery copy outlives the
                // frame until the next checkpoint commits.
                c.preserve_recovery(p)?;
                c.table.set(p, PageInfo::default());
            }
            c.frames
                .punch_hole(start * c.page_size, pages * c.page_size)
                .map_err(|e| Error::io("freeing frames", e))
        })();
        // Every rank fails if one did (instead of leaving the others in a barrier).
        crate::api::agree(comm, freed)?;
        let was_array = {
            let mut arrays = self.arrays.lock().unwrap_or_else(|p| p.into_inner());
            let n = arrays.len();
            arrays.retain(|a| a.first != start);
            arrays.len() != n
        };
        if was_array {
            // A saved array's backing file goes with it (the permanent checkpoint drops the
            // file from the catalog).
            let mut files = self.core.files.write().unwrap_or_else(|p| p.into_inner());
            files.retain(|m| m.first != start);
        }
        self.release(start, pages);
        Ok(())
    }

    /// What this rank's page table says of the page holding `addr`, if `addr` is in the global
    /// range.
    pub fn page_info(&self, addr: usize) -> Option<PageInfo> {
        let c = &self.core;
        (addr >= c.base && addr < c.base + c.npages * c.page_size)
            .then(|| c.table.get((addr - c.base) / c.page_size))
    }

    /// Sets how far to work ahead of misses.
    pub fn set_prefetch(&self, p: crate::config::Prefetch) {
        self.core
            .prefetch
            .store(service::encode_prefetch(p), Ordering::Relaxed);
    }

    /// How this rank's view write-protects readable pages (`PSLS_WRITE_PROTECT`, as it came
    /// out on this kernel).
    pub fn write_protection(&self) -> crate::WriteProtection {
        match self.core.view.write_protect() {
            crate::sys::vm::WriteProtect::Userfaultfd => crate::WriteProtection::Userfaultfd,
            crate::sys::vm::WriteProtect::Mprotect => crate::WriteProtection::Mprotect,
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SvmStats {
        let c = &self.core.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SvmStats {
            read_faults: l(&c.read_faults),
            write_faults: l(&c.write_faults),
            fetches: l(&c.fetches),
            prefetches: l(&c.prefetches),
            bytes_moved: l(&c.bytes_fetched),
            invalidations_sent: l(&c.invalidations_sent),
            invalidations_received: l(&c.invalidations_received),
            downgrades: l(&c.downgrades),
            pages_loaded: l(&c.pages_loaded),
            pages_flushed: l(&c.pages_flushed),
            claimed: l(&c.claimed),
            copied_on_write: l(&c.cow),
            local_upgrades: l(&c.local_upgrades),
            home_locks: l(&c.home_locks),
        }
    }

    /// Waits until this rank's service thread has finished the work it does ahead of faults
    /// already served (prefetches, claims), which changes directory entries and page tables
    /// after the faulting thread resumed. Operations that bypass the protocol (freeing, listing
    /// dirty pages for a flush) call it first.
    pub(crate) fn quiesce(&self) {
        while self.core.ahead_in_flight.load(Ordering::Acquire) > 0
            || self.core.unlocks_in_flight.load(Ordering::Acquire) > 0
        {
            std::thread::yield_now();
        }
    }

    /// Stops the service thread. Every rank must have stopped touching global memory (the
    /// caller passes a barrier first), since nobody would serve a fault afterwards.
    pub fn shutdown(&mut self) {
        crate::sys::fault::set_fast_path(None);
        self.core.stop.store(true, Ordering::Release);
        if let Some(h) = self.service.take() {
            if h.join().is_err() {
                tracing::error!(target: "psls::svm", "the service thread panicked");
            }
        }
    }
}

impl Drop for Svm {
    fn drop(&mut self) {
        self.shutdown();
    }
}
