//! The two files of one PFS file on one node: `files/<id>/data`, both slots of every page the
//! node keeps, and `files/<id>/slots`, their headers (slot `s` of page `p` at byte
//! `(2p + s) * 32`).
//!
//! The data file is laid out by the page's *local index*, its rank among the pages this node
//! keeps ([`super::layout::Layout::local_index`]), so that the node's pages are dense on disk
//! whatever the stripe unit: a flush writes a node's pages of a chunk in a few large writes,
//! and the file has few extents to fsync. Local indices are grouped by [`DATA_GROUP`]: a group's
//! slot-0 copies, then its slot-1 copies.

use super::error::{io_error, Result, StoreError};
use super::record::FileMeta;
use super::slot::{Slot, HEADER_LEN};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The open data and slot files of one PFS file.
#[derive(Debug)]
pub(crate) struct PageFiles {
    /// `files/<id>`.
    pub dir: PathBuf,
    /// `files/<id>/data`.
    pub data_path: PathBuf,
    /// The data file.
    pub data: File,
    /// `files/<id>/slots`.
    pub slots_path: PathBuf,
    /// The slot header file.
    pub slots: File,
}

impl PageFiles {
    /// Opens the files of file `id` under `files_dir`, creating them (and their directory,
    /// mode 0700) when missing.
    pub(crate) fn create(files_dir: &Path, id: u64) -> Result<PageFiles> {
        let dir = files_dir.join(id.to_string());
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create the directory", &dir, e)),
        }
        Self::open_in(dir, true, true)?
            .ok_or_else(|| StoreError::Protocol("a created page file vanished".into()))
    }

    /// Opens the existing files of file `id`, for reading and also writing if `write`: `None`
    /// when the directory or a file is missing (never written here, or the root was wiped).
    pub(crate) fn open(files_dir: &Path, id: u64, write: bool) -> Result<Option<PageFiles>> {
        Self::open_in(files_dir.join(id.to_string()), write, false)
    }

    fn open_in(dir: PathBuf, write: bool, create: bool) -> Result<Option<PageFiles>> {
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .create(create)
                .mode(0o600)
                .open(path)
        };
        let data_path = dir.join("data");
        let slots_path = dir.join("slots");
        let data = match open(&data_path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(io_error("open", &data_path, e)),
        };
        let slots = match open(&slots_path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(io_error("open", &slots_path, e)),
        };
        Ok(Some(PageFiles {
            dir,
            data_path,
            data,
            slots_path,
            slots,
        }))
    }

    /// The raw headers of both slots of `page`; bytes past the end of the file read as zero.
    pub(crate) fn raw_headers(&self, page: u64) -> Result<[[u8; HEADER_LEN]; 2]> {
        let mut both = [0u8; 2 * HEADER_LEN];
        let off = header_offset(page, 0)?;
        read_full_at(&self.slots, &mut both, off).map_err(|e| {
            io_error(
                format!("read the headers of page {page} from"),
                &self.slots_path,
                e,
            )
        })?;
        let mut out = [[0u8; HEADER_LEN]; 2];
        out[0].copy_from_slice(&both[..HEADER_LEN]);
        out[1].copy_from_slice(&both[HEADER_LEN..]);
        Ok(out)
    }

    /// Both slots of `page` of file `id`, classified.
    pub(crate) fn slots_of(&self, id: u64, page: u64) -> Result<[Slot; 2]> {
        let [a, b] = self.raw_headers(page)?;
        Ok([Slot::classify(&a, id, page), Slot::classify(&b, id, page)])
    }

    /// Writes the header bytes of slot `slot` of `page`.
    pub(crate) fn write_header(
        &self,
        page: u64,
        slot: usize,
        bytes: &[u8; HEADER_LEN],
    ) -> Result<()> {
        self.slots
            .write_all_at(bytes, header_offset(page, slot)?)
            .map_err(|e| {
                io_error(
                    format!("write the header of slot {slot} of page {page} to"),
                    &self.slots_path,
                    e,
                )
            })
    }

    /// Writes the header pairs of consecutive pages from `first` (`bytes`: both slots of each).
    pub(crate) fn write_headers_at(&self, bytes: &[u8], first: u64) -> Result<()> {
        self.slots
            .write_all_at(bytes, header_offset(first, 0)?)
            .map_err(|e| {
                io_error(
                    format!("write the headers of pages from {first} to"),
                    &self.slots_path,
                    e,
                )
            })
    }

    /// Writes `parts`, one after the other, into slot `slot` of the page of local index `local`
    /// (`page` in the file) and of the pages that follow it on disk (the same group), with one
    /// `pwritev` for up to [`IOV_MAX`] parts.
    pub(crate) fn write_data(
        &self,
        meta: &FileMeta,
        (page, local): (u64, u64),
        slot: usize,
        parts: &[&[u8]],
    ) -> Result<()> {
        let off = data_offset(meta, local, slot)?;
        let result = if crate::inject::enospc("pfs-write") {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            write_all_vectored_at(&self.data, parts, off)
        };
        result.map_err(|e| {
            io_error(
                format!("write page {page} of {:?} (slot {slot}) to", meta.name),
                &self.data_path,
                e,
            )
        })
    }

    /// Reads slot `slot` of the page of local index `local` (`page` in the file) into `buf`;
    /// bytes past the end of the file read as zero.
    pub(crate) fn read_data(
        &self,
        meta: &FileMeta,
        (page, local): (u64, u64),
        slot: usize,
        buf: &mut [u8],
    ) -> Result<()> {
        let off = data_offset(meta, local, slot)?;
        self.read_data_named(buf, off, || {
            format!("read page {page} of {:?} (slot {slot}) from", meta.name)
        })
    }

    /// Reads `buf.len()` bytes of the data file at `off` (copies of consecutive local pages of
    /// one slot and group; zeros past the end).
    pub(crate) fn read_data_at(&self, buf: &mut [u8], off: u64, meta: &FileMeta) -> Result<()> {
        let len = buf.len();
        self.read_data_named(buf, off, || {
            format!("read {len} bytes of {:?} at offset {off} from", meta.name)
        })
    }

    /// Reads the data file at `off` into `buf`; an error says `what` was read.
    fn read_data_named(
        &self,
        buf: &mut [u8],
        off: u64,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        read_full_at(&self.data, buf, off).map_err(|e| io_error(what(), &self.data_path, e))
    }

    /// Fsyncs both files and their directory.
    pub(crate) fn sync(&self) -> Result<()> {
        self.data
            .sync_all()
            .map_err(|e| io_error("fsync", &self.data_path, e))?;
        self.slots
            .sync_all()
            .map_err(|e| io_error("fsync", &self.slots_path, e))?;
        super::record::sync_dir(&self.dir)
    }

    /// Starts the write-back of both files' dirty pages to disk, without waiting for it, so
    /// that the disk works while the flush gathers more pages and the final fsync has less
    /// left to do. A failure here is not an error: the fsync that follows reports it.
    pub(crate) fn start_writeback(&self) {
        use std::os::fd::AsRawFd;
        for f in [&self.data, &self.slots] {
            // SAFETY: a plain system call on a descriptor this struct owns; it touches no
            // memory of this process.
            let _ =
                unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }

    /// Fsyncs the slot file only.
    pub(crate) fn sync_slots(&self) -> Result<()> {
        self.slots
            .sync_all()
            .map_err(|e| io_error("fsync", &self.slots_path, e))
    }

    /// Length of the slot file in bytes.
    pub(crate) fn slots_len(&self) -> Result<u64> {
        self.slots
            .metadata()
            .map(|m| m.len())
            .map_err(|e| io_error("stat", &self.slots_path, e))
    }

    /// Reads slot-file bytes at `off` into `buf` (zeros past the end).
    pub(crate) fn read_slots_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        read_full_at(&self.slots, buf, off).map_err(|e| io_error("read", &self.slots_path, e))
    }
}

/// Largest byte offset the store addresses, so that every offset is a valid `off_t`.
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Offset of slot `slot` of `page` in a file of `unit`-byte records, if the whole record lies
/// below [`MAX_OFFSET`].
fn slot_offset(page: u64, slot: usize, unit: u64) -> Option<u64> {
    page.checked_mul(2)?
        .checked_add(slot as u64)?
        .checked_mul(unit)
        .filter(|&off| off.checked_add(unit).is_some_and(|end| end <= MAX_OFFSET))
}

/// Pages per group of the data file. The data file holds, for each group of `DATA_GROUP`
/// consecutive local indices, the group's slot-0 copies, then its slot-1 copies: pages of one
/// group written to the same slot (a new file, or a region rewritten at each flush) are
/// contiguous, and a flush writes them in one system call.
pub(crate) const DATA_GROUP: u64 = 256;

/// Most buffers one `pwritev` takes (Linux's `UIO_MAXIOV`).
pub(crate) const IOV_MAX: usize = 1024;

/// The local index of `page` of `meta` on node `node`: its place in `node`'s data file.
pub(crate) fn local_page(meta: &FileMeta, node: &str, page: u64) -> Result<u64> {
    let index = meta.nodes.iter().position(|n| n == node);
    index
        .and_then(|i| meta.layout.local_index(page, meta.nodes.len(), i))
        .ok_or_else(|| {
            StoreError::Protocol(format!(
                "node {node} keeps no copy of page {page} of {:?} (its nodes: {})",
                meta.name,
                meta.nodes.join(", ")
            ))
        })
}

/// Byte offset of the header of slot `slot` of `page`.
pub(crate) fn header_offset(page: u64, slot: usize) -> Result<u64> {
    slot_offset(page, slot, HEADER_LEN as u64).ok_or_else(|| {
        StoreError::Protocol(format!(
            "page {page} is beyond the largest offset a file can have"
        ))
    })
}

/// Byte offset of the data of slot `slot` of the page of local index `local` of `meta`.
pub(crate) fn data_offset(meta: &FileMeta, local: u64, slot: usize) -> Result<u64> {
    let unit = u64::from(meta.page_size);
    let group = local / DATA_GROUP;
    slot_offset(group, slot, DATA_GROUP * unit)
        .and_then(|g| g.checked_add((local % DATA_GROUP) * unit))
        .ok_or_else(|| {
            StoreError::Protocol(format!(
                "local page {local} of {:?} is beyond the largest offset a file can have",
                meta.name
            ))
        })
}

/// Writes `parts` one after the other at `off` of `file`: one `pwritev` per [`IOV_MAX`]
/// parts, continued after a short write or an interruption.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut off: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    for batch in parts.chunks(IOV_MAX) {
        let mut iov: Vec<libc::iovec> = batch
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut first = 0;
        while first < iov.len() {
            let at = libc::off_t::try_from(off)
                .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
            let count = (iov.len() - first) as libc::c_int;
            // SAFETY: every iovec points into a live slice of `parts`, which outlives the
            // call; the kernel only reads from them.
            let n = unsafe { libc::pwritev(file.as_raw_fd(), iov[first..].as_ptr(), count, at) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(ErrorKind::WriteZero));
            }
            let mut n = n as usize;
            off += n as u64;
            while n > 0 {
                let v = &mut iov[first];
                if n >= v.iov_len {
                    n -= v.iov_len;
                    first += 1;
                } else {
                    // SAFETY: advancing within the same slice, by less than its length.
                    v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                    v.iov_len -= n;
                    n = 0;
                }
            }
        }
    }
    Ok(())
}

/// Fills `buf` from `file` at `off`, with zeros past the end of the file.
fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}
