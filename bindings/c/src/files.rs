//! Mapped PFS files: create, open, grow, flush and close.
//!
//! A `psls_file_t` is a Box registered in [`FILES`] with its runtime handle: a pointer is
//! dereferenced only while registered, and `psls_finalize` closes (and frees) the files of its
//! handle that are still registered, before the runtime goes.

use crate::boundary::boundary;
use crate::error::{Failure, PSLS_ERR_EXISTS, PSLS_ERR_IO, PSLS_ERR_NOT_FOUND, PSLS_ERR_NOT_INIT};
use crate::handle::{live, lock, name_arg, psls_t, put};
use runtime::rma::ReduceOp;
use runtime::{PfsFile, Psls};
use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

/// A PFS file mapped into the global address space (opaque).
///
/// Created by psls_file_create or psls_file_open, which give it to the caller; released by
/// psls_file_close, or by psls_finalize for the files still open then.
#[allow(non_camel_case_types)]
pub struct psls_file_t {
    /// The mapping; None once a failed move (psls_file_grow) left the file unmapped.
    file: Mutex<Option<PfsFile<'static>>>,
    /// Its runtime handle: live while this file is registered.
    owner: *const psls_t,
}

/// The open files, in the order they were opened: (file, its handle).
static FILES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// The open file `f` and its handle.
///
/// # Safety
/// The references must not be used after psls_file_close of `f` or psls_finalize of its
/// handle has started.
unsafe fn open<'a>(
    func: &str,
    f: *const psls_file_t,
) -> Result<(&'a psls_file_t, &'a psls_t), Failure> {
    if f.is_null() {
        return Err(Failure::null(func, "the psls_file_t handle"));
    }
    if !lock(&FILES).iter().any(|&(a, _)| a == f as usize) {
        return Err(not_open(func, f));
    }
    // SAFETY: a registered file is a Box leaked by register() and freed only after it is
    // unregistered; its owner is live while it is registered (psls_finalize unregisters the
    // files of a handle before releasing it). The caller keeps both calls away meanwhile.
    unsafe { Ok((&*f, &*(*f).owner)) }
}

fn not_open(func: &str, f: *const psls_file_t) -> Failure {
    Failure::new(
        PSLS_ERR_NOT_INIT,
        format!("{func}: {f:p} is not an open psls_file_t: it was not returned by psls_file_create or psls_file_open, or psls_file_close (or psls_finalize) released it"),
    )
}

/// Room to reserve when mapping a file of `size` bytes: twice its size, so that it can grow
/// in place (a move needs a flush, which a job that checkpoints cannot make).
fn room(size: u64) -> usize {
    usize::try_from(size.saturating_mul(2)).unwrap_or(usize::MAX)
}

/// Maps with `map(reserve)`, first with room to grow, and with no more than the file if the
/// global range has no run that large (every rank takes the same path: the range's free list
/// is the same on every rank).
fn map_with_room<'p>(
    size: u64,
    map: impl Fn(usize) -> runtime::Result<PfsFile<'p>>,
) -> runtime::Result<PfsFile<'p>> {
    match map(room(size)) {
        Err(runtime::Error::OutOfRange { .. }) => map(0),
        r => r,
    }
}

/// Boxes and registers a mapped file of `h`.
fn register(h: &psls_t, file: PfsFile<'static>) -> *mut psls_file_t {
    let f = Box::into_raw(Box::new(psls_file_t {
        file: Mutex::new(Some(file)),
        owner: h,
    }));
    lock(&FILES).push((f as usize, h as *const psls_t as usize));
    f
}

/// Whether the PFS catalog has a file `name`.
fn exists(rt: &Psls, name: &str) -> bool {
    rt.files().iter().any(|i| i.name == name)
}

/// Creates the PFS file `name` of `size` bytes (zeros) and maps it (collective: every rank
/// calls it with the same arguments). `*f` receives its handle and `*ptr` the address of its
/// first byte in global memory, the same on every rank.
///
/// Ownership: the caller owns `*f` and releases it with psls_file_close (or leaves it to
/// psls_finalize). The mapped bytes belong to the runtime: valid until the file is closed
/// (or moved by psls_file_grow). `name` is copied.
///
/// Returns PSLS_ERR_EXISTS if the file exists, PSLS_ERR_NULL / PSLS_ERR_ARG for the
/// arguments, PSLS_ERR_IO for a PFS error. On failure `*f` and `*ptr` are NULL.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `name` NULL or a NUL-terminated string;
/// `f` and `ptr` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn psls_file_create(
    h: *mut psls_t,
    name: *const c_char,
    size: u64,
    f: *mut *mut psls_file_t,
    ptr: *mut *mut c_void,
) -> c_int {
    const F: &str = "psls_file_create";
    boundary(F, || {
        // SAFETY: the contract.
        let (h, name) = unsafe { (live(F, h.cast_const())?, name_arg(F, "name", name)?) };
        // SAFETY: the contract. NULL until success.
        unsafe {
            put(F, "f", f, std::ptr::null_mut())?;
            put(F, "ptr", ptr, std::ptr::null_mut())?;
        }
        // SAFETY: the file is registered with h; psls_finalize closes it before the runtime.
        let rt = unsafe { h.rt_static() };
        if exists(rt, name) {
            return Err(Failure::new(
                PSLS_ERR_EXISTS,
                format!("{F}: the PFS file {name:?} exists already: open it with psls_file_open, or remove it (`psls-pfs rm`)"),
            ));
        }
        let file = match rt.create_file_with(name, size, room(size)) {
            // Created, but not mapped with room to grow: map it as it is.
            Err(runtime::Error::OutOfRange { .. }) if exists(rt, name) => rt.open_file(name),
            r => r,
        }
        .map_err(|e| Failure::runtime(F, e))?;
        let addr = file.as_ptr();
        let handle = register(h, file);
        // SAFETY: the contract; both checked not NULL above.
        unsafe {
            put(F, "f", f, handle)?;
            put(F, "ptr", ptr, addr.cast::<c_void>())
        }
    })
}

/// Maps the existing PFS file `name` (collective). `*f` receives its handle, `*ptr` the
/// address of its first byte in global memory (the same on every rank), `*size` its size in
/// bytes.
///
/// Ownership as psls_file_create.
///
/// Returns PSLS_ERR_NOT_FOUND if there is no such file (`psls-pfs ls` lists them; `psls-pfs
/// import` brings one in). On failure `*f` and `*ptr` are NULL and `*size` is 0.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `name` NULL or a NUL-terminated string;
/// `f`, `ptr` and `size` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn psls_file_open(
    h: *mut psls_t,
    name: *const c_char,
    f: *mut *mut psls_file_t,
    ptr: *mut *mut c_void,
    size: *mut u64,
) -> c_int {
    const F: &str = "psls_file_open";
    boundary(F, || {
        // SAFETY: the contract.
        let (h, name) = unsafe { (live(F, h.cast_const())?, name_arg(F, "name", name)?) };
        // SAFETY: the contract. NULL (and 0) until success.
        unsafe {
            put(F, "f", f, std::ptr::null_mut())?;
            put(F, "ptr", ptr, std::ptr::null_mut())?;
            put(F, "size", size, 0)?;
        }
        // SAFETY: the file is registered with h; psls_finalize closes it before the runtime.
        let rt = unsafe { h.rt_static() };
        let Some(info) = rt.files().into_iter().find(|i| i.name == name) else {
            return Err(Failure::new(
                PSLS_ERR_NOT_FOUND,
                format!("{F}: there is no PFS file named {name:?} (`psls-pfs ls` lists the files; psls_file_create or `psls-pfs import` makes one)"),
            ));
        };
        let file = map_with_room(info.size, |reserve| rt.open_file_with(name, reserve))
            .map_err(|e| Failure::runtime(F, e))?;
        let (addr, len) = (file.as_ptr(), file.size());
        let handle = register(h, file);
        // SAFETY: the contract; all checked not NULL above.
        unsafe {
            put(F, "f", f, handle)?;
            put(F, "ptr", ptr, addr.cast::<c_void>())?;
            put(F, "size", size, len)
        }
    })
}

fn unmapped(func: &str) -> Failure {
    Failure::new(
        PSLS_ERR_IO,
        format!("{func}: the file is no longer mapped (a move by psls_file_grow failed): close this handle and open the file again"),
    )
}

/// Grows the file to `new_size` bytes (collective: every rank passes the same size). New
/// bytes read as zeros; the new size reaches the disks with the next flush or permanent
/// checkpoint. `*ptr` receives the file's address, which changes when the file had to move:
/// it grows in place up to twice the size it had when it was mapped; beyond, it is flushed
/// (psls_file_flush, which publishes every mapped file) and mapped again elsewhere, which a
/// job that checkpoints cannot do (PSLS_ERR_CHECKPOINT; the file stays as it was).
///
/// Ownership: after a move, the old address is invalid.
///
/// Returns PSLS_ERR_ARG if `new_size` is smaller than the size, or differs between ranks.
///
/// # Safety
/// `f` must be NULL or a pointer psls_file_create / psls_file_open returned; `ptr` NULL or
/// writable. No thread may use the file's memory during the call.
#[no_mangle]
pub unsafe extern "C" fn psls_file_grow(
    f: *mut psls_file_t,
    new_size: u64,
    ptr: *mut *mut c_void,
) -> c_int {
    const F: &str = "psls_file_grow";
    boundary(F, || {
        // SAFETY: the contract.
        let (file, h) = unsafe { open(F, f.cast_const())? };
        if ptr.is_null() {
            return Err(Failure::null(F, "ptr"));
        }
        let mut slot = lock(&file.file);
        let pf = slot.as_mut().ok_or_else(|| unmapped(F))?;
        if new_size < pf.size() {
            return Err(Failure::arg(
                F,
                format!(
                    "{:?} has {} bytes, more than new_size {new_size}: files only grow",
                    pf.name(),
                    pf.size()
                ),
            ));
        }
        // One decision for every rank: move or not.
        let sum = |op| {
            h.comm
                .allreduce_u64(new_size, op)
                .map_err(|e| Failure::runtime(F, e))
        };
        let (lo, hi) = (sum(ReduceOp::Min)?, sum(ReduceOp::Max)?);
        if lo != hi {
            return Err(Failure::arg(
                F,
                format!("every rank must pass the same new_size (they passed {lo} to {hi})"),
            ));
        }
        let fits = usize::try_from(new_size).is_ok_and(|n| n <= pf.reserved());
        if fits {
            pf.grow(new_size).map_err(|e| Failure::runtime(F, e))?;
        } else {
            let (name, reserved) = (pf.name().to_string(), pf.reserved());
            pf.flush().map_err(|e| {
                let mut fl = Failure::runtime(F, e);
                fl.message = format!(
                    "{}; {name:?} must move to grow beyond the {reserved} bytes reserved for it when it was mapped, and a move needs this flush. In a job that checkpoints, grow files within that room, or reach the size at psls_file_create",
                    fl.message
                );
                fl
            })?;
            if let Some(old) = slot.take() {
                old.discard().map_err(|e| Failure::runtime(F, e))?;
            }
            // SAFETY: the new mapping goes back into this registered file handle.
            let rt = unsafe { h.rt_static() };
            let mut moved = map_with_room(new_size, |reserve| {
                rt.open_file_with(&name, reserve.max(new_size as usize))
            })
            .map_err(|e| Failure::runtime(F, e))?;
            moved.grow(new_size).map_err(|e| Failure::runtime(F, e))?;
            *slot = Some(moved);
        }
        let addr = slot.as_ref().map_or(std::ptr::null_mut(), |p| p.as_ptr());
        // SAFETY: the contract; checked not NULL above.
        unsafe { put(F, "ptr", ptr, addr.cast::<c_void>()) }
    })
}

/// The file's size in bytes into `*size` (growth not yet flushed included).
///
/// # Safety
/// `f` must be NULL or a pointer psls_file_create / psls_file_open returned; `size` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn psls_file_size(f: *const psls_file_t, size: *mut u64) -> c_int {
    const F: &str = "psls_file_size";
    boundary(F, || {
        // SAFETY: the contract.
        let (file, _) = unsafe { open(F, f)? };
        let n = lock(&file.file).as_ref().ok_or_else(|| unmapped(F))?.size();
        // SAFETY: the contract.
        unsafe { put(F, "size", size, n) }
    })
}

/// Publishes the modifications of every mapped file, and their sizes, to the disks in one
/// atomic step (collective; every rank must have finished writing them): a crash leaves each
/// file entirely old or entirely new.
///
/// Returns PSLS_ERR_CHECKPOINT once the job has taken a checkpoint (or restarted from one):
/// then the permanent checkpoint publishes the files (psls_checkpoint_now with
/// PSLS_CKPT_PERMANENT).
///
/// # Safety
/// `f` must be NULL or a pointer psls_file_create / psls_file_open returned.
#[no_mangle]
pub unsafe extern "C" fn psls_file_flush(f: *mut psls_file_t) -> c_int {
    const F: &str = "psls_file_flush";
    boundary(F, || {
        // SAFETY: the contract.
        let (file, _) = unsafe { open(F, f.cast_const())? };
        let slot = lock(&file.file);
        let pf = slot.as_ref().ok_or_else(|| unmapped(F))?;
        pf.flush().map(drop).map_err(|e| Failure::runtime(F, e))
    })
}

/// Flushes and unmaps one file; a job that checkpoints is not flushed (see psls_file_close).
fn close_file(func: &str, file: &psls_file_t) -> Result<(), Failure> {
    let mut slot = lock(&file.file);
    let Some(pf) = slot.as_ref() else {
        return Ok(());
    };
    match pf.flush() {
        // The job checkpoints: its permanent checkpoints publish the files.
        Ok(_) | Err(runtime::Error::Checkpoint(_)) => {}
        Err(e) => return Err(Failure::runtime(func, e)),
    }
    match slot.take() {
        Some(pf) => pf.discard().map_err(|e| Failure::runtime(func, e)),
        None => Ok(()),
    }
}

/// Closes the file (collective): flushes it as psls_file_flush does, unless the job
/// checkpoints, then unmaps it.
///
/// In a job that checkpoints (or restarted from a checkpoint), the modifications since the
/// last permanent checkpoint are not published: take one (psls_checkpoint_now with
/// PSLS_CKPT_PERMANENT) before closing to keep them.
///
/// Ownership: takes back the handle `*f` and sets `*f` to NULL; the mapped bytes are invalid
/// afterwards. On failure the file stays open and `*f` unchanged.
///
/// Returns PSLS_ERR_NULL (f or *f NULL), PSLS_ERR_NOT_INIT (*f is not an open file).
///
/// # Safety
/// `f` must be NULL or valid for reading and writing a pointer. No other call on `*f` may
/// run during or after this one.
#[no_mangle]
pub unsafe extern "C" fn psls_file_close(f: *mut *mut psls_file_t) -> c_int {
    const F: &str = "psls_file_close";
    boundary(F, || {
        if f.is_null() {
            return Err(Failure::null(F, "f (the address of the file handle)"));
        }
        // SAFETY: not NULL, and readable (the contract).
        let p = unsafe { *f };
        // SAFETY: the contract.
        let (file, _) = unsafe { open(F, p.cast_const())? };
        close_file(F, file)?;
        unregister(p);
        // SAFETY: writable (the contract).
        unsafe { *f = std::ptr::null_mut() };
        // SAFETY: p was registered (a Box from register()) and is not any more: this is its
        // only owner.
        drop(unsafe { Box::from_raw(p) });
        Ok(())
    })
}

fn unregister(p: *mut psls_file_t) {
    lock(&FILES).retain(|&(a, _)| a != p as usize);
}

/// Closes every file of `h` still open, in the order they were opened (the same on every
/// rank), and frees their handles: for psls_finalize.
pub(crate) fn close_all_of(h: &psls_t) -> Vec<Result<(), Failure>> {
    let mine: Vec<usize> = {
        let mut files = lock(&FILES);
        let owner = h as *const psls_t as usize;
        let mine = files
            .iter()
            .filter(|&&(_, o)| o == owner)
            .map(|&(a, _)| a)
            .collect();
        files.retain(|&(_, o)| o != owner);
        mine
    };
    mine.into_iter()
        .map(|a| {
            // SAFETY: a was registered (a Box from register()) and was just unregistered: this
            // is its only owner, and its owner h is still alive.
            let file = unsafe { Box::from_raw(a as *mut psls_file_t) };
            close_file("psls_finalize", &file)
        })
        .collect()
}
