//! The smallest PSLS program: start the runtime on every rank, print the node map and the buddy
//! ring, and stop.
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
    if let Err(e) = psls.finalize() {
        eprintln!("hello: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
