//! The recovery area of one rank: the files in its node's checkpoint directory (a tmpfs memory
//! root) that hold this rank's recovery copies, so that they outlive a crash of the process.
//!
//! - `fstate.rankR`: one word per page of the global range, saying whether this rank's frame
//!   of the page is a recovery copy, and of which epoch (see [`CopyState`]). A frame that is a
//!   recovery copy is write-protected; the first write copies it out to a pure recovery slot
//!   (copy-on-write) and clears the word before the write proceeds.
//! - `slots.rankR`: page-sized slots for the recovery copies that are not frames: *pure
//!   recovery* copies moved out of frames, and the replicas that buddy nodes send here in
//!   phase 1 (MPI receives them straight into the slots). The file is an RMA window, whose
//!   lengths tell every rank every other rank's slot count.
//! - `slots.rankR.idx`: two words per slot: the page number + 1 (0: the slot is free), and the
//!   copy's state and epoch. A slot's data is always written before its index words, and its
//!   index is cleared before the slot is reused, so after a crash the index only names slots
//!   whose data is whole.
//! - `ckpt.rankR`: the record: format, geometry, and the last epoch this rank committed.
//!
//! Every update is a store into a shared file mapping: it survives a crash of the process (not
//! of the node; node loss is handled by the buddy's copy, and power cuts by the permanent
//! checkpoint). Aligned 8-byte stores cannot tear, so no checksum is needed at this level.

use crate::error::{Error, Result};
use crate::rma::{Comm, LockedWindow, Window};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The state of a recovery copy, as the paper names them (section 3.1).
// The names are the paper's, which the issue asks the code to use.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyState {
    /// Data of the checkpoint being taken, not yet validated (phase 1).
    PreRecovery,
    /// Recovery data not modified since its checkpoint: still usable by the application.
    ReadableRecovery,
    /// Recovery data no longer usable by the application (its page was written since), kept
    /// only to be restored after a failure.
    PureRecovery,
}

impl CopyState {
    fn code(self) -> u64 {
        match self {
            CopyState::PreRecovery => 1,
            CopyState::ReadableRecovery => 2,
            CopyState::PureRecovery => 3,
        }
    }

    fn from_code(c: u64) -> Option<CopyState> {
        match c {
            1 => Some(CopyState::PreRecovery),
            2 => Some(CopyState::ReadableRecovery),
            3 => Some(CopyState::PureRecovery),
            _ => None,
        }
    }
}

/// A recovery copy's state and the epoch of the checkpoint it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// Its state.
    pub state: CopyState,
    /// The checkpoint epoch (1, 2, …).
    pub epoch: u64,
}

impl Copy {
    fn encode(self) -> u64 {
        self.epoch << 8 | self.state.code()
    }

    fn decode(w: u64) -> Option<Copy> {
        Some(Copy {
            state: CopyState::from_code(w & 0xff)?,
            epoch: w >> 8,
        })
    }
}

const MAGIC: u64 = u64::from_le_bytes(*b"PSLSCKPT");
const FORMAT: u64 = 1;
// Words of the record.
const R_MAGIC: usize = 0;
const R_FORMAT: usize = 1;
const R_COMMITTED: usize = 2;
const R_HWM: usize = 3;
const R_PAGE_SIZE: usize = 4;
const R_NPAGES: usize = 5;
const R_RANKS: usize = 6;
const R_BASE: usize = 7;
const RECORD_WORDS: usize = 8;

/// A file of 64-bit words, mapped shared and accessed only atomically.
struct Words {
    ptr: *mut AtomicU64,
    len: usize,
    _map: memmap2::MmapMut,
}

// SAFETY: the words are only accessed through `&AtomicU64`, which is Sync; the mapping lives as
// long as the value.
unsafe impl Send for Words {}
// SAFETY: as above.
unsafe impl Sync for Words {}

impl Words {
    fn open(path: &Path, len: usize, fresh: bool) -> Result<Words> {
        let file = open_file(path, (len * 8) as u64, fresh)?;
        // SAFETY: the file is this rank's own, in its checkpoint directory, which the lock file
        // reserves to this process; nothing else maps it.
        let mut map = unsafe { memmap2::MmapOptions::new().len(len * 8).map_mut(&file) }
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        Ok(Words {
            ptr: map.as_mut_ptr().cast::<AtomicU64>(),
            len,
            _map: map,
        })
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "word {i} of {}", self.len);
        // SAFETY: i is in bounds (checked); the mapping is page aligned, so every word is
        // 8-byte aligned, and it lives as long as self.
        unsafe { &*self.ptr.add(i) }
    }
}

/// Removes the damaged recovery area of `rank` in `dir` (see [`RecoveryArea::probe`]), so that
/// it opens empty, like the area of a rebooted node, and says why.
fn discard_damaged(dir: &Path, rank: usize, why: &str) -> Result<Found> {
    tracing::warn!(target: "psls::ckpt", "rank {rank}: its memory checkpoint is damaged ({why}); its copies are discarded and restored from the other copy of each page");
    for name in [
        format!("ckpt.rank{rank}"),
        format!("frames.rank{rank}"),
        format!("slots.rank{rank}"),
        format!("slots.rank{rank}.idx"),
        format!("fstate.rank{rank}"),
    ] {
        let f = dir.join(name);
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing the damaged {}", f.display()),
                    e,
                ))
            }
        }
    }
    Ok(Found::Absent)
}

fn open_file(path: &Path, len: u64, fresh: bool) -> Result<File> {
    crate::sys::vm::open_sized(path, len, fresh)
        .map_err(|e| Error::io(format!("opening {} ({len} bytes)", path.display()), e))
}

/// The geometry a recovery area is made for; a restart must find the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Page size in bytes.
    pub page_size: usize,
    /// Pages in the global range.
    pub npages: usize,
    /// Ranks in the job.
    pub ranks: usize,
    /// Base address of the global range.
    pub base: usize,
}

/// What a rank found in its checkpoint directory at `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No recovery area.
    Absent,
    /// A recovery area that never committed a checkpoint.
    Uncommitted,
    /// A recovery area whose last committed checkpoint is this epoch.
    Committed(u64),
}

/// The recovery area of one rank.
pub(crate) struct RecoveryArea {
    dir: PathBuf,
    rank: usize,
    page_size: usize,
    nslots: usize,
    frame_states: Words,
    index: Words,
    record: Words,
    slots: LockedWindow<'static>,
    /// Where the slots are mapped: `(address, bytes)`.
    slots_range: (usize, usize),
    /// Free slot numbers below the high-water mark, and the mark.
    alloc: Mutex<(Vec<usize>, usize)>,
}

impl std::fmt::Debug for RecoveryArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RecoveryArea {{ dir: {:?}, rank: {} }}",
            self.dir, self.rank
        )
    }
}

impl RecoveryArea {
    /// What the checkpoint directory holds for `rank`, before anything is opened: the epoch
    /// its record says was committed, or nothing. A record of another geometry is an error
    /// that names the directory to remove.
    ///
    /// A committed area whose files are missing or of the wrong size (a truncated or deleted
    /// frame or slot file) is damaged: its files are removed and it counts as absent, as if the
    /// node had rebooted, so that the restart takes its pages from their other copies instead
    /// of reading zeros where they were.
    pub fn probe(dir: &Path, rank: usize, geo: Geometry) -> Result<Found> {
        let path = dir.join(format!("ckpt.rank{rank}"));
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(Found::Absent);
        };
        if bytes.len() != RECORD_WORDS * 8 {
            let why = format!(
                "{} is {} bytes, not {}",
                path.display(),
                bytes.len(),
                RECORD_WORDS * 8
            );
            return discard_damaged(dir, rank, &why);
        }
        let w = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0)
        };
        if w(R_MAGIC) != MAGIC {
            return Ok(Found::Absent);
        }
        if w(R_FORMAT) != FORMAT {
            return Err(Error::Checkpoint(format!(
                "{} was written by another version of PSLS (format {}, this one reads {FORMAT}): remove {} to start afresh",
                path.display(),
                w(R_FORMAT),
                dir.display()
            )));
        }
        let found = Geometry {
            page_size: w(R_PAGE_SIZE) as usize,
            npages: w(R_NPAGES) as usize,
            ranks: w(R_RANKS) as usize,
            base: w(R_BASE) as usize,
        };
        if found == geo && w(R_COMMITTED) > 0 {
            let np = geo.npages;
            for (name, len) in [
                (format!("frames.rank{rank}"), np * geo.page_size),
                (format!("slots.rank{rank}"), np * geo.page_size),
                (format!("slots.rank{rank}.idx"), np * 2 * 8),
                (format!("fstate.rank{rank}"), np * 8),
            ] {
                let f = dir.join(&name);
                let why = match std::fs::metadata(&f) {
                    Ok(m) if m.len() == len as u64 => continue,
                    Ok(m) => format!("{} is {} bytes, not {len}", f.display(), m.len()),
                    Err(e) => format!("{} cannot be used ({e})", f.display()),
                };
                return discard_damaged(dir, rank, &why);
            }
        }
        if found != geo {
            return Err(Error::Checkpoint(format!(
                "the checkpoint in {} was taken with {} ranks, pages of {} bytes and a global range of {} pages at {:#x}; this run has {} ranks, pages of {} bytes and {} pages at {:#x}. Restart with the same settings (PSLS_PAGE_SIZE, PSLS_SVM_BASE, PSLS_SVM_SIZE), or remove {} to start afresh",
                dir.display(),
                found.ranks, found.page_size, found.npages, found.base,
                geo.ranks, geo.page_size, geo.npages, geo.base,
                dir.display()
            )));
        }
        Ok(match w(R_COMMITTED) {
            0 => Found::Uncommitted,
            e => Found::Committed(e),
        })
    }

    /// Opens (collective over the service communicator `comm`) this rank's area in `dir`:
    /// emptied when `fresh`, else as the crashed run left it.
    pub fn open(comm: &Comm, dir: &Path, geo: Geometry, fresh: bool) -> Result<Self> {
        let rank = comm.rank();
        let nslots = geo.npages;
        let files = (|| {
            let frame_states =
                Words::open(&dir.join(format!("fstate.rank{rank}")), geo.npages, fresh)?;
            let index = Words::open(
                &dir.join(format!("slots.rank{rank}.idx")),
                nslots * 2,
                fresh,
            )?;
            let record = Words::open(&dir.join(format!("ckpt.rank{rank}")), RECORD_WORDS, fresh)?;
            let spath = dir.join(format!("slots.rank{rank}"));
            let sfile = open_file(&spath, (nslots * geo.page_size) as u64, fresh)?;
            // SAFETY: the file is this rank's own (see Words::open); the runtime and MPI are its
            // only users, through the window.
            let smap = unsafe {
                memmap2::MmapOptions::new()
                    .len(nslots * geo.page_size)
                    .map_mut(&sfile)
            }
            .map_err(|e| Error::io(format!("mapping {}", spath.display()), e))?;
            Ok((frame_states, index, record, smap))
        })();
        let (frame_states, index, record, smap) = crate::api::agree(comm, files)?;
        let slots_range = (smap.as_ptr() as usize, smap.len());
        let slots = LockedWindow::new(Window::over_mapping(comm, smap)?)?;
        if fresh || record.at(R_MAGIC).load(Ordering::Acquire) != MAGIC {
            for (i, v) in [
                (R_FORMAT, FORMAT),
                (R_COMMITTED, 0),
                (R_HWM, 0),
                (R_PAGE_SIZE, geo.page_size as u64),
                (R_NPAGES, geo.npages as u64),
                (R_RANKS, geo.ranks as u64),
                (R_BASE, geo.base as u64),
            ] {
                record.at(i).store(v, Ordering::Release);
            }
            record.at(R_MAGIC).store(MAGIC, Ordering::Release);
        }
        let hwm = (record.at(R_HWM).load(Ordering::Acquire) as usize).min(nslots);
        let free = (0..hwm)
            .rev()
            .filter(|&s| index.at(s * 2).load(Ordering::Acquire) == 0)
            .collect();
        Ok(RecoveryArea {
            dir: dir.to_path_buf(),
            rank,
            page_size: geo.page_size,
            nslots,
            frame_states,
            index,
            record,
            slots,
            slots_range,
            alloc: Mutex::new((free, hwm)),
        })
    }

    /// Where this rank's slots are mapped: `(address, bytes)`.
    pub fn slots_range(&self) -> (usize, usize) {
        self.slots_range
    }

    /// The last epoch this rank committed (0: none).
    pub fn committed(&self) -> u64 {
        self.record.at(R_COMMITTED).load(Ordering::Acquire)
    }

    /// Records that `epoch` is committed: the commit point of the two-phase commit.
    pub fn set_committed(&self, epoch: u64) {
        self.record.at(R_COMMITTED).store(epoch, Ordering::Release);
    }

    /// Whether this rank's frame of `page` is a recovery copy, and which.
    pub fn frame(&self, page: usize) -> Option<Copy> {
        Copy::decode(self.frame_states.at(page).load(Ordering::Acquire))
    }

    /// Sets (or clears) what this rank's frame of `page` is.
    pub fn set_frame(&self, page: usize, copy: Option<Copy>) {
        self.frame_states
            .at(page)
            .store(copy.map_or(0, Copy::encode), Ordering::Release);
    }

    /// Takes a free slot.
    pub fn alloc_slot(&self) -> Result<usize> {
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = a.0.pop() {
            return Ok(s);
        }
        if a.1 >= self.nslots {
            return Err(Error::Checkpoint(format!(
                "rank {}: the recovery area is full ({} slots of {} bytes in {}): the job keeps more recovery copies than its global range has pages; take permanent checkpoints more often",
                self.rank,
                self.nslots,
                self.page_size,
                self.dir.display()
            )));
        }
        let s = a.1;
        a.1 += 1;
        // The mark is raised before the slot is used, so a restart scans it.
        self.record.at(R_HWM).store(a.1 as u64, Ordering::Release);
        Ok(s)
    }

    /// Writes a slot's index (its data is already in place).
    pub fn set_slot(&self, slot: usize, page: usize, copy: Copy) {
        self.index
            .at(slot * 2 + 1)
            .store(copy.encode(), Ordering::Release);
        self.index
            .at(slot * 2)
            .store(page as u64 + 1, Ordering::Release);
    }

    /// A slot's page and copy, if the slot is in use.
    pub fn slot(&self, slot: usize) -> Option<(usize, Copy)> {
        let page = self.index.at(slot * 2).load(Ordering::Acquire);
        if page == 0 {
            return None;
        }
        let copy = Copy::decode(self.index.at(slot * 2 + 1).load(Ordering::Acquire))?;
        Some((page as usize - 1, copy))
    }

    /// Reads a slot's data.
    pub fn read_slot(&self, slot: usize, buf: &mut [u8]) -> Result<()> {
        self.slots.window().local_read(slot * self.page_size, buf)
    }

    /// Frees a slot. Its memory stays with the area, for the next checkpoint's copies: the
    /// area's memory is the peak of its copies, not more.
    pub fn free_slot(&self, slot: usize) {
        self.index.at(slot * 2).store(0, Ordering::Release);
        self.index.at(slot * 2 + 1).store(0, Ordering::Release);
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        a.0.push(slot);
    }

    /// Slots ever used (their memory is the area's), and of them the free ones.
    pub fn slot_counts(&self) -> (usize, usize) {
        let a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        (a.1, a.0.len())
    }

    /// Orders the free slots so that the next allocations take them in ascending order, and so
    /// often consecutively (after many frees).
    pub fn tidy(&self) {
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        a.0.sort_unstable_by(|x, y| y.cmp(x));
    }

    /// Every slot in use: `(slot, page, copy)`.
    pub fn slots_in_use(&self) -> Vec<(usize, usize, Copy)> {
        let hwm = self.alloc.lock().unwrap_or_else(|p| p.into_inner()).1;
        (0..hwm)
            .filter_map(|s| self.slot(s).map(|(p, c)| (s, p, c)))
            .collect()
    }

    /// The slots' RMA window (buddies' replicas are received into its memory).
    pub fn window(&self) -> &LockedWindow<'static> {
        &self.slots
    }
}
