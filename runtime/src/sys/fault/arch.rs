//! Telling reads, writes and instruction fetches apart, from the signal's machine context.
//!
//! Only x86_64 and aarch64 can tell; elsewhere every fault counts as a write fault.

use libc::c_void;
#[cfg(target_arch = "aarch64")]
use std::ptr;

/// What the faulting access was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code) // only Write is ever made there
)]
pub(super) enum Kind {
    Read,
    Write,
    /// An instruction fetch: never served, since global memory holds data only (and serving it
    /// with read access would fault again forever on a non-executable page).
    Exec,
}

/// x86_64: bits 1 (write) and 4 (instruction fetch) of the page-fault error code.
///
/// # Safety
/// `ctx` is the ucontext the kernel passed to an SA_SIGINFO handler.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn access_kind(ctx: *mut c_void) -> Kind {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: ctx points to a valid ucontext_t (contract); REG_ERR is within gregs.
    let err = unsafe { (*uc).uc_mcontext.gregs[libc::REG_ERR as usize] };
    match (err & 0x10 != 0, err & 2 != 0) {
        (true, _) => Kind::Exec,
        (false, true) => Kind::Write,
        (false, false) => Kind::Read,
    }
}

/// aarch64: the ESR record that the kernel appends to the signal frame.
///
/// # Safety
/// `ctx` is the ucontext the kernel passed to an SA_SIGINFO handler.
#[cfg(target_arch = "aarch64")]
pub(super) unsafe fn access_kind(ctx: *mut c_void) -> Kind {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: ctx points to a valid ucontext_t (contract); only the address is taken.
    let pstate = unsafe { ptr::addr_of!((*uc).uc_mcontext.pstate) } as usize;
    // The kernel's sigcontext has `__u8 __reserved[4096]` 16-byte aligned right after pstate.
    let reserved = (pstate + 8 + 15) & !15;
    // SAFETY: those 4096 bytes are part of the ucontext the kernel wrote.
    unsafe { esr_kind(reserved as *const u8, 4096) }
}

/// Other architectures: no portable way to tell, so every fault counts as a write fault. That
/// is correct for loads too (the page is fetched for writing, which is only slower).
///
/// # Safety
/// None; `unsafe` only to match the other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) unsafe fn access_kind(_ctx: *mut c_void) -> Kind {
    Kind::Write
}

/// Walks the `_aarch64_ctx` records (u32 magic, u32 size) for the ESR record: an instruction
/// abort is `Exec`, a data abort reads its WnR bit. Without a record, or for another exception
/// class, says `Write`.
///
/// # Safety
/// `records` is valid for reads of `len` bytes and 8-byte aligned.
#[cfg(any(target_arch = "aarch64", test))]
pub(super) unsafe fn esr_kind(records: *const u8, len: usize) -> Kind {
    const ESR_MAGIC: u32 = 0x4553_5201;
    let mut off = 0;
    while off + 16 <= len {
        // SAFETY: off + 16 <= len, and off stays a multiple of 8 (sizes are checked below).
        let (magic, size) = unsafe {
            let head = records.add(off).cast::<u32>();
            (head.read(), head.add(1).read())
        };
        if magic == ESR_MAGIC {
            // SAFETY: the record's u64 esr lies at off + 8, within len (checked above).
            let esr = unsafe { records.add(off + 8).cast::<u64>().read() };
            return match (esr >> 26) & 0x3f {
                0x20 | 0x21 => Kind::Exec,
                0x24 | 0x25 if esr & (1 << 6) == 0 => Kind::Read,
                _ => Kind::Write,
            };
        }
        if magic == 0 || size < 8 || size % 8 != 0 {
            break;
        }
        off += size as usize;
    }
    Kind::Write
}
