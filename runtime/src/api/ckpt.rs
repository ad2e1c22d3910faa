//! The checkpoint calls of the API: `checkpoint`, `checkpoint_now`, `protect`, and what a
//! restarted job learns.

use super::{agree, Psls};
use crate::ckpt::{CheckpointKind, CheckpointStats, Protected};
use crate::cluster::{BuddyRing, NodeMap};
use crate::error::{Error, Result};
use crate::svm::{Phase1, Placement};
use crate::sys::global::Pod;
use std::time::Instant;

impl Psls {
    /// Takes a checkpoint (collective): call it at the head of the main loop, where every
    /// rank's state is consistent. Every call takes a memory checkpoint, except every
    /// `PSLS_CKPT_PERMANENT_EVERY`-th call (10 by default), or a call
    /// `PSLS_CKPT_PERMANENT_SECONDS` or more after the last permanent checkpoint, which takes a
    /// permanent one. After it returns, a crash of every rank is survived: running the same
    /// command again on the same nodes restarts from here ([`Psls::restarted_from`]).
    pub fn checkpoint(&self) -> Result<CheckpointStats> {
        let due = self.ckpt.permanent_due(
            self.cfg.ckpt_permanent_every,
            self.cfg.ckpt_permanent_interval,
        );
        // The launcher's `--inject kill-rank:epoch=E` (and node faults) land here: the E-th
        // checkpoint of the job, counted from the one a restart came from.
        crate::inject::point("ckpt-begin", self.ckpt.epoch_floor() + self.ckpt.calls());
        // Rank 0's clock decides for everyone.
        let due = self.comm.bcast_bytes(0, &[u8::from(due)])?;
        if due.first() == Some(&1) {
            return self.checkpoint_now(CheckpointKind::Permanent);
        }
        if self.node_map.num_nodes() < 2 {
            if self.rank == 0 && self.ckpt.last().is_none() {
                tracing::info!(target: "psls::ckpt", "the job runs on one node, where a memory checkpoint cannot keep its two copies on two nodes: every checkpoint is a permanent one");
            }
            return self.checkpoint_now(CheckpointKind::Permanent);
        }
        if let Some(why) = self.over_budget()? {
            if self.rank == 0 {
                tracing::info!(target: "psls::ckpt", "{why}: taking a permanent checkpoint (the cleaner) instead");
            }
            return self.checkpoint_now(CheckpointKind::Permanent);
        }
        self.checkpoint_now(CheckpointKind::Memory)
    }

    /// Whether a memory checkpoint now would take a node over its memory budget
    /// (`PSLS_CKPT_MEMORY`), and why (collective). Phase 1 keeps the old recovery copies until
    /// the new ones are made, so a node must hold its frames, its recovery slots, and the
    /// replicas its ranks receive (beyond the free slots they can reuse).
    fn over_budget(&self) -> Result<Option<String>> {
        let m = &self.node_map;
        let u = self.svm.memory_use();
        let dest = self.placement().map_or(self.rank, |p| p.buddy_rank);
        let all = self.comm.allgather_u64s(&[
            u.frames,
            u.slots,
            u.free_slots,
            u.outgoing,
            dest as u64,
        ])?;
        let w = |b: &[u64], i: usize| b.get(i).copied().unwrap_or(0);
        let mut incoming = vec![0u64; self.size];
        for b in &all {
            if let Some(x) = incoming.get_mut(w(b, 4) as usize) {
                *x += w(b, 3);
            }
        }
        for n in 0..m.num_nodes() {
            let mut need = 0u64;
            for r in m.ranks_on(n) {
                let b = &all[r];
                need += w(b, 0) + w(b, 1) + incoming[r].saturating_sub(w(b, 2));
            }
            let res = self.resources[n];
            let memory = res.memory_bytes.min(res.os_memory_bytes).max(1);
            let budget = self.cfg.ckpt_memory.bytes(memory);
            if need > budget {
                return Ok(Some(format!(
                    "a memory checkpoint would need {:.1} MiB on node {} (frames, recovery copies and incoming replicas), over its budget of {:.1} MiB (PSLS_CKPT_MEMORY)",
                    need as f64 / (1u64 << 20) as f64,
                    m.name(n),
                    budget as f64 / (1u64 << 20) as f64
                )));
            }
        }
        Ok(None)
    }

    /// Takes a checkpoint of the given kind now (collective).
    pub fn checkpoint_now(&self, kind: CheckpointKind) -> Result<CheckpointStats> {
        match kind {
            CheckpointKind::Memory => self.memory_checkpoint(),
            CheckpointKind::Permanent => self.permanent_checkpoint(),
        }
    }

    /// The checkpoint epoch this run restarted from, if it is a restart.
    pub fn restarted_from(&self) -> Option<u64> {
        self.ckpt.restarted_from()
    }

    /// The figures of the last checkpoint this run took.
    pub fn last_checkpoint(&self) -> Option<CheckpointStats> {
        self.ckpt.last()
    }

    /// The name of this job's checkpoint set (`PSLS_CKPT_NAME`, or the program's name and the
    /// rank count).
    pub fn checkpoint_set(&self) -> &str {
        self.ckpt.set()
    }

    /// Registers private state of this rank (a loop counter, a residual…) under `name`: every
    /// checkpoint saves it, and after a restart this returns the saved value instead of
    /// `init`. Register each name once, before the main loop, in every run.
    pub fn protect<T: Pod>(&self, name: &str, init: T) -> Result<Protected<T>> {
        self.ckpt.protect(name, init)
    }

    /// The live arrays: (allocation serial, first page, pages).
    fn array_layout(&self) -> Vec<(u64, usize, usize)> {
        self.svm
            .arrays()
            .iter()
            .map(|a| (a.serial, a.first, a.pages))
            .collect()
    }

    /// Registers `len` bytes of the application's own memory at `ptr` as private state `name`
    /// (for the C and Fortran bindings): saved at every checkpoint, and, after a restart,
    /// overwritten with the saved bytes during this call.
    ///
    /// # Safety
    /// `ptr..ptr + len` must stay valid for reads and writes until [`Psls::finalize`], and must
    /// not be written while a checkpoint runs.
    pub unsafe fn protect_region(&self, name: &str, ptr: *mut u8, len: usize) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.ckpt.protect_region(name, ptr, len) }
    }

    /// Registers a byte region of this rank's private state under `name`, like
    /// [`Psls::protect`]: after a restart it holds the bytes the checkpoint saved.
    pub fn protect_bytes(&self, name: &str, init: Vec<u8>) -> Result<crate::ckpt::ProtectedBytes> {
        self.ckpt.protect_bytes(name, init)
    }

    /// Where this rank's replicas go.
    fn placement(&self) -> Result<Placement> {
        placement(&self.node_map, &self.ring, self.rank)
    }

    fn memory_checkpoint(&self) -> Result<CheckpointStats> {
        let comm = &self.comm;
        // Every rank's service thread is quiet before the agreement below, which every rank
        // enters only once it has stopped touching global memory: phase 1 needs no barrier.
        self.svm.quiesce();
        let (area, epoch) = self.svm.next_checkpoint(comm, self.ckpt.epoch_floor(), 0)?;
        let place = agree(comm, self.placement())?;
        let t0 = Instant::now();
        // Phase 1, then the vote: phase 1 ends in an agreement, and so does saving the private
        // state; a failure anywhere fails every rank here, and the checkpoint is abandoned.
        let mut p1 = Phase1::default();
        let voted = self
            .svm
            .phase1(comm, epoch, &place, &mut p1)
            .and_then(|()| {
                let saved =
                    self.ckpt
                        .save_private(comm, place.buddy_rank, epoch, &self.array_layout());
                agree(comm, saved)
            });
        let private_bytes = match voted {
            Ok(b) => b,
            Err(e) => {
                self.svm.abort_memory(&p1);
                self.ckpt.drop_private_except(epoch - 1);
                tracing::warn!(target: "psls::ckpt", "checkpoint {epoch} abandoned: {e}");
                return Err(e);
            }
        };
        let t1 = Instant::now();
        // Every rank voted yes. The commit point: this rank's record says `epoch`.
        crate::inject::point("ckpt-vote", epoch);
        area.set_committed(epoch);
        crate::inject::point("ckpt-commit", epoch);
        let t2 = Instant::now();
        self.svm.phase2(&mut p1)?;
        self.ckpt.drop_private_except(epoch);
        let t3 = Instant::now();
        let ps = self.svm.page_size() as u64;
        let c = p1.counts;
        let slot_bytes = area.slots_in_use().len() as u64 * ps;
        let t =
            comm.allreduce_sum_u64s(&[c.pages, c.bytes_sent, c.reused, c.slots_freed, slot_bytes])?;
        let stats = CheckpointStats {
            epoch,
            kind: CheckpointKind::Memory,
            phase1: t1 - t0,
            commit: t2 - t1,
            phase2: t3 - t2,
            pages: t[0],
            bytes: t[0] * ps,
            bytes_transferred: t[1],
            pages_reused: t[2],
            copies_freed: t[3],
            slot_bytes: t[4],
            private_bytes,
            pfs_epoch: 0,
            cleaned: Default::default(),
        };
        if self.rank == 0 {
            tracing::info!(
                target: "psls::ckpt",
                "memory checkpoint {epoch}: {} pages ({} bytes), {} bytes to buddies, {} pages reused without transfer, {} old copies freed, {} bytes in recovery slots; phase 1 {:.2} ms, commit {:.2} ms, phase 2 {:.2} ms",
                stats.pages,
                stats.bytes,
                stats.bytes_transferred,
                stats.pages_reused,
                stats.copies_freed,
                stats.slot_bytes,
                stats.phase1.as_secs_f64() * 1e3,
                stats.commit.as_secs_f64() * 1e3,
                stats.phase2.as_secs_f64() * 1e3,
            );
        }
        self.ckpt.set_last(stats);
        Ok(stats)
    }
}

/// Where the replicas of `rank` go: the rank of the buddy node that keeps them (and a copy of
/// its private state), chosen by the rank's index on its node.
pub(super) fn placement(m: &NodeMap, ring: &BuddyRing, rank: usize) -> Result<Placement> {
    let node = m.node_of(rank);
    let buddy = ring.buddy(node).filter(|&b| b != node).ok_or_else(|| {
        Error::Checkpoint(
            "a memory checkpoint keeps two copies of every page on two different nodes, and this job runs on one node: run on at least two nodes (PSLS_VIRTUAL_NODES=2 on one host)".into(),
        )
    })?;
    let ranks = m.ranks_on(buddy);
    let buddy_rank = ranks[m.local_index(rank) % ranks.len()];
    Ok(Placement {
        node_of: (0..m.num_ranks()).map(|r| m.node_of(r)).collect(),
        buddy_rank,
    })
}

/// The hidden PFS file that keeps the `serial`-th array of checkpoint set `set`.
/// The layout of the checkpoint file of an array of `pages` pages on `nodes` nodes: stripes of
/// one node's share (never below `stripe_pages`), starting at the view's first node.
pub(super) fn array_layout(
    pages: usize,
    nodes: usize,
    stripe_pages: u32,
) -> crate::pfs::layout::Layout {
    let share = pages.div_ceil(nodes.max(1)).max(1);
    crate::pfs::layout::Layout {
        stripe_pages: u32::try_from(share)
            .unwrap_or(u32::MAX)
            .max(stripe_pages.max(1)),
        rotation: 0,
    }
}

pub(super) fn array_file(set: &str, serial: u64) -> String {
    format!(".psls-ckpt.{set}.array-{serial}")
}

impl Psls {
    /// The permanent checkpoint (the cleaner, paper section 3.2), collective: every live
    /// volatile array gets a hidden PFS file (created once, at the first permanent checkpoint
    /// that sees it), and every page of mapped files and arrays modified since the last flush
    /// is written in place to its primary and its mirror, with every rank's private state in
    /// the catalog, in one atomic PFS epoch: the commit point. Then memory is cleaned under
    /// `PSLS_CKPT_CLEANING`.
    fn permanent_checkpoint(&self) -> Result<CheckpointStats> {
        let comm = &self.comm;
        let (area, epoch) = self.svm.next_checkpoint(comm, self.ckpt.epoch_floor(), 1)?;
        let t0 = Instant::now();
        self.svm.quiesce();
        comm.barrier()?;
        let dirty = self.svm.dirty_owned();
        let ps = self.svm.page_size() as u64;
        let set = self.ckpt.set().to_string();
        let st = self.volume.state();
        let mut catalog = st.catalog;
        for m in self.svm.mappings() {
            if let Some(c) = catalog.files.get_mut(&m.meta.name) {
                if c.id == m.meta.id {
                    c.size = m.meta.size;
                }
            }
        }
        let old = catalog.checkpoints.get(&set).cloned().unwrap_or_default();
        let live = self.svm.arrays();
        let mut arrays = Vec::new();
        let mut attached = Vec::new();
        for a in &live {
            let name = array_file(&set, a.serial);
            if !catalog.files.contains_key(&name) {
                let (mut c, mut meta) =
                    self.with_new_file(catalog, st.epoch + 1, &name, a.pages as u64 * ps)?;
                // An array's checkpoint file is laid out in one stripe per node, in view order:
                // a block-distributed array then has each node's block as its primary there
                // (written from its own frames) and as its mirror on the next node (sent there in
                // large runs), and a flush writes long runs instead of two pages at a time.
                let layout = array_layout(a.pages, meta.nodes.len(), self.cfg.stripe_pages);
                meta.layout = layout;
                if let Some(m) = c.files.get_mut(&name) {
                    m.layout = layout;
                }
                catalog = c;
                self.svm.attach(a.first, a.pages, meta);
                attached.push(a.first);
            }
            arrays.push((a.serial, name));
        }
        // The files of arrays freed since the last permanent checkpoint go.
        let gone: Vec<crate::pfs::FileMeta> = old
            .arrays
            .iter()
            .filter(|(s, _)| !live.iter().any(|a| a.serial == *s))
            .filter_map(|(_, n)| catalog.files.remove(n))
            .collect();
        let private = comm.allgather_bytes(&self.ckpt.encode_private(&self.array_layout()))?;
        let private_bytes = private.get(self.rank).map_or(0, |b| b.len() as u64);
        catalog.checkpoints.insert(
            set.clone(),
            crate::pfs::PermanentCheckpoint {
                epoch,
                private,
                arrays,
            },
        );
        let t1 = Instant::now();
        crate::inject::point("ckpt-permanent", epoch);
        // The commit point: the PFS publishes files, arrays and private state at once.
        let pfs_epoch = match self.svm.flush_files(comm, &self.volume, catalog) {
            Ok(e) => e,
            Err(e) => {
                for first in attached {
                    self.svm.detach(first);
                }
                tracing::warn!(target: "psls::ckpt", "permanent checkpoint {epoch} abandoned: {e}");
                return Err(e);
            }
        };
        for meta in gone {
            agree(comm, self.volume.remove_local(&meta))?;
        }
        area.set_committed(epoch);
        crate::inject::point("ckpt-permanent-committed", epoch);
        let t2 = Instant::now();
        let place_nodes: Vec<usize> = (0..self.size).map(|r| self.node_map.node_of(r)).collect();
        let cleaned = self
            .svm
            .clean(comm, self.cfg.ckpt_cleaning, epoch, &dirty, &place_nodes)?;
        self.ckpt.drop_private_except(epoch);
        self.ckpt.save_hint(epoch, &self.svm.held_pages());
        self.ckpt.permanent_taken();
        let t3 = Instant::now();
        let t = comm.allreduce_sum_u64s(&[
            dirty.len() as u64,
            cleaned.active,
            cleaned.readable,
            cleaned.evicted,
            cleaned.discarded,
        ])?;
        let pages = t[0];
        let cleaned = crate::ckpt::CleanCounts {
            active: t[1],
            readable: t[2],
            evicted: t[3],
            discarded: t[4],
        };
        let stats = CheckpointStats {
            epoch,
            kind: CheckpointKind::Permanent,
            phase1: t1 - t0,
            commit: t2 - t1,
            phase2: t3 - t2,
            pages,
            bytes: pages * ps,
            bytes_transferred: 0,
            pages_reused: 0,
            copies_freed: cleaned.discarded,
            slot_bytes: 0,
            private_bytes,
            pfs_epoch,
            cleaned,
        };
        if self.rank == 0 {
            tracing::info!(
                target: "psls::ckpt",
                "permanent checkpoint {epoch} (PFS epoch {pfs_epoch}): {} pages ({} bytes) written to disk; cleaning {:?} kept {} active and {} readable recovery copies, evicted {}, discarded {} recovery slots; prepare {:.2} ms, flush and commit {:.2} ms, cleaning {:.2} ms",
                stats.pages,
                stats.bytes,
                self.cfg.ckpt_cleaning.name(),
                cleaned.active,
                cleaned.readable,
                cleaned.evicted,
                cleaned.discarded,
                stats.phase1.as_secs_f64() * 1e3,
                stats.commit.as_secs_f64() * 1e3,
                stats.phase2.as_secs_f64() * 1e3,
            );
        }
        self.ckpt.set_last(stats);
        Ok(stats)
    }

    /// Removes this job's permanent checkpoint from the PFS (collective; at a normal
    /// finalize): its catalog entry and the hidden files of its arrays.
    pub(super) fn remove_permanent_checkpoint(&self) -> Result<()> {
        let set = self.ckpt.set().to_string();
        let mut catalog = self.volume.state().catalog;
        let Some(pc) = catalog.checkpoints.remove(&set) else {
            return Ok(());
        };
        let gone: Vec<crate::pfs::FileMeta> = pc
            .arrays
            .iter()
            .filter_map(|(_, n)| catalog.files.remove(n))
            .collect();
        self.volume.publish(&self.comm, catalog, |_, _| Ok(()))?;
        for meta in gone {
            agree(&self.comm, self.volume.remove_local(&meta))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::array_layout;

    #[test]
    fn an_array_file_has_one_stripe_per_node_from_the_first_node() {
        // 4096 pages on 4 nodes: node k keeps pages 1024k.. as primaries, its neighbour mirrors.
        let l = array_layout(4096, 4, 1);
        assert_eq!((l.stripe_pages, l.rotation), (1024, 0));
        for (page, node) in [(0, 0), (1023, 0), (1024, 1), (3072, 3), (4095, 3)] {
            let p = l.place(page, 4);
            assert_eq!(
                (p.primary, p.mirror),
                (node, Some((node + 1) % 4)),
                "page {page}"
            );
        }
        // Uneven shares round up; a configured stripe larger than a share wins; nothing is 0.
        assert_eq!(array_layout(10, 4, 1).stripe_pages, 3);
        assert_eq!(array_layout(10, 4, 8).stripe_pages, 8);
        assert_eq!(array_layout(0, 0, 0).stripe_pages, 1);
    }
}
