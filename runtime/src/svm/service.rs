//! The service thread and the coherence protocol it runs.
//!
//! One service thread per rank owns the SVM's MPI traffic, on its own duplicated communicator.
//! It serves two kinds of work, in one loop:
//!
//! - **local faults**, posted by the SIGSEGV handler: a read fault fetches the page from its
//!   owner (with `MPI_Get` from a read-only owner; a writing owner is asked to downgrade and
//!   send it, `FETCH_PAGE`) and joins the copyset; a write fault invalidates every other copy
//!   and makes this rank the single owner. Each runs under the page's directory lock, so
//!   operations on one page are serialized across the job. Where RMA atomics are slow, the
//!   lock is taken and released through the home's service thread (`LOCK_READ`,
//!   `WRITE_UNLOCK`; `PSLS_DIRECTORY`), which also forwards a read fault's `FETCH_PAGE`.
//! - **requests from other ranks**: `DOWNGRADE` (revoke write access, keep a read copy),
//!   `FETCH_PAGE`, `INVALIDATE` (revoke all access and free the frame), the homes' directory
//!   requests, and the PFS's `LOAD` and `REPAIR`. Every revocation (`mprotect`) comes *before*
//!   anyone copies the page, so no store can slip in after the copy.
//!
//! Whenever the thread waits (for a directory lock, for acknowledgements), it keeps serving
//! requests, so two ranks that wait on each other never deadlock. Its polling also drives MPI's
//! passive-target progress.
//!
//! Polling policy: after doing any work the loop polls again at once; after
//! [`SPIN_POLLS`] empty polls (each with a `sched_yield`) it sleeps, starting at 5 µs and
//! doubling up to `service_max_sleep` (`PSLS_SERVICE_MAX_SLEEP`, 200 µs by default). A local
//! fault ends the sleep at once (the handler rings the doorbell the thread sleeps on), so only
//! remote requests to an idle rank wait, for at most that long. An idle rank costs about 5000
//! short wake-ups a second at the default, not a core.

use super::directory::Entry;
use super::{Core, PageInfo};
use crate::error::{Error, Result};
use crate::sys::fault::Fault;
use crate::sys::vm::Access;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Empty polls before the loop starts sleeping.
pub(crate) const SPIN_POLLS: u32 = 200;
/// First sleep of a service thread that found nothing to do.
const FIRST_SLEEP: Duration = Duration::from_micros(5);

/// What serving a fault did, for the work the loop may do ahead of the next fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// A read miss fetched the page from another rank: prefetch the following pages.
    Fetched,
    /// A write to a page nobody had touched: claim the following untouched pages.
    FreshWrite,
    /// Anything else.
    Other,
}

const TAG_REQ: i32 = 101;
const TAG_ACK: i32 = 102;
/// Acknowledgements of `WRITE_UNLOCK`, which the requester does not wait for.
const TAG_UNLOCKED: i32 = 103;
/// A page's bytes, sent by its owner in answer to `FETCH_PAGE`.
const TAG_PAGE: i32 = 104;
const DOWNGRADE: u64 = 1;
const INVALIDATE: u64 = 2;
/// Load a mapped file's page from this node's disk root into this rank's frame.
pub(super) const LOAD: u64 = 3;
/// Rewrite this node's disk copy of a file page from another rank's frame.
pub(super) const REPAIR: u64 = 4;
/// Home-based directory requests (`PSLS_DIRECTORY=home`): take the entry's lock for the
/// requester and send the entry back (status 1), or say it is busy (status 0). With argument
/// `FORWARD`, for a read fault, the home also asks a page's owner other than the requester to
/// send the requester the page (status 2): three messages instead of two round trips.
const LOCK_READ: u64 = 5;
const FORWARD: u64 = 1;
/// Write the entry (when the argument is 1) and release its lock; acknowledged on
/// `TAG_UNLOCKED`.
const WRITE_UNLOCK: u64 = 6;
/// Downgrade the page here first when the argument is 1, then send its bytes on `TAG_PAGE`
/// (an empty message if that failed) to the rank in the fifth word minus one, or to the sender
/// when it is 0: one round trip instead of a downgrade and a get.
const FETCH_PAGE: u64 = 7;
/// Load the pages of a run of up to 64 that the argument's bits name (bit i: page + i) from
/// this node's disk root into this rank's frame; the acknowledgement's second word has a bit
/// set for each page loaded (see [`Core::load_run`]).
pub(super) const LOAD_RUN: u64 = 8;

/// The most pages the runtime works ahead of a miss on its own (see [`Sequential`]): read
/// prefetch (loading a file's pages from disk included), and taking back after a checkpoint.
/// Also the most pages of one `LOAD_RUN`. Reading a 64 MiB file from disk on 4 ranks
/// (`pfs_bench`): 293–318 MiB/s with runs of 16, 398–400 MiB/s with 64.
pub(crate) const SEQ_AHEAD_MAX: usize = 64;

/// The most untouched pages a sequential first write claims on its own. A claimed page moves
/// no data (it is zeros), so a long run costs only the directory entries and one `mprotect`,
/// and it saves a fault per run. Writing a new 64 MiB file on 4 ranks: the write phase took
/// ~85 ms with runs of 16, ~38 ms with 64.
pub(crate) const SEQ_CLAIM_MAX: usize = 64;

/// `Core::prefetch` for [`Prefetch::Auto`](crate::config::Prefetch::Auto); other values are a
/// number of pages.
const PREFETCH_AUTO: usize = usize::MAX;

/// The setting as `Core::prefetch` keeps it.
pub(crate) fn encode_prefetch(p: crate::config::Prefetch) -> usize {
    match p {
        crate::config::Prefetch::Auto => PREFETCH_AUTO,
        crate::config::Prefetch::Pages(n) => n.min(64),
    }
}

/// Tells sequential misses from the others, as the kernel's readahead does, for one kind of
/// work ahead (read prefetch, claims of untouched pages, taking pages back after a
/// checkpoint). Only atomics: the SIGSEGV handler uses one.
#[derive(Debug)]
pub(crate) struct Sequential {
    /// The last miss served, and the end of the pages worked ahead of it.
    last: AtomicUsize,
    end: AtomicUsize,
    /// How many pages that miss took ahead.
    ahead: AtomicUsize,
}

impl Default for Sequential {
    fn default() -> Sequential {
        Sequential {
            last: AtomicUsize::new(usize::MAX),
            end: AtomicUsize::new(0),
            ahead: AtomicUsize::new(0),
        }
    }
}

impl Sequential {
    /// How many pages to work ahead of a miss on `page`: the number `configured` (the
    /// encoded `PSLS_PREFETCH`) when it is one; under `auto`, when the miss continues the last
    /// one (it lands after it, and no further than the pages worked ahead then, plus one),
    /// twice as many as then: 1, 2, 4, … up to `max`; else none.
    pub(crate) fn ahead(&self, page: usize, configured: usize, max: usize) -> usize {
        if configured != PREFETCH_AUTO {
            return configured;
        }
        let last = self.last.load(Ordering::Relaxed);
        if last != usize::MAX && page > last && page <= self.end.load(Ordering::Relaxed) {
            (self.ahead.load(Ordering::Relaxed) * 2).clamp(1, max)
        } else {
            0
        }
    }

    /// Records a miss on `page` served with `n` pages worked ahead (asked for).
    pub(crate) fn record(&self, page: usize, n: usize) {
        self.last.store(page, Ordering::Relaxed);
        self.end.store(page + n + 1, Ordering::Relaxed);
        self.ahead.store(n, Ordering::Relaxed);
    }
}

impl Core {
    /// The service thread's body: runs until `stop` is set and no fault is pending.
    pub(crate) fn service_loop(&self) {
        self.faults.register_service_thread();
        let mut taken: Vec<Fault> = Vec::new();
        let mut idle: u32 = 0;
        let mut sleep = FIRST_SLEEP;
        loop {
            let seen = self.faults.doorbell();
            let mut worked = match self.serve_requests() {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::error!(target: "psls::svm", "serving a request: {e}");
                    false
                }
            };
            taken.clear();
            self.faults.take(&mut taken);
            for f in taken.drain(..) {
                worked = true;
                match self.handle_fault(&f) {
                    Ok(served) => {
                        let page = (f.addr - self.base) / self.page_size;
                        let configured = self.prefetch.load(Ordering::Relaxed);
                        let seq = match served {
                            Served::Fetched => Some((&self.seq_fetch, SEQ_AHEAD_MAX)),
                            Served::FreshWrite => Some((&self.seq_claim, SEQ_CLAIM_MAX)),
                            Served::Other => None,
                        };
                        let n = seq.map_or(0, |(s, max)| {
                            let n = s.ahead(page, configured, max);
                            s.record(page, n);
                            n
                        });
                        let ahead = n > 0;
                        if ahead {
                            // Counted before the faulting thread resumes, so that a collective
                            // it enters next (free, flush) waits for this work to end.
                            self.ahead_in_flight.fetch_add(1, Ordering::AcqRel);
                        }
                        self.faults.retry(f);
                        // The faulting thread runs on while the following pages come in.
                        if ahead {
                            let done = match served {
                                Served::Fetched => self.prefetch_after(page, n),
                                Served::FreshWrite => self.claim_after(page, n),
                                Served::Other => Ok(()),
                            };
                            self.ahead_in_flight.fetch_sub(1, Ordering::AcqRel);
                            if let Err(e) = done {
                                tracing::error!(target: "psls::svm", "working ahead of page {page}: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        let msg = format!(
                            "PSLS: rank {}: cannot serve the fault at {:#x}: {e}\n",
                            self.rank, f.addr
                        );
                        tracing::error!(target: "psls::svm", "{}", msg.trim_end());
                        self.faults.fail(f, &msg);
                    }
                }
            }
            if worked {
                idle = 0;
                sleep = FIRST_SLEEP;
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            idle = idle.saturating_add(1);
            // Unlocks in flight are answered within a round trip: poll for them, not sleep.
            if idle < SPIN_POLLS || self.unlocks_in_flight.load(Ordering::Acquire) > 0 {
                std::hint::spin_loop();
                std::thread::yield_now();
            } else {
                self.faults.wait_doorbell(seen, sleep);
                sleep = (sleep * 2).min(self.max_sleep);
            }
        }
    }

    /// Serves every request that has arrived; returns how many.
    fn serve_requests(&self) -> Result<usize> {
        let mut n = 0;
        while self.unlocks_in_flight.load(Ordering::Acquire) > 0 {
            if self.comm.try_recv_words(TAG_UNLOCKED)?.is_none() {
                break;
            }
            self.unlocks_in_flight.fetch_sub(1, Ordering::AcqRel);
            n += 1;
        }
        {
            let mut sends = self.pending_sends.lock().unwrap_or_else(|p| p.into_inner());
            let mut failed = Ok(());
            sends.retain_mut(|s| match s.test() {
                Ok(done) => !done,
                Err(e) => {
                    failed = Err(e);
                    true
                }
            });
            failed?;
        }
        while let Some((src, msg)) = self.comm.try_recv_words(TAG_REQ)? {
            let [kind, page, seq, arg, a, b, c] = msg;
            if kind == FETCH_PAGE {
                let to = if a > 0 { a as usize - 1 } else { src };
                self.send_page(to, page as usize, arg == 1)?;
                n += 1;
                continue;
            }
            let page = page as usize;
            let mut reply = [kind, page as u64, seq, 0, 0, 0, 0];
            let mut tag = TAG_ACK;
            let mut served = Ok(());
            match kind {
                DOWNGRADE => served = self.downgrade_local(page),
                INVALIDATE => served = self.invalidate_local(page),
                LOAD | REPAIR => reply[3] = self.serve_file_request(kind, page, arg),
                LOAD_RUN => reply[4] = self.load_masked(page, arg),
                LOCK_READ => match self.dir.try_lock(page, src) {
                    Ok(false) => {}
                    Ok(true) => match self.dir.read(page) {
                        Ok(e) => {
                            reply[3] = 1;
                            reply[4..].copy_from_slice(&e.to_words());
                            match e.owner {
                                Some(o) if arg == FORWARD && o != src => {
                                    reply[3] = 2;
                                    served = if o == self.rank {
                                        self.send_page(src, page, e.writable)
                                    } else {
                                        self.ask_to_send(o, page, e.writable, src)
                                    };
                                }
                                _ => {}
                            }
                        }
                        Err(e) => {
                            served = Err(e);
                            if let Err(e) = self.dir.unlock(page) {
                                tracing::error!(target: "psls::svm", "releasing the lock of page {page}: {e}");
                            }
                        }
                    },
                    Err(e) => served = Err(e),
                },
                WRITE_UNLOCK => {
                    tag = TAG_UNLOCKED;
                    if arg == 1 {
                        served = self.dir.write(page, &Entry::from_words([a, b, c]));
                    }
                    // Released even when the write failed: the error is fatal to the job,
                    // which must not hang on the lock meanwhile.
                    let unlocked = self.dir.unlock(page);
                    if served.is_ok() {
                        served = unlocked;
                    }
                }
                other => {
                    tracing::error!(target: "psls::svm", "unknown request {other} from rank {src}");
                }
            }
            // Acknowledged even on error, so that the requester never waits forever.
            self.comm.send_words(src, tag, &reply)?;
            served?;
            n += 1;
        }
        Ok(n)
    }

    /// Sends `page`'s bytes to `to` (downgrading this rank's copy first when asked), without
    /// waiting for `to` to receive them. On error, sends an empty message and reports it.
    fn send_page(&self, to: usize, page: usize, downgrade: bool) -> Result<()> {
        let mut buf = vec![0u8; self.page_size];
        let read = (|| {
            if downgrade {
                self.downgrade_local(page)?;
            }
            self.frames_win
                .window()
                .local_read(page * self.page_size, &mut buf)
        })();
        if read.is_err() {
            buf.clear();
        }
        let send = self.comm.isend_bytes(to, TAG_PAGE, buf)?;
        self.pending_sends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(send);
        read
    }

    /// Copies `page` from `owner` into this rank's frame by asking the owner to send it
    /// (downgrading its copy first when `downgrade`): the home-based protocol's fetch, one
    /// round trip where a downgrade request and an `MPI_Get` take two.
    fn fetch_sent(&self, page: usize, owner: usize, downgrade: bool) -> Result<()> {
        self.ask_to_send(owner, page, downgrade, self.rank)?;
        self.receive_page(page, owner)
    }

    /// Asks `owner` to send `page` to rank `to` (downgrading its copy first when `downgrade`).
    /// `FETCH_PAGE` is not acknowledged: the page is the answer.
    fn ask_to_send(&self, owner: usize, page: usize, downgrade: bool, to: usize) -> Result<()> {
        let words = [
            FETCH_PAGE,
            page as u64,
            0,
            u64::from(downgrade),
            to as u64 + 1,
            0,
            0,
        ];
        self.comm.send_words(owner, TAG_REQ, &words)
    }

    /// Receives `page` from `owner`, which was asked to send it, into this rank's frame.
    fn receive_page(&self, page: usize, owner: usize) -> Result<()> {
        self.preserve_recovery(page)?;
        let mut buf = vec![0u8; self.page_size];
        let len = loop {
            if let Some(len) = self.comm.try_recv_bytes_from(owner, TAG_PAGE, &mut buf)? {
                break len;
            }
            self.serve_requests()?;
            std::hint::spin_loop();
        };
        if len != self.page_size {
            return Err(Error::Protocol(format!(
                "rank {owner} could not send page {page} (its log says why)"
            )));
        }
        self.install_fetched(page, &buf)
    }

    /// Revokes write access to `page` here, keeping a read copy.
    fn downgrade_local(&self, page: usize) -> Result<()> {
        // Under the page's busy bit, so that the SIGSEGV handler's local upgrade cannot slip in
        // between the protection and the end of `exclusive`.
        self.table.acquire(page);
        let was_writing = self.table.get(page).access == Access::Write;
        let protected = if was_writing {
            self.view
                .protect(page * self.page_size, self.page_size, Access::Read)
        } else {
            Ok(())
        };
        let ok = protected.is_ok();
        // A reader is joining: this copy is no longer unique, and the directory no longer says
        // this rank writes.
        self.table.release(page, |i| {
            if ok && was_writing {
                i.access = Access::Read;
            }
            i.replicated = true;
            i.exclusive = false;
        });
        protected.map_err(|e| self.protect_error(e))?;
        self.counters.downgrades.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Revokes all access to `page` here and frees its frame.
    fn invalidate_local(&self, page: usize) -> Result<()> {
        if self.access(page) != Access::None {
            self.set_access(page, Access::None)?;
        }
        // A recovery copy in the frame must outlive the frame.
        self.preserve_recovery(page)?;
        self.table.set(page, PageInfo::default());
        self.frames
            .punch_hole(page * self.page_size, self.page_size)
            .map_err(|e| Error::io(format!("freeing the frame of page {page}"), e))?;
        self.counters
            .invalidations_received
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `kind` for `page` to every rank in `targets` (never this one) and waits for all
    /// acknowledgements, serving requests meanwhile.
    fn request_all(&self, kind: u64, page: usize, targets: &[usize]) -> Result<()> {
        let each: Vec<(usize, usize)> = targets.iter().map(|&t| (t, page)).collect();
        self.request_each(kind, &each)
    }

    /// Sends `kind` for each `(target, page)` pair (never to this rank) and waits for all
    /// acknowledgements, serving requests meanwhile.
    fn request_each(&self, kind: u64, each: &[(usize, usize)]) -> Result<()> {
        self.request_each_with(kind, each, 0).map(|_| ())
    }

    /// [`Core::request_each`] with an argument word; returns each acknowledgement's status
    /// word, in the order of `each`.
    pub(super) fn request_each_with(
        &self,
        kind: u64,
        each: &[(usize, usize)],
        arg: u64,
    ) -> Result<Vec<u64>> {
        Ok(self
            .request_replies(kind, each, arg)?
            .into_iter()
            .map(|r| r[0])
            .collect())
    }

    /// [`Core::request_each_with`], returning each acknowledgement's last four words (status
    /// first), in the order of `each`.
    fn request_replies(
        &self,
        kind: u64,
        each: &[(usize, usize)],
        arg: u64,
    ) -> Result<Vec<[u64; 4]>> {
        self.request_replies_with(kind, each, |_| arg)
    }

    /// [`Core::request_replies`] with an argument word per request: `arg(i)` for `each[i]`.
    pub(super) fn request_replies_with(
        &self,
        kind: u64,
        each: &[(usize, usize)],
        arg: impl Fn(usize) -> u64,
    ) -> Result<Vec<[u64; 4]>> {
        let mut status = vec![[0u64; 4]; each.len()];
        if each.is_empty() {
            return Ok(status);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        for (i, &(t, page)) in each.iter().enumerate() {
            self.comm
                .send_words(t, TAG_REQ, &[kind, page as u64, seq, arg(i), 0, 0, 0])?;
        }
        let mut missing = each.len();
        while missing > 0 {
            match self.comm.try_recv_words(TAG_ACK)? {
                Some((src, [k, p, s, st, a, b, c])) if k == kind && s == seq => {
                    let Some(i) = each.iter().position(|&x| x == (src, p as usize)) else {
                        return Err(Error::Protocol(format!(
                            "acknowledgement for page {p} from rank {src}, which was not asked"
                        )));
                    };
                    status[i] = [st, a, b, c];
                    missing -= 1
                }
                Some((src, msg)) => {
                    return Err(Error::Protocol(format!(
                        "unexpected acknowledgement {msg:?} from rank {src}"
                    )));
                }
                None => {
                    self.serve_requests()?;
                    std::hint::spin_loop();
                }
            }
        }
        Ok(status)
    }

    /// Takes `page`'s directory lock and reads its entry, serving requests while another rank
    /// holds the lock. With home-based requests (`PSLS_DIRECTORY`), a page homed elsewhere
    /// costs one message to its home and its answer, instead of a remote compare-and-swap and
    /// a get, which some transports (UCX over TCP) emulate in several round trips each.
    ///
    /// With `forward` (a read fault) the home also asks the page's owner, when it is another
    /// rank, to send this rank the page; the answer then says so (`true`), and the caller
    /// receives the page with [`Core::receive_page`].
    fn lock_read(&self, page: usize, forward: bool) -> Result<(Entry, bool)> {
        let (home, _) = self.dir.home(page);
        if home == self.rank || !self.home_requests {
            self.lock_page(page)?;
            let e = self.dir.read(page).inspect_err(|_| {
                if let Err(e) = self.dir.unlock(page) {
                    tracing::error!(target: "psls::svm", "releasing the lock of page {page}: {e}");
                }
            })?;
            return Ok((e, false));
        }
        let arg = if forward { FORWARD } else { 0 };
        let mut tries: u32 = 0;
        loop {
            let [locked, a, b, c] = self.request_replies(LOCK_READ, &[(home, page)], arg)?[0];
            if locked > 0 {
                self.counters.home_locks.fetch_add(1, Ordering::Relaxed);
                return Ok((Entry::from_words([a, b, c]), locked == 2));
            }
            self.serve_requests()?;
            tries = tries.saturating_add(1);
            if tries > 4 {
                std::thread::yield_now();
            }
        }
    }

    /// Writes `page`'s entry (when `e` is given) and releases its lock. A home-based request
    /// does not wait for the home's answer: the lock stays taken until the home has written
    /// the entry, so every later locker sees it, and [`Svm::quiesce`](super::Svm::quiesce)
    /// waits for the answers before anything reads entries without the lock.
    fn write_unlock(&self, page: usize, e: Option<&super::directory::Entry>) -> Result<()> {
        let (home, _) = self.dir.home(page);
        if home == self.rank || !self.home_requests {
            let written = e.map_or(Ok(()), |e| self.dir.write(page, e));
            let unlocked = self.dir.unlock(page);
            return written.and(unlocked);
        }
        let (arg, [a, b, c]) = e.map_or((0, [0; 3]), |e| (1, e.to_words()));
        self.unlocks_in_flight.fetch_add(1, Ordering::AcqRel);
        let sent =
            self.comm
                .send_words(home, TAG_REQ, &[WRITE_UNLOCK, page as u64, 0, arg, a, b, c]);
        if sent.is_err() {
            self.unlocks_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Takes `page`'s directory lock, serving requests while another rank holds it.
    fn lock_page(&self, page: usize) -> Result<()> {
        let mut tries: u32 = 0;
        while !self.dir.try_lock(page, self.rank)? {
            self.serve_requests()?;
            tries = tries.saturating_add(1);
            if tries > 64 {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Serves one local fault, and says what it did (the loop may then work ahead).
    fn handle_fault(&self, f: &Fault) -> Result<Served> {
        if f.addr < self.base || f.addr >= self.base + self.npages * self.page_size {
            return Err(Error::Protocol(format!(
                "fault at {:#x} outside the global range",
                f.addr
            )));
        }
        let page = (f.addr - self.base) / self.page_size;
        // The handler may be changing this page's protection right now: let it finish.
        self.table.wait_not_busy(page);
        let have = self.access(page);
        // Another thread's fault on the same page may have been served already.
        if have == Access::Write || (!f.write && have == Access::Read) {
            if f.bus && have == Access::Write {
                // A SIGBUS on a writable page: another thread's fault made it writable after
                // this store was write-protected, or the store found the memory root full (or
                // the frame file truncated). Giving the frame its memory settles it: a full
                // root fails here, with its message, instead of faulting again and again; and
                // the page's write access is set once more, so no stale write-protection can
                // make the store fault again either.
                self.frames
                    .allocate(page * self.page_size, self.page_size)
                    .map_err(|e| {
                        let what = if e.raw_os_error() == Some(libc::ENOSPC) {
                            "the memory root (tmpfs) is full"
                        } else {
                            "the frame could not get memory"
                        };
                        Error::io(
                            format!(
                                "{what}: a store to page {page} needs its frame in {}; free space in the memory root or lower the job's memory use",
                                self.ckpt_dir.display()
                            ),
                            e,
                        )
                    })?;
                self.set_access(page, Access::Write)?;
            }
            return Ok(Served::Other);
        }
        if !self.allocated(page) {
            return Err(Error::Protocol(format!(
                "address {:#x} is in the global range but not in any global array or mapped file (use after free?)",
                f.addr
            )));
        }
        // A write to a page whose directory entry still names this rank the writing owner (a
        // checkpoint or a flush only protected it here) comes back without the directory. The
        // SIGSEGV handler usually did it already; this serves it when the page was busy then.
        if f.write && self.try_local_upgrade(page) {
            return Ok(Served::Other);
        }
        let (e, forwarded) = self.lock_read(page, !f.write)?;
        let result = if f.write {
            self.write_fault(page, have, e)
        } else {
            self.read_fault(page, e, forwarded)
        };
        let to_write = result.as_ref().ok().and_then(|(_, w)| *w);
        let unlocked = self.write_unlock(page, to_write.as_ref());
        let (served, _) = result?;
        unlocked?;
        Ok(served)
    }

    /// Serves a read fault (the caller holds the page's lock and read its entry `e`): `Fetched`
    /// when the page came from another rank; and the entry to write back as the lock is
    /// released, unless it was written already.
    ///
    /// `forwarded`: the home asked the owner to send the page here already.
    fn read_fault(
        &self,
        page: usize,
        mut e: Entry,
        forwarded: bool,
    ) -> Result<(Served, Option<Entry>)> {
        self.counters.read_faults.fetch_add(1, Ordering::Relaxed);
        let mut loaded = self.load_if_unowned(page, &mut e)?;
        let mut from = None;
        let mut sent = false;
        match e.owner {
            None => {
                // Never touched: the frame is a hole and reads as zeros.
                e.owner = Some(self.rank);
                e.writable = false;
            }
            // Loaded from this node's disk, for this rank or earlier for another one: the
            // frame holds it.
            Some(o) if o == self.rank => loaded = true,
            Some(o) if self.home_requests || e.writable => {
                // The owner downgrades and sends the page, asked by the home or by this rank:
                // one round trip where a downgrade request and a get take two.
                if forwarded {
                    self.receive_page(page, o)?;
                } else {
                    self.fetch_sent(page, o, e.writable)?;
                }
                e.writable = false;
                from = Some(o);
                sent = true;
            }
            // A read-only owner needs no request: the page comes with an `MPI_Get`.
            Some(o) => from = Some(o),
        }
        e.copyset |= 1 << self.rank;
        let mut to_write = Some(e);
        // With home-based requests the page is here already, and the entry goes to the home
        // with the unlock. Otherwise the page comes in while the entry goes out (nobody reads
        // the entry before this rank unlocks it, after both).
        if let Some(o) = from.filter(|_| !sent) {
            self.fetch_recording(page, o, &e)?;
            to_write = None;
        }
        // A page read from disk counts as fetched even when this rank's node loaded it: a
        // sequential reader of a file then loads the following pages ahead.
        let fetched = from.is_some() || loaded;
        self.set_access(page, Access::Read)?;
        self.table.update(page, |i| {
            i.owner = e.owner;
            i.replicated = e.copyset.count_ones() > 1;
        });
        let served = if fetched {
            Served::Fetched
        } else {
            Served::Other
        };
        Ok((served, to_write))
    }

    /// After a read miss on `page`, fetches up to `prefetch` following pages in one batch: the
    /// run stops at the first page that is unallocated, already accessible here, has neither
    /// a remote owner nor data on disk to load, or whose directory lock is busy (prefetch never
    /// waits for a lock). Pages of a mapped file that nobody holds yet are loaded from their
    /// primaries' disks first, every `LOAD` of the run in flight at once.
    fn prefetch_after(&self, page: usize, n: usize) -> Result<()> {
        let mut run = self.lock_run_ahead(
            page,
            n,
            |q| self.allocated(q) && self.access(q) == Access::None,
            |q, e| {
                // Held elsewhere, loaded here earlier (in this rank's frame, not mapped), or on
                // disk and held by nobody.
                e.owner.is_some() || (e.copyset == 0 && self.has_file_data(q))
            },
        )?;
        if run.is_empty() {
            return Ok(());
        }
        let loaded = match self.load_run(&mut run) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.unlock_all(&run, false);
                return Err(e);
            }
        };
        // The run is fetched up to its first page that could not be loaded (the fault on it
        // will try the mirror and report); past it, the pages that were loaded keep their new
        // owner in the directory, and the others are released unchanged.
        let cut = loaded.iter().position(|&l| !l).unwrap_or(run.len());
        let (ahead, past) = run.split_at_mut(cut);
        let result = if ahead.is_empty() {
            Ok(())
        } else {
            self.prefetch_run(ahead)
        };
        // Every lock taken above is released, whatever happened; the entries are written only
        // if the run was fetched.
        let mut unlocked = self.unlock_all(ahead, result.is_ok());
        for ((q, e), l) in past.iter().zip(&loaded[cut..]) {
            if let Err(err) = self.write_unlock(*q, l.then_some(e)) {
                unlocked = Err(err);
            }
        }
        result?;
        unlocked
    }

    /// The run of pages after `page` (at most `n`) to work ahead on, locked, with their entries:
    /// it ends before the first page that is not `usable` here, whose lock is busy, or whose
    /// entry is not `wanted` (the locks past the end are released).
    fn lock_run_ahead(
        &self,
        page: usize,
        n: usize,
        usable: impl Fn(usize) -> bool,
        wanted: impl Fn(usize, &Entry) -> bool,
    ) -> Result<Vec<(usize, Entry)>> {
        let last = (page + n).min(self.npages - 1);
        let end = (page + 1..=last).find(|&q| !usable(q)).unwrap_or(last + 1);
        let mut run = self.try_lock_run(page + 1..end)?;
        let keep = run
            .iter()
            .position(|(q, e)| !wanted(*q, e))
            .unwrap_or(run.len());
        self.unlock_all(&run[keep..], false)?;
        run.truncate(keep);
        Ok(run)
    }

    /// Takes the directory locks of `pages` without waiting for any, and reads their entries:
    /// returns the pages up to the first whose lock was busy (whose locks are then released).
    /// With home-based requests all the requests are in flight at once.
    fn try_lock_run(&self, pages: std::ops::Range<usize>) -> Result<Vec<(usize, Entry)>> {
        let mut run = Vec::new();
        if !self.home_requests {
            for q in pages {
                if !self.dir.try_lock(q, self.rank)? {
                    break;
                }
                match self.dir.read(q) {
                    Ok(e) => run.push((q, e)),
                    Err(err) => {
                        self.dir.unlock(q)?;
                        return Err(err);
                    }
                }
            }
            return Ok(run);
        }
        let asks: Vec<(usize, usize)> = pages.map(|q| (self.dir.home(q).0, q)).collect();
        let replies = self.request_replies(LOCK_READ, &asks, 0)?;
        let mut busy = false;
        for (&(_, q), [locked, a, b, c]) in asks.iter().zip(replies) {
            if locked == 0 {
                busy = true;
                continue;
            }
            self.counters.home_locks.fetch_add(1, Ordering::Relaxed);
            let e = Entry::from_words([a, b, c]);
            if busy {
                // Past a busy page: not part of the run.
                self.write_unlock(q, None)?;
            } else {
                run.push((q, e));
            }
        }
        Ok(run)
    }

    /// Releases the locks of `run`, writing each page's entry first when `write`.
    fn unlock_all(&self, run: &[(usize, Entry)], write: bool) -> Result<()> {
        let mut unlocked = Ok(());
        for (q, e) in run {
            if let Err(err) = self.write_unlock(*q, write.then_some(e)) {
                unlocked = Err(err);
            }
        }
        unlocked
    }

    fn prefetch_run(&self, run: &mut [(usize, super::directory::Entry)]) -> Result<()> {
        let ps = self.page_size;
        let downgrades: Vec<(usize, usize)> = run
            .iter()
            .filter(|(_, e)| e.writable)
            .filter_map(|(q, e)| e.owner.map(|o| (o, *q)))
            .collect();
        self.request_each(DOWNGRADE, &downgrades)?;
        let mut buf = vec![0u8; run.len() * ps];
        // A page this rank loaded from its own node's disk is in its frame already.
        let remote = |e: &Entry| e.owner.filter(|&o| o != self.rank);
        self.frames_win.epoch().batch(|b| {
            for ((q, e), chunk) in run.iter().zip(buf.chunks_mut(ps)) {
                if let Some(o) = remote(e) {
                    b.get(o, q * ps, chunk)?;
                }
            }
            Ok::<(), Error>(())
        })??;
        let mut n = 0u64;
        for ((q, e), chunk) in run.iter().zip(buf.chunks(ps)) {
            if remote(e).is_some() {
                n += 1;
                self.frames_win.window().local_write(*q * ps, chunk)?;
            }
        }
        // One `mprotect` per run of consecutive pages (the pages loaded here are readable
        // already; including them keeps the mapping in one piece).
        let mut k = 0;
        while k < run.len() {
            let mut e = k + 1;
            while e < run.len() && run[e].0 == run[e - 1].0 + 1 {
                e += 1;
            }
            self.set_access_run(run[k].0..run[e - 1].0 + 1, Access::Read)?;
            k = e;
        }
        for (q, e) in run.iter_mut() {
            e.writable = false;
            e.copyset |= 1 << self.rank;
            if remote(e).is_none() {
                continue;
            }
            let (owner, replicated) = (e.owner, e.copyset.count_ones() > 1);
            self.table.update(*q, |i| {
                i.owner = owner;
                i.replicated = replicated;
            });
        }
        self.counters.fetches.fetch_add(n, Ordering::Relaxed);
        self.counters.prefetches.fetch_add(n, Ordering::Relaxed);
        self.counters
            .bytes_fetched
            .fetch_add(n * ps as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Serves a write fault (the caller holds the page's lock): `FreshWrite` when the page had
    /// never been touched by anyone (it was zeros, with no copy anywhere and nothing on disk).
    fn write_fault(
        &self,
        page: usize,
        have: Access,
        mut e: Entry,
    ) -> Result<(Served, Option<Entry>)> {
        self.counters.write_faults.fetch_add(1, Ordering::Relaxed);
        self.load_if_unowned(page, &mut e)?;
        let fresh = e.owner.is_none() && e.copyset == 0;
        let i_hold_copy = have == Access::Read && e.copyset & (1 << self.rank) != 0;
        if let Some(o) = e.owner {
            if o != self.rank && !i_hold_copy {
                if self.home_requests || e.writable {
                    self.fetch_sent(page, o, e.writable)?;
                } else {
                    self.fetch(page, o)?;
                }
            }
        }
        // The frame is about to become writable: a recovery copy in it moves out first.
        self.preserve_recovery(page)?;
        let others: Vec<usize> = e.holders().filter(|&r| r != self.rank).collect();
        self.request_all(INVALIDATE, page, &others)?;
        self.counters
            .invalidations_sent
            .fetch_add(others.len() as u64, Ordering::Relaxed);
        self.take_for_writing(page, &mut e, self.epoch.load(Ordering::Acquire))?;
        let served = if fresh {
            Served::FreshWrite
        } else {
            Served::Other
        };
        Ok((served, Some(e)))
    }

    /// Makes this rank `page`'s single, writing owner, dirty since `epoch`: in its entry `e`
    /// (written back as the caller releases the lock), its protection, and its page table.
    fn take_for_writing(&self, page: usize, e: &mut Entry, epoch: u32) -> Result<()> {
        e.owner = Some(self.rank);
        e.writable = true;
        e.copyset = 1 << self.rank;
        e.version += 1;
        self.set_access(page, Access::Write)?;
        self.table.set(
            page,
            PageInfo {
                access: Access::Write,
                replicated: false,
                owner: Some(self.rank),
                written_epoch: Some(epoch),
                exclusive: true,
            },
        );
        Ok(())
    }

    /// After a write fault on a page nobody had touched, takes up to `prefetch` following pages
    /// that nobody has touched either, for writing, as if this rank had write-faulted on each:
    /// a sequential first write (initializing an array, writing a new file) then faults once
    /// per run instead of once per page. The run stops at the first page that is unallocated,
    /// accessible here, part of a file with data on disk, touched by anyone, or whose
    /// directory lock is busy (this never waits for a lock). A taken page is dirty: if the
    /// application does not write it, it is zeros, and another rank's later write simply
    /// invalidates it here.
    fn claim_after(&self, page: usize, n: usize) -> Result<()> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut run = self.lock_run_ahead(
            page,
            n,
            |q| self.allocated(q) && self.access(q) == Access::None && !self.has_file_data(q),
            |_, e| e.owner.is_none() && e.copyset == 0,
        )?;
        let mut claimed = 0;
        let mut result = Ok(());
        for (q, e) in run.iter_mut() {
            if let Err(err) = self.take_for_writing(*q, e, epoch) {
                result = Err(err);
                break;
            }
            claimed += 1;
        }
        // The taken pages' entries are written; any others are released unchanged.
        let (taken, rest) = run.split_at(claimed);
        let unlocked = self
            .unlock_all(taken, true)
            .and(self.unlock_all(rest, false));
        self.counters
            .claimed
            .fetch_add(claimed as u64, Ordering::Relaxed);
        result?;
        unlocked
    }

    /// A page that nobody holds is loaded from the PFS if it belongs to a mapped file: the
    /// loading rank becomes the owner of a read copy (the caller holds the directory lock).
    /// Returns whether it was loaded.
    fn load_if_unowned(&self, page: usize, e: &mut super::directory::Entry) -> Result<bool> {
        if e.owner.is_none() {
            if let Some(holder) = self.load_file_page(page)? {
                e.owner = Some(holder);
                e.writable = false;
                e.copyset = 1 << holder;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copies `page` from `owner`'s frame into this rank's frame.
    fn fetch(&self, page: usize, owner: usize) -> Result<()> {
        self.fetch_then(page, owner, || Ok(()))
    }

    /// [`Core::fetch`], writing the directory entry `e` of `page` while the page is in flight.
    fn fetch_recording(
        &self,
        page: usize,
        owner: usize,
        e: &super::directory::Entry,
    ) -> Result<()> {
        self.fetch_then(page, owner, || self.dir.write(page, e))
    }

    /// Fetches `page` from `owner`, running `meanwhile` once the get is issued.
    fn fetch_then(
        &self,
        page: usize,
        owner: usize,
        meanwhile: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.preserve_recovery(page)?;
        let mut buf = vec![0u8; self.page_size];
        let off = page * self.page_size;
        self.frames_win.epoch().batch(|b| {
            b.get(owner, off, &mut buf)?;
            meanwhile()
        })??;
        self.install_fetched(page, &buf)
    }

    /// Writes a page fetched from another rank into this rank's frame, and counts it.
    fn install_fetched(&self, page: usize, buf: &[u8]) -> Result<()> {
        self.frames_win
            .window()
            .local_write(page * self.page_size, buf)?;
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_fetched
            .fetch_add(self.page_size as u64, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn access(&self, page: usize) -> Access {
        self.table.get(page).access
    }

    /// Sets the access of a run of pages with one `mprotect` (under each page's busy bit).
    pub(crate) fn set_access_run(&self, pages: std::ops::Range<usize>, a: Access) -> Result<()> {
        for p in pages.clone() {
            self.table.acquire(p);
        }
        let r = self.view.protect(
            pages.start * self.page_size,
            pages.len() * self.page_size,
            a,
        );
        let ok = r.is_ok();
        for p in pages {
            self.table.release(p, |i| {
                if ok {
                    i.access = a
                }
            });
        }
        r.map_err(|e| self.protect_error(e))
    }

    /// Sets the access of one page (under its busy bit, see [`PageTable::try_acquire`]).
    pub(crate) fn set_access(&self, page: usize, a: Access) -> Result<()> {
        self.set_access_run(page..page + 1, a)
    }

    /// Gives write access back to `page` if this rank still owns it for writing (its directory
    /// entry says so; a checkpoint or a flush only protected it here): the recovery frame is
    /// copied out, then the page is unprotected. No directory operation, no allocation, no
    /// MPI: the SIGSEGV handler calls this for write faults before handing them to the service
    /// thread. Returns false when the page does not qualify, another thread is changing its
    /// protection, or something failed (the service thread then serves the fault, and reports).
    ///
    /// The following pages that qualify too come back with it, in one `mprotect`: up to N with
    /// `PSLS_PREFETCH=N`; without it, only when this fault is on the page right after the last
    /// run taken back (a sequential rewrite), and then twice as many as that run took ahead
    /// (1, 2, 4, … up to [`SEQ_AHEAD_MAX`]), as the kernel's readahead does. A sequential
    /// rewrite after a checkpoint then faults a few times per vector, not once per page, and a
    /// sparse writer is not affected. Pages taken back count as written, so the next
    /// checkpoint takes them.
    pub(crate) fn try_local_upgrade(&self, page: usize) -> bool {
        let me = self.rank;
        let qualifies =
            |i: &PageInfo| i.access == Access::Read && i.exclusive && i.owner == Some(me);
        if self.table.try_acquire(page, qualifies).is_none() {
            return false;
        }
        // The run: this page and the following ones that qualify, each taken busy.
        let ahead =
            self.seq_upgrade
                .ahead(page, self.prefetch.load(Ordering::Relaxed), SEQ_AHEAD_MAX);
        let mut end = page + 1;
        while end < self.npages
            && end - page <= ahead
            && self.allocated(end)
            && self.table.try_acquire(end, qualifies).is_some()
        {
            end += 1;
        }
        let ok = (page..end).all(|p| self.preserve_recovery(p).is_ok())
            && self
                .view
                .protect(
                    page * self.page_size,
                    (end - page) * self.page_size,
                    Access::Write,
                )
                .is_ok();
        let epoch = self.epoch.load(Ordering::Acquire);
        for p in page..end {
            self.table.release(p, |i| {
                if ok {
                    i.access = Access::Write;
                    i.written_epoch = Some(epoch);
                }
            });
        }
        if ok {
            self.seq_upgrade.record(page, ahead);
            self.counters.write_faults.fetch_add(1, Ordering::Relaxed);
            self.counters
                .local_upgrades
                .fetch_add((end - page) as u64, Ordering::Relaxed);
        }
        ok
    }

    pub(super) fn protect_error(&self, e: std::io::Error) -> Error {
        if e.raw_os_error() == Some(libc::ENOMEM) {
            let limit = crate::sys::vm::max_map_count().map_or("?".to_string(), |m| m.to_string());
            Error::MapCount {
                limit,
                page_size: self.page_size,
            }
        } else {
            Error::io("mprotect on the global range", e)
        }
    }

    fn allocated(&self, page: usize) -> bool {
        self.allocated[page].load(Ordering::Acquire)
    }
}
