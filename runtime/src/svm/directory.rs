//! The page directory: one entry per page, kept by the page's home rank in an RMA window, and
//! read and written only under the entry's lock word (taken with compare-and-swap).
//!
//! Entry layout (4 words of 8 bytes):
//! - `lock`: 0 when free, else the holder's rank + 1;
//! - `owner`: the owner's rank + 1 (0: the page was never touched and reads as zeros); bit 63
//!   set when the owner holds write access;
//! - `copyset`: bit r set when rank r holds a copy (the owner included);
//! - `version`: incremented at every change of owner.

use crate::error::Result;
use crate::rma::{AtomicOp, Comm, LockedWindow, Window};

pub(crate) const ENTRY_BYTES: usize = 32;
const WRITABLE: u64 = 1 << 63;

/// A decoded directory entry (without its lock word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Entry {
    pub owner: Option<usize>,
    pub writable: bool,
    pub copyset: u64,
    pub version: u64,
}

impl Entry {
    /// The entry as its three words (owner, copyset, version), as the window and control
    /// messages hold it.
    pub fn to_words(self) -> [u64; 3] {
        let owner =
            self.owner.map_or(0, |o| o as u64 + 1) | if self.writable { WRITABLE } else { 0 };
        [owner, self.copyset, self.version]
    }

    /// The entry from [`Entry::to_words`].
    pub fn from_words([owner, copyset, version]: [u64; 3]) -> Entry {
        Entry {
            owner: match owner & !WRITABLE {
                0 => None,
                o => Some((o - 1) as usize),
            },
            writable: owner & WRITABLE != 0,
            copyset,
            version,
        }
    }

    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        for (chunk, w) in b.chunks_exact_mut(8).zip(self.to_words()) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    fn decode(b: &[u8; 24]) -> Entry {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Entry::from_words([w(0), w(1), w(2)])
    }

    /// The ranks in the copyset, ascending.
    pub fn holders(&self) -> impl Iterator<Item = usize> + '_ {
        (0..64).filter(move |r| self.copyset & (1u64 << r) != 0)
    }
}

/// The directory of every page, distributed over the ranks: page p's home is rank p mod size.
#[derive(Debug)]
pub(crate) struct Directory {
    win: LockedWindow<'static>,
    size: usize,
}

impl Directory {
    /// Creates the directory for `npages` pages (collective). The entries live in an
    /// `MPI_Win_allocate` window, so that the MPI library can serve the directory's atomics and
    /// small transfers from its fastest memory (shared memory between ranks of one host,
    /// registered memory across the network), without the home's service thread. The window is
    /// not zeroed: an entry costs memory only once its page is reserved, and
    /// [`Directory::clear_local`] initializes it then.
    pub fn new(comm: &Comm, npages: usize) -> Result<Directory> {
        let per_rank = npages.div_ceil(comm.size());
        let len = (per_rank * ENTRY_BYTES).max(ENTRY_BYTES);
        let win = LockedWindow::new(Window::allocate_unzeroed(comm, len)?)?;
        Ok(Directory {
            win,
            size: comm.size(),
        })
    }

    /// The home rank of `page` and the byte offset of its entry there.
    pub fn home(&self, page: usize) -> (usize, usize) {
        (page % self.size, (page / self.size) * ENTRY_BYTES)
    }

    /// The median time of a remote atomic read of a directory word on the next rank, in
    /// microseconds (collective over the directory's ranks, which all measure at once, so that
    /// each target is inside MPI and progresses what needs it). 0 with one rank.
    pub fn remote_atomic_us(&self, rank: usize) -> Result<u64> {
        if self.size < 2 {
            return Ok(0);
        }
        let next = (rank + 1) % self.size;
        let mut us = Vec::with_capacity(16);
        for _ in 0..16 {
            let t = std::time::Instant::now();
            self.win.epoch().fetch_and_op(next, 0, AtomicOp::NoOp, 0)?;
            us.push(t.elapsed().as_micros() as u64);
        }
        us.sort_unstable();
        Ok(us[us.len() / 2])
    }

    /// Tries once to take the entry's lock for `me`.
    pub fn try_lock(&self, page: usize, me: usize) -> Result<bool> {
        let (h, off) = self.home(page);
        let old = self
            .win
            .epoch()
            .compare_and_swap(h, off, 0, me as u64 + 1)?;
        Ok(old == 0)
    }

    /// Releases the entry's lock.
    pub fn unlock(&self, page: usize) -> Result<()> {
        let (h, off) = self.home(page);
        self.win
            .epoch()
            .fetch_and_op(h, off, AtomicOp::Replace, 0)?;
        Ok(())
    }

    /// Reads the entry (the caller holds its lock).
    pub fn read(&self, page: usize) -> Result<Entry> {
        let (h, off) = self.home(page);
        let mut b = [0u8; 24];
        self.win.epoch().get(h, off + 8, &mut b)?;
        Ok(Entry::decode(&b))
    }

    /// Writes the entry (the caller holds its lock).
    pub fn write(&self, page: usize, e: &Entry) -> Result<()> {
        let (h, off) = self.home(page);
        self.win.epoch().put(h, off + 8, &e.encode())
    }

    /// Writes the entry of `page`, which this rank homes, locally (while nobody else can use
    /// it: when its pages are being reserved).
    pub fn set_local(&self, page: usize, e: &Entry) -> Result<()> {
        let (_, off) = self.home(page);
        let mut b = [0u8; ENTRY_BYTES];
        b[8..].copy_from_slice(&e.encode());
        self.win.window().local_write(off, &b)
    }

    /// Clears the entries of `pages` that this rank homes: when the pages are reserved, before
    /// anyone may use them (every rank does it, then they synchronize).
    pub fn clear_local(&self, rank: usize, pages: std::ops::Range<usize>) -> Result<()> {
        let zero = [0u8; ENTRY_BYTES];
        for p in pages.filter(|p| p % self.size == rank) {
            self.win.window().local_write(self.home(p).1, &zero)?;
        }
        self.win.epoch().sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for e in [
            Entry::default(),
            Entry {
                owner: Some(0),
                writable: true,
                copyset: 1,
                version: 7,
            },
            Entry {
                owner: Some(63),
                writable: false,
                copyset: u64::MAX,
                version: u64::MAX,
            },
        ] {
            assert_eq!(Entry::decode(&e.encode()), e);
            assert_eq!(Entry::from_words(e.to_words()), e);
        }
        let e = Entry {
            copyset: 0b1010_0001,
            ..Entry::default()
        };
        assert_eq!(e.holders().collect::<Vec<_>>(), vec![0, 5, 7]);
    }
}
