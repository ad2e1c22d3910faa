//! What every test-case binary (`psls-testcase`, `svm_cases`) shares: the `check!` macro and
//! the `main` that picks a case, starts PSLS, runs it and reports.

use std::process::ExitCode;

/// A multi-rank test case. A failed `check!` exits the rank; an `Err` is a runtime error.
pub type Case = fn(&psls::Psls) -> psls::Result<()>;

/// Prints `CHECK rank=R <what>` when the condition holds. Otherwise prints `FAIL ...` and exits
/// the rank at once with status 1, so the launcher ends the job instead of the other ranks
/// waiting for this one in a collective.
#[macro_export]
macro_rules! check {
    ($p:expr, $cond:expr, $($fmt:tt)*) => {{
        if $cond {
            println!("CHECK rank={} {}", $p.rank(), format!($($fmt)*));
        } else {
            println!("FAIL rank={} {} ({})", $p.rank(), format!($($fmt)*), stringify!($cond));
            std::process::exit(1);
        }
    }};
}

/// Runs the case named by the first argument: status 64 for an unknown case, 2 for a runtime
/// error, 0 (after `PASS rank=R`) for success. `report` runs after the case, before finalize.
pub fn run(program: &str, cases: &[(&str, Case)], report: fn(&psls::Psls)) -> ExitCode {
    let case = std::env::args().nth(1).unwrap_or_default();
    let Some((_, f)) = cases.iter().find(|(n, _)| *n == case) else {
        let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "usage: {program} CASE, where CASE is one of: {}",
            names.join(", ")
        );
        return ExitCode::from(64);
    };
    let psls = match psls::init() {
        Ok(p) => p,
        Err(e) => {
            println!("error: {e}");
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rank = psls.rank();
    // Tells the harness this rank got through MPI_Init (see `Outcome::crashed_in_mpi_init`).
    println!("STARTED rank={rank}");
    let result = f(&psls);
    report(&psls);
    match result.and(psls.finalize()) {
        Ok(()) => {
            println!("PASS rank={rank}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
