//! Mapped PFS files: create, open, grow, flush and close.
//!
//! A `psls_file_t *` given to C is a handle value (crate::handle::handle_value), never reused,
//! registered in [`FILES`] with the Box it stands for and its runtime handle: the Box is
//! reached only while registered, and `psls_finalize` closes (and frees) the files of its
//! handle that are still registered, before the runtime goes. A copy of a closed handle stays
//! invalid even when a new file is opened (an address could be reused by the allocator).

use crate::boundary::boundary;
use crate::error::{
    Failure, PSLS_ERR_CHECKPOINT, PSLS_ERR_EXISTS, PSLS_ERR_IO, PSLS_ERR_NOT_FOUND,
    PSLS_ERR_NOT_INIT,
};
use crate::handle::{
    agree_args, agree_on_sole, handle_value, live, lock, name_arg, psls_t, put, spread,
};
use runtime::{PfsFile, Psls};
use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

/// A PFS file mapped into the global address space (opaque).
///
/// Created by psls_file_create or psls_file_open, which give it to the caller; released by
/// psls_file_close, or by psls_finalize for the files still open then.
#[allow(non_camel_case_types)]
pub struct psls_file_t {
    /// The mapping; None once a failed psls_file_close unmapped it but could not finish.
    file: Mutex<Option<PfsFile<'static>>>,
    /// Its runtime handle: live while this file is registered.
    owner: *const psls_t,
}

/// The open files, in the order they were opened: (handle value, the Box, its runtime handle).
static FILES: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());

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
    let Some(&(_, a, _)) = lock(&FILES).iter().find(|&&(v, _, _)| v == f as usize) else {
        return Err(not_open(func, f));
    };
    let a = a as *const psls_file_t;
    // SAFETY: a registered file is a Box leaked by register() and freed only after it is
    // unregistered; its owner is live while it is registered (psls_finalize unregisters the
    // files of a handle before releasing it). The caller keeps both calls away meanwhile.
    unsafe { Ok((&*a, &*(*a).owner)) }
}

/// [`open`] for a collective call, agreed: if `f` is not an open file on some rank, every rank
/// returns an error (over the live runtime handle of this process, the only one there is)
/// instead of the others waiting in the collective.
///
/// # Safety
/// As [`open`].
unsafe fn open_agreed<'a>(
    func: &str,
    f: *const psls_file_t,
) -> Result<(&'a psls_file_t, &'a psls_t), Failure> {
    // SAFETY: forwarded.
    agree_on_sole(func, unsafe { open(func, f) })
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

/// Boxes and registers a mapped file of `h`; its handle value for C.
fn register(h: &psls_t, file: PfsFile<'static>) -> *mut psls_file_t {
    let f = Box::into_raw(Box::new(psls_file_t {
        file: Mutex::new(Some(file)),
        owner: h,
    }));
    let v = handle_value();
    lock(&FILES).push((v, f as usize, h as *const psls_t as usize));
    v as *mut psls_file_t
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
        let h = unsafe { live(F, h.cast_const())? };
        // SAFETY: the contract. NULL until success.
        let args = unsafe {
            name_arg(F, "name", name).and_then(|name| {
                put(F, "f", f, std::ptr::null_mut())?;
                put(F, "ptr", ptr, std::ptr::null_mut())?;
                Ok(name)
            })
        };
        // SAFETY: the file is registered with h; psls_finalize closes it before the runtime.
        let rt = unsafe { h.rt_static() };
        // Agreed: ranks that passed different names may disagree on this too.
        let args = args.and_then(|name| {
            if exists(rt, name) {
                return Err(Failure::new(
                    PSLS_ERR_EXISTS,
                    format!("{F}: the PFS file {name:?} exists already: open it with psls_file_open, or remove it (`psls-pfs rm`)"),
                ));
            }
            Ok(name)
        });
        let name = agree_args(h, F, args)?;
        // A create that cannot be mapped leaves no file behind, so it can be tried again.
        let file = map_with_room(size, |reserve| rt.create_file_with(name, size, reserve))
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
/// import` brings one in), PSLS_ERR_ARG if it is mapped already (close it first). On failure
/// `*f` and `*ptr` are NULL and `*size` is 0.
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
        let h = unsafe { live(F, h.cast_const())? };
        // SAFETY: the contract. NULL (and 0) until success.
        let args = unsafe {
            name_arg(F, "name", name).and_then(|name| {
                put(F, "f", f, std::ptr::null_mut())?;
                put(F, "ptr", ptr, std::ptr::null_mut())?;
                put(F, "size", size, 0)?;
                Ok(name)
            })
        };
        // SAFETY: the file is registered with h; psls_finalize closes it before the runtime.
        let rt = unsafe { h.rt_static() };
        // Agreed: ranks that passed different names may disagree on this too.
        let args = args.and_then(|name| match rt.files().into_iter().find(|i| i.name == name) {
            Some(info) => Ok((name, info)),
            None => Err(Failure::new(
                PSLS_ERR_NOT_FOUND,
                format!("{F}: there is no PFS file named {name:?} (`psls-pfs ls` lists the files; psls_file_create or `psls-pfs import` makes one)"),
            )),
        });
        let (name, info) = agree_args(h, F, args)?;
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
        format!("{func}: the file is no longer mapped (a psls_file_close failed after unmapping it): close this handle and open the file again"),
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
/// Returns PSLS_ERR_ARG if `new_size` is smaller than the size, or differs between ranks
/// (every rank then returns an error), PSLS_ERR_NO_MEMORY if the global range has no room
/// for the new size: then the file stays mapped where it was, with its size and bytes.
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
        let mut slot = lock(&file.file);
        // The checks of this rank's arguments are folded into the agreement below, so that a
        // rank that refuses does not leave the others waiting in it: every rank returns the
        // same code.
        let local: Result<(), Failure> = match slot.as_ref() {
            _ if ptr.is_null() => Err(Failure::null(F, "ptr")),
            None => Err(unmapped(F)),
            Some(pf) if new_size < pf.size() => Err(Failure::arg(
                F,
                format!(
                    "{:?} has {} bytes, more than new_size {new_size}: files only grow",
                    pf.name(),
                    pf.size()
                ),
            )),
            Some(_) => Ok(()),
        };
        agree_args(h, F, local)?;
        let (lo, hi) = spread(h, F, new_size)?;
        if lo != hi {
            return Err(Failure::arg(
                F,
                format!("every rank must pass the same new_size (they passed {lo} to {hi})"),
            ));
        }
        let pf = slot.as_mut().ok_or_else(|| unmapped(F))?;
        let fits = usize::try_from(new_size).is_ok_and(|n| n <= pf.reserved());
        if fits {
            pf.grow(new_size).map_err(|e| Failure::runtime(F, e))?;
        } else {
            // A move: with room to grow again, or just the new size if the range has no run
            // that large. A failed move leaves the file mapped where it was.
            let (name, reserved) = (pf.name().to_string(), pf.reserved());
            let moved = match pf.relocate(new_size, room(new_size)) {
                Err(runtime::Error::OutOfRange { .. }) => pf.relocate(new_size, 0),
                r => r,
            };
            moved.map_err(|e| {
                let mut fl = Failure::runtime(F, e);
                if fl.code == PSLS_ERR_CHECKPOINT {
                    fl.message = format!(
                        "{}; {name:?} must move to grow beyond the {reserved} bytes reserved for it when it was mapped, and a move needs a flush. In a job that checkpoints, grow files within that room, or reach the size at psls_file_create",
                        fl.message
                    );
                }
                fl
            })?;
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
        let (file, _) = unsafe { open_agreed(F, f.cast_const())? };
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
        let local = if f.is_null() {
            Err(Failure::null(F, "f (the address of the file handle)"))
        } else {
            // SAFETY: not NULL, and readable (the contract).
            let p = unsafe { *f };
            // SAFETY: the contract.
            unsafe { open(F, p.cast_const()) }.map(|(file, _)| (p, file))
        };
        // Every rank refuses together: one that left alone would hang the others.
        let (p, file) = agree_on_sole(F, local)?;
        close_file(F, file)?;
        let a = unregister(p);
        // SAFETY: writable (the contract).
        unsafe { *f = std::ptr::null_mut() };
        if let Some(a) = a {
            // SAFETY: a was registered (a Box from register()) and is not any more: this is
            // its only owner.
            drop(unsafe { Box::from_raw(a as *mut psls_file_t) });
        }
        Ok(())
    })
}

/// Unregisters the handle value `p`; the Box it stood for.
fn unregister(p: *mut psls_file_t) -> Option<usize> {
    let mut files = lock(&FILES);
    let i = files.iter().position(|&(v, _, _)| v == p as usize)?;
    Some(files.remove(i).1)
}

/// Closes every file of `h` still open, in the order they were opened (the same on every
/// rank), and frees their handles: for psls_finalize.
pub(crate) fn close_all_of(h: &psls_t) -> Vec<Result<(), Failure>> {
    let mine: Vec<usize> = {
        let mut files = lock(&FILES);
        let owner = h as *const psls_t as usize;
        let mine = files
            .iter()
            .filter(|&&(_, _, o)| o == owner)
            .map(|&(_, a, _)| a)
            .collect();
        files.retain(|&(_, _, o)| o != owner);
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
