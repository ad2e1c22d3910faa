//! RMA windows and their passive-target access epoch.
//!
//! A [`Window`] exposes a byte range of every rank. [`Window::lock_all`] opens the one long
//! `MPI_Win_lock_all` epoch the runtime works in; the returned [`Epoch`] guard unlocks on drop.
//! Inside it, [`Epoch::get`] and [`Epoch::put`] are complete when they return (they flush the
//! target), and [`Epoch::batch`] issues many transfers and flushes them all at once. A buffer
//! given to a batch stays borrowed until that flush, so no transfer can outlive its buffer.

use super::{check, handle, Comm};
use crate::error::{Error, Result};
use mpi::ffi;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

/// Atomic operations on 64-bit words for [`Epoch::fetch_and_op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    /// Adds the operand (wrapping).
    Sum,
    /// Replaces the word with the operand (an atomic write).
    Replace,
    /// Leaves the word unchanged (an atomic read; the operand is ignored).
    NoOp,
    /// Bitwise or.
    BitOr,
    /// Bitwise and.
    BitAnd,
    /// Unsigned maximum.
    Max,
}

impl AtomicOp {
    fn raw(self) -> ffi::MPI_Op {
        match self {
            AtomicOp::Sum => handle!(psls_mpi_op_sum),
            AtomicOp::Replace => handle!(psls_mpi_op_replace),
            AtomicOp::NoOp => handle!(psls_mpi_op_no_op),
            AtomicOp::BitOr => handle!(psls_mpi_op_bor),
            AtomicOp::BitAnd => handle!(psls_mpi_op_band),
            AtomicOp::Max => handle!(psls_mpi_op_max),
        }
    }
}

/// An RMA window over `len` bytes on every rank (the length may differ between ranks).
///
/// Created collectively and freed collectively on drop, so every rank must drop its windows in
/// the same order.
#[derive(Debug)]
pub struct Window<'m> {
    raw: ffi::MPI_Win,
    base: *mut u8,
    len: usize,
    rank: usize,
    /// Every rank's window length, so that remote accesses are bounds-checked before MPI sees
    /// them.
    lens: Vec<usize>,
    locked: AtomicBool,
    /// `MPI_BYTE` and `MPI_UINT64_T`, fetched once: they are link-time constants of the shim.
    byte: ffi::MPI_Datatype,
    uint64: ffi::MPI_Datatype,
    /// A mapping the window owns (see [`Window::over_mapping`]); unmapped after `MPI_Win_free`,
    /// because `Drop::drop` runs before the fields are dropped.
    owned: Option<memmap2::MmapMut>,
    _mem: PhantomData<&'m mut [u8]>,
}

// SAFETY: MPI runs at MPI_THREAD_MULTIPLE, so the window handle may be used from any thread; the
// exposed memory is only reached through MPI calls and the volatile copies of local_read and
// local_write.
unsafe impl Send for Window<'_> {}
// SAFETY: as above; every method takes &self and the epoch flag is atomic.
unsafe impl Sync for Window<'_> {}

impl<'m> Window<'m> {
    /// Exposes `mem` (collective). `mem` stays exclusively borrowed while the window lives, since
    /// other ranks may write into it at any time.
    pub fn create(comm: &Comm, mem: &'m mut [u8]) -> Result<Window<'m>> {
        let mut raw = handle!(psls_mpi_win_null);
        // SAFETY: mem is valid for mem.len() bytes for 'm, which the returned window keeps
        // borrowed; disp_unit 1; comm is a valid communicator; raw is a valid out-pointer.
        check("MPI_Win_create", unsafe {
            ffi::MPI_Win_create(
                mem.as_mut_ptr().cast::<c_void>(),
                mem.len() as ffi::MPI_Aint,
                1,
                handle!(psls_mpi_info_null),
                comm.raw(),
                &mut raw,
            )
        })?;
        Self::finish(comm, raw, mem.as_mut_ptr(), mem.len())
    }

    fn finish(comm: &Comm, raw: ffi::MPI_Win, base: *mut u8, len: usize) -> Result<Window<'m>> {
        let mut win = Window {
            raw,
            base,
            len,
            rank: comm.rank(),
            lens: Vec::new(),
            locked: AtomicBool::new(false),
            byte: handle!(psls_mpi_byte),
            uint64: handle!(psls_mpi_uint64),
            owned: None,
            _mem: PhantomData,
        };
        // SAFETY: win.raw is the valid window just created.
        check("MPI_Win_set_errhandler", unsafe {
            ffi::MPI_Win_set_errhandler(win.raw, handle!(psls_mpi_errors_return))
        })?;
        win.lens = comm
            .allgather_bytes(&(len as u64).to_le_bytes())?
            .iter()
            .map(|b| u64::from_le_bytes(b.as_slice().try_into().unwrap_or([0; 8])) as usize)
            .collect();
        Ok(win)
    }
}

impl Window<'static> {
    /// Exposes a memory mapping that the window takes over (collective). The mapping stays
    /// mapped until the window is freed.
    pub fn over_mapping(comm: &Comm, mut map: memmap2::MmapMut) -> Result<Window<'static>> {
        let (ptr, len) = (map.as_mut_ptr(), map.len());
        let mut raw = handle!(psls_mpi_win_null);
        // SAFETY: ptr..ptr+len is the mapping, which the returned window owns and unmaps only
        // after MPI_Win_free; comm is valid; raw is a valid out-pointer.
        check("MPI_Win_create", unsafe {
            ffi::MPI_Win_create(
                ptr.cast::<c_void>(),
                len as ffi::MPI_Aint,
                1,
                handle!(psls_mpi_info_null),
                comm.raw(),
                &mut raw,
            )
        })?;
        let mut win = Self::finish(comm, raw, ptr, len)?;
        win.owned = Some(map);
        Ok(win)
    }

    /// Allocates `len` zeroed bytes with `MPI_Win_allocate` and exposes them (collective).
    pub fn allocate(comm: &Comm, len: usize) -> Result<Window<'static>> {
        let win = Self::allocate_unzeroed(comm, len)?;
        if len > 0 {
            // SAFETY: MPI allocated len bytes at base for this window, and no epoch is open yet,
            // so nobody else accesses them.
            unsafe { std::ptr::write_bytes(win.base, 0, len) };
        }
        // Peers must not write before every rank has zeroed its memory.
        comm.barrier()?;
        Ok(win)
    }

    /// Allocates `len` bytes with `MPI_Win_allocate` and exposes them (collective), without
    /// touching them: memory costs nothing until used, and the caller initializes each part
    /// (and synchronizes with its peers) before anyone reads it. `MPI_Win_allocate` lets the MPI
    /// library place the window where it is fastest: shared memory between ranks of one host
    /// (Open MPI's `osc/sm`, MPICH's ch4 shm), registered memory for the network otherwise.
    pub fn allocate_unzeroed(comm: &Comm, len: usize) -> Result<Window<'static>> {
        let mut raw = handle!(psls_mpi_win_null);
        let mut base: *mut u8 = std::ptr::null_mut();
        // SAFETY: base is a valid out-pointer for the allocated address (MPI_Win_allocate takes
        // it as void* to a pointer); disp_unit 1; comm is valid; raw is a valid out-pointer.
        check("MPI_Win_allocate", unsafe {
            ffi::MPI_Win_allocate(
                len as ffi::MPI_Aint,
                1,
                handle!(psls_mpi_info_null),
                comm.raw(),
                (&mut base as *mut *mut u8).cast::<c_void>(),
                &mut raw,
            )
        })?;
        Self::finish(comm, raw, base, len)
    }
}

impl<'m> Window<'m> {
    /// Length of this rank's part of the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this rank exposes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where this rank's part of the window starts in its memory, for a transfer that MPI makes
    /// straight from or into it ([`crate::rma::Comm::exchange_blocks`]); the caller answers for
    /// what else touches that memory meanwhile.
    pub fn local_base(&self) -> *mut u8 {
        self.base
    }

    /// Length of `rank`'s part of the window.
    #[inline]
    pub fn len_of(&self, rank: usize) -> Result<usize> {
        self.lens.get(rank).copied().ok_or(Error::NoSuchRank {
            rank,
            size: self.lens.len(),
        })
    }

    /// The raw `MPI_Win`, for interoperability and for benchmark baselines. It stays owned by
    /// this value.
    pub fn as_raw(&self) -> ffi::MPI_Win {
        self.raw
    }

    /// Opens the passive-target epoch on every target (`MPI_Win_lock_all`, shared, no
    /// assertion). Only one epoch may be open per window at a time.
    pub fn lock_all(&self) -> Result<Epoch<'_, 'm>> {
        if self.locked.swap(true, Ordering::SeqCst) {
            return Err(Error::EpochOpen);
        }
        // SAFETY: self.raw is a valid window with no open epoch (the flag above guarantees it).
        let rc = unsafe { ffi::MPI_Win_lock_all(0, self.raw) };
        if let Err(e) = check("MPI_Win_lock_all", rc) {
            self.locked.store(false, Ordering::SeqCst);
            return Err(e);
        }
        Ok(Epoch {
            win: self,
            open: true,
        })
    }

    /// Copies `dst.len()` bytes of this rank's own window memory from `offset`.
    ///
    /// The caller must make sure no remote access writes these bytes meanwhile (a barrier, a
    /// flag read with [`Epoch::fetch_and_op`], or a protocol that excludes it, as the SVM's
    /// directory lock does); then call [`Epoch::sync`] if the epoch is open.
    pub fn local_read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_local("local_read", offset, dst.len())?;
        // SAFETY: offset..offset+len lies inside this rank's window memory (checked above), which
        // stays valid while self lives; dst is a distinct Rust buffer, so they do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// Copies `src` into this rank's own window memory at `offset` (same rules as
    /// [`Window::local_read`]).
    pub fn local_write(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check_local("local_write", offset, src.len())?;
        // SAFETY: offset..offset+len lies inside this rank's window memory (checked above), which
        // is reserved for the window while self lives; src is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(offset), src.len()) };
        Ok(())
    }

    /// Copies `len` bytes from `offset` of this rank's window memory to `offset2` of `other`'s
    /// (both this process's own memory), without a buffer in between: async-signal-safe (no
    /// allocation), for the SIGSEGV handler. Same rules as [`Window::local_read`].
    pub fn local_copy_to(
        &self,
        offset: usize,
        other: &Window<'_>,
        offset2: usize,
        len: usize,
    ) -> Result<()> {
        self.check_local("local_copy_to", offset, len)?;
        other.check_local("local_copy_to", offset2, len)?;
        // SAFETY: both ranges lie inside this process's window memories (checked above), which
        // stay reserved while the windows live; two windows never share memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(offset), other.base.add(offset2), len)
        };
        Ok(())
    }

    fn check_local(&self, op: &'static str, offset: usize, len: usize) -> Result<()> {
        check_bounds(op, self.rank, offset, len, self.len)
    }

    #[inline]
    /// Whether `len` bytes at `offset` lie inside `rank`'s memory of this window: the check
    /// every operation of this layer makes, for code that hands the window's memory to MPI
    /// itself (every rank knows every rank's length, so all of them come to the same answer).
    pub(crate) fn holds(&self, rank: usize, offset: usize, len: usize) -> bool {
        self.target("range check", rank, offset, len).is_ok()
    }

    fn target(&self, op: &'static str, target: usize, offset: usize, len: usize) -> Result<c_int> {
        let window_len = self.len_of(target)?;
        check_bounds(op, target, offset, len, window_len)?;
        Ok(target as c_int)
    }
}

fn check_bounds(
    op: &'static str,
    target: usize,
    offset: usize,
    len: usize,
    window_len: usize,
) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= window_len => Ok(()),
        _ => Err(Error::OutOfBounds {
            op,
            target,
            offset,
            len,
            window_len,
        }),
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        if super::is_finalized() {
            return;
        }
        // SAFETY: self.raw is a window this value created; no epoch is open because every Epoch
        // borrows the window and unlocks on drop.
        let rc = unsafe { ffi::MPI_Win_free(&mut self.raw) };
        if let Err(e) = check("MPI_Win_free", rc) {
            tracing::warn!(target: "psls::rma", "{e}");
        }
    }
}

/// A window that stays in its `lock_all` epoch for its whole life: for runtime structures that
/// live as long as the job. Unlocks, then frees, on drop.
#[derive(Debug)]
pub struct LockedWindow<'m> {
    win: Window<'m>,
}

impl<'m> LockedWindow<'m> {
    /// Opens the epoch on `win` and keeps it open.
    pub fn new(win: Window<'m>) -> Result<LockedWindow<'m>> {
        let epoch = win.lock_all()?;
        // The lock now belongs to the LockedWindow, which unlocks in its Drop.
        std::mem::forget(epoch);
        Ok(LockedWindow { win })
    }

    /// The open epoch (dropping it does not unlock).
    pub fn epoch(&self) -> Epoch<'_, 'm> {
        Epoch {
            win: &self.win,
            open: false,
        }
    }

    /// The window.
    pub fn window(&self) -> &Window<'m> {
        &self.win
    }
}

impl Drop for LockedWindow<'_> {
    fn drop(&mut self) {
        if super::is_finalized() {
            return;
        }
        let mut e = Epoch {
            win: &self.win,
            open: true,
        };
        if let Err(err) = e.close() {
            tracing::warn!(target: "psls::rma", "{err}");
        }
    }
}

/// The open `lock_all` epoch of a window. Unlocks on drop; [`Epoch::unlock`] reports errors.
#[derive(Debug)]
pub struct Epoch<'w, 'm> {
    win: &'w Window<'m>,
    open: bool,
}

impl<'w, 'm> Epoch<'w, 'm> {
    /// The window this epoch is on.
    pub fn window(&self) -> &'w Window<'m> {
        self.win
    }

    /// Reads `buf.len()` bytes from `target`'s window at `offset`; complete on return.
    #[inline]
    pub fn get(&self, target: usize, offset: usize, buf: &mut [u8]) -> Result<()> {
        let t = self.win.target("get", target, offset, buf.len())?;
        // SAFETY: buf is valid for writes of buf.len() bytes and stays borrowed until the flush
        // below completes the transfer.
        unsafe { self.raw_get(t, offset, buf.as_mut_ptr(), buf.len()) }?;
        self.flush_raw(t)
    }

    /// Writes `data` into `target`'s window at `offset`; complete at the target on return.
    #[inline]
    pub fn put(&self, target: usize, offset: usize, data: &[u8]) -> Result<()> {
        let t = self.win.target("put", target, offset, data.len())?;
        // SAFETY: data is valid for reads of data.len() bytes and stays borrowed until the flush
        // below completes the transfer.
        unsafe { self.raw_put(t, offset, data.as_ptr(), data.len()) }?;
        self.flush_raw(t)
    }

    /// Issues the transfers that `f` adds to a [`Batch`], then flushes them all. Buffers lent to
    /// the batch stay borrowed until that flush, even if `f` panics. An error in one transfer is
    /// returned to `f` by that transfer's call.
    pub fn batch<'env, R>(
        &self,
        f: impl for<'b> FnOnce(&'b Batch<'b, 'env, 'w, 'm>) -> R,
    ) -> Result<R> {
        let batch = Batch {
            epoch: self,
            targets: std::cell::RefCell::new(Vec::new()),
            _env: PhantomData,
        };
        let out = f(&batch);
        // `batch` also flushes in its Drop, so that a panic in `f` cannot free a buffer MPI still
        // uses; on the normal path the flush runs here, where its error can be returned.
        let targets = batch.targets.take();
        std::mem::forget(batch);
        // Each target is flushed on its own: Open MPI 4.1's osc/ucx `MPI_Win_flush_all` can
        // return before gets to a target this rank had not talked to before have landed (seen
        // as pages of zeros), while `MPI_Win_flush(target)` waits for them.
        for t in targets {
            self.flush_raw(t)?;
        }
        Ok(out)
    }

    /// Atomically: if the word at `offset` equals `compare`, replaces it with `swap`. Returns the
    /// word's old value. `offset` must be 8-byte aligned.
    pub fn compare_and_swap(
        &self,
        target: usize,
        offset: usize,
        compare: u64,
        swap: u64,
    ) -> Result<u64> {
        let t = self.atomic_target("compare_and_swap", target, offset)?;
        let mut result: u64 = 0;
        // SAFETY: origin, compare and result are valid u64s that outlive the flush below; the
        // target word lies inside the target's window (checked).
        check("MPI_Compare_and_swap", unsafe {
            ffi::MPI_Compare_and_swap(
                (&swap as *const u64).cast::<c_void>(),
                (&compare as *const u64).cast::<c_void>(),
                (&mut result as *mut u64).cast::<c_void>(),
                self.win.uint64,
                t,
                offset as ffi::MPI_Aint,
                self.win.raw,
            )
        })?;
        self.flush_raw(t)?;
        Ok(result)
    }

    /// Atomically applies `op` with `operand` to the word at `offset`; returns its old value.
    /// `offset` must be 8-byte aligned.
    pub fn fetch_and_op(
        &self,
        target: usize,
        offset: usize,
        op: AtomicOp,
        operand: u64,
    ) -> Result<u64> {
        let t = self.atomic_target("fetch_and_op", target, offset)?;
        let mut result: u64 = 0;
        // SAFETY: operand and result are valid u64s that outlive the flush below; the target
        // word lies inside the target's window (checked).
        check("MPI_Fetch_and_op", unsafe {
            ffi::MPI_Fetch_and_op(
                (&operand as *const u64).cast::<c_void>(),
                (&mut result as *mut u64).cast::<c_void>(),
                self.win.uint64,
                t,
                offset as ffi::MPI_Aint,
                op.raw(),
                self.win.raw,
            )
        })?;
        self.flush_raw(t)?;
        Ok(result)
    }

    /// Completes every transfer to `target` issued so far (`MPI_Win_flush`).
    pub fn flush(&self, target: usize) -> Result<()> {
        let t = self.win.target("flush", target, 0, 0)?;
        self.flush_raw(t)
    }

    #[inline]
    fn flush_raw(&self, t: c_int) -> Result<()> {
        // SAFETY: the window is valid and locked by this epoch; t is a checked rank.
        check("MPI_Win_flush", unsafe {
            ffi::MPI_Win_flush(t, self.win.raw)
        })
    }

    /// Completes every transfer issued so far (`MPI_Win_flush_all`).
    pub fn flush_all(&self) -> Result<()> {
        // SAFETY: the window is valid and locked by this epoch.
        check("MPI_Win_flush_all", unsafe {
            ffi::MPI_Win_flush_all(self.win.raw)
        })
    }

    /// Synchronizes this rank's public and private copies of its window (`MPI_Win_sync`).
    pub fn sync(&self) -> Result<()> {
        // SAFETY: the window is valid and locked by this epoch.
        check("MPI_Win_sync", unsafe { ffi::MPI_Win_sync(self.win.raw) })
    }

    /// Closes the epoch (`MPI_Win_unlock_all`) and reports any error.
    pub fn unlock(mut self) -> Result<()> {
        self.close()
    }

    fn close(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        // SAFETY: this epoch locked the window and has not unlocked it yet.
        let rc = unsafe { ffi::MPI_Win_unlock_all(self.win.raw) };
        self.win.locked.store(false, Ordering::SeqCst);
        check("MPI_Win_unlock_all", rc)
    }

    fn atomic_target(&self, op: &'static str, target: usize, offset: usize) -> Result<c_int> {
        if offset % 8 != 0 {
            return Err(Error::Misaligned { op, offset });
        }
        self.win.target(op, target, offset, 8)
    }

    /// Starts an `MPI_Get` without completing it.
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes until the target is flushed, and nothing
    /// else may access it until then.
    #[inline]
    unsafe fn raw_get(&self, target: c_int, offset: usize, buf: *mut u8, len: usize) -> Result<()> {
        // SAFETY: the caller's contract is transfer's, for a get.
        unsafe { self.transfer(Transfer::Get, target, offset, buf, len) }
    }

    /// Starts an `MPI_Put` without completing it.
    ///
    /// # Safety
    /// `data` must be valid for reads of `len` bytes until the target is flushed, and nothing may
    /// write it until then.
    #[inline]
    unsafe fn raw_put(
        &self,
        target: c_int,
        offset: usize,
        data: *const u8,
        len: usize,
    ) -> Result<()> {
        // SAFETY: the caller's contract is transfer's, for a put, which only reads the buffer.
        unsafe { self.transfer(Transfer::Put, target, offset, data.cast_mut(), len) }
    }

    /// Issues `MPI_Get` or `MPI_Put` for `len` bytes, in pieces of at most [`MAX_COUNT`].
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid (for writes on a get, for reads on a put) and untouched by
    /// anything else until the target is flushed; the target range must have been bounds-checked.
    #[inline]
    unsafe fn transfer(
        &self,
        dir: Transfer,
        target: c_int,
        offset: usize,
        buf: *mut u8,
        len: usize,
    ) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_COUNT) as c_int;
            let (local, disp) = (
                buf.wrapping_add(done).cast::<c_void>(),
                (offset + done) as ffi::MPI_Aint,
            );
            let (w, byte) = (self.win.raw, self.win.byte);
            // SAFETY: this chunk lies inside the caller's buffer, valid until the flush, and
            // inside the target window (checked by the caller).
            let rc = unsafe {
                match dir {
                    Transfer::Get => ffi::MPI_Get(local, n, byte, target, disp, n, byte, w),
                    Transfer::Put => ffi::MPI_Put(local, n, byte, target, disp, n, byte, w),
                }
            };
            check(dir.call(), rc)?;
            done += n as usize;
        }
        Ok(())
    }
}

/// The direction of a transfer.
#[derive(Debug, Clone, Copy)]
enum Transfer {
    Get,
    Put,
}

impl Transfer {
    fn call(self) -> &'static str {
        match self {
            Transfer::Get => "MPI_Get",
            Transfer::Put => "MPI_Put",
        }
    }
}

/// MPI counts are `int`: transfers are split into pieces of at most 1 GiB.
const MAX_COUNT: usize = 1 << 30;

impl Drop for Epoch<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(target: "psls::rma", "{e}");
        }
    }
}

/// Transfers issued inside [`Epoch::batch`]; they complete when the batch ends.
pub struct Batch<'b, 'env, 'w, 'm> {
    epoch: &'b Epoch<'w, 'm>,
    /// The targets transfers were issued to, each once.
    targets: std::cell::RefCell<Vec<c_int>>,
    /// Invariant in 'env (as in `std::thread::scope`), so that a buffer local to the closure
    /// cannot be lent to the batch.
    _env: PhantomData<fn(&'env ()) -> &'env ()>,
}

impl<'env> Batch<'_, 'env, '_, '_> {
    /// Starts reading `target`'s window at `offset` into `buf`. `buf` holds the data once the
    /// batch has ended.
    pub fn get(&self, target: usize, offset: usize, buf: &'env mut [u8]) -> Result<()> {
        let t = self.epoch.win.target("get", target, offset, buf.len())?;
        self.note(t);
        // SAFETY: buf is borrowed for 'env, which outlives the batch; the batch flushes every
        // target before it returns (or in Drop, on panic).
        unsafe { self.epoch.raw_get(t, offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// Starts writing `data` into `target`'s window at `offset`.
    pub fn put(&self, target: usize, offset: usize, data: &'env [u8]) -> Result<()> {
        let t = self.epoch.win.target("put", target, offset, data.len())?;
        self.note(t);
        // SAFETY: data is borrowed for 'env, which outlives the batch; the batch flushes every
        // target before it returns (or in Drop, on panic).
        unsafe { self.epoch.raw_put(t, offset, data.as_ptr(), data.len()) }
    }
}

impl Batch<'_, '_, '_, '_> {
    /// Starts writing `len` bytes of this rank's own memory in window `src`, from `src_offset`,
    /// into `target`'s window at `offset`, with no buffer in between.
    ///
    /// # Safety
    /// Nothing may write `src`'s bytes (locally or remotely) until the batch has ended, and
    /// `src` must outlive the batch.
    pub unsafe fn put_from(
        &self,
        target: usize,
        offset: usize,
        src: &Window<'_>,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        src.check_local("put_from", src_offset, len)?;
        let t = self.epoch.win.target("put", target, offset, len)?;
        self.note(t);
        // SAFETY: the source range lies inside `src`'s memory (checked above), which the caller
        // keeps alive and unwritten until the batch flushes.
        unsafe { self.epoch.raw_put(t, offset, src.base.add(src_offset), len) }
    }

    fn note(&self, t: c_int) {
        let mut targets = self.targets.borrow_mut();
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
}

impl Drop for Batch<'_, '_, '_, '_> {
    fn drop(&mut self) {
        // Only reached when the closure panicked: complete the transfers before the buffers go.
        for &t in self.targets.borrow().iter() {
            if let Err(e) = self.epoch.flush_raw(t) {
                tracing::error!(target: "psls::rma", "flush after a panic in a batch: {e}");
            }
        }
    }
}
