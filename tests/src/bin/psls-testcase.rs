//! Multi-rank test cases, run by the integration tests under `mpirun` or `srun`.
//!
//! `psls-testcase CASE`: each case initializes PSLS, checks real outcomes, prints one `CHECK`
//! line per thing it verified and `PASS rank=R` at the end. Any failed check prints `FAIL` and
//! exits with status 1; an error from the runtime prints `error: ...` and exits with status 2.

use psls::rma::{AtomicOp, Window};
use psls::{Psls, Result};
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;

use psls_tests::cases::Case;
use psls_tests::check;

fn main() -> ExitCode {
    let cases: &[(&str, Case)] = &[
        ("init", init),
        ("nodemap", nodemap),
        ("stamp", stamp),
        ("cas_counter", cas_counter),
        ("rma_errors", rma_errors),
        ("reduce_u64", reduce_u64),
        ("scatter_bytes", scatter_bytes),
    ];
    psls_tests::cases::run("psls-testcase", cases, |_| {})
}

/// Starts and stops; rank 0 prints the node map.
fn init(p: &Psls) -> Result<()> {
    check!(p, p.rank() < p.size(), "rank {} of {}", p.rank(), p.size());
    check!(
        p,
        p.memory_root().is_dir() && p.disk_root().is_dir(),
        "roots exist"
    );
    println!(
        "NODE rank={} node={} name={}",
        p.rank(),
        p.node(),
        p.node_map().name(p.node())
    );
    if let Some(b) = p.binding() {
        println!("BIND rank={} {b}", p.rank());
    }
    if p.rank() == 0 {
        println!("{}", p.describe());
    }
    Ok(())
}

/// The node map and buddy ring match `PSLS_EXPECT_NODES`, and the roots are private.
fn nodemap(p: &Psls) -> Result<()> {
    let m = p.node_map();
    let want: usize = std::env::var("PSLS_EXPECT_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    check!(
        p,
        m.num_nodes() == want,
        "{} nodes, expected {want}",
        m.num_nodes()
    );
    check!(
        p,
        m.num_ranks() == p.size(),
        "map covers {} ranks",
        m.num_ranks()
    );
    // Every node holds ranks; every rank's node is named the same way on every rank.
    let per_node: Vec<usize> = (0..m.num_nodes()).map(|n| m.ranks_on(n).len()).collect();
    check!(
        p,
        per_node.iter().all(|&c| c >= 1),
        "ranks per node {per_node:?}"
    );
    check!(
        p,
        per_node.iter().sum::<usize>() == p.size(),
        "ranks per node add up"
    );
    let ring = p.buddy_ring();
    for n in 0..m.num_nodes() {
        let b = ring.buddy(n).expect("buddy");
        check!(
            p,
            b == (n + 1) % m.num_nodes(),
            "buddy of node {n} is {b}, its successor"
        );
        check!(
            p,
            m.node_of(m.leader(b)) != m.node_of(m.leader(n)),
            "buddy of node {n} is another node"
        );
        check!(
            p,
            ring.predecessor(b) == Some(n),
            "predecessor of {b} is {n}"
        );
    }
    let name = m.name(p.node());
    for root in [p.memory_root(), p.disk_root()] {
        check!(
            p,
            root.ends_with(name),
            "root {} is this node's",
            root.display()
        );
        let mode = std::fs::metadata(root)
            .map(|md| md.permissions().mode() & 0o777)
            .unwrap_or(0);
        check!(
            p,
            mode == 0o700,
            "root {} has mode {mode:o}",
            root.display()
        );
        check!(
            p,
            root.to_string_lossy().contains(p.job_id()),
            "root keyed by job id {}",
            p.job_id()
        );
    }
    println!(
        "NODE rank={} node={} name={} buddy={}",
        p.rank(),
        p.node(),
        name,
        m.name(ring.buddy(p.node()).unwrap())
    );
    if p.rank() == 0 {
        println!("{}", p.describe());
    }
    Ok(())
}

fn stamp_of(rank: usize) -> u64 {
    0x5053_4c53_0000_0000 | ((rank as u64 + 1) * 0x0101)
}

/// Every rank puts a stamp into its successor's window; the successor reads it back, locally and
/// through RMA; then every rank gets all stamps in one batch.
fn stamp(p: &Psls) -> Result<()> {
    let comm = p.dup_comm()?;
    let (rank, size) = (p.rank(), p.size());
    let mut mem = vec![0u8; 64];
    let win = Window::create(&comm, &mut mem)?;
    {
        let epoch = win.lock_all()?;
        let succ = (rank + 1) % size;
        epoch.put(succ, 8, &stamp_of(rank).to_le_bytes())?;
        comm.barrier()?;
        epoch.sync()?;
        let pred = (rank + size - 1) % size;
        let mut local = [0u8; 8];
        win.local_read(8, &mut local)?;
        let got = u64::from_le_bytes(local);
        check!(
            p,
            got == stamp_of(pred),
            "local stamp {got:#x} from rank {pred}"
        );
        let mut remote = [0u8; 8];
        epoch.get(succ, 8, &mut remote)?;
        let got = u64::from_le_bytes(remote);
        check!(
            p,
            got == stamp_of(rank),
            "read back my stamp {got:#x} from rank {succ}"
        );

        let mut all = vec![[0u8; 8]; size];
        epoch.batch(|b| -> Result<()> {
            for (t, buf) in all.iter_mut().enumerate() {
                b.get(t, 8, buf)?;
            }
            Ok(())
        })??;
        for (t, buf) in all.iter().enumerate() {
            let want = stamp_of((t + size - 1) % size);
            check!(
                p,
                u64::from_le_bytes(*buf) == want,
                "batched stamp of rank {t}"
            );
        }
        comm.barrier()?;
        epoch.unlock()?;
    }
    drop(win);
    check!(
        p,
        u64::from_le_bytes(mem[8..16].try_into().unwrap()) == stamp_of((rank + size - 1) % size),
        "stamp in memory after free"
    );
    Ok(())
}

/// A compare-and-swap counter incremented 1000 times by every rank reaches 1000 × size, and so
/// does a fetch-and-add counter beside it.
fn cas_counter(p: &Psls) -> Result<()> {
    const N: u64 = 1000;
    let comm = p.dup_comm()?;
    let win = Window::allocate(&comm, if p.rank() == 0 { 16 } else { 0 })?;
    let epoch = win.lock_all()?;
    let mut retries = 0u64;
    for _ in 0..N {
        let mut cur = epoch.fetch_and_op(0, 0, AtomicOp::NoOp, 0)?;
        loop {
            let old = epoch.compare_and_swap(0, 0, cur, cur + 1)?;
            if old == cur {
                break;
            }
            retries += 1;
            cur = old;
        }
        epoch.fetch_and_op(0, 8, AtomicOp::Sum, 1)?;
    }
    comm.barrier()?;
    let total = epoch.fetch_and_op(0, 0, AtomicOp::NoOp, 0)?;
    let added = epoch.fetch_and_op(0, 8, AtomicOp::NoOp, 0)?;
    let want = N * p.size() as u64;
    check!(
        p,
        total == want,
        "CAS counter {total} == {want} ({retries} retries here)"
    );
    check!(p, added == want, "fetch_and_op counter {added} == {want}");
    comm.barrier()?;
    epoch.unlock()?;
    Ok(())
}

/// Bad RMA calls return typed errors instead of aborting the job.
fn rma_errors(p: &Psls) -> Result<()> {
    let comm = p.dup_comm()?;
    let win = Window::allocate(&comm, 32)?;
    let epoch = win.lock_all()?;
    let mut buf = [0u8; 16];
    let e = epoch.get(0, 24, &mut buf).unwrap_err().to_string();
    check!(
        p,
        e.contains("out of bounds") && e.contains("32 bytes"),
        "get past the end: {e}"
    );
    let e = epoch.put(p.size(), 0, &buf).unwrap_err().to_string();
    check!(
        p,
        e.contains("does not exist"),
        "put to a missing rank: {e}"
    );
    let e = epoch.compare_and_swap(0, 4, 0, 1).unwrap_err().to_string();
    check!(p, e.contains("not aligned"), "misaligned CAS: {e}");
    let e = win.lock_all().unwrap_err().to_string();
    check!(p, e.contains("already open"), "second epoch: {e}");
    epoch.get(0, 16, &mut buf)?;
    check!(p, buf == [0u8; 16], "allocated window reads as zeros");
    comm.barrier()?;
    epoch.unlock()?;
    Ok(())
}

/// `Comm::scatter_bytes` from rank 1 gives each rank its own part, of its own length (rank 0's
/// is empty), whatever the others' lengths.
fn scatter_bytes(p: &Psls) -> Result<()> {
    let comm = p.dup_comm()?;
    let part = |r: usize| -> Vec<u8> { (0..r * 3000).map(|i| (i * 7 + r) as u8).collect() };
    let parts: Vec<Vec<u8>> = if p.rank() == 1 {
        (0..p.size()).map(part).collect()
    } else {
        Vec::new()
    };
    let got = comm.scatter_bytes(1, &parts)?;
    check!(
        p,
        got == part(p.rank()),
        "rank {} got its {}-byte part ({} bytes)",
        p.rank(),
        part(p.rank()).len(),
        got.len()
    );
    Ok(())
}

/// Minimum and maximum of 64-bit unsigned values are exact across the whole range, values of
/// 2^63 and more included (MPICH 4.0 compares them as signed numbers).
fn reduce_u64(p: &Psls) -> Result<()> {
    use psls::rma::ReduceOp;
    let comm = p.dup_comm()?;
    let mine = if p.rank() == 1 {
        u64::MAX
    } else {
        (1u64 << 63) + p.rank() as u64
    };
    let min = comm.allreduce_u64(mine, ReduceOp::Min)?;
    let max = comm.allreduce_u64(mine, ReduceOp::Max)?;
    let sum = comm.allreduce_u64(p.rank() as u64, ReduceOp::Sum)?;
    let n = p.size() as u64;
    check!(p, min == 1u64 << 63, "min {min:#x}");
    check!(p, max == u64::MAX, "max {max:#x}");
    check!(p, sum == n * (n - 1) / 2, "sum {sum}");
    Ok(())
}
