//! The panic boundary every `extern "C"` body runs inside: a panic becomes `PSLS_ERR_PANIC`
//! and never unwinds into C; a failure becomes its code, with its message kept for
//! `psls_last_error`.

use crate::error::{set_last, Failure, PSLS_ERR_PANIC, PSLS_OK};
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body` for the exported function `func` and returns its result code.
pub(crate) fn boundary(func: &str, body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    // AssertUnwindSafe: after a panic the caller only gets a code back; no state the closure
    // saw half-updated is used again by this call.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => PSLS_OK,
        Ok(Err(f)) => {
            set_last(f.message);
            f.code
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            set_last(format!(
                "{func}: internal error (a panic in PSLS, caught at the C boundary): {what}; please report it"
            ));
            PSLS_ERR_PANIC
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{copy_last, PSLS_ERR_ARG};

    fn last() -> String {
        let mut buf = [0u8; 256];
        // SAFETY: buf has 256 writable bytes.
        unsafe { copy_last(buf.as_mut_ptr().cast(), buf.len()) }.expect("copy");
        let n = buf.iter().position(|&b| b == 0).expect("NUL");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let code = boundary("psls_test", || panic!("boom {}", 42));
        assert_eq!(code, PSLS_ERR_PANIC);
        let m = last();
        assert!(m.starts_with("psls_test: internal error"), "{m}");
        assert!(m.contains("boom 42"), "{m}");
    }

    #[test]
    fn a_failure_keeps_its_code_and_message() {
        assert_eq!(boundary("f", || Ok(())), PSLS_OK);
        let code = boundary("f", || Err(Failure::arg("f", "bad")));
        assert_eq!(code, PSLS_ERR_ARG);
        assert_eq!(last(), "f: bad");
        // A success keeps the last failure's message.
        assert_eq!(boundary("f", || Ok(())), PSLS_OK);
        assert_eq!(last(), "f: bad");
    }
}
