//! Mapped PFS files in the global range.
//!
//! A mapped file is a run of global pages whose backing is a PFS file instead of zeros. The
//! first time any rank touches such a page (its directory entry has no owner), the faulting
//! rank asks the leader of the page's primary node to `LOAD` it: that service thread reads the
//! page from its disk root into its own frame and becomes the owner of a read copy; from then on
//! the ordinary protocol applies. If the primary's copy is missing or fails its checksum, the
//! mirror's leader loads it instead, and the primary is told to `REPAIR` its copy from the
//! mirror's frame. Pages the catalog says were never written read as zeros without asking any
//! disk; a written page missing or bad on both nodes gives an error that names the file and the
//! page.
//!
//! Nothing reaches disk between flushes: [`Svm::flush_files`] collects every dirty page of every
//! mapped file, and the node leaders write them to their primaries and mirrors under the
//! volume's atomic, collective publish.

use super::{Core, PageInfo, Svm};
use crate::error::{Error, Result};
use crate::pfs::{Catalog, FileMeta, PageState, Volume};
use crate::rma::Comm;
use crate::sys::vm::Access;
use std::sync::atomic::Ordering;

/// A file mapped at `first`: global pages `first..first + reserved`; the file's pages are the
/// first `meta.size.div_ceil(page_size)` of them.
#[derive(Debug, Clone)]
pub(crate) struct FileMap {
    pub first: usize,
    pub reserved: usize,
    pub meta: FileMeta,
}

/// Status words of a `LOAD` or `REPAIR` acknowledgement (low byte; the epoch of a loaded copy
/// is in the bits above).
pub(super) const LOADED: u64 = 0;
pub(super) const ABSENT: u64 = 1;
pub(super) const CORRUPT: u64 = 2;
pub(super) const FAILED: u64 = 3;

/// A `LOAD_RUN` request: (holder, first page, mask of the pages from it to load).
type LoadAsk = (usize, usize, u64);

impl Core {
    /// The mapped file holding global `page`, and the page's number in the file.
    pub(super) fn file_page(&self, page: usize) -> Option<(FileMeta, u64)> {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        files
            .iter()
            .find(|m| page >= m.first && page < m.first + m.reserved)
            .map(|m| (m.meta.clone(), (page - m.first) as u64))
    }

    /// Whether global `page` belongs to a mapped file and has data on disk (it was written and
    /// flushed once), so that its first touch must load it.
    pub(super) fn has_file_data(&self, page: usize) -> bool {
        // Looked up in place: this runs for every page a claim considers.
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        files
            .iter()
            .find(|m| page >= m.first && page < m.first + m.reserved)
            .is_some_and(|m| m.meta.was_written((page - m.first) as u64))
    }

    /// Brings a never-loaded file page into some rank's frame (the caller holds the page's
    /// directory lock and saw no owner). Returns the rank that now holds it, or `None` when the
    /// page is in no file or was never written (it reads as zeros).
    pub(super) fn load_file_page(&self, page: usize) -> Result<Option<usize>> {
        let Some((meta, fpage)) = self.file_page(page) else {
            return Ok(None);
        };
        let Some(vol) = &self.volume else {
            return Ok(None);
        };
        if !meta.was_written(fpage) {
            // Never written: zeros, and no disk to ask.
            return Ok(None);
        }
        let [primary, mirror] = vol.holders(&meta, fpage);
        let mut statuses = Vec::new();
        for holder in [primary, mirror].into_iter().flatten() {
            let ack = self.ask(super::service::LOAD, page, holder, 0)?;
            let status = ack & 0xff;
            if status == LOADED {
                // Repair the primary from the mirror's frame if its copy was bad or missing.
                if let (Some(p), Some(&(_, first))) = (primary, statuses.first()) {
                    if p != holder && first == FAILED {
                        tracing::warn!(target: "psls::pfs", "file {:?} page {fpage}: the primary copy on rank {p}'s node is unreadable; read from the mirror", meta.name);
                    }
                    if p != holder && (first == CORRUPT || first == ABSENT) {
                        let epoch = ack >> 8;
                        let r = self.ask(
                            super::service::REPAIR,
                            page,
                            p,
                            (holder as u64) | (epoch << 16),
                        )?;
                        if r & 0xff == LOADED {
                            tracing::warn!(target: "psls::pfs", "file {:?} page {fpage}: the primary copy on rank {p}'s node was {}; repaired from the mirror", meta.name, if first == CORRUPT { "corrupt" } else { "missing" });
                        } else {
                            tracing::error!(target: "psls::pfs", "file {:?} page {fpage}: repairing the primary copy failed (see rank {p}'s log)", meta.name);
                        }
                    }
                }
                return Ok(Some(holder));
            }
            // A copy its node could not read (its disk failed: FAILED) is passed over like a
            // corrupt one: the mirror is tried, but nobody repairs onto that disk.
            statuses.push((holder, status));
        }
        if statuses.iter().any(|&(_, s)| s == CORRUPT || s == FAILED) {
            let what: Vec<String> = statuses
                .iter()
                .map(|&(r, s)| {
                    format!(
                        "the copy on rank {r}'s node is {}",
                        match s {
                            CORRUPT => "corrupt",
                            FAILED => "unreadable (see that rank's log)",
                            _ => "missing",
                        }
                    )
                })
                .collect();
            return Err(Error::Store(format!(
                "PFS file {:?}, page {fpage}: no good copy left ({}); run `psls-pfs verify {}`",
                meta.name,
                what.join(", "),
                meta.name
            )));
        }
        if primary.is_none() && mirror.is_none() {
            return Err(Error::Store(format!(
                "PFS file {:?}, page {fpage}: neither node that keeps it ({:?}) is part of this job",
                meta.name, meta.nodes
            )));
        }
        // The page was written and published, yet no node has it: its data is lost, and
        // reading zeros instead would hide that.
        Err(Error::Store(format!(
            "PFS file {:?}, page {fpage}: both copies are missing (their disk roots lost the \
             data); run `psls-pfs verify {}`",
            meta.name, meta.name
        )))
    }

    /// Loads the pages of `run` (locked, with their entries) that nobody holds from their
    /// primaries' disks, every request in flight at once: a sequential reader of a file pays
    /// one round trip per run, not one per page. Returns, for each page, whether someone holds
    /// it now; a loaded page's entry names its loader the owner of a read copy. A page whose
    /// primary is missing, bad or out of the job is left unloaded: the fault on it tries the
    /// mirror, repairs the primary, or reports, as for a single page.
    pub(super) fn load_run(
        &self,
        run: &mut [(usize, super::directory::Entry)],
    ) -> Result<Vec<bool>> {
        let mut held: Vec<bool> = run.iter().map(|(_, e)| e.owner.is_some()).collect();
        let Some(vol) = &self.volume else {
            return Ok(held);
        };
        // One request per holder and per 64 pages of the run.
        let mut asks: Vec<LoadAsk> = Vec::new();
        for (q, e) in run.iter() {
            if e.owner.is_some() {
                continue;
            }
            let Some((meta, fpage)) = self.file_page(*q) else {
                continue;
            };
            if !meta.was_written(fpage) {
                continue;
            }
            let Some(primary) = vol.holders(&meta, fpage)[0] else {
                continue;
            };
            let base = run[0].0 + (q - run[0].0) / 64 * 64;
            match asks.iter_mut().find(|a| a.0 == primary && a.1 == base) {
                Some(a) => a.2 |= 1 << (q - base),
                None => asks.push((primary, base, 1 << (q - base))),
            }
        }
        let (mine, remote): (Vec<LoadAsk>, Vec<LoadAsk>) =
            asks.iter().partition(|a| a.0 == self.rank);
        let targets: Vec<(usize, usize)> = remote.iter().map(|a| (a.0, a.1)).collect();
        // Every holder's request is in flight at once.
        let acks =
            self.request_replies_with(super::service::LOAD_RUN, &targets, |i| remote[i].2)?;
        let mut loaded: Vec<LoadAsk> = remote
            .iter()
            .zip(&acks)
            .map(|(&(h, base, mask), ack)| (h, base, ack[1] & mask))
            .collect();
        for (h, base, mask) in mine {
            loaded.push((h, base, self.load_masked(base, mask)));
        }
        for (k, (q, e)) in run.iter_mut().enumerate() {
            let Some(&(holder, _, _)) = loaded.iter().find(|&&(_, base, mask)| {
                *q >= base && *q - base < 64 && mask & (1 << (*q - base)) != 0
            }) else {
                continue;
            };
            e.owner = Some(holder);
            e.writable = false;
            e.copyset = 1 << holder;
            held[k] = true;
        }
        Ok(held)
    }

    /// Serves `LOAD_RUN`: loads the pages `base + i` for each bit `i` of `mask` from this
    /// node's disk root, the pages of one file together; returns the mask of the pages loaded.
    pub(super) fn load_masked(&self, base: usize, mask: u64) -> u64 {
        let pages: Vec<usize> = (0..64)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| base + i)
            .collect();
        let file_of = |p: usize| self.file_page(p).map(|(m, fp)| (m.id, p - fp as usize));
        let mut loaded = 0;
        let mut k = 0;
        while k < pages.len() {
            let file = file_of(pages[k]);
            let mut e = k + 1;
            while e < pages.len() && file.is_some() && file_of(pages[e]) == file {
                e += 1;
            }
            match self.load_local_each(&pages[k..e]) {
                Ok(status) => {
                    for (&p, s) in pages[k..e].iter().zip(status) {
                        if s & 0xff == LOADED {
                            loaded |= 1 << (p - base);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(target: "psls::pfs", "loading pages {}..={}: {err}", pages[k], pages[e - 1]);
                }
            }
            k = e;
        }
        loaded
    }

    /// Sends one request to `target` (possibly this rank) and returns its acknowledgement's
    /// status word.
    fn ask(&self, kind: u64, page: usize, target: usize, arg: u64) -> Result<u64> {
        if target == self.rank {
            return Ok(self.serve_file_request(kind, page, arg));
        }
        let acks = self.request_each_with(kind, &[(target, page)], arg)?;
        Ok(acks[0])
    }

    /// Serves `LOAD` and `REPAIR` on a node leader; returns the acknowledgement's status word.
    pub(super) fn serve_file_request(&self, kind: u64, page: usize, arg: u64) -> u64 {
        let r = if kind == super::service::LOAD {
            self.load_local(page)
        } else {
            self.repair_local(page, (arg & 0xffff) as usize, arg >> 16)
        };
        r.unwrap_or_else(|e| {
            tracing::error!(target: "psls::pfs", "serving a PFS request for page {page}: {e}");
            FAILED
        })
    }

    /// Reads this node's copy of file page `page` into this rank's frame, as a clean read copy.
    fn load_local(&self, page: usize) -> Result<u64> {
        let mut status = self.load_local_each(&[page])?;
        status
            .pop()
            .ok_or_else(|| Error::Protocol("a load returned no status".into()))
    }

    /// [`Core::load_local`] for each of `pages` (all in one mapped file, ascending), opening the
    /// file's page files once; returns each page's status word. A page that was read but could
    /// not be installed is `FAILED` (logged) without failing the others, so that the status of
    /// every page installed here reaches the requester and the directory.
    fn load_local_each(&self, pages: &[usize]) -> Result<Vec<u64>> {
        let Some(&first) = pages.first() else {
            return Ok(Vec::new());
        };
        let (Some((meta, fpage)), Some(vol)) = (self.file_page(first), &self.volume) else {
            return Err(Error::Protocol(format!(
                "asked to load global page {first}, which is in no file mapped here"
            )));
        };
        let start = first - fpage as usize;
        let fpages: Vec<u64> = pages.iter().map(|&p| (p - start) as u64).collect();
        let mut status = Vec::with_capacity(pages.len());
        vol.read_local_each(&meta, &fpages, |fpage, state, data| {
            let page = start + fpage as usize;
            status.push(match state {
                PageState::Present { epoch } => match self.install_loaded(page, data) {
                    Ok(()) => LOADED | (epoch << 8),
                    Err(e) => {
                        tracing::error!(target: "psls::pfs", "file {:?} page {fpage}: loading it into this rank's frame: {e}", meta.name);
                        FAILED
                    }
                },
                PageState::Absent => ABSENT,
                PageState::Corrupt { why } => {
                    tracing::warn!(target: "psls::pfs", "file {:?} page {fpage}: this node's copy is corrupt: {why}", meta.name);
                    CORRUPT
                }
            });
        })?;
        Ok(status)
    }

    /// Puts `data`, a page read from this node's disk, in this rank's frame as its clean copy
    /// of `page`, which this rank owns from now on. The page is not mapped here: a node loads
    /// every page of its stripes that any rank reads, and mapping each one readable would cut
    /// this rank's mapping into two pieces per page (a node keeping every fourth page of a
    /// 1 GiB file would pass the default `vm.max_map_count` of 65530). Other ranks read the
    /// frame through RMA; this rank's own first touch maps it without a transfer.
    fn install_loaded(&self, page: usize, data: &[u8]) -> Result<()> {
        self.frames_win
            .window()
            .local_write(page * self.page_size, data)?;
        self.table.set(
            page,
            PageInfo {
                access: self.access(page),
                replicated: false,
                owner: Some(self.rank),
                written_epoch: None,
                exclusive: false,
            },
        );
        self.counters.pages_loaded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Rewrites this node's copy of file page `page` from `from`'s frame (which holds a good
    /// copy of `epoch`, under the page's directory lock held by the requester).
    fn repair_local(&self, page: usize, from: usize, epoch: u64) -> Result<u64> {
        let (Some((meta, fpage)), Some(vol)) = (self.file_page(page), &self.volume) else {
            return Err(Error::Protocol(format!(
                "asked to repair global page {page}, which is in no file mapped here"
            )));
        };
        let mut buf = vec![0u8; self.page_size];
        self.frames_win
            .epoch()
            .get(from, page * self.page_size, &mut buf)?;
        vol.repair_local(&meta, fpage, epoch, &buf)?;
        Ok(LOADED)
    }
}

impl Svm {
    /// Maps `meta` into the global range (collective): reserves room for `reserve` bytes, of
    /// which the file's current size is usable. Returns the address, the same on every rank.
    pub fn map_file(&self, comm: &Comm, meta: FileMeta, reserve: usize) -> Result<usize> {
        let ps = self.core.page_size;
        if meta.page_size as usize != ps {
            return Err(Error::Store(format!(
                "PFS file {:?} has pages of {} bytes, but this job's page size is {ps}; set PSLS_PAGE_SIZE={} to map it",
                meta.name, meta.page_size, meta.page_size
            )));
        }
        let reserve = reserve.max(meta.size as usize).max(ps);
        let start = self.reserve(comm, reserve)?;
        let pages = (meta.size as usize).div_ceil(ps);
        let reserved = reserve.div_ceil(ps);
        {
            let mut files = self.core.files.write().unwrap_or_else(|p| p.into_inner());
            files.push(FileMap {
                first: start,
                reserved,
                meta,
            });
        }
        for p in start..start + pages {
            self.core.allocated[p].store(true, Ordering::Release);
        }
        // No rank may touch the file before every rank knows the mapping: a leader serving a
        // LOAD looks the page up in it.
        comm.barrier()?;
        Ok(self.core.base + start * ps)
    }

    /// Every mapped file.
    pub fn mappings(&self) -> Vec<FileMap> {
        self.core
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The file mapped at `addr`.
    pub fn mapping(&self, addr: usize) -> Option<FileMap> {
        let page = (addr.checked_sub(self.core.base)?) / self.core.page_size;
        let files = self.core.files.read().unwrap_or_else(|p| p.into_inner());
        files.iter().find(|m| m.first == page).cloned()
    }

    /// Replaces the metadata of the file mapped at `addr` (after its catalog committed), and
    /// makes its pages up to the new size usable. The new size must fit the reservation.
    pub fn remap_meta(&self, addr: usize, meta: FileMeta) -> Result<()> {
        let ps = self.core.page_size;
        let first = (addr - self.core.base) / ps;
        let mut files = self.core.files.write().unwrap_or_else(|p| p.into_inner());
        let Some(m) = files.iter_mut().find(|m| m.first == first) else {
            return Err(Error::Protocol(format!("no file is mapped at {addr:#x}")));
        };
        let pages = (meta.size as usize).div_ceil(ps);
        if pages > m.reserved {
            return Err(Error::Protocol(format!(
                "file {:?} grows past its reservation",
                meta.name
            )));
        }
        for p in first..first + pages {
            self.core.allocated[p].store(true, Ordering::Release);
        }
        m.meta = meta;
        Ok(())
    }

    /// Unmaps the file at `addr` (collective): its memory copies are dropped without writing
    /// them (flush first to keep them).
    pub fn unmap_file(&self, comm: &Comm, addr: usize) -> Result<()> {
        let Some(m) = self.mapping(addr) else {
            return Err(Error::Protocol(format!("no file is mapped at {addr:#x}")));
        };
        self.free(comm, addr, m.reserved * self.core.page_size)?;
        let mut files = self.core.files.write().unwrap_or_else(|p| p.into_inner());
        files.retain(|f| f.first != m.first);
        Ok(())
    }

    /// Publishes `catalog` and every dirty page of every mapped file as the volume's next epoch,
    /// atomically (collective; every rank must have stopped writing mapped memory). Returns the
    /// new epoch. On error nothing is published and the pages stay dirty.
    pub fn flush_files(&self, comm: &Comm, vol: &Volume, mut catalog: Catalog) -> Result<u64> {
        let c = &self.core;
        let ps = c.page_size;
        self.quiesce();
        comm.barrier()?;
        // 1. The pages this rank holds dirty; write-protect them so that later stores fault
        //    and mark them dirty again. A rank that fails here (an `mprotect` refused) fails
        //    every rank at the exchange below, instead of leaving them waiting in it.
        let files: Vec<FileMap> = c.files.read().unwrap_or_else(|p| p.into_inner()).clone();
        let step1 = (|| {
            let mut mine: Vec<u64> = Vec::new();
            for m in &files {
                let pages = (m.meta.size as usize).div_ceil(ps);
                let mut writable = super::checkpoint::ProtectRuns::default();
                for p in m.first..m.first + pages {
                    let i = c.table.get(p);
                    let dirty = i.owner == Some(c.rank)
                        && i.access != Access::None
                        && i.written_epoch.is_some();
                    writable.visit(c, p, dirty && i.access == Access::Write, i.access)?;
                    if dirty {
                        mine.push(p as u64);
                    }
                }
                let _ = writable.finish(c)?;
            }
            if crate::inject::error_point("pfs-protect-error", vol.epoch() + 1) {
                return Err(Error::Protocol(
                    "injected error at pfs-protect-error (PSLS_FAULT)".into(),
                ));
            }
            Ok(mine)
        })();
        // 2. Everyone learns every dirty page and its owner.
        let all = crate::api::agree_gather(comm, step1)?;
        let mine = &all[c.rank];
        let mut dirty: Vec<(usize, usize)> = Vec::new();
        for (owner, pages) in all.iter().enumerate() {
            dirty.extend(pages.iter().map(|&p| (p as usize, owner)));
        }
        dirty.sort_unstable();
        let total = dirty.len();
        // The catalog records which pages were ever written (the same on every rank).
        for m in &files {
            let end = m.first + m.reserved;
            let lo = dirty.partition_point(|&(p, _)| p < m.first);
            let hi = dirty.partition_point(|&(p, _)| p < end);
            if lo == hi {
                continue;
            }
            if let Some(cm) = catalog.files.get_mut(&m.meta.name) {
                if cm.id == m.meta.id {
                    cm.mark_written(dirty[lo..hi].iter().map(|&(p, _)| (p - m.first) as u64));
                }
            }
        }
        // 3. Every owner sends its dirty pages to the leaders of their primary and mirror
        //    nodes, in rounds of one MPI_Alltoallv each, and the leaders write them at the new
        //    epoch; then the volume votes and commits.
        let t_start = std::time::Instant::now();
        let mut times = FlushTimes::default();
        let mut t_written = std::time::Duration::ZERO;
        let epoch = vol.publish(comm, catalog, |epoch, _| {
            let r = self.push_pages(comm, vol, epoch, &files, &dirty, &mut times);
            t_written = t_start.elapsed();
            r
        })?;
        // 4. Committed: this rank's pages are clean, and the mappings know the written ranges.
        {
            let committed = vol.state().catalog;
            let mut maps = c.files.write().unwrap_or_else(|p| p.into_inner());
            for m in maps.iter_mut() {
                if let Some(cm) = committed
                    .files
                    .get(&m.meta.name)
                    .filter(|cm| cm.id == m.meta.id)
                {
                    m.meta.written = cm.written.clone();
                }
            }
        }
        for &p in mine {
            c.table.update(p as usize, |i| i.written_epoch = None);
        }
        c.counters
            .pages_flushed
            .fetch_add(mine.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            target: "psls::pfs",
            "flush: {total} dirty pages published as epoch {epoch} in {:.1} ms: copying pages out of the frames {:.1} ms, exchanging them {:.1} ms, writing them {:.1} ms, prepare, vote and commit {:.1} ms",
            t_start.elapsed().as_secs_f64() * 1e3,
            times.copy_out.as_secs_f64() * 1e3,
            times.exchange.as_secs_f64() * 1e3,
            times.write.as_secs_f64() * 1e3,
            (t_start.elapsed() - t_written).as_secs_f64() * 1e3
        );
        Ok(epoch)
    }
}

/// Where a flush's time went on this rank, for the debug log. The exchange includes waiting
/// for the ranks still writing the round before.
#[derive(Default)]
struct FlushTimes {
    copy_out: std::time::Duration,
    exchange: std::time::Duration,
    write: std::time::Duration,
}

/// The most bytes one rank sends, or one leader receives, in one round of a flush's exchange
/// (at least one page's copies go in every round, whatever the page size).
const ROUND_BYTES: usize = 4 << 20;

impl Svm {
    /// A flush's data movement (collective, inside the volume's publish of `epoch`): every
    /// dirty page (`dirty`: `(page, owner)`, ascending) goes from its owner's frames to the
    /// leaders of the nodes that keep its primary and its mirror, which write it. Rounds of
    /// one `MPI_Alltoallv` each, at most [`ROUND_BYTES`] per sender and per receiver: every
    /// rank computes the same rounds from `dirty`, so no counts are exchanged.
    ///
    /// The owners push, inside a collective, instead of the leaders pulling with `MPI_Get`: a
    /// get between ranks of one host waits until the owner's service thread polls or the owner
    /// enters MPI (`docs/design.md`), and every owner is busy in the flush itself. A rank that
    /// fails (a write refused, a disk full) still takes part in every round, so that nobody
    /// waits in a collective, and returns its first error at the end.
    fn push_pages(
        &self,
        comm: &Comm,
        vol: &Volume,
        epoch: u64,
        files: &[FileMap],
        dirty: &[(usize, usize)],
        times: &mut FlushTimes,
    ) -> Result<()> {
        let c = &self.core;
        let ps = c.page_size;
        let n = comm.size();
        let me = c.rank;
        // Each dirty page of a mapped file with the leaders that keep it.
        type Copy<'a> = (usize, usize, &'a FileMap, [Option<usize>; 2]); // (page, owner, ..)
        let mut copies: Vec<Copy> = Vec::new();
        for &(page, owner) in dirty {
            let Some(m) = files
                .iter()
                .find(|m| page >= m.first && page < m.first + m.reserved)
            else {
                continue;
            };
            let holders = vol.holders(&m.meta, (page - m.first) as u64);
            if holders.iter().any(Option::is_some) {
                copies.push((page, owner, m, holders));
            }
        }
        let dests = |h: &[Option<usize>; 2]| {
            let second = h[1].filter(|&r| h[0] != Some(r));
            h[0].into_iter().chain(second)
        };
        // Each owner's pages, ascending.
        copies.sort_unstable_by_key(|&(page, owner, ..)| (owner, page));
        let mut queues: Vec<&[Copy]> = (0..n)
            .map(|o| {
                let lo = copies.partition_point(|x| x.1 < o);
                let hi = copies.partition_point(|x| x.1 <= o);
                &copies[lo..hi]
            })
            .collect();
        let mut first_error: Option<Error> = None;
        let (mut send, mut recv): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        let mut round: Vec<Copy> = Vec::new();
        while queues.iter().any(|q| !q.is_empty()) {
            // The round: from each owner in turn, its next pages until it or one of their
            // receivers would pass ROUND_BYTES (the round's first page always goes), so that
            // the number of rounds follows what one rank sends, not what the job does.
            round.clear();
            let (mut sent, mut got) = (vec![0usize; n], vec![0usize; n]);
            for (o, q) in queues.iter_mut().enumerate() {
                while let Some(x) = q.first() {
                    let k = dests(&x.3).count();
                    let over = sent[o] + k * ps > ROUND_BYTES
                        || dests(&x.3).any(|r| got[r] + ps > ROUND_BYTES);
                    if over && !round.is_empty() {
                        break;
                    }
                    sent[o] += k * ps;
                    dests(&x.3).for_each(|r| got[r] += ps);
                    round.push(*x);
                    *q = &q[1..];
                }
            }
            let t0 = std::time::Instant::now();
            // What this rank sends: (receiver, page), by receiver then page; runs of
            // consecutive pages for one receiver are copied out of the frames at once.
            let mut mine: Vec<(usize, usize)> = round
                .iter()
                .filter(|x| x.1 == me)
                .flat_map(|x| dests(&x.3).map(move |r| (r, x.0)))
                .collect();
            mine.sort_unstable();
            let mut send_counts = vec![0usize; n];
            mine.iter().for_each(|&(r, _)| send_counts[r] += ps);
            let send_len = mine.len() * ps;
            if send.len() < send_len {
                send.resize(send_len, 0);
            }
            let mut at = 0;
            for run in mine.chunk_by(|a, b| a.0 == b.0 && a.1 + 1 == b.1) {
                let part = &mut send[at..at + run.len() * ps];
                if let Err(e) = c.frames_win.window().local_read(run[0].1 * ps, part) {
                    first_error.get_or_insert(e);
                }
                at += part.len();
            }
            let tx = std::time::Instant::now();
            times.copy_out += tx - t0;
            // What this rank receives from each rank: the pages it keeps, by owner.
            let mut recv_counts = vec![0usize; n];
            let mut parts: Vec<Vec<(usize, &FileMap)>> = vec![Vec::new(); n];
            for &(page, owner, m, h) in &round {
                if dests(&h).any(|r| r == me) {
                    recv_counts[owner] += ps;
                    parts[owner].push((page, m));
                }
            }
            let recv_len: usize = recv_counts.iter().sum();
            if recv.len() < recv_len {
                recv.resize(recv_len, 0);
            }
            comm.alltoallv_bytes(
                &send[..send_len],
                &send_counts,
                &mut recv[..recv_len],
                &recv_counts,
            )?;
            let t1 = std::time::Instant::now();
            times.exchange += t1 - tx;
            if first_error.is_none() {
                let mut at = 0;
                for part in &parts {
                    let len = part.len() * ps;
                    if let Err(e) = write_chunk(vol, epoch, ps, part, &mut recv[at..at + len]) {
                        first_error = Some(e);
                        break;
                    }
                    at += len;
                }
            }
            times.write += t1.elapsed();
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Writes received `pages` (`(page, file)`, ascending, their data in `buf`) to this
/// node's store at `epoch`: runs of consecutive pages of one file in one write. Bytes past the
/// end of a file are not part of it: they are stored as zeros.
fn write_chunk(
    vol: &Volume,
    epoch: u64,
    ps: usize,
    pages: &[(usize, &FileMap)],
    buf: &mut [u8],
) -> Result<()> {
    for ((page, m), data) in pages.iter().zip(buf.chunks_mut(ps)) {
        let fpage = (page - m.first) as u64;
        let end = m.meta.size.saturating_sub(fpage * ps as u64);
        if end < ps as u64 {
            data[end as usize..].fill(0);
        }
    }
    // Runs of consecutive pages; the runs of one file go to the store in one call, which reads
    // and rewrites the headers of every page they span: a gap of more than GAP pages starts a
    // new call, so that sparse pages do not make that span large.
    const GAP: u64 = 64;
    let buf = &*buf;
    let mut runs: Vec<(u64, &[u8])> = Vec::new();
    let mut k = 0;
    while k < pages.len() {
        let m = &pages[k].1;
        let mut e = k + 1;
        while e < pages.len() && pages[e].0 == pages[e - 1].0 + 1 && pages[e].1.first == m.first {
            e += 1;
        }
        runs.push(((pages[k].0 - m.first) as u64, &buf[k * ps..e * ps]));
        let end = (pages[e - 1].0 - m.first) as u64 + 1;
        if pages
            .get(e)
            .is_none_or(|next| next.1.first != m.first || (next.0 - m.first) as u64 > end + GAP)
        {
            vol.write_local_runs(&m.meta, epoch, &runs)?;
            runs.clear();
        }
        k = e;
    }
    vol.start_writeback();
    Ok(())
}
