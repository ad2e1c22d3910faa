//! Cleaning up at open and at abort: stale temporary files, the directories of files no record
//! lists, and the slots of flushes that never committed.

use super::{classify_pair, for_each_header_chunk, NodeStore, TARGET};
use crate::pfs::error::{io_error, Result, StoreError};
use crate::pfs::pages::PageFiles;
use crate::pfs::record::{parent_of, read_record, sync_dir};
use crate::pfs::slot::HEADER_LEN;
use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

impl NodeStore {
    /// At open: discards the slots of a flush that did not reach its prepare record.
    pub(super) fn recover_inflight(&mut self) -> Result<()> {
        let path = self.dir.join("inflight");
        let marker = match read_record(&path) {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => {
                self.abandoned = self.abandoned.max(r.epoch);
                Some(r.epoch)
            }
            Err(e @ StoreError::BadRecord { .. }) => {
                tracing::warn!(target: TARGET, "{e}; scanning every file for uncommitted slots");
                None
            }
            Err(e) => return Err(e),
        };
        self.found_inflight = true;
        let keep = self.prepared.as_ref().map(|p| p.epoch);
        let scan = match marker {
            None => true, // unreadable: assume the worst
            Some(e) => e > self.committed_epoch() && Some(e) != keep,
        };
        if scan {
            let n = self.discard_uncommitted(keep, None)?;
            tracing::info!(target: TARGET, "node {}: discarded {n} slots of an interrupted flush", self.node);
        }
        if self.prepared.is_some() {
            self.inflight = true; // an abort of the prepared epoch must scan
        } else {
            self.clear_inflight();
        }
        Ok(())
    }

    /// Discards every valid slot with an epoch above the committed one (except `keep`) in the
    /// files `scope` (all when `None`), and fsyncs what changed. Returns the number discarded.
    pub(super) fn discard_uncommitted(
        &self,
        keep: Option<u64>,
        scope: Option<&BTreeSet<u64>>,
    ) -> Result<u64> {
        let committed = self.committed_epoch();
        let ids = match scope {
            Some(s) => s.clone(),
            None => self.file_ids()?,
        };
        let mut total = 0;
        for id in ids {
            let Some(files) = PageFiles::open(&self.files_dir(), id, true)? else {
                continue;
            };
            let mut n = 0;
            for_each_header_chunk(&files, |first, chunk| {
                for (i, pair) in chunk.chunks_exact(2 * HEADER_LEN).enumerate() {
                    let page = first + i as u64;
                    for (s, slot) in classify_pair(pair, id, page).iter().enumerate() {
                        if let Some(h) = slot
                            .valid()
                            .filter(|h| h.epoch > committed && Some(h.epoch) != keep)
                        {
                            files.write_header(page, s, &h.discarded())?;
                            n += 1;
                        }
                    }
                }
                Ok(())
            })?;
            if n > 0 {
                files.sync_slots()?;
            }
            total += n;
        }
        Ok(total)
    }

    /// The ids of the `files/<id>` directories present.
    pub(super) fn file_ids(&self) -> Result<BTreeSet<u64>> {
        let dir = self.files_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        let mut ids = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            let name = entry.file_name();
            match name
                .to_str()
                .and_then(|n| n.parse::<u64>().ok().filter(|id| id.to_string() == n))
            {
                Some(id) => {
                    ids.insert(id);
                }
                None => tracing::warn!(
                    target: TARGET,
                    "ignoring {}: not a PFS file directory",
                    entry.path().display()
                ),
            }
        }
        Ok(ids)
    }

    /// Deletes the directories of files that neither record lists (files removed, or created
    /// by a flush that never prepared). Call it once the records are the job's (the volume has
    /// rolled this node forward or made it adopt the newest catalog): a node whose commit
    /// record was removed or replaced by an older one would otherwise delete good copies.
    ///
    /// A node with file directories, no record at all and no in-flight marker has lost its
    /// records, not its files, and so does every node when the volume found no catalog: that
    /// is an error, and nothing is deleted.
    pub(crate) fn collect_garbage(&self) -> Result<()> {
        let live: BTreeSet<u64> = [&self.committed, &self.prepared]
            .into_iter()
            .flatten()
            .flat_map(|r| r.catalog.ids())
            .collect();
        let ids = self.file_ids()?;
        let nothing_abandoned = !self.found_inflight && self.abandoned == 0;
        if self.committed.is_none() && self.prepared.is_none() && nothing_abandoned {
            if let Some(id) = ids.first() {
                return Err(StoreError::BadRecord {
                    path: self.dir.join("commit"),
                    why: format!(
                        "it is missing, but {} holds the data of {} file(s) (e.g. {}), and no \
                         node has a record that lists them; nothing was deleted",
                        self.files_dir().display(),
                        ids.len(),
                        self.files_dir().join(id.to_string()).display()
                    ),
                });
            }
        }
        let mut removed = false;
        for id in ids.difference(&live) {
            let dir = self.files_dir().join(id.to_string());
            tracing::info!(target: TARGET, "node {}: removing {}, which no record lists", self.node, dir.display());
            fs::remove_dir_all(&dir).map_err(|e| io_error("remove", &dir, e))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.files_dir())?;
        }
        Ok(())
    }
}

/// Creates `dir` (mode 0700) if missing, and makes its creation durable. An existing one must
/// be a real directory: a symbolic link (or a file) in its place would lead the store's
/// writes and deletions somewhere else.
pub(super) fn private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => sync_dir(parent_of(dir)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dir).map_err(|e| io_error("inspect", dir, e))?;
            if meta.is_dir() {
                return Ok(());
            }
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a directory"
            };
            Err(io_error(
                "use",
                dir,
                std::io::Error::other(format!(
                    "it is {what}, where the PFS store keeps its own directory: move it away"
                )),
            ))
        }
        Err(e) => Err(io_error("create the directory", dir, e)),
    }
}

/// Deletes the `*.tmp` files an interrupted [`atomic_write`] may have left in `dir`.
pub(super) fn remove_tmp_files(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error("list", dir, e))?.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            fs::remove_file(&path).map_err(|e| io_error("remove the stale", &path, e))?;
        }
    }
    Ok(())
}
