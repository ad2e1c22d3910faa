//! Modified Gram–Schmidt on a global matrix, with checkpoints: the paper's evaluation program.
//!
//! The matrix A (`--rows` × `--vectors`, vector j contiguous) lives in one global array, and the
//! vectors are distributed over the ranks in blocks. Step j: the owner of vector j normalizes
//! it (q_j); after a barrier, every rank orthogonalizes its own vectors k > j against q_j. A
//! becomes Q in place. Every `--every` vectors, at the head of the loop, the program calls
//! `checkpoint()`; the loop index is protected private state, so a restarted run goes on from
//! the last checkpoint. At the end rank 0 checks that Q is orthonormal and prints a checksum of
//! Q's bits, which is the same from run to run, crashed and restarted or not.
//!
//! ```sh
//! PSLS_VIRTUAL_NODES=4 mpirun -n 4 target/release/mgs --rows 4096 --vectors 64 --every 4
//! ```

use psls::{GlobalArray, Psls};
use std::process::ExitCode;

const USAGE: &str = "usage: mgs [--rows M] [--vectors N] [--every F] [--crash-at J --crash-rank R]

Modified Gram-Schmidt of an M x N matrix (default 4096 x 64) in PSLS global memory, with a
memory checkpoint every F vectors (default 4; 0: none). Prints a checksum of Q that is the same
from run to run, and fails if Q is not orthonormal.

  --crash-at J --crash-rank R   (testing) rank R aborts at the head of step J, unless this run
                                is a restart: the job dies, and running it again restarts from
                                the last checkpoint";

struct Opts {
    rows: usize,
    vectors: usize,
    every: usize,
    crash: Option<(usize, usize)>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        rows: 4096,
        vectors: 64,
        every: 4,
        crash: None,
    };
    let (mut crash_at, mut crash_rank) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Err(String::new());
        }
        let mut num = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name} {v:?}: expected a whole number"))
        };
        match a.as_str() {
            "--rows" => o.rows = num("--rows")?,
            "--vectors" => o.vectors = num("--vectors")?,
            "--every" => o.every = num("--every")?,
            "--crash-at" => crash_at = Some(num("--crash-at")?),
            "--crash-rank" => crash_rank = Some(num("--crash-rank")?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.rows == 0 || o.vectors == 0 || o.vectors > o.rows {
        return Err(format!(
            "need 1 <= vectors <= rows (got {} vectors of {} rows)",
            o.vectors, o.rows
        ));
    }
    // The matrix is one global array of rows x vectors f64 values.
    if o.rows
        .checked_mul(o.vectors)
        .and_then(|n| n.checked_mul(std::mem::size_of::<f64>()))
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(format!(
            "--rows {} --vectors {}: the matrix of {} x {} values does not fit in memory; give \
             smaller --rows or --vectors",
            o.rows, o.vectors, o.rows, o.vectors
        ));
    }
    o.crash = match (crash_at, crash_rank) {
        (Some(j), Some(r)) => {
            if j >= o.vectors {
                return Err(format!(
                    "--crash-at {j}: the run has steps 0 to {} (--vectors {}), so it would never \
                     crash; give a step in that range",
                    o.vectors - 1,
                    o.vectors
                ));
            }
            Some((j, r))
        }
        (None, None) => None,
        _ => return Err("--crash-at and --crash-rank go together".into()),
    };
    Ok(o)
}

/// Checks the options that depend on the number of ranks. Every rank decides the same from the
/// same arguments, so all of them stop together and none waits for the others.
fn check_ranks(o: &Opts, ranks: usize) -> Result<(), String> {
    match o.crash {
        Some((_, r)) if r >= ranks => Err(format!(
            "--crash-rank {r}: the job has ranks 0 to {}, so it would never crash; give a rank \
             in that range",
            ranks - 1
        )),
        _ => Ok(()),
    }
}

/// The deterministic initial matrix: a well-conditioned pseudo-random value per element.
fn initial(i: usize, j: usize) -> f64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    u - 0.5 + if i == j { 4.0 } else { 0.0 }
}

fn run(psls: &Psls, o: &Opts) -> psls::Result<bool> {
    let (m, n) = (o.rows, o.vectors);
    let a: GlobalArray<f64> = psls.alloc(m * n)?;
    let mine = psls.local_range(n);
    let next = psls.protect("next", 0u64)?;
    let shape = psls.protect("shape", [m as u64, n as u64])?;
    let restarted = psls.restarted_from();
    if restarted.is_some() && shape.get() != [m as u64, n as u64] {
        let [rm, rn] = shape.get();
        return Err(psls::Error::Checkpoint(format!(
            "this run restarts a {rm} x {rn} run: give it --rows {rm} --vectors {rn}, or set PSLS_CKPT_NAME to start a separate one"
        )));
    }
    if restarted.is_none() {
        let mut col = vec![0.0; m];
        for j in mine.clone() {
            for (i, x) in col.iter_mut().enumerate() {
                *x = initial(i, j);
            }
            a.write_from(j * m, &col);
        }
    } else if psls.rank() == 0 {
        println!(
            "mgs: restarted from checkpoint {} at vector {}",
            restarted.unwrap_or(0),
            next.get()
        );
    }
    psls.barrier()?;
    let started = std::time::Instant::now();
    let mut q = vec![0.0; m];
    let mut v = vec![0.0; m];
    let mut checkpoints = 0;
    for j in next.get() as usize..n {
        if o.every > 0 && j % o.every == 0 {
            next.set(j as u64);
            psls.checkpoint()?;
            checkpoints += 1;
        }
        if let Some((at, rank)) = o.crash {
            if j == at && rank == psls.rank() && restarted.is_none() {
                eprintln!("mgs: rank {rank} crashing at vector {j} (--crash-at)");
                std::process::abort();
            }
        }
        if mine.contains(&j) {
            a.read_into(j * m, &mut q);
            let norm = q.iter().map(|x| x * x).sum::<f64>().sqrt();
            for x in &mut q {
                *x /= norm;
            }
            a.write_from(j * m, &q);
        }
        psls.barrier()?;
        a.read_into(j * m, &mut q);
        for k in mine.clone().filter(|&k| k > j) {
            a.read_into(k * m, &mut v);
            let r: f64 = q.iter().zip(&v).map(|(x, y)| x * y).sum();
            for (y, x) in v.iter_mut().zip(&q) {
                *y -= r * x;
            }
            a.write_from(k * m, &v);
        }
        psls.barrier()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut ok = true;
    if psls.rank() == 0 {
        let qm = a.to_vec(0..m * n);
        let mut worst: f64 = 0.0;
        for i in 0..n {
            for j in i..n {
                let d: f64 = (0..m).map(|r| qm[i * m + r] * qm[j * m + r]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((d - want).abs());
            }
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for x in &qm {
            h = (h ^ x.to_bits()).wrapping_mul(0x0100_0000_01b3);
        }
        ok = worst < 1e-9;
        println!(
            "mgs: {m} x {n}, checkpoint every {} vectors ({checkpoints} taken in this run), orthogonality error {worst:.3e} ({}), checksum {h:016x}",
            o.every,
            if ok { "ok" } else { "FAILED" }
        );
        println!("mgs: main loop {elapsed:.3} s");
        if let Some(s) = psls.last_checkpoint() {
            println!(
                "mgs: last checkpoint {}: {} pages, {} bytes to buddies, {} pages reused without transfer",
                s.epoch, s.pages, s.bytes_transferred, s.pages_reused
            );
        }
    }
    psls.barrier()?;
    psls.free(a)?;
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mgs: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let psls = match psls::init() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mgs: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_ranks(&o, psls.size()) {
        if psls.rank() == 0 {
            eprintln!("mgs: {e}\n\n{USAGE}");
        }
        return ExitCode::from(2);
    }
    let ok = match run(&psls, &o) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("mgs: rank {}: {e}", psls.rank());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = psls.finalize() {
        eprintln!("mgs: {e}");
        return ExitCode::from(2);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_matrix_too_large_is_an_error_not_an_overflow() {
        let e = parse(&args(&["--rows", "4294967296", "--vectors", "4294967296"]))
            .err()
            .unwrap();
        assert!(e.contains("--rows 4294967296 --vectors 4294967296"), "{e}");
        assert!(e.contains("does not fit in memory"), "{e}");
        assert!(parse(&args(&["--rows", "4096", "--vectors", "64"])).is_ok());
    }

    #[test]
    fn a_crash_that_would_never_happen_is_an_error() {
        let e = parse(&args(&[
            "--vectors",
            "64",
            "--crash-at",
            "99",
            "--crash-rank",
            "0",
        ]))
        .err()
        .unwrap();
        assert!(
            e.contains("--crash-at 99: the run has steps 0 to 63 (--vectors 64)"),
            "{e}"
        );
        let o = parse(&args(&["--crash-at", "13", "--crash-rank", "9"])).unwrap();
        let e = check_ranks(&o, 4).unwrap_err();
        assert!(
            e.contains("--crash-rank 9: the job has ranks 0 to 3"),
            "{e}"
        );
        assert!(check_ranks(&o, 10).is_ok());
        let o = parse(&args(&["--crash-at", "63", "--crash-rank", "3"])).unwrap();
        assert!(check_ranks(&o, 4).is_ok());
    }
}
