//! Tests of the fault path. Signal actions are process-global and libtest runs tests on threads
//! of one process, so every case that installs a handler runs in a child: the test re-runs this
//! binary on itself alone, with `CASE_ENV` naming it, and asserts on how the child ended.

use super::arch::esr_kind;
use super::*;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Barrier;
use std::time::Instant;

const CASE_ENV: &str = "PSLS_FAULT_TEST_CASE";
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

struct Child {
    status: ExitStatus,
    stderr: String,
}

/// In the child (the environment names `name`): runs `case` and returns `None`. In the parent:
/// runs the child and returns how it ended.
fn child_or_parent(name: &str, case: fn()) -> Option<Child> {
    if std::env::var(CASE_ENV).as_deref() == Ok(name) {
        // No core files from the cases that die on purpose.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: no_core is a valid rlimit; lowering the limit needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        eprintln!("child case {name} runs");
        case();
        return None;
    }
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("{module}::{name}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_ENV, name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "child {name} still ran after {CHILD_TIMEOUT:?}; its stderr:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let child = Child {
        status,
        stderr: reader.join().unwrap(),
    };
    child.expect_stderr(&format!("child case {name} runs"));
    Some(child)
}

impl Child {
    fn expect_exit(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "child ended {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    fn expect_signal(&self, signo: c_int) {
        assert_eq!(
            self.status.signal(),
            Some(signo),
            "child ended {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    fn expect_stderr(&self, text: &str) {
        assert!(
            self.stderr.contains(text),
            "child's stderr lacks {text:?}:\n{}",
            self.stderr
        );
    }
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Maps `pages` anonymous pages with no access; they are never unmapped (the child exits).
fn map_none(pages: usize) -> usize {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choice touches nothing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            pages * page(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
    p as usize
}

fn protect(addr: usize, prot: c_int) {
    let start = addr & !(page() - 1);
    // SAFETY: the page belongs to a mapping of this test, which no Rust reference points into.
    let rc = unsafe { libc::mprotect(start as *mut c_void, page(), prot) };
    assert_eq!(rc, 0, "mprotect: {}", io::Error::last_os_error());
}

fn read(addr: usize) -> u64 {
    // SAFETY: addr is aligned and in a mapping of this test; a protected page faults and is
    // served (or kills the child, which is what the case checks).
    unsafe { ptr::read_volatile(addr as *const u64) }
}

fn write(addr: usize, v: u64) {
    // SAFETY: as in read.
    unsafe { ptr::write_volatile(addr as *mut u64, v) }
}

/// Grants the access the fault asks for and retries it: the service a real SVM gives, minus the
/// coherence protocol.
fn grant(h: &FaultHandler, f: Fault) {
    protect(
        f.addr,
        if f.write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        },
    );
    h.retry(f);
}

/// Runs `app` while a service thread serves faults with `serve`. The service takes nothing until
/// `wait_for` faults have been posted, so that they are all pending at once. Returns `app`'s
/// result and the batches the service took, as (addr, write).
fn with_service<R>(
    h: &FaultHandler,
    wait_for: u32,
    serve: impl Fn(&FaultHandler, Fault) + Sync,
    app: impl FnOnce() -> R,
) -> (R, Vec<Vec<(usize, bool)>>) {
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let stop = AtomicBool::new(false);
    let start = h.doorbell();
    std::thread::scope(|s| {
        let service = s.spawn(|| {
            h.register_service_thread();
            let deadline = Instant::now() + Duration::from_secs(10);
            while h.doorbell().wrapping_sub(start) < wait_for && Instant::now() < deadline {
                h.wait_doorbell(h.doorbell(), Duration::from_millis(50));
            }
            let (mut batches, mut batch) = (Vec::new(), Vec::new());
            loop {
                let seen = h.doorbell();
                h.take(&mut batch);
                if !batch.is_empty() {
                    batches.push(batch.iter().map(|f| (f.addr, f.write)).collect::<Vec<_>>());
                    batch.drain(..).for_each(|f| serve(h, f));
                } else if stop.load(SeqCst) {
                    return batches;
                } else {
                    h.wait_doorbell(seen, Duration::from_millis(50));
                }
            }
        });
        let r = {
            let _stop = Stop(&stop);
            app()
        };
        (r, service.join().unwrap())
    })
}

#[test]
fn read_and_write_faults_are_told_apart_and_served() {
    let Some(child) = child_or_parent("read_and_write_faults_are_told_apart_and_served", || {
        let (pg, base) = (page(), map_none(3));
        let h = FaultHandler::install(base, 3 * pg).unwrap();
        let again = FaultHandler::install(base, pg).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        let p = [base + 16, base + pg + 16, base + 2 * pg + 16];
        let (values, batches) = with_service(&h, 0, grant, || {
            let first = read(p[0]);
            write(p[1], 0xdead_beef);
            let second = read(p[1]);
            let third = read(p[2]);
            write(p[2], 7);
            (first, second, third, read(p[2]))
        });
        assert_eq!(values, (0, 0xdead_beef, 0, 7));
        let served: Vec<_> = batches.concat();
        assert_eq!(
            served,
            [(p[0], false), (p[1], true), (p[2], false), (p[2], true)]
        );
        eprintln!("served {served:x?}");
    }) else {
        return;
    };
    child.expect_exit(0);
}

/// Starts `writers` threads that each write their own page and `readers` threads that read one
/// shared page, all released at once; the service takes nothing before `wait_for` posts.
fn many_threads(writers: usize, readers: usize, wait_for: u32) -> Vec<Vec<(usize, bool)>> {
    let pg = page();
    let base = map_none(writers + 1);
    let shared = base + writers * pg;
    protect(shared, libc::PROT_READ | libc::PROT_WRITE);
    write(shared, 0x5a5a);
    protect(shared, libc::PROT_NONE);
    let h = FaultHandler::install(base, (writers + 1) * pg).unwrap();
    let barrier = Barrier::new(writers + readers);
    let ((), batches) = with_service(&h, wait_for, grant, || {
        std::thread::scope(|s| {
            for i in 0..writers + readers {
                let barrier = &barrier;
                let thread = std::thread::Builder::new().stack_size(256 << 10);
                thread
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        if i < writers {
                            write(base + i * pg, i as u64 + 1);
                            assert_eq!(read(base + i * pg), i as u64 + 1);
                        } else {
                            assert_eq!(read(shared), 0x5a5a);
                        }
                    })
                    .unwrap();
            }
        })
    });
    let served = batches.concat();
    for i in 0..writers {
        let page_faults: Vec<_> = served.iter().filter(|f| f.0 == base + i * pg).collect();
        assert_eq!(page_faults, [&(base + i * pg, true)], "page {i}");
    }
    assert_eq!(
        served.iter().filter(|f| **f == (shared, false)).count(),
        readers
    );
    assert_eq!(served.len(), writers + readers, "{served:x?}");
    batches
}

#[test]
fn many_threads_fault_at_once() {
    let Some(child) = child_or_parent("many_threads_fault_at_once", || {
        // Every thread faults before the service takes anything: 16 faults pend together.
        let batches = many_threads(8, 8, 16);
        assert_eq!(batches[0].len(), 16, "{batches:x?}");
        eprintln!("16 faults pending at once, all served");
    }) else {
        return;
    };
    child.expect_exit(0);
    child.expect_stderr("all served");
}

#[test]
fn more_faulting_threads_than_slots_wait_for_a_slot() {
    let Some(child) = child_or_parent("more_faulting_threads_than_slots_wait_for_a_slot", || {
        let batches = many_threads(SLOTS + 44, 0, SLOTS as u32);
        assert_eq!(batches[0].len(), SLOTS, "the first batch fills every slot");
        eprintln!("{} faults served in {} batches", SLOTS + 44, batches.len());
    }) else {
        return;
    };
    child.expect_exit(0);
}

#[test]
fn a_fault_outside_the_range_still_kills_with_sigsegv() {
    let Some(child) = child_or_parent("a_fault_outside_the_range_still_kills_with_sigsegv", || {
        let base = map_none(2);
        let _h = FaultHandler::install(base, page()).unwrap();
        eprintln!("touching the page just past the range");
        write(base + page(), 1);
    }) else {
        return;
    };
    child.expect_signal(libc::SIGSEGV);
    child.expect_stderr("touching the page");
    assert!(!child.stderr.contains("PSLS"), "{}", child.stderr);
}

#[test]
fn a_sent_sigsegv_still_kills() {
    let Some(child) = child_or_parent("a_sent_sigsegv_still_kills", || {
        // Rust's own handler (the one before ours) assumes a fault and would return; the
        // default action is what a C program has.
        set_default(libc::SIGSEGV);
        let _h = FaultHandler::install(map_none(1), page()).unwrap();
        // SAFETY: raise has no memory preconditions.
        unsafe { libc::raise(libc::SIGSEGV) };
        eprintln!("survived a SIGSEGV sent by raise");
    }) else {
        return;
    };
    child.expect_signal(libc::SIGSEGV);
}

extern "C" fn app_siginfo_handler(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    write_stderr(b"app handler ran\n");
    // SAFETY: _exit is async-signal-safe and ends the process.
    unsafe { libc::_exit(42) }
}

extern "C" fn app_plain_handler(_: c_int) {
    write_stderr(b"plain app handler ran\n");
    // SAFETY: as above.
    unsafe { libc::_exit(43) }
}

/// Installs `handler` for SIGSEGV as an application would, then ours, then faults outside.
fn fault_after_app_handler(handler: usize, flags: c_int) {
    let base = map_none(2);
    // SAFETY: all-zero bytes are a valid sigaction.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    sigaction(libc::SIGSEGV, Some(&act)).unwrap();
    let _h = FaultHandler::install(base, page()).unwrap();
    write(base + page(), 1);
}

#[test]
fn an_application_handler_installed_before_ours_still_runs() {
    let Some(child) = child_or_parent(
        "an_application_handler_installed_before_ours_still_runs",
        || {
            let handler = app_siginfo_handler as extern "C" fn(c_int, *mut siginfo_t, *mut c_void);
            fault_after_app_handler(handler as usize, libc::SA_SIGINFO);
        },
    ) else {
        return;
    };
    child.expect_exit(42);
    child.expect_stderr("app handler ran");
}

#[test]
fn a_plain_application_handler_installed_before_ours_still_runs() {
    let Some(child) = child_or_parent(
        "a_plain_application_handler_installed_before_ours_still_runs",
        || {
            fault_after_app_handler(app_plain_handler as extern "C" fn(c_int) as usize, 0);
        },
    ) else {
        return;
    };
    child.expect_exit(43);
    child.expect_stderr("plain app handler ran");
}

#[test]
fn fail_aborts_the_faulting_thread_with_the_message() {
    let Some(child) = child_or_parent("fail_aborts_the_faulting_thread_with_the_message", || {
        let base = map_none(1);
        let h = FaultHandler::install(base, page()).unwrap();
        let fail = |h: &FaultHandler, f: Fault| h.fail(f, "PSLS: cannot fetch page 7 of file x");
        with_service(&h, 0, fail, || read(base + 8));
        eprintln!("the failed read returned");
    }) else {
        return;
    };
    child.expect_signal(libc::SIGABRT);
    child.expect_stderr("PSLS: cannot fetch page 7 of file x\nPSLS: a read fault at 0x");
    assert!(!child.stderr.contains("returned"), "{}", child.stderr);
}

#[test]
fn drop_restores_the_previous_action() {
    let Some(child) = child_or_parent("drop_restores_the_previous_action", || {
        let base = map_none(2);
        let before = |signo| sigaction(signo, None).unwrap().sa_sigaction;
        let (segv, bus) = (before(libc::SIGSEGV), before(libc::SIGBUS));
        let h = FaultHandler::install(base, 2 * page()).unwrap();
        let (v, _) = with_service(&h, 0, grant, || read(base));
        assert_eq!(v, 0);
        drop(h);
        assert_eq!((before(libc::SIGSEGV), before(libc::SIGBUS)), (segv, bus));
        eprintln!("served page 0, then restored the previous action");
        read(base + page());
        eprintln!("page 1 was served after drop");
    }) else {
        return;
    };
    child.expect_signal(libc::SIGSEGV);
    child.expect_stderr("restored the previous action");
}

#[test]
fn a_fault_of_the_service_thread_aborts_with_a_message() {
    let Some(child) = child_or_parent(
        "a_fault_of_the_service_thread_aborts_with_a_message",
        || {
            let base = map_none(1);
            let h = FaultHandler::install(base, page()).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    h.register_service_thread();
                    write(base, 1);
                });
            });
        },
    ) else {
        return;
    };
    child.expect_signal(libc::SIGABRT);
    child.expect_stderr("PSLS: bug: the service thread took a write fault at 0x");
}

#[test]
fn sigbus_in_the_range_names_the_full_memory_root() {
    let Some(child) = child_or_parent("sigbus_in_the_range_names_the_full_memory_root", || {
        let pg = page();
        // SAFETY: the name is NUL-terminated; memfd_create has no other preconditions.
        let fd = unsafe { libc::memfd_create(c"psls-fault-test".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fd is our memfd. One page of file behind a two-page mapping: touching the
        // second page raises SIGBUS, as a tmpfs frame file does when it cannot get a page.
        let base = unsafe {
            assert_eq!(libc::ftruncate(fd, pg as libc::off_t), 0);
            libc::mmap(
                ptr::null_mut(),
                2 * pg,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as usize;
        let _h = FaultHandler::install(base, 2 * pg).unwrap();
        write(base, 1);
        write(base + pg, 1);
    }) else {
        return;
    };
    child.expect_signal(libc::SIGABRT);
    child.expect_stderr("PSLS: SIGBUS at 0x");
    child.expect_stderr("the memory root (tmpfs) is full");
}

#[test]
fn an_instruction_fetch_in_the_range_aborts_with_a_message() {
    let Some(child) = child_or_parent(
        "an_instruction_fetch_in_the_range_aborts_with_a_message",
        || {
            let base = map_none(1);
            let _h = FaultHandler::install(base, page()).unwrap();
            // SAFETY: the page has no access, so the call faults on its first instruction fetch and
            // the handler aborts: no instruction at base ever runs.
            let jump: extern "C" fn() = unsafe { std::mem::transmute(base) };
            jump();
        },
    ) else {
        return;
    };
    child.expect_signal(libc::SIGABRT);
    child.expect_stderr("PSLS: an instruction fetch at 0x");
}

#[test]
fn messages_format_numbers() {
    let mut line = Line::new();
    line.s("at ").hex(0x7f00_dead_b000).s(" ");
    line.fault(Kind::Write, 0x10, 42);
    assert_eq!(
        line.bytes(),
        b"at 0x7f00deadb000 a write fault at 0x10 (tid 42)"
    );
    assert_eq!(Line::new().hex(0).dec(0).bytes(), b"0x00");
}

#[test]
fn esr_records_tell_reads_writes_and_fetches_apart() {
    // An fpsimd-like record of 528 bytes, then the ESR record, then the terminator.
    let records = |esr: u64| {
        let mut r = [0u64; 80];
        r[0] = 0x4650_8001 | (528 << 32);
        r[66] = 0x4553_5201 | (16 << 32);
        r[67] = esr;
        r
    };
    // SAFETY: each buffer is 640 bytes, 8-byte aligned.
    let kind = |r: [u64; 80]| unsafe { esr_kind(r.as_ptr().cast(), 640) };
    assert_eq!(kind(records(0x24 << 26)), Kind::Read);
    assert_eq!(kind(records(0x25 << 26 | 1 << 6)), Kind::Write);
    assert_eq!(kind(records(0x20 << 26)), Kind::Exec);
    assert_eq!(
        kind(records(0x3c << 26)),
        Kind::Write,
        "another class counts as a write"
    );
    assert_eq!(
        kind([0; 80]),
        Kind::Write,
        "no ESR record counts as a write"
    );
}

/// Whether this kernel is one that offers `userfaultfd` write-protection of shared memory with
/// unpopulated pages (Linux 6.4 or later), so that a test must not accept its absence.
pub(crate) fn kernel_has_shmem_uffd_wp() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|s| s.parse::<u32>().ok());
    matches!((it.next(), it.next()), (Some(Some(a)), Some(Some(b))) if (a, b) >= (6, 4))
}

#[test]
fn stores_to_userfaultfd_protected_pages_come_as_bus_write_faults() {
    let name = "stores_to_userfaultfd_protected_pages_come_as_bus_write_faults";
    let Some(child) = child_or_parent(name, || {
        use crate::sys::vm::{Access, FrameFile};
        let pg = page();
        let dir =
            std::path::Path::new("/dev/shm").join(format!("psls-uffd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let frames = FrameFile::open(&dir.join("frames"), 4 * pg, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let base = 0x3f00_0000_0000usize + (std::process::id() as usize % 1024) * (1 << 30);
        let mut view = frames.map_view(base).unwrap();
        if let Err(e) = view.use_userfaultfd() {
            eprintln!("userfaultfd unavailable: {e}");
            return;
        }
        let mut alias = frames.map_alias().unwrap();
        alias[pg + 8] = 5;
        let h = FaultHandler::install(base, 4 * pg).unwrap();
        h.set_write_protect_bus(true);
        view.protect(pg, pg, Access::Read).unwrap();
        let buses = AtomicUsize::new(0);
        let serve = |h: &FaultHandler, f: Fault| {
            if f.bus {
                buses.fetch_add(1, SeqCst);
            }
            let page = (f.addr - base) / pg * pg;
            let a = if f.write { Access::Write } else { Access::Read };
            view.protect(page, pg, a).unwrap();
            h.retry(f);
        };
        let p = base + pg + 8;
        let (got, batches) = with_service(&h, 0, serve, || {
            // A load of the readable page does not fault; the store does, as a SIGBUS.
            let before = read(p);
            write(p, 0x0102_0304_0506_0708);
            (before, read(p))
        });
        assert_eq!(got, (5, 0x0102_0304_0506_0708));
        assert_eq!(batches.concat(), [(p, true)]);
        assert_eq!(buses.load(SeqCst), 1, "the store came as a SIGBUS");
        assert_eq!(alias[pg + 8], 8, "the store landed in the frame");
        eprintln!("served as a SIGBUS write fault");
    }) else {
        return;
    };
    child.expect_exit(0);
    if kernel_has_shmem_uffd_wp() {
        child.expect_stderr("served as a SIGBUS write fault");
    } else if !child.stderr.contains("served as a SIGBUS write fault") {
        eprintln!("skipped: {}", child.stderr);
    }
}
