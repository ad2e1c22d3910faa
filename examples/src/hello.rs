//! The smallest PSLS program: start the runtime on every rank, print the node map and the buddy
//! ring, share one global array, and stop.
//!
//! ```sh
//! PSLS_VIRTUAL_NODES=4 mpirun -n 4 target/release/hello
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let psls = match psls::init() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hello: {e}");
            return ExitCode::from(2);
        }
    };
    if psls.rank() == 0 {
        println!("PSLS hello: {} ranks, {}", psls.size(), psls.mpi_library());
        println!("{}", psls.describe());
        println!("memory root of node 0: {}", psls.memory_root().display());
        println!("disk root of node 0:   {}", psls.disk_root().display());
    }
    if let Err(e) = share_an_array(&psls) {
        eprintln!("hello: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = psls.finalize() {
        eprintln!("hello: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Every rank fills its block of one global array with plain stores; rank 0 then reads all of
/// it with plain loads, the pages moving underneath.
fn share_an_array(psls: &psls::Psls) -> psls::Result<()> {
    let n = 100_000;
    let a: psls::GlobalArray<u64> = psls.alloc(n)?;
    for i in psls.local_range(n) {
        a.set(i, (psls.rank() as u64 + 1) * 1_000_000 + i as u64);
    }
    psls.barrier()?;
    if psls.rank() == 0 {
        let owners: Vec<u64> = (0..n).map(|i| a.get(i) / 1_000_000).collect();
        let ok = (0..n).all(|i| a.get(i) % 1_000_000 == i as u64);
        println!(
            "global array of {n} u64 at {:p}: written by ranks {:?}, every element right: {ok}",
            a.as_ptr(),
            {
                let mut r = owners;
                r.dedup();
                r.iter().map(|x| x - 1).collect::<Vec<_>>()
            }
        );
        println!("rank 0: {:?}", psls.stats());
        if !ok {
            return Err(psls::Error::Protocol(
                "the global array read back wrong".into(),
            ));
        }
    }
    psls.barrier()?;
    psls.free(a)
}
