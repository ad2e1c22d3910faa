//! Shared-virtual-memory test cases, run under `mpirun` by `tests/tests/svm.rs`.
//!
//! `svm_cases CASE`: like `psls-testcase`, each case prints `CHECK` lines and `PASS rank=R`, or
//! `FAIL` and exits 1; a runtime error exits 2.

use psls::{GlobalArray, Psls, Result};
use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;

use psls_tests::cases::Case;
use psls_tests::check;

fn main() -> ExitCode {
    let cases: &[(&str, Case)] = &[
        ("stripes", stripes),
        ("mutex_counter", mutex_counter),
        ("message_passing", message_passing),
        ("peterson", peterson),
        ("atomics", atomics),
        ("false_sharing", false_sharing),
        ("random", random),
        ("threads", threads),
        ("blocked", blocked),
        ("alloc_free", alloc_free),
        ("segv_outside", segv_outside),
        ("map_count", map_count),
        ("page_table", page_table),
        ("scan", scan),
    ];
    psls_tests::cases::run("svm_cases", cases, report)
}

/// Prints this rank's SVM counters, which the tests sum over the ranks.
fn report(p: &Psls) {
    let s = p.stats();
    println!(
        "STATS rank={} write_protection={} read_faults={} write_faults={} fetches={} prefetches={} claimed={} invalidations_sent={} invalidations_received={} downgrades={} home_locks={}",
        p.rank(), p.write_protection(), s.read_faults, s.write_faults, s.fetches, s.prefetches, s.claimed, s.invalidations_sent, s.invalidations_received, s.downgrades, s.home_locks
    );
}

/// Each rank writes its own stripe; after a barrier every rank reads and checks everything.
fn stripes(p: &Psls) -> Result<()> {
    let n = 3 * 512 * p.size() + 17; // several pages per rank, not page aligned
    let a: GlobalArray<u64> = p.alloc(n)?;
    let mine = p.local_range(n);
    for i in mine.clone() {
        a.set(i, (i as u64) * 7 + 1);
    }
    p.barrier()?;
    let bad = (0..n).filter(|&i| a.get(i) != (i as u64) * 7 + 1).count();
    check!(
        p,
        bad == 0,
        "all {n} elements right after the barrier ({bad} wrong)"
    );
    check!(
        p,
        p.size() == 1 || p.stats().fetches > 0,
        "fetched {} pages from other ranks",
        p.stats().fetches
    );
    p.barrier()?;
    p.free(a)?;
    Ok(())
}

/// A counter in one page, protected by a global mutex, incremented 1000 times per rank.
fn mutex_counter(p: &Psls) -> Result<()> {
    let a: GlobalArray<u64> = p.alloc(4)?;
    let m = p.mutex()?;
    p.barrier()?;
    // Two threads per rank: the mutex must also exclude threads of one rank from each other.
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    for _ in 0..500 {
                        let _g = m.lock()?;
                        let v = a.get(0);
                        a.set(0, v + 1);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread panicked")?;
        }
        Ok(())
    })?;
    p.barrier()?;
    let v = a.get(0);
    check!(
        p,
        v == 1000 * p.size() as u64,
        "mutex counter {v} == {} (2 threads per rank)",
        1000 * p.size()
    );
    Ok(())
}

/// The writer writes data, then a flag; readers spin on the flag with no barrier and must then
/// see the data. The writer changes every round.
fn message_passing(p: &Psls) -> Result<()> {
    let words = 3 * p.page_size() / 8; // data over 3 pages
    let data: GlobalArray<u64> = p.alloc(words)?;
    let ctl: GlobalArray<u64> = p.alloc(p.page_size() / 8 * 2)?; // flag and acks in two pages
    let flag = ctl.atomic_u64(0);
    let acks = ctl.atomic_u64(p.page_size() / 8);
    p.barrier()?;
    let rounds = 30u64;
    let readers = p.size() as u64 - 1;
    for r in 1..=rounds {
        let writer = (r as usize) % p.size();
        if p.rank() == writer {
            // Every reader of the previous round must be done reading before the data changes.
            while acks.load(SeqCst) < (r - 1) * readers {
                std::thread::yield_now();
            }
            for i in 0..words {
                data.set(i, r * 1_000_000 + i as u64);
            }
            flag.store(r, SeqCst);
            while acks.load(SeqCst) < r * readers {
                std::thread::yield_now();
            }
        } else {
            while flag.load(SeqCst) < r {
                std::thread::yield_now();
            }
            let stale: Vec<usize> = (0..words)
                .filter(|&i| data.get(i) != r * 1_000_000 + i as u64)
                .collect();
            check!(
                p,
                stale.is_empty(),
                "round {r}: data from rank {writer} complete once the flag was seen ({} stale, first: word {:?} = {:?})",
                stale.len(),
                stale.first(),
                stale.first().map(|&i| data.get(i))
            );
            acks.fetch_add(1, SeqCst);
        }
    }
    p.barrier()?;
    Ok(())
}

/// Peterson's mutual exclusion on global memory, with no runtime lock, between ranks 0 and 1.
/// Under sequential consistency two ranks are never inside together.
fn peterson(p: &Psls) -> Result<()> {
    let w = p.page_size() / 8;
    // flag[0], flag[1], turn, and the critical-section state, each in its own page.
    let g: GlobalArray<u64> = p.alloc(5 * w)?;
    let (flag0, flag1, turn, inside, count) = (
        g.atomic_u64(0),
        g.atomic_u64(w),
        g.atomic_u64(2 * w),
        g.atomic_u64(3 * w),
        4 * w,
    );
    p.barrier()?;
    let iters = 300;
    let me = p.rank();
    let mut violations = 0;
    if me < 2 {
        let (mine, other) = if me == 0 {
            (flag0, flag1)
        } else {
            (flag1, flag0)
        };
        let them = 1 - me as u64;
        for _ in 0..iters {
            mine.store(1, SeqCst);
            turn.store(them, SeqCst);
            while other.load(SeqCst) == 1 && turn.load(SeqCst) == them {
                std::thread::yield_now();
            }
            // Critical section: a plain read-modify-write that only mutual exclusion keeps exact.
            if inside.swap(me as u64 + 1, SeqCst) != 0 {
                violations += 1;
            }
            g.set(count, g.get(count) + 1);
            if inside.swap(0, SeqCst) != me as u64 + 1 {
                violations += 1;
            }
            mine.store(0, SeqCst);
        }
    }
    p.barrier()?;
    check!(
        p,
        violations == 0,
        "no two ranks inside the critical section together ({violations} violations)"
    );
    let total = g.get(count);
    let want = iters * p.size().min(2) as u64;
    check!(
        p,
        total == want,
        "critical-section counter {total} == {want}"
    );
    Ok(())
}

/// `fetch_add` on one global AtomicU64 from every rank, 1000 times each, with no lock.
fn atomics(p: &Psls) -> Result<()> {
    let a: GlobalArray<u64> = p.alloc(1)?;
    p.barrier()?;
    let c = a.atomic_u64(0);
    for _ in 0..1000 {
        c.fetch_add(1, SeqCst);
    }
    p.barrier()?;
    let v = c.load(SeqCst);
    check!(
        p,
        v == 1000 * p.size() as u64,
        "racing fetch_add counter {v} == {}",
        1000 * p.size()
    );
    Ok(())
}

/// Ranks alternately write adjacent words of one page; results are exact and the page
/// ping-pongs (invalidations).
fn false_sharing(p: &Psls) -> Result<()> {
    let a: GlobalArray<u64> = p.alloc(64)?;
    let turn = p.alloc::<u64>(1)?;
    let t = turn.atomic_u64(0);
    p.barrier()?;
    let rounds = 50u64;
    for r in 0..rounds {
        for k in 0..p.size() as u64 {
            if k == p.rank() as u64 {
                while t.load(SeqCst) != r * p.size() as u64 + k {
                    std::thread::yield_now();
                }
                a.set(p.rank(), a.get(p.rank()) + r + 1);
                t.fetch_add(1, SeqCst);
            }
        }
    }
    p.barrier()?;
    let want = rounds * (rounds + 1) / 2;
    for r in 0..p.size() {
        check!(
            p,
            a.get(r) == want,
            "word of rank {r} is {} == {want}",
            a.get(r)
        );
    }
    let inv = p.stats().invalidations_received;
    check!(
        p,
        p.size() == 1 || inv >= rounds / 2,
        "page ping-pong: {inv} invalidations received here"
    );
    Ok(())
}

/// Random reads and writes of version-stamped words on random pages; a rank never sees
/// another rank's stamps in one word go backwards.
fn random(p: &Psls) -> Result<()> {
    let words_per_page = p.page_size() / 8;
    let pages = 16;
    let a: GlobalArray<u64> = p.alloc(pages * words_per_page)?;
    p.barrier()?;
    let me = p.rank() as u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (me + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let slots = 64; // words in play: 4 per page
    let word = |k: usize| (k % pages) * words_per_page + (k / pages) * 8;
    let mut seen = vec![[0u64; 64]; slots]; // seen[k][writer] = last counter seen
    let mut stamp = 0u64;
    let mut backwards = 0;
    for _ in 0..1500 {
        let k = (next() % slots as u64) as usize;
        if next() % 3 == 0 {
            stamp += 1;
            a.set(word(k), (me << 32) | stamp);
            seen[k][me as usize] = stamp;
        } else {
            let v = a.get(word(k));
            let (w, c) = ((v >> 32) as usize, v & 0xffff_ffff);
            if v != 0 {
                if w >= p.size() || c < seen[k][w] {
                    backwards += 1;
                }
                seen[k][w] = seen[k][w].max(c);
            }
        }
    }
    p.barrier()?;
    check!(
        p,
        backwards == 0,
        "stamps never went backwards ({backwards} times they did)"
    );
    Ok(())
}

/// 4 threads per rank write disjoint words of shared pages and bump a shared atomic.
fn threads(p: &Psls) -> Result<()> {
    const T: usize = 4;
    const PER: usize = 600;
    let n = p.size() * T * PER;
    let a: GlobalArray<u64> = p.alloc(n)?;
    let c: GlobalArray<u64> = p.alloc(1)?;
    p.barrier()?;
    std::thread::scope(|s| {
        for t in 0..T {
            let (a, c) = (&a, &c);
            let me = p.rank();
            let size = p.size();
            s.spawn(move || {
                // Interleaved words: every page is shared by every thread of every rank.
                for j in 0..PER {
                    let i = j * size * T + me * T + t;
                    a.set(i, (i as u64) ^ 0xabcd);
                    c.atomic_u64(0).fetch_add(1, SeqCst);
                }
            });
        }
    });
    p.barrier()?;
    let bad = (0..n).filter(|&i| a.get(i) != (i as u64) ^ 0xabcd).count();
    check!(
        p,
        bad == 0,
        "all {n} words written by {} threads are exact ({bad} wrong)",
        T * p.size()
    );
    let v = c.atomic_u64(0).load(SeqCst);
    check!(p, v == n as u64, "shared counter {v} == {n}");
    Ok(())
}

/// Rank 0 owns a page and blocks in MPI_Recv; rank 1 reads and writes that page, then sends.
/// The service thread of rank 0 serves rank 1 while rank 0's application thread is blocked.
fn blocked(p: &Psls) -> Result<()> {
    use mpi::ffi;
    let a: GlobalArray<u64> = p.alloc(8)?;
    if p.rank() == 0 {
        a.set(0, 42);
    }
    p.barrier()?;
    let mut buf: u64 = 0;
    if p.rank() == 0 {
        // SAFETY: buf is one valid u64 for MPI_UINT64_T; world is valid while PSLS runs.
        let rc = unsafe {
            ffi::MPI_Recv(
                (&mut buf as *mut u64).cast(),
                1,
                ffi::RSMPI_UINT64_T,
                1,
                7,
                ffi::RSMPI_COMM_WORLD,
                ffi::RSMPI_STATUS_IGNORE,
            )
        };
        check!(p, rc == 0, "MPI_Recv returned {rc}");
        check!(
            p,
            buf == 43 && a.get(0) == 43,
            "rank 1 read 42 and wrote 43 while rank 0 was blocked (got {buf}, page {})",
            a.get(0)
        );
    } else if p.rank() == 1 {
        let v = a.get(0);
        a.set(0, v + 1);
        buf = a.get(0);
        // SAFETY: as above, for the send.
        let rc = unsafe {
            ffi::MPI_Send(
                (&buf as *const u64).cast(),
                1,
                ffi::RSMPI_UINT64_T,
                0,
                7,
                ffi::RSMPI_COMM_WORLD,
            )
        };
        check!(
            p,
            rc == 0 && v == 42,
            "read {v} from rank 0's page while it was blocked"
        );
    }
    p.barrier()?;
    Ok(())
}

/// Freed memory comes back zeroed at the same address, and allocation is the same everywhere.
fn alloc_free(p: &Psls) -> Result<()> {
    let a: GlobalArray<u32> = p.alloc(10_000)?;
    let addr = a.as_ptr() as usize;
    a.set(p.rank(), 5);
    p.barrier()?;
    p.free(a)?;
    let b: GlobalArray<u32> = p.alloc(10_000)?;
    check!(
        p,
        b.as_ptr() as usize == addr,
        "reallocated at the same address"
    );
    let nonzero = (0..10_000).filter(|&i| b.get(i) != 0).count();
    check!(
        p,
        nonzero == 0,
        "reallocated memory reads as zeros ({nonzero} not)"
    );
    // Sizes that differ between ranks fail on every rank and reserve nothing: the next
    // allocation, made the same way everywhere, succeeds.
    let odd = p.alloc::<u32>(if p.rank() == 0 { 1024 } else { 3 * 1024 });
    check!(
        p,
        odd.as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("same sizes")),
        "an allocation of different sizes is refused on every rank"
    );
    let c: GlobalArray<u32> = p.alloc(10_000)?;
    // Freeing different arrays on different ranks fails everywhere and frees nothing.
    let d: GlobalArray<u32> = p.alloc(10_000)?;
    let (c_at, d_at) = (c.as_ptr() as usize, d.as_ptr() as usize);
    let (mine, _other) = if p.rank() == 0 { (c, d) } else { (d, c) };
    check!(
        p,
        p.free(mine)
            .err()
            .is_some_and(|e| e.to_string().contains("free is collective")),
        "freeing different arrays is refused on every rank"
    );
    let e: GlobalArray<u32> = p.alloc(10_000)?;
    check!(
        p,
        ![c_at, d_at].contains(&(e.as_ptr() as usize)),
        "nothing was freed by the refused free"
    );
    // A size that overflows is a clear error on every rank, not a 0-byte "global range".
    let e = p.alloc::<u64>(usize::MAX / 4).err().map(|e| e.to_string());
    check!(
        p,
        e.as_deref()
            .is_some_and(|e| e.contains("overflows a 64-bit byte count")),
        "an overflowing alloc is refused clearly: {e:?}"
    );
    Ok(())
}

/// After init, a store to an address outside the global range is an ordinary segfault: the
/// process dies of it (the test asserts how), rather than hanging in the fault path.
fn segv_outside(p: &Psls) -> Result<()> {
    let a: GlobalArray<u64> = p.alloc(8)?;
    a.set(0, 1); // the fault path works...
    println!(
        "CHECK rank={} global store served; now storing to 0x10",
        p.rank()
    );
    // SAFETY: deliberately invalid: this case exists to die of SIGSEGV.
    unsafe { std::ptr::write_volatile(0x10 as *mut u64, 1) };
    println!("FAIL rank={} the store to 0x10 did not fault", p.rank());
    std::process::exit(1);
}

/// Reads every other page of a large array, so that every read page becomes a separate kernel
/// mapping, until `vm.max_map_count` is hit: the rank must stop with the error that names the
/// fix, not crash silently or hang.
fn map_count(p: &Psls) -> Result<()> {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530);
    let pages = limit + 4096; // every other page: more mappings than the limit allows
    let w = p.page_size() / 8;
    let a: GlobalArray<u64> = p.alloc(pages * w)?;
    println!(
        "CHECK rank={} reading every other page of {pages} (limit {limit})",
        p.rank()
    );
    for k in (0..pages).step_by(2) {
        std::hint::black_box(a.get(k * w));
    }
    println!(
        "FAIL rank={} read {pages} pages without reaching vm.max_map_count",
        p.rank()
    );
    std::process::exit(1);
}

/// The page table records unique or replicated, the owner, and the epoch since which a copy is
/// dirty, as pages move: rank 0 writes a page (unique, owned, dirty), every other rank reads it
/// (each holds a replicated copy owned by rank 0, and rank 0's copy is replicated too), then the
/// last rank writes it (its copy is unique; rank 0's is gone).
fn page_table(p: &Psls) -> Result<()> {
    use psls::Access;
    let a: GlobalArray<u64> = p.alloc(p.page_size() / 8)?;
    let last = p.size() - 1;
    if p.rank() == 0 {
        a.set(0, 42);
        let i = p.page_info(&a, 0).expect("in range");
        check!(
            p,
            i.access == Access::Write
                && !i.replicated
                && i.owner == Some(0)
                && i.written_epoch == Some(1),
            "after its write, rank 0 holds the page unique, owned and dirty since epoch 1: {i:?}"
        );
    }
    p.barrier()?;
    if p.rank() != 0 {
        check!(p, a.get(0) == 42, "rank {} reads the value", p.rank());
        let i = p.page_info(&a, 0).expect("in range");
        check!(
            p,
            i.access == Access::Read
                && i.replicated
                && i.owner == Some(0)
                && i.written_epoch.is_none(),
            "a reader holds a clean replicated copy owned by rank 0: {i:?}"
        );
    }
    p.barrier()?;
    if p.rank() == 0 {
        let i = p.page_info(&a, 0).expect("in range");
        check!(
            p,
            i.access == Access::Read && i.replicated && i.owner == Some(0),
            "rank 0's copy was downgraded and is replicated: {i:?}"
        );
    }
    p.barrier()?;
    if p.rank() == last {
        a.set(1, 7);
        let i = p.page_info(&a, 0).expect("in range");
        check!(
            p,
            i.access == Access::Write && !i.replicated && i.owner == Some(last),
            "the last writer holds the only copy: {i:?}"
        );
    }
    p.barrier()?;
    if p.rank() != last {
        let i = p.page_info(&a, 0).expect("in range");
        check!(
            p,
            i.access == Access::None && i.owner.is_none() && i.written_epoch.is_none(),
            "rank {}'s copy was invalidated: {i:?}",
            p.rank()
        );
    }
    p.barrier()?;
    p.free(a)?;
    Ok(())
}

/// Rank 1 writes a remote array, rank 0 scans it word by word: every value is right, and with
/// `PSLS_PREFETCH` set, pages arrive ahead of the faults (rank 0 faults on fewer pages than it
/// reads).
fn scan(p: &Psls) -> Result<()> {
    let pages = 64;
    let w = p.page_size() / 8;
    let a: GlobalArray<u64> = p.alloc(pages * w)?;
    let prefetch = p.config().prefetch;
    let ahead = prefetch != psls::Prefetch::Pages(0);
    if p.rank() == 1 {
        for i in 0..pages * w {
            a.set(i, i as u64 ^ 0x5a5a);
        }
        // A first sequential write claims the untouched pages ahead of each write fault.
        let s = p.stats();
        if ahead {
            check!(
                p,
                s.claimed > 0 && s.write_faults + s.claimed == pages as u64,
                "with PSLS_PREFETCH={prefetch}: {} write faults and {} pages claimed ahead for {pages} pages",
                s.write_faults,
                s.claimed
            );
        } else {
            check!(
                p,
                s.claimed == 0 && s.write_faults == pages as u64,
                "without prefetch: {} write faults for {pages} pages, none claimed",
                s.write_faults
            );
        }
    }
    p.barrier()?;
    if p.rank() == 0 {
        let bad = (0..pages * w)
            .filter(|&i| a.get(i) != i as u64 ^ 0x5a5a)
            .count();
        check!(p, bad == 0, "scanned {} words ({bad} wrong)", pages * w);
        let s = p.stats();
        if ahead {
            check!(
                p,
                s.prefetches > 0 && s.read_faults < pages as u64,
                "with PSLS_PREFETCH={prefetch}: {} read faults for {pages} pages, {} prefetched",
                s.read_faults,
                s.prefetches
            );
        } else {
            check!(
                p,
                s.prefetches == 0 && s.read_faults >= pages as u64,
                "without prefetch: {} read faults for {pages} pages",
                s.read_faults
            );
        }
    }
    p.barrier()?;
    // Rank 1 writes again: the prefetched copies must be invalidated like any other.
    if p.rank() == 1 {
        for i in 0..pages * w {
            a.set(i, i as u64);
        }
    }
    p.barrier()?;
    if p.rank() == 0 {
        let bad = (0..pages * w).filter(|&i| a.get(i) != i as u64).count();
        check!(
            p,
            bad == 0,
            "after rank 1 rewrote the array, rank 0 reads the new values ({bad} stale)"
        );
    }
    p.barrier()?;
    p.free(a)?;
    // Two ranks write halves of a fresh array: rank 0's claims run into rank 1's half, whose
    // writes must take those pages back (invalidation), and every value must land.
    let b: GlobalArray<u64> = p.alloc(pages * w)?;
    let half = pages / 2 * w;
    let (lo, hi) = if p.rank() == 0 {
        (0, half)
    } else {
        (half, pages * w)
    };
    if p.rank() < 2 {
        for i in lo..hi {
            b.set(i, (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
    }
    p.barrier()?;
    let bad = (0..pages * w)
        .filter(|&i| b.get(i) != (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .count();
    check!(
        p,
        bad == 0,
        "two writers of adjacent halves of a fresh array: {bad} wrong words"
    );
    p.barrier()?;
    p.free(b)?;
    Ok(())
}
