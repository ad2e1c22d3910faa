//! The command line: the launcher's options, and the two helper modes that run on a node
//! (`probe` and `wipe`).

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LauncherKind {
    /// `srun` inside a Slurm allocation, `mpirun` otherwise.
    Auto,
    /// The MPI library's `mpirun`.
    Mpirun,
    /// Slurm's `srun`.
    Srun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MpiKind {
    /// Whichever MPI the program is linked with (read with `ldd`); Open MPI if unknown.
    Auto,
    /// Open MPI (`mpirun.openmpi`, `srun --mpi=pmix`).
    Openmpi,
    /// MPICH (`mpirun.mpich`, `srun --mpi=pmi2`).
    Mpich,
}

/// The fault-injection grammar, quoted in `--help` and in every parse error.
pub const INJECT_GRAMMAR: &str = "KIND[:rank=R|:node=NAME][:epoch=E|:at=SECONDS][:launch=L]";

const AFTER_HELP: &str = "\
Supervision: when the job fails (killed by a signal, an exit status above 128, or a node found
damaged), psls-launch probes every node through the same MPI launcher (`psls-launch probe`),
classifies the failure (process crash, reboot, node loss, power cut), replaces each lost node
with the next spare at the same position in the node map, and relaunches; the runtime restarts
from the newest checkpoint that survived. An exit code from 1 to 128 with every node intact is
the application's own error: it is returned as is, without a restart. After --max-restarts
restarts, or when a lost node has no spare left, psls-launch stops with a report of what was lost
and what remains, and exits with status 3. Bad options exit with status 2. When the job succeeds
but an --inject fault never fired (its epoch never came, its launch never happened, its node ran
no rank), psls-launch names it (`--inject SPEC never fired: ...`) and exits with status 4: the
fault was not tested. SIGTERM (scancel) or
SIGINT (Ctrl-C) stops the job (SIGTERM to mpirun/srun, SIGKILL 10 s later) without a relaunch:
psls-launch exits with status 143 or 130.

Hangs (--hang-timeout): the launcher does not time the job out as such. Once a second it checks
the ranks' processes that it can see (every rank with virtual nodes; under --hostfile or srun,
only the ranks on its own host, from RUN_DIR/ranks/rank.R); when one of them has died while the
job is still running (MPI waiting on a dead rank), it waits --hang-timeout seconds more, then
ends the job (SIGTERM, SIGKILL 10 s later) and treats it as a failure: probe, classify,
relaunch. A job whose ranks are all alive, however long it runs or however stuck it is, is
never ended; neither is one whose dead rank is on another host.

Fault injection (--inject SPEC, repeatable; for tests and demos):
  SPEC = KIND[:rank=R|:node=NAME][:epoch=E|:at=SECONDS][:launch=L]
  KIND:
    kill-rank     kill rank R (default 0)
    reboot        kill the ranks of a node, then wipe its memory root
    lose-node     kill the ranks of a node, wipe its memory and disk roots, mark it dead
    power-cut     kill the job, then wipe the memory root of every live node
    kill-restore  kill rank R while the restarted job restores its checkpoint
  rank=R / node=NAME: the rank to kill, or the node (rank=R names the node of rank R); by
    default rank 0 and its node. power-cut takes only rank=R (the rank that dies first).
  epoch=E: the runtime kills the rank itself when its checkpoint E begins (for kill-restore,
    when it restores checkpoint E; any epoch when omitted).
  at=SECONDS: psls-launch kills the rank(s) with SIGKILL that long after the launch starts,
    once they have started (decimals allowed, e.g. at=2.5).
  launch=L: the launch in which the fault fires: 0 is the first, 1 the first restart (default 0,
    and 1 for kill-restore). Three crashes in a row: three specs with launch=0, 1 and 2.
  Node effects (wiping roots, marking dead) happen once the job has exited.
  Examples: --inject kill-rank:rank=2:epoch=3   --inject lose-node:node=vnode1:at=4
            --inject power-cut:epoch=5 --inject kill-restore:rank=1

Files in the run directory: nodemap.L (the `RANK NODE` map of launch L), dead-nodes (nodes
marked dead by lose-node), resumed and ranks/rank.R (written by the runtime), .lock (locked by
the launcher while it runs: a second psls-launch on the same directory is refused).

On a node: `psls-launch probe --node NODE --job-id ID --ckpt-name SET [--run-dir DIR]` prints
one line about that node's roots (see `psls-launch probe --help`).";

/// Launch a PSLS job, watch it, and bring it back after failures.
///
/// Example, on one host with 4 simulated nodes and one spare:
///
///     psls-launch -n 4 --virtual-nodes 4 --spares 1 -- target/release/mgs
///
/// Arguments after PROGRAM go to the program. Use --mpi-arg to pass options to mpirun/srun.
#[derive(Debug, Parser)]
#[command(
    name = "psls-launch",
    version,
    about,
    verbatim_doc_comment,
    after_help = "Run `psls-launch --help` for supervision and the --inject grammar.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    /// Number of ranks.
    #[arg(short = 'n', long = "ranks", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub ranks: u32,

    /// Ranks on each node: the number of compute nodes is RANKS / P, which must divide evenly
    /// (an alternative to --nodes).
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub ranks_per_node: Option<u32>,

    /// Number of compute nodes, spares not counted. With --hostfile or under srun they are the
    /// first N hosts; on one host otherwise, they are virtual nodes (as --virtual-nodes N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub nodes: Option<u32>,

    /// Real hosts, one per line (`#` starts a comment; words after the host name are ignored):
    /// the first ones run ranks, the next --spares are spares.
    #[arg(long, value_name = "FILE", conflicts_with = "virtual_nodes")]
    pub hostfile: Option<PathBuf>,

    /// Simulate this many compute nodes on this host (each with its own memory and disk roots).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub virtual_nodes: Option<u32>,

    /// Spare nodes kept to replace lost ones, used in order (virtual nodes, hostfile hosts or
    /// Slurm nodes after the compute nodes).
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub spares: u32,

    /// Restarts allowed before giving up (exit status 3).
    #[arg(long, value_name = "R", default_value_t = 3)]
    pub max_restarts: u32,

    /// Seconds a node has to answer the probe after a failure; one that does not is lost.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub probe_timeout: u64,

    /// For `lose-node` injections on real nodes (Slurm, --hostfile): a command run on this host
    /// with the node's name appended, after its roots are wiped, that takes the node down for
    /// real; e.g. `scripts/slurm-cluster.sh kill-node` on the emulated Slurm cluster (kills
    /// its slurmd and tasks; Slurm then marks it down).
    #[arg(long, value_name = "COMMAND")]
    pub lose_node_command: Option<String>,

    /// Only after a rank has died: when a rank process the launcher can see (any rank on
    /// virtual nodes, else one on this host) has died and the job is still running this many
    /// seconds later, end the job as failed (then probe and relaunch) rather than wait for it.
    /// A job whose ranks are all alive is never timed out, however long it runs (0: never end
    /// a job, even with a dead rank).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub hang_timeout: u64,

    /// Which MPI launcher starts the ranks.
    #[arg(long, value_enum, default_value_t = LauncherKind::Auto)]
    pub launcher: LauncherKind,

    /// Which MPI the program uses.
    #[arg(long, value_enum, default_value_t = MpiKind::Auto)]
    pub mpi: MpiKind,

    /// Job id keying the node roots (default: Slurm's job id, else generated). Every relaunch
    /// uses it; to resume a job later by hand, give the same id (and checkpoint set).
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,

    /// Directory for the launcher's files (node maps, dead-nodes, rank files). Default:
    /// ./psls-run-JOB_ID.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// An extra argument for mpirun/srun (repeatable), e.g. --mpi-arg=--mca --mpi-arg=btl=self,tcp.
    #[arg(long = "mpi-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub mpi_args: Vec<String>,

    // Fault injection (a `help` attribute: the grammar's brackets are not doc links).
    #[arg(
        long = "inject",
        value_name = "SPEC",
        help = "Inject a fault (repeatable): KIND[:rank=R|:node=NAME][:epoch=E|:at=SECONDS][:launch=L], \
                KIND one of kill-rank, reboot, lose-node, power-cut, kill-restore (see --help)"
    )]
    pub inject: Vec<String>,

    /// Print the node map and the command instead of running them.
    #[arg(long)]
    pub dry_run: bool,

    /// The program to run on every rank, and its arguments.
    #[arg(required = true, last = true, value_name = "PROGRAM [ARGS]")]
    pub program: Vec<String>,
}

/// Report what one node still holds, as one line on standard output:
///
///     probe node=vnode2 answers=yes memory=intact disk=intact pfs=intact ckpt-records=1
///
/// memory: MEMBASE/psls-UID/JOB/NODE exists (the runtime makes it at init); disk:
/// DISKBASE/psls-UID/JOB/NODE exists; pfs: DISKBASE/psls-UID/pfs/NODE exists (the PFS and
/// the permanent checkpoints); ckpt-records: the `ckpt.rank*` files in
/// MEMBASE/psls-UID/ckpt-SET/NODE. The bases are PSLS_MEMORY_BASE and PSLS_DISK_BASE (default
/// /dev/shm, and $TMPDIR or /var/tmp). A node listed in RUN_DIR/dead-nodes does not answer:
/// it prints `answers=no` and exits with status 1. psls-launch runs this on each node through
/// mpirun or srun after a failure.
#[derive(Debug, Parser)]
#[command(
    name = "psls-launch probe",
    bin_name = "psls-launch probe",
    verbatim_doc_comment
)]
pub struct ProbeCli {
    /// The node's name (as in the node map).
    #[arg(long, value_name = "NODE")]
    pub node: String,

    /// The job id keying the roots.
    #[arg(long, value_name = "ID")]
    pub job_id: String,

    /// The checkpoint set (PSLS_CKPT_NAME).
    #[arg(long, value_name = "SET")]
    pub ckpt_name: String,

    /// The launcher's run directory (for dead-nodes).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// Wipe one node's roots, as a fault injection does (every job's and checkpoint set's root of
/// that node under MEMBASE/psls-UID, and with --disk under DISKBASE/psls-UID too). Nothing
/// outside psls-UID is touched. psls-launch runs this on real nodes for reboot, lose-node and
/// power-cut injections.
#[derive(Debug, Parser)]
#[command(
    name = "psls-launch wipe",
    bin_name = "psls-launch wipe",
    verbatim_doc_comment
)]
pub struct WipeCli {
    /// The node's name.
    #[arg(long, value_name = "NODE")]
    pub node: String,

    /// Wipe the disk roots as well as the memory roots.
    #[arg(long)]
    pub disk: bool,
}
