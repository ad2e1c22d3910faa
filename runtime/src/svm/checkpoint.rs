//! The memory checkpoint of the SVM's pages (paper, section 3.1) and the rollback of a restart
//! (section 3.3, transient failures).
//!
//! Phase 1 (collective, the application stopped in `checkpoint`): every page written since the
//! last checkpoint (its owner's table says `written_epoch == current epoch`) gets two
//! *pre-recovery* copies on two distinct nodes:
//! - a **replicated** page, of which a rank on another node holds a read copy, turns the owner's
//!   frame and that reader's frame into pre-recovery copies in place: no data moves;
//! - a **unique** page turns the owner's frame into a pre-recovery copy, and a pre-recovery
//!   replica is sent (point to point, straight from the frames) into a slot of the buddy
//!   node's recovery area.
//!
//! Every written page is write-protected, so that the first write after the checkpoint faults:
//! the service thread then copies the recovery frame out to a *pure recovery* slot before the
//! write proceeds (copy-on-write, [`Core::preserve_recovery`]). After the vote, the caller
//! commits, and phase 2 is local: pre-recovery copies become *readable recovery*, and the pure
//! recovery copies and replicas of earlier epochs that the new checkpoint replaces are freed.
//!
//! Restart ([`Svm::restore`]): the newest copy of each page whose epoch is at most the
//! committed epoch wins, everything newer (pre-recovery of a checkpoint that did not commit,
//! dirty active frames) is discarded, and the directory is rebuilt from the surviving holders.

use super::directory::Entry;
use super::{Core, PageInfo, Svm};
use crate::ckpt::area::{Copy, CopyState, Geometry, RecoveryArea};
use crate::error::{Error, Result};
use crate::rma::{Comm, ReduceOp};
use crate::sys::vm::Access;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Where each rank's replicas go: the node of every rank, and this rank's partner on the buddy
/// node.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// The node of each rank.
    pub node_of: Vec<usize>,
    /// The rank on the buddy node that keeps this rank's replicas.
    pub buddy_rank: usize,
}

/// What phase 1 did on this rank, for phase 2 or the abort.
#[derive(Debug, Default)]
pub(crate) struct Phase1 {
    epoch: u64,
    /// Every page checkpointed by any rank, sorted.
    all_pages: Vec<usize>,
    /// This rank's frames made pre-recovery.
    frames: Vec<usize>,
    /// Slots of this rank filled with buddies' replicas.
    slots: Vec<usize>,
    /// Counts for the statistics.
    pub counts: MemoryCounts,
}

/// Counts of one rank's part of a memory checkpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCounts {
    /// Pages this rank owned that were written since the last checkpoint.
    pub pages: u64,
    /// Of them, pages replicated on another node, checkpointed without moving data.
    pub reused: u64,
    /// Bytes this rank sent into its buddy's recovery area.
    pub bytes_sent: u64,
    /// Recovery slots freed in phase 2.
    pub slots_freed: u64,
}

const MARK: u64 = 1;
const REPLICA: u64 = 2;

/// The most pages one message of a memory checkpoint's replicas carries (4 MiB of 4 KiB
/// pages).
const REPLICA_MSG_PAGES: usize = 1024;

/// The tag of the replicas' messages on the job's communicator (nothing else sends point to
/// point there; the service threads use their own).
const TAG_REPLICA: i32 = 201;

/// Write-protects pages in runs, one `mprotect` per run. A run bridges pages that are read-only
/// already, so a sparse writer's pages take one call, not one each. Pages are visited in
/// ascending order.
#[derive(Default)]
pub(super) struct ProtectRuns {
    /// The run so far, and where it would end with the bridged pages after it.
    run: Option<(std::ops::Range<usize>, usize)>,
    /// Time spent protecting, for the log.
    pub(super) spent: std::time::Duration,
}

impl ProtectRuns {
    /// Visits `page`, whose access is `access`; `protect` says whether it must become
    /// read-only.
    pub(super) fn visit(
        &mut self,
        c: &Core,
        page: usize,
        protect: bool,
        access: Access,
    ) -> Result<()> {
        match &mut self.run {
            Some((r, bridge)) if *bridge == page && (protect || access == Access::Read) => {
                *bridge = page + 1;
                if protect {
                    r.end = page + 1;
                }
            }
            _ => {
                if let Some((r, _)) = self.run.take() {
                    let t = std::time::Instant::now();
                    c.set_access_run(r, Access::Read)?;
                    self.spent += t.elapsed();
                }
                if protect {
                    self.run = Some((page..page + 1, page + 1));
                }
            }
        }
        Ok(())
    }

    /// Protects the last run; returns the time spent protecting.
    pub(super) fn finish(self, c: &Core) -> Result<std::time::Duration> {
        let t = std::time::Instant::now();
        if let Some((r, _)) = self.run {
            c.set_access_run(r, Access::Read)?;
        }
        Ok(self.spent + t.elapsed())
    }
}

impl Core {
    /// The recovery area, which the caller needs open.
    fn area(&self) -> Result<&RecoveryArea> {
        self.recovery
            .get()
            .ok_or_else(|| Error::Checkpoint("the recovery area is not open".into()))
    }

    /// Copy-on-write of a recovery frame: if this rank's frame of `page` is a recovery copy,
    /// moves it to a pure recovery slot before the frame changes (a write, an invalidation, a
    /// fetch over it, a free). Runs on the service thread, or while it is quiet on the page.
    pub(super) fn preserve_recovery(&self, page: usize) -> Result<()> {
        let Some(area) = self.recovery.get() else {
            return Ok(());
        };
        let Some(copy) = area.frame(page) else {
            return Ok(());
        };
        // No buffer: this also runs in the SIGSEGV handler (see `try_local_upgrade`).
        let slot = area.alloc_slot()?;
        self.frames_win.window().local_copy_to(
            page * self.page_size,
            area.window().window(),
            slot * self.page_size,
            self.page_size,
        )?;
        area.set_slot(
            slot,
            page,
            Copy {
                state: CopyState::PureRecovery,
                epoch: copy.epoch,
            },
        );
        area.set_frame(page, None);
        self.counters.cow.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A test-only failure of a checkpoint step (`PSLS_FAULT=NAME:epoch=E:rank=R`).
fn injected_error(name: &str, epoch: u64) -> Result<()> {
    if crate::inject::error_point(name, epoch) {
        return Err(Error::Protocol(format!(
            "injected error at {name} (PSLS_FAULT)"
        )));
    }
    Ok(())
}

impl Svm {
    /// Opens the recovery area (collective) unless it is open already.
    pub(crate) fn open_recovery(&self, comm: &Comm, fresh: bool) -> Result<()> {
        if self.core.recovery.get().is_some() {
            return Ok(());
        }
        let c = &self.core;
        let area = RecoveryArea::open(comm, &c.ckpt_dir, self.geometry(comm), fresh)?;
        let (at, len) = area.slots_range();
        c.faults
            .watch(crate::sys::fault::Watched::RecoveryArea, at, len);
        let _ = c.recovery.set(area);
        Ok(())
    }

    /// The geometry of this job's recovery areas.
    pub(crate) fn geometry(&self, comm: &Comm) -> Geometry {
        Geometry {
            page_size: self.core.page_size,
            npages: self.core.npages,
            ranks: comm.size(),
            base: self.core.base,
        }
    }

    /// The recovery area (open after the first checkpoint, or on a restart).
    pub(crate) fn recovery(&self) -> Option<&RecoveryArea> {
        self.core.recovery.get()
    }

    /// Opens the recovery area (collective) if needed, and returns it with the epoch the next
    /// checkpoint takes: above every rank's committed epoch and above `floor` (the epoch a
    /// restart came from). `kind` is the checkpoint's kind (0 memory, 1 permanent), checked in
    /// the same collective: ranks that asked for different kinds would go on into different
    /// collectives, so every rank returns an error instead.
    pub(crate) fn next_checkpoint(
        &self,
        comm: &Comm,
        floor: u64,
        kind: u64,
    ) -> Result<(&RecoveryArea, u64)> {
        self.open_recovery(comm, true)?;
        let area = self.core.area()?;
        let all = comm.allgather_words(&[area.committed().max(floor), kind])?;
        let kinds: Vec<u64> = all.chunks_exact(2).map(|w| w[1]).collect();
        if kinds.iter().any(|&k| k != kind) {
            let ranks = |k: u64| {
                let r: Vec<String> = (0..kinds.len())
                    .filter(|&r| kinds[r] == k)
                    .map(|r| r.to_string())
                    .collect();
                r.join(", ")
            };
            return Err(Error::Checkpoint(format!(
                "the ranks asked for different kinds of checkpoint (memory: ranks {}; permanent: ranks {}): checkpoint_now is collective, and every rank must pass the same kind; nothing was taken",
                ranks(0),
                ranks(1)
            )));
        }
        let epoch = all.chunks_exact(2).map(|w| w[0]).max().unwrap_or(0) + 1;
        Ok((area, epoch))
    }

    /// Phase 1 of a memory checkpoint of `epoch` (collective; the application is stopped, and
    /// every rank called [`Svm::quiesce`] before a collective that preceded this call, so
    /// that no rank's service thread still changes directory entries or page tables).
    /// Each step ends in an agreement, so an error on one rank fails every rank at the same
    /// step (nobody is left in a collective); the caller then calls [`Svm::abort_memory`] with
    /// what was done, which `out` keeps even on error.
    pub(crate) fn phase1(
        &self,
        comm: &Comm,
        epoch: u64,
        place: &Placement,
        out: &mut Phase1,
    ) -> Result<()> {
        let c = &self.core;
        let area = c.area()?;
        let t0 = std::time::Instant::now();
        out.epoch = epoch;
        let pre_copy = Copy {
            state: CopyState::PreRecovery,
            epoch,
        };
        let pre = Some(pre_copy);
        // 1. The pages this rank owns and wrote since the last checkpoint: (kind, dest, page).
        let mut plan: Vec<u64> = Vec::new();
        let mut protecting = std::time::Duration::ZERO;
        let step1 = (|| {
            let cur = c.epoch.load(Ordering::Acquire);
            let me = c.rank;
            // Writable pages are write-protected (in runs): the next write faults, and copies
            // the recovery frame out first.
            let mut writable = ProtectRuns::default();
            for p in self.used_pages() {
                let i = c.table.get(p);
                let dirty = i.owner == Some(me) && i.written_epoch == Some(cur);
                writable.visit(c, p, dirty && i.access == Access::Write, i.access)?;
                if i.owner != Some(me) || i.access == Access::None || i.written_epoch != Some(cur) {
                    continue;
                }
                let other_node_reader = if i.replicated {
                    let e = c.dir.read(p)?;
                    let found = e
                        .holders()
                        .find(|&h| h != me && place.node_of.get(h) != place.node_of.get(me));
                    found
                } else {
                    None
                };
                match other_node_reader {
                    Some(h) => {
                        plan.extend([MARK, h as u64, p as u64]);
                        out.counts.reused += 1;
                    }
                    None => plan.extend([REPLICA, place.buddy_rank as u64, p as u64]),
                }
                area.set_frame(p, pre);
                out.frames.push(p);
                out.counts.pages += 1;
            }
            protecting = writable.finish(c)?;
            crate::inject::point("ckpt-phase1", epoch);
            injected_error("ckpt-step1-error", epoch)
        })();
        // 2. Everyone learns that every rank's step 1 succeeded, and every plan: readers mark
        //    their frames, buddies take slots.
        let all = crate::api::agree_gather(comm, step1.map(|()| plan))?;
        let t1 = std::time::Instant::now();
        let mut assigned: Vec<u64> = Vec::new(); // (src, page, slot)
        let step2 = (|| {
            for (src, b) in all.iter().enumerate() {
                for t in b.chunks_exact(3) {
                    let (kind, dest, page) = (t[0], t[1] as usize, t[2] as usize);
                    out.all_pages.push(page);
                    if dest != c.rank {
                        continue;
                    }
                    if kind == MARK {
                        if c.table.get(page).access == Access::None {
                            return Err(Error::Protocol(format!(
                                "checkpoint: rank {src} counted on this rank's copy of page {page}, which it does not hold"
                            )));
                        }
                        area.set_frame(page, pre);
                        out.frames.push(page);
                    } else {
                        let slot = area.alloc_slot()?;
                        out.slots.push(slot);
                        assigned.extend([src as u64, page as u64, slot as u64]);
                    }
                }
            }
            injected_error("ckpt-step2-error", epoch)
        })();
        out.all_pages.sort_unstable();
        out.all_pages.dedup();
        // 3. Owners send their unique pages into the slots their buddies assigned (once every
        //    rank's step 2 succeeded).
        let all = crate::api::agree_gather(comm, step2.map(|()| assigned.clone()))?;
        let t2 = std::time::Instant::now();
        let step3 = self.send_replicas(comm, area, &all);
        if let Ok(bytes) = step3 {
            out.counts.bytes_sent += bytes;
        }
        // 4. Every page has landed (each rank waited for its sends and receives before
        //    agreeing): index the slots.
        crate::api::agree(comm, step3)?;
        let t3 = std::time::Instant::now();
        for t in assigned.chunks_exact(3) {
            area.set_slot(t[2] as usize, t[1] as usize, pre_copy);
        }
        tracing::debug!(
            target: "psls::ckpt",
            "phase 1 of checkpoint {epoch}: {} pages; scan and protect {:.2} ms (protect {:.2} ms), plan exchange {:.2} ms, replicas {:.2} ms, index {:.2} ms",
            out.counts.pages,
            (t1 - t0).as_secs_f64() * 1e3,
            protecting.as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3,
            t3.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// Sends this rank's pages into the slots their keepers assigned, and receives the pages
    /// other ranks send into this rank's slots (collective): `all[keeper]` holds `(src, page,
    /// slot)` triples from rank `keeper`. Each owner sends its pages for one keeper in
    /// messages of up to [`REPLICA_MSG_PAGES`] pages, straight from its frames into the slots
    /// ([`Comm::exchange_blocks`]); every rank derives the same messages from `all`. Not
    /// `MPI_Put`: a put into a window over the memory root's file waits for the keeper's
    /// progress, which on a shared host costs a scheduler time slice (`docs/design.md`).
    /// Returns the bytes this rank sent; every page has landed when it returns without error.
    fn send_replicas(&self, comm: &Comm, area: &RecoveryArea, all: &[Vec<u64>]) -> Result<u64> {
        let c = &self.core;
        let ps = c.page_size;
        let frames = c.frames_win.window();
        let slots = area.window().window();
        // (src, keeper, page, slot), by pair, then page.
        let mut moves: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (keeper, b) in all.iter().enumerate() {
            for t in b.chunks_exact(3) {
                moves.push((t[0] as usize, keeper, t[1] as usize, t[2] as usize));
            }
        }
        moves.sort_unstable();
        // Every rank checks every transfer against the windows' lengths, which every rank
        // knows, so that all of them refuse the same plan before anything moves.
        let page_in = |w: &crate::rma::Window, rank: usize, at: usize| {
            at.checked_mul(ps).is_some_and(|o| w.holds(rank, o, ps))
        };
        for &(src, keeper, page, slot) in &moves {
            if src == keeper || !page_in(frames, src, page) || !page_in(slots, keeper, slot) {
                return Err(Error::Protocol(format!(
                    "checkpoint: rank {keeper} assigned slot {slot} to rank {src}'s page {page}, outside their windows"
                )));
            }
        }
        // A page travels once, and a slot takes one page: the receives never overlap.
        let mut pages: Vec<usize> = moves.iter().map(|m| m.2).collect();
        pages.sort_unstable();
        if let Some(w) = pages.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Protocol(format!(
                "checkpoint: page {} was assigned two replica slots",
                w[0]
            )));
        }
        let mut taken: Vec<(usize, usize)> = moves.iter().map(|m| (m.1, m.3)).collect();
        taken.sort_unstable();
        if let Some(w) = taken.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Protocol(format!(
                "checkpoint: rank {} assigned its slot {} to two pages",
                w[0].0, w[0].1
            )));
        }
        let mut send_offsets: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut recv_offsets: Vec<(usize, Vec<usize>)> = Vec::new();
        for pair in moves.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let (src, keeper) = (pair[0].0, pair[0].1);
            for msg in pair.chunks(REPLICA_MSG_PAGES) {
                if src == c.rank {
                    send_offsets.push((keeper, msg.iter().map(|m| m.2 * ps).collect()));
                }
                if keeper == c.rank {
                    recv_offsets.push((src, msg.iter().map(|m| m.3 * ps).collect()));
                }
            }
        }
        fn blocks(v: &[(usize, Vec<usize>)]) -> Vec<crate::rma::Blocks<'_>> {
            v.iter()
                .map(|(peer, offsets)| crate::rma::Blocks {
                    peer: *peer,
                    offsets,
                })
                .collect()
        }
        // SAFETY: every block was checked to lie in its window above; the frames' pages are
        // not written until this returns (the application is inside this collective with its
        // view of them write-protected since step 1, every rank is in phase 1 so none fetches
        // over them, and a copy-on-write only reads a frame); the slots were assigned to these
        // pages in step 2, nothing else uses them, and two pages never share one (checked
        // above).
        unsafe {
            comm.exchange_blocks(
                TAG_REPLICA,
                ps,
                frames.local_base(),
                &blocks(&send_offsets),
                slots.local_base(),
                &blocks(&recv_offsets),
            )?;
        }
        Ok(send_offsets
            .iter()
            .map(|(_, o)| (o.len() * ps) as u64)
            .sum())
    }

    /// Undoes phase 1 after a failed vote: the pre-recovery copies are dropped; the pages stay
    /// dirty, so the next checkpoint takes them again.
    pub(crate) fn abort_memory(&self, p1: &Phase1) {
        let Some(area) = self.core.recovery.get() else {
            return;
        };
        for &p in &p1.frames {
            if area.frame(p).is_some_and(|c| c.epoch == p1.epoch) {
                area.set_frame(p, None);
            }
        }
        for &s in &p1.slots {
            area.free_slot(s);
        }
    }

    /// Phase 2 of the memory checkpoint, after this rank committed `p1.epoch`: local.
    pub(crate) fn phase2(&self, p1: &mut Phase1) -> Result<()> {
        let c = &self.core;
        let area = c.area()?;
        let readable = Copy {
            state: CopyState::ReadableRecovery,
            epoch: p1.epoch,
        };
        for &p in &p1.frames {
            area.set_frame(p, Some(readable));
        }
        crate::inject::point("ckpt-phase2", p1.epoch);
        for &s in &p1.slots {
            if let Some((page, _)) = area.slot(s) {
                area.set_slot(s, page, readable);
            }
        }
        // Pure recovery copies belong to earlier checkpoints only; replicas of a page that this
        // checkpoint took again, or of a page that no longer exists, are replaced.
        for (s, page, copy) in area.slots_in_use() {
            if copy.epoch >= p1.epoch {
                continue;
            }
            if copy.state == CopyState::PureRecovery
                || p1.all_pages.binary_search(&page).is_ok()
                || !c.allocated[page].load(Ordering::Relaxed)
            {
                area.free_slot(s);
                p1.counts.slots_freed += 1;
            }
        }
        area.tidy();
        c.epoch.store(p1.epoch as u32 + 1, Ordering::Release);
        Ok(())
    }

    /// Rolls this rank back to the committed checkpoint `epoch` (collective, at `init` of a
    /// restarted job, before the application allocates anything). Returns, over the job, the
    /// recovery copies kept and the pages copied to a buddy again.
    ///
    /// Copies older than the permanent checkpoint `permanent` (0: none) are dropped too: the
    /// disks hold the page as of that checkpoint, or newer.
    ///
    /// A page whose newest copies are now all on one node (its other node's memory was lost)
    /// gets a second copy again: its holder puts it to the rank that keeps its replicas
    /// (`place`), so that one more node loss is survivable.
    pub(crate) fn restore(
        &self,
        comm: &Comm,
        epoch: u64,
        permanent: u64,
        place: &Placement,
    ) -> Result<(u64, u64)> {
        let c = &self.core;
        let area = c.area()?;
        let ps = c.page_size;
        // 1. This rank's newest copy of each page, from its frames and its slots; copies of
        //    later epochs (a checkpoint that never committed) are dropped.
        #[derive(Clone, Copy)]
        enum Src {
            Frame,
            Slot(usize),
        }
        let mut best: HashMap<usize, (u64, Src)> = HashMap::new();
        let mut drop_slots: Vec<usize> = Vec::new();
        for p in 0..c.npages {
            if let Some(copy) = area.frame(p) {
                if copy.epoch <= epoch && copy.epoch >= permanent {
                    best.insert(p, (copy.epoch, Src::Frame));
                } else {
                    area.set_frame(p, None);
                }
            }
        }
        for (s, page, copy) in area.slots_in_use() {
            if copy.epoch > epoch || copy.epoch < permanent {
                drop_slots.push(s);
                continue;
            }
            // The newest copy wins; on a tie, the frame (no copy needed).
            match best.get(&page).copied() {
                Some((e, _)) if e >= copy.epoch => drop_slots.push(s),
                Some((_, Src::Slot(old))) => {
                    drop_slots.push(old);
                    best.insert(page, (copy.epoch, Src::Slot(s)));
                }
                Some((_, Src::Frame)) => {
                    area.set_frame(page, None);
                    best.insert(page, (copy.epoch, Src::Slot(s)));
                }
                None => {
                    best.insert(page, (copy.epoch, Src::Slot(s)));
                }
            }
        }
        // 2. The newest epoch of each page across the job, and who holds it.
        let mine: Vec<u64> = best
            .iter()
            .flat_map(|(&p, &(e, _))| [p as u64, e])
            .collect();
        let all = comm.allgather_u64s(&mine)?;
        let mut newest: HashMap<usize, (u64, u64)> = HashMap::new(); // page -> (epoch, holders)
        for (r, b) in all.iter().enumerate() {
            for t in b.chunks_exact(2) {
                let (p, e) = (t[0] as usize, t[1]);
                let n = newest.entry(p).or_insert((0, 0));
                if e > n.0 {
                    *n = (e, 0);
                }
                if e == n.0 {
                    n.1 |= 1 << r;
                }
            }
        }
        // 3. Keep the winners (in frames, as readable recovery), drop the rest.
        //    A rank that fails here fails the restart on every rank (agreed below), instead of
        //    leaving the others in the exchanges that follow.
        let mut kept: Vec<usize> = Vec::new();
        let local = (|| {
            let mut buf = vec![0u8; ps];
            for (&p, &(e, src)) in &best {
                let win = newest.get(&p).is_some_and(|n| n.0 == e);
                match (win, src) {
                    (true, Src::Frame) => {}
                    (true, Src::Slot(s)) => {
                        area.read_slot(s, &mut buf)?;
                        c.frames_win.window().local_write(p * ps, &buf)?;
                        drop_slots.push(s);
                    }
                    (false, Src::Frame) => {
                        area.set_frame(p, None);
                        continue;
                    }
                    (false, Src::Slot(s)) => {
                        drop_slots.push(s);
                        continue;
                    }
                }
                area.set_frame(
                    p,
                    Some(Copy {
                        state: CopyState::ReadableRecovery,
                        epoch: e,
                    }),
                );
                kept.push(p);
            }
            for s in drop_slots {
                area.free_slot(s);
            }
            area.tidy();
            // Every other frame held active data written after the checkpoint: it goes.
            kept.sort_unstable();
            let mut from = 0;
            for &p in kept.iter().chain(std::iter::once(&c.npages)) {
                if p > from {
                    c.frames
                        .punch_hole(from * ps, (p - from) * ps)
                        .map_err(|e| {
                            Error::io("discarding frames written after the checkpoint", e)
                        })?;
                }
                from = p + 1;
            }
            Ok::<(), Error>(())
        })();
        crate::api::agree(comm, local)?;
        let again = self.replicate_alone(comm, area, &kept, &newest, permanent, place)?;
        // 4. What the directory and the page tables will say once the pages are allocated
        //    again (the application allocates in the same order, so at the same addresses).
        let mut restored = c.restored.lock().unwrap_or_else(|p| p.into_inner());
        for (&p, &(e, holders)) in &newest {
            let owner = holders.trailing_zeros() as usize;
            if c.dir.home(p).0 == c.rank {
                restored.dir.insert(
                    p,
                    Entry {
                        owner: Some(owner),
                        writable: false,
                        copyset: holders,
                        version: 1,
                    },
                );
            }
            if holders & (1 << c.rank) != 0 {
                restored.mine.insert(
                    p,
                    PageInfo {
                        access: Access::Read,
                        replicated: holders.count_ones() > 1,
                        owner: Some(owner),
                        written_epoch: (owner == c.rank).then_some(e as u32),
                        exclusive: false,
                    },
                );
            }
        }
        c.epoch.store(epoch as u32 + 1, Ordering::Release);
        let pages = kept.len() as u64;
        let total = comm.allreduce_u64(pages, ReduceOp::Sum)?;
        let again = comm.allreduce_u64(again, ReduceOp::Sum)?;
        tracing::info!(
            target: "psls::ckpt",
            "rank {}: rolled back to checkpoint {epoch}: {pages} pages kept here ({} copies in the job; {again} pages copied to a buddy again)",
            c.rank,
            total
        );
        Ok((total, again))
    }

    /// Gives a second copy, on the node of `place.buddy_rank`, to each page this rank holds
    /// whose newest copies (`newest`: page -> (epoch, holders)) are all on this node, unless the
    /// disks hold it (its epoch is the permanent checkpoint's). Collective. Returns the pages
    /// this rank copied.
    fn replicate_alone(
        &self,
        comm: &Comm,
        area: &RecoveryArea,
        kept: &[usize],
        newest: &HashMap<usize, (u64, u64)>,
        permanent: u64,
        place: &Placement,
    ) -> Result<u64> {
        let c = &self.core;
        let my_node = place.node_of.get(c.rank);
        let mut plan: Vec<u64> = Vec::new(); // (dest, page, epoch)
        for &p in kept {
            let Some(&(e, holders)) = newest.get(&p) else {
                continue;
            };
            let alone = (0..64)
                .filter(|r| holders & (1 << r) != 0)
                .all(|r| place.node_of.get(r) == my_node);
            if alone && e > permanent && holders.trailing_zeros() as usize == c.rank {
                plan.extend([place.buddy_rank as u64, p as u64, e]);
            }
        }
        let all = comm.allgather_u64s(&plan)?;
        if all.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let mut assigned: Vec<u64> = Vec::new(); // (src, page, slot)
        let mut index: Vec<(usize, usize, u64)> = Vec::new(); // (slot, page, epoch)
        let step = (|| {
            for (src, b) in all.iter().enumerate() {
                for t in b.chunks_exact(3).filter(|t| t[0] as usize == c.rank) {
                    let slot = area.alloc_slot()?;
                    assigned.extend([src as u64, t[1], slot as u64]);
                    index.push((slot, t[1] as usize, t[2]));
                }
            }
            Ok(())
        })();
        crate::api::agree(comm, step)?;
        let all = comm.allgather_u64s(&assigned)?;
        let sent = self.send_replicas(comm, area, &all);
        crate::api::agree(comm, sent)?;
        for (slot, page, epoch) in index {
            let copy = Copy {
                state: CopyState::ReadableRecovery,
                epoch,
            };
            area.set_slot(slot, page, copy);
        }
        Ok(plan.len() as u64 / 3)
    }
}

/// What a restart restored, waiting for the application to allocate its memory again.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Directory entries of pages homed here.
    pub dir: HashMap<usize, Entry>,
    /// This rank's copies: its page-table words.
    pub mine: HashMap<usize, PageInfo>,
}

impl Core {
    /// Installs what a restart restored for `pages`, which are being reserved (every home
    /// does it before the reservation's reductions, like clearing the entries).
    pub(super) fn install_restored(&self, pages: std::ops::Range<usize>) -> Result<()> {
        let mut r = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        if r.dir.is_empty() && r.mine.is_empty() {
            return Ok(());
        }
        for p in pages {
            if let Some(e) = r.dir.remove(&p) {
                self.dir.set_local(p, &e)?;
            }
            if let Some(info) = r.mine.remove(&p) {
                self.view
                    .protect(p * self.page_size, self.page_size, info.access)
                    .map_err(|e| self.protect_error(e))?;
                self.table.set(p, info);
            }
        }
        Ok(())
    }
}

/// Flags of one held copy, exchanged by the cleaning.
/// What a cleaning keeps of one page: [`cleaning_keeps`].
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    /// The page's owner before the cleaning, or its first holder when nobody owned it.
    first: usize,
    /// The ranks that keep a copy, each with whether it is a readable recovery copy.
    copies: Vec<(usize, bool)>,
}

/// The paper's cleaning policies (section 3.2) applied to one page whose copies are held by
/// `holders` (rank, `HELD_*` flags), `node_of` giving each rank's node. Every rank computes the
/// same answer from the same gathered list.
fn cleaning_keeps(
    policy: crate::ckpt::Cleaning,
    holders: &[(usize, u64)],
    node_of: &[usize],
) -> Kept {
    use crate::ckpt::Cleaning::*;
    let owner = holders.iter().find(|h| h.1 & HELD_OWNER != 0).map(|h| h.0);
    let dirty = holders.iter().any(|h| h.1 & HELD_DIRTY != 0);
    let first = owner.unwrap_or(holders[0].0);
    // A second holder on another node than `first`, if any.
    let second = holders
        .iter()
        .map(|h| h.0)
        .find(|&r| r != first && node_of.get(r) != node_of.get(first));
    let recovery: Vec<usize> = holders
        .iter()
        .filter(|h| h.1 & HELD_RECOVERY != 0)
        .map(|h| h.0)
        .collect();
    let copies = match policy {
        NoCleaning => holders
            .iter()
            .map(|h| (h.0, h.1 & HELD_RECOVERY != 0))
            .collect(),
        TotalCleaning => Vec::new(),
        KeepDirtyAndRecovery | KeepDirty if dirty => std::iter::once(first)
            .chain(second)
            .map(|r| (r, true))
            .collect(),
        KeepDirtyAndRecovery | OneActive if !recovery.is_empty() => {
            let mut k: Vec<(usize, bool)> = recovery.iter().map(|&r| (r, true)).collect();
            if policy == OneActive && !recovery.contains(&first) {
                k.push((first, false));
            }
            k
        }
        KeepDirtyAndRecovery | KeepDirty | OneActive => vec![(first, false)],
    };
    Kept { first, copies }
}

const HELD_OWNER: u64 = 1;
const HELD_DIRTY: u64 = 2;
const HELD_RECOVERY: u64 = 4;

impl Svm {
    /// The pages this rank has mapped (read or write), in order. A page its node loaded for
    /// another rank and that it never touched is not among them (see
    /// [`PageInfo::holds_copy`]): a restart's prefetch would map it here for nothing.
    pub(crate) fn held_pages(&self) -> Vec<usize> {
        let c = &self.core;
        self.used_pages()
            .filter(|&p| c.table.get(p).access != Access::None)
            .collect()
    }

    /// The pages this rank owns with modifications not on disk yet (what a flush writes).
    pub(crate) fn dirty_owned(&self) -> Vec<usize> {
        let c = &self.core;
        self.used_pages()
            .filter(|&p| {
                let i = c.table.get(p);
                i.owner == Some(c.rank) && i.access != Access::None && i.written_epoch.is_some()
            })
            .collect()
    }

    /// Cleans memory after the permanent checkpoint `epoch` committed (collective): every
    /// recovery slot goes (the disks hold the checkpoint), and each page keeps the copies that
    /// `policy` says, as active data or as readable recovery copies of `epoch`. `dirty` is
    /// what this rank owned dirty before the flush; `node_of` the node of each rank.
    pub(crate) fn clean(
        &self,
        comm: &Comm,
        policy: crate::ckpt::Cleaning,
        epoch: u64,
        dirty: &[usize],
        node_of: &[usize],
    ) -> Result<crate::ckpt::CleanCounts> {
        let c = &self.core;
        self.quiesce();
        comm.barrier()?;
        let mut counts = crate::ckpt::CleanCounts::default();
        // 1. Slots: pure recovery copies and replicas are all older than the disks' copy.
        if let Some(area) = c.recovery.get() {
            for (s, _, _) in area.slots_in_use() {
                area.free_slot(s);
                counts.discarded += 1;
            }
            area.tidy();
        }
        // 2. Everyone learns every held copy: (page, holder flags).
        let mut mine: Vec<u64> = Vec::new();
        for p in self.used_pages() {
            let i = c.table.get(p);
            if !i.holds_copy(c.rank) {
                continue;
            }
            let mut f = 0;
            if i.owner == Some(c.rank) {
                f |= HELD_OWNER;
                if dirty.binary_search(&p).is_ok() {
                    f |= HELD_DIRTY;
                }
            }
            if c.recovery
                .get()
                .and_then(|a| a.frame(p))
                .is_some_and(|cp| cp.epoch < epoch)
            {
                f |= HELD_RECOVERY;
            }
            mine.extend([p as u64, f]);
        }
        let all = comm.allgather_u64s(&mine)?;
        let mut held: std::collections::BTreeMap<usize, Vec<(usize, u64)>> = Default::default();
        for (r, b) in all.iter().enumerate() {
            for t in b.chunks_exact(2) {
                held.entry(t[0] as usize).or_default().push((r, t[1]));
            }
        }
        // Steps 3 and 4 are local: a rank that fails in them (an `mprotect` refused) fails the
        // cleaning on every rank at the agreement below, instead of leaving them in a barrier.
        let local = self.clean_held(policy, epoch, &held, node_of, &mut counts);
        crate::api::agree(comm, local)?;
        Ok(counts)
    }

    /// Steps 3 and 4 of [`Svm::clean`], local to this rank: applies `policy` to every held page
    /// (`held`: page → (holder, flags), as every rank learned them), to this rank's copy and to
    /// the directory entries homed here, then moves to the epoch after `epoch`.
    fn clean_held(
        &self,
        policy: crate::ckpt::Cleaning,
        epoch: u64,
        held: &std::collections::BTreeMap<usize, Vec<(usize, u64)>>,
        node_of: &[usize],
        counts: &mut crate::ckpt::CleanCounts,
    ) -> Result<()> {
        let c = &self.core;
        let mut entries: Vec<(usize, Entry)> = Vec::new();
        for (&p, holders) in held {
            // 3. Every rank decides the same for every page: who keeps a copy, and whether it is
            //    a readable recovery copy.
            let keep = cleaning_keeps(policy, holders, node_of);
            let mask = keep.copies.iter().fold(0u64, |m, &(r, _)| m | 1 << r);
            let new_owner = if mask & (1 << keep.first) != 0 {
                keep.first
            } else {
                mask.trailing_zeros() as usize
            };
            // This rank's copy.
            if holders.iter().any(|h| h.0 == c.rank) {
                match keep.copies.iter().find(|k| k.0 == c.rank) {
                    Some(&(_, readable)) => {
                        let access = c.access(p);
                        if access == Access::Write {
                            c.set_access(p, Access::Read)?;
                        }
                        c.table.set(
                            p,
                            PageInfo {
                                // A loaded page that is not mapped here stays unmapped.
                                access: if access == Access::None {
                                    Access::None
                                } else {
                                    Access::Read
                                },
                                replicated: mask.count_ones() > 1,
                                owner: Some(new_owner),
                                written_epoch: None,
                                exclusive: false,
                            },
                        );
                        if let Some(area) = c.recovery.get() {
                            area.set_frame(
                                p,
                                readable.then_some(Copy {
                                    state: CopyState::ReadableRecovery,
                                    epoch,
                                }),
                            );
                        }
                        if readable {
                            counts.readable += 1;
                        } else {
                            counts.active += 1;
                        }
                    }
                    None => {
                        if c.access(p) != Access::None {
                            c.set_access(p, Access::None)?;
                        }
                        if let Some(area) = c.recovery.get() {
                            area.set_frame(p, None);
                        }
                        c.table.set(p, PageInfo::default());
                        c.frames
                            .punch_hole(p * c.page_size, c.page_size)
                            .map_err(|e| Error::io(format!("evicting page {p}"), e))?;
                        counts.evicted += 1;
                    }
                }
            }
            // The page's directory entry, at its home.
            if c.dir.home(p).0 == c.rank {
                let e = if mask == 0 {
                    Entry::default()
                } else {
                    Entry {
                        owner: Some(new_owner),
                        writable: false,
                        copyset: mask,
                        version: 1,
                    }
                };
                entries.push((p, e));
            }
        }
        // 4. The directory entries homed here, then the next epoch.
        for (p, e) in entries {
            c.dir.set_local(p, &e)?;
        }
        injected_error("ckpt-clean-error", epoch)?;
        c.epoch.store(epoch as u32 + 1, Ordering::Release);
        Ok(())
    }

    /// Detaches the backing file of the array at `first` (a permanent checkpoint that failed
    /// had attached it).
    pub(crate) fn detach(&self, first: usize) {
        let mut files = self.core.files.write().unwrap_or_else(|p| p.into_inner());
        files.retain(|m| m.first != first);
    }
}

/// What a rank holds in memory, and what a memory checkpoint now would add, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MemoryUse {
    /// Frames of this rank that hold a page.
    pub frames: u64,
    /// Recovery slots this rank's area has ever used (free ones keep their memory).
    pub slots: u64,
    /// Of them, free.
    pub free_slots: u64,
    /// Replicas this rank would send to its buddy partner (dirty pages no other node holds).
    pub outgoing: u64,
}

impl Svm {
    /// This rank's memory use, for the budget check before a memory checkpoint.
    pub(crate) fn memory_use(&self) -> MemoryUse {
        let c = &self.core;
        let ps = c.page_size as u64;
        let cur = c.epoch.load(Ordering::Acquire);
        let mut u = MemoryUse::default();
        for p in self.used_pages() {
            let i = c.table.get(p);
            if !i.holds_copy(c.rank) {
                continue;
            }
            u.frames += ps;
            if i.owner == Some(c.rank) && i.written_epoch == Some(cur) && !i.replicated {
                u.outgoing += ps;
            }
        }
        if let Some(area) = c.recovery.get() {
            let (used, free) = area.slot_counts();
            u.slots = used as u64 * ps;
            u.free_slots = free as u64 * ps;
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckpt::Cleaning::{self, *};

    /// Ranks 0 and 1 on node 0, ranks 2 and 3 on node 1.
    const NODES: [usize; 4] = [0, 0, 1, 1];

    fn keeps(policy: Cleaning, holders: &[(usize, u64)]) -> Vec<(usize, bool)> {
        cleaning_keeps(policy, holders, &NODES).copies
    }

    #[test]
    fn a_dirty_page_keeps_two_readable_recovery_copies_on_two_nodes() {
        // Owner 0 wrote it; 1 (same node) and 2 (other node) read it.
        let h = [(0, HELD_OWNER | HELD_DIRTY), (1, 0), (2, 0)];
        for policy in [KeepDirtyAndRecovery, KeepDirty] {
            assert_eq!(keeps(policy, &h), [(0, true), (2, true)], "{policy:?}");
        }
        // One active copy only, kept by the owner, under one-active.
        assert_eq!(keeps(OneActive, &h), [(0, false)]);
        // Nobody on another node: the owner's copy alone.
        assert_eq!(
            keeps(KeepDirty, &[(0, HELD_OWNER | HELD_DIRTY), (1, 0)]),
            [(0, true)]
        );
    }

    #[test]
    fn a_clean_page_keeps_one_active_copy() {
        let h = [(2, 0), (3, HELD_OWNER)];
        for policy in [KeepDirtyAndRecovery, KeepDirty, OneActive] {
            assert_eq!(keeps(policy, &h), [(3, false)], "{policy:?}");
        }
        // With no owner (loaded copies), the first holder keeps it.
        assert_eq!(keeps(KeepDirty, &[(1, 0), (2, 0)]), [(1, false)]);
    }

    #[test]
    fn earlier_readable_recovery_copies_are_kept_or_discarded_by_policy() {
        // Checkpointed in memory before: readable recovery copies at 1 and 3, owner 1.
        let h = [(1, HELD_OWNER | HELD_RECOVERY), (3, HELD_RECOVERY)];
        assert_eq!(keeps(KeepDirtyAndRecovery, &h), [(1, true), (3, true)]);
        assert_eq!(keeps(OneActive, &h), [(1, true), (3, true)]);
        // keep-dirty discards the earlier recovery copies: one copy of a clean page.
        assert_eq!(keeps(KeepDirty, &h), [(1, false)]);
        // The owner holds no recovery copy: one-active adds its active copy.
        let h = [(0, HELD_OWNER), (2, HELD_RECOVERY), (3, HELD_RECOVERY)];
        assert_eq!(keeps(OneActive, &h), [(2, true), (3, true), (0, false)]);
    }

    #[test]
    fn no_cleaning_keeps_everything_and_total_cleaning_nothing() {
        let h = [(0, HELD_OWNER | HELD_DIRTY), (1, HELD_RECOVERY), (2, 0)];
        assert_eq!(keeps(NoCleaning, &h), [(0, false), (1, true), (2, false)]);
        assert_eq!(keeps(TotalCleaning, &h), []);
        assert_eq!(cleaning_keeps(TotalCleaning, &h, &NODES).first, 0);
    }
}
