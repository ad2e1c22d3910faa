//! The fault path: the SIGSEGV/SIGBUS handler over the application view of the global range.
//!
//! No MPI call, lock or allocation may run in a signal handler (ARCHITECTURE decision 2), so the
//! handler only posts the fault in a static table of request slots, rings a futex doorbell that
//! wakes the service thread, and sleeps on its slot's state word until the service thread has
//! finished the fault: `retry` (the page now has the access, and the instruction re-executes) or
//! `fail` (the thread prints the service's message and aborts the process).
//!
//! A slot's state moves `FREE → CLAIMED → POSTED` (faulting thread), `POSTED → TAKEN →
//! DONE_RETRY | FAILING → DONE_FATAL` (service thread), and `DONE_RETRY → FREE` (faulting thread).
//! Every transition out of a state that two threads could see is a compare-exchange, so a slot
//! has one owner at a time and a fault is finished once.
//!
//! Where the view write-protects readable pages with `userfaultfd`
//! ([`FaultHandler::set_write_protect_bus`]), a store to such a page arrives as `SIGBUS`, which
//! is then a write fault like any other (posted with [`Fault::bus`] set); otherwise a `SIGBUS`
//! in the range means a full memory root, and ends the process with that message.
//!
//! Faults outside the range go to the action that was installed before ours, so ordinary
//! segfaults, the application's own handlers and Rust's stack-overflow report keep working.
//! Only Linux on x86_64 and aarch64 tells reads from writes; elsewhere every fault counts as a
//! write fault, which is slower (the page is fetched for writing) but still correct.

use std::cell::UnsafeCell;
use std::io;
use std::ptr;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize};
use std::time::Duration;

use libc::{c_int, c_void, siginfo_t};

use arch::{access_kind, Kind};

mod arch;

/// How many faults may be posted at once; further faulting threads wait for a free slot.
const SLOTS: usize = 256;
/// Longest `fail` message, in bytes; longer ones are truncated.
const MESSAGE_MAX: usize = 512;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const POSTED: u32 = 2;
const TAKEN: u32 = 3;
const DONE_RETRY: u32 = 4;
const FAILING: u32 = 5;
const DONE_FATAL: u32 = 6;

/// One posted fault. `addr`, `write` and `tid` are written while the faulting thread holds the
/// slot `CLAIMED`, and read by the service thread after it has seen `POSTED`.
struct Slot {
    state: AtomicU32,
    addr: AtomicUsize,
    write: AtomicBool,
    bus: AtomicBool,
    tid: AtomicI32,
    message_len: AtomicUsize,
    message: UnsafeCell<[u8; MESSAGE_MAX]>,
}

// SAFETY: every field but `message` is atomic. `message` is written only by the thread that moved
// the slot `TAKEN → FAILING` (so by one thread), before it stores `DONE_FATAL`, and read only by
// the faulting thread after it has loaded `DONE_FATAL` (SeqCst store/load: release/acquire).
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(FREE),
            addr: AtomicUsize::new(0),
            write: AtomicBool::new(false),
            bus: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            message_len: AtomicUsize::new(0),
            message: UnsafeCell::new([0; MESSAGE_MAX]),
        }
    }

    /// Moves the state `from → to` if it is `from`; says whether it did.
    fn cas(&self, from: u32, to: u32) -> bool {
        self.state.load(Relaxed) == from
            && self
                .state
                .compare_exchange(from, to, SeqCst, Relaxed)
                .is_ok()
    }
}

/// The previous action for one signal, as the handler needs it to chain.
struct Prev {
    handler: AtomicUsize,
    flags: AtomicI32,
}

impl Prev {
    const fn default_action() -> Prev {
        let (handler, flags) = (AtomicUsize::new(libc::SIG_DFL), AtomicI32::new(0));
        Prev { handler, flags }
    }
}

static SLOT_TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Whether a `FaultHandler` exists.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Bumped by each install, so a `Fault` of an earlier handler cannot finish a later fault.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// The range; `LEN == 0` means no range, and everything chains.
static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static SERVICE_TID: AtomicI32 = AtomicI32::new(0);
/// Whether a `SIGBUS` in the range is a store to a page `userfaultfd` write-protects (the view
/// write-protects that way), rather than a full memory root.
static WP_BUS: AtomicBool = AtomicBool::new(false);
/// Other mappings of memory-root files (the frames' read-write alias, the recovery area), in
/// which a `SIGBUS` means the same as in the range: the tmpfs is full. `(base, len)`; `len == 0`:
/// unused. Only the message differs, by [`Watched`] index.
static WATCHED: [(AtomicUsize, AtomicUsize); 2] = [
    (AtomicUsize::new(0), AtomicUsize::new(0)),
    (AtomicUsize::new(0), AtomicUsize::new(0)),
];
/// Counts posted faults; the service thread sleeps on it.
static DOORBELL: AtomicU32 = AtomicU32::new(0);
/// A function the handler tries first for a write fault in the range (0: none), and its context.
static FAST: AtomicUsize = AtomicUsize::new(0);
static FAST_CTX: AtomicUsize = AtomicUsize::new(0);
/// Counts freed slots, and how many faulting threads sleep on it waiting for one.
static FREED: AtomicU32 = AtomicU32::new(0);
static FREE_WAITERS: AtomicU32 = AtomicU32::new(0);
static PREV_SEGV: Prev = Prev::default_action();
static PREV_BUS: Prev = Prev::default_action();

/// A posted fault, taken by the service thread. Finish it with [`FaultHandler::retry`] or
/// [`FaultHandler::fail`], which consume it: it is neither `Copy` nor `Clone`, so a fault is
/// finished once and a finished slot is never touched again through a stale copy.
#[derive(Debug, PartialEq, Eq)]
pub struct Fault {
    /// The faulting address (`si_addr`), not rounded to a page.
    pub addr: usize,
    /// Whether the access was a store.
    pub write: bool,
    /// Whether it came as a `SIGBUS` (a store to a page `userfaultfd` write-protects, or, if
    /// the page is writable, a store that found the memory root full).
    pub bus: bool,
    /// The faulting thread's id, for diagnostics.
    pub tid: i32,
    slot: u32,
    generation: u32,
}

/// The installed handler; process-global, so at most one exists. Dropping it unregisters the
/// range, restores the previous SIGSEGV and SIGBUS actions (if ours is still the installed one)
/// and lets every waiting faulting thread retry, which then meets the previous action.
#[derive(Debug)]
pub struct FaultHandler {
    prev_segv: libc::sigaction,
    prev_bus: libc::sigaction,
    generation: u32,
}

/// A mapping of a memory-root file outside the global range, watched for `SIGBUS`
/// ([`FaultHandler::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The read-write alias of the frame file, through which the service thread writes pages.
    FramesAlias = 0,
    /// The recovery area: the slots of pure recovery copies and replicas.
    RecoveryArea = 1,
}

impl Watched {
    fn name(self) -> &'static str {
        match self {
            Watched::FramesAlias => "the frames' read-write alias",
            Watched::RecoveryArea => "the recovery area",
        }
    }
}

impl FaultHandler {
    /// Installs the handlers for the global range `[base, base + len)`. Fails with
    /// `AlreadyExists` if a handler is installed, `InvalidInput` for an empty or wrapping range,
    /// or the OS error of `sigaction`.
    pub fn install(base: usize, len: usize) -> io::Result<FaultHandler> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad global range: {len} bytes at {base:#x}"),
            ));
        }
        if INSTALLED
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a PSLS fault handler is already installed in this process",
            ));
        }
        let installed = install_actions(base, len);
        if installed.is_err() {
            LEN.store(0, SeqCst);
            INSTALLED.store(false, SeqCst);
        }
        installed
    }

    /// Watches `len` bytes at `base`, another mapping of a memory-root file, for `SIGBUS`: a
    /// write there that finds the tmpfs full then stops the process with the same message as
    /// in the range (naming `what`), instead of dying of the bare signal.
    pub fn watch(&self, what: Watched, base: usize, len: usize) {
        let (b, l) = &WATCHED[what as usize];
        l.store(0, SeqCst);
        b.store(base, SeqCst);
        l.store(len, SeqCst);
    }

    /// Marks the calling thread as the service thread: a fault it takes in the range is a bug,
    /// and aborts with a message instead of waiting for itself.
    pub fn register_service_thread(&self) {
        SERVICE_TID.store(gettid(), SeqCst);
    }

    /// Says whether the view write-protects readable pages with `userfaultfd`, whose faults
    /// come as `SIGBUS`: such a fault in the range is then a write fault, posted with
    /// [`Fault::bus`] set, instead of the end of the process.
    pub fn set_write_protect_bus(&self, on: bool) {
        WP_BUS.store(on, SeqCst);
    }

    /// The doorbell's current value; read it before [`take`](Self::take), and pass it to
    /// [`wait_doorbell`](Self::wait_doorbell) so a fault posted in between is not slept through.
    pub fn doorbell(&self) -> u32 {
        DOORBELL.load(SeqCst)
    }

    /// Sleeps until the doorbell differs from `seen` or `timeout` has passed (it may also return
    /// early, spuriously).
    pub fn wait_doorbell(&self, seen: u32, timeout: Duration) {
        futex_wait(&DOORBELL, seen, Some(timeout));
    }

    /// Moves every posted fault into `out`, marking it taken. Does not block.
    pub fn take(&self, out: &mut Vec<Fault>) {
        for (i, slot) in SLOT_TABLE.iter().enumerate() {
            if slot.cas(POSTED, TAKEN) {
                out.push(Fault {
                    addr: slot.addr.load(Relaxed),
                    write: slot.write.load(Relaxed),
                    bus: slot.bus.load(Relaxed),
                    tid: slot.tid.load(Relaxed),
                    slot: i as u32,
                    generation: self.generation,
                });
            }
        }
    }

    /// Finishes a taken fault: the faulting thread re-executes its access.
    pub fn retry(&self, f: Fault) {
        if let Some(slot) = self.slot_of(&f) {
            let done = slot.cas(TAKEN, DONE_RETRY);
            debug_assert!(done, "fault finished twice");
            futex_wake(&slot.state, 1);
        }
    }

    /// Finishes a taken fault fatally: the faulting thread writes `message` (at most 512 bytes)
    /// to stderr and aborts the process.
    pub fn fail(&self, f: Fault, message: &str) {
        let Some(slot) = self.slot_of(&f) else { return };
        if !slot.cas(TAKEN, FAILING) {
            debug_assert!(false, "fault finished twice");
            return;
        }
        let mut n = message.len().min(MESSAGE_MAX);
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: the compare-exchange to FAILING made this thread the message's only user; the
        // faulting thread reads it only after the DONE_FATAL store below.
        let buf = unsafe { &mut *slot.message.get() };
        buf[..n].copy_from_slice(&message.as_bytes()[..n]);
        slot.message_len.store(n, Relaxed);
        slot.state.store(DONE_FATAL, SeqCst);
        futex_wake(&slot.state, 1);
    }

    fn slot_of(&self, f: &Fault) -> Option<&'static Slot> {
        debug_assert_eq!(f.generation, self.generation, "fault of an earlier handler");
        (f.generation == self.generation).then(|| &SLOT_TABLE[f.slot as usize])
    }
}

impl Drop for FaultHandler {
    fn drop(&mut self) {
        LEN.store(0, SeqCst);
        for (_, l) in &WATCHED {
            l.store(0, SeqCst);
        }
        restore_if_ours(libc::SIGSEGV, &self.prev_segv);
        restore_if_ours(libc::SIGBUS, &self.prev_bus);
        // Nobody serves the table any more: send every waiting thread back to its access, where
        // it meets the previous action. A thread posting after this sees LEN == 0 (post).
        for slot in &SLOT_TABLE {
            loop {
                match slot.state.load(SeqCst) {
                    CLAIMED | FAILING => std::thread::yield_now(),
                    s @ (POSTED | TAKEN) => {
                        if slot.cas(s, DONE_RETRY) {
                            futex_wake(&slot.state, 1);
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        SERVICE_TID.store(0, SeqCst);
        WP_BUS.store(false, SeqCst);
        INSTALLED.store(false, SeqCst);
    }
}

fn install_actions(base: usize, len: usize) -> io::Result<FaultHandler> {
    let generation = GENERATION.fetch_add(1, SeqCst).wrapping_add(1);
    SERVICE_TID.store(0, SeqCst);
    // Remember the current actions before ours goes in, so that the handler chains correctly
    // even in the instant between installing and storing the action the swap returns.
    remember(libc::SIGSEGV, &sigaction(libc::SIGSEGV, None)?);
    remember(libc::SIGBUS, &sigaction(libc::SIGBUS, None)?);
    BASE.store(base, SeqCst);
    LEN.store(len, SeqCst);
    let ours = our_action();
    let prev_segv = sigaction(libc::SIGSEGV, Some(&ours))?;
    remember(libc::SIGSEGV, &prev_segv);
    let prev_bus = match sigaction(libc::SIGBUS, Some(&ours)) {
        Ok(prev) => prev,
        Err(e) => {
            restore_if_ours(libc::SIGSEGV, &prev_segv);
            return Err(e);
        }
    };
    remember(libc::SIGBUS, &prev_bus);
    Ok(FaultHandler {
        prev_segv,
        prev_bus,
        generation,
    })
}

fn our_action() -> libc::sigaction {
    // SAFETY: sigaction is a plain C struct for which all-zero bytes are a valid value.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_fault as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
    // SA_ONSTACK: a stack overflow must still reach Rust's report (through chaining), which needs
    // the alternate stack that std gives its threads. Threads without one use their own stack.
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: sa_mask is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    act
}

/// Installs `new` for `signo` (or only reads the action, if `None`); returns the previous one.
fn sigaction(signo: c_int, new: Option<&libc::sigaction>) -> io::Result<libc::sigaction> {
    // SAFETY: all-zero bytes are a valid sigaction.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    let new = new.map_or(ptr::null(), |a| a as *const libc::sigaction);
    // SAFETY: new is null or a valid sigaction, old is writable; our handler is async-signal-safe.
    if unsafe { libc::sigaction(signo, new, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

fn restore_if_ours(signo: c_int, prev: &libc::sigaction) {
    let ours = on_fault as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
    if sigaction(signo, None).is_ok_and(|cur| cur.sa_sigaction == ours) {
        // Nothing to do on failure: Drop cannot report it, and our handler then just chains.
        let _ = sigaction(signo, Some(prev));
    }
}

fn prev_for(signo: c_int) -> &'static Prev {
    if signo == libc::SIGBUS {
        &PREV_BUS
    } else {
        &PREV_SEGV
    }
}

fn remember(signo: c_int, act: &libc::sigaction) {
    let prev = prev_for(signo);
    prev.flags.store(act.sa_flags, SeqCst);
    prev.handler.store(act.sa_sigaction, SeqCst);
}

// ---- The signal handler. Everything from here to the end is async-signal-safe: atomics,
// ---- futex, write, sigaction, raise and abort; no allocation, lock or panic.

extern "C" fn on_fault(signo: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let saved = errno();
    // SAFETY: the kernel calls an SA_SIGINFO handler with a valid siginfo and ucontext.
    unsafe { handle(signo, info, ctx) };
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() = saved };
}

/// # Safety
/// `info` and `ctx` are the arguments the kernel passed to an SA_SIGINFO handler.
unsafe fn handle(signo: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // SAFETY: info is valid (contract); si_addr only reads the union, and is meaningful for the
    // kernel-made faults (si_code > 0) that are the only ones we use it for.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if signo == libc::SIGBUS && code > 0 {
        if let Some(what) = watched(addr) {
            die(Line::new()
                .s("PSLS: SIGBUS at ")
                .hex(addr)
                .s(" in ")
                .s(what.name())
                .s(
                    ": the memory root (tmpfs) is full; free space in the memory root or lower \
                    the job's memory use\n",
                ));
        }
    }
    if code <= 0 || !in_range(addr) {
        // SAFETY: the arguments are the kernel's (contract).
        unsafe { chain(signo, info, ctx, code) };
        return;
    }
    let bus = signo == libc::SIGBUS;
    if bus && !WP_BUS.load(SeqCst) {
        die(Line::new().s("PSLS: SIGBUS at ").hex(addr).s(
            " in the global address space: the memory root (tmpfs) is full or the frame file \
             was truncated; free space in the memory root or lower the job's memory use\n",
        ));
    }
    // A SIGBUS here is a store (only stores are write-protected with userfaultfd).
    let kind = if bus {
        Kind::Write
    } else {
        // SAFETY: ctx is the kernel's ucontext (contract).
        unsafe { access_kind(ctx) }
    };
    let tid = gettid();
    if kind == Kind::Exec {
        let text = " in the global address space, which holds data, never code\n";
        die(Line::new().s("PSLS: ").fault(kind, addr, tid).s(text));
    }
    if tid == SERVICE_TID.load(SeqCst) {
        let text = " in the global address space; it must use the read-write alias, not the view\n";
        die(Line::new()
            .s("PSLS: bug: the service thread took ")
            .fault(kind, addr, tid)
            .s(text));
    }
    if kind == Kind::Write {
        let f = FAST.load(SeqCst);
        if f != 0 {
            // SAFETY: FAST only ever holds 0 or a `FastPath` stored by `set_fast_path`.
            let f: FastPath = unsafe { std::mem::transmute::<usize, FastPath>(f) };
            if f(FAST_CTX.load(SeqCst), addr) {
                return;
            }
        }
    }
    let slot = post(addr, kind == Kind::Write, bus, tid);
    loop {
        match slot.state.load(SeqCst) {
            DONE_RETRY => break,
            DONE_FATAL => {
                let n = slot.message_len.load(Relaxed).min(MESSAGE_MAX);
                // SAFETY: DONE_FATAL was stored after the message was written, and nobody
                // writes it again while the slot is not FREE.
                let message = unsafe { &*slot.message.get() }.get(..n).unwrap_or_default();
                write_stderr(message);
                let newline = if message.ends_with(b"\n") { "" } else { "\n" };
                let text = " cannot be served; aborting\n";
                die(Line::new()
                    .s(newline)
                    .s("PSLS: ")
                    .fault(kind, addr, tid)
                    .s(text));
            }
            s => futex_wait(&slot.state, s, None),
        }
    }
    slot.state.store(FREE, SeqCst);
    FREED.fetch_add(1, SeqCst);
    if FREE_WAITERS.load(SeqCst) != 0 {
        futex_wake(&FREED, 1);
    }
}

/// A function the handler calls for a write fault before posting it: `f(context, address)`
/// returns true when it served the fault itself. It runs in the signal handler, so it must be
/// async-signal-safe: no allocation, no lock an interrupted thread could hold, no MPI.
pub type FastPath = fn(usize, usize) -> bool;

/// Installs (`Some`) or removes (`None`) the handler's fast path for write faults. Whoever
/// installs it keeps `context` valid until it removes it.
pub fn set_fast_path(f: Option<(FastPath, usize)>) {
    match f {
        Some((f, ctx)) => {
            FAST_CTX.store(ctx, SeqCst);
            FAST.store(f as usize, SeqCst);
        }
        None => FAST.store(0, SeqCst),
    }
}

/// The watched mapping that holds `addr`, if any.
fn watched(addr: usize) -> Option<Watched> {
    [Watched::FramesAlias, Watched::RecoveryArea]
        .into_iter()
        .find(|&w| {
            let (b, l) = &WATCHED[w as usize];
            let len = l.load(SeqCst);
            len != 0 && addr.wrapping_sub(b.load(SeqCst)) < len
        })
}

fn in_range(addr: usize) -> bool {
    let len = LEN.load(SeqCst);
    len != 0 && addr.wrapping_sub(BASE.load(SeqCst)) < len
}

/// Claims a free slot (waiting for one if all are busy), posts the fault in it and rings the
/// doorbell.
fn post(addr: usize, write: bool, bus: bool, tid: i32) -> &'static Slot {
    let start = tid as u32 as usize % SLOTS;
    loop {
        let freed = FREED.load(SeqCst);
        for i in 0..SLOTS {
            let slot = &SLOT_TABLE[(start + i) % SLOTS];
            if !slot.cas(FREE, CLAIMED) {
                continue;
            }
            slot.addr.store(addr, Relaxed);
            slot.write.store(write, Relaxed);
            slot.bus.store(bus, Relaxed);
            slot.tid.store(tid, Relaxed);
            slot.state.store(POSTED, SeqCst);
            if LEN.load(SeqCst) == 0 {
                // The handler was dropped after our range check, and its Drop may have scanned
                // past this slot: nobody will serve it, so retry (and meet the previous action).
                slot.cas(POSTED, DONE_RETRY);
            }
            DOORBELL.fetch_add(1, SeqCst);
            futex_wake(&DOORBELL, i32::MAX);
            return slot;
        }
        // Every slot is busy. A freeing thread wakes us if it sees FREE_WAITERS != 0; the
        // timeout only bounds the damage of a missed wake.
        FREE_WAITERS.fetch_add(1, SeqCst);
        futex_wait(&FREED, freed, Some(Duration::from_millis(10)));
        FREE_WAITERS.fetch_sub(1, SeqCst);
    }
}

/// Passes a fault that is not ours to the action installed before ours.
///
/// # Safety
/// The arguments are those the kernel passed to our handler.
unsafe fn chain(signo: c_int, info: *mut siginfo_t, ctx: *mut c_void, code: c_int) {
    let prev = prev_for(signo);
    let handler = prev.handler.load(SeqCst);
    let flags = prev.flags.load(SeqCst);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        if handler == libc::SIG_IGN && code <= 0 {
            return; // a signal sent with kill(2) and ignored before us stays ignored
        }
        // A hardware fault re-executes on return and now kills the process (the kernel also
        // kills for an ignored fault), with a core dump where enabled. A sent signal would not
        // recur, so send it again: it stays pending until we return, then kills.
        set_default(signo);
        if code <= 0 {
            // SAFETY: raise is async-signal-safe and has no memory preconditions.
            unsafe { libc::raise(signo) };
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its handler has this
        // signature; it gets the kernel's own arguments.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signo, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO, the previous handler takes only the signal number.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        f(signo);
    }
}

fn set_default(signo: c_int) {
    // SAFETY: all-zero bytes are a valid sigaction (SIG_DFL, empty mask, no flags).
    let act: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: act is a valid sigaction; sigaction is async-signal-safe.
    unsafe { libc::sigaction(signo, &act, ptr::null_mut()) };
}

/// Writes `line` to stderr and aborts, with the default actions back so nothing chains or
/// loops on the way out.
fn die(line: &Line) -> ! {
    write_stderr(line.bytes());
    set_default(libc::SIGSEGV);
    set_default(libc::SIGBUS);
    // SAFETY: abort is async-signal-safe and does not return.
    unsafe { libc::abort() }
}

fn write_stderr(mut rest: &[u8]) {
    while !rest.is_empty() {
        // SAFETY: rest is valid for reads of rest.len() bytes; write is async-signal-safe.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = rest.get(n as usize..).unwrap_or_default();
        } else if n == 0 || errno() != libc::EINTR {
            return;
        }
    }
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    });
    // An error (EAGAIN: the value changed; EINTR; ETIMEDOUT) just means "look again".
    futex(word, libc::FUTEX_WAIT, expected, ts.as_ref());
}

fn futex_wake(word: &AtomicU32, waiters: i32) {
    futex(word, libc::FUTEX_WAKE, waiters as u32, None);
}

fn futex(word: &AtomicU32, op: c_int, val: u32, timeout: Option<&libc::timespec>) {
    let (op, timeout) = (
        op | libc::FUTEX_PRIVATE_FLAG,
        timeout.map_or(ptr::null(), ptr::from_ref),
    );
    // SAFETY: word is a live, aligned u32 (FUTEX_WAIT reads it, FUTEX_WAKE ignores it); timeout
    // is null or a valid timespec (FUTEX_WAKE ignores it).
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, timeout) };
}

/// A message line built on the stack, for the handler (which may not allocate).
struct Line {
    buf: [u8; 400],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 400],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn raw(&mut self, b: &[u8]) -> &mut Line {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }

    fn s(&mut self, s: &str) -> &mut Line {
        self.raw(s.as_bytes())
    }

    fn hex(&mut self, v: usize) -> &mut Line {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[v & 15];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.raw(b"0x").raw(&digits[i..])
    }

    fn dec(&mut self, mut v: u32) -> &mut Line {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.raw(&digits[i..])
    }

    /// "a read fault at 0x… (tid N)"
    fn fault(&mut self, kind: Kind, addr: usize, tid: i32) -> &mut Line {
        self.s(match kind {
            Kind::Read => "a read fault at ",
            Kind::Write => "a write fault at ",
            Kind::Exec => "an instruction fetch at ",
        });
        self.hex(addr).s(" (tid ").dec(tid as u32).s(")")
    }
}

#[cfg(test)]
pub(crate) mod tests;
