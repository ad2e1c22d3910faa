//! Global memory: collective allocation and freeing of global arrays, the barrier, global
//! mutexes, and the SVM's counters.

use crate::boundary::boundary;
use crate::error::Failure;
use crate::handle::{agree_args, live, lock, put, spread};
use std::ffi::{c_int, c_void};
use std::sync::Arc;

/// Allocates `bytes` bytes of global memory (collective: every rank calls it with the same
/// size, in the same order). `*ptr` receives the array's address, the same on every rank:
/// every rank may load and store anywhere in it, and the runtime keeps the pages coherent.
/// The bytes are zero, or, in a run that restarted from a checkpoint, hold what the
/// checkpoint saved of the array allocated in the same order.
///
/// Ownership: the memory belongs to the runtime. Release it with psls_free (collective), or
/// leave it to psls_finalize. Never pass it to free().
///
/// Returns PSLS_ERR_ARG if `bytes` is 0, PSLS_ERR_NO_MEMORY if the global range has no free
/// run that large (raise PSLS_SVM_SIZE), PSLS_ERR_NULL / PSLS_ERR_NOT_INIT for a bad handle,
/// PSLS_ERR_NULL if `ptr` is NULL. On failure `*ptr` is NULL.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `ptr` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn psls_alloc(h: *mut psls_t, bytes: u64, ptr: *mut *mut c_void) -> c_int {
    const F: &str = "psls_alloc";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        // SAFETY: the contract. NULL until success.
        let args = unsafe { put(F, "ptr", ptr, std::ptr::null_mut()) }.and_then(|()| {
            if bytes == 0 {
                return Err(Failure::arg(
                    F,
                    "bytes is 0: a global array holds at least one byte",
                ));
            }
            usize::try_from(bytes).map_err(|_| {
                Failure::arg(F, format!("{bytes} bytes do not fit in the address space"))
            })
        });
        // Every rank refuses together: one that left alone would hang the others.
        let len = agree_args(h, F, args)?;
        // SAFETY: the array is kept in h.arrays, which psls_finalize drops before the runtime.
        let rt = unsafe { h.rt_static() };
        let a = rt.alloc::<u8>(len).map_err(|e| Failure::runtime(F, e))?;
        let addr = a.as_ptr();
        lock(&h.arrays).insert(addr as usize, a);
        // SAFETY: the contract; checked not NULL above.
        unsafe { put(F, "ptr", ptr, addr.cast::<c_void>()) }
    })
}

/// Frees the global array at `ptr` (collective: every rank frees the same arrays in the same
/// order). Every pointer into it is invalid afterwards.
///
/// Ownership: takes back memory psls_alloc gave out.
///
/// Returns PSLS_ERR_NULL if `ptr` is NULL, PSLS_ERR_ARG if `ptr` is not the address of a live
/// array from psls_alloc of this handle (a pointer into the middle of one, a foreign pointer,
/// or one already freed).
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned. No thread may use the array during or
/// after this call.
#[no_mangle]
pub unsafe extern "C" fn psls_free(h: *mut psls_t, ptr: *mut c_void) -> c_int {
    const F: &str = "psls_free";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        let args = if ptr.is_null() {
            Err(Failure::null(F, "ptr"))
        } else if !lock(&h.arrays).contains_key(&(ptr as usize)) {
            Err(Failure::arg(
                F,
                format!("{ptr:p} is not a global array from psls_alloc (or it was freed already)"),
            ))
        } else {
            Ok(())
        };
        // Every rank refuses together: one that left alone would hang the others.
        agree_args(h, F, args)?;
        // The same array everywhere (an array has the same address on every rank), checked
        // before it leaves the table: a refused free keeps it.
        let (lo, hi) = spread(h, F, ptr as u64)?;
        if lo != hi {
            return Err(Failure::arg(
                F,
                format!("every rank must free the same array (they passed {lo:#x} to {hi:#x}): each keeps its array"),
            ));
        }
        let a = lock(&h.arrays)
            .remove(&(ptr as usize))
            .ok_or_else(|| Failure::arg(F, format!("{ptr:p} was freed meanwhile")))?;
        h.rt().free(a).map_err(|e| Failure::runtime(F, e))
    })
}

/// A barrier over every rank of the job (collective). It waits politely (yields and sleeps
/// briefly) instead of spinning, so ranks on oversubscribed nodes keep their CPU for work.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned.
#[no_mangle]
pub unsafe extern "C" fn psls_barrier(h: *mut psls_t) -> c_int {
    const F: &str = "psls_barrier";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        h.rt().barrier().map_err(|e| Failure::runtime(F, e))
    })
}

/// Creates a global mutex (collective: every rank creates its mutexes in the same order) and
/// gives its id in `*id`: 0 for the first, then 1, 2, ...
///
/// Ownership: the mutex belongs to the handle; psls_finalize releases it.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `id` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn psls_mutex_create(h: *mut psls_t, id: *mut c_int) -> c_int {
    const F: &str = "psls_mutex_create";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        if id.is_null() {
            return Err(Failure::null(F, "id"));
        }
        // SAFETY: the mutex is kept in h.mutexes, which psls_finalize drops before the runtime.
        let rt = unsafe { h.rt_static() };
        let m = rt.mutex().map_err(|e| Failure::runtime(F, e))?;
        let mut all = lock(&h.mutexes);
        let n =
            c_int::try_from(all.len()).map_err(|_| Failure::arg(F, "too many global mutexes"))?;
        all.push(Arc::new(m));
        // SAFETY: the contract; checked not NULL above.
        unsafe { put(F, "id", id, n) }
    })
}

/// The mutex `id` of the handle.
fn mutex_of(
    func: &str,
    h: &psls_t,
    id: c_int,
) -> Result<Arc<runtime::GlobalMutex<'static>>, Failure> {
    let all = lock(&h.mutexes);
    usize::try_from(id)
        .ok()
        .and_then(|i| all.get(i).cloned())
        .ok_or_else(|| {
            Failure::arg(
                func,
                format!(
                    "there is no global mutex {id}: {} created with psls_mutex_create",
                    all.len()
                ),
            )
        })
}

/// Waits until the calling thread holds global mutex `id`: it excludes every other rank, and
/// the other threads of this rank. Locking it again from the thread that holds it waits
/// forever.
///
/// Returns PSLS_ERR_ARG if no mutex `id` was created.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned.
#[no_mangle]
pub unsafe extern "C" fn psls_mutex_lock(h: *mut psls_t, id: c_int) -> c_int {
    const F: &str = "psls_mutex_lock";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        let m = mutex_of(F, h, id)?;
        let guard = m.lock().map_err(|e| Failure::runtime(F, e))?;
        // The lock outlives this call; psls_mutex_unlock releases it.
        std::mem::forget(guard);
        Ok(())
    })
}

/// Releases global mutex `id`, held by this rank.
///
/// Returns PSLS_ERR_ARG if no mutex `id` was created, PSLS_ERR_OTHER if this rank does not
/// hold it (it stays as it was).
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned.
#[no_mangle]
pub unsafe extern "C" fn psls_mutex_unlock(h: *mut psls_t, id: c_int) -> c_int {
    const F: &str = "psls_mutex_unlock";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        let m = mutex_of(F, h, id)?;
        m.unlock_held().map_err(|e| Failure::runtime(F, e))
    })
}

/// Counters of this rank's shared virtual memory since psls_init.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(non_camel_case_types)]
pub struct psls_stats_t {
    /// Read faults served.
    pub read_faults: u64,
    /// Write faults served.
    pub write_faults: u64,
    /// Pages fetched from another rank.
    pub fetches: u64,
    /// Invalidations this rank sent.
    pub invalidations_sent: u64,
    /// Invalidations this rank received.
    pub invalidations_received: u64,
    /// Bytes fetched from other ranks.
    pub bytes_moved: u64,
    /// Pages of mapped files loaded from this node's disk.
    pub pages_loaded: u64,
    /// Dirty pages of mapped files this rank flushed.
    pub pages_flushed: u64,
}

/// Copies this rank's counters into `*out` (owned by the caller).
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn psls_stats(h: *const psls_t, out: *mut psls_stats_t) -> c_int {
    const F: &str = "psls_stats";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        let s = h.rt().stats();
        let v = psls_stats_t {
            read_faults: s.read_faults,
            write_faults: s.write_faults,
            fetches: s.fetches,
            invalidations_sent: s.invalidations_sent,
            invalidations_received: s.invalidations_received,
            bytes_moved: s.bytes_moved,
            pages_loaded: s.pages_loaded,
            pages_flushed: s.pages_flushed,
        };
        // SAFETY: the contract.
        unsafe { put(F, "out", out, v) }
    })
}

use crate::handle::psls_t;
