//! Whole-file PFS operations behind the `psls-pfs` tool: import, export and verify. Each is
//! collective and streams in chunks, so files larger than memory work: rank 0 reads or writes
//! the regular file, and each node's leader reads or writes the pages its disk root keeps.

use super::files::FileInfo;
use super::{agree, Psls};
use crate::error::{Error, Result};
use crate::pfs::{FileMeta, PageState};
use std::io::{Read, Write};
use std::path::Path;

/// Bytes moved per collective step of import, export and re-mirroring (at least one page):
/// the buffers of a step are sized from it, so memory stays bounded whatever the page size
/// (256 pages of 1 GiB would be 256 GiB).
const CHUNK_BYTES: usize = 1 << 20;

/// Pages moved per collective step with pages of `page_size` bytes: 1 MiB of them, at least
/// one page.
fn chunk_pages(page_size: usize) -> usize {
    (CHUNK_BYTES / page_size.max(1)).max(1)
}

/// What [`Psls::pfs_verify`] found in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The file.
    pub name: String,
    /// Pages in the file.
    pub pages: u64,
    /// Pages with a good primary and a good mirror, or never written (on no disk, as zeros).
    pub redundant: u64,
    /// Pages with exactly one good copy: `(page, what is wrong with the other)`.
    pub under_replicated: Vec<(u64, String)>,
    /// Written pages with no good copy: their data is lost.
    pub lost: Vec<(u64, String)>,
    /// Pages with no bad copy found, but a copy (or both) on a node outside this job, which
    /// this run could not read: `(page, which)`. Verify with a rank on every node.
    pub unchecked: Vec<(u64, String)>,
}

impl VerifyReport {
    /// Whether every page was seen to have both its copies.
    pub fn is_healthy(&self) -> bool {
        self.under_replicated.is_empty() && self.lost.is_empty() && self.unchecked.is_empty()
    }
}

/// Progress of a long operation: bytes done, bytes in all.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn state_code(s: &PageState) -> u8 {
    match s {
        PageState::Present { .. } => 0,
        PageState::Absent => 1,
        PageState::Corrupt { .. } => 2,
    }
}

/// The state codes of pages `range` of `meta`, for both roles, before any node reports: a page
/// never written is present everywhere (zeros, on no disk); the others are held by nobody yet.
fn initial_states(meta: &FileMeta, range: std::ops::Range<u64>) -> Vec<[u8; 2]> {
    range
        .map(|p| if meta.was_written(p) { [3, 3] } else { [0, 0] })
        .collect()
}

/// The state code of a copy its node could not read (an I/O error on its page files): like a
/// corrupt copy, the other copy is used, but nobody tries to repair it.
const UNREADABLE: u8 = 4;

/// Reads this node's copies `pages` of `meta` (see [`crate::pfs::Volume::read_local_each`]);
/// when the node's page files fail (an I/O error), logs it and reports every page not read yet
/// as [`UNREADABLE`] through `each(page, None)`, so that the other copies are used.
fn read_or_mark(
    vol: &crate::pfs::Volume,
    meta: &FileMeta,
    pages: &[u64],
    mut each: impl FnMut(u64, Option<(&PageState, &[u8])>),
) {
    let mut done = 0;
    let read = vol.read_local_each(meta, pages, |fpage, s, buf| {
        done += 1;
        each(fpage, Some((&s, buf)));
    });
    if let Err(e) = read {
        tracing::error!(target: "psls::pfs", "file {:?}: this node cannot read its copies ({e}); the other copies are used", meta.name);
        // Pages come back in the order asked for, so the first `done` were reported.
        for &fpage in pages.get(done..).unwrap_or_default() {
            each(fpage, None);
        }
    }
}

/// Words for a copy's state code that is not "present".
fn copy_state(code: u8) -> &'static str {
    match code {
        1 => "missing",
        2 => "corrupt",
        UNREADABLE => "unreadable (its node's disk failed; see its log)",
        _ => "on a node outside this job",
    }
}

/// What [`Psls::read_pages`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Export: repairs are logged as warnings, and a page with no good copy is an error.
    Export,
    /// Re-mirroring after a node loss: repairs are expected, and a page with no good copy is
    /// counted, not an error.
    Remirror,
}

impl Psls {
    /// Imports the regular file `src` (read by rank 0) as the PFS file `name` (collective).
    /// The file appears in the catalog, complete, only when every page is on disk on its
    /// primary and its mirror; an existing file of that name is an error unless `replace`.
    /// Pages that are all zeros are not stored (they read as zeros).
    ///
    /// `src` must be a regular file (a FIFO, device, socket or directory is refused before it
    /// is opened), and must hold exactly the size its metadata reports: a file with more (a
    /// `/proc` file, a file growing during the import) or less fails the import, on every
    /// rank, and an existing file of that name stays as it was.
    pub fn pfs_import(
        &self,
        src: &Path,
        name: &str,
        replace: bool,
        progress: Progress<'_>,
    ) -> Result<FileInfo> {
        let opened = if self.rank == 0 {
            open_source(src).map(|(f, len)| (Some(f), len))
        } else {
            Ok((None, 0))
        };
        let (mut file, size) = agree(&self.comm, opened)?;
        let size = self.comm.allreduce_u64(size, crate::rma::ReduceOp::Max)?;
        let vol = &self.volume;
        let st = vol.state();
        let mut catalog = st.catalog;
        // Every rank holds the same catalog, so every rank takes the same branch.
        if catalog.files.contains_key(name) {
            if !replace {
                return Err(Error::Store(format!(
                    "a PFS file named {name:?} exists already; remove it first or pass --replace"
                )));
            }
            catalog.files.remove(name);
        }
        let (catalog, meta) = self.with_new_file(catalog, st.epoch + 1, name, size)?;
        let ps = self.cfg.page_size;
        let npages = size.div_ceil(ps as u64);
        let chunk = chunk_pages(ps);
        // One scatter per chunk carries both copies of its pages (one to the primary's node,
        // one to the mirror's), unless that would take the scatter's send buffer, whose
        // offsets MPI counts in ints, past 1 GiB (pages of 256 MiB and more): then one scatter
        // per role, so that each page is in a scatter once.
        let both: &[&[usize]] = &[&[0, 1]];
        let apart: &[&[usize]] = &[&[0], &[1]];
        let scatters = if 2 * chunk.saturating_mul(ps) <= 1 << 30 {
            both
        } else {
            apart
        };
        vol.publish(&self.comm, catalog, |epoch, catalog| {
            let mut page = 0u64;
            // Every rank learns which pages of every chunk are not zeros, so every rank marks
            // the same pages written.
            let mut nonzero: Vec<u64> = Vec::new();
            let mut failed: Option<Error> = None;
            // Only rank 0 reads; the buffer holds one chunk, and no more than the file needs.
            let mut buf = match file {
                Some(_) => vec![0u8; (chunk as u64).min(npages) as usize * ps],
                None => Vec::new(),
            };
            while page < npages {
                let n = (npages - page).min(chunk as u64) as usize;
                let nb = n.div_ceil(8);
                // Rank 0 reads the chunk, then sends each rank a part in each of `scatters`:
                // byte 0 says whether the read worked; then a bitmap of the chunk's non-zero
                // pages, then the non-zero pages whose copy (of the scatter's roles) the rank
                // keeps, in page order. Each node gets only its own pages, not the whole file.
                let mut read: Option<Result<Vec<u8>, String>> = None;
                if let Some(f) = file.as_mut() {
                    let want = ((size - page * ps as u64) as usize).min(n * ps);
                    // Only the last chunk is short: the end of its last page reads as zeros.
                    buf[want..n * ps].fill(0);
                    read = Some(read_chunk(f, &mut buf[..want], src, size).map(|()| {
                        let mut bitmap = vec![0u8; nb];
                        for (k, data) in buf[..n * ps].chunks(ps).enumerate() {
                            if data.iter().any(|&b| b != 0) {
                                bitmap[k / 8] |= 1 << (k % 8);
                            }
                        }
                        bitmap
                    }));
                }
                // What this rank received per scatter: the pages it keeps, and the part.
                let mut received: Vec<(Vec<u64>, Vec<u8>)> = Vec::with_capacity(2);
                for (g, roles) in scatters.iter().enumerate() {
                    let ours = |p: u64| {
                        let h = vol.holders(&meta, p);
                        roles.iter().any(|&role| h[role] == Some(self.rank))
                    };
                    let parts: Vec<Vec<u8>> = match &read {
                        None => Vec::new(),
                        Some(Err(why)) => vec![[&[1u8][..], why.as_bytes()].concat(); self.size],
                        Some(Ok(bitmap)) => {
                            let mut parts: Vec<Vec<u8>> = (0..self.size)
                                .map(|_| [&[0u8][..], bitmap].concat())
                                .collect();
                            for (k, data) in buf[..n * ps].chunks(ps).enumerate() {
                                if bitmap[k / 8] & (1 << (k % 8)) == 0 {
                                    continue;
                                }
                                let holders = vol.holders(&meta, page + k as u64);
                                for &role in *roles {
                                    if let Some(p) = holders[role].and_then(|r| parts.get_mut(r)) {
                                        p.extend_from_slice(data);
                                    }
                                }
                            }
                            parts
                        }
                    };
                    let got = self.comm.scatter_bytes(0, &parts)?;
                    drop(parts);
                    match got.first() {
                        Some(0) => {}
                        _ => {
                            return Err(Error::Store(format!(
                                "import of {name:?} stopped: {}",
                                String::from_utf8_lossy(got.get(1..).unwrap_or_default())
                            )))
                        }
                    }
                    // The chunk's non-zero pages, then this node's among them, from the part.
                    let bitmap = got.get(1..1 + nb).unwrap_or_default();
                    let written: Vec<u64> = (0..n.min(bitmap.len() * 8))
                        .filter(|&k| bitmap[k / 8] & (1 << (k % 8)) != 0)
                        .map(|k| page + k as u64)
                        .collect();
                    if bitmap.len() < nb {
                        failed.get_or_insert(Error::Protocol(format!(
                            "import: a short part ({} bytes)",
                            got.len()
                        )));
                    }
                    if failed.is_none() {
                        let kept: Vec<u64> = written.iter().copied().filter(|&p| ours(p)).collect();
                        received.push((kept, got));
                    }
                    if g == 0 {
                        nonzero.extend_from_slice(&written);
                    }
                }
                if failed.is_none() {
                    // Both roles' pages in one write: a node's primary and mirror pages of a
                    // chunk interleave (one-page stripes), and together they make longer runs.
                    let parts: Vec<(&[u64], &[u8])> = received
                        .iter()
                        .map(|(kept, got)| (&kept[..], got.get(1 + nb..).unwrap_or_default()))
                        .collect();
                    if let Err(e) = write_kept(vol, &meta, epoch, ps, &parts) {
                        // This rank goes on receiving the chunks (the others would wait for it
                        // in the scatter), and the vote fails the import everywhere.
                        failed = Some(e);
                    }
                }
                vol.start_writeback();
                page += n as u64;
                progress((page * ps as u64).min(size), size);
            }
            // After its reported size, the file must end: a file with more (a /proc file, or
            // one that grew while it was read) would otherwise be imported cut short, silently.
            let ended = match file.as_mut() {
                Some(f) => check_ended(f, src, size),
                None => Ok(()),
            };
            agree(&self.comm, ended)?;
            if let Some(e) = failed {
                return Err(e);
            }
            if let Some(m) = catalog.files.get_mut(name) {
                m.mark_written(nonzero);
            }
            Ok(())
        })?;
        tracing::info!(target: "psls::pfs", "imported {} as {name:?} ({size} bytes)", src.display());
        Ok(FileInfo::from(&meta))
    }

    /// Exports the PFS file `name` to the regular file `dst` (written by rank 0), collectively;
    /// an existing `dst` is an error (see [`Psls::pfs_export_with`] to replace it).
    pub fn pfs_export(&self, name: &str, dst: &Path, progress: Progress<'_>) -> Result<u64> {
        self.pfs_export_with(name, dst, false, progress)
    }

    /// Exports the PFS file `name` to the regular file `dst` (written by rank 0), collectively:
    /// to a temporary file next to `dst`, renamed to `dst` when complete. An existing `dst` is
    /// an error unless it is a regular file and `replace` is set; anything else there (a
    /// symbolic link, a directory, a device, a FIFO, a socket) is never replaced.
    ///
    /// Each page comes from its primary; a missing or corrupt primary is read from the mirror
    /// (and repaired). A page with no good copy stops the export with an error naming it.
    pub fn pfs_export_with(
        &self,
        name: &str,
        dst: &Path,
        replace: bool,
        progress: Progress<'_>,
    ) -> Result<u64> {
        let meta = self.pfs_meta(name)?;
        let ps = meta.page_size as usize;
        let size = meta.size;
        let npages = size.div_ceil(ps as u64);
        let chunk = chunk_pages(ps) as u64;
        let tmp = dst.with_file_name(format!(
            ".{}.psls-export",
            dst.file_name()
                .map_or("out".into(), |n| n.to_string_lossy())
        ));
        let created = if self.rank == 0 {
            check_destination(dst, replace).and_then(|()| create_temporary(&tmp).map(Some))
        } else {
            Ok(None)
        };
        let mut out = agree(&self.comm, created)?;
        let result = (|| {
            let mut page = 0u64;
            while page < npages {
                let n = (npages - page).min(chunk);
                let pages = self.read_pages(&meta, page..page + n, Reading::Export)?.0;
                let wrote = match out.as_mut() {
                    Some(f) => {
                        let want = ((size - page * ps as u64) as usize).min(n as usize * ps);
                        f.write_all(&pages[..want])
                            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))
                    }
                    None => Ok(()),
                };
                // Every rank stops at the chunk rank 0 could not write.
                agree(&self.comm, wrote)?;
                page += n;
                progress((page * ps as u64).min(size), size);
            }
            let done = match out.take() {
                Some(f) => f
                    .sync_all()
                    .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))
                    // Something may have appeared at `dst` while the pages were written.
                    .and_then(|()| check_destination(dst, replace))
                    .and_then(|()| {
                        std::fs::rename(&tmp, dst).map_err(|e| {
                            Error::io(
                                format!("renaming {} to {}", tmp.display(), dst.display()),
                                e,
                            )
                        })
                    }),
                None => Ok(()),
            };
            agree(&self.comm, done)?;
            Ok(size)
        })();
        if result.is_err() && self.rank == 0 {
            let _ = std::fs::remove_file(&tmp);
        }
        agree(&self.comm, result)
    }

    /// Reads file pages `range` on every rank (collective): primaries first, then the mirror of
    /// any page whose primary is missing or corrupt. A missing or corrupt copy is repaired from
    /// the other one. Returns the data and, when re-mirroring, the number of written pages that
    /// have no good copy left (exporting, such a page is an error).
    fn read_pages(
        &self,
        meta: &FileMeta,
        range: std::ops::Range<u64>,
        how: Reading,
    ) -> Result<(Vec<u8>, u64)> {
        let vol = &self.volume;
        let ps = meta.page_size as usize;
        let n = (range.end - range.start) as usize;
        let mut data = vec![0u8; n * ps];
        // state[k][role]: 0 present, 1 absent, 2 corrupt, 3 nobody in this job holds it.
        let mut state = initial_states(meta, range.clone());
        let mut epochs = vec![0u64; n];
        let mut repaired = 0;
        // A local failure (a node's disk) is kept, every rank goes through the same
        // collectives, and all of them return it together.
        let mut failed: Option<Error> = None;
        for role in 0..2 {
            let mut msg = Vec::new();
            if vol.is_leader() {
                let mine: Vec<u64> = range
                    .clone()
                    .enumerate()
                    .filter(|&(k, fpage)| {
                        meta.was_written(fpage)
                            && (role == 0 || state[k][0] != 0)
                            && vol.holders(meta, fpage)[role] == Some(self.rank)
                    })
                    .map(|(_, fpage)| fpage)
                    .collect();
                // The node's pages of the range in one pass over its page files.
                read_or_mark(vol, meta, &mine, |fpage, read| {
                    let k = (fpage - range.start) as u32;
                    msg.extend_from_slice(&k.to_le_bytes());
                    match read {
                        Some((s, buf)) => {
                            msg.push(state_code(s));
                            if let PageState::Present { epoch } = s {
                                msg.extend_from_slice(&epoch.to_le_bytes());
                                msg.extend_from_slice(buf);
                            }
                        }
                        None => msg.push(UNREADABLE),
                    }
                });
            }
            for (r, b) in self.comm.allgather_bytes(&msg)?.iter().enumerate() {
                let mut at = 0;
                while at + 5 <= b.len() {
                    let k = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
                    let code = b[at + 4];
                    at += 5;
                    if k >= n {
                        return Err(Error::Protocol(format!("rank {r} sent page {k} of {n}")));
                    }
                    state[k][role] = code;
                    if code == 0 {
                        let mut e = [0u8; 8];
                        e.copy_from_slice(&b[at..at + 8]);
                        let epoch = u64::from_le_bytes(e);
                        at += 8;
                        let page = &b[at..at + ps];
                        at += ps;
                        if role == 0 || state[k][0] != 0 {
                            data[k * ps..(k + 1) * ps].copy_from_slice(page);
                            epochs[k] = epoch;
                        }
                        // The primary repairs its copy from the mirror's.
                        let fpage = range.start + k as u64;
                        if role == 1
                            && matches!(state[k][0], 1 | 2)
                            && vol.holders(meta, fpage)[0] == Some(self.rank)
                        {
                            if let Err(e) = vol.repair_local(meta, fpage, epoch, page) {
                                failed.get_or_insert(e);
                            }
                            repaired += 1;
                            tracing::debug!(target: "psls::pfs", "file {:?} page {fpage}: the primary copy was {}; repaired from the mirror", meta.name, copy_state(state[k][0]));
                        }
                    }
                }
            }
        }
        // The mirror repairs its copy from the primary's (a spare that took a lost node's place
        // gets its copies so).
        for (k, s) in state.iter().enumerate() {
            let fpage = range.start + k as u64;
            if s[0] == 0 && matches!(s[1], 1 | 2) && vol.holders(meta, fpage)[1] == Some(self.rank)
            {
                if let Err(e) =
                    vol.repair_local(meta, fpage, epochs[k], &data[k * ps..(k + 1) * ps])
                {
                    failed.get_or_insert(e);
                }
                repaired += 1;
                tracing::debug!(target: "psls::pfs", "file {:?} page {fpage}: the mirror copy was {}; repaired from the primary", meta.name, copy_state(s[1]));
            }
        }
        if repaired > 0 && how == Reading::Export {
            tracing::warn!(target: "psls::pfs", "file {:?}, pages {}..{}: {repaired} missing or corrupt copies on this node repaired from their other copy", meta.name, range.start, range.end);
        }
        agree(&self.comm, failed.map_or(Ok(()), Err))?;
        let mut lost = 0;
        for (k, s) in state.iter().enumerate() {
            // A written page with no good copy is lost (a missing copy is never taken as zeros).
            // Every rank saw the same states, so every rank returns the same way.
            if s[0] != 0 && s[1] != 0 {
                if how == Reading::Remirror {
                    lost += 1;
                    continue;
                }
                let fpage = range.start + k as u64;
                let what = copy_state;
                return Err(Error::Store(format!(
                    "PFS file {:?}, page {fpage}: no good copy left (primary {}, mirror {})",
                    meta.name,
                    what(s[0]),
                    what(s[1])
                )));
            }
        }
        Ok((data, lost))
    }

    /// Makes the PFS layout follow this job's nodes (collective, at `init`): in each file laid
    /// out over a node that is no longer in the job (a lost node), the node that took its place
    /// (a spare: a node of the job the file does not use yet, in node order) takes its role,
    /// and gets a copy of every page it keeps, read from the other copy. The new layout is
    /// published once every copy is written, so that one more node loss is survivable. Returns
    /// the pages copied over the job.
    pub(crate) fn pfs_follow_view(&self) -> Result<u64> {
        let vol = &self.volume;
        let job = vol.node_names().to_vec();
        let mut catalog = vol.state().catalog;
        let mut moved = Vec::new();
        for meta in catalog.files.values_mut() {
            let lost: Vec<usize> = (0..meta.nodes.len())
                .filter(|&i| !job.contains(&meta.nodes[i]))
                .collect();
            let fresh: Vec<&String> = job.iter().filter(|n| !meta.nodes.contains(n)).collect();
            if lost.is_empty() || fresh.is_empty() {
                continue;
            }
            let old = meta.nodes.clone();
            for (&i, name) in lost.iter().zip(fresh) {
                meta.nodes[i] = name.clone();
            }
            moved.push((meta.clone(), old));
        }
        if moved.is_empty() {
            return Ok(0);
        }
        let (mut pages, mut total_lost) = (0, 0);
        for (meta, old) in &moved {
            let changed: Vec<String> = old
                .iter()
                .zip(&meta.nodes)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            let todo = meta.written_pages();
            if self.rank == 0 {
                tracing::info!(target: "psls::pfs", "file {:?}: re-mirroring its {todo} written pages onto the job's new nodes ({})", meta.name, changed.join(", "));
            }
            let mut lost = 0;
            // Progress every few seconds: a large file takes a while, and the job waits.
            let (mut done, mut said) = (0u64, std::time::Instant::now());
            for &(start, end) in &meta.written {
                let mut at = start;
                while at < end {
                    let to = (at + chunk_pages(meta.page_size as usize) as u64).min(end);
                    lost += self.read_pages(meta, at..to, Reading::Remirror)?.1;
                    done += to - at;
                    at = to;
                    if self.rank == 0 && said.elapsed() >= std::time::Duration::from_secs(3) {
                        tracing::info!(target: "psls::pfs", "file {:?}: {done} of {todo} pages re-mirrored", meta.name);
                        said = std::time::Instant::now();
                    }
                }
            }
            // Pages with no copy on this job's nodes stay lost (reading them fails with a clear
            // error); the job starts anyway, as it would without re-mirroring.
            if lost > 0 && self.rank == 0 {
                tracing::warn!(target: "psls::pfs", "file {:?}: {lost} written pages have no copy left on this job's nodes; they stay lost (run `psls-pfs verify {}`)", meta.name, meta.name);
            }
            pages += meta.written_pages() - lost;
            total_lost += lost;
        }
        vol.publish(&self.comm, catalog, |_, _| Ok(()))?;
        if self.rank == 0 {
            let copies = if total_lost == 0 {
                "every page has two copies again".to_string()
            } else {
                format!("{total_lost} pages had no copy left")
            };
            tracing::warn!(target: "psls::pfs", "{} PFS files ({pages} pages) laid out again over the job's nodes: {copies}", moved.len());
        }
        Ok(pages)
    }

    /// Checks every checksum and the redundancy of every page of `name`, or of every file
    /// (collective).
    pub fn pfs_verify(&self, name: Option<&str>) -> Result<Vec<VerifyReport>> {
        let metas: Vec<FileMeta> = match name {
            Some(n) => vec![self.pfs_meta(n)?],
            None => self.volume.state().catalog.files.into_values().collect(),
        };
        let vol = &self.volume;
        let mut reports = Vec::new();
        for meta in metas {
            let ps = meta.page_size as usize;
            let npages = meta.size.div_ceil(ps as u64);
            // One byte per (page, role) from the node that holds that role.
            let mut mine = Vec::new();
            if vol.is_leader() {
                // (page, role) of every copy this node keeps, read in one pass over its files.
                let kept: Vec<(u64, u8)> = (0..npages)
                    .filter(|&p| meta.was_written(p))
                    .flat_map(|p| {
                        let h = vol.holders(&meta, p);
                        (0..2u8)
                            .filter(move |&r| h[r as usize] == Some(self.rank))
                            .map(move |r| (p, r))
                    })
                    .collect();
                let pages: Vec<u64> = kept.iter().map(|&(p, _)| p).collect();
                let mut roles = kept.iter().map(|&(_, r)| r);
                read_or_mark(vol, &meta, &pages, |fpage, read| {
                    mine.extend_from_slice(&fpage.to_le_bytes());
                    mine.push(roles.next().unwrap_or(0));
                    mine.push(read.map_or(UNREADABLE, |(s, _)| state_code(s)));
                });
            }
            let mut state = initial_states(&meta, 0..npages);
            for b in self.comm.allgather_bytes(&mine)? {
                for e in b.chunks_exact(10) {
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&e[..8]);
                    let page = u64::from_le_bytes(p) as usize;
                    if page < state.len() && e[8] < 2 {
                        state[page][e[8] as usize] = e[9];
                    }
                }
            }
            let mut rep = VerifyReport {
                name: meta.name.clone(),
                pages: npages,
                ..VerifyReport::default()
            };
            let what = copy_state;
            let seen = |code: u8| if code == 0 { "good" } else { what(code) };
            for (page, s) in state.iter().enumerate() {
                let page = page as u64;
                match (s[0], s[1]) {
                    (0, 0) => rep.redundant += 1,
                    // Nothing bad seen, but a copy this job cannot reach.
                    (0 | 3, 0 | 3) => rep.unchecked.push((
                        page,
                        format!("primary {}, mirror {}", seen(s[0]), seen(s[1])),
                    )),
                    (0, m) => rep
                        .under_replicated
                        .push((page, format!("mirror {}", what(m)))),
                    (p, 0) => rep
                        .under_replicated
                        .push((page, format!("primary {}", what(p)))),
                    // One bad copy; the other is on a node outside this job, maybe good there.
                    (p, m) if p == 3 || m == 3 => rep
                        .under_replicated
                        .push((page, format!("primary {}, mirror {}", what(p), what(m)))),
                    (p, m) => rep
                        .lost
                        .push((page, format!("primary {}, mirror {}", what(p), what(m)))),
                }
            }
            reports.push(rep);
        }
        Ok(reports)
    }

    /// The catalog entry of `name`.
    pub(crate) fn pfs_meta(&self, name: &str) -> Result<FileMeta> {
        self.volume
            .file(name)
            .ok_or_else(|| Error::Store(format!("no PFS file named {name:?} (see `psls-pfs ls`)")))
    }

    /// The nodes that keep page `page` of PFS file `name`: the primary's name, then the
    /// mirror's (none on a one-node layout).
    pub fn page_nodes(&self, name: &str, page: u64) -> Result<(String, Option<String>)> {
        let m = self.pfs_meta(name)?;
        let pl = m.layout.place(page, m.nodes.len());
        let name_of = |i: usize| m.nodes.get(i).cloned().unwrap_or_default();
        Ok((name_of(pl.primary), pl.mirror.map(name_of)))
    }

    /// Describes one PFS file (from the catalog, which every rank holds).
    pub fn file_info(&self, name: &str) -> Result<FileInfo> {
        self.pfs_meta(name).map(|m| FileInfo::from(&m))
    }
}

/// What kind of thing `t` is, when it is not a regular file: words for an error message.
fn not_regular(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    })
}

/// Opens the file `src` to import it, and returns it with its size. Anything but a regular
/// file is refused before it is opened (opening a FIFO would wait for a writer, forever); it
/// is opened without blocking and checked again, in case it was replaced in between.
fn open_source(src: &Path) -> Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let opening = |e| Error::io(format!("opening {} to import it", src.display()), e);
    let refuse = |kind: &str| {
        Error::Store(format!(
            "{} is {kind}, not a regular file: psls-pfs import reads only regular files, \
             of a known size (copy it to a regular file first)",
            src.display()
        ))
    };
    let meta = std::fs::metadata(src).map_err(opening)?;
    if let Some(kind) = not_regular(&meta.file_type()) {
        return Err(refuse(kind));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(src)
        .map_err(opening)?;
    let meta = f.metadata().map_err(opening)?;
    if let Some(kind) = not_regular(&meta.file_type()) {
        return Err(refuse(kind));
    }
    Ok((f, meta.len()))
}

/// Reads the next `buf.len()` bytes of the imported file `src` of `size` bytes, or says why it
/// could not.
fn read_chunk(f: &mut std::fs::File, buf: &mut [u8], src: &Path, size: u64) -> Result<(), String> {
    f.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!(
                "{} ended before its reported size ({size} bytes): it shrank while it was read; \
                 the import was abandoned (import it again once it no longer changes)",
                src.display()
            )
        } else {
            format!("reading {}: {e}", src.display())
        }
    })
}

/// Checks that the imported file `src`, all `size` bytes of it read, has nothing more.
fn check_ended(f: &mut std::fs::File, src: &Path, size: u64) -> Result<()> {
    let mut more = [0u8; 1];
    loop {
        return match f.read(&mut more) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::Store(format!(
                "{} is larger than its reported size ({size} bytes): it is a file whose size \
                 is not known in advance (as in /proc or /sys) or it grew while it was read; \
                 the import was abandoned (copy it to a regular file first)",
                src.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(Error::io(format!("reading {}", src.display()), e)),
        };
    }
}

/// Checks that an export may write `dst`: nothing there, or a regular file and `replace`.
/// Nothing else is ever replaced: renaming over a symbolic link, a device or a FIFO would
/// replace it with a regular file.
fn check_destination(dst: &Path, replace: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dst) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format!("looking at {} to export to it", dst.display()),
                e,
            ))
        }
    };
    match not_regular(&meta.file_type()) {
        Some(kind) => Err(Error::Store(format!(
            "{} is {kind}, not a regular file: psls-pfs export writes only regular files and \
             never replaces anything else (give the path of a new or regular file)",
            dst.display()
        ))),
        None if replace => Ok(()),
        None => Err(Error::Store(format!(
            "{} exists already; pass --replace to replace it, or choose another path",
            dst.display()
        ))),
    }
}

/// Creates the temporary file `tmp` an export writes before renaming it. A regular file left
/// there by an interrupted export is removed; anything else there is an error (it is never
/// followed or replaced).
fn create_temporary(tmp: &Path) -> Result<std::fs::File> {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
    };
    let creating = |e| Error::io(format!("creating {}", tmp.display()), e);
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::symlink_metadata(tmp).map_err(creating)?;
            if let Some(kind) = not_regular(&stale.file_type()) {
                return Err(Error::Store(format!(
                    "{} (the export's temporary file) is {kind}: remove it, then export again",
                    tmp.display()
                )));
            }
            std::fs::remove_file(tmp).map_err(creating)?;
            create().map_err(creating)
        }
        made => made.map_err(creating),
    }
}

/// Writes the pages of an imported chunk that this node keeps to its store at `epoch`, in one
/// call: `parts` holds, for each role (primary, mirror), the pages (ascending) and their data
/// one after the other. The pages of both are merged in page order, so that runs of
/// consecutive pages, whichever role each page has, go out together.
fn write_kept(
    vol: &crate::pfs::Volume,
    meta: &FileMeta,
    epoch: u64,
    ps: usize,
    parts: &[(&[u64], &[u8])],
) -> Result<()> {
    let mut pages: Vec<(u64, &[u8])> = Vec::new();
    for &(kept, data) in parts {
        if data.len() < kept.len() * ps {
            return Err(Error::Protocol(format!(
                "import: rank 0 sent {} bytes for {} pages",
                data.len(),
                kept.len()
            )));
        }
        pages.extend(kept.iter().copied().zip(data.chunks_exact(ps)));
    }
    if pages.is_empty() {
        return Ok(());
    }
    pages.sort_unstable_by_key(|&(p, _)| p);
    let mut all: Vec<u8> = Vec::with_capacity(pages.len() * ps);
    for &(_, d) in &pages {
        all.extend_from_slice(d);
    }
    let mut runs: Vec<(u64, &[u8])> = Vec::new();
    let mut at = 0;
    for run in pages.chunk_by(|a, b| b.0 == a.0 + 1) {
        let bytes = run.len() * ps;
        runs.push((run[0].0, &all[at..at + bytes]));
        at += bytes;
    }
    vol.write_local_runs(meta, epoch, &runs)
}
