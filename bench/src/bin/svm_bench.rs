//! `svm_bench`: the shared virtual memory's fault latencies and scan bandwidth, each against a
//! baseline measured in the same run.
//!
//! ```sh
//! mpirun -n 4 target/release/svm_bench      # 2 ranks suffice for all but the 3-copy figure
//! ```
//!
//! 1. Remote read fault (the owner holds the page writable, so it is downgraded, then fetched)
//!    against a floor: a local SIGSEGV + `mprotect` round trip, plus a raw 4 KiB `MPI_Get` +
//!    flush. Target ≤ 3× the floor. Floor and faults are measured in the same rounds; the
//!    medians over the rounds are compared.
//! 2. Write fault that invalidates 1 copy, and 3 copies (with 4 ranks).
//! 3. Sequential scan of a remote array against raw `MPI_Get` + flush of the same pages.

use mpi::ffi;
use psls::rma::{LockedWindow, Window};
use psls::{GlobalArray, Prefetch, Psls};
use psls_bench::{median, smoke};
use std::ffi::c_void;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    psls_bench::exit("svm_bench", run())
}

fn run() -> psls::Result<()> {
    let p = psls::init()?;
    if p.size() < 2 {
        eprintln!("svm_bench: needs at least 2 ranks");
        return p.finalize();
    }
    let ps = p.page_size();
    let w = ps / 8;
    let (rounds, per_round) = if smoke() { (2, 4) } else { (9, 200) };
    let me = p.rank();
    if me == 0 {
        println!(
            "svm_bench: {}, {} ranks, page {} bytes, {} rounds of {} faults, medians",
            p.mpi_library(),
            p.size(),
            ps,
            rounds,
            per_round
        );
    }
    // Each round measures the floor and the faults back to back, so that noise on this shared
    // machine hits both alike; the medians over the rounds are compared. The faults touch
    // consecutive pages: working ahead is switched off, so that each one is a whole fault.
    p.set_prefetch(Prefetch::Pages(0));
    let (mut floors, mut locals, mut gets, mut reads, mut writes1, mut writes3) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let bench_win = raw_window(&p, ps * 4)?;
    for _ in 0..rounds {
        let local_us = if me == 0 {
            local_fault_us(per_round)
        } else {
            0.0
        };
        let get_us = raw_get_us(&p, &bench_win, ps, per_round)?;
        // Remote read faults: rank 1 writes every page (it owns them writable), rank 0 reads:
        // each fault downgrades rank 1, then fetches.
        let a: GlobalArray<u64> = p.alloc(per_round * w)?;
        if me == 1 {
            for k in 0..per_round {
                a.set(k * w, k as u64 + 1);
            }
        }
        p.barrier()?;
        let read_us = if me == 0 {
            let t = Instant::now();
            for k in 0..per_round {
                std::hint::black_box(a.get(k * w));
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / per_round as f64;
            let bad: Vec<usize> = (0..per_round)
                .filter(|&k| a.get(k * w) != k as u64 + 1)
                .take(5)
                .collect();
            assert!(
                bad.is_empty(),
                "read faults returned wrong data at pages {bad:?}"
            );
            us
        } else {
            0.0
        };
        p.barrier()?;
        // Write faults that invalidate one copy: rank 0 holds read copies, rank 1 writes.
        let write1_us = if me == 1 {
            let t = Instant::now();
            for k in 0..per_round {
                a.set(k * w, 0);
            }
            t.elapsed().as_secs_f64() * 1e6 / per_round as f64
        } else {
            0.0
        };
        p.barrier()?;
        // Three copies: ranks 1..=3 read, rank 0 writes.
        let mut write3_us = 0.0;
        if p.size() >= 4 {
            if (1..=3).contains(&me) {
                for k in 0..per_round {
                    std::hint::black_box(a.get(k * w));
                }
            }
            p.barrier()?;
            if me == 0 {
                let t = Instant::now();
                for k in 0..per_round {
                    a.set(k * w, 1);
                }
                write3_us = t.elapsed().as_secs_f64() * 1e6 / per_round as f64;
            }
            p.barrier()?;
        }
        p.free(a)?;
        locals.push(local_us);
        gets.push(get_us);
        floors.push(local_us + get_us);
        reads.push(read_us);
        writes1.push(share_max(&p, write1_us)?);
        writes3.push(write3_us);
    }
    let (floor, local_us, get_us) = (median(&mut floors), median(&mut locals), median(&mut gets));
    let (read_us, write1_us, write3_us) = (
        median(&mut reads),
        median(&mut writes1),
        median(&mut writes3),
    );

    // Sequential scan of a remote array, every word read, against raw gets of the same pages:
    // without working ahead, by default (auto: sequential misses fetch ahead), then with
    // PREFETCH pages fetched after each miss.
    let scan_pages = if smoke() { 8 } else { 4096 };
    let scan_s = scan_remote(&p, scan_pages, Prefetch::Pages(0))?;
    let scan_auto_s = scan_remote(&p, scan_pages, Prefetch::Auto)?;
    let scan_pf_s = scan_remote(&p, scan_pages, Prefetch::Pages(PREFETCH))?;
    p.barrier()?;
    let raw_scan_s = raw_scan_s(&p, ps, scan_pages)?;
    p.barrier()?;
    if me == 0 {
        let mib = (scan_pages * ps) as f64 / (1 << 20) as f64;
        println!("floor: local SIGSEGV+mprotect {local_us:.2} us + raw 4 KiB MPI_Get {get_us:.2} us = {floor:.2} us (median of sums)");
        println!(
            "remote read fault:            {read_us:8.2} us  = {:5.2}x floor (target <= 3)",
            read_us / floor
        );
        println!(
            "write fault, 1 copy:          {write1_us:8.2} us  = {:5.2}x floor",
            write1_us / floor
        );
        if p.size() >= 4 {
            println!(
                "write fault, 3 copies:        {write3_us:8.2} us  = {:5.2}x floor",
                write3_us / floor
            );
        }
        println!(
            "sequential scan, PSLS_PREFETCH=0: {:8.1} MiB/s vs raw MPI_Get {:8.1} MiB/s = {:5.2}x raw",
            mib / scan_s,
            mib / raw_scan_s,
            raw_scan_s / scan_s
        );
        println!(
            "scan, default (auto):         {:8.1} MiB/s vs raw MPI_Get {:8.1} MiB/s = {:5.2}x raw",
            mib / scan_auto_s,
            mib / raw_scan_s,
            raw_scan_s / scan_auto_s
        );
        println!(
            "scan, PSLS_PREFETCH={PREFETCH}:       {:8.1} MiB/s vs raw MPI_Get {:8.1} MiB/s = {:5.2}x raw",
            mib / scan_pf_s,
            mib / raw_scan_s,
            raw_scan_s / scan_pf_s
        );
    }
    drop(bench_win);
    p.finalize()
}

/// Pages fetched after each miss in the prefetching scan.
const PREFETCH: usize = 16;

/// Rank 1 writes `pages` pages of a fresh array; rank 0 then reads every word with `prefetch`
/// set, and returns the seconds it took (0 on other ranks). Collective.
fn scan_remote(p: &Psls, pages: usize, prefetch: Prefetch) -> psls::Result<f64> {
    let w = p.page_size() / 8;
    let b: GlobalArray<u64> = p.alloc(pages * w)?;
    if p.rank() == 1 {
        for i in (0..pages * w).step_by(w) {
            b.set(i, i as u64);
        }
    }
    p.barrier()?;
    let s = if p.rank() == 0 {
        p.set_prefetch(prefetch);
        let t = Instant::now();
        let mut sum = 0u64;
        for i in 0..pages * w {
            sum = sum.wrapping_add(b.get(i));
        }
        let s = t.elapsed().as_secs_f64();
        p.set_prefetch(Prefetch::Pages(0));
        let want: u64 = (0..pages * w).step_by(w).map(|i| i as u64).sum();
        assert_eq!(sum, want, "the scan read wrong data (prefetch {prefetch})");
        s
    } else {
        0.0
    };
    p.barrier()?;
    p.free(b)?;
    Ok(s)
}

extern "C" fn floor_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV; si_addr is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = addr & !4095;
    // SAFETY: the page belongs to the floor measurement's own mapping (only it faults while this
    // handler is installed); mprotect is async-signal-safe.
    unsafe {
        libc::mprotect(
            page as *mut c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
}

/// The largest of every rank's `v` (non-negative), on every rank.
fn share_max(p: &Psls, v: f64) -> psls::Result<f64> {
    let comm = p.dup_comm()?;
    // Non-negative doubles order like their bit patterns.
    let bits = comm.allreduce_u64(v.max(0.0).to_bits(), psls::rma::ReduceOp::Max)?;
    Ok(f64::from_bits(bits))
}

/// Installs the floor's handler in front of every other, and returns the action it replaced.
fn install_floor_handler() -> libc::sigaction {
    // SAFETY: sigaction is plain data; zeroed is a valid initial value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = floor_handler as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: installs a handler that only calls mprotect on the faulting page. While it is in
    // place this thread touches no global memory, and the service thread never faults.
    unsafe { libc::sigaction(libc::SIGSEGV, &sa, &mut old) };
    old
}

/// A read fault on a PROT_NONE page outside the global range, served by mprotect in the handler.
fn local_fault_us(pages: usize) -> f64 {
    let len = pages * 4096;
    // SAFETY: a fresh anonymous private mapping, used only here.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(m, libc::MAP_FAILED);
    let old = install_floor_handler();
    let t = Instant::now();
    for k in 0..pages {
        // SAFETY: inside the mapping; the fault is served by floor_handler.
        unsafe { std::ptr::read_volatile((m as usize + k * 4096) as *const u8) };
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / pages as f64;
    // SAFETY: puts PSLS's handler (the action the floor's replaced) back.
    unsafe { libc::sigaction(libc::SIGSEGV, &old, std::ptr::null_mut()) };
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(m, len) };
    us
}

/// A window like the frames' (created over a mapping), for the raw baseline.
fn raw_window(p: &Psls, len: usize) -> psls::Result<LockedWindow<'static>> {
    let comm = p.dup_comm()?;
    let map = memmap2::MmapMut::map_anon(len).map_err(|e| psls::Error::io("bench window", e))?;
    LockedWindow::new(Window::over_mapping(&comm, map)?)
}

/// Raw `MPI_Get` + flush of one page from rank 1, `n` times, in microseconds per get.
fn raw_get_us(p: &Psls, win: &LockedWindow<'static>, ps: usize, n: usize) -> psls::Result<f64> {
    Ok(raw_gets_s(p, win, ps, n, |_| 0)? * 1e6 / n as f64)
}

/// Raw `MPI_Get` + flush of `pages` consecutive pages from rank 1, in seconds.
fn raw_scan_s(p: &Psls, ps: usize, pages: usize) -> psls::Result<f64> {
    let win = raw_window(p, ps * pages)?;
    raw_gets_s(p, &win, ps, pages, |k| k * ps)
}

/// Seconds rank 0 takes for `n` raw `MPI_Get` + flush of one page each from rank 1, the k-th
/// at byte offset `disp(k)` of rank 1's window (0 on other ranks). Ends with a barrier.
fn raw_gets_s(
    p: &Psls,
    win: &LockedWindow<'static>,
    ps: usize,
    n: usize,
    disp: impl Fn(usize) -> usize,
) -> psls::Result<f64> {
    let raw = win.window().as_raw();
    let mut buf = vec![0u8; ps];
    let mut s = 0.0;
    if p.rank() == 0 {
        let t = Instant::now();
        for k in 0..n {
            // SAFETY: the window is locked for its life; buf holds ps bytes; the callers keep
            // disp(k) + ps inside rank 1's window.
            unsafe {
                ffi::MPI_Get(
                    buf.as_mut_ptr().cast(),
                    ps as i32,
                    ffi::RSMPI_UINT8_T,
                    1,
                    disp(k) as ffi::MPI_Aint,
                    ps as i32,
                    ffi::RSMPI_UINT8_T,
                    raw,
                );
                ffi::MPI_Win_flush(1, raw);
            }
            std::hint::black_box(&buf);
        }
        s = t.elapsed().as_secs_f64();
    }
    p.barrier()?;
    Ok(s)
}
