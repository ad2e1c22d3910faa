//! Stopping on request: SIGTERM (`scancel`, `kill`) or SIGINT (Ctrl-C) sent to `psls-launch`
//! stops the running job and its ranks and ends the launcher with status 128 + the signal, with
//! no relaunch. And every MPI launcher the launcher starts gets SIGTERM if the launcher dies
//! (`PR_SET_PDEATHSIG`), so that even a SIGKILL of `psls-launch` leaves no job behind.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The first stop signal received (0: none).
static STOP: AtomicI32 = AtomicI32::new(0);
/// How many stop signals were received.
static COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics here: async-signal-safe.
    let _ = STOP.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Catches SIGTERM, SIGINT and SIGHUP from now on (they only set a flag that the supervision
/// loop reads). A signal ignored when the launcher started (`nohup`, a background job of a
/// script) stays ignored.
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: zeroed sigaction structs are valid; the handler only touches atomics, which
        // is async-signal-safe, and SA_RESTART keeps the launcher's blocking calls going.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The stop signal received, if any; the first call that sees it says that the job stops.
pub fn check() -> Option<i32> {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let sig = requested()?;
    if !SAID.swap(true, Ordering::SeqCst) {
        let line = format!(
            "psls-launch: got {}: stopping the job (no relaunch)\n",
            name(sig)
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
    Some(sig)
}

/// The stop signal received, if any.
pub fn requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Whether a stop signal came more than once (the user insists: no grace period).
pub fn insisted() -> bool {
    COUNT.load(Ordering::SeqCst) > 1
}

/// The signal's name, for messages.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}

/// Makes `cmd`'s process get SIGTERM when the launcher dies, even of SIGKILL. (The launcher
/// starts its children from the main thread, which lives as long as the process.)
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe; called before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only prctl, getppid and raise,
    // which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher died before the prctl: do not start an orphan.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}
