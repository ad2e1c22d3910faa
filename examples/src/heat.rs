//! `heat`: 2-D heat diffusion (Jacobi iteration) on an N x N grid in PSLS global memory, with a
//! checkpoint every F steps. Rows are block-distributed; each step reads the neighbouring
//! ranks' edge rows through the shared virtual memory. Prints a checksum of the final grid,
//! which is the same from run to run, crashed and restarted or not.

use psls::{GlobalArray, Psls};
use std::process::ExitCode;

const USAGE: &str = "usage: heat [--size N] [--steps S] [--every F]

2-D heat diffusion on an N x N grid (default 512) for S Jacobi steps (default 200), the top
edge held at 1.0 and the others at 0.0, in PSLS global memory, with a checkpoint every F steps
(default 10; 0: none). Prints the heat left in the grid and a checksum of the grid that is the
same from run to run, crashed and restarted or not.";

struct Opts {
    size: usize,
    steps: usize,
    every: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        size: 512,
        steps: 200,
        every: 10,
    };
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
            "--size" => o.size = num("--size")?,
            "--steps" => o.steps = num("--steps")?,
            "--every" => o.every = num("--every")?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.size < 3 {
        return Err(format!("--size {} is too small: at least 3", o.size));
    }
    // Two global grids of size x size f64 values.
    if o.size
        .checked_mul(o.size)
        .and_then(|n| n.checked_mul(2 * std::mem::size_of::<f64>()))
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(format!(
            "--size {}: two grids of {} x {} values do not fit in memory; give a smaller --size",
            o.size, o.size, o.size
        ));
    }
    Ok(o)
}

fn run(psls: &Psls, o: &Opts) -> psls::Result<()> {
    let n = o.size;
    // Two grids: step s reads grids[s % 2] and writes grids[(s + 1) % 2].
    let grids: [GlobalArray<f64>; 2] = [psls.alloc(n * n)?, psls.alloc(n * n)?];
    let next = psls.protect("step", 0u64)?;
    let shape = psls.protect("shape", [n as u64, o.steps as u64])?;
    let restarted = psls.restarted_from();
    if restarted.is_some() && shape.get()[0] != n as u64 {
        return Err(psls::Error::Checkpoint(format!(
            "this run restarts a grid of {} x {}: give it --size {}, or set PSLS_CKPT_NAME to start a separate one",
            shape.get()[0],
            shape.get()[0],
            shape.get()[0]
        )));
    }
    let mine = psls.local_range(n);
    if restarted.is_none() {
        // The top row is the hot edge, in both grids; everything else starts cold (zeros).
        if mine.contains(&0) {
            for g in &grids {
                g.write_from(0, &vec![1.0; n]);
            }
        }
    } else if psls.rank() == 0 {
        println!(
            "heat: restarted from checkpoint {} at step {}",
            restarted.unwrap_or(0),
            next.get()
        );
    }
    psls.barrier()?;
    let started = std::time::Instant::now();
    let (mut up, mut row, mut down, mut out) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut checkpoints = 0;
    for s in next.get() as usize..o.steps {
        if o.every > 0 && s % o.every == 0 {
            next.set(s as u64);
            psls.checkpoint()?;
            checkpoints += 1;
        }
        let (from, to) = (&grids[s % 2], &grids[(s + 1) % 2]);
        // Interior rows only: the edges stay fixed.
        for i in mine.clone().filter(|&i| i > 0 && i < n - 1) {
            from.read_into((i - 1) * n, &mut up);
            from.read_into(i * n, &mut row);
            from.read_into((i + 1) * n, &mut down);
            out[0] = row[0];
            out[n - 1] = row[n - 1];
            for j in 1..n - 1 {
                out[j] = 0.25 * (up[j] + down[j] + row[j - 1] + row[j + 1]);
            }
            to.write_from(i * n, &out);
        }
        psls.barrier()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if psls.rank() == 0 {
        let grid = grids[o.steps % 2].to_vec(0..n * n);
        let heat: f64 = grid[n..].iter().sum();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for x in &grid {
            h = (h ^ x.to_bits()).wrapping_mul(0x0100_0000_01b3);
        }
        println!(
            "heat: {n} x {n}, {} steps, checkpoint every {} steps ({checkpoints} taken in this run), heat below the edge {heat:.6}, checksum {h:016x}",
            o.steps, o.every
        );
        println!("heat: main loop {elapsed:.3} s");
    }
    psls.barrier()?;
    let [a, b] = grids;
    psls.free(b)?;
    psls.free(a)?;
    Ok(())
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
            eprintln!("heat: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let psls = match psls::init() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("heat: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = run(&psls, &o) {
        eprintln!("heat: rank {}: {e}", psls.rank());
        return ExitCode::from(1);
    }
    if let Err(e) = psls.finalize() {
        eprintln!("heat: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_too_large_is_an_error_not_an_overflow() {
        let e = parse(&["--size".to_string(), "4294967296".to_string()])
            .err()
            .unwrap();
        assert!(e.contains("--size 4294967296: two grids"), "{e}");
        assert!(e.contains("give a smaller --size"), "{e}");
        assert!(parse(&["--size".to_string(), "512".to_string()]).is_ok());
    }
}
