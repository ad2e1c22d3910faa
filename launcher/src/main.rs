//! `psls-launch`: starts a PSLS job under `mpirun` or `srun`.
//!
//! This is the foundation version: it picks the MPI launcher, places ranks on virtual nodes when
//! asked, gives the job a stable job id and a run directory, and passes everything to the
//! runtime through environment variables (it shares no code with the runtime and needs no MPI
//! itself). Failure detection and restart come with the recovery work.

use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LauncherKind {
    /// `srun` inside a Slurm allocation, `mpirun` otherwise.
    Auto,
    /// The MPI library's `mpirun`.
    Mpirun,
    /// Slurm's `srun`.
    Srun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MpiKind {
    /// Whichever MPI the program is linked with (read with `ldd`); Open MPI if unknown.
    Auto,
    /// Open MPI (`mpirun.openmpi`, `srun --mpi=pmix`).
    Openmpi,
    /// MPICH (`mpirun.mpich`, `srun --mpi=pmi2`).
    Mpich,
}

/// Launch a PSLS job.
///
/// Example, on one host with 4 simulated nodes:
///
///     psls-launch -n 4 --virtual-nodes 4 -- target/release/hello
///
/// Arguments after PROGRAM go to the program. Use --mpi-arg to pass options to mpirun/srun.
#[derive(Debug, Parser)]
#[command(name = "psls-launch", version, about, verbatim_doc_comment)]
struct Cli {
    /// Number of ranks.
    #[arg(short = 'n', long = "ranks", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    ranks: u32,

    /// Simulate this many nodes on this host (each with its own memory and disk roots).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    virtual_nodes: Option<u32>,

    /// Which MPI launcher starts the ranks.
    #[arg(long, value_enum, default_value_t = LauncherKind::Auto)]
    launcher: LauncherKind,

    /// Which MPI the program uses.
    #[arg(long, value_enum, default_value_t = MpiKind::Auto)]
    mpi: MpiKind,

    /// Job id keying the node roots (default: Slurm's job id, else generated). A restarted job
    /// must use the same id to find its checkpoints.
    #[arg(long, value_name = "ID")]
    job_id: Option<String>,

    /// Directory for the launcher's files (node map, logs). Default: ./psls-run-JOB_ID.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// An extra argument for mpirun/srun (repeatable), e.g. --mpi-arg=--mca --mpi-arg=btl=self,tcp.
    #[arg(long = "mpi-arg", value_name = "ARG", allow_hyphen_values = true)]
    mpi_args: Vec<String>,

    /// Print the command instead of running it.
    #[arg(long)]
    dry_run: bool,

    /// The program to run on every rank, and its arguments.
    #[arg(required = true, last = true, value_name = "PROGRAM [ARGS]")]
    program: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("psls-launch: error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    if let Some(v) = cli.virtual_nodes {
        if v > cli.ranks {
            return Err(format!(
                "--virtual-nodes {v} is more than --ranks {}: every virtual node needs at least one rank",
                cli.ranks
            ));
        }
    }
    let program = resolve_program(&cli.program[0])?;
    let in_slurm = std::env::var_os("SLURM_JOB_ID").is_some();
    let launcher = match cli.launcher {
        LauncherKind::Auto if in_slurm => LauncherKind::Srun,
        LauncherKind::Auto => LauncherKind::Mpirun,
        l => l,
    };
    let mpi = match cli.mpi {
        MpiKind::Auto => detect_mpi(&program),
        m => m,
    };
    let job_id = match &cli.job_id {
        Some(id) => {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "--job-id {id:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
                ));
            }
            id.clone()
        }
        None => match std::env::var("SLURM_JOB_ID") {
            Ok(id) if !id.is_empty() => format!("slurm-{id}"),
            _ => format!("launch-{}-{}", unix_secs(), std::process::id()),
        },
    };
    let run_dir = cli
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("psls-run-{job_id}")));
    if !cli.dry_run {
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| format!("cannot create run directory {}: {e}", run_dir.display()))?;
    }

    let mut cmd = match (launcher, mpi) {
        (LauncherKind::Srun, m) => {
            let mut c = Command::new("srun");
            let plugin = if m == MpiKind::Mpich { "pmi2" } else { "pmix" };
            c.arg(format!("--mpi={plugin}"))
                .arg("-n")
                .arg(cli.ranks.to_string());
            c
        }
        (_, m) => {
            let mut c = Command::new(if m == MpiKind::Mpich {
                "mpirun.mpich"
            } else {
                "mpirun.openmpi"
            });
            c.arg("-n").arg(cli.ranks.to_string());
            if m != MpiKind::Mpich {
                // Ranks may outnumber cores (virtual nodes on one host); let Open MPI run as
                // root in containers, and yield when idle.
                c.env("OMPI_MCA_rmaps_base_oversubscribe", "1")
                    .env("OMPI_MCA_mpi_yield_when_idle", "1");
                if is_root() {
                    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
                }
            }
            c
        }
    };
    cmd.args(&cli.mpi_args)
        .arg(&program)
        .args(&cli.program[1..]);
    cmd.env("PSLS_LAUNCHED", "1")
        .env("PSLS_JOB_ID", &job_id)
        .env("PSLS_RUN_DIR", &run_dir);
    if let Some(v) = cli.virtual_nodes {
        cmd.env("PSLS_VIRTUAL_NODES", v.to_string());
    }
    eprintln!(
        "psls-launch: job {job_id}: {} ranks{} via {:?} ({:?}), run dir {}",
        cli.ranks,
        cli.virtual_nodes
            .map(|v| format!(" on {v} virtual nodes"))
            .unwrap_or_default(),
        launcher,
        mpi,
        run_dir.display()
    );
    if cli.dry_run {
        println!("{cmd:?}");
        return Ok(ExitCode::SUCCESS);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    match status.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(c) => {
            eprintln!("psls-launch: job {job_id} failed with exit code {c}");
            Ok(ExitCode::from(c.clamp(1, 255) as u8))
        }
        None => {
            eprintln!("psls-launch: job {job_id} was killed by a signal");
            Ok(ExitCode::from(1))
        }
    }
}

/// The program as a path: as given when it contains a slash, else looked up in PATH.
fn resolve_program(p: &str) -> Result<PathBuf, String> {
    let not_found = || format!("program {p:?} not found: give a path or a command on PATH");
    if p.contains('/') {
        let path = PathBuf::from(p);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(not_found())
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(p))
                .find(|c| c.is_file())
        })
        .ok_or_else(not_found)
}

fn detect_mpi(program: &Path) -> MpiKind {
    match Command::new("ldd").arg(program).output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("libmpich") => MpiKind::Mpich,
        _ => MpiKind::Openmpi,
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
