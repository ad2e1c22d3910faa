//! Global memory in the public API: typed global arrays, block distribution, global mutexes and
//! the SVM's counters.

use super::Psls;
use crate::error::{Error, Result};
use crate::rma::{AtomicOp, Comm, LockedWindow, Window};
use crate::svm::{PageInfo, SvmStats};
use crate::sys::global::{GlobalArray, Pod};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many global mutexes a job may create.
pub const MAX_MUTEXES: usize = 4096;

/// The words behind the global mutexes: mutex i lives on rank i mod size.
#[derive(Debug)]
pub(crate) struct Locks {
    win: LockedWindow<'static>,
    next: AtomicUsize,
    size: usize,
}

impl Locks {
    pub(crate) fn new(comm: &Comm) -> Result<Locks> {
        let per_rank = MAX_MUTEXES.div_ceil(comm.size());
        let win = LockedWindow::new(Window::allocate(comm, per_rank * 8)?)?;
        Ok(Locks {
            win,
            next: AtomicUsize::new(0),
            size: comm.size(),
        })
    }

    fn place(&self, id: usize) -> (usize, usize) {
        (id % self.size, (id / self.size) * 8)
    }
}

/// A mutex over the whole job, created collectively with [`Psls::mutex`].
#[derive(Debug)]
pub struct GlobalMutex<'p> {
    psls: &'p Psls,
    id: usize,
}

/// Holds a [`GlobalMutex`]; unlocks on drop.
#[derive(Debug)]
pub struct MutexGuard<'m, 'p> {
    mutex: &'m GlobalMutex<'p>,
}

impl<'p> GlobalMutex<'p> {
    /// Waits until the calling thread holds the mutex. Threads of one rank exclude each other as
    /// ranks do; like `std::sync::Mutex`, locking it again from the thread that holds it waits
    /// forever.
    pub fn lock(&self) -> Result<MutexGuard<'_, 'p>> {
        let locks = &self.psls.locks;
        let (home, off) = locks.place(self.id);
        let me = self.psls.rank as u64 + 1;
        let mut spins: u32 = 0;
        loop {
            let old = locks.win.epoch().compare_and_swap(home, off, 0, me)?;
            if old == 0 {
                return Ok(MutexGuard { mutex: self });
            }
            spins = spins.saturating_add(1);
            if spins > 16 {
                std::thread::yield_now();
            }
        }
    }

    /// Releases the mutex if this rank holds it, without a guard: for the C and Fortran
    /// bindings, whose lock and unlock are separate calls (their lock forgets the guard). An
    /// error, and no change, if this rank does not hold it.
    pub fn unlock_held(&self) -> Result<()> {
        let locks = &self.psls.locks;
        let (home, off) = locks.place(self.id);
        let me = self.psls.rank as u64 + 1;
        let old = locks.win.epoch().compare_and_swap(home, off, me, 0)?;
        if old != me {
            return Err(Error::Protocol(format!(
                "global mutex {} is not held by rank {} ({}): lock it before unlocking it",
                self.id,
                self.psls.rank,
                match old {
                    0 => "nobody holds it".to_string(),
                    r => format!("rank {} holds it", r - 1),
                }
            )));
        }
        Ok(())
    }

    fn unlock(&self) -> Result<()> {
        let locks = &self.psls.locks;
        let (home, off) = locks.place(self.id);
        locks
            .win
            .epoch()
            .fetch_and_op(home, off, AtomicOp::Replace, 0)?;
        Ok(())
    }
}

impl Drop for MutexGuard<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.mutex.unlock() {
            tracing::error!(target: "psls::api", "unlocking global mutex {}: {e}", self.mutex.id);
        }
    }
}

impl Psls {
    /// Allocates a global array of `len` zeroed elements (collective: every rank calls it with
    /// the same length, in the same order, and gets the same address).
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<GlobalArray<'_, T>> {
        let elem = std::mem::size_of::<T>();
        let bytes = len
            .checked_mul(elem)
            .ok_or(Error::AllocOverflow { len, elem })?;
        let serial = self.svm.next_array_serial();
        let backing = self
            .ckpt
            .saved_array(serial)
            .and_then(|name| self.volume.file(&name));
        let addr = self.svm.alloc(&self.comm, bytes, backing)?;
        let ps = self.svm.page_size();
        let (first, pages) = ((addr - self.cfg.svm_base) / ps, bytes.div_ceil(ps).max(1));
        self.ckpt.check_array(serial, first, pages)?;
        self.prefetch_restored(serial, first, pages)?;
        Ok(GlobalArray::new(addr, len))
    }

    /// After a restart from the permanent checkpoint with `PSLS_RESTART_PREFETCH`: loads the
    /// pages of the array just allocated again that this rank held after that checkpoint's
    /// cleaning (its working set, as the cleaning policy chose it), by reading them now.
    fn prefetch_restored(&self, serial: u64, first: usize, pages: usize) -> Result<()> {
        if !self.cfg.restart_prefetch {
            return Ok(());
        }
        let ps = self.svm.page_size();
        let mine = self.ckpt.prefetch_in(first, pages);
        for &p in &mine {
            // SAFETY: the page lies in the array this call just allocated (reserved and mapped
            // in the global range); a read through the application view faults it in like any
            // load of the application.
            unsafe {
                std::ptr::read_volatile((self.cfg.svm_base + p * ps) as *const u8);
            }
        }
        let total = self
            .comm
            .allreduce_u64(mine.len() as u64, crate::rma::ReduceOp::Sum)?;
        if self.rank == 0 && total > 0 {
            tracing::info!(target: "psls::ckpt", "restart prefetch: {total} pages of array {serial} loaded from the disks (PSLS_RESTART_PREFETCH)");
        }
        Ok(())
    }

    /// Frees a global array (collective).
    pub fn free<T: Pod>(&self, a: GlobalArray<'_, T>) -> Result<()> {
        self.svm.free(&self.comm, a.as_ptr() as usize, a.byte_len())
    }

    /// Creates a global mutex (collective: every rank creates its mutexes in the same order).
    pub fn mutex(&self) -> Result<GlobalMutex<'_>> {
        let id = self.locks.next.fetch_add(1, Ordering::Relaxed);
        if id >= MAX_MUTEXES {
            return Err(Error::Protocol(format!(
                "at most {MAX_MUTEXES} global mutexes per job"
            )));
        }
        Ok(GlobalMutex { psls: self, id })
    }

    /// This rank's block of `n` elements under a block distribution over all ranks: the first
    /// `n mod size` ranks get one element more.
    pub fn local_range(&self, n: usize) -> Range<usize> {
        block_range(n, self.size, self.rank)
    }

    /// The rank whose block (see [`Psls::local_range`]) holds element `i` of `n`.
    pub fn block_owner(&self, n: usize, i: usize) -> usize {
        (0..self.size)
            .find(|&r| block_range(n, self.size, r).contains(&i))
            .unwrap_or(self.size - 1)
    }

    /// The home rank (keeper of the directory entry) of the page holding element `i` of `a`.
    pub fn home_of<T: Pod>(&self, a: &GlobalArray<'_, T>, i: usize) -> usize {
        let addr = a.as_ptr() as usize + i * std::mem::size_of::<T>();
        self.svm.home_of(addr).unwrap_or(0)
    }

    /// The page size of the global address space.
    pub fn page_size(&self) -> usize {
        self.svm.page_size()
    }

    /// This rank's SVM counters: faults, fetches, invalidations, bytes moved.
    pub fn stats(&self) -> SvmStats {
        self.svm.stats()
    }

    /// How this rank write-protects readable pages of the global range: `Userfaultfd` or
    /// `Mprotect` (`PSLS_WRITE_PROTECT=auto` takes the first where the kernel offers it).
    pub fn write_protection(&self) -> crate::WriteProtection {
        self.svm.write_protection()
    }

    /// Sets, on this rank, how far the SVM works ahead of misses ([`crate::Prefetch`]: `Auto`,
    /// for sequential misses only, or a fixed number of pages, at most 64, 0 for none). The
    /// default comes from `PSLS_PREFETCH`. A fixed number helps around a phase that scans
    /// remote data, or writes a new array, sequentially.
    pub fn set_prefetch(&self, p: crate::Prefetch) {
        self.svm.set_prefetch(p);
    }

    /// What this rank's page table records for the page holding element `i` of `a`: access,
    /// unique or replicated, owner as last seen, and the epoch since which this rank's copy is
    /// dirty.
    pub fn page_info<T: Pod>(&self, a: &GlobalArray<'_, T>, i: usize) -> Option<PageInfo> {
        let addr = a.as_ptr() as usize + i * std::mem::size_of::<T>();
        self.svm.page_info(addr)
    }
}

/// Block `r` of `n` elements over `size` ranks.
pub fn block_range(n: usize, size: usize, r: usize) -> Range<usize> {
    let (q, rem) = (n / size, n % size);
    let start = r * q + r.min(rem);
    start..start + q + usize::from(r < rem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_everything_once() {
        for n in [0, 1, 7, 100] {
            for size in [1, 3, 4] {
                let mut all = Vec::new();
                for r in 0..size {
                    all.extend(block_range(n, size, r));
                }
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
        assert_eq!(block_range(10, 4, 0), 0..3);
        assert_eq!(block_range(10, 4, 3), 8..10);
    }
}
