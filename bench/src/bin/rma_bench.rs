//! `rma_bench`: latency and bandwidth of `get` and `put` through PSLS's safe RMA layer, against
//! raw `MPI_Get`/`MPI_Put` + `MPI_Win_flush` on the same window, in the same `lock_all` epoch,
//! in the same run. Prints the ratio safe/raw per size; the target is ≤ 1.1.
//!
//! ```sh
//! mpirun -n 2 target/release/rma_bench            # shared memory (osc/sm)
//! ```
//! Rank 0 is the origin, rank 1 the target; other ranks idle.

use mpi::ffi;
use psls::rma::{Epoch, Window};
use psls_bench::{interleaved, smoke};
use std::ffi::c_void;
use std::process::ExitCode;

fn main() -> ExitCode {
    psls_bench::exit("rma_bench", run())
}

fn run() -> psls::Result<()> {
    let psls = psls::init()?;
    if psls.size() < 2 {
        eprintln!("rma_bench: needs at least 2 ranks (mpirun -n 2)");
        return Ok(());
    }
    let comm = psls.dup_comm()?;
    let sizes: Vec<usize> = if smoke() {
        vec![4 << 10, 64 << 10]
    } else {
        (0..6).map(|i| (4 << 10) << (2 * i)).collect() // 4K, 16K, 64K, 256K, 1M, 4M
    };
    let max = *sizes.last().unwrap();
    let win = Window::allocate(&comm, max)?;
    let epoch = win.lock_all()?;
    let me = psls.rank();
    if me == 0 {
        println!(
            "rma_bench: {}, {} ranks (transport as chosen by the launcher options)",
            psls.mpi_library(),
            psls.size()
        );
        println!(
            "{:<4} {:>8} {:>7} {:>10} {:>10} {:>7} {:>10} {:>10}",
            "op", "bytes", "iters", "safe_us", "raw_us", "ratio", "safe_MiB/s", "raw_MiB/s"
        );
    }
    let mut worst: f64 = 0.0;
    let mut buf = vec![0x5au8; max];
    for &size in &sizes {
        let rounds = if smoke() { 2 } else { 15 };
        for op in ["get", "put"] {
            comm.barrier()?;
            if me == 0 {
                let b = &mut buf[..size];
                // Aim for about 30 ms per round on whatever transport this is.
                let (one, _) = measure(&epoch, op, b, 8, 1)?;
                let iters = if smoke() {
                    3
                } else {
                    ((0.03 / (one / 8.0)) as usize).clamp(16, 20_000)
                };
                let (safe, raw) = measure(&epoch, op, b, iters, rounds)?;
                let (su, ru) = (safe / iters as f64 * 1e6, raw / iters as f64 * 1e6);
                let ratio = safe / raw;
                worst = worst.max(ratio);
                let mib = |us: f64| size as f64 / us / 1.048_576;
                println!("{op:<4} {size:>8} {iters:>7} {su:>10.2} {ru:>10.2} {ratio:>7.3} {:>10.0} {:>10.0}", mib(su), mib(ru));
            }
            comm.barrier()?;
        }
    }
    if me == 0 {
        println!("rma_bench: worst ratio safe/raw = {worst:.3} (target <= 1.1)");
    }
    comm.barrier()?;
    epoch.unlock()?;
    drop(win);
    drop(comm);
    psls.finalize()
}

/// Times `iters` operations through the safe layer and through raw MPI, interleaved.
fn measure(
    epoch: &Epoch<'_, '_>,
    op: &str,
    buf: &mut [u8],
    iters: usize,
    rounds: usize,
) -> psls::Result<(f64, f64)> {
    let raw_win = epoch.window().as_raw();
    let len = buf.len() as i32;
    let ptr = buf.as_mut_ptr();
    let mut err = None;
    let (safe, raw) = interleaved(
        rounds,
        || {
            psls_bench::time(|| {
                for _ in 0..iters {
                    // SAFETY: ptr/len describe `buf`, which is exclusively borrowed by this
                    // function for the whole measurement; each operation completes before the
                    // next starts.
                    let b = unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) };
                    let r = if op == "get" {
                        epoch.get(1, 0, b)
                    } else {
                        epoch.put(1, 0, b)
                    };
                    if let Err(e) = r {
                        err = Some(e);
                        return;
                    }
                }
            })
        },
        || {
            psls_bench::time(|| {
                for _ in 0..iters {
                    // SAFETY: the window is locked by `epoch`; `ptr` is valid for `len` bytes
                    // and target 1's window holds at least `len` bytes; the flush completes the
                    // transfer before the buffer is touched again. Return codes are ignored on
                    // purpose: this is the raw baseline, and the safe side checks them.
                    unsafe {
                        if op == "get" {
                            ffi::MPI_Get(
                                ptr.cast::<c_void>(),
                                len,
                                ffi::RSMPI_UINT8_T,
                                1,
                                0,
                                len,
                                ffi::RSMPI_UINT8_T,
                                raw_win,
                            );
                        } else {
                            ffi::MPI_Put(
                                ptr.cast::<c_void>(),
                                len,
                                ffi::RSMPI_UINT8_T,
                                1,
                                0,
                                len,
                                ffi::RSMPI_UINT8_T,
                                raw_win,
                            );
                        }
                        ffi::MPI_Win_flush(1, raw_win);
                    }
                }
            })
        },
    );
    match err {
        Some(e) => Err(e),
        None => Ok((safe, raw)),
    }
}
