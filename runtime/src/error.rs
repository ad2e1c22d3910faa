//! The runtime's error type. Every message names the thing that is wrong and, where there is
//! one, what the user can do about it.

use std::path::PathBuf;

/// Result alias used throughout the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration key has a value that is not allowed.
    #[error("invalid configuration: {key} = {value:?} ({source_name}): {allowed}")]
    Config {
        /// The key, as the user wrote it (`PSLS_PAGE_SIZE` or `page_size`).
        key: String,
        /// The offending value.
        value: String,
        /// Where the value came from: an environment variable or a TOML file.
        source_name: String,
        /// What is allowed instead.
        allowed: String,
    },

    /// The TOML configuration file could not be read or parsed.
    #[error("configuration file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A node root (memory or disk) cannot be used.
    #[error("{kind} root {path}: {message}")]
    Root {
        /// `memory` or `disk`.
        kind: &'static str,
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// The process was not started by an MPI launcher.
    #[error(
        "no MPI launcher detected: run this program under `psls-launch`, `mpirun` or `srun` \
         (or set PSLS_ALLOW_SINGLETON=1 to run it as a single rank)"
    )]
    NoLauncher,

    /// MPI could not give the thread level the runtime needs.
    #[error(
        "MPI granted thread level {granted}, but PSLS needs MPI_THREAD_MULTIPLE: use an MPI \
         library built with thread support (Debian's Open MPI and MPICH both are), and if the \
         application initializes MPI itself, it must call MPI_Init_thread with MPI_THREAD_MULTIPLE"
    )]
    ThreadLevel {
        /// The name of the level that MPI granted.
        granted: &'static str,
    },

    /// `init` was called while a runtime is already running in this process.
    #[error("psls::init was called twice; call finalize before initializing again")]
    AlreadyInitialized,

    /// MPI has already been finalized, so the runtime cannot start again.
    #[error("MPI has already been finalized in this process; PSLS cannot be initialized after MPI_Finalize")]
    MpiFinalized,

    /// An MPI call failed.
    #[error("MPI call {call} failed: {message} (error class {class})")]
    Mpi {
        /// The MPI function that failed.
        call: &'static str,
        /// MPI's error class.
        class: i32,
        /// MPI's message for the error code.
        message: String,
    },

    /// An RMA access falls outside the target's window.
    #[error(
        "RMA {op} of {len} bytes at offset {offset} on rank {target} is out of bounds: its window has {window_len} bytes"
    )]
    OutOfBounds {
        /// `get`, `put`, `compare_and_swap` or `fetch_and_op`.
        op: &'static str,
        /// Target rank.
        target: usize,
        /// Byte offset in the target window.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Size of the target's window.
        window_len: usize,
    },

    /// An atomic RMA access is not 8-byte aligned.
    #[error("RMA {op} at offset {offset} is not aligned to 8 bytes, as 64-bit atomics require")]
    Misaligned {
        /// The operation.
        op: &'static str,
        /// The offending offset.
        offset: usize,
    },

    /// A second access epoch was opened on a window that already has one.
    #[error("an RMA access epoch is already open on this window; close it (drop or unlock) first")]
    EpochOpen,

    /// A rank number is not in the communicator.
    #[error("rank {rank} does not exist: the communicator has {size} ranks")]
    NoSuchRank {
        /// The rank asked for.
        rank: usize,
        /// The communicator's size.
        size: usize,
    },

    /// Another rank failed during a collective step, and so this rank stops too.
    #[error("rank {rank} failed: {message}")]
    Remote {
        /// The rank that failed first.
        rank: usize,
        /// Its error.
        message: String,
    },

    /// The node map could not be built.
    #[error("node map: {0}")]
    NodeMap(String),

    /// The global address range is (partly) taken in this process.
    #[error(
        "the global address range {base:#x}..{end:#x} is already in use in this process; set PSLS_SVM_BASE \
         to another multiple of 1 GiB (e.g. 0x300000000000) or lower PSLS_SVM_SIZE",
        end = base + len
    )]
    AddressTaken {
        /// Start of the range.
        base: usize,
        /// Its length.
        len: usize,
    },

    /// A global allocation whose size in bytes does not even fit in a 64-bit number.
    #[error("cannot allocate {len} elements of {elem} bytes: the size overflows a 64-bit byte count; ask for fewer elements")]
    AllocOverflow {
        /// Elements asked for.
        len: usize,
        /// Bytes per element.
        elem: usize,
    },

    /// A global allocation does not fit in the global range.
    #[error("cannot allocate {requested} bytes of global memory: the global range of {size} bytes has no free run that large; raise PSLS_SVM_SIZE or free global arrays")]
    OutOfRange {
        /// Bytes asked for.
        requested: usize,
        /// Size of the global range.
        size: usize,
    },

    /// `mprotect` hit the kernel's limit on memory mappings.
    #[error(
        "the process has reached vm.max_map_count ({limit}) memory mappings: every run of global pages \
         with one protection is a mapping. Use larger pages (PSLS_PAGE_SIZE, now {page_size}, e.g. 64K), \
         or raise the limit: sysctl -w vm.max_map_count=1048576"
    )]
    MapCount {
        /// The current limit.
        limit: String,
        /// The page size in use.
        page_size: usize,
    },

    /// The coherence protocol met a state it cannot handle, or the application broke a rule.
    #[error("shared virtual memory: {0}")]
    Protocol(String),

    /// The PFS: a page store, record or file error (the message names the file, page or path).
    #[error("{0}")]
    Store(String),

    /// The application passed an argument that is not allowed (a bad PFS file name, a file
    /// that is mapped already, …); the message says which rule it breaks.
    #[error("{0}")]
    Argument(String),

    /// A checkpoint or a restart failed (the message says which step, and what to do).
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// hwloc could not describe the node.
    #[error("hwloc: {0}")]
    Hwloc(String),

    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What the runtime was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
