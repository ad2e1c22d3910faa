//! The job's view of the PFS volume: one [`NodeStore`] per node, opened by the node's leader
//! rank (the only rank that touches the node's disk root), and the catalog and committed epoch,
//! which every rank knows and which change only by a collective [`Volume::publish`].
//!
//! `publish` is the atomic, collective flush of decision 7: every node leader writes the new
//! page versions beside the old ones (the ping-pong slots of the store), the leaders vote
//! (phase 1: fsync and a `prepare` record each), and only if every node prepared do they commit
//! (phase 2: one `rename` per node). At restart, [`Volume::open`] finishes an interrupted
//! publish: if any node committed epoch E, every node had prepared E, and the others roll
//! forward; otherwise the prepared epoch is abandoned everywhere.

use super::{Catalog, FileMeta, NodeStore, PageState, StoreError};
use crate::api::agree;
use crate::cluster::NodeMap;
use crate::error::{Error, Result};
use crate::rma::{Comm, ReduceOp};
use std::path::Path;
use std::sync::{Mutex, RwLock};

/// The catalog and its committed epoch, the same on every rank.
#[derive(Debug, Clone, Default)]
pub(crate) struct VolumeState {
    /// The committed epoch of the volume (0: nothing ever committed).
    pub epoch: u64,
    /// Every file's metadata at that epoch.
    pub catalog: Catalog,
}

/// The PFS as one rank sees it.
#[derive(Debug)]
pub(crate) struct Volume {
    rank: usize,
    node_names: Vec<String>,
    leaders: Vec<usize>,
    store: Option<Mutex<NodeStore>>,
    state: RwLock<VolumeState>,
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::BadName { .. } => Error::Argument(e.to_string()),
            e => Error::Store(e.to_string()),
        }
    }
}

impl Volume {
    /// Opens the volume (collective). `dir` is this node's PFS directory; only the node's
    /// leader opens it. Finishes or abandons an interrupted publish, then agrees on the
    /// catalog: the newest committed one. A node whose disk root was lost adopts it (its pages
    /// are then missing there, and are read from their other copy).
    pub fn open(comm: &Comm, map: &NodeMap, dir: &Path) -> Result<Volume> {
        let rank = comm.rank();
        let node = map.node_of(rank);
        let leaders: Vec<usize> = (0..map.num_nodes()).map(|n| map.leader(n)).collect();
        let node_names: Vec<String> = (0..map.num_nodes())
            .map(|n| map.name(n).to_string())
            .collect();
        let is_leader = leaders[node] == rank;
        let store = agree(
            comm,
            if is_leader {
                NodeStore::open(dir, map.name(node))
                    .map(Some)
                    .map_err(Error::from)
            } else {
                Ok(None)
            },
        )?;
        let (committed, prepared) = store.as_ref().map_or((0, 0), |s| {
            (
                s.committed().map_or(0, |r| r.epoch),
                s.prepared().map_or(0, |r| r.epoch),
            )
        });
        let newest = comm.allreduce_u64(committed, ReduceOp::Max)?;
        let mut store = store;
        // Finish the interrupted publish, if any: roll forward to `newest`, abandon anything
        // newer (nobody committed it, so some node may not have prepared it).
        let fixed = (|| -> Result<()> {
            let Some(s) = store.as_mut() else {
                return Ok(());
            };
            if prepared == newest && committed < newest {
                tracing::info!(target: "psls::pfs", "node {}: rolling the PFS forward to epoch {newest}, committed on another node", map.name(node));
                s.commit(newest)?;
            } else if prepared > newest {
                tracing::info!(target: "psls::pfs", "node {}: abandoning PFS epoch {prepared}, which no node committed", map.name(node));
                s.abort()?;
            }
            Ok(())
        })();
        agree(comm, fixed)?;
        // The lowest rank that holds the newest record shares its catalog.
        let holder = match &store {
            Some(s) if s.committed().map_or(0, |r| r.epoch) == newest => rank as u64,
            _ => u64::MAX,
        };
        let holder = comm.allreduce_u64(holder, ReduceOp::Min)?;
        let catalog = if newest == 0 || holder == u64::MAX {
            Catalog::default()
        } else {
            let mine = match &store {
                Some(s) if rank as u64 == holder => postcard::to_allocvec(
                    &s.committed().map(|r| r.catalog.clone()).unwrap_or_default(),
                )
                .map_err(|e| Error::Store(format!("encoding the catalog: {e}")))?,
                _ => Vec::new(),
            };
            let bytes = comm.bcast_bytes(holder as usize, &mine)?;
            postcard::from_bytes(&bytes)
                .map_err(|e| Error::Store(format!("decoding the shared catalog: {e}")))?
        };
        tracing::debug!(target: "psls::pfs", "volume: newest epoch {newest}, catalog from rank {holder}, {} files", catalog.files.len());
        // A node that lost its disk root (or joined) adopts the catalog.
        let adopted = (|| -> Result<()> {
            if let Some(s) = store.as_mut() {
                if newest > 0 && s.committed().map_or(0, |r| r.epoch) < newest {
                    tracing::warn!(target: "psls::pfs", "node {}: its PFS records are older than epoch {newest} (disk root lost?); adopting the catalog, its pages will be read from their mirrors", map.name(node));
                    s.prepare(newest, catalog.clone())?;
                    s.commit(newest)?;
                }
                // Only now are this node's records the job's: delete what they do not list.
                s.collect_garbage()?;
            }
            Ok(())
        })();
        agree(comm, adopted)?;
        Ok(Volume {
            rank,
            node_names,
            leaders,
            store: store.map(Mutex::new),
            state: RwLock::new(VolumeState {
                epoch: newest,
                catalog,
            }),
        })
    }

    /// A copy of the catalog and its epoch.
    pub fn state(&self) -> VolumeState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The committed epoch.
    pub fn epoch(&self) -> u64 {
        self.state.read().unwrap_or_else(|p| p.into_inner()).epoch
    }

    /// The metadata of file `name`.
    pub fn file(&self, name: &str) -> Option<FileMeta> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.catalog.files.get(name).cloned()
    }

    /// Whether this rank is its node's leader (the one that opens the node's store).
    pub fn is_leader(&self) -> bool {
        self.store.is_some()
    }

    /// The leader ranks of the nodes that hold page `fpage` of `meta`: primary first, then
    /// mirror. A node of the file's layout that is not in this job is `None`.
    pub fn holders(&self, meta: &FileMeta, fpage: u64) -> [Option<usize>; 2] {
        let p = meta.layout.place(fpage, meta.nodes.len());
        let rank_of = |i: usize| {
            let name = meta.nodes.get(i)?;
            let n = self.node_names.iter().position(|x| x == name)?;
            Some(self.leaders[n])
        };
        [rank_of(p.primary), p.mirror.and_then(rank_of)]
    }

    /// The node names of this job, in node order.
    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut NodeStore) -> Result<T>) -> Result<T> {
        let Some(store) = &self.store else {
            return Err(Error::Protocol(format!(
                "rank {} is not a node leader and has no PFS store",
                self.rank
            )));
        };
        let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Reads this node's copy of each page of `fpages` of `meta` at the committed epoch, opening
    /// the file's page files once, and calls `each(fpage, state, data)` in order (leaders
    /// only). `each` runs under the store's lock.
    pub fn read_local_each(
        &self,
        meta: &FileMeta,
        fpages: &[u64],
        each: impl FnMut(u64, PageState, &[u8]),
    ) -> Result<()> {
        let epoch = self.epoch();
        let mut buf = vec![0u8; meta.page_size as usize];
        self.with_store(|s| Ok(s.read_pages(meta, fpages, epoch, &mut buf, each)?))
    }

    /// Starts the disk write-back of the pages written so far at the open epoch (leaders only;
    /// nothing to do elsewhere). Calling it between batches overlaps the disk with the rest of
    /// the flush.
    pub fn start_writeback(&self) {
        if let Some(store) = &self.store {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .start_writeback();
        }
    }

    /// Writes this node's copies of several runs of consecutive pages of `meta`, `(first page,
    /// data)` in ascending order, each a whole number of pages, for epoch `epoch` (leaders only;
    /// they become visible when `epoch` commits): one read and one write of the headers they
    /// span, and one write per extent of the node's data file.
    pub fn write_local_runs(
        &self,
        meta: &FileMeta,
        epoch: u64,
        runs: &[(u64, &[u8])],
    ) -> Result<()> {
        self.with_store(|s| Ok(s.write_runs(meta, epoch, runs)?))
    }

    /// Rewrites this node's bad or missing copy of page `fpage` with good data of epoch `epoch`.
    pub fn repair_local(&self, meta: &FileMeta, fpage: u64, epoch: u64, data: &[u8]) -> Result<()> {
        self.with_store(|s| Ok(s.repair_page(meta, fpage, epoch, data)?))
    }

    /// Publishes `catalog` as the next epoch, atomically and collectively. `write(epoch,
    /// catalog)` runs on every rank first and must write, on the leaders, every page that
    /// changes, at `epoch`; it may update the catalog (written ranges), identically on every
    /// rank.
    /// Then the leaders prepare, vote, and commit or abort together. On any error on any rank
    /// nothing is published, every rank returns an error, and the previous epoch stays in force.
    pub fn publish(
        &self,
        comm: &Comm,
        mut catalog: Catalog,
        write: impl FnOnce(u64, &mut Catalog) -> Result<()>,
    ) -> Result<u64> {
        let next = comm.allreduce_u64(self.next_epoch(), ReduceOp::Max)?;
        let written = write(next, &mut catalog);
        let prepared = written.and_then(|()| {
            crate::inject::point("pfs-vote", next);
            match &self.store {
                Some(_) => self.with_store(|s| Ok(s.prepare(next, catalog.clone())?)),
                None => Ok(()),
            }
        });
        let voted = agree(comm, prepared);
        if let Err(e) = voted {
            let _ = self.with_store_opt(|s| Ok(s.abort()?));
            return Err(e);
        }
        let committed = self.with_store_opt(|s| Ok(s.commit(next)?));
        agree(comm, committed)?;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.epoch = next;
        st.catalog = catalog;
        Ok(next)
    }

    /// The epoch number this rank would use for the next publish: above the committed epoch
    /// and above anything the store ever saw (an abandoned epoch is never reused).
    fn next_epoch(&self) -> u64 {
        let seen = self.store.as_ref().map_or(0, |s| {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .highest_epoch_seen()
        });
        self.epoch().max(seen) + 1
    }

    fn with_store_opt(&self, f: impl FnOnce(&mut NodeStore) -> Result<()>) -> Result<()> {
        match &self.store {
            Some(_) => self.with_store(f),
            None => Ok(()),
        }
    }

    /// Removes the data of `meta` from this node (after a catalog without it committed).
    pub fn remove_local(&self, meta: &FileMeta) -> Result<()> {
        self.with_store_opt(|s| Ok(s.remove_file(meta)?))
    }
}
