//! `rma`: the runtime's only direct calls into MPI.
//!
//! rsmpi has no wrapper for one-sided communication and ignores MPI return codes, so this module
//! calls `mpi::ffi` itself: every return code is checked and turned into [`Error::Mpi`], and every
//! communicator and window it creates uses `MPI_ERRORS_RETURN`.
//!
//! - [`Mpi`] starts MPI with `MPI_THREAD_MULTIPLE` (or adopts an MPI the application started)
//!   and finalizes it on drop when it was the one that started it.
//! - [`Comm`] is a duplicated communicator with the few collectives the runtime needs.
//! - [`Window`] is an RMA window; [`Epoch`] is its long `lock_all` access epoch.

mod comm;
mod window;

pub use comm::{Blocks, Comm, PendingSend, ReduceOp, MSG_WORDS};

/// The MPI library's communicator handle (`MPI_Comm` of `mpi.h`), as the C and Fortran
/// bindings pass it to [`crate::init_on`].
pub type RawComm = ffi::MPI_Comm;
pub use window::{AtomicOp, Batch, Epoch, LockedWindow, Window};

use crate::error::{Error, Result};
use mpi::ffi;
use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

/// Declares the shim's getters (csrc/mpi_shim.c) and a safe wrapper for each.
macro_rules! shim {
    ($($name:ident -> $ty:ty;)*) => {
        mod shim_raw {
            #[allow(unused_imports)]
            use super::*;
            extern "C" {
                $(pub(super) fn $name() -> $ty;)*
            }
        }
        $(
            #[inline]
            pub(crate) fn $name() -> $ty {
                // SAFETY: the shim's getters only return a compile-time MPI constant or the
                // address of a predefined MPI object; they touch no state and cannot fail.
                unsafe { shim_raw::$name() }
            }
        )*
    };
}

// Handles that are macros in mpi.h and that rsmpi does not export.
shim! {
    psls_mpi_op_replace -> ffi::MPI_Op;
    psls_mpi_op_no_op -> ffi::MPI_Op;
    psls_mpi_op_sum -> ffi::MPI_Op;
    psls_mpi_op_bor -> ffi::MPI_Op;
    psls_mpi_op_band -> ffi::MPI_Op;
    psls_mpi_op_max -> ffi::MPI_Op;
    psls_mpi_op_min -> ffi::MPI_Op;
    psls_mpi_byte -> ffi::MPI_Datatype;
    psls_mpi_uint64 -> ffi::MPI_Datatype;
    psls_mpi_comm_world -> ffi::MPI_Comm;
    psls_mpi_comm_null -> ffi::MPI_Comm;
    psls_mpi_win_null -> ffi::MPI_Win;
    psls_mpi_info_null -> ffi::MPI_Info;
    psls_mpi_request_null -> ffi::MPI_Request;
    psls_mpi_errors_return -> ffi::MPI_Errhandler;
    psls_mpi_thread_multiple -> c_int;
    psls_mpi_thread_serialized -> c_int;
    psls_mpi_thread_funneled -> c_int;
    psls_mpi_thread_single -> c_int;
    psls_mpi_max_error_string -> c_int;
    psls_mpi_max_library_version_string -> c_int;
}

/// Names one of the shim's MPI constants.
macro_rules! handle {
    ($f:ident) => {
        $crate::rma::$f()
    };
}
pub(crate) use handle;

/// Turns an MPI return code into a typed error.
#[inline]
pub(crate) fn check(call: &'static str, rc: c_int) -> Result<()> {
    if rc == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    Err(mpi_error(call, rc))
}

/// The typed error for a failed MPI call; kept out of line so `check` stays small.
#[cold]
#[inline(never)]
fn mpi_error(call: &'static str, rc: c_int) -> Error {
    let mut class: c_int = 0;
    // SAFETY: MPI_Error_class may be called at any time, even before MPI_Init; class is a valid
    // out-pointer.
    unsafe { ffi::MPI_Error_class(rc, &mut class) };
    Error::Mpi {
        call,
        class,
        message: error_string(rc),
    }
}

/// MPI's text for an error code.
fn error_string(code: c_int) -> String {
    let cap = handle!(psls_mpi_max_error_string).max(1) as usize;
    let mut buf = vec![0u8; cap + 1];
    let mut len: c_int = 0;
    // SAFETY: buf holds MPI_MAX_ERROR_STRING + 1 bytes, as MPI_Error_string requires; len is a
    // valid out-pointer.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast::<c_char>(), &mut len) };
    if rc != ffi::MPI_SUCCESS as c_int {
        return format!("MPI error code {code}");
    }
    let len = (len.max(0) as usize).min(cap);
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Whether MPI_Init has been called in this process.
pub fn is_initialized() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: MPI_Initialized may be called at any time; flag is a valid out-pointer.
    unsafe { ffi::MPI_Initialized(&mut flag) };
    flag != 0
}

/// Whether MPI_Finalize has been called in this process.
pub fn is_finalized() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: MPI_Finalized may be called at any time; flag is a valid out-pointer.
    unsafe { ffi::MPI_Finalized(&mut flag) };
    flag != 0
}

/// The MPI library's version string, e.g. "Open MPI v4.1.4" or "MPICH Version: 4.0.2".
pub fn library_version() -> String {
    let cap = handle!(psls_mpi_max_library_version_string).max(1) as usize;
    let mut buf = vec![0u8; cap + 1];
    let mut len: c_int = 0;
    // SAFETY: buf holds MPI_MAX_LIBRARY_VERSION_STRING + 1 bytes; len is a valid out-pointer.
    // MPI_Get_library_version may be called before MPI_Init.
    let rc = unsafe { ffi::MPI_Get_library_version(buf.as_mut_ptr().cast::<c_char>(), &mut len) };
    if rc != ffi::MPI_SUCCESS as c_int {
        return "unknown MPI".into();
    }
    let len = (len.max(0) as usize).min(cap);
    let s = String::from_utf8_lossy(&buf[..len]).into_owned();
    let s = s.trim_end_matches('\0');
    let first = s.lines().next().unwrap_or("");
    // "Open MPI v4.1.4, package: ..., ident: ..." -> "Open MPI v4.1.4"
    let first = first.split(',').next().unwrap_or(first);
    // "MPICH Version:\t4.0.2" -> "MPICH Version: 4.0.2"
    first.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn thread_level_name(level: c_int) -> &'static str {
    if level == handle!(psls_mpi_thread_multiple) {
        "MPI_THREAD_MULTIPLE"
    } else if level == handle!(psls_mpi_thread_serialized) {
        "MPI_THREAD_SERIALIZED"
    } else if level == handle!(psls_mpi_thread_funneled) {
        "MPI_THREAD_FUNNELED"
    } else if level == handle!(psls_mpi_thread_single) {
        "MPI_THREAD_SINGLE"
    } else {
        "an unknown thread level"
    }
}

/// Open MPI 4.1 may pick its `pt2pt` one-sided component, which refuses every window under
/// `MPI_THREAD_MULTIPLE` ("invalid window"). Unless the user chose components, ask for `sm`
/// (windows allocated on one host) and `ucx` (everything else), which both work. Runs before
/// `MPI_Init_thread`, while the process has no MPI threads yet.
///
/// Likewise for MPI-IO: Open MPI 4.1's `ompio` registers a progress function that walks its
/// list of pending requests without a lock. When the application is inside a collective
/// `MPI_File_write_at_all` and PSLS's service thread calls `MPI_Iprobe`, both threads run it
/// and the process dies of SIGSEGV (seen in `pfs_bench`'s MPI-IO baseline, about one run in
/// eight). Unless the user chose, exclude `ompio`, so that MPI-IO goes through ROMIO.
///
/// The C library's load-time constructor calls this too, since a C program starts MPI itself.
/// It must run while the process has no other thread that reads the environment.
pub fn choose_openmpi_components() {
    if !library_version().starts_with("Open MPI") {
        return;
    }
    if std::env::var_os("OMPI_MCA_osc").is_none() {
        std::env::set_var("OMPI_MCA_osc", "sm,ucx");
        tracing::debug!(target: "psls::rma", "Open MPI: set OMPI_MCA_osc=sm,ucx (pt2pt rejects MPI_THREAD_MULTIPLE windows)");
    }
    if std::env::var_os("OMPI_MCA_io").is_none() {
        std::env::set_var("OMPI_MCA_io", "^ompio");
        tracing::debug!(target: "psls::rma", "Open MPI: set OMPI_MCA_io=^ompio (ompio's progress is not thread-safe beside the service thread)");
    }
}

/// Only one [`Mpi`] may exist at a time in a process.
static MPI_HELD: AtomicBool = AtomicBool::new(false);

/// The MPI library, started with `MPI_THREAD_MULTIPLE`.
///
/// When this value started MPI, dropping it calls `MPI_Finalize`; when the application had
/// started MPI itself, dropping it leaves MPI running for the application to finalize.
#[derive(Debug)]
pub struct Mpi {
    started_mpi: bool,
}

impl Mpi {
    /// Starts MPI with `MPI_THREAD_MULTIPLE`, or adopts the MPI the application already started
    /// after checking that it runs at that level.
    pub fn start() -> Result<Mpi> {
        if MPI_HELD.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialized);
        }
        match Self::start_inner() {
            Ok(m) => Ok(m),
            Err(e) => {
                MPI_HELD.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    fn start_inner() -> Result<Mpi> {
        if is_finalized() {
            return Err(Error::MpiFinalized);
        }
        let wanted = handle!(psls_mpi_thread_multiple);
        let mut provided: c_int = 0;
        let started_mpi = if is_initialized() {
            // SAFETY: MPI is initialized; provided is a valid out-pointer.
            check("MPI_Query_thread", unsafe {
                ffi::MPI_Query_thread(&mut provided)
            })?;
            false
        } else {
            choose_openmpi_components();
            // SAFETY: MPI is neither initialized nor finalized (checked above); NULL argc/argv
            // are allowed by MPI-2 and later; provided is a valid out-pointer.
            check("MPI_Init_thread", unsafe {
                ffi::MPI_Init_thread(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    wanted,
                    &mut provided,
                )
            })?;
            true
        };
        let mpi = Mpi { started_mpi };
        if provided < wanted {
            return Err(Error::ThreadLevel {
                granted: thread_level_name(provided),
            });
        }
        Ok(mpi)
    }

    /// A duplicate of `MPI_COMM_WORLD` for the runtime's own traffic.
    pub fn dup_world(&self) -> Result<Comm> {
        Comm::dup_raw(handle!(psls_mpi_comm_world))
    }

    /// A duplicate of the application's communicator `parent` for the runtime's own traffic.
    ///
    /// # Safety
    /// `parent` must be a valid communicator of this (initialized) MPI.
    pub unsafe fn dup(&self, parent: RawComm) -> Result<Comm> {
        Comm::dup_raw(parent)
    }

    /// Whether this value called `MPI_Init_thread` (and so will call `MPI_Finalize`).
    pub fn started_mpi(&self) -> bool {
        self.started_mpi
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if self.started_mpi && !is_finalized() {
            // SAFETY: this value called MPI_Init_thread and MPI is not finalized yet. Comm and
            // Window check `is_finalized` before freeing, so any left over are not freed later.
            let rc = unsafe { ffi::MPI_Finalize() };
            if let Err(e) = check("MPI_Finalize", rc) {
                tracing::error!(target: "psls::rma", "{e}");
            }
        }
        MPI_HELD.store(false, Ordering::SeqCst);
    }
}

/// Wall-clock time in seconds, from `MPI_Wtime`.
pub fn wtime() -> f64 {
    // SAFETY: MPI_Wtime has no preconditions.
    unsafe { ffi::RSMPI_Wtime() }
}
