//! `ckpt_bench`: the memory checkpoint against its baseline, measured in the same run.
//!
//! ```sh
//! PSLS_VIRTUAL_NODES=4 mpirun -n 4 target/release/ckpt_bench [--mib D]
//! ```
//!
//! Each rank owns a block of D MiB (16 by default) of one global array. In each round:
//!
//! 1. **Memory checkpoint, 100 % dirty**: every rank writes every page of its block, then
//!    `checkpoint()` is timed (slowest rank, from a common barrier). **Baseline**: every rank
//!    `MPI_Put`s the same D MiB into a window of its partner on the buddy node (the rank the
//!    checkpoint sends its replicas to), flushes, and makes one local `memcpy` of the D MiB: the
//!    two copies on two nodes that the checkpoint makes. **Target: ≤ 1.5×.**
//! 2. **Incremental**: every tenth page written, then `checkpoint()`. **Target: ≤ 0.15× the
//!    100 % figure.** Then a checkpoint with nothing dirty: the fixed cost every checkpoint
//!    pays (its agreements), which bounds what an incremental one can save.
//! 3. **Replicated pages**: every page written, then read by a rank on another node, then
//!    `checkpoint()`: the bytes sent to buddies, against the 100 % unique case.
//! 4. **Permanent checkpoint**, 100 % dirty, against a plain write + `fsync` of twice the bytes
//!    (primary and mirror) into each node's disk root, all ranks at once: the ratio of the
//!    bandwidths. **Target ≥ 0.8×.** Put `PSLS_DISK_BASE` on a disk for this figure. Two
//!    warm-up rounds first (printed, not counted): the first two permanent checkpoints of a
//!    run create the blocks of the checkpoint file's two versions, which every later one
//!    rewrites in place; the baseline creates its file in every round, as a checkpoint
//!    written to a new file would.
//!
//! Rounds alternate the baseline and the checkpoint; medians over the rounds are compared.

use mpi::ffi;
use psls::rma::{LockedWindow, Window};
use psls::GlobalArray;
use psls_bench::{in_turn, median, smoke, timed};
use std::ffi::c_void;
use std::process::ExitCode;

/// Seconds as milliseconds, one decimal, separated by spaces.
fn ms(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{:.1}", s * 1e3))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    psls_bench::exit("ckpt_bench", run())
}

/// Seconds the slowest rank takes for one checkpoint (`checkpoint()`, or the kind given), and
/// its figures.
fn timed_checkpoint(
    p: &psls::Psls,
    comm: &psls::rma::Comm,
    kind: Option<psls::CheckpointKind>,
) -> psls::Result<(f64, psls::CheckpointStats)> {
    let mut stats = None;
    let s = timed(p, comm, || {
        stats = Some(match kind {
            None => p.checkpoint()?,
            Some(k) => p.checkpoint_now(k)?,
        });
        Ok(())
    })?;
    let stats = stats.ok_or_else(|| psls::Error::Checkpoint("no checkpoint was taken".into()))?;
    Ok((s, stats))
}

fn mib_arg() -> psls::Result<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(if smoke() { 1 } else { 16 }),
        [flag, v] if flag == "--mib" => v
            .parse::<usize>()
            .ok()
            .filter(|&m| (1..=4096).contains(&m))
            .ok_or_else(|| psls::Error::Checkpoint(format!("--mib {v:?}: expected 1 to 4096"))),
        _ => Err(psls::Error::Checkpoint(
            "usage: ckpt_bench [--mib D]   (D MiB per rank, 16 by default)".into(),
        )),
    }
}

fn run() -> psls::Result<()> {
    let mib = mib_arg()?;
    let p = psls::init()?;
    let comm = p.dup_comm()?;
    let m = p.node_map();
    let node = m.node_of(p.rank());
    let Some(buddy) = p.buddy_ring().buddy(node).filter(|&b| b != node) else {
        eprintln!("ckpt_bench: needs at least 2 nodes (PSLS_VIRTUAL_NODES=2 or more)");
        return p.finalize();
    };
    let ranks = m.ranks_on(buddy);
    let partner = ranks[m.local_index(p.rank()) % ranks.len()];
    let ps = p.page_size();
    let bytes = mib << 20;
    let words = bytes / 8;
    let pages = bytes / ps;
    let per_page = ps / 8;
    // The first rounds grow the recovery areas to their steady size (every replica and every
    // copy-on-write lands in fresh tmpfs memory, and the baseline's window faults in): they
    // are printed, not counted.
    let (warmup, rounds) = if smoke() { (0, 1) } else { (2, 9) };
    if p.rank() == 0 {
        println!(
            "ckpt_bench: {}, {} ranks on {} nodes, {mib} MiB per rank, page {ps}, medians of {rounds} rounds",
            p.mpi_library(),
            p.size(),
            m.num_nodes()
        );
    }
    let a: GlobalArray<u64> = p.alloc(words * p.size())?;
    let mine = p.rank() * words;
    let win = LockedWindow::new(Window::over_mapping(
        &comm,
        memmap2::MmapMut::map_anon(bytes).map_err(|e| psls::Error::io("bench window", e))?,
    )?)?;
    let src = vec![7u8; bytes];
    let mut copy = vec![0u8; bytes];
    let (mut full, mut base, mut tenth, mut repl, mut none) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut full_bytes, mut tenth_pages, mut repl_bytes, mut repl_reused) = (0, 0, 0, 0);
    let mut stamp = 1u64;
    let dirty = |step: usize, stamp: u64| {
        for k in (0..pages).step_by(step) {
            a.set(mine + k * per_page, stamp);
        }
    };
    let (mut cold_full, mut cold_base) = (vec![], vec![]);
    for round in 0..warmup + rounds {
        // 1. 100 % dirty, and the baseline, in alternating order.
        stamp += 1;
        dirty(1, stamp);
        let ckpt = || -> psls::Result<f64> {
            let (s, stats) = timed_checkpoint(&p, &comm, Some(psls::CheckpointKind::Memory))?;
            full_bytes = stats.bytes_transferred;
            Ok(s)
        };
        let baseline = || -> psls::Result<f64> {
            timed(&p, &comm, || {
                // SAFETY: src outlives the flush below, which completes the put; the target
                // range [0, bytes) lies in the partner's window of `bytes` bytes.
                let rc = unsafe {
                    ffi::MPI_Put(
                        src.as_ptr().cast::<c_void>(),
                        bytes as i32,
                        ffi::RSMPI_UINT8_T,
                        partner as i32,
                        0,
                        bytes as i32,
                        ffi::RSMPI_UINT8_T,
                        win.window().as_raw(),
                    )
                };
                if rc != 0 {
                    return Err(psls::Error::Checkpoint(format!("MPI_Put failed: {rc}")));
                }
                win.epoch().flush(partner)?;
                copy.copy_from_slice(&src);
                std::hint::black_box(&copy);
                Ok(())
            })
        };
        let (f, b) = in_turn(round, ckpt, baseline)?;
        let keep = round >= warmup;
        if keep {
            full.push(f);
            base.push(b);
        } else {
            cold_full.push(f);
            cold_base.push(b);
        }
        // 2. 10 % dirty.
        stamp += 1;
        dirty(10, stamp);
        let (s, stats) = timed_checkpoint(&p, &comm, Some(psls::CheckpointKind::Memory))?;
        if keep {
            tenth.push(s);
        }
        tenth_pages = stats.pages;
        // 2b. Nothing dirty: what every checkpoint costs (its agreements), whatever it saves.
        let (s, _) = timed_checkpoint(&p, &comm, Some(psls::CheckpointKind::Memory))?;
        if keep {
            none.push(s);
        }
        // 3. Replicated: written, then read by the next rank (on another node).
        stamp += 1;
        dirty(1, stamp);
        p.barrier()?;
        let next = (p.rank() + 1) % p.size() * words;
        let mut sum = 0u64;
        for k in 0..pages {
            sum = sum.wrapping_add(a.get(next + k * per_page));
        }
        std::hint::black_box(sum);
        let (s, stats) = timed_checkpoint(&p, &comm, Some(psls::CheckpointKind::Memory))?;
        if keep {
            repl.push(s);
        }
        repl_bytes = stats.bytes_transferred;
        repl_reused = stats.pages_reused;
    }
    if p.rank() == 0 {
        println!(
            "rounds (ms): warm-up 100% dirty [{}] baseline [{}]; 100% dirty [{}], baseline [{}], 10% dirty [{}], nothing dirty [{}]",
            ms(&cold_full),
            ms(&cold_base),
            ms(&full),
            ms(&base),
            ms(&tenth),
            ms(&none)
        );
    }
    let (full, base, tenth, repl, none) = (
        median(&mut full),
        median(&mut base),
        median(&mut tenth),
        median(&mut repl),
        median(&mut none),
    );
    let total = (bytes * p.size()) as f64 / (1u64 << 20) as f64;
    if p.rank() == 0 {
        println!(
            "memory checkpoint, 100% dirty: {:8.2} ms ({:.0} MiB/s of pages) vs MPI_Put to the buddy + memcpy {:8.2} ms = {:.2}x (target <= 1.5)",
            full * 1e3,
            total / full,
            base * 1e3,
            full / base
        );
        println!(
            "incremental, 10% dirty:        {:8.2} ms ({tenth_pages} pages) = {:.3}x the 100% checkpoint (target <= 0.15)",
            tenth * 1e3,
            tenth / full
        );
        println!(
            "nothing dirty:                 {:8.2} ms = {:.3}x the 100% checkpoint (the fixed cost of its agreements)",
            none * 1e3,
            none / full
        );
        println!(
            "replicated pages:              {:8.2} ms, {repl_bytes} bytes sent ({repl_reused} pages reused without transfer) vs {full_bytes} bytes when unique",
            repl * 1e3
        );
    }
    // 4. The permanent checkpoint of D MiB dirty per rank, against a plain write + fsync of
    //    twice the bytes (primary and mirror) into each node's disk root, all ranks at once.
    let scratch = p.disk_root().join(format!("ckpt_bench.rank{}", p.rank()));
    let twice = vec![5u8; 2 * bytes];
    let (mut perm, mut raw) = (vec![], vec![]);
    let (mut warm_perm, mut warm_raw) = (vec![], vec![]);
    let mut perm_pages = 0;
    for round in 0..warmup + rounds.min(3) {
        stamp += 1;
        dirty(1, stamp);
        let permanent = || -> psls::Result<f64> {
            let (s, stats) = timed_checkpoint(&p, &comm, Some(psls::CheckpointKind::Permanent))?;
            perm_pages = stats.pages;
            Ok(s)
        };
        let plain = || -> psls::Result<f64> {
            timed(&p, &comm, || {
                use std::io::Write;
                let mut f = std::fs::File::create(&scratch)
                    .map_err(|e| psls::Error::io(format!("creating {}", scratch.display()), e))?;
                f.write_all(&twice)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| psls::Error::io(format!("writing {}", scratch.display()), e))
            })
        };
        let (c, r) = in_turn(round, permanent, plain)?;
        let (cs, rs) = if round < warmup {
            (&mut warm_perm, &mut warm_raw)
        } else {
            (&mut perm, &mut raw)
        };
        cs.push(c);
        rs.push(r);
        let _ = std::fs::remove_file(&scratch);
    }
    if p.rank() == 0 {
        println!(
            "permanent rounds (ms): warm-up [{}] baseline [{}]; counted [{}] baseline [{}]",
            ms(&warm_perm),
            ms(&warm_raw),
            ms(&perm),
            ms(&raw)
        );
    }
    let (perm, raw) = (median(&mut perm), median(&mut raw));
    if p.rank() == 0 {
        println!(
            "permanent checkpoint, 100% dirty: {:8.2} ms ({perm_pages} pages) vs plain write + fsync of twice the bytes {:8.2} ms = {:.3}x its bandwidth (target >= 0.8)",
            perm * 1e3,
            raw * 1e3,
            raw / perm
        );
    }
    p.barrier()?;
    p.free(a)?;
    drop(win);
    drop(comm);
    p.finalize()
}
