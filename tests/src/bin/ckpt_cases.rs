//! Checkpoint test cases, run under `mpirun` by `tests/tests/ckpt.rs`.
//!
//! `ckpt_cases CASE`: like `psls-testcase`, each case prints `CHECK` lines and `PASS rank=R`, or
//! `FAIL` and exits 1; a runtime error exits 2. The `*_crash` cases end by killing every rank
//! (as a crash would), leaving the checkpoint set for the `*_restart` case that follows.

use psls::{GlobalArray, Psls, Result};
use std::process::ExitCode;

use psls_tests::cases::Case;
use psls_tests::check;

fn main() -> ExitCode {
    let cases: &[(&str, Case)] = &[
        ("replicated", replicated),
        ("private_crash", private_crash),
        ("private_restart", private_restart),
        ("scattered_crash", scattered_crash),
        ("scattered_restart", scattered_restart),
        ("one_node", one_node),
        ("flush_refused", flush_refused),
        ("policy", policy),
        ("abandoned", abandoned),
        ("kind_mismatch", kind_mismatch),
    ];
    psls_tests::cases::run("ckpt_cases", cases, report)
}

fn report(p: &Psls) {
    let s = p.stats();
    println!(
        "STATS rank={} copied_on_write={} fetches={}",
        p.rank(),
        s.copied_on_write,
        s.fetches
    );
}

/// A page read on a second node is checkpointed with no transfer; a unique page is sent to the
/// buddy; a checkpoint with nothing written moves nothing; a write after a checkpoint copies
/// the recovery frame out first.
fn replicated(p: &Psls) -> Result<()> {
    let ps = p.page_size();
    let words = ps / 8;
    let a: GlobalArray<u64> = p.alloc(2 * words)?;
    let reader = p.size() - 1; // on the last node, which is not rank 0's
    if p.rank() == 0 {
        a.set(0, 11);
        a.set(words, 22);
    }
    p.barrier()?;
    if p.rank() == reader {
        check!(p, a.get(0) == 11, "the reader sees page 0");
    }
    p.barrier()?;
    let s = p.checkpoint()?;
    check!(p, s.pages == 2, "2 pages checkpointed (got {})", s.pages);
    check!(
        p,
        s.pages_reused == 1,
        "the page read on another node is reused (got {})",
        s.pages_reused
    );
    check!(
        p,
        s.bytes_transferred == ps as u64,
        "only the unique page moved: {} bytes (page {ps})",
        s.bytes_transferred
    );
    let s = p.checkpoint()?;
    check!(
        p,
        s.pages == 0 && s.bytes_transferred == 0,
        "nothing written: nothing checkpointed ({} pages, {} bytes)",
        s.pages,
        s.bytes_transferred
    );
    if p.rank() == 0 {
        a.set(0, 12);
        check!(
            p,
            p.stats().copied_on_write == 1,
            "the first write after the checkpoint copied the recovery frame out ({})",
            p.stats().copied_on_write
        );
        // Page 1 was never read elsewhere: the directory still names rank 0 its writer, so
        // the write after the checkpoint needs no directory operation.
        let before = p.stats().local_upgrades;
        a.set(words, 23);
        check!(
            p,
            p.stats().local_upgrades == before + 1 && p.stats().copied_on_write == 2,
            "the unique page came back writable locally, after its copy-out ({} local upgrades, {} copies)",
            p.stats().local_upgrades,
            p.stats().copied_on_write
        );
    }
    p.barrier()?;
    if p.rank() == reader {
        check!(
            p,
            p.stats().copied_on_write == 1,
            "the invalidated reader kept its recovery copy ({})",
            p.stats().copied_on_write
        );
        check!(p, a.get(0) == 12, "the reader sees the new value");
    }
    p.barrier()?;
    let s = p.checkpoint()?;
    check!(
        p,
        s.pages == 2 && s.epoch == 3,
        "checkpoint 3 took the two pages written ({} pages)",
        s.pages
    );
    check!(
        p,
        s.copies_freed >= 2,
        "the copies it replaced were freed ({})",
        s.copies_freed
    );
    p.free(a)
}

const N: usize = 3000;

/// Pages per rank of `scattered_*`'s array.
const SCATTERED_PAGES: usize = 24;

/// What word `i` of `scattered_*`'s array holds after checkpoint `epoch` (1 to 3): every word
/// is written for checkpoint 1, every third page for 2, every fourth page (from the third) for 3.
fn scattered_value(i: usize, words: usize, epoch: u64) -> u64 {
    let page = i / words;
    let last = match epoch {
        3 if page % 4 == 2 => 3,
        2.. if page % 3 == 1 => 2,
        _ => 1,
    };
    i as u64 * 1_000_003 + last
}

/// Scattered pages through three memory checkpoints (every page, then every third, then every
/// fourth: each rank's replicas leave from scattered frames and land in reused slots), then
/// everything overwritten and every rank killed.
fn scattered_crash(p: &Psls) -> Result<()> {
    let words = p.page_size() / 8;
    let n = SCATTERED_PAGES * words * p.size();
    let a: GlobalArray<u64> = p.alloc(n)?;
    for epoch in 1..=3u64 {
        for i in p.local_range(n) {
            let v = scattered_value(i, words, epoch);
            if v != scattered_value(i, words, epoch - 1) || epoch == 1 {
                a.set(i, v);
            }
        }
        p.barrier()?;
        let s = p.checkpoint()?;
        let want = match epoch {
            1 => SCATTERED_PAGES,
            2 => SCATTERED_PAGES / 3,
            _ => SCATTERED_PAGES / 4,
        } * p.size();
        check!(
            p,
            s.epoch == epoch && s.pages as usize == want,
            "checkpoint {epoch} took the {want} pages written ({:?}: {} pages)",
            s.epoch,
            s.pages
        );
        check!(
            p,
            s.bytes_transferred as usize == want * p.page_size(),
            "every page of checkpoint {epoch} went to a buddy ({} bytes)",
            s.bytes_transferred
        );
    }
    for i in p.local_range(n) {
        a.set(i, 0);
    }
    p.barrier()?;
    println!("CRASHING rank={}", p.rank());
    std::process::abort();
}

/// The run after `scattered_crash` (with a node's memory gone): the array of checkpoint 3.
fn scattered_restart(p: &Psls) -> Result<()> {
    check!(
        p,
        p.restarted_from() == Some(3),
        "restarted from checkpoint 3 ({:?})",
        p.restarted_from()
    );
    let words = p.page_size() / 8;
    let n = SCATTERED_PAGES * words * p.size();
    let a: GlobalArray<u64> = p.alloc(n)?;
    let bad: Vec<usize> = (0..n)
        .filter(|&i| a.get(i) != scattered_value(i, words, 3))
        .map(|i| i / words)
        .collect();
    check!(
        p,
        bad.is_empty(),
        "the array is as checkpointed (wrong words in pages {:?})",
        bad.iter().collect::<std::collections::BTreeSet<_>>()
    );
    p.barrier()
}

/// Registers private state and fills an array, checkpoints, changes both, and dies.
fn private_crash(p: &Psls) -> Result<()> {
    let x = p.protect("x", 0u64)?;
    let v = p.protect("v", [0f64; 3])?;
    let region = p.protect_bytes("region", Vec::new())?;
    check!(p, p.restarted_from().is_none(), "a fresh start");
    let a: GlobalArray<u64> = p.alloc(N)?;
    for i in p.local_range(N) {
        a.set(i, i as u64 * 3 + 1);
    }
    x.set(p.rank() as u64 * 10 + 7);
    v.set([p.rank() as f64, 0.5, -1.0]);
    region.set(format!("rank {} region", p.rank()).as_bytes());
    p.barrier()?;
    let s = p.checkpoint()?;
    check!(p, s.epoch == 1, "checkpoint 1 taken");
    // Everything after the checkpoint is lost by the crash.
    x.set(999);
    region.set(b"lost");
    for i in p.local_range(N) {
        a.set(i, 0);
    }
    p.barrier()?;
    println!("CRASHING rank={}", p.rank());
    std::process::abort();
}

/// The run after `private_crash`: the state of checkpoint 1 is back.
fn private_restart(p: &Psls) -> Result<()> {
    check!(
        p,
        p.restarted_from() == Some(1),
        "restarted from checkpoint 1 ({:?})",
        p.restarted_from()
    );
    let x = p.protect("x", 0u64)?;
    let v = p.protect("v", [0f64; 3])?;
    let region = p.protect_bytes("region", Vec::new())?;
    check!(
        p,
        region.get() == format!("rank {} region", p.rank()).as_bytes(),
        "the private byte region is back ({:?})",
        String::from_utf8_lossy(&region.get())
    );
    check!(
        p,
        x.get() == p.rank() as u64 * 10 + 7,
        "private x is back ({})",
        x.get()
    );
    check!(
        p,
        v.get() == [p.rank() as f64, 0.5, -1.0],
        "private v is back ({:?})",
        v.get()
    );
    let a: GlobalArray<u64> = p.alloc(N)?;
    let bad = (0..N).filter(|&i| a.get(i) != i as u64 * 3 + 1).count();
    check!(
        p,
        bad == 0,
        "the array is as checkpointed ({bad} of {N} wrong)"
    );
    p.barrier()?;
    // Writes after the restart work, and the next checkpoint follows on.
    for i in p.local_range(N) {
        a.set(i, 5);
    }
    p.barrier()?;
    let s = p.checkpoint()?;
    check!(p, s.epoch == 2, "the next checkpoint is 2 ({})", s.epoch);
    check!(p, (0..N).all(|i| a.get(i) == 5), "new values everywhere");
    p.free(a)
}

/// A permanent checkpoint under the policy of `PSLS_CKPT_CLEANING` (2 ranks on 2 nodes) keeps
/// the copies the arguments say: `policy ACTIVE READABLE EVICTED`, over the job, at the second
/// permanent checkpoint P2. The pages: C, clean (in a flushed file), read by both ranks; C1,
/// clean, held by rank 0; E, written by rank 0 and read by rank 1 before the first permanent
/// checkpoint P0 (so clean at P2, with whatever P0 left of it); D, written by rank 0 and read by
/// rank 1, then memory-checkpointed; U, written by rank 0 and memory-checkpointed; U2, written
/// by rank 0 after the memory checkpoint.
fn policy(p: &Psls) -> Result<()> {
    let want: Vec<u64> = std::env::args()
        .skip(2)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let ps = p.page_size();
    let w = ps / 8;
    // The clean pages: a file written and flushed before any checkpoint.
    let f = p.create_file("policy-test", 2 * ps as u64)?;
    let fv = f.view::<u64>();
    if p.rank() == 0 {
        fv.set(0, 100);
        fv.set(w, 101);
    }
    p.barrier()?;
    f.flush()?;
    p.barrier()?;
    if p.rank() == 1 {
        check!(p, fv.get(0) == 100, "rank 1 holds C");
    }
    p.barrier()?;
    let x: GlobalArray<u64> = p.alloc(4 * w)?;
    if p.rank() == 0 {
        x.set(3 * w, 4);
    }
    p.barrier()?;
    if p.rank() == 1 {
        check!(p, x.get(3 * w) == 4, "rank 1 holds E");
    }
    p.barrier()?;
    p.checkpoint_now(psls::CheckpointKind::Permanent)?;
    if p.rank() == 0 {
        x.set(0, 1);
        x.set(w, 2);
    }
    p.barrier()?;
    if p.rank() == 1 {
        check!(p, x.get(0) == 1, "rank 1 holds D");
    }
    p.barrier()?;
    p.checkpoint_now(psls::CheckpointKind::Memory)?;
    if p.rank() == 0 {
        x.set(2 * w, 3);
    }
    p.barrier()?;
    let s = p.checkpoint_now(psls::CheckpointKind::Permanent)?;
    let c = s.cleaned;
    check!(
        p,
        [c.active, c.readable, c.evicted] == want[..3],
        "cleaning kept {} active, {} readable recovery copies and evicted {} (wanted {:?})",
        c.active,
        c.readable,
        c.evicted,
        want
    );
    check!(
        p,
        c.discarded >= 1,
        "the replica slot of U was discarded ({})",
        c.discarded
    );
    // Whatever stayed, every value reads right (evicted pages come back from the disks).
    p.barrier()?;
    check!(
        p,
        fv.get(0) == 100
            && fv.get(w) == 101
            && x.get(0) == 1
            && x.get(w) == 2
            && x.get(2 * w) == 3
            && x.get(3 * w) == 4,
        "every page reads right after the cleaning"
    );
    p.barrier()?;
    p.free(x)?;
    f.discard()
}

/// A memory checkpoint whose phase 1 fails on one rank (`PSLS_FAULT=ckpt-step1-error` or
/// `ckpt-step2-error` at epoch 2 on rank 1) fails on every rank, naming the cause; it is
/// abandoned, and the next one takes its epoch and succeeds, with every page right.
fn abandoned(p: &Psls) -> Result<()> {
    use psls::CheckpointKind::Memory;
    let n = 4 * (p.page_size() / 8) * p.size();
    let a: GlobalArray<u64> = p.alloc(n)?;
    let fill = |round: u64| {
        for i in p.local_range(n) {
            a.set(i, round * 1_000_000 + i as u64);
        }
    };
    fill(1);
    p.barrier()?;
    let s = p.checkpoint_now(Memory)?;
    check!(
        p,
        s.epoch == 1,
        "the first checkpoint is epoch 1 ({})",
        s.epoch
    );
    fill(2);
    p.barrier()?;
    match p.checkpoint_now(Memory) {
        Ok(s) => check!(p, false, "checkpoint {} should have failed", s.epoch),
        Err(e) => check!(
            p,
            e.to_string().contains("injected error at ckpt-step")
                && (p.rank() == 1 || e.to_string().contains("rank 1")),
            "every rank fails, naming rank 1's error: {e}"
        ),
    }
    fill(3);
    p.barrier()?;
    let s = p.checkpoint_now(Memory)?;
    check!(
        p,
        s.epoch == 2,
        "the next checkpoint takes epoch 2 ({})",
        s.epoch
    );
    check!(
        p,
        s.pages as usize == n * 8 / p.page_size(),
        "it takes every written page ({} of {})",
        s.pages,
        n * 8 / p.page_size()
    );
    let wrong = (0..n).filter(|&i| a.get(i) != 3_000_000 + i as u64).count();
    check!(
        p,
        wrong == 0,
        "every word reads its last value ({wrong} wrong)"
    );
    p.barrier()?;
    p.free(a)
}

/// After a checkpoint, a flush of mapped files is refused with a clear error.
fn flush_refused(p: &Psls) -> Result<()> {
    let f = p.create_file("ckpt-flush-test", 3 * p.page_size() as u64)?;
    f.bytes().set(0, 1);
    p.barrier()?;
    p.checkpoint()?;
    match f.flush() {
        Ok(_) => check!(p, false, "a flush after a checkpoint must be refused"),
        Err(e) => check!(
            p,
            e.to_string().contains("permanent checkpoint"),
            "the error says why: {e}"
        ),
    }
    f.discard()
}

/// On one node there is no second node for the second copy: `checkpoint()` takes permanent
/// checkpoints, and an explicit memory checkpoint is a clear error.
/// `checkpoint_now` with a kind that differs between ranks (rank 0 memory, the others
/// permanent) fails on every rank, naming the kinds, and the next agreed one works.
fn kind_mismatch(p: &Psls) -> Result<()> {
    use psls::CheckpointKind::{Memory, Permanent};
    match p.checkpoint_now(if p.rank() == 0 { Memory } else { Permanent }) {
        Ok(s) => check!(p, false, "mismatched kinds took checkpoint {}", s.epoch),
        Err(e) => check!(
            p,
            e.to_string().contains("different kinds of checkpoint"),
            "mismatched kinds are an error naming them: {e}"
        ),
    }
    let s = p.checkpoint_now(Memory)?;
    check!(
        p,
        s.epoch == 1,
        "the next agreed checkpoint is epoch 1 ({})",
        s.epoch
    );
    let s = p.checkpoint_now(Permanent)?;
    check!(
        p,
        s.epoch == 2,
        "then a permanent one, epoch 2 ({})",
        s.epoch
    );
    Ok(())
}

fn one_node(p: &Psls) -> Result<()> {
    let s = p.checkpoint()?;
    check!(
        p,
        s.kind == psls::CheckpointKind::Permanent,
        "checkpoint() on one node is permanent ({:?})",
        s.kind
    );
    match p.checkpoint_now(psls::CheckpointKind::Memory) {
        Ok(_) => check!(p, false, "a checkpoint on one node must fail"),
        Err(e) => check!(
            p,
            e.to_string().contains("two different nodes"),
            "error names the problem: {e}"
        ),
    }
    Ok(())
}
