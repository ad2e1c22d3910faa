//! Open MPI 4.1's one-sided component choice, made before the application's `MPI_Init_thread`.
//!
//! Open MPI 4.1 may pick its `pt2pt` one-sided component, which refuses every window under
//! MPI_THREAD_MULTIPLE ("MPI_ERR_WIN: invalid window"). The Rust runtime asks for `sm,ucx`
//! before it initializes MPI itself; a C or Fortran program initializes MPI before psls_init,
//! so this library makes the same choice when it is loaded (a constructor in `.init_array`),
//! before `main`: it sets `OMPI_MCA_osc=sm,ucx` unless the user chose components (the variable
//! is set) or the MPI is not Open MPI.
//!
//! Likewise `OMPI_MCA_io=^ompio` (MPI-IO through ROMIO): `ompio`'s progress function is not
//! safe when the application's MPI-IO call and PSLS's service thread run it at once (see
//! `choose_openmpi_components` in the runtime, which makes both choices for the runtime and for
//! this constructor).

/// The constructor: run by the dynamic loader (libpsls.so) or by the C runtime before `main`
/// (libpsls.a; `psls_init` refers to it, so the linker keeps it).
#[used]
#[link_section = ".init_array"]
pub(crate) static CHOOSE_OSC: extern "C" fn() = choose_osc;

extern "C" fn choose_osc() {
    // Nothing may unwind out of a constructor; a failure only loses the choice, which the
    // message of a failing psls_init then explains.
    // Before main: no other thread exists yet to read the environment concurrently.
    let _ = std::panic::catch_unwind(runtime::rma::choose_openmpi_components);
}

/// Whether the MPI library is Open MPI (MPI_Get_library_version may be called before
/// MPI_Init).
pub(crate) fn is_open_mpi() -> bool {
    runtime::rma::library_version().starts_with("Open MPI")
}

/// What to add to a failure of psls_init in which Open MPI refused a window.
pub(crate) fn hint(message: &str) -> Option<String> {
    if !(message.contains("MPI_Win_create") || message.contains("MPI_Win_allocate"))
        || !is_open_mpi()
    {
        return None;
    }
    Some(format!(
        " (Open MPI refuses windows under MPI_THREAD_MULTIPLE with its pt2pt one-sided component: set OMPI_MCA_osc=sm,ucx in the environment before MPI starts; it is {})",
        match std::env::var("OMPI_MCA_osc") {
            Ok(v) => format!("{v:?} now"),
            Err(_) => "unset now".into(),
        }
    ))
}
