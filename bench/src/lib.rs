//! Shared helpers for the benchmarks: timing with interleaved repetitions and medians, and
//! environment knobs.

use psls::rma::{Comm, ReduceOp};
use psls::{Error, Psls};
use std::process::ExitCode;
use std::time::Instant;

/// A benchmark's exit: status 0, or its error on standard error and status 2.
pub fn exit(name: &str, result: psls::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether `PSLS_BENCH_SMOKE=1`: tiny sizes and few iterations, to check the benchmark runs.
pub fn smoke() -> bool {
    std::env::var("PSLS_BENCH_SMOKE").as_deref() == Ok("1")
}

/// Seconds taken by `f`.
pub fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The median of `v` (which it sorts).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `a` and `b` alternately `rounds` times and returns the median time of each, so that
/// noise on a shared machine hits both sides alike.
pub fn interleaved(
    rounds: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut ta, mut tb) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        let (x, y) = in_turn::<_, std::convert::Infallible>(i, || Ok(a()), || Ok(b()))
            .unwrap_or_else(|never| match never {});
        ta.push(x);
        tb.push(y);
    }
    (median(&mut ta), median(&mut tb))
}

/// Runs `a` and `b` once each, `a` first in even rounds and `b` first in odd ones, so that
/// warm-up effects do not favour one side; returns both results (the first error stops it).
pub fn in_turn<T, E>(
    round: usize,
    a: impl FnOnce() -> Result<T, E>,
    b: impl FnOnce() -> Result<T, E>,
) -> Result<(T, T), E> {
    if round % 2 == 0 {
        let x = a()?;
        Ok((x, b()?))
    } else {
        let y = b()?;
        Ok((a()?, y))
    }
}

/// Seconds the slowest rank takes for `f`, from a common start (collective). An error on any
/// rank is an error on every rank.
pub fn timed(p: &Psls, comm: &Comm, f: impl FnOnce() -> psls::Result<()>) -> psls::Result<f64> {
    p.barrier()?;
    let t = Instant::now();
    let r = f();
    let s = t.elapsed().as_secs_f64();
    agree(comm, r)?;
    share_max(comm, s)
}

/// The largest of every rank's `v` (non-negative), on every rank.
pub fn share_max(comm: &Comm, v: f64) -> psls::Result<f64> {
    // Non-negative doubles order like their bit patterns.
    let bits = comm.allreduce_u64(v.max(0.0).to_bits(), ReduceOp::Max)?;
    Ok(f64::from_bits(bits))
}

/// `local` on every rank if every rank succeeded; otherwise the first failure, on every rank
/// (collective), so that no rank waits for one that gave up.
pub fn agree<T>(comm: &Comm, local: psls::Result<T>) -> psls::Result<T> {
    let message = local
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let all = comm.allgather_bytes(message.as_bytes())?;
    let value = local?;
    match all.iter().enumerate().find(|(_, m)| !m.is_empty()) {
        None => Ok(value),
        Some((rank, m)) => Err(Error::Remote {
            rank,
            message: String::from_utf8_lossy(m).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn interleaved_returns_each_sides_median() {
        let mut n = 0.0;
        let (a, b) = interleaved(
            5,
            || {
                n += 1.0;
                n
            },
            || 7.0,
        );
        assert_eq!(b, 7.0);
        assert!(a > 0.0);
    }
}
