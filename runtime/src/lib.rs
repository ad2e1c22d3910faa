//! PSLS: a parallel single level store for MPI applications.
//!
//! One global address space across the ranks of an MPI job, holding volatile global arrays and
//! the files of PSLS's own striped, mirrored parallel file system, protected by coordinated
//! two-level (memory and permanent) checkpoints. See `docs/design.md` for what is built so far.
//!
//! Layers, top to bottom: [`api`] · `checkpoint`/`recovery` · `svm` · `pfs` · [`cluster`] ·
//! [`rma`] and `sys` (the only modules that call MPI or libc directly).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod api;
pub mod ckpt;
pub mod cluster;
pub mod config;
pub mod error;
pub(crate) mod inject;
mod log;
pub(crate) mod pfs;
pub mod rma;
mod svm;
mod sys;

pub use api::{
    init, init_on, init_on_env, init_with, FileInfo, GlobalMutex, MutexGuard, PfsFile, Progress,
    Psls, VerifyReport,
};
pub use ckpt::{CheckpointKind, CheckpointStats, CleanCounts, Cleaning, Protected, ProtectedBytes};
pub use config::{Config, DirectoryRequests, Prefetch, WriteProtection};
pub use error::{Error, Result};
pub use svm::{PageInfo, SvmStats};
pub use sys::global::{GlobalArray, Pod};
pub use sys::vm::Access;
