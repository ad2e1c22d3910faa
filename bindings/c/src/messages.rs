//! The two functions that turn failures into text: `psls_strerror` for a code, and
//! `psls_last_error` for the detailed message of the calling thread's last failure.

use crate::error::{copy_last, message_of, PSLS_ERR_PANIC, PSLS_OK};
use std::ffi::{c_char, c_int};

/// The message of result code `code`: a static string, never NULL; "unknown error code" for
/// a code that is not one of PSLS_*.
///
/// Ownership: the string belongs to the library and lives as long as the program; do not free
/// or modify it.
#[no_mangle]
pub extern "C" fn psls_strerror(code: c_int) -> *const c_char {
    std::panic::catch_unwind(|| message_of(code))
        .unwrap_or(c"unknown error code")
        .as_ptr()
}

/// Copies the detailed message of the calling thread's last failed call into `buf` (`len`
/// bytes): NUL-terminated, truncated to at most `len - 1` bytes (never in the middle of a
/// UTF-8 character). The message names the function and what was wrong, and often what to do.
/// An empty string if no call of this thread has failed. A successful call keeps the message
/// of the last failure; this function itself never changes it.
///
/// Ownership: the caller owns `buf`.
///
/// Returns PSLS_OK, PSLS_ERR_NULL if `buf` is NULL, PSLS_ERR_ARG if `len` is 0.
///
/// # Safety
/// `buf` must be NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn psls_last_error(buf: *mut c_char, len: usize) -> c_int {
    // Not through `boundary`: a failure here must not replace the message the caller wants.
    // SAFETY: forwarded contract.
    let r = std::panic::catch_unwind(|| unsafe { copy_last(buf, len) });
    match r {
        Ok(Ok(())) => PSLS_OK,
        Ok(Err(f)) => f.code,
        Err(_) => PSLS_ERR_PANIC,
    }
}
