//! `api`: the public surface. [`init`] starts the runtime on every rank, [`Psls`] answers
//! questions about the job, and [`Psls::finalize`] stops everything `init` started.

mod admin;
mod ckpt;
mod files;
mod memory;

pub use admin::{Progress, VerifyReport};
pub use files::{FileInfo, PfsFile};
pub use memory::{GlobalMutex, MutexGuard};

use crate::cluster::{self, BuddyRing, NodeMap, NodeResources, NodeSource, RootKind};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rma::{self, Comm, Mpi, ReduceOp};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Environment variables by which MPI launchers announce a launched process. Without one of
/// them, MPI_Init would start a singleton, which for a PSLS job is almost never what was meant.
const LAUNCHER_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_SIZE", // Open MPI's mpirun
    "PMI_SIZE",             // MPICH's Hydra, srun --mpi=pmi2
    "PMI_RANK",
    "PMIX_RANK", // PMIx (srun --mpi=pmix, prterun)
    "SLURM_PROCID",
    "PSLS_LAUNCHED", // psls-launch
];

/// The running PSLS runtime of this rank.
///
/// Dropping it without [`Psls::finalize`] finalizes too, but cannot report errors.
#[derive(Debug)]
pub struct Psls {
    cfg: Config,
    rank: usize,
    size: usize,
    job_id: String,
    node_map: NodeMap,
    node_source: NodeSource,
    ring: BuddyRing,
    /// Spare nodes waiting to replace a lost node (`PSLS_SPARES`, from the launcher).
    spares: Vec<String>,
    memory_root: PathBuf,
    disk_root: PathBuf,
    resources: Vec<NodeResources>,
    binding: Option<String>,
    mpi_library: String,
    svm: crate::svm::Svm,
    ckpt: crate::ckpt::Checkpointer,
    volume: std::sync::Arc<crate::pfs::Volume>,
    locks: memory::Locks,
    // Declared last: dropped after every field above, so the runtime's communicator is freed
    // before MPI is finalized.
    comm: Comm,
    mpi: Mpi,
}

/// Starts the runtime on every rank (collective), with the configuration from the environment.
///
/// Calls `MPI_Init_thread` with `MPI_THREAD_MULTIPLE` unless the application already initialized
/// MPI (then it checks the level), gathers the node map, builds the buddy ring, creates this
/// node's memory and disk roots, and asks hwloc about every node. An error on any rank makes
/// `init` fail on every rank, so no rank is left waiting in a collective.
pub fn init() -> Result<Psls> {
    // A configuration error is agreed like any other: under a launcher, the ranks whose
    // configuration is fine would otherwise wait for this one in MPI's start-up.
    init_inner(Config::from_env(), None)
}

/// [`init`] with an explicit configuration.
pub fn init_with(cfg: Config) -> Result<Psls> {
    init_inner(Ok(cfg), None)
}

/// [`init`] on the application's communicator `comm` instead of `MPI_COMM_WORLD` (the C and
/// Fortran bindings' `psls_init`): the job is the ranks of `comm`. MPI must already be
/// initialized, at `MPI_THREAD_MULTIPLE`; the application finalizes it.
///
/// # Safety
/// `comm` must be a valid communicator of the initialized MPI, the same group on every rank
/// that calls this (collectively).
pub unsafe fn init_on(cfg: Config, comm: rma::RawComm) -> Result<Psls> {
    if !rma::is_initialized() {
        return Err(Error::Config {
            key: "communicator".into(),
            value: "given".into(),
            source_name: "psls_init".into(),
            allowed: "a communicator of an initialized MPI: call MPI_Init_thread with MPI_THREAD_MULTIPLE before psls_init".into(),
        });
    }
    init_inner(Ok(cfg), Some(comm))
}

/// [`init_on`] with the configuration from the environment: a configuration error on one rank
/// (a bad `PSLS_*` value, a missing memory base) fails `init` on every rank of `comm`, where
/// reading it before [`init_on`] would leave the others waiting in it.
///
/// # Safety
/// As [`init_on`].
pub unsafe fn init_on_env(comm: rma::RawComm) -> Result<Psls> {
    if !rma::is_initialized() {
        // SAFETY: forwarded contract; init_on reports the uninitialized MPI.
        return unsafe { init_on(Config::default(), comm) };
    }
    init_inner(Config::from_env(), Some(comm))
}

fn init_inner(cfg: Result<Config>, on: Option<rma::RawComm>) -> Result<Psls> {
    let log = cfg.as_ref().map_or("info", |c| c.log.as_str()).to_string();
    crate::log::init(&log, None);
    let launched = LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some());
    if !rma::is_initialized() && !launched {
        // One process on its own: a configuration error needs nobody's agreement.
        match cfg {
            Err(e) => return Err(e),
            Ok(ref c) if !c.allow_singleton => return Err(Error::NoLauncher),
            Ok(_) => {}
        }
    }
    let mpi = Mpi::start()?;
    let comm = match on {
        // SAFETY: the caller of init_on vouches for the communicator.
        Some(raw) => unsafe { mpi.dup(raw)? },
        None => mpi.dup_world()?,
    };
    let (rank, size) = (comm.rank(), comm.size());
    let cfg = agree(&comm, cfg)?;
    cfg.check_same_on_every_rank(&comm)?;
    crate::log::init(&cfg.log, Some(rank));

    let job_id = agree(&comm, job_id(&cfg, &comm))?;

    let (my_node, node_source) = agree(&comm, cluster::local_node_name(&cfg, rank, size))?;
    let per_rank: Vec<String> = comm
        .allgather_bytes(my_node.as_bytes())?
        .into_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    let node_map = agree(&comm, NodeMap::from_rank_names(&per_rank))?;
    let node = node_map.node_of(rank);

    let roots = (|| {
        let m = cluster::prepare_root(
            RootKind::Memory,
            &cfg.memory_base,
            &job_id,
            &my_node,
            cfg.require_tmpfs,
        )?;
        let d = cluster::prepare_root(
            RootKind::Disk,
            &cfg.disk_base,
            &job_id,
            &my_node,
            cfg.require_tmpfs,
        )?;
        Ok((m, d))
    })();
    let (memory_root, disk_root) = agree(&comm, roots)?;
    crate::inject::set_rank(rank);
    launcher_file(
        &format!("ranks/rank.{rank}"),
        &format!(
            "{} {} {my_node}\n",
            std::process::id(),
            crate::sys::host_name().unwrap_or_default()
        ),
    );
    agree(
        &comm,
        crate::inject::configure(cfg.fault.as_deref()).map_err(|why| Error::Config {
            key: "PSLS_FAULT".into(),
            value: cfg.fault.clone().unwrap_or_default(),
            source_name: "configuration".into(),
            allowed: why,
        }),
    )?;

    // The node's leader asks hwloc; everyone learns every node's figures.
    let is_leader = node_map.leader(node) == rank;
    let mine = agree(
        &comm,
        if is_leader {
            NodeResources::probe().map(Some)
        } else {
            Ok(None)
        },
    )?;
    let encoded = postcard::to_allocvec(&mine)
        .map_err(|e| Error::Hwloc(format!("encoding node resources: {e}")))?;
    let mut resources = vec![None; node_map.num_nodes()];
    for (r, bytes) in comm.allgather_bytes(&encoded)?.iter().enumerate() {
        if let Ok(Some(res)) = postcard::from_bytes::<Option<NodeResources>>(bytes) {
            resources[node_map.node_of(r)] = Some(res);
        }
    }
    let resources: Vec<NodeResources> = resources
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::Hwloc("a node leader reported no resources".into())))
        .collect::<Result<_>>()?;

    let binding = agree(
        &comm,
        cluster::bind_rank(cfg.bind, node_map.local_index(rank)),
    )?;
    let ring = BuddyRing::new((0..node_map.num_nodes()).collect());
    // The view: the live nodes (the node map) and the spares the launcher keeps; rank 0's list
    // is everyone's.
    let spares = String::from_utf8_lossy(&comm.bcast_bytes(
        0,
        std::env::var("PSLS_SPARES").unwrap_or_default().as_bytes(),
    )?)
    .split(',')
    .map(str::trim)
    .filter(|s| !s.is_empty())
    .map(str::to_string)
    .collect::<Vec<_>>();
    // The PFS volume outlives jobs: its roots are keyed by "pfs" instead of the job id.
    let pfs_root = agree(
        &comm,
        cluster::prepare_root(RootKind::Disk, &cfg.disk_base, "pfs", &my_node, false),
    )?;
    let volume = std::sync::Arc::new(crate::pfs::Volume::open(
        &comm,
        &node_map,
        &pfs_root.join("store"),
    )?);
    let set = crate::ckpt::set_name(cfg.ckpt_name.as_deref(), size);
    let permanent = volume.state().catalog.checkpoints.get(&set).cloned();
    let permanent_epoch = permanent.as_ref().map_or(0, |p| p.epoch);
    let len = cfg.svm_size - cfg.svm_size % cfg.page_size;
    let geo = crate::ckpt::area::Geometry {
        page_size: cfg.page_size,
        npages: len / cfg.page_size,
        ranks: size,
        base: cfg.svm_base,
    };
    // A permanent checkpoint taken with other settings is refused before anything is restored
    // (the memory set's record is checked the same way in `checkpoint_set`).
    if let Some(pc) = &permanent {
        agree(&comm, crate::ckpt::check_permanent(&set, pc, geo))?;
    }
    let (ckpt_dir, ckpt_lock, restart) =
        checkpoint_set(&cfg, &comm, &set, &node_map, permanent_epoch, geo)?;
    let mut ckpt = crate::ckpt::Checkpointer::new(set, ckpt_dir.clone(), rank, ckpt_lock, geo);
    // The restart hint (pages held after each permanent checkpoint) lives on the node's disk,
    // which survives a power cut.
    match cluster::prepare_root(
        RootKind::Disk,
        &cfg.disk_base,
        &format!("ckpt-{}", ckpt.set()),
        &my_node,
        false,
    ) {
        Ok(dir) => ckpt.set_hint_dir(dir),
        Err(e) => tracing::warn!(target: "psls::ckpt", "no restart hints on this node: {e}"),
    }
    let svm = crate::svm::Svm::new(
        &cfg,
        &comm,
        &ckpt_dir,
        !matches!(restart, Restart::Memory(_)),
        Some(volume.clone()),
    )?;
    if let Some(pc) = &permanent {
        ckpt.set_saved_arrays(pc);
    }
    // Pages restored and copied to a buddy again, over the job (for the launcher's report).
    let mut figures = (0, 0);
    match (restart, &permanent) {
        (Restart::Memory(epoch), _) => {
            // With one node's memory lost, its pages come from their other copies, and each
            // copy that is now alone is copied to a buddy again (as is the private state).
            let place = agree(&comm, ckpt::placement(&node_map, &ring, rank))?;
            svm.open_recovery(&comm, false)?;
            figures = svm.restore(&comm, epoch, permanent_epoch, &place)?;
            crate::inject::point("restart-restore", epoch);
            agree(&comm, ckpt.load_private(&comm, epoch))?;
            agree(&comm, ckpt.replicate_loaded(&comm, place.buddy_rank))?;
        }
        (Restart::Permanent(epoch), Some(pc)) => {
            let mine = pc.private.get(rank).cloned().unwrap_or_default();
            crate::inject::point("restart-restore", epoch);
            agree(&comm, ckpt.load_private_from(epoch, &mine))?;
            if cfg.restart_prefetch {
                let n = ckpt.load_hint(epoch);
                tracing::debug!(target: "psls::ckpt", "rank {rank}: {n} pages to load early (PSLS_RESTART_PREFETCH)");
            }
        }
        _ => {}
    }
    if let (Some(epoch), 0) = (ckpt.restarted_from(), rank) {
        tracing::info!(
            target: "psls::ckpt",
            "restarted from {} checkpoint {epoch} of set {:?}",
            if matches!(restart, Restart::Permanent(_)) { "permanent" } else { "memory" },
            ckpt.set()
        );
    }
    let locks = memory::Locks::new(&comm)?;

    let psls = Psls {
        rank,
        size,
        job_id,
        node_source,
        ring,
        spares,
        memory_root,
        disk_root,
        resources,
        binding,
        mpi_library: rma::library_version(),
        svm,
        ckpt,
        volume,
        locks,
        node_map,
        comm,
        mpi,
        cfg,
    };
    // After a node loss, a spare takes the lost node's place in the PFS layout, and gets its
    // copies, before the application reads anything.
    let remirrored = psls.pfs_follow_view()?;
    if rank == 0 {
        let (pages, again) = figures;
        let resumed = match (restart, psls.ckpt.restarted_from()) {
            (Restart::Permanent(_), Some(e)) => format!("permanent {e}"),
            (_, Some(e)) => format!("memory {e}"),
            _ => "fresh".to_string(),
        };
        launcher_file(
            "resumed",
            &format!("{resumed} restored-pages={pages} copied-again={again} remirrored-pages={remirrored} page-size={}\n", psls.cfg.page_size),
        );
    }
    if rank == 0 {
        tracing::info!(
            target: "psls::api",
            "PSLS started: job {}, {} ranks on {} nodes ({:?}), {}",
            psls.job_id,
            size,
            psls.node_map.num_nodes(),
            psls.node_source,
            psls.mpi_library
        );
    }
    tracing::debug!(
        target: "psls::cluster",
        "node {} ({}), memory root {}, disk root {}, binding {:?}",
        node,
        psls.node_map.name(node),
        psls.memory_root.display(),
        psls.disk_root.display(),
        psls.binding
    );
    Ok(psls)
}

/// Writes `text` to `name` under the launcher's run directory (`PSLS_RUN_DIR`), atomically (a
/// temporary file renamed into place), for `psls-launch` to read: the process id of each rank
/// (`ranks/rank.R`: `PID HOST NODE`), and where the job resumed from (`resumed`). Without a
/// launcher this does nothing; a failure is logged, never fatal.
fn launcher_file(name: &str, text: &str) {
    let Some(dir) = std::env::var_os("PSLS_RUN_DIR") else {
        return;
    };
    let path = std::path::Path::new(&dir).join(name);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = (|| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = r {
        tracing::warn!(target: "psls::api", "cannot write {} for the launcher: {e}", path.display());
    }
}

/// Where a job starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// Nothing to restart from.
    Fresh,
    /// The memory checkpoint of this epoch (newer than any permanent one).
    Memory(u64),
    /// The permanent checkpoint of this epoch: memory copies are discarded.
    Permanent(u64),
}

/// Finds this job's checkpoint set on this node (collective): its directory, its lock, and
/// where to restart from: the newest memory checkpoint any rank committed, unless the permanent
/// checkpoint in the PFS catalog (`permanent`, 0: none) is as new or newer.
fn checkpoint_set(
    cfg: &Config,
    comm: &Comm,
    set: &str,
    node_map: &NodeMap,
    permanent: u64,
    geo: crate::ckpt::area::Geometry,
) -> Result<(PathBuf, std::fs::File, Restart)> {
    let my_node = node_map.name(node_map.node_of(comm.rank()));
    use crate::ckpt::area::{Found, RecoveryArea};
    let (rank, size) = (comm.rank(), comm.size());
    let dir = agree(
        comm,
        cluster::prepare_root(
            RootKind::Memory,
            &cfg.memory_base,
            &format!("ckpt-{set}"),
            my_node,
            cfg.require_tmpfs,
        ),
    )?;
    let lock = agree(comm, crate::ckpt::take_lock(&dir, rank, set))?;
    let found = agree(comm, RecoveryArea::probe(&dir, rank, geo))?;
    let code = match found {
        Found::Absent => 0,
        Found::Uncommitted => 1,
        Found::Committed(e) => e + 1,
    };
    let codes: Vec<u64> = comm
        .allgather_u64s(&[code])?
        .iter()
        .map(|c| c.first().copied().unwrap_or(0))
        .collect();
    let newest = codes.iter().copied().max().unwrap_or(0);
    let from_disks = || {
        if permanent > 0 {
            Restart::Permanent(permanent)
        } else {
            Restart::Fresh
        }
    };
    if newest < 2 || newest - 1 <= permanent {
        return Ok((dir, lock, from_disks()));
    }
    let epoch = newest - 1;
    // A rank without a recovery area lost its node's memory (a reboot, or a spare in the place
    // of a lost node): every rank made its area at the job's first checkpoint. Each page has
    // its two copies on two nodes, so the memory checkpoint survives one such node; with two or
    // more, some page may have lost both copies, and the job goes back to the disks.
    let mut lost: Vec<&str> = (0..size)
        .filter(|&r| codes[r] == 0)
        .map(|r| node_map.name(node_map.node_of(r)))
        .collect();
    lost.sort_unstable();
    lost.dedup();
    // A rank whose area is under another node's directory ran there before: the node layout
    // changed (another PSLS_VIRTUAL_NODES or node map), which looks like lost memory.
    let moved = if lost.is_empty() {
        String::new()
    } else {
        let mine = if codes[rank] == 0 {
            moved_from(&dir, rank)
        } else {
            None
        };
        let all = comm.allgather_bytes(mine.unwrap_or_default().as_bytes())?;
        let said: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .map(|(r, m)| format!("rank {r} ran on {}", String::from_utf8_lossy(m)))
            .collect();
        if said.is_empty() {
            String::new()
        } else {
            format!(
                " (or rather, the node layout changed: {}, and each rank finds its memory checkpoint only on the node it ran on; restart with the node layout of the checkpointed run, the same PSLS_VIRTUAL_NODES or node map, to restore it)",
                said.join(", ")
            )
        }
    };
    if lost.len() > 1 {
        if permanent > 0 {
            if rank == 0 {
                tracing::warn!(target: "psls::ckpt", "the memory of nodes {} is gone{moved}: memory checkpoint {epoch} may have lost both copies of some pages; restarting from permanent checkpoint {permanent} on the disks", lost.join(", "));
            }
            return Ok((dir, lock, Restart::Permanent(permanent)));
        }
        return Err(Error::Checkpoint(format!(
            "the memory of nodes {} is gone{moved}, so memory checkpoint {epoch} of set {set:?} may have lost both copies of some pages, and there is no permanent checkpoint to fall back to: the job cannot be restored. Take permanent checkpoints (PSLS_CKPT_PERMANENT_EVERY) to survive this; remove the ckpt-{set} directories under the memory base ({}) to start afresh",
            lost.join(", "),
            cfg.memory_base.display()
        )));
    }
    if let (Some(node), 0) = (lost.first(), rank) {
        tracing::warn!(target: "psls::ckpt", "the memory of node {node} is gone{moved}: restoring memory checkpoint {epoch} from the other copy of each page");
    }
    Ok((dir, lock, Restart::Memory(epoch)))
}

/// The node whose memory root, beside this node's (`dir` is `…/ckpt-SET/NODE`), holds a
/// recovery area of `rank`: the node the rank ran on before the node layout changed. (Only
/// nodes whose roots this host sees are found: virtual nodes, or a shared memory base.)
fn moved_from(dir: &std::path::Path, rank: usize) -> Option<String> {
    let own = dir.file_name()?;
    let record = format!("ckpt.rank{rank}");
    std::fs::read_dir(dir.parent()?)
        .ok()?
        .flatten()
        .filter(|e| e.file_name() != own)
        .find(|e| e.path().join(&record).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// The job id: configured (the launcher sets `PSLS_JOB_ID`), else Slurm's, else generated by
/// rank 0. Rank 0's choice is broadcast, so every rank keys its roots the same way.
fn job_id(cfg: &Config, comm: &Comm) -> Result<String> {
    let local = match (&cfg.job_id, std::env::var("SLURM_JOB_ID")) {
        (Some(id), _) => id.clone(),
        (None, Ok(id)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("slurm-{id}")
        }
        _ => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("gen-{secs}-{}", std::process::id())
        }
    };
    let bytes = comm.bcast_bytes(0, local.as_bytes())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Checks that every rank passed the same arguments to the collective call `call` (one
/// allgather): `name` and `numbers` (sizes, reserves) must be the same everywhere. Ranks that
/// passed different ones would otherwise go on with different catalogs or mappings; every
/// rank gets an error naming the ranks that differ from rank 0 and its own arguments.
pub(crate) fn same_arguments(comm: &Comm, call: &str, name: &str, numbers: &[u64]) -> Result<()> {
    let mut words = vec![
        u64::from(crc32c::crc32c(name.as_bytes())),
        name.len() as u64,
    ];
    words.extend_from_slice(numbers);
    let all = comm.allgather_words(&words)?;
    let n = words.len();
    let differ: Vec<String> = all
        .chunks_exact(n)
        .enumerate()
        .filter(|(_, w)| *w != &all[..n])
        .map(|(r, _)| r.to_string())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::Argument(format!(
        "{call} is collective, and every rank must pass the same arguments: rank{} {} passed others than rank 0 (this rank, {}, passed {name:?} and {numbers:?}); nothing was done",
        if differ.len() == 1 { "" } else { "s" },
        differ.join(", "),
        comm.rank()
    )))
}

/// Makes a local result collective: if any rank failed, every rank fails. The failing rank
/// returns its own error; the others return an error that quotes it.
pub(crate) fn agree<T>(comm: &Comm, local: Result<T>) -> Result<T> {
    // One small collective when every rank succeeded (the common case); the messages are
    // gathered only when one failed.
    let failed = comm.allreduce_u64(u64::from(local.is_err()), ReduceOp::Sum)?;
    if failed == 0 {
        return local;
    }
    Err(failure(comm, local.map(|_| ())))
}

/// [`agree`] on a local result, then every rank's words, in one round of collectives: the
/// agreement rides on the exchange's length words.
pub(crate) fn agree_gather(comm: &Comm, local: Result<Vec<u64>>) -> Result<Vec<Vec<u64>>> {
    match comm.allgather_u64s_unless_failed(local.as_deref().ok())? {
        Some(all) => Ok(all),
        None => Err(failure(comm, local.map(|_| ()))),
    }
}

/// After an agreement found that some rank failed: every rank learns the first failing rank's
/// message (collective). The failing rank returns its own error.
fn failure(comm: &Comm, local: Result<()>) -> Error {
    // A failing rank always sends a non-empty message, so that the others can name it.
    let message = match &local {
        Ok(_) => String::new(),
        Err(e) => format!("{e} "),
    };
    let all = match comm.allgather_bytes(message.as_bytes()) {
        Ok(all) => all,
        Err(e) => return e,
    };
    if let Err(e) = local {
        return e;
    }
    let (rank, message) = all
        .iter()
        .enumerate()
        .find(|(_, m)| !m.is_empty())
        .map(|(r, m)| (r, String::from_utf8_lossy(m).trim_end().to_string()))
        .unwrap_or_default();
    Error::Remote { rank, message }
}

impl Psls {
    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The job id that keys the node roots.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The id of the node this rank runs on.
    pub fn node(&self) -> usize {
        self.node_map.node_of(self.rank)
    }

    /// The rank → node map.
    pub fn node_map(&self) -> &NodeMap {
        &self.node_map
    }

    /// Where the node names came from.
    pub fn node_source(&self) -> NodeSource {
        self.node_source
    }

    /// The buddy ring over the live nodes.
    pub fn buddy_ring(&self) -> &BuddyRing {
        &self.ring
    }

    /// This node's memory root (tmpfs).
    pub fn memory_root(&self) -> &Path {
        &self.memory_root
    }

    /// This node's disk root.
    pub fn disk_root(&self) -> &Path {
        &self.disk_root
    }

    /// What hwloc reported for `node`.
    pub fn node_resources(&self, node: usize) -> NodeResources {
        self.resources[node]
    }

    /// The CPU this rank is bound to, when binding is on.
    pub fn binding(&self) -> Option<&str> {
        self.binding.as_deref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The MPI library's version line.
    pub fn mpi_library(&self) -> &str {
        &self.mpi_library
    }

    /// A new duplicate of `MPI_COMM_WORLD` (collective), e.g. for windows of the application's
    /// own. The runtime's own traffic never uses it.
    pub fn dup_comm(&self) -> Result<Comm> {
        self.comm.dup()
    }

    /// A barrier over every rank, on the runtime's communicator. It waits politely (yields,
    /// then short sleeps of at most `service_max_sleep` capped at 50 µs) instead of busy-polling
    /// like `MPI_Barrier`, so that on an oversubscribed node the ranks still working get the
    /// CPU for their page faults.
    pub fn barrier(&self) -> Result<()> {
        let cap = self
            .cfg
            .service_max_sleep
            .min(std::time::Duration::from_micros(50));
        self.comm.polite_barrier(cap)
    }

    /// A human-readable description of the node map and the buddy ring.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let m = &self.node_map;
        let _ = writeln!(
            s,
            "job {}: {} ranks on {} nodes ({:?})",
            self.job_id,
            self.size,
            m.num_nodes(),
            self.node_source
        );
        for n in 0..m.num_nodes() {
            let ranks: Vec<String> = m.ranks_on(n).iter().map(|r| r.to_string()).collect();
            let res = self.resources[n];
            let buddy = self
                .ring
                .buddy(n)
                .map(|b| m.name(b).to_string())
                .unwrap_or_else(|| "none".into());
            let _ = writeln!(
                s,
                "  node {n} {:<10} ranks [{}]  buddy {:<10} {} cores, {} PUs, {:.1} GiB (hwloc), {:.1} GiB (kernel)",
                m.name(n),
                ranks.join(","),
                buddy,
                res.cores,
                res.pus,
                res.memory_bytes as f64 / (1u64 << 30) as f64,
                res.os_memory_bytes as f64 / (1u64 << 30) as f64
            );
        }
        let ring: Vec<&str> = self.ring.nodes().iter().map(|&n| m.name(n)).collect();
        let _ = write!(
            s,
            "  buddy ring: {} -> {}",
            ring.join(" -> "),
            ring.first().copied().unwrap_or("")
        );
        if !self.spares.is_empty() {
            let _ = write!(s, "\n  spares: {}", self.spares.join(", "));
        }
        s
    }

    /// The spare nodes of the view: waiting to take a lost node's place at a restart (the
    /// launcher's `--spares`, passed as `PSLS_SPARES`).
    pub fn spares(&self) -> &[String] {
        &self.spares
    }

    /// Stops the runtime (collective): a final barrier, then everything `init` started is
    /// released, and MPI is finalized if `init` initialized it.
    pub fn finalize(self) -> Result<()> {
        // After this barrier no rank touches global memory, so no fault needs serving.
        self.comm.barrier()?;
        let s = self.svm.stats();
        tracing::info!(
            target: "psls::svm",
            "rank {}: {} read faults, {} write faults ({} served locally), {} fetches ({} prefetched, {} bytes), {} untouched pages claimed for writing, {} invalidations sent, {} received, {} downgrades, {} recovery frames copied out",
            self.rank, s.read_faults, s.write_faults, s.local_upgrades, s.fetches, s.prefetches, s.bytes_moved, s.claimed, s.invalidations_sent, s.invalidations_received, s.downgrades, s.copied_on_write
        );
        // Finished normally: the job will not restart, so its checkpoints go.
        self.remove_permanent_checkpoint()?;
        let Psls {
            mut svm,
            ckpt,
            locks,
            comm,
            mpi,
            ..
        } = self;
        svm.shutdown();
        drop(locks);
        drop(svm);
        // Finished normally: the job will not restart, so its checkpoint set goes.
        ckpt.remove_files();
        drop(ckpt);
        drop(comm);
        drop(mpi);
        Ok(())
    }

    /// Whether `init` started MPI (and so finalize will stop it).
    pub fn owns_mpi(&self) -> bool {
        self.mpi.started_mpi()
    }
}
