//! PFS files in the public API: create, open, map, grow, flush, close and remove.
//!
//! Every call here is collective: every rank calls it, in the same order, with the same
//! arguments.

use super::Psls;
use crate::error::{Error, Result};
use crate::pfs::{Catalog, FileMeta};
use crate::sys::global::{GlobalArray, Pod};

/// What the PFS catalog says of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its page size (also its unit of striping and checksumming).
    pub page_size: usize,
    /// Pages per stripe unit.
    pub stripe_pages: u32,
    /// The node view it was laid out on (node names, in ring order).
    pub nodes: Vec<String>,
    /// The epoch of its last change.
    pub version: u64,
    /// Pages ever written (the others read as zeros and take no disk space).
    pub written_pages: u64,
}

impl From<&FileMeta> for FileInfo {
    fn from(m: &FileMeta) -> FileInfo {
        FileInfo {
            name: m.name.clone(),
            size: m.size,
            page_size: m.page_size as usize,
            stripe_pages: m.layout.stripe_pages,
            nodes: m.nodes.clone(),
            version: m.version,
            written_pages: m.written_pages(),
        }
    }
}

/// A PFS file mapped into the global address space, at the same address on every rank.
///
/// Loads and stores go through [`PfsFile::bytes`] or a typed [`PfsFile::view`]. Modifications
/// stay in memory until a collective [`Psls::flush`] (or [`PfsFile::close`]) publishes them to
/// disk atomically: a crash before that leaves the file at its previous version.
#[derive(Debug)]
pub struct PfsFile<'p> {
    psls: &'p Psls,
    name: String,
    addr: usize,
    size: u64,
    reserved: usize,
}

impl<'p> PfsFile<'p> {
    /// The file's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's size in bytes (including growth not yet flushed).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes of global address space reserved for the file when it was mapped: it grows in
    /// place up to this size.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// The address of byte 0 in the global address space.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// The file's bytes.
    pub fn bytes(&self) -> GlobalArray<'_, u8> {
        GlobalArray::new(self.addr, self.size as usize)
    }

    /// The file as an array of `T` (its size rounded down to whole elements).
    pub fn view<T: Pod>(&self) -> GlobalArray<'_, T> {
        GlobalArray::new(
            self.addr,
            self.size as usize / std::mem::size_of::<T>().max(1),
        )
    }

    /// Grows the file to `new_size` bytes (collective). New bytes read as zeros; the new size
    /// reaches disk with the next flush. The address stays the same while the new size fits the
    /// room reserved at map time (`reserve` of [`Psls::open_file_with`]); otherwise this returns
    /// an error that says how much to reserve.
    pub fn grow(&mut self, new_size: u64) -> Result<()> {
        let p = self.psls;
        let same = p
            .comm
            .allgather_words(&[new_size])?
            .iter()
            .all(|&s| s == new_size);
        if !same {
            return Err(Error::Protocol(format!(
                "growing {:?}: every rank must pass the same size",
                self.name
            )));
        }
        if new_size < self.size {
            return Err(Error::Store(format!(
                "cannot grow {:?} from {} to {new_size} bytes: files only grow",
                self.name, self.size
            )));
        }
        if new_size as usize > self.reserved {
            return Err(Error::Store(format!(
                "cannot grow {:?} to {new_size} bytes in place: it was mapped with room for {} bytes; close it and open it again with Psls::open_file_with(name, reserve) and a larger reserve",
                self.name, self.reserved
            )));
        }
        let Some(mut m) = p.svm.mapping(self.addr) else {
            return Err(Error::Protocol(format!("{:?} is not mapped", self.name)));
        };
        m.meta.size = new_size;
        p.svm.remap_meta(self.addr, m.meta)?;
        self.size = new_size;
        // Every rank knows the new size before anyone touches the new pages.
        p.comm.barrier()
    }

    /// Publishes every mapped file's modifications (collective); see [`Psls::flush`].
    pub fn flush(&self) -> Result<u64> {
        self.psls.flush()
    }

    /// Flushes, then unmaps the file (collective).
    pub fn close(self) -> Result<()> {
        self.psls.flush()?;
        self.psls.svm.unmap_file(&self.psls.comm, self.addr)
    }

    /// Unmaps the file without flushing (collective): modifications since the last flush are
    /// dropped.
    pub fn discard(self) -> Result<()> {
        self.psls.svm.unmap_file(&self.psls.comm, self.addr)
    }

    /// Grows the file to `new_size` bytes where it has no room to grow in place (collective):
    /// flushes (see [`Psls::flush`]: not in a job that checkpoints), maps the file again
    /// elsewhere with room for `reserve` bytes (at least `new_size`), grows it there, and only
    /// then unmaps the old place. On failure the file stays mapped where it was, at its size;
    /// only the flush has happened. The address changes: see [`PfsFile::as_ptr`].
    pub fn relocate(&mut self, new_size: u64, reserve: usize) -> Result<()> {
        let p = self.psls;
        if new_size < self.size {
            return Err(Error::Argument(format!(
                "cannot grow {:?} from {} to {new_size} bytes: files only grow",
                self.name, self.size
            )));
        }
        let need = usize::try_from(new_size).unwrap_or(usize::MAX);
        p.flush()?;
        let mut moved = p.map_named(&self.name, reserve.max(need))?;
        if let Err(e) = moved.grow(new_size) {
            // The old place stays; an error unmapping the new one is secondary.
            let _ = moved.discard();
            return Err(e);
        }
        std::mem::swap(self, &mut moved);
        moved.discard()
    }
}

impl Psls {
    /// Creates the PFS file `name` of `size` bytes (zeros) and maps it (collective). The new
    /// file is in the catalog on every node's disk when this returns.
    pub fn create_file(&self, name: &str, size: u64) -> Result<PfsFile<'_>> {
        self.create_file_with(name, size, size as usize)
    }

    /// [`Psls::create_file`], reserving room for the file to grow to `reserve` bytes in place.
    pub fn create_file_with(&self, name: &str, size: u64, reserve: usize) -> Result<PfsFile<'_>> {
        super::same_arguments(&self.comm, "create_file", name, &[size, reserve as u64])?;
        let st = self.volume.state();
        let (catalog, _) = self.with_new_file(st.catalog, st.epoch + 1, name, size)?;
        let vol = &self.volume;
        vol.publish(&self.comm, catalog, |_, _| Ok(()))?;
        match self.open_file_with(name, reserve) {
            Ok(file) => {
                tracing::info!(target: "psls::pfs", "created PFS file {name:?} ({size} bytes)");
                Ok(file)
            }
            // A file that cannot be mapped (too large for the global range, …) is not left
            // behind: the caller may try again with less room.
            Err(e) => {
                if let Err(r) = self.remove_file(name) {
                    tracing::warn!(target: "psls::pfs", "PFS file {name:?} was created but cannot be mapped, nor removed: {r}");
                }
                Err(e)
            }
        }
    }

    /// `catalog` with a new file `name` of `size` bytes, laid out on this job's nodes with the
    /// configured page size and stripe unit, and the new file's metadata. Collective: every rank
    /// builds the same entry, and an error on any rank is an error on all.
    pub(super) fn with_new_file(
        &self,
        mut catalog: Catalog,
        epoch: u64,
        name: &str,
        size: u64,
    ) -> Result<(Catalog, FileMeta)> {
        let made = catalog
            .create(
                name,
                self.cfg.page_size as u32,
                self.cfg.stripe_pages,
                self.volume.node_names().to_vec(),
                epoch,
            )
            .map(|m| m.id)
            .map_err(Error::from);
        let id = super::agree(&self.comm, made)?;
        let meta = catalog
            .files
            .get_mut(name)
            .filter(|m| m.id == id)
            .ok_or_else(|| Error::Protocol("the new file vanished from the catalog".into()))?;
        meta.size = size;
        let meta = meta.clone();
        Ok((catalog, meta))
    }

    /// Maps the existing PFS file `name` (collective).
    pub fn open_file(&self, name: &str) -> Result<PfsFile<'_>> {
        self.open_file_with(name, 0)
    }

    /// [`Psls::open_file`], reserving room for the file to grow to `reserve` bytes in place.
    /// A file is mapped once at a time: two mappings would be two incoherent copies of it.
    pub fn open_file_with(&self, name: &str, reserve: usize) -> Result<PfsFile<'_>> {
        super::same_arguments(&self.comm, "open_file", name, &[reserve as u64])?;
        if self.svm.mappings().iter().any(|m| m.meta.name == name) {
            return Err(Error::Argument(format!(
                "PFS file {name:?} is mapped already: use that mapping, or close it before opening the file again"
            )));
        }
        self.map_named(name, reserve)
    }

    /// Maps the existing PFS file `name` with room for `reserve` bytes, mapped elsewhere or not.
    fn map_named(&self, name: &str, reserve: usize) -> Result<PfsFile<'_>> {
        let Some(meta) = self.volume.file(name) else {
            return Err(Error::Store(format!(
                "no PFS file named {name:?} (see `psls-pfs ls`; files are created with Psls::create_file or `psls-pfs import`)"
            )));
        };
        let size = meta.size;
        let addr = self.svm.map_file(&self.comm, meta, reserve)?;
        let reserved = self
            .svm
            .mapping(addr)
            .map_or(0, |m| m.reserved * self.svm.page_size());
        Ok(PfsFile {
            psls: self,
            name: name.to_string(),
            addr,
            size,
            reserved,
        })
    }

    /// Publishes the modifications of every mapped file, and their sizes, as the PFS's next
    /// epoch (collective; every rank must have finished writing mapped memory). Each dirty page
    /// is written beside its previous version on its primary and its mirror, with a checksum;
    /// then every node commits, or none does. A crash at any point leaves every file entirely
    /// at its old version or entirely at its new one. Returns the new epoch.
    ///
    /// In a job that has taken a checkpoint (or restarted from one), this is an error: the
    /// files on disk would then be ahead of the memory checkpoint, and a restart would mix the
    /// two. Such a job publishes its files with the permanent checkpoint.
    pub fn flush(&self) -> Result<u64> {
        if self.svm.recovery().is_some() && !self.svm.mappings().is_empty() {
            return Err(crate::Error::Checkpoint(
                "this job takes checkpoints, so mapped files are published by the permanent checkpoint, not by flush or close: a flush between checkpoints would put the files ahead of the memory checkpoint; call checkpoint_now(Permanent) to publish them".into(),
            ));
        }
        let mut catalog = self.volume.state().catalog;
        for m in self.svm.mappings() {
            if let Some(c) = catalog.files.get_mut(&m.meta.name) {
                c.size = m.meta.size;
            }
        }
        let epoch = self.svm.flush_files(&self.comm, &self.volume, catalog)?;
        tracing::debug!(target: "psls::pfs", "PFS flushed as epoch {epoch}");
        Ok(epoch)
    }

    /// Removes the PFS file `name` (collective). It must not be mapped.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        super::same_arguments(&self.comm, "remove_file", name, &[])?;
        let Some(meta) = self.volume.file(name) else {
            return Err(Error::Store(format!("no PFS file named {name:?}")));
        };
        if self.svm.mappings().iter().any(|m| m.meta.id == meta.id) {
            return Err(Error::Store(format!(
                "PFS file {name:?} is mapped: close it before removing it"
            )));
        }
        let mut catalog = self.volume.state().catalog;
        catalog.files.remove(name);
        self.volume.publish(&self.comm, catalog, |_, _| Ok(()))?;
        super::agree(&self.comm, self.volume.remove_local(&meta))?;
        Ok(())
    }

    /// The files in the PFS catalog.
    pub fn files(&self) -> Vec<FileInfo> {
        let st = self.volume.state();
        st.catalog.files.values().map(FileInfo::from).collect()
    }

    /// The PFS's committed epoch.
    pub fn pfs_epoch(&self) -> u64 {
        self.volume.epoch()
    }
}
