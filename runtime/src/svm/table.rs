//! The page table of one rank: what this rank knows of each page of the global range.
//!
//! One 64-bit word per page, read and written atomically, so the fault path, the service thread
//! and (later) the checkpoint can read it without a lock:
//!
//! | bits | field |
//! | --- | --- |
//! | 0–1 | access of the application view: 0 none, 1 read, 2 write |
//! | 2 | replicated: other ranks may hold copies too (else this copy is unique) |
//! | 3 | exclusive: the directory names this rank the page's writing owner (even while the
//! checkpoint or a flush has write-protected the copy locally) |
//! | 4 | busy: a thread is changing the page's protection (the SIGSEGV handler's local upgrade,
//! or the service thread), see [`PageTable::try_acquire`] |
//! | 8–15 | owner + 1 as last seen by this rank (0: unknown) |
//! | 32–63 | the epoch in which this rank last got write access (0: never written here) |
//!
//! Only the service thread changes a page's word, except when memory is freed, which is
//! collective and happens while the service threads are quiet on those pages.

use crate::sys::vm::Access;
use std::sync::atomic::{AtomicU64, Ordering};

const ACCESS_MASK: u64 = 0b11;
const REPLICATED: u64 = 1 << 2;
const EXCLUSIVE: u64 = 1 << 3;
const BUSY: u64 = 1 << 4;
const OWNER_SHIFT: u32 = 8;
const OWNER_MASK: u64 = 0xff << OWNER_SHIFT;
const EPOCH_SHIFT: u32 = 32;

/// What this rank knows of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageInfo {
    /// The application's access to this rank's copy.
    pub access: Access,
    /// Other ranks may hold copies (the page is replicated); else this rank's copy is unique.
    pub replicated: bool,
    /// The owner as last seen by this rank.
    pub owner: Option<usize>,
    /// The epoch in which this rank last got write access, if it ever did and still holds the
    /// copy: the page is dirty since that epoch.
    pub written_epoch: Option<u32>,
    /// The directory names this rank the writing owner: write access may come back without
    /// asking it (after a checkpoint or a flush protected the copy locally).
    pub exclusive: bool,
}

impl PageInfo {
    /// Whether rank `me`, whose entry this is, holds a copy of the page in its frame: an
    /// accessible copy, or a page its node loaded from disk for another rank, which stays
    /// unmapped here (owner `me`, access none) until this rank touches it. Invalidation and
    /// eviction reset the entry, so an owner with no access is always such a loaded page.
    pub fn holds_copy(&self, me: usize) -> bool {
        self.access != Access::None || self.owner == Some(me)
    }

    fn encode(&self) -> u64 {
        let access = match self.access {
            Access::None => 0,
            Access::Read => 1,
            Access::Write => 2,
        };
        let owner = self.owner.map_or(0, |o| (o as u64 + 1) & 0xff);
        access
            | if self.replicated { REPLICATED } else { 0 }
            | if self.exclusive { EXCLUSIVE } else { 0 }
            | owner << OWNER_SHIFT
            | u64::from(self.written_epoch.unwrap_or(0)) << EPOCH_SHIFT
    }

    fn decode(w: u64) -> PageInfo {
        PageInfo {
            access: match w & ACCESS_MASK {
                1 => Access::Read,
                2 => Access::Write,
                _ => Access::None,
            },
            replicated: w & REPLICATED != 0,
            exclusive: w & EXCLUSIVE != 0,
            owner: match (w & OWNER_MASK) >> OWNER_SHIFT {
                0 => None,
                o => Some(o as usize - 1),
            },
            written_epoch: match (w >> EPOCH_SHIFT) as u32 {
                0 => None,
                e => Some(e),
            },
        }
    }
}

/// The page table of one rank.
#[derive(Debug)]
pub(crate) struct PageTable {
    words: Vec<AtomicU64>,
}

impl PageTable {
    /// A table of `npages` pages, all without access.
    pub fn new(npages: usize) -> PageTable {
        PageTable {
            words: (0..npages).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The entry of `page`.
    pub fn get(&self, page: usize) -> PageInfo {
        PageInfo::decode(self.words[page].load(Ordering::Acquire))
    }

    /// Replaces the entry of `page` (keeping its busy bit).
    pub fn set(&self, page: usize, info: PageInfo) {
        self.update(page, |i| *i = info);
    }

    /// Changes the entry of `page` with `f` (keeping its busy bit).
    pub fn update(&self, page: usize, f: impl Fn(&mut PageInfo)) {
        let _ = self.words[page].fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            let mut info = PageInfo::decode(w);
            f(&mut info);
            Some(info.encode() | (w & BUSY))
        });
    }

    /// Takes `page`'s busy bit if it is free and the entry satisfies `pred`; returns the entry.
    /// Lock-free and async-signal-safe: the SIGSEGV handler uses it.
    pub fn try_acquire(&self, page: usize, pred: impl Fn(&PageInfo) -> bool) -> Option<PageInfo> {
        let w = self.words[page].load(Ordering::Acquire);
        let info = PageInfo::decode(w);
        if w & BUSY != 0 || !pred(&info) {
            return None;
        }
        self.words[page]
            .compare_exchange(w, w | BUSY, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| info)
    }

    /// Takes `page`'s busy bit, waiting while another thread holds it (only ever briefly: the
    /// holder changes one page's protection and returns).
    pub fn acquire(&self, page: usize) {
        while self.try_acquire(page, |_| true).is_none() {
            self.wait_not_busy(page);
        }
    }

    /// Changes the entry with `f` and frees the busy bit this thread holds.
    pub fn release(&self, page: usize, f: impl Fn(&mut PageInfo)) {
        let _ = self.words[page].fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            let mut info = PageInfo::decode(w);
            f(&mut info);
            Some(info.encode())
        });
    }

    /// Waits until nobody holds `page`'s busy bit (reads only: it is on every fault's path).
    pub fn wait_not_busy(&self, page: usize) {
        let mut spins = 0u32;
        while self.words[page].load(Ordering::Acquire) & BUSY != 0 {
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let t = PageTable::new(4);
        assert_eq!(t.get(3), PageInfo::default());
        for info in [
            PageInfo {
                access: Access::Write,
                replicated: false,
                owner: Some(0),
                written_epoch: Some(1),
                exclusive: true,
            },
            PageInfo {
                access: Access::Read,
                replicated: true,
                owner: Some(63),
                written_epoch: Some(u32::MAX),
                exclusive: false,
            },
            PageInfo::default(),
        ] {
            t.set(2, info);
            assert_eq!(t.get(2), info);
        }
        t.update(2, |i| i.access = Access::Read);
        assert_eq!(t.get(2).access, Access::Read);
        assert_eq!(t.get(1), PageInfo::default());
    }
}
