//! The checkpoint calls of the API: `checkpoint`, `checkpoint_now`, `protect`, and what a
//! restarted job learns.

use super::{agree, Psls};
use crate::ckpt::{CheckpointKind, CheckpointStats, Protected};
use crate::error::{Error, Result};
use crate::rma::ReduceOp;
use crate::svm::{Phase1, Placement};
use crate::sys::global::Pod;
use std::time::Instant;

impl Psls {
    /// Takes a checkpoint (collective): call it at the head of the main loop, where every
    /// rank's state is consistent. Every call takes a memory checkpoint (the permanent one
    /// comes with the cleaner). After it returns, a crash of every rank is survived: running
    /// the same command again on the same nodes restarts from here
    /// ([`Psls::restarted_from`]).
    pub fn checkpoint(&self) -> Result<CheckpointStats> {
        self.checkpoint_now(CheckpointKind::Memory)
    }

    /// Takes a checkpoint of the given kind now (collective).
    pub fn checkpoint_now(&self, kind: CheckpointKind) -> Result<CheckpointStats> {
        match kind {
            CheckpointKind::Memory => self.memory_checkpoint(),
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

    /// Where this rank's replicas go.
    fn placement(&self) -> Result<Placement> {
        let m = &self.node_map;
        let node = m.node_of(self.rank);
        let buddy = self.ring.buddy(node).filter(|&b| b != node).ok_or_else(|| {
            Error::Checkpoint(
                "a memory checkpoint keeps two copies of every page on two different nodes, and this job runs on one node: run on at least two nodes (PSLS_VIRTUAL_NODES=2 on one host)".into(),
            )
        })?;
        let ranks = m.ranks_on(buddy);
        let buddy_rank = ranks[m.local_index(self.rank) % ranks.len()];
        Ok(Placement {
            node_of: (0..self.size).map(|r| m.node_of(r)).collect(),
            buddy_rank,
        })
    }

    fn memory_checkpoint(&self) -> Result<CheckpointStats> {
        let comm = &self.comm;
        let place = agree(comm, self.placement())?;
        self.svm.open_recovery(comm, true)?;
        let area = self
            .svm
            .recovery()
            .ok_or_else(|| Error::Checkpoint("the recovery area did not open".into()))?;
        let epoch = comm.allreduce_u64(area.committed(), ReduceOp::Max)? + 1;
        let t0 = Instant::now();
        // Phase 1, then the vote: phase 1 ends in an agreement, and so does saving the private
        // state; a failure anywhere fails every rank here, and the checkpoint is abandoned.
        let mut p1 = Phase1::default();
        let voted = self
            .svm
            .phase1(comm, epoch, &place, &mut p1)
            .and_then(|()| agree(comm, self.ckpt.save_private(epoch)));
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
        let sum = |v: u64| comm.allreduce_u64(v, ReduceOp::Sum);
        let stats = CheckpointStats {
            epoch,
            kind: CheckpointKind::Memory,
            phase1: t1 - t0,
            commit: t2 - t1,
            phase2: t3 - t2,
            pages: sum(c.pages)?,
            bytes: sum(c.pages * ps)?,
            bytes_transferred: sum(c.bytes_sent)?,
            pages_reused: sum(c.reused)?,
            copies_freed: sum(c.slots_freed)?,
            slot_bytes: sum(slot_bytes)?,
            private_bytes,
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
