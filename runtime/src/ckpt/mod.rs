//! `ckpt`: coordinated checkpoints of the whole job (paper, section 3), and the restart.
//!
//! Built so far: the **memory checkpoint** (section 3.1) of volatile arrays, mapped pages and
//! registered private state, with two-phase commit, and the rollback of a restarted job
//! (section 3.3, transient failures: every rank killed, the same command run again on the same
//! nodes). The SVM side (page states, copy-on-write, replicas, rollback of pages) is in
//! `svm/checkpoint.rs`; the files that keep the copies are in [`area`]. Not built yet: the
//! permanent (cleaner) checkpoint and its five cleaning policies, the memory budget, node loss.
//!
//! **The checkpoint set.** A job's frames and recovery copies live in `ckpt-NAME/NODE/` under the
//! memory base (tmpfs), where NAME is `PSLS_CKPT_NAME`, or the program's file name and the rank
//! count (`mgs-4r`). A run that finds a committed checkpoint there restarts from it; a run that
//! finalizes normally removes its files, so running the command again after a success starts
//! afresh. A lock file per rank refuses a second job with the same name while the first runs.

pub(crate) mod area;

use crate::error::{Error, Result};
use crate::rma::Comm;
use crate::sys::global::Pod;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The two levels of checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Two recovery copies of each page modified since the last checkpoint, in the memories of
    /// two nodes; no disk access.
    Memory,
    /// The cleaner (paper, section 3.2): every modified page of mapped files and volatile
    /// arrays, and the private state, written to the mirrored disks in one atomic PFS epoch;
    /// it alone survives a power cut. Then memory is cleaned under the configured policy.
    Permanent,
}

/// What a permanent checkpoint leaves in memory: the paper's five cleaning policies (section
/// 3.2, "Cleaner strategies"). In every policy the pure recovery copies are discarded (the
/// disks now hold the checkpoint), and a copy that stays is clean (equal to the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleaning {
    /// `none`: no active and no readable recovery copy is discarded; the working set stays.
    NoCleaning,
    /// `total`: every active and readable recovery copy is evicted; pages load from the disks
    /// again on their next use.
    TotalCleaning,
    /// `keep-dirty-and-recovery`: one copy of each clean page; two readable recovery copies of
    /// each dirty active page (where a second copy on another node exists); and the readable
    /// recovery copies of the pages checkpointed in memory before.
    KeepDirtyAndRecovery,
    /// `keep-dirty`: one copy of each clean page and two readable recovery copies of each dirty
    /// active page; the readable recovery copies of earlier checkpoints are discarded.
    KeepDirty,
    /// `one-active`: one active copy of each loaded page, and the readable recovery copies of
    /// earlier checkpoints.
    OneActive,
}

impl Cleaning {
    /// The policy named `name` (as in `PSLS_CKPT_CLEANING`).
    pub fn from_name(name: &str) -> Option<Cleaning> {
        Some(match name {
            "none" => Cleaning::NoCleaning,
            "total" => Cleaning::TotalCleaning,
            "keep-dirty-and-recovery" => Cleaning::KeepDirtyAndRecovery,
            "keep-dirty" => Cleaning::KeepDirty,
            "one-active" => Cleaning::OneActive,
            _ => return None,
        })
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            Cleaning::NoCleaning => "none",
            Cleaning::TotalCleaning => "total",
            Cleaning::KeepDirtyAndRecovery => "keep-dirty-and-recovery",
            Cleaning::KeepDirty => "keep-dirty",
            Cleaning::OneActive => "one-active",
        }
    }
}

/// The memory budget of a node (`PSLS_CKPT_MEMORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// This many bytes.
    Bytes(u64),
    /// This share of the node's memory (the smaller of hwloc's and the kernel's figures).
    Percent(u32),
}

impl Budget {
    /// The budget in bytes for a node with `memory` bytes.
    pub fn bytes(self, memory: u64) -> u64 {
        match self {
            Budget::Bytes(b) => b,
            Budget::Percent(p) => memory / 100 * u64::from(p),
        }
    }
}

/// What cleaning left in memory, over the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanCounts {
    /// Copies kept as active data.
    pub active: u64,
    /// Copies kept as readable recovery copies of the new checkpoint.
    pub readable: u64,
    /// Copies evicted.
    pub evicted: u64,
    /// Pure recovery copies and replicas discarded.
    pub discarded: u64,
}

/// What one checkpoint did, summed over the job (the times are this rank's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointStats {
    /// The checkpoint's epoch (1, 2, …).
    pub epoch: u64,
    /// Its kind.
    pub kind: CheckpointKind,
    /// Phase 1: creating the pre-recovery copies, and saving the private state.
    pub phase1: Duration,
    /// The vote and the commit.
    pub commit: Duration,
    /// Phase 2 (local): pre-recovery copies become readable, old copies are freed.
    pub phase2: Duration,
    /// Pages checkpointed (written since the last checkpoint), over the job.
    pub pages: u64,
    /// Bytes of those pages.
    pub bytes: u64,
    /// Bytes sent to buddy nodes, over the job.
    pub bytes_transferred: u64,
    /// Pages checkpointed by turning two existing copies on two nodes into recovery copies,
    /// with no transfer, over the job.
    pub pages_reused: u64,
    /// Recovery copies of earlier checkpoints freed in phase 2, over the job.
    pub copies_freed: u64,
    /// Bytes of recovery copies kept in slots (replicas and pure recovery copies) after the
    /// checkpoint, over the job; recovery frames are not counted, since they are the
    /// application's own pages.
    pub slot_bytes: u64,
    /// Bytes of private state saved by this rank.
    pub private_bytes: u64,
    /// For a permanent checkpoint: the PFS epoch that holds it (0 for a memory checkpoint).
    pub pfs_epoch: u64,
    /// For a permanent checkpoint: what cleaning left in memory.
    pub cleaned: CleanCounts,
}

/// Private state of one rank, registered with [`crate::Psls::protect`]: saved at every
/// checkpoint and given back after a restart.
pub struct Protected<T: Pod> {
    value: Arc<Mutex<T>>,
}

impl<T: Pod> std::fmt::Debug for Protected<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protected<{}>", std::any::type_name::<T>())
    }
}

impl<T: Pod> Protected<T> {
    /// The current value.
    pub fn get(&self) -> T {
        *self.lock()
    }

    /// Replaces the value.
    pub fn set(&self, v: T) {
        *self.lock() = v;
    }

    /// The value, for reading and writing in place.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A byte region of private state of one rank, registered with [`crate::Psls::protect_bytes`].
pub struct ProtectedBytes {
    value: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for ProtectedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProtectedBytes({} bytes)", self.lock().len())
    }
}

impl ProtectedBytes {
    /// A copy of the bytes.
    pub fn get(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Replaces the bytes (any length).
    pub fn set(&self, v: &[u8]) {
        *self.lock() = v.to_vec();
    }

    /// The bytes, for reading and writing in place.
    pub fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Snapshot for Mutex<Vec<u8>> {
    fn bytes(&self) -> Vec<u8> {
        self.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A registered piece of private state, as bytes.
trait Snapshot: Send + Sync {
    fn bytes(&self) -> Vec<u8>;
}

/// Private state in the application's own memory (see [`Checkpointer::protect_region`]).
struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is plain bytes that `protect_region`'s caller keeps valid; the runtime
// only reads it during a checkpoint, which the application is inside of.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Snapshot for Region {
    fn bytes(&self) -> Vec<u8> {
        // SAFETY: see protect_region's contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }
}

impl<T: Pod> Snapshot for Mutex<T> {
    fn bytes(&self) -> Vec<u8> {
        let v = *self.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: T is Pod: no padding, so all size_of::<T>() bytes of v are initialized.
        unsafe {
            std::slice::from_raw_parts((&v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }
}

/// The checkpoint state of one rank.
pub(crate) struct Checkpointer {
    set: String,
    dir: PathBuf,
    rank: usize,
    _lock: File,
    restarted_from: Option<u64>,
    /// Registered private state, in registration order.
    private: Mutex<Vec<(String, Arc<dyn Snapshot>)>>,
    /// Private state saved by the checkpoint a restart rolled back to.
    restored_private: Mutex<HashMap<String, Vec<u8>>>,
    last: Mutex<Option<CheckpointStats>>,
    /// Calls of `checkpoint()` so far.
    calls: std::sync::atomic::AtomicU64,
    /// When the last permanent checkpoint was taken (or the job started).
    last_permanent: Mutex<std::time::Instant>,
    /// The arrays a permanent checkpoint saved, by allocation serial: their hidden files.
    saved_arrays: HashMap<u64, String>,
    /// The ranks of another node whose private state this rank keeps a copy of (in its
    /// directory), as of the last save.
    kept: Mutex<Vec<usize>>,
    /// The encoded private state a restart loaded, until it is saved again on the buddy node.
    loaded: Vec<u8>,
    /// Where this rank's hint file lives (the set's directory under the node's disk base).
    hint_dir: Option<PathBuf>,
    /// After a restart from the permanent checkpoint with `PSLS_RESTART_PREFETCH`: the pages
    /// this rank held after that checkpoint's cleaning, as sorted ranges.
    prefetch: Vec<(usize, usize)>,
    /// The array layout of the checkpoint a restart came from: serial -> (first page, pages).
    saved_layout: HashMap<u64, (usize, usize)>,
    /// This run's geometry, recorded with the private state of every checkpoint.
    geometry: area::Geometry,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Checkpointer {{ set: {:?}, dir: {:?} }}",
            self.set, self.dir
        )
    }
}

/// The checkpoint set's name: configured, else the program's file name and the rank count.
pub(crate) fn set_name(configured: Option<&str>, ranks: usize) -> String {
    if let Some(n) = configured {
        return n.to_string();
    }
    let prog = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "psls".into());
    let clean: String = prog
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let clean = clean.trim_start_matches('.');
    format!("{}-{ranks}r", if clean.is_empty() { "psls" } else { clean })
}

/// Takes this rank's lock file in the checkpoint directory, so that two running jobs never
/// share a checkpoint set.
pub(crate) fn take_lock(dir: &Path, rank: usize, set: &str) -> Result<File> {
    let path = dir.join(format!("lock.rank{rank}"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on a valid fd.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        return Err(Error::Checkpoint(format!(
            "checkpoint set {set:?} ({}) is in use by another running job: two runs of one program with the same number of ranks share a checkpoint set; give each its own name with PSLS_CKPT_NAME",
            dir.display()
        )));
    }
    Ok(f)
}

/// The entry of the saved private state that holds the array layout.
const ARRAYS_ENTRY: &str = "psls.arrays";

/// The entry of the saved private state that holds the geometry the checkpoint was taken with:
/// ranks, page size, pages in the global range, its base address.
const GEOMETRY_ENTRY: &str = "psls.geometry";

/// The first bytes of a private-state file (and of a rank's state in the permanent checkpoint).
const PRIVATE_MAGIC: [u8; 8] = *b"PSLSPRIV";
/// The format of the framed private state this runtime writes and reads.
const PRIVATE_FORMAT: u32 = 1;
/// The frame's header: magic (8 bytes), format (4), payload length (8), crc32c of the payload
/// (4), little-endian.
const PRIVATE_HEADER: usize = 24;

/// Frames encoded private state so that a copy checks itself: an empty, short, torn or
/// overwritten copy is told from a good one (an empty payload is not an empty state).
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRIVATE_HEADER + payload.len());
    out.extend(PRIVATE_MAGIC);
    out.extend(PRIVATE_FORMAT.to_le_bytes());
    out.extend((payload.len() as u64).to_le_bytes());
    out.extend(crc32c::crc32c(payload).to_le_bytes());
    out.extend(payload);
    out
}

/// The payload of a sealed copy, or why the copy is unusable.
fn unseal(b: &[u8]) -> std::result::Result<&[u8], String> {
    if b.is_empty() {
        return Err("it is empty".into());
    }
    let Some((head, payload)) = b.split_first_chunk::<PRIVATE_HEADER>() else {
        return Err(format!(
            "it is {} bytes long, shorter than its {PRIVATE_HEADER}-byte header",
            b.len()
        ));
    };
    let word = |r: std::ops::Range<usize>| {
        head[r]
            .iter()
            .rev()
            .fold(0u64, |acc, &x| acc << 8 | u64::from(x))
    };
    if head[..8] != PRIVATE_MAGIC {
        return Err("it does not start with a private-state header".into());
    }
    if word(8..12) != u64::from(PRIVATE_FORMAT) {
        return Err(format!(
            "it has format {}, and this PSLS reads format {PRIVATE_FORMAT}",
            word(8..12)
        ));
    }
    if word(12..20) != payload.len() as u64 {
        return Err(format!(
            "its header says {} bytes of state, and it holds {}",
            word(12..20),
            payload.len()
        ));
    }
    if word(20..24) != u64::from(crc32c::crc32c(payload)) {
        return Err("its checksum does not match its contents".into());
    }
    Ok(payload)
}

/// The private state in a sealed copy, or why the copy is unusable.
fn open_private(b: &[u8]) -> std::result::Result<HashMap<String, Vec<u8>>, String> {
    decode_private(unseal(b)?).ok_or_else(|| "its contents do not decode".to_string())
}

/// The geometry recorded in decoded private state, if any: (ranks, page size, pages, base).
fn recorded_geometry(map: &HashMap<String, Vec<u8>>) -> Option<area::Geometry> {
    let w: Vec<u64> = map
        .get(GEOMETRY_ENTRY)?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let &[ranks, page_size, npages, base] = w.as_slice() else {
        return None;
    };
    Some(area::Geometry {
        page_size: page_size as usize,
        npages: npages as usize,
        ranks: ranks as usize,
        base: base as usize,
    })
}

/// Checks the permanent checkpoint `pc` of set `set` against this run's geometry, at `init`
/// (before anything is restored): a restart with another rank count, page size or global range
/// would map the arrays' files wrongly and ask for ranks that are not there, so it is refused
/// with the settings of both. The rank count is the number of ranks whose private state the
/// checkpoint keeps; the rest is recorded in that state (a checkpoint written before it was
/// recorded is checked for its rank count only).
pub(crate) fn check_permanent(
    set: &str,
    pc: &crate::pfs::PermanentCheckpoint,
    geo: area::Geometry,
) -> Result<()> {
    let recorded = pc
        .private
        .iter()
        .find_map(|b| open_private(b).ok().as_ref().and_then(recorded_geometry));
    let then = area::Geometry {
        ranks: pc.private.len(),
        ..recorded.unwrap_or(geo)
    };
    if then == geo {
        return Ok(());
    }
    let pages = |g: area::Geometry| {
        format!(
            "{} ranks, pages of {} bytes and a global range of {} pages at {:#x}",
            g.ranks, g.page_size, g.npages, g.base
        )
    };
    Err(Error::Checkpoint(format!(
        "permanent checkpoint {} of set {set:?} was taken with {}; this run has {}. Restart it with the settings it was taken with (the same number of ranks, and PSLS_PAGE_SIZE, PSLS_SVM_BASE, PSLS_SVM_SIZE as then), or give this run another PSLS_CKPT_NAME to start afresh beside it, or remove the set (a run with its settings that finishes normally removes it)",
        pc.epoch,
        pages(then),
        pages(geo)
    )))
}

fn private_path(dir: &Path, rank: usize, epoch: u64) -> PathBuf {
    dir.join(format!("private.rank{rank}.e{epoch}"))
}

/// Writes `bytes` to `path` whole: to a temporary file, renamed into place.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Sorted pages as runs `[start, end)`.
fn runs(pages: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((_, e)) if *e == p => *e += 1,
            _ => out.push((p, p + 1)),
        }
    }
    out
}

fn encode_private(items: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in items {
        out.extend((name.len() as u64).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend((bytes.len() as u64).to_le_bytes());
        out.extend(bytes);
    }
    out
}

/// Takes one length-prefixed field off the front of `b`.
fn take_field<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let rest: &'a [u8] = b;
    let n = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
    let v = rest.get(8..8usize.checked_add(n)?)?;
    *b = &rest[8 + n..];
    Some(v)
}

fn decode_private(mut b: &[u8]) -> Option<HashMap<String, Vec<u8>>> {
    let mut out = HashMap::new();
    while !b.is_empty() {
        let name = String::from_utf8(take_field(&mut b)?.to_vec()).ok()?;
        let bytes = take_field(&mut b)?.to_vec();
        out.insert(name, bytes);
    }
    Some(out)
}

impl Checkpointer {
    /// The checkpointer of `rank`, holding the set's lock, in a run of geometry `geometry`.
    pub fn new(
        set: String,
        dir: PathBuf,
        rank: usize,
        lock: File,
        geometry: area::Geometry,
    ) -> Checkpointer {
        Checkpointer {
            geometry,
            set,
            dir,
            rank,
            _lock: lock,
            restarted_from: None,
            private: Mutex::new(Vec::new()),
            restored_private: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
            calls: std::sync::atomic::AtomicU64::new(0),
            last_permanent: Mutex::new(std::time::Instant::now()),
            saved_arrays: HashMap::new(),
            saved_layout: HashMap::new(),
            kept: Mutex::new(Vec::new()),
            loaded: Vec::new(),
            hint_dir: None,
            prefetch: Vec::new(),
        }
    }

    /// Counts a call of `checkpoint()`, and says whether it should be permanent: every
    /// `every`-th call, or once `interval` has passed since the last permanent one (this
    /// rank's view; the caller makes the choice collective).
    pub fn permanent_due(&self, every: u64, interval: Duration) -> bool {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let by_count = every > 0 && n % every == 0;
        let by_time = !interval.is_zero()
            && self
                .last_permanent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                >= interval;
        by_count || by_time
    }

    /// Keeps this rank's hint file (the pages it held after the last permanent checkpoint) in
    /// `dir`, on the node's disk.
    pub fn set_hint_dir(&mut self, dir: PathBuf) {
        self.hint_dir = Some(dir);
    }

    fn hint_path(&self) -> Option<PathBuf> {
        Some(
            self.hint_dir
                .as_ref()?
                .join(format!("active.rank{}", self.rank)),
        )
    }

    /// Writes the hint file after permanent checkpoint `epoch`: the pages this rank holds now
    /// that the cleaning policy chose what stays in memory. It is a hint (a restart with
    /// `PSLS_RESTART_PREFETCH` loads those pages early): a failure to write it is logged only.
    pub fn save_hint(&self, epoch: u64, held: &[usize]) {
        let Some(path) = self.hint_path() else {
            return;
        };
        let mut words = vec![epoch];
        for r in runs(held) {
            words.extend([r.0 as u64, r.1 as u64]);
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        if let Err(e) = write_whole(&path, &bytes) {
            tracing::warn!(target: "psls::ckpt", "rank {}: cannot write the restart hint: {e}", self.rank);
        }
    }

    /// Reads the hint file of permanent checkpoint `epoch`, for the prefetch after a restart
    /// from it. Returns the pages it names (0 when there is no hint for that epoch).
    pub fn load_hint(&mut self, epoch: u64) -> usize {
        let words: Vec<u64> = self
            .hint_path()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| {
                b.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            })
            .unwrap_or_default();
        if words.first() != Some(&epoch) {
            return 0;
        }
        self.prefetch = words[1..]
            .chunks_exact(2)
            .map(|w| (w[0] as usize, w[1] as usize))
            .filter(|&(a, b)| a < b)
            .collect();
        self.prefetch.iter().map(|(a, b)| b - a).sum()
    }

    /// The pages of `first..first + pages` to load early after a restart (see [`load_hint`]).
    ///
    /// [`load_hint`]: Checkpointer::load_hint
    pub fn prefetch_in(&self, first: usize, pages: usize) -> Vec<usize> {
        let end = first + pages;
        self.prefetch
            .iter()
            .filter(|&&(a, b)| a < end && b > first)
            .flat_map(|&(a, b)| a.max(first)..b.min(end))
            .collect()
    }

    /// Calls of `checkpoint()` in this run so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that a permanent checkpoint was just taken.
    pub fn permanent_taken(&self) {
        *self
            .last_permanent
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// The epoch below which no new checkpoint may be numbered: the one a restart came from.
    pub fn epoch_floor(&self) -> u64 {
        self.restarted_from.unwrap_or(0)
    }

    /// Remembers the arrays of the permanent checkpoint `pc` (a restarted job allocates them
    /// again and gets their hidden files back).
    pub fn set_saved_arrays(&mut self, pc: &crate::pfs::PermanentCheckpoint) {
        self.saved_arrays = pc.arrays.iter().cloned().collect();
    }

    /// The hidden file of the array allocated `serial`-th, if a permanent checkpoint saved it.
    pub fn saved_array(&self, serial: u64) -> Option<String> {
        self.saved_arrays.get(&serial).cloned()
    }

    /// Restores the private state that permanent checkpoint `epoch` saved for this rank.
    pub fn load_private_from(&mut self, epoch: u64, bytes: &[u8]) -> Result<()> {
        let map = open_private(bytes).map_err(|why| {
            Error::Checkpoint(format!(
                "the private state of rank {} in permanent checkpoint {epoch} of set {:?} (in the PFS catalog) is unusable: {why}; give this run another PSLS_CKPT_NAME to start afresh",
                self.rank, self.set
            ))
        })?;
        self.install_private(epoch, map);
        Ok(())
    }

    /// Makes `map` the private state a restart from `epoch` gives back.
    fn install_private(&mut self, epoch: u64, map: HashMap<String, Vec<u8>>) {
        *self
            .restored_private
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = map;
        self.restarted_from = Some(epoch);
        self.take_layout();
    }

    /// This rank's private state, encoded and sealed, as it is now, with the layout of the live
    /// arrays (allocation serial, first page, pages), which a restart checks its allocations
    /// against, and the run's geometry, which a restart from the disks checks its own against.
    pub fn encode_private(&self, arrays: &[(u64, usize, usize)]) -> Vec<u8> {
        let mut items: Vec<(String, Vec<u8>)> = self
            .private
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, s)| (n.clone(), s.bytes()))
            .collect();
        let layout: Vec<u8> = arrays
            .iter()
            .flat_map(|&(s, f, n)| [s, f as u64, n as u64])
            .flat_map(u64::to_le_bytes)
            .collect();
        items.push((ARRAYS_ENTRY.to_string(), layout));
        let g = self.geometry;
        let geometry = [g.ranks, g.page_size, g.npages, g.base]
            .into_iter()
            .flat_map(|w| (w as u64).to_le_bytes())
            .collect();
        items.push((GEOMETRY_ENTRY.to_string(), geometry));
        seal(&encode_private(&items))
    }

    /// Takes the array layout out of restored private state.
    fn take_layout(&mut self) {
        let mut map = self
            .restored_private
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(GEOMETRY_ENTRY);
        if let Some(b) = map.remove(ARRAYS_ENTRY) {
            let w: Vec<u64> = b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            self.saved_layout = w
                .chunks_exact(3)
                .map(|t| (t[0], (t[1] as usize, t[2] as usize)))
                .collect();
        }
    }

    /// Checks an allocation of a restarted job against the checkpoint: the `serial`-th array
    /// must get the pages it had.
    pub fn check_array(&self, serial: u64, first: usize, pages: usize) -> Result<()> {
        match self.saved_layout.get(&serial) {
            Some(&(f, n)) if (f, n) != (first, pages) => Err(Error::Checkpoint(format!(
                "this run restarted from checkpoint {} of set {:?}, but its global allocation number {serial} asks for {pages} pages where the checkpoint's had {n}: a restarted job must allocate the same arrays in the same order, so run the same program with the same arguments (or give this run another PSLS_CKPT_NAME, or remove the checkpoint set to start afresh)",
                self.restarted_from.unwrap_or(0),
                self.set
            ))),
            _ => Ok(()),
        }
    }

    /// The checkpoint set's name.
    pub fn set(&self) -> &str {
        &self.set
    }

    /// The epoch a restart rolled back to.
    pub fn restarted_from(&self) -> Option<u64> {
        self.restarted_from
    }

    /// Loads the private state saved by checkpoint `epoch`, after a restart (collective): from
    /// this node, or, when this node's copy is unusable (missing: the node's memory was lost, a
    /// reboot or a spare in a lost node's place; or empty, short, or failing its check), from the
    /// copy the buddy node keeps. Fails only when no copy is usable (the caller agrees on it).
    pub fn load_private(&mut self, comm: &Comm, epoch: u64) -> Result<()> {
        let path = private_path(&self.dir, self.rank, epoch);
        let own = match std::fs::read(&path) {
            Ok(b) => open_private(&b).map(|m| (b, m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("it is missing".into()),
            Err(e) => Err(format!("it cannot be read: {e}")),
        };
        // Every rank takes part in the exchanges, whatever it found.
        let needs = comm.allgather_u64s(&[u64::from(own.is_err())])?;
        let needy: Vec<usize> = (0..needs.len())
            .filter(|&r| needs[r].first() == Some(&1))
            .collect();
        let mut copies: Vec<(String, Vec<u8>)> = Vec::new();
        if !needy.is_empty() {
            // Offer every copy this node has of a needy rank's state, good or not: the rank
            // checks them, and names those it cannot use.
            let mut offer = Vec::new();
            for &r in needy.iter().filter(|&&r| r != self.rank) {
                let p = private_path(&self.dir, r, epoch);
                if let Ok(b) = std::fs::read(&p) {
                    let name = p.display().to_string();
                    offer.extend((r as u64).to_le_bytes());
                    offer.extend((name.len() as u64).to_le_bytes());
                    offer.extend(name.as_bytes());
                    offer.extend((b.len() as u64).to_le_bytes());
                    offer.extend(b);
                }
            }
            let offers = comm.allgather_bytes(&offer)?;
            let own_name = path.display().to_string();
            for mut o in offers.iter().map(Vec::as_slice) {
                while let Some((r, rest)) = o.split_first_chunk::<8>() {
                    o = rest;
                    let (Some(name), Some(b)) = (take_field(&mut o), take_field(&mut o)) else {
                        break;
                    };
                    let name = String::from_utf8_lossy(name).into_owned();
                    if u64::from_le_bytes(*r) == self.rank as u64
                        && name != own_name
                        && !copies.iter().any(|(n, _)| *n == name)
                    {
                        copies.push((name, b.to_vec()));
                    }
                }
            }
        }
        let (bytes, map) = match own {
            Ok(v) => v,
            Err(why) => {
                let mut unusable = vec![format!("{} ({why})", path.display())];
                let mut good = None;
                for (name, b) in copies {
                    match open_private(&b) {
                        Ok(m) => {
                            good = Some((name, b, m));
                            break;
                        }
                        Err(w) => unusable.push(format!("{name} ({w})")),
                    }
                }
                let Some((name, b, m)) = good else {
                    let others = if unusable.len() > 1 {
                        ""
                    } else {
                        ", and no other node of the job keeps a copy"
                    };
                    return Err(Error::Checkpoint(format!(
                        "the private state of rank {} for checkpoint {epoch} of set {:?} has no usable copy: {}{others}. The job cannot be restored from this checkpoint; remove the ckpt-{} directories under the memory base ({}) to start afresh (or from the permanent checkpoint, if the set has one)",
                        self.rank,
                        self.set,
                        unusable.join(", "),
                        self.set,
                        self.dir
                            .parent()
                            .and_then(Path::parent)
                            .unwrap_or(&self.dir)
                            .display()
                    )));
                };
                tracing::warn!(target: "psls::ckpt", "rank {}: {} cannot be used ({why}): restoring the private state of checkpoint {epoch} from the buddy node's copy {name}", self.rank, path.display());
                (b, m)
            }
        };
        self.install_private(epoch, map);
        self.loaded = bytes;
        Ok(())
    }

    /// Saves the private state a restart loaded again, here and on the buddy node (collective),
    /// so that it has two copies on two nodes again before the job goes on.
    pub fn replicate_loaded(&mut self, comm: &Comm, keeper: usize) -> Result<()> {
        let Some(epoch) = self.restarted_from else {
            return Ok(());
        };
        let bytes = std::mem::take(&mut self.loaded);
        self.store_private(comm, keeper, epoch, &bytes)
    }

    /// Registers private state `name` with its initial value, or, after a restart, the value
    /// the checkpoint saved.
    pub fn protect<T: Pod>(&self, name: &str, init: T) -> Result<Protected<T>> {
        let mut value = init;
        let reg = self.register(name, |saved| {
            if saved.len() != std::mem::size_of::<T>() {
                return Err(Error::Checkpoint(format!(
                    "private state {name:?} of rank {} was saved with {} bytes, and is now registered with a type of {} bytes: register it with the type it had",
                    self.rank,
                    saved.len(),
                    std::mem::size_of::<T>()
                )));
            }
            // SAFETY: T is Pod, so any bytes of its size are a valid T; the sizes match.
            value = unsafe { std::ptr::read_unaligned(saved.as_ptr().cast::<T>()) };
            Ok(())
        })?;
        let cell = Arc::new(Mutex::new(value));
        reg(cell.clone());
        Ok(Protected { value: cell })
    }

    /// Registers a byte region of private state under `name`, like [`Checkpointer::protect`];
    /// after a restart it holds the saved bytes (whatever their length) instead of `init`.
    pub fn protect_bytes(&self, name: &str, init: Vec<u8>) -> Result<ProtectedBytes> {
        let mut value = init;
        let reg = self.register(name, |saved| {
            value = saved;
            Ok(())
        })?;
        let cell = Arc::new(Mutex::new(value));
        reg(cell.clone());
        Ok(ProtectedBytes { value: cell })
    }

    /// Checks `name`, hands its saved bytes (after a restart) to `restore`, and returns the
    /// function that adds the value's cell to the registry.
    fn register(
        &self,
        name: &str,
        restore: impl FnOnce(Vec<u8>) -> Result<()>,
    ) -> Result<impl FnOnce(Arc<dyn Snapshot>) + '_> {
        if name.starts_with("psls.") {
            return Err(Error::Checkpoint(format!(
                "private state name {name:?}: names starting with \"psls.\" are the runtime's"
            )));
        }
        if self
            .private
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(n, _)| n == name)
        {
            return Err(Error::Checkpoint(format!(
                "private state {name:?} is registered twice on rank {}: give each piece its own name",
                self.rank
            )));
        }
        let saved = self
            .restored_private
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(saved) = saved {
            restore(saved)?;
        }
        let name = name.to_string();
        Ok(move |cell: Arc<dyn Snapshot>| {
            self.private
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name, cell));
        })
    }

    /// Registers `len` bytes of the application's own memory at `ptr` as private state `name`
    /// (the C and Fortran bindings' `psls_protect`): read at every checkpoint, and overwritten
    /// with the saved bytes now after a restart. A saved state of another length is an error.
    ///
    /// # Safety
    /// `ptr..ptr + len` must stay valid for reads and writes until finalize, and must not be
    /// written by another thread while a checkpoint runs.
    pub unsafe fn protect_region(&self, name: &str, ptr: *mut u8, len: usize) -> Result<()> {
        let push = self.register(name, |saved| {
            if saved.len() != len {
                return Err(Error::Checkpoint(format!(
                    "private state {name:?} was saved with {} bytes, and this run registers {len}: register it with the same size as the run that checkpointed",
                    saved.len()
                )));
            }
            // SAFETY: the caller vouches for ptr..ptr + len; saved has len bytes.
            unsafe { std::ptr::copy_nonoverlapping(saved.as_ptr(), ptr, len) };
            Ok(())
        })?;
        push(Arc::new(Region { ptr, len }));
        Ok(())
    }

    /// Saves the private state for checkpoint `epoch` (phase 1; collective): on this node, and
    /// on the buddy node, where rank `keeper` keeps the copy. Returns its size.
    pub fn save_private(
        &self,
        comm: &Comm,
        keeper: usize,
        epoch: u64,
        arrays: &[(u64, usize, usize)],
    ) -> Result<u64> {
        let bytes = self.encode_private(arrays);
        self.store_private(comm, keeper, epoch, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Writes `bytes` as this rank's private state of `epoch` here, sends them to `keeper`, and
    /// writes the copies this rank keeps for others (collective: every rank takes part in the
    /// exchange even when its own write failed). Each file is written whole, then renamed into
    /// place. The state is small (counters, a few buffers): an allgather carries it.
    fn store_private(&self, comm: &Comm, keeper: usize, epoch: u64, bytes: &[u8]) -> Result<()> {
        let own = write_whole(&private_path(&self.dir, self.rank, epoch), bytes);
        let mut msg = (keeper as u64).to_le_bytes().to_vec();
        msg.extend(bytes);
        let all = comm.allgather_bytes(&msg)?;
        own?;
        let mut kept = Vec::new();
        for (r, m) in all.iter().enumerate() {
            let Some((k, b)) = m.split_first_chunk::<8>() else {
                continue;
            };
            if r != self.rank && u64::from_le_bytes(*k) == self.rank as u64 {
                write_whole(&private_path(&self.dir, r, epoch), b)?;
                kept.push(r);
            }
        }
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = kept;
        Ok(())
    }

    /// Drops the private state of checkpoints other than `keep` from this node's directory
    /// (after `keep` committed, or when the checkpoint `keep + 1` was abandoned): this rank's
    /// own, the copies it keeps for ranks of other nodes, and any left by an earlier layout.
    /// Every rank of the node does it at the same point of the checkpoint, when no file of a
    /// later epoch can be being written.
    pub fn drop_private_except(&self, keep: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((_, ep)) = name
                .strip_prefix("private.rank")
                .and_then(|s| s.split_once(".e"))
            else {
                continue;
            };
            if ep.parse::<u64>().ok() != Some(keep) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Records the last checkpoint's figures.
    pub fn set_last(&self, s: CheckpointStats) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    /// The last checkpoint's figures.
    pub fn last(&self) -> Option<CheckpointStats> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes this rank's files from the checkpoint set (a normal finalize: the job will not
    /// need to restart), and the node's directory once it is empty.
    pub fn remove_files(&self) {
        let r = self.rank;
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mine = |n: &str| {
            n.ends_with(&format!(".rank{r}"))
                || n.starts_with(&format!("private.rank{r}."))
                || kept
                    .iter()
                    .any(|k| n.starts_with(&format!("private.rank{k}.")))
                || n == format!("slots.rank{r}.idx")
        };
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if mine(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Fails while other ranks of the node still have files there; the last one removes it.
        let _ = std::fs::remove_dir(&self.dir);
        if let (Some(hint), Some(dir)) = (self.hint_path(), &self.hint_dir) {
            let _ = std::fs::remove_file(hint);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_state_round_trips_and_rejects_damage() {
        let items = vec![
            ("iter".to_string(), 7u64.to_le_bytes().to_vec()),
            ("empty".to_string(), vec![]),
        ];
        let b = encode_private(&items);
        let m = decode_private(&b).unwrap();
        assert_eq!(m["iter"], 7u64.to_le_bytes());
        assert!(m["empty"].is_empty());
        assert!(decode_private(&b[..b.len() - 1]).is_none());
        assert!(decode_private(&[]).unwrap().is_empty());
    }

    #[test]
    fn sealed_private_state_checks_itself() {
        let items = vec![("iter".to_string(), 7u64.to_le_bytes().to_vec())];
        let b = seal(&encode_private(&items));
        assert_eq!(open_private(&b).unwrap()["iter"], 7u64.to_le_bytes());
        // An empty payload is a state with nothing in it only when the frame says so.
        assert!(open_private(&seal(&[])).unwrap().is_empty());
        // Missing, short, torn, flipped, overwritten: each is unusable, and says why.
        assert_eq!(open_private(&[]).unwrap_err(), "it is empty");
        assert!(open_private(&b[..10]).unwrap_err().contains("shorter than"));
        assert!(open_private(&b[..b.len() - 1])
            .unwrap_err()
            .contains("header says"));
        for i in [0, 9, 13, 21, PRIVATE_HEADER, b.len() - 1] {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(open_private(&d).is_err(), "bit flipped in byte {i}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(open_private(&longer).is_err());
        assert!(open_private(&encode_private(&items)).is_err(), "no frame");
    }

    #[test]
    fn the_geometry_recorded_with_private_state_comes_back() {
        let g = area::Geometry {
            page_size: 8192,
            npages: 1 << 20,
            ranks: 3,
            base: 0x7e00_0000_0000,
        };
        let words: Vec<u8> = [3u64, 8192, 1 << 20, 0x7e00_0000_0000]
            .into_iter()
            .flat_map(u64::to_le_bytes)
            .collect();
        let m = decode_private(&encode_private(&[(GEOMETRY_ENTRY.to_string(), words)])).unwrap();
        assert_eq!(recorded_geometry(&m), Some(g));
        assert_eq!(recorded_geometry(&HashMap::new()), None);
    }

    #[test]
    fn set_names_are_valid_directory_names() {
        assert_eq!(set_name(Some("run.1"), 4), "run.1");
        let n = set_name(None, 4);
        assert!(n.ends_with("-4r"));
        assert!(crate::config::valid_name(&n), "{n}");
    }
}
