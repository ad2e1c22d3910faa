//! Result codes, their messages, and the calling thread's last detailed error.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};

/// Success.
pub const PSLS_OK: c_int = 0;
/// A required pointer argument (handle, out-pointer, string) is NULL.
pub const PSLS_ERR_NULL: c_int = 1;
/// An invalid argument: a bad size, kind or node index, a string that is not UTF-8, a buffer
/// too small, or a pointer that psls_alloc did not return.
pub const PSLS_ERR_ARG: c_int = 2;
/// The handle is not (or no longer) live: never returned by psls_init (or psls_file_create /
/// psls_file_open), or already released by psls_finalize (or psls_file_close).
pub const PSLS_ERR_NOT_INIT: c_int = 3;
/// Bad configuration (the PSLS_* settings, the node roots, the global address range).
pub const PSLS_ERR_CONFIG: c_int = 4;
/// An MPI call failed, or MPI is not initialized at MPI_THREAD_MULTIPLE.
pub const PSLS_ERR_MPI: c_int = 5;
/// The global address range is exhausted, or vm.max_map_count is reached.
pub const PSLS_ERR_NO_MEMORY: c_int = 6;
/// No such PFS file.
pub const PSLS_ERR_NOT_FOUND: c_int = 7;
/// The PFS file already exists.
pub const PSLS_ERR_EXISTS: c_int = 8;
/// An I/O or PFS store error.
pub const PSLS_ERR_IO: c_int = 9;
/// A checkpoint or restart error.
pub const PSLS_ERR_CHECKPOINT: c_int = 10;
/// An internal panic was caught (a bug in PSLS: please report it with psls_last_error's text).
pub const PSLS_ERR_PANIC: c_int = 11;
/// Any other runtime error.
pub const PSLS_ERR_OTHER: c_int = 12;

/// A failed call: its code and the detailed message psls_last_error returns.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: c_int,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: c_int, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A NULL pointer where `what` was required.
    pub(crate) fn null(func: &str, what: &str) -> Failure {
        Failure::new(PSLS_ERR_NULL, format!("{func}: {what} is NULL"))
    }

    /// An invalid argument.
    pub(crate) fn arg(func: &str, why: impl std::fmt::Display) -> Failure {
        Failure::new(PSLS_ERR_ARG, format!("{func}: {why}"))
    }

    /// A runtime error, classified, with the function's name in front.
    pub(crate) fn runtime(func: &str, e: runtime::Error) -> Failure {
        Failure::new(code_of(&e), format!("{func}: {e}"))
    }
}

/// The result code for a runtime error.
fn code_of(e: &runtime::Error) -> c_int {
    use runtime::Error as E;
    // Exhaustive on purpose: a new kind of runtime error must get its code here.
    match e {
        E::Config { .. } | E::ConfigFile { .. } | E::Root { .. } | E::NoLauncher => PSLS_ERR_CONFIG,
        E::AddressTaken { .. } | E::NodeMap(_) => PSLS_ERR_CONFIG,
        E::ThreadLevel { .. } | E::MpiFinalized | E::Mpi { .. } => PSLS_ERR_MPI,
        E::OutOfRange { .. } | E::AllocOverflow { .. } | E::MapCount { .. } => PSLS_ERR_NO_MEMORY,
        E::Store(_) | E::Io { .. } => PSLS_ERR_IO,
        E::Checkpoint(_) => PSLS_ERR_CHECKPOINT,
        E::Argument(_) => PSLS_ERR_ARG,
        E::AlreadyInitialized
        | E::OutOfBounds { .. }
        | E::Misaligned { .. }
        | E::EpochOpen
        | E::NoSuchRank { .. }
        | E::Remote { .. }
        | E::Protocol(_)
        | E::Hwloc(_) => PSLS_ERR_OTHER,
    }
}

thread_local! {
    static LAST: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as the calling thread's last error.
pub(crate) fn set_last(message: String) {
    LAST.with(|l| *l.borrow_mut() = message);
}

/// The static message of `code`.
pub(crate) fn message_of(code: c_int) -> &'static CStr {
    match code {
        PSLS_OK => c"success",
        PSLS_ERR_NULL => c"a required pointer argument is NULL",
        PSLS_ERR_ARG => c"invalid argument",
        PSLS_ERR_NOT_INIT => c"the handle is not initialized (before psls_init, after psls_finalize, or a closed file)",
        PSLS_ERR_CONFIG => c"bad configuration (PSLS_* settings)",
        PSLS_ERR_MPI => c"an MPI call failed, or MPI is not initialized at MPI_THREAD_MULTIPLE",
        PSLS_ERR_NO_MEMORY => c"the global address range is exhausted, or vm.max_map_count is reached",
        PSLS_ERR_NOT_FOUND => c"no such PFS file",
        PSLS_ERR_EXISTS => c"the PFS file already exists",
        PSLS_ERR_IO => c"an I/O or PFS store error",
        PSLS_ERR_CHECKPOINT => c"a checkpoint or restart error",
        PSLS_ERR_PANIC => c"an internal panic was caught (a bug in PSLS)",
        PSLS_ERR_OTHER => c"a runtime error",
        _ => c"unknown error code",
    }
}

/// Copies the calling thread's last error into `buf` (`len` bytes, NUL included).
///
/// # Safety
/// Unless NULL, `buf` must point at `len` writable bytes.
pub(crate) unsafe fn copy_last(buf: *mut c_char, len: usize) -> Result<(), Failure> {
    if buf.is_null() {
        return Err(Failure::null("psls_last_error", "buf"));
    }
    if len == 0 {
        return Err(Failure::arg(
            "psls_last_error",
            "len is 0: the buffer must hold at least the terminating NUL",
        ));
    }
    LAST.with(|l| {
        let l = l.borrow();
        let bytes = truncate_utf8(l.as_bytes(), len - 1);
        // SAFETY: `buf` is not NULL and has `len` writable bytes (this function's contract);
        // we write bytes.len() <= len - 1 bytes and one NUL, within them.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
            *buf.add(bytes.len()) = 0;
        }
    });
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary (a
/// truncated message stays valid UTF-8).
fn truncate_utf8(s: &[u8], max: usize) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    // A UTF-8 continuation byte is 0b10xx_xxxx.
    while end > 0 && (s[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8(b"abc", 5), b"abc");
        assert_eq!(truncate_utf8(b"abcdef", 3), b"abc");
        let s = "a\u{e9}b".as_bytes(); // 'é' is 2 bytes
        assert_eq!(truncate_utf8(s, 2), b"a");
        assert_eq!(truncate_utf8(s, 3), "a\u{e9}".as_bytes());
    }

    #[test]
    fn every_code_has_its_own_message() {
        let msgs: Vec<_> = (PSLS_OK..=PSLS_ERR_OTHER).map(message_of).collect();
        for (i, m) in msgs.iter().enumerate() {
            assert_ne!(*m, c"unknown error code", "code {i}");
            assert!(!msgs[..i].contains(m), "code {i} repeats a message");
        }
        assert_eq!(message_of(-1), c"unknown error code");
        assert_eq!(message_of(PSLS_ERR_OTHER + 1), c"unknown error code");
    }
}
