//! The runtime handle `psls_t`: init, finalize, the rank, node and view queries, and the
//! checks every function makes on its pointer arguments.

use crate::boundary::boundary;
use crate::error::{Failure, PSLS_ERR_MPI, PSLS_ERR_NOT_INIT, PSLS_ERR_NULL, PSLS_ERR_OTHER};
use mpi::ffi::{MPI_Comm, RSMPI_Fint};
use runtime::rma::Comm;
use runtime::{GlobalArray, GlobalMutex, Psls};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// This rank's PSLS runtime (opaque).
///
/// Created by psls_init (or psls_init_f), which gives it to the caller; released by
/// psls_finalize. Every function takes it by pointer and never takes ownership, except
/// psls_finalize.
#[allow(non_camel_case_types)]
pub struct psls_t {
    // The fields that borrow `psls` come first, so they are dropped before it; each is also
    // emptied explicitly by `finish` before the runtime is finalized.
    /// The global mutexes created, by id.
    pub(crate) mutexes: Mutex<Vec<Arc<GlobalMutex<'static>>>>,
    /// The live global arrays, by address.
    pub(crate) arrays: Mutex<HashMap<usize, GlobalArray<'static, u8>>>,
    /// A duplicate of the runtime's communicator, for this binding's own agreements.
    pub(crate) comm: Comm,
    /// The runtime, boxed: it stays at one address until `psls_finalize`, so the borrows
    /// above (and the mapped files of `crate::files`) may claim a `'static` lifetime.
    psls: Box<Psls>,
}

impl psls_t {
    /// The runtime.
    pub(crate) fn rt(&self) -> &Psls {
        &self.psls
    }

    /// The runtime, for a borrower that is stored in this handle (or in a file handle
    /// registered with it).
    ///
    /// # Safety
    /// What borrows the result must be dropped before `psls_finalize` finalizes the runtime:
    /// stored in this handle's fields or in a registered `psls_file_t`, never elsewhere.
    pub(crate) unsafe fn rt_static(&self) -> &'static Psls {
        let p: *const Psls = &*self.psls;
        // SAFETY: the Psls lives in a Box that neither moves nor drops until psls_finalize,
        // which first drops every borrower (the caller's contract).
        unsafe { &*p }
    }
}

/// The addresses of the live handles: a pointer is dereferenced only when it is one of them.
static LIVE: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// The next handle value (see [`handle_value`]).
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x1000);

/// A new value for a handle given to C (`psls_t *`, `psls_file_t *`): opaque, never NULL and
/// never given twice, so that a copy of a released handle stays invalid even when a new
/// handle is made (the allocator may give the released Box's address to the new one). The
/// values are small multiples of 16, far from the addresses of real objects.
pub(crate) fn handle_value() -> usize {
    NEXT_HANDLE.fetch_add(16, Ordering::Relaxed)
}

/// Locks `m`, ignoring poisoning: every critical section here leaves its data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The live handle `h`.
///
/// # Safety
/// The returned reference must not be used after a `psls_finalize` of `h` has started (the C
/// contract: psls_finalize is the last call on a handle, and no other call runs during it).
pub(crate) unsafe fn live<'a>(func: &str, h: *const psls_t) -> Result<&'a psls_t, Failure> {
    if h.is_null() {
        return Err(Failure::new(
            PSLS_ERR_NULL,
            format!("{func}: the psls_t handle is NULL (psls_init gives one; psls_finalize sets it to NULL)"),
        ));
    }
    let Some(&(_, a)) = lock(&LIVE).iter().find(|&&(v, _)| v == h as usize) else {
        return Err(Failure::new(
            PSLS_ERR_NOT_INIT,
            format!("{func}: {h:p} is not a live psls_t handle: it was not returned by psls_init, or psls_finalize released it"),
        ));
    };
    // SAFETY: a registered address is a Box that psls_init leaked and that only psls_finalize
    // frees, after unregistering it; the caller keeps psls_finalize away meanwhile.
    Ok(unsafe { &*(a as *const psls_t) })
}

/// The smallest and the largest `v` of the ranks of `h`, in one collective: a collective
/// call's argument that every rank must pass alike differs where they differ.
pub(crate) fn spread(h: &psls_t, func: &str, v: u64) -> Result<(u64, u64), Failure> {
    let all = h
        .comm
        .allgather_words(&[v])
        .map_err(|e| Failure::runtime(func, e))?;
    let lo = all.iter().copied().min().unwrap_or(v);
    let hi = all.iter().copied().max().unwrap_or(v);
    Ok((lo, hi))
}

/// [`agree_args`] over the live handle of this process, for a collective call whose own
/// handle argument may be what is wrong (a file handle that is not open, a NULL): without a
/// live handle there is nobody to agree with, and `local` is returned as it is.
pub(crate) fn agree_on_sole<T>(func: &str, local: Result<T, Failure>) -> Result<T, Failure> {
    // SAFETY: used only for this agreement, within the call (the C contract keeps
    // psls_finalize away meanwhile).
    match unsafe { sole_live() } {
        Some(h) => agree_args(h, func, local),
        None => local,
    }
}

/// The live handle of this process, if there is one (there is at most one).
///
/// # Safety
/// As [`live`].
pub(crate) unsafe fn sole_live<'a>() -> Option<&'a psls_t> {
    let a = lock(&LIVE).first()?.1;
    // SAFETY: as in live().
    Some(unsafe { &*(a as *const psls_t) })
}

/// Writes `v` to the out-pointer `out` (named `what` in messages).
///
/// # Safety
/// Unless NULL, `out` must be valid for a write of a `T`.
pub(crate) unsafe fn put<T>(func: &str, what: &str, out: *mut T, v: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(func, what));
    }
    // SAFETY: not NULL, and valid for writes (the caller's contract).
    unsafe { out.write(v) };
    Ok(())
}

/// The NUL-terminated UTF-8 string `p` (a name).
///
/// # Safety
/// Unless NULL, `p` must point at a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn name_arg<'a>(
    func: &str,
    what: &str,
    p: *const c_char,
) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(func, what));
    }
    // SAFETY: not NULL, and NUL-terminated (the caller's contract).
    let s = unsafe { CStr::from_ptr(p) };
    let s = s
        .to_str()
        .map_err(|e| Failure::arg(func, format!("{what} is not UTF-8 ({e})")))?;
    if s.is_empty() {
        return Err(Failure::arg(func, format!("{what} is empty")));
    }
    Ok(s)
}

/// Agrees on this rank's checks of a collective call's arguments, before the collective
/// (collective over `h`'s ranks): a rank that refused alone would leave the others waiting in
/// it. If any rank's checks failed, every rank returns an error with the highest code of any
/// rank: its own message, or one that says another rank refused.
pub(crate) fn agree_args<T>(
    h: &psls_t,
    func: &str,
    local: Result<T, Failure>,
) -> Result<T, Failure> {
    let code = local.as_ref().err().map_or(0, |e| e.code);
    let worst = h
        .comm
        .allreduce_u64(
            u64::try_from(code).unwrap_or(0),
            runtime::rma::ReduceOp::Max,
        )
        .map_err(|e| Failure::runtime(func, e))?;
    if worst == 0 {
        return local;
    }
    let worst = c_int::try_from(worst).unwrap_or(crate::error::PSLS_ERR_ARG);
    Err(match local {
        Err(mut e) => {
            e.code = worst;
            e
        }
        Ok(_) => Failure::new(
            worst,
            format!("{func}: another rank refused this call (its psls_last_error says why); this rank's arguments were fine"),
        ),
    })
}

/// `v` as a C int.
pub(crate) fn int(func: &str, what: &str, v: usize) -> Result<c_int, Failure> {
    c_int::try_from(v).map_err(|_| Failure::arg(func, format!("{what} {v} does not fit in an int")))
}

/// Starts the runtime on `comm` and registers the new handle in `*out`. `*out` is set to NULL
/// on failure, except when PSLS runs already: then it may hold the live handle, which must not
/// be lost, and is left as it is.
///
/// # Safety
/// As psls_init.
unsafe fn start(func: &str, comm: MPI_Comm, out: *mut *mut psls_t) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(func, "out"));
    }
    // SAFETY: forwarded contract.
    match unsafe { start_inner(func, comm) } {
        Ok(h) => {
            // SAFETY: psls_init's contract: out is writable; checked not NULL above.
            unsafe { *out = h };
            Ok(())
        }
        Err((e, Running::Already)) => Err(e),
        Err((e, Running::No)) => {
            // SAFETY: as above.
            unsafe { *out = std::ptr::null_mut() };
            Err(e)
        }
    }
}

/// Whether a failed start found PSLS running already.
enum Running {
    Already,
    No,
}

fn already_running(func: &str, e: Option<runtime::Error>) -> (Failure, Running) {
    let message = format!("{func}: PSLS is already running in this process: one psls_t at a time; call psls_finalize before psls_init again (*out is left as it was)");
    let f = match e {
        Some(e) => {
            let mut f = Failure::runtime(func, e);
            f.message = message;
            f
        }
        None => Failure::new(PSLS_ERR_OTHER, message),
    };
    (f, Running::Already)
}

/// The new handle of a runtime started on `comm`, registered.
///
/// # Safety
/// As psls_init.
unsafe fn start_inner(func: &str, comm: MPI_Comm) -> Result<*mut psls_t, (Failure, Running)> {
    let not_running = |f: Failure| (f, Running::No);
    // Before anything else: a live handle of this binding (the caller's `*out`, perhaps).
    if !lock(&LIVE).is_empty() {
        return Err(already_running(func, None));
    }
    if !runtime::rma::is_initialized() || runtime::rma::is_finalized() {
        return Err(not_running(Failure::new(
            PSLS_ERR_MPI,
            format!("{func}: MPI is not initialized (or already finalized): call MPI_Init_thread with MPI_THREAD_MULTIPLE before psls_init, and MPI_Finalize only after psls_finalize"),
        )));
    }
    // SAFETY: reading an MPI constant exported by the MPI shim.
    if comm == unsafe { mpi::ffi::RSMPI_COMM_NULL } {
        return Err(not_running(Failure::arg(func, "comm is MPI_COMM_NULL")));
    }
    // Keeps the Open MPI constructor (and its object file) in a static link.
    std::hint::black_box(&crate::openmpi::CHOOSE_OSC);
    // The configuration is read inside, so that an error on one rank fails every rank.
    // SAFETY: psls_init's contract: comm is a valid communicator, the same on every rank.
    let psls = unsafe { runtime::init_on_env(comm) }.map_err(|e| {
        if let runtime::Error::AlreadyInitialized = e {
            return already_running(func, Some(e));
        }
        let mut f = Failure::runtime(func, e);
        if let Some(h) = crate::openmpi::hint(&f.message) {
            f.message.push_str(&h);
        }
        not_running(f)
    })?;
    let comm = psls
        .dup_comm()
        .map_err(|e| not_running(Failure::runtime(func, e)))?;
    let h = Box::into_raw(Box::new(psls_t {
        mutexes: Mutex::new(Vec::new()),
        arrays: Mutex::new(HashMap::new()),
        comm,
        psls: Box::new(psls),
    }));
    let v = handle_value();
    lock(&LIVE).push((v, h as usize));
    Ok(v as *mut psls_t)
}

/// Starts PSLS on the ranks of `comm` (collective over `comm`).
///
/// MPI must have been initialized by the application with MPI_THREAD_MULTIPLE
/// (MPI_Init_thread); the application also finalizes MPI, after psls_finalize. The settings
/// come from the PSLS_* environment variables (docs/configuration.md).
///
/// Ownership: on success `*out` receives a new handle that the caller owns and releases with
/// psls_finalize; on failure `*out` is set to NULL (when `out` is not NULL), except when PSLS
/// runs already in this process (PSLS_ERR_OTHER): then `*out` is left as it was, so that a
/// second psls_init on the variable that holds the live handle does not lose it. `comm` is
/// duplicated: the caller keeps it.
///
/// Returns PSLS_ERR_NULL (out is NULL), PSLS_ERR_ARG (comm is MPI_COMM_NULL), PSLS_ERR_MPI (MPI
/// not initialized, or not at MPI_THREAD_MULTIPLE), PSLS_ERR_OTHER (PSLS runs already),
/// PSLS_ERR_CONFIG, or another code from the runtime.
///
/// # Safety
/// `comm` must be a valid communicator, passed by every rank of it. `out` must be NULL or
/// valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn psls_init(comm: MPI_Comm, out: *mut *mut psls_t) -> c_int {
    // SAFETY: forwarded contract.
    boundary("psls_init", || unsafe { start("psls_init", comm, out) })
}

/// psls_init for Fortran: `comm` is a Fortran communicator handle (an MPI_Fint, such as
/// MPI_COMM_WORLD in Fortran), turned into a C one with MPI_Comm_f2c.
///
/// Ownership and errors as psls_init; a handle MPI does not know is PSLS_ERR_ARG (the job
/// is not aborted).
///
/// # Safety
/// As psls_init.
#[no_mangle]
pub unsafe extern "C" fn psls_init_f(comm: RSMPI_Fint, out: *mut *mut psls_t) -> c_int {
    boundary("psls_init_f", || {
        if !runtime::rma::is_initialized() || runtime::rma::is_finalized() {
            // Let start() say it; MPI_Comm_f2c needs an initialized MPI.
            // SAFETY: forwarded contract; the communicator is not used before the check.
            return unsafe { start("psls_init_f", mpi::ffi::RSMPI_COMM_NULL, out) };
        }
        // SAFETY: MPI is initialized; MPI_Comm_f2c accepts any integer and returns
        // MPI_COMM_NULL, or an invalid handle, for a bad one.
        let c = unsafe { mpi::ffi::RSMPI_Comm_f2c(comm) };
        // SAFETY: MPI is initialized; c came from MPI_Comm_f2c. MPI_COMM_NULL is start()'s.
        if c != unsafe { mpi::ffi::RSMPI_COMM_NULL } && !unsafe { known_comm(c) } {
            if !out.is_null() {
                // SAFETY: the contract: out is NULL or writable.
                unsafe { *out = std::ptr::null_mut() };
            }
            return Err(Failure::arg(
                "psls_init_f",
                format!("{comm} is not a Fortran communicator handle that MPI knows (pass MPI_COMM_WORLD, or a communicator from MPI_Comm_dup or MPI_Comm_split)"),
            ));
        }
        // SAFETY: forwarded contract.
        unsafe { start("psls_init_f", c, out) }
    })
}

/// Whether MPI knows the communicator `c` that MPI_Comm_f2c gave: not all zero bits (Open MPI
/// gives a null pointer for an index it does not know), and MPI_Comm_size succeeds on it.
/// Meanwhile MPI_COMM_WORLD and MPI_COMM_SELF, whose error handlers are called for an invalid
/// handle, return errors instead of aborting; the application's handlers are put back.
///
/// # Safety
/// MPI must be initialized and not finalized; `c` must come from MPI_Comm_f2c.
unsafe fn known_comm(c: MPI_Comm) -> bool {
    use mpi::ffi::{
        MPI_Comm_get_errhandler, MPI_Comm_set_errhandler, MPI_Comm_size, MPI_Errhandler_free,
        RSMPI_COMM_SELF, RSMPI_COMM_WORLD, RSMPI_ERRORS_RETURN,
    };
    // SAFETY: reading the bytes of a plain handle value.
    let bytes = unsafe {
        std::slice::from_raw_parts((&raw const c).cast::<u8>(), std::mem::size_of::<MPI_Comm>())
    };
    if bytes.iter().all(|&b| b == 0) {
        return false;
    }
    // SAFETY: MPI is initialized (the contract); the handler handles are valid out-pointers
    // and are given back and freed below.
    unsafe {
        let comms = [RSMPI_COMM_WORLD, RSMPI_COMM_SELF];
        let mut saved = [RSMPI_ERRORS_RETURN; 2];
        for (c, s) in comms.iter().zip(saved.iter_mut()) {
            MPI_Comm_get_errhandler(*c, s);
            MPI_Comm_set_errhandler(*c, RSMPI_ERRORS_RETURN);
        }
        let mut size = 0;
        let ok = MPI_Comm_size(c, &mut size) == mpi::ffi::MPI_SUCCESS as c_int && size > 0;
        for (c, s) in comms.iter().zip(saved.iter_mut()) {
            MPI_Comm_set_errhandler(*c, *s);
            MPI_Errhandler_free(s);
        }
        ok
    }
}

/// Stops PSLS (collective): closes the files the application left open (as psls_file_close
/// does), releases the global mutexes and arrays, then the runtime. It does not call
/// MPI_Finalize.
///
/// Ownership: takes back the handle `*h` and sets `*h` to NULL, even when it fails; every
/// pointer into global memory and every psls_file_t of this handle is invalid afterwards.
///
/// Returns PSLS_ERR_NULL (h or *h is NULL), PSLS_ERR_NOT_INIT (*h is not a live handle), or
/// the first error of the steps above (each step runs anyway).
///
/// # Safety
/// `h` must be NULL or valid for reading and writing a pointer. No other call on `*h` may run
/// during or after this one.
#[no_mangle]
pub unsafe extern "C" fn psls_finalize(h: *mut *mut psls_t) -> c_int {
    const F: &str = "psls_finalize";
    boundary(F, || {
        if h.is_null() {
            return Err(Failure::null(F, "h (the address of the handle)"));
        }
        // SAFETY: not NULL, and readable (the contract).
        let p = unsafe { *h };
        if p.is_null() {
            return Err(Failure::null(F, "*h (the handle)"));
        }
        let a = {
            let mut live = lock(&LIVE);
            let Some(i) = live.iter().position(|&(v, _)| v == p as usize) else {
                return Err(Failure::new(
                    PSLS_ERR_NOT_INIT,
                    format!("{F}: {p:p} is not a live psls_t handle (already finalized?)"),
                ));
            };
            live.swap_remove(i).1
        };
        // SAFETY: writable (the contract).
        unsafe { *h = std::ptr::null_mut() };
        // SAFETY: a was a registered handle, a Box leaked by psls_init; it is unregistered now,
        // so no other call can reach it, and this is its only owner.
        let handle = unsafe { Box::from_raw(a as *mut psls_t) };
        finish(handle)
    })
}

/// Releases everything the handle holds, borrowers first, then finalizes the runtime.
fn finish(handle: Box<psls_t>) -> Result<(), Failure> {
    const F: &str = "psls_finalize";
    let mut first: Option<Failure> = None;
    for r in crate::files::close_all_of(&handle) {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    let psls_t {
        mutexes,
        arrays,
        comm,
        psls,
    } = *handle;
    drop(mutexes);
    drop(arrays);
    drop(comm);
    if let Err(e) = (*psls).finalize() {
        first.get_or_insert(Failure::runtime(F, e));
    }
    first.map_or(Ok(()), Err)
}

/// This rank's number in the job (0 .. size-1) into `*rank`.
///
/// Returns PSLS_ERR_NULL or PSLS_ERR_NOT_INIT for a bad handle, PSLS_ERR_NULL for a NULL
/// `rank`. The same holds for every query below.
///
/// # Safety
/// `h` must be NULL or a pointer psls_init returned; `rank` NULL or writable. The same holds
/// for the handle and the out-pointers of every function below.
#[no_mangle]
pub unsafe extern "C" fn psls_rank(h: *const psls_t, rank: *mut c_int) -> c_int {
    const F: &str = "psls_rank";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        let v = int(F, "rank", h.rt().rank())?;
        // SAFETY: the contract.
        unsafe { put(F, "rank", rank, v) }
    })
}

/// The number of ranks of the job into `*size`.
///
/// # Safety
/// See psls_rank.
#[no_mangle]
pub unsafe extern "C" fn psls_size(h: *const psls_t, size: *mut c_int) -> c_int {
    const F: &str = "psls_size";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        let v = int(F, "size", h.rt().size())?;
        // SAFETY: the contract.
        unsafe { put(F, "size", size, v) }
    })
}

/// The index of the node this rank runs on (0 .. psls_num_nodes-1) into `*node`.
///
/// # Safety
/// See psls_rank.
#[no_mangle]
pub unsafe extern "C" fn psls_node(h: *const psls_t, node: *mut c_int) -> c_int {
    const F: &str = "psls_node";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        let v = int(F, "node", h.rt().node())?;
        // SAFETY: the contract.
        unsafe { put(F, "node", node, v) }
    })
}

/// The number of nodes of the job's view into `*n`.
///
/// # Safety
/// See psls_rank.
#[no_mangle]
pub unsafe extern "C" fn psls_num_nodes(h: *const psls_t, n: *mut c_int) -> c_int {
    const F: &str = "psls_num_nodes";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        let v = int(F, "the number of nodes", h.rt().node_map().num_nodes())?;
        // SAFETY: the contract.
        unsafe { put(F, "n", n, v) }
    })
}

/// Copies the name of node `node` into `buf` (`len` bytes, NUL included). The caller owns
/// `buf`.
///
/// Returns PSLS_ERR_ARG if `node` is out of range or the name and its NUL do not fit in `len`
/// bytes (then `buf` is left unchanged).
///
/// # Safety
/// `buf` must be NULL or valid for writing `len` bytes; see also psls_rank.
#[no_mangle]
pub unsafe extern "C" fn psls_node_name(
    h: *const psls_t,
    node: c_int,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    const F: &str = "psls_node_name";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        if buf.is_null() {
            return Err(Failure::null(F, "buf"));
        }
        let map = h.rt().node_map();
        let n = node_index(F, node, map.num_nodes())?;
        let name = map.name(n).as_bytes();
        if name.len() >= len {
            return Err(Failure::arg(
                F,
                format!(
                    "the buffer of {len} bytes is too small for the name of node {node} ({:?}), which needs {}",
                    String::from_utf8_lossy(name),
                    name.len() + 1
                ),
            ));
        }
        // SAFETY: buf is not NULL and has len > name.len() writable bytes (the contract).
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr(), buf.cast::<u8>(), name.len());
            *buf.add(name.len()) = 0;
        }
        Ok(())
    })
}

/// `node` as an index among `num` nodes.
fn node_index(func: &str, node: c_int, num: usize) -> Result<usize, Failure> {
    usize::try_from(node)
        .ok()
        .filter(|&n| n < num)
        .ok_or_else(|| {
            Failure::arg(
                func,
                format!(
                    "node {node} does not exist: the job has {num} nodes (0..{})",
                    num.saturating_sub(1)
                ),
            )
        })
}

/// The node that keeps the memory-checkpoint copies of node `node` (its buddy in the ring of
/// live nodes) into `*buddy`. In a one-node job a node is its own buddy.
///
/// Returns PSLS_ERR_ARG if `node` is out of range.
///
/// # Safety
/// See psls_rank.
#[no_mangle]
pub unsafe extern "C" fn psls_buddy(h: *const psls_t, node: c_int, buddy: *mut c_int) -> c_int {
    const F: &str = "psls_buddy";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        let n = node_index(F, node, h.rt().node_map().num_nodes())?;
        let b = h
            .rt()
            .buddy_ring()
            .buddy(n)
            .ok_or_else(|| Failure::arg(F, format!("node {node} is not in the buddy ring")))?;
        let v = int(F, "buddy", b)?;
        // SAFETY: the contract.
        unsafe { put(F, "buddy", buddy, v) }
    })
}

/// This rank's block `[*begin, *end)` of `n` items distributed in blocks over the ranks: the
/// first `n mod size` ranks get one item more. (The same as the Rust `Psls::local_range`.)
///
/// # Safety
/// See psls_rank.
#[no_mangle]
pub unsafe extern "C" fn psls_local_range(
    h: *const psls_t,
    n: u64,
    begin: *mut u64,
    end: *mut u64,
) -> c_int {
    const F: &str = "psls_local_range";
    boundary(F, || {
        // SAFETY: the contract.
        let h = unsafe { live(F, h)? };
        if begin.is_null() || end.is_null() {
            return Err(Failure::null(
                F,
                if begin.is_null() { "begin" } else { "end" },
            ));
        }
        let n = usize::try_from(n).map_err(|_| Failure::arg(F, format!("n = {n} is too large")))?;
        let r = h.rt().local_range(n);
        // SAFETY: the contract; both checked not NULL.
        unsafe {
            put(F, "begin", begin, r.start as u64)?;
            put(F, "end", end, r.end as u64)
        }
    })
}

#[cfg(test)]
mod tests {
    /// Any thread of the application may use a handle (the header says so).
    #[test]
    fn a_handle_may_be_shared_between_threads() {
        fn sync<T: Sync>() {}
        sync::<super::psls_t>();
    }
}
