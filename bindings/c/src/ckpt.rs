//! Checkpoints: private state, `checkpoint` and `checkpoint_now`, and what a restarted run
//! learns.

use crate::boundary::boundary;
use crate::error::Failure;
use crate::handle::{live, name_arg, psls_t, put};
use runtime::CheckpointKind;
use std::ffi::{c_char, c_int, c_void};

/// A memory checkpoint: two copies of every page modified since the last checkpoint, in the
/// memories of two nodes (psls_checkpoint_now).
pub const PSLS_CKPT_MEMORY: c_int = 0;
/// A permanent checkpoint: modified pages, mapped files and private state written to the
/// mirrored disks in one atomic step; it alone survives a power cut (psls_checkpoint_now).
pub const PSLS_CKPT_PERMANENT: c_int = 1;

/// Registers `len` bytes at `ptr` (this rank's private state: a loop counter, a residual...)
/// under `name`: every checkpoint saves them, and in a run that restarted from a checkpoint
/// this call overwrites them with the bytes that checkpoint saved. Register each name once,
/// before the main loop, with the same length in every run.
///
/// Ownership: the caller keeps the memory; `ptr .. ptr+len` must stay valid until
/// psls_finalize and must not be written while a checkpoint runs. `name` is copied.
///
/// Returns PSLS_ERR_NULL (name or ptr NULL), PSLS_ERR_ARG (len 0, name empty or not UTF-8),
/// PSLS_ERR_CHECKPOINT (the name is taken, or the restarted run saved a different length).
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `name` NULL or a NUL-terminated string;
/// `ptr` NULL or valid for reads and writes of `len` bytes until psls_finalize.
#[no_mangle]
pub unsafe extern "C" fn psls_protect(
    h: *mut psls_t,
    name: *const c_char,
    ptr: *mut c_void,
    len: u64,
) -> c_int {
    const F: &str = "psls_protect";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        // SAFETY: the contract.
        let name = unsafe { name_arg(F, "name", name)? };
        if ptr.is_null() {
            return Err(Failure::null(F, "ptr"));
        }
        if len == 0 {
            return Err(Failure::arg(
                F,
                format!("len is 0: nothing to protect under {name:?}"),
            ));
        }
        let len =
            usize::try_from(len).map_err(|_| Failure::arg(F, format!("len {len} is too large")))?;
        // SAFETY: the contract: ptr..ptr+len stays valid for reads and writes until
        // psls_finalize, and is not written during a checkpoint.
        unsafe { h.rt().protect_region(name, ptr.cast::<u8>(), len) }
            .map_err(|e| Failure::runtime(F, e))
    })
}

/// Takes a checkpoint (collective): call it at the head of the main loop, where every rank's
/// state is consistent. A memory checkpoint, except every PSLS_CKPT_PERMANENT_EVERY-th call
/// (and in a one-node job), which takes a permanent one. After it returns, a failure of any
/// node is survived: `psls-launch` restarts the job from here.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned.
#[no_mangle]
pub unsafe extern "C" fn psls_checkpoint(h: *mut psls_t) -> c_int {
    const F: &str = "psls_checkpoint";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        h.rt()
            .checkpoint()
            .map(drop)
            .map_err(|e| Failure::runtime(F, e))
    })
}

/// Takes a checkpoint of `kind` now (collective): PSLS_CKPT_MEMORY or PSLS_CKPT_PERMANENT.
/// A permanent checkpoint also publishes the mapped files: in a job that checkpoints, it is
/// how their last contents reach the disks (psls_file_flush is refused there).
///
/// Returns PSLS_ERR_ARG for another `kind`.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned.
#[no_mangle]
pub unsafe extern "C" fn psls_checkpoint_now(h: *mut psls_t, kind: c_int) -> c_int {
    const F: &str = "psls_checkpoint_now";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h.cast_const())? };
        let kind = match kind {
            PSLS_CKPT_MEMORY => Ok(CheckpointKind::Memory),
            PSLS_CKPT_PERMANENT => Ok(CheckpointKind::Permanent),
            k => Err(Failure::arg(
                F,
                format!("kind {k} is neither PSLS_CKPT_MEMORY (0) nor PSLS_CKPT_PERMANENT (1)"),
            )),
        };
        // Every rank refuses together: one that left alone would hang the others.
        let kind = crate::handle::agree_args(h, F, kind)?;
        h.rt()
            .checkpoint_now(kind)
            .map(drop)
            .map_err(|e| Failure::runtime(F, e))
    })
}

/// Whether this run restarted from a checkpoint: `*restarted` = 1 and `*epoch` = the
/// checkpoint's epoch, else 0 and 0.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `restarted` and `epoch` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn psls_restarted(
    h: *const psls_t,
    restarted: *mut c_int,
    epoch: *mut u64,
) -> c_int {
    const F: &str = "psls_restarted";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        if restarted.is_null() || epoch.is_null() {
            return Err(Failure::null(
                F,
                if restarted.is_null() {
                    "restarted"
                } else {
                    "epoch"
                },
            ));
        }
        let e = h.rt().restarted_from();
        // SAFETY: the contract; both checked not NULL.
        unsafe {
            put(F, "restarted", restarted, c_int::from(e.is_some()))?;
            put(F, "epoch", epoch, e.unwrap_or(0))
        }
    })
}
