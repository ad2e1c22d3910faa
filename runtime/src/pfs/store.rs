//! The node-local page store: what one node keeps in `<disk root>/pfs`, and its half of the
//! two-phase commit of a permanent checkpoint.
//!
//! ```text
//! DIR/commit           the node's commit record (record.rs), replaced atomically
//! DIR/prepare          a prepared, not yet committed record (phase 1 done here)
//! DIR/inflight         an in-flight marker: a flush may have left slots newer than the commit
//! DIR/files/<id>/data  both slots of every page of file <id>, sparse (pages.rs)
//! DIR/files/<id>/slots their 32-byte headers (slot.rs)
//! ```
//!
//! A flush at epoch E writes each page into the slot that does not hold the page's current copy
//! (ping-pong), so the committed version is never overwritten. `prepare` fsyncs the written
//! files and then the prepare record; `commit` renames the prepare record over the commit
//! record. Reads at the committed epoch C ignore slots newer than C, so a crash at any point
//! leaves either version C or, once the rename is durable, version E.
//!
//! **Epoch numbers of failed flushes may be reused.** Before the first page of a flush is
//! written, the store durably writes `DIR/inflight`. `abort`, and `open` after a crash, discard
//! every slot stamped with an epoch above the committed one (except the epoch of a prepare
//! record found at `open`, which may still roll forward), and only then remove the marker. So
//! no slot of a failed attempt survives to pass for a page of a later flush that reuses its
//! number and does not rewrite that page.
//!
//! One `NodeStore` owns a disk root at a time (the node's leader rank).

use super::error::{io_error, Result, StoreError};
use super::pages::PageFiles;
use super::record::{atomic_write, read_record, sync_dir, Catalog, FileMeta, Record};
use super::slot::{
    newest, resolve, Header, PageState, Resolved, Slot, FLAG_POISON, HEADER_LEN, MAX_EPOCH,
};
use cleanup::{private_dir, remove_tmp_files};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

mod cleanup;
mod repair;

/// Log target of this module.
const TARGET: &str = "psls::pfs";

/// Pages whose headers [`NodeStore::scan`] and the discard pass read at once.
const SCAN_PAGES: u64 = 1024;

/// The most pages apart that [`NodeStore::read_pages`] reads the headers of in one go.
const READ_SPAN: u64 = 256;

/// The pages and records one node keeps in its disk root.
#[derive(Debug)]
pub(crate) struct NodeStore {
    dir: PathBuf,
    node: String,
    committed: Option<Record>,
    prepared: Option<Record>,
    flush: Option<Flush>,
    /// `DIR/inflight` exists, so slots newer than the committed epoch may exist.
    inflight: bool,
    /// The highest epoch abandoned (aborted, or found interrupted at open) since open.
    abandoned: u64,
    /// `open` found an in-flight marker: file directories that no record lists may be a
    /// crashed flush's new files.
    found_inflight: bool,
}

/// The flush this process is writing.
#[derive(Debug)]
struct Flush {
    epoch: u64,
    /// Files written since the last prepare, still to be fsynced.
    unsynced: BTreeMap<u64, PageFiles>,
    /// Every file written at this epoch: the files `abort` must clean.
    touched: BTreeSet<u64>,
}

impl NodeStore {
    /// Opens (creating it if new, mode 0700) the store in `dir`, `<disk root>/pfs` of `node`.
    ///
    /// Reads the commit and prepare records, deletes stale `*.tmp` files, and discards the
    /// slots of a flush that a crash interrupted before its prepare record was written. It
    /// deletes no file directory: that waits for [`NodeStore::collect_garbage`], once the
    /// nodes have agreed on the catalog (this node's records may be missing or stale).
    pub(crate) fn open(dir: &Path, node: &str) -> Result<NodeStore> {
        private_dir(dir)?;
        private_dir(&dir.join("files"))?;
        remove_tmp_files(dir)?;
        let committed = read_record(&dir.join("commit"))?;
        let mut prepared = read_record(&dir.join("prepare"))?;
        let c = committed.as_ref().map_or(0, |r| r.epoch);
        if let Some(p) = prepared.as_ref().filter(|p| p.epoch <= c) {
            tracing::warn!(target: TARGET, "node {node}: removing a stale prepare record of epoch {} (committed: {c})", p.epoch);
            let path = dir.join("prepare");
            fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
            sync_dir(dir)?;
            prepared = None;
        }
        let mut store = NodeStore {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            committed,
            prepared,
            flush: None,
            inflight: false,
            abandoned: 0,
            found_inflight: false,
        };
        store.recover_inflight()?;
        Ok(store)
    }

    /// The commit record; `None` when this node never committed (epoch 0, empty catalog).
    pub(crate) fn committed(&self) -> Option<&Record> {
        self.committed.as_ref()
    }

    /// The prepared, not yet committed record.
    pub(crate) fn prepared(&self) -> Option<&Record> {
        self.prepared.as_ref()
    }

    /// The committed epoch, 0 when never committed.
    pub(crate) fn committed_epoch(&self) -> u64 {
        self.committed.as_ref().map_or(0, |r| r.epoch)
    }

    /// The highest epoch this store has seen in use: committed, prepared, being written, or
    /// abandoned by this process or by a crash it recovered from. A caller that prefers never
    /// to reuse an epoch number picks one above it; reusing one is safe too (see the module
    /// documentation).
    pub(crate) fn highest_epoch_seen(&self) -> u64 {
        [
            self.committed_epoch(),
            self.prepared.as_ref().map_or(0, |r| r.epoch),
            self.flush.as_ref().map_or(0, |f| f.epoch),
            self.abandoned,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// Writes `data` (exactly one page; the caller zero-pads the last page) as the copy of
    /// `page` of `meta` at the flush epoch `epoch`, into the slot that does not hold the page's
    /// current copy. Nothing is fsynced before [`prepare`](Self::prepare). Writing the same page
    /// again at the same epoch overwrites the same slot.
    ///
    /// `epoch` must be above the committed epoch, no epoch may be prepared, and all writes
    /// between two commits or aborts share one epoch.
    #[cfg(test)]
    pub(crate) fn write_page(
        &mut self,
        meta: &FileMeta,
        page: u64,
        epoch: u64,
        data: &[u8],
    ) -> Result<()> {
        check_page(meta, page, data.len())?;
        self.write_pages(meta, page, epoch, data)
    }

    /// [`write_page`](Self::write_page) for the consecutive pages `first..` whose data `data`
    /// holds (a whole number of pages): see [`write_runs`](Self::write_runs).
    #[cfg(test)]
    pub(crate) fn write_pages(
        &mut self,
        meta: &FileMeta,
        first: u64,
        epoch: u64,
        data: &[u8],
    ) -> Result<()> {
        self.write_runs(meta, epoch, &[(first, data)])
    }

    /// [`write_page`](Self::write_page) for several runs of consecutive pages of one file,
    /// `(first page, data)` in ascending order, each a whole number of pages: one read of the
    /// headers of the pages they span, one write per run of pages that land in the same slot
    /// (contiguous on disk, see [`super::pages::data_offset`]), and one write of those headers
    /// (the pages between the runs get theirs back as they were).
    pub(crate) fn write_runs(
        &mut self,
        meta: &FileMeta,
        epoch: u64,
        runs: &[(u64, &[u8])],
    ) -> Result<()> {
        let ps = meta.page_size as usize;
        let misuse = |why: String| {
            Err(StoreError::Protocol(format!(
                "cannot write pages of {:?} at epoch {epoch}: {why}",
                meta.name
            )))
        };
        let (Some(&(lo, _)), Some(&(last, last_data))) = (runs.first(), runs.last()) else {
            return Ok(());
        };
        let mut end = 0;
        for (k, &(first, data)) in runs.iter().enumerate() {
            if ps == 0 || data.is_empty() || data.len() % ps != 0 {
                return misuse(format!(
                    "the buffer of the pages from {first} has {} bytes, not a whole number of \
                     {ps}-byte pages",
                    data.len()
                ));
            }
            if k > 0 && first < end {
                return misuse(format!(
                    "the runs overlap or are out of order at page {first}"
                ));
            }
            end = first + (data.len() / ps) as u64;
        }
        let hi = last + (last_data.len() / ps) as u64;
        let committed = self.committed_epoch();
        if let Some(p) = &self.prepared {
            return misuse(format!(
                "epoch {} is prepared; commit or abort it first",
                p.epoch
            ));
        }
        if epoch <= committed || epoch > MAX_EPOCH {
            return misuse(format!(
                "the epoch must be above the committed epoch {committed} (and below 2^56)"
            ));
        }
        // Every page must be one this node keeps, at an offset that exists, before anything is
        // written.
        let mut locals = Vec::with_capacity(runs.iter().map(|r| r.1.len() / ps).sum());
        for &(first, data) in runs {
            for page in first..first + (data.len() / ps) as u64 {
                locals.push(super::pages::local_page(meta, &self.node, page)?);
            }
        }
        if let Some(&last_local) = locals.iter().max() {
            super::pages::data_offset(meta, last_local, 1)?;
        }
        super::pages::header_offset(hi - 1, 1)?;
        match &self.flush {
            Some(f) if f.epoch != epoch => {
                return misuse(format!(
                    "epoch {} is being written; prepare or abort it first",
                    f.epoch
                ))
            }
            Some(_) => {}
            None => self.start_flush(epoch)?,
        }
        let files_dir = self.files_dir();
        let Some(flush) = self.flush.as_mut() else {
            return misuse("no flush is open".into());
        };
        let files = match flush.unsynced.entry(meta.id) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(PageFiles::create(&files_dir, meta.id)?),
        };
        flush.touched.insert(meta.id);
        // The headers of both slots of every page spanned, read and rewritten in one piece.
        let mut headers = vec![0u8; (hi - lo) as usize * 2 * HEADER_LEN];
        files.read_slots_at(&mut headers, super::pages::header_offset(lo, 0)?)?;
        // Pages in the same slot whose local indices follow each other in one group are
        // contiguous on disk, whichever runs they come from: one write for all of them.
        let mut extent = Extent::default();
        let mut pages_done = 0usize;
        for &(first, data) in runs {
            let n = data.len() / ps;
            let at = |k: usize| (first - lo) as usize + k;
            let mut slots = Vec::with_capacity(n);
            for k in 0..n {
                let pair = &headers[at(k) * 2 * HEADER_LEN..(at(k) + 1) * 2 * HEADER_LEN];
                let classified = classify_pair(pair, meta.id, first + k as u64);
                slots.push(write_slot(&classified, committed, epoch));
            }
            for k in 0..n {
                let (page, local, slot) = (first + k as u64, locals[pages_done + k], slots[k].0);
                if !extent.extends(local, slot) {
                    extent.write(files, meta)?;
                    extent.start(page, local, slot);
                }
                crate::inject::point("pfs-write", epoch);
                extent.push(&data[k * ps..(k + 1) * ps]);
            }
            pages_done += n;
            for (k, &(slot, flags)) in slots.iter().enumerate() {
                let header = Header {
                    data_crc: crc32c::crc32c(&data[k * ps..(k + 1) * ps]),
                    epoch,
                    flags,
                    file: meta.id,
                    page: first + k as u64,
                };
                let h = (at(k) * 2 + slot) * HEADER_LEN;
                headers[h..h + HEADER_LEN].copy_from_slice(&header.encode());
            }
        }
        extent.write(files, meta)?;
        files.write_headers_at(&headers, lo)
    }

    /// Starts the disk write-back of every page written so far in the open flush (see
    /// [`PageFiles::start_writeback`]); [`prepare`](Self::prepare) still fsyncs everything.
    pub(crate) fn start_writeback(&self) {
        if let Some(f) = &self.flush {
            for files in f.unsynced.values() {
                files.start_writeback();
            }
        }
    }

    /// Reads the copy of `page` of `meta` current at `upto_epoch` into `buf` (one page), and
    /// checks it. `buf` is zero-filled unless the result is `Present`.
    #[cfg(test)]
    pub(crate) fn read_page(
        &self,
        meta: &FileMeta,
        page: u64,
        upto_epoch: u64,
        buf: &mut [u8],
    ) -> Result<PageState> {
        let mut state = PageState::Absent;
        self.read_pages(meta, &[page], upto_epoch, buf, |_, s, _| state = s)?;
        Ok(state)
    }

    /// Reads the copy of each of `pages` of `meta` current at `upto_epoch`, and checks it,
    /// opening the file's page files once: calls `each(page, state, data)` in the order of
    /// `pages`, `data` being `buf` (one page), zero-filled unless the state is `Present`.
    pub(crate) fn read_pages(
        &self,
        meta: &FileMeta,
        pages: &[u64],
        upto_epoch: u64,
        buf: &mut [u8],
        mut each: impl FnMut(u64, PageState, &[u8]),
    ) -> Result<()> {
        for &page in pages {
            check_page(meta, page, buf.len())?;
        }
        let Some(files) = PageFiles::open(&self.files_dir(), meta.id, false)? else {
            for &page in pages {
                buf.fill(0);
                each(page, PageState::Absent, buf);
            }
            return Ok(());
        };
        // Spans of ascending pages at most READ_SPAN apart: one read of their headers, then one
        // read per run of copies contiguous in the data file.
        let ps = buf.len();
        let pair = 2 * HEADER_LEN;
        let mut data: Vec<u8> = Vec::new();
        let mut k = 0;
        while k < pages.len() {
            let first = pages[k];
            let mut e = k + 1;
            while e < pages.len() && pages[e] > pages[e - 1] && pages[e] - first < READ_SPAN {
                e += 1;
            }
            let last = pages[e - 1];
            let mut headers = vec![0u8; (last - first + 1) as usize * pair];
            files.read_slots_at(&mut headers, super::pages::header_offset(first, 0)?)?;
            // Each page, the copy to read, and that copy's offset in the data file.
            let mut plan: Vec<(u64, Resolved, u64)> = Vec::with_capacity(e - k);
            for &page in &pages[k..e] {
                let at = (page - first) as usize * pair;
                let slots = classify_pair(&headers[at..at + pair], meta.id, page);
                let local = super::pages::local_page(meta, &self.node, page)?;
                let r = resolve(&slots, upto_epoch);
                let off = match &r {
                    Resolved::Newest { slot, .. } => super::pages::data_offset(meta, local, *slot)?,
                    _ => 0,
                };
                plan.push((page, r, off));
            }
            let mut i = 0;
            while i < plan.len() {
                let Resolved::Newest { .. } = plan[i].1 else {
                    buf.fill(0);
                    let state = match &plan[i].1 {
                        Resolved::Corrupt(why) => PageState::Corrupt { why: why.clone() },
                        _ => PageState::Absent,
                    };
                    each(plan[i].0, state, buf);
                    i += 1;
                    continue;
                };
                let mut j = i + 1;
                while j < plan.len()
                    && matches!(plan[j].1, Resolved::Newest { .. })
                    && plan[j].2 == plan[j - 1].2 + ps as u64
                {
                    j += 1;
                }
                data.resize((j - i) * ps, 0);
                files.read_data_at(&mut data, plan[i].2, meta)?;
                for (p, copy) in plan[i..j].iter().zip(data.chunks(ps)) {
                    let Resolved::Newest { slot, header } = &p.1 else {
                        continue;
                    };
                    buf.copy_from_slice(copy);
                    let state = checked(buf, *slot, header);
                    each(p.0, state, buf);
                }
                i = j;
            }
            k = e;
        }
        Ok(())
    }

    /// The state at `upto_epoch` of every page of `meta` that has at least one slot header
    /// here, in page order (for `verify`). Reads and checks each page's newest copy.
    #[cfg(test)]
    pub(crate) fn scan(&self, meta: &FileMeta, upto_epoch: u64) -> Result<Vec<(u64, PageState)>> {
        let mut out = Vec::new();
        let Some(files) = PageFiles::open(&self.files_dir(), meta.id, false)? else {
            return Ok(out);
        };
        let mut buf = vec![0u8; meta.page_size as usize];
        for_each_header_chunk(&files, |first, chunk| {
            for (i, pair) in chunk.chunks_exact(2 * HEADER_LEN).enumerate() {
                if pair.iter().all(|&b| b == 0) {
                    continue;
                }
                let page = first + i as u64;
                let slots = classify_pair(pair, meta.id, page);
                let local = super::pages::local_page(meta, &self.node, page)?;
                out.push((
                    page,
                    check_copy(&files, meta, (page, local), &slots, upto_epoch, &mut buf)?,
                ));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Phase 1 of the two-phase commit: fsyncs every data and slot file written since the last
    /// prepare (and their directories), then writes `DIR/prepare` atomically with `catalog` as
    /// of `epoch`.
    pub(crate) fn prepare(&mut self, epoch: u64, catalog: Catalog) -> Result<()> {
        let committed = self.committed_epoch();
        let misuse = |why: String| {
            Err(StoreError::Protocol(format!(
                "cannot prepare epoch {epoch}: {why}"
            )))
        };
        if let Some(p) = &self.prepared {
            return misuse(format!(
                "epoch {} is already prepared; commit or abort it first",
                p.epoch
            ));
        }
        if epoch <= committed || epoch > MAX_EPOCH {
            return misuse(format!("it must be above the committed epoch {committed}"));
        }
        if let Some(f) = self.flush.as_ref().filter(|f| f.epoch != epoch) {
            return misuse(format!("the pages were written at epoch {}", f.epoch));
        }
        let record = Record { epoch, catalog };
        if let Err(why) = record.validate() {
            return misuse(format!("its catalog is invalid: {why}"));
        }
        let bytes = record.encode()?;
        if let Some(flush) = &mut self.flush {
            for files in flush.unsynced.values() {
                files.sync()?;
            }
            if !flush.unsynced.is_empty() {
                sync_dir(&self.dir.join("files"))?;
            }
            flush.unsynced.clear();
        }
        crate::inject::point("pfs-prepare", epoch);
        atomic_write(&self.dir.join("prepare"), &bytes)?;
        self.prepared = Some(record);
        Ok(())
    }

    /// Phase 2: makes the prepared epoch `epoch` this node's committed epoch, by renaming the
    /// prepare record over the commit record. Also rolls a prepared epoch forward at restart,
    /// when the job finds that it committed on another node.
    pub(crate) fn commit(&mut self, epoch: u64) -> Result<()> {
        match &self.prepared {
            None => {
                return Err(StoreError::Protocol(format!(
                    "cannot commit epoch {epoch}: nothing is prepared; call prepare first"
                )))
            }
            Some(p) if p.epoch != epoch => {
                return Err(StoreError::Protocol(format!(
                    "cannot commit epoch {epoch}: the prepared epoch is {}",
                    p.epoch
                )))
            }
            Some(_) => {}
        }
        crate::inject::point("pfs-commit", epoch);
        let (from, to) = (self.dir.join("prepare"), self.dir.join("commit"));
        let renamed = if crate::inject::error_point("pfs-commit-error", epoch) {
            Err(std::io::Error::other("fault injected at pfs-commit-error"))
        } else {
            fs::rename(&from, &to)
        };
        renamed.map_err(|e| io_error(format!("rename {} to", from.display()), &to, e))?;
        // From here the new record is the one on disk: never let a later abort treat the
        // epoch's slots as uncommitted, even if the fsync below fails.
        self.committed = self.prepared.take();
        self.flush = None;
        sync_dir(&self.dir)?;
        crate::inject::point("pfs-committed", epoch);
        self.clear_inflight();
        Ok(())
    }

    /// Abandons the flush in progress: deletes the prepare record, if any, and discards every
    /// slot newer than the committed epoch, so that the epoch number can be used again.
    pub(crate) fn abort(&mut self) -> Result<()> {
        let abandoned = (self.prepared.as_ref().map(|p| p.epoch))
            .max(self.flush.as_ref().map(|f| f.epoch))
            .unwrap_or(0);
        self.abandoned = self.abandoned.max(abandoned);
        if self.prepared.is_some() {
            let path = self.dir.join("prepare");
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, e)),
            }
            sync_dir(&self.dir)?;
            self.prepared = None;
        }
        let scope = match self.flush.take() {
            Some(f) => Some(f.touched),
            None if self.inflight => None,
            None => return Ok(()),
        };
        let n = self.discard_uncommitted(None, scope.as_ref())?;
        tracing::debug!(target: TARGET, "node {}: abort discarded {n} uncommitted slots", self.node);
        // The files the abandoned flush created have nothing left: remove their directories
        // (garbage collection no longer runs at open, where a node with no record at all now
        // keeps what it finds).
        if let Some(touched) = &scope {
            let listed: BTreeSet<u64> = self
                .committed
                .iter()
                .flat_map(|r| r.catalog.ids())
                .collect();
            let mut removed = false;
            for id in touched.difference(&listed) {
                let dir = self.files_dir().join(id.to_string());
                match fs::remove_dir_all(&dir) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("remove", &dir, e)),
                }
            }
            if removed {
                sync_dir(&self.files_dir())?;
            }
        }
        self.clear_inflight();
        Ok(())
    }

    /// Deletes the pages of `meta` from this node. Call it only once a catalog without the file
    /// has committed.
    pub(crate) fn remove_file(&mut self, meta: &FileMeta) -> Result<()> {
        for (what, record) in [("committed", &self.committed), ("prepared", &self.prepared)] {
            if let Some(r) = record
                .as_ref()
                .filter(|r| r.catalog.files.values().any(|m| m.id == meta.id))
            {
                return Err(StoreError::Protocol(format!(
                    "cannot remove the pages of {:?} (id {}): the {what} catalog of epoch {} still \
                     lists it; commit a catalog without it first",
                    meta.name, meta.id, r.epoch
                )));
            }
        }
        if let Some(f) = &mut self.flush {
            f.unsynced.remove(&meta.id);
            f.touched.remove(&meta.id);
        }
        let dir = self.files_dir().join(meta.id.to_string());
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.files_dir()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &dir, e)),
        }
    }

    fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// Marks a flush at `epoch` as started, durably, before its first page is written.
    fn start_flush(&mut self, epoch: u64) -> Result<()> {
        if self.inflight {
            // An earlier abort did not finish: finish it, or its slots could pass for ours.
            self.discard_uncommitted(None, None)?;
        }
        let marker = Record {
            epoch,
            catalog: Catalog::default(),
        };
        atomic_write(&self.dir.join("inflight"), &marker.encode()?)?;
        self.inflight = true;
        self.flush = Some(Flush {
            epoch,
            unsynced: BTreeMap::new(),
            touched: BTreeSet::new(),
        });
        Ok(())
    }

    /// Removes the in-flight marker. A marker left behind only costs a scan at the next open.
    fn clear_inflight(&mut self) {
        let path = self.dir.join("inflight");
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(target: TARGET, "{}", io_error("remove", &path, e));
            }
        }
        self.inflight = false;
    }
}

/// Checks a page access: a positive page size and a buffer of exactly one page.
fn check_page(meta: &FileMeta, page: u64, len: usize) -> Result<()> {
    if meta.page_size == 0 || len != meta.page_size as usize {
        return Err(StoreError::Protocol(format!(
            "page {page} of {:?}: the buffer has {len} bytes, and the page size is {}",
            meta.name, meta.page_size
        )));
    }
    Ok(())
}

/// The slot a flush at `epoch` writes, over committed epoch `committed`, and the flags of its
/// header: the slot already written at `epoch`, else the one without the current copy; with no
/// current copy, a damaged slot first (to clear it), else slot 0. A write over a damaged (or
/// poisoned) header is poisoned, so that discarding it restores the damage.
fn write_slot(slots: &[Slot; 2], committed: u64, epoch: u64) -> (usize, u8) {
    let slot = (0..2)
        .find(|&s| slots[s].valid().is_some_and(|h| h.epoch == epoch))
        .or_else(|| newest(slots, committed).map(|(current, _)| 1 - current))
        .or_else(|| (0..2).find(|&s| matches!(slots[s], Slot::Damaged(_))))
        .unwrap_or(0);
    let poisoned = match &slots[slot] {
        Slot::Damaged(_) => true,
        Slot::Valid(h) => h.flags & FLAG_POISON != 0,
        Slot::Empty => false,
    };
    (slot, if poisoned { FLAG_POISON } else { 0 })
}

/// Pages contiguous in one slot of the data file, gathered for one write.
#[derive(Default)]
struct Extent<'a> {
    /// File page and local index of the first page, and the slot.
    start: (u64, u64, usize),
    /// The local index the next page must have to join.
    next: u64,
    /// The pages' data, in order.
    parts: Vec<&'a [u8]>,
}

impl<'a> Extent<'a> {
    /// Whether the page of local index `local`, in slot `slot`, goes right after this extent
    /// on disk.
    fn extends(&self, local: u64, slot: usize) -> bool {
        !self.parts.is_empty()
            && local == self.next
            && slot == self.start.2
            && local % super::pages::DATA_GROUP != 0
    }

    fn start(&mut self, page: u64, local: u64, slot: usize) {
        self.start = (page, local, slot);
        self.next = local;
    }

    /// Adds the next page's data (one `pwritev` buffer per page; a group has at most
    /// [`super::pages::DATA_GROUP`] pages, under the system's limit of buffers per call).
    fn push(&mut self, data: &'a [u8]) {
        self.next += 1;
        self.parts.push(data);
    }

    /// Writes the extent, if any, and empties it.
    fn write(&mut self, files: &PageFiles, meta: &FileMeta) -> Result<()> {
        if !self.parts.is_empty() {
            let (page, local, slot) = self.start;
            files.write_data(meta, (page, local), slot, &self.parts)?;
            self.parts.clear();
        }
        Ok(())
    }
}

/// Reads and checks the copy that `slots` designate at `upto`.
#[cfg(test)]
fn check_copy(
    files: &PageFiles,
    meta: &FileMeta,
    (page, local): (u64, u64),
    slots: &[Slot; 2],
    upto: u64,
    buf: &mut [u8],
) -> Result<PageState> {
    match resolve(slots, upto) {
        Resolved::Absent => Ok(PageState::Absent),
        Resolved::Corrupt(why) => Ok(PageState::Corrupt { why }),
        Resolved::Newest { slot, header } => {
            files.read_data(meta, (page, local), slot, buf)?;
            Ok(checked(buf, slot, &header))
        }
    }
}

/// The state of a copy read from slot `slot` into `buf`, against its header's checksum (`buf`
/// is zeroed if it fails).
fn checked(buf: &mut [u8], slot: usize, header: &Header) -> PageState {
    if crc32c::crc32c(buf) == header.data_crc {
        PageState::Present {
            epoch: header.epoch,
        }
    } else {
        buf.fill(0);
        PageState::Corrupt {
            why: format!(
                "slot {slot} (epoch {}) fails its data checksum",
                header.epoch
            ),
        }
    }
}

/// Classifies the two headers (64 bytes) of `page` of file `id`.
fn classify_pair(pair: &[u8], id: u64, page: u64) -> [Slot; 2] {
    let mut a = [0u8; HEADER_LEN];
    let mut b = [0u8; HEADER_LEN];
    a.copy_from_slice(&pair[..HEADER_LEN]);
    b.copy_from_slice(&pair[HEADER_LEN..2 * HEADER_LEN]);
    [Slot::classify(&a, id, page), Slot::classify(&b, id, page)]
}

/// Calls `f(first_page, headers)` over the whole slot file, in chunks of whole pages (two
/// headers each).
fn for_each_header_chunk(
    files: &PageFiles,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let pages = files.slots_len()?.div_ceil(2 * HEADER_LEN as u64);
    let mut chunk = vec![0u8; (SCAN_PAGES as usize) * 2 * HEADER_LEN];
    let mut first = 0;
    while first < pages {
        let n = SCAN_PAGES.min(pages - first);
        let bytes = &mut chunk[..n as usize * 2 * HEADER_LEN];
        files.read_slots_at(bytes, first * 2 * HEADER_LEN as u64)?;
        f(first, bytes)?;
        first += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
