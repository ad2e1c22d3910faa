//! The C API of PSLS: `libpsls.a` / `libpsls.so`, with the header `include/psls.h` that
//! cbindgen generates from this crate (see `docs/c-api.md`).
//!
//! Rules every exported function keeps (after rustls-ffi):
//! - its body runs inside [`boundary::boundary`]: a panic becomes `PSLS_ERR_PANIC` and never
//!   unwinds into C;
//! - a NULL pointer argument returns `PSLS_ERR_NULL` and is never dereferenced; a handle is
//!   looked up among the live ones before it is used, so a finalized (or closed) handle
//!   returns `PSLS_ERR_NOT_INIT` instead of touching freed memory;
//! - every failure leaves a detailed message for the calling thread (`psls_last_error`);
//! - its doc comment (which becomes the header's) says who owns each pointer.
//!
//! The handles own what the Rust API lends: `psls_t` boxes the runtime, and the global arrays,
//! global mutexes and mapped files that borrow it are kept in the handle (or in `psls_file_t`
//! boxes registered with it), so `psls_finalize` releases them before the runtime itself.

#![deny(unsafe_op_in_unsafe_fn)]

// The modules in the order of the header, which follows them (hence the separate groups,
// which rustfmt leaves in this order): result codes, the handle, global memory, mapped files,
// checkpoints, messages.
mod error;

mod handle;

mod memory;

mod files;

mod ckpt;

mod messages;

mod boundary;

mod openmpi;

pub use ckpt::*;
pub use error::*;
pub use files::*;
pub use handle::*;
pub use memory::*;
pub use messages::*;
