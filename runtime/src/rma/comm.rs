//! A duplicated communicator with checked collectives.

use super::{check, handle};
use crate::error::{Error, Result};
use mpi::ffi;
use std::ffi::{c_int, c_void};

/// Reduction operators for [`Comm::allreduce_u64`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Bitwise or.
    BitOr,
    /// Bitwise and.
    BitAnd,
}

impl ReduceOp {
    fn raw(self) -> ffi::MPI_Op {
        match self {
            ReduceOp::Sum => handle!(psls_mpi_op_sum),
            ReduceOp::Max => handle!(psls_mpi_op_max),
            ReduceOp::Min => handle!(psls_mpi_op_min),
            ReduceOp::BitOr => handle!(psls_mpi_op_bor),
            ReduceOp::BitAnd => handle!(psls_mpi_op_band),
        }
    }
}

/// A communicator the runtime owns: a duplicate, with `MPI_ERRORS_RETURN`, freed on drop.
#[derive(Debug)]
pub struct Comm {
    raw: ffi::MPI_Comm,
    rank: usize,
    size: usize,
}

// SAFETY: MPI runs at MPI_THREAD_MULTIPLE (Mpi::start refuses anything less), so a communicator
// handle may be used from any thread, and concurrently.
unsafe impl Send for Comm {}
// SAFETY: as above.
unsafe impl Sync for Comm {}

impl Comm {
    /// Duplicates `parent`, sets `MPI_ERRORS_RETURN` on the copy, and caches rank and size.
    pub(super) fn dup_raw(parent: ffi::MPI_Comm) -> Result<Comm> {
        let mut raw = handle!(psls_mpi_comm_null);
        // SAFETY: parent is a valid communicator of an initialized MPI; raw is a valid
        // out-pointer.
        check("MPI_Comm_dup", unsafe {
            ffi::MPI_Comm_dup(parent, &mut raw)
        })?;
        // From here on `comm` frees the duplicate if anything below fails.
        let mut comm = Comm {
            raw,
            rank: 0,
            size: 0,
        };
        // SAFETY: raw is the valid communicator just created.
        check("MPI_Comm_set_errhandler", unsafe {
            ffi::MPI_Comm_set_errhandler(raw, handle!(psls_mpi_errors_return))
        })?;
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        // SAFETY: raw is valid; rank is a valid out-pointer.
        check("MPI_Comm_rank", unsafe {
            ffi::MPI_Comm_rank(raw, &mut rank)
        })?;
        // SAFETY: raw is valid; size is a valid out-pointer.
        check("MPI_Comm_size", unsafe {
            ffi::MPI_Comm_size(raw, &mut size)
        })?;
        comm.rank = rank as usize;
        comm.size = size as usize;
        Ok(comm)
    }

    /// Another duplicate of this communicator (collective).
    pub fn dup(&self) -> Result<Comm> {
        Comm::dup_raw(self.raw)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    pub(super) fn raw(&self) -> ffi::MPI_Comm {
        self.raw
    }

    /// The raw `MPI_Comm`, for interoperability (e.g. MPI-IO) and for benchmark baselines. It
    /// stays owned by this value: do not free it, and do not use it after this value is dropped.
    pub fn as_raw(&self) -> ffi::MPI_Comm {
        self.raw
    }

    pub(super) fn check_rank(&self, rank: usize) -> Result<c_int> {
        if rank >= self.size {
            return Err(Error::NoSuchRank {
                rank,
                size: self.size,
            });
        }
        Ok(rank as c_int)
    }

    /// `MPI_Barrier`.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: self.raw is a valid communicator.
        check("MPI_Barrier", unsafe { ffi::MPI_Barrier(self.raw) })
    }

    /// A barrier that waits politely: `MPI_Ibarrier`, then `MPI_Test` with `sched_yield`, then
    /// sleeps that double from 2 µs to `max_sleep`. MPI's own blocking barrier busy-polls, which
    /// on an oversubscribed node takes the CPU from the service threads that the ranks still
    /// inside their work need; this one leaves it to them.
    pub fn polite_barrier(&self, max_sleep: std::time::Duration) -> Result<()> {
        let mut req: ffi::MPI_Request = handle!(psls_mpi_request_null);
        // SAFETY: self.raw is a valid communicator; req is a valid out-pointer.
        check("MPI_Ibarrier", unsafe {
            ffi::MPI_Ibarrier(self.raw, &mut req)
        })?;
        let mut polls: u32 = 0;
        let mut sleep = std::time::Duration::from_micros(2);
        loop {
            let mut done: c_int = 0;
            // SAFETY: MPI_Status is plain data that MPI fills in; all-zero is a valid value.
            let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            // SAFETY: req is the active request from MPI_Ibarrier (MPI_Test sets it to
            // MPI_REQUEST_NULL once complete, and we stop then); done and status are valid
            // out-pointers.
            check("MPI_Test", unsafe {
                ffi::MPI_Test(&mut req, &mut done, &mut status)
            })?;
            if done != 0 {
                return Ok(());
            }
            polls = polls.saturating_add(1);
            if polls < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(max_sleep);
            }
        }
    }

    /// `MPI_Allreduce` of one 64-bit unsigned integer.
    ///
    /// Minimum and maximum are computed from an allgather instead: MPICH 4.0 (Debian 12)
    /// compares `MPI_UINT64_T` and `MPI_UNSIGNED_LONG` as signed numbers under `MPI_MIN` and
    /// `MPI_MAX`, so any value of 2^63 or more would come out wrong there.
    pub fn allreduce_u64(&self, value: u64, op: ReduceOp) -> Result<u64> {
        if matches!(op, ReduceOp::Min | ReduceOp::Max) {
            let all = self.allgather_words(&[value])?;
            let values = all.into_iter();
            let folded = if op == ReduceOp::Min {
                values.min()
            } else {
                values.max()
            };
            return Ok(folded.unwrap_or(value));
        }
        let mut out: u64 = 0;
        // SAFETY: send and receive buffers each hold one u64, matching count 1 of
        // MPI_UINT64_T; self.raw is valid.
        check("MPI_Allreduce", unsafe {
            ffi::MPI_Allreduce(
                (&value as *const u64).cast::<c_void>(),
                (&mut out as *mut u64).cast::<c_void>(),
                1,
                handle!(psls_mpi_uint64),
                op.raw(),
                self.raw,
            )
        })?;
        Ok(out)
    }

    /// `MPI_Allgather` of `mine`, which has the same length on every rank: every rank's words,
    /// rank after rank, in one collective.
    pub fn allgather_words(&self, mine: &[u64]) -> Result<Vec<u64>> {
        let n = c_int::try_from(mine.len())
            .map_err(|_| Error::NodeMap("allgather of more than 2^31 values".into()))?;
        let mut out = vec![0u64; mine.len() * self.size];
        if mine.is_empty() {
            return Ok(out);
        }
        // SAFETY: the send buffer holds `n` u64s and the receive buffer `n` per rank, typed
        // MPI_UINT64_T; every rank passes the same n (the caller's contract); self.raw is
        // valid.
        check("MPI_Allgather", unsafe {
            ffi::MPI_Allgather(
                mine.as_ptr().cast::<c_void>(),
                n,
                handle!(psls_mpi_uint64),
                out.as_mut_ptr().cast::<c_void>(),
                n,
                handle!(psls_mpi_uint64),
                self.raw,
            )
        })?;
        Ok(out)
    }

    /// `MPI_Allreduce` with `MPI_SUM` of a list of 64-bit unsigned integers (the same length on
    /// every rank): one collective for several totals.
    pub fn allreduce_sum_u64s(&self, values: &[u64]) -> Result<Vec<u64>> {
        let n = c_int::try_from(values.len())
            .map_err(|_| Error::NodeMap("allreduce of more than 2^31 values".into()))?;
        let mut out = vec![0u64; values.len()];
        if values.is_empty() {
            return Ok(out);
        }
        // SAFETY: send and receive buffers each hold `n` u64s, matching count n of
        // MPI_UINT64_T; self.raw is valid.
        check("MPI_Allreduce", unsafe {
            ffi::MPI_Allreduce(
                values.as_ptr().cast::<c_void>(),
                out.as_mut_ptr().cast::<c_void>(),
                n,
                handle!(psls_mpi_uint64),
                ReduceOp::Sum.raw(),
                self.raw,
            )
        })?;
        Ok(out)
    }

    /// `MPI_Alltoallv` of bytes whose counts both sides already know: `send` holds the parts
    /// for rank 0, 1, ... back to back, `send_counts[r]` bytes for rank `r`; `recv` receives
    /// `recv_counts[r]` bytes from rank `r`, back to back, and must be their sum long. Every
    /// rank's `send_counts[r]` must equal rank `r`'s `recv_counts` entry for it (the caller's
    /// contract: both come from the same plan). A count or offset of 2 GiB or more is refused
    /// before the call, on the rank that has it.
    pub fn alltoallv_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv: &mut [u8],
        recv_counts: &[usize],
    ) -> Result<()> {
        let layout =
            |counts: &[usize], len: usize, what: &str| -> Result<(Vec<c_int>, Vec<c_int>)> {
                if counts.len() != self.size || counts.iter().sum::<usize>() != len {
                    return Err(Error::Protocol(format!(
                        "alltoallv: the {what} counts do not match the buffer or the communicator"
                    )));
                }
                let too_big = || Error::Protocol(format!("alltoallv: a {what} part reaches 2 GiB"));
                let (mut n, mut d, mut at) = (Vec::new(), Vec::new(), 0usize);
                for &c in counts {
                    n.push(c_int::try_from(c).map_err(|_| too_big())?);
                    d.push(c_int::try_from(at).map_err(|_| too_big())?);
                    at += c;
                }
                Ok((n, d))
            };
        let (sn, sd) = layout(send_counts, send.len(), "send")?;
        let (rn, rd) = layout(recv_counts, recv.len(), "receive")?;
        // Never hand MPI a dangling pointer for an empty buffer.
        let mut one = [0u8; 1];
        let sp = if send.is_empty() {
            one.as_ptr()
        } else {
            send.as_ptr()
        };
        let rp = if recv.is_empty() {
            one.as_mut_ptr()
        } else {
            recv.as_mut_ptr()
        };
        // SAFETY: the send buffer holds sum(sn) bytes at the offsets sd, the receive buffer
        // sum(rn) bytes at rd (checked above), typed MPI_BYTE; the receive parts do not
        // overlap; self.raw is valid.
        check("MPI_Alltoallv", unsafe {
            ffi::MPI_Alltoallv(
                sp.cast::<c_void>(),
                sn.as_ptr(),
                sd.as_ptr(),
                handle!(psls_mpi_byte),
                rp.cast::<c_void>(),
                rn.as_ptr(),
                rd.as_ptr(),
                handle!(psls_mpi_byte),
                self.raw,
            )
        })
    }

    /// Gathers one byte string from every rank, in rank order, on every rank.
    pub fn allgather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.allgather_bytes_unless_failed(Some(mine))?
            .ok_or_else(|| Error::Protocol("allgather: a rank sent no contribution".into()))
    }

    /// [`Comm::allgather_bytes`] where a rank may have failed (`None`): then every rank gets
    /// `None`, at the cost of the same two collectives, so that an agreement on success and
    /// the exchange that follows it take one round of collectives, not two.
    pub fn allgather_bytes_unless_failed(
        &self,
        mine: Option<&[u8]>,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let failed = mine.is_none();
        let mine = mine.unwrap_or_default();
        // -1: this rank failed; -2: its contribution is too large, which fails the call on
        // every rank (returning here alone would leave the others in the collective).
        let my_len = if failed {
            -1
        } else {
            c_int::try_from(mine.len()).unwrap_or(-2)
        };
        let mut lens: Vec<c_int> = vec![0; self.size];
        // SAFETY: the send buffer is one c_int and the receive buffer holds `size` c_ints, both
        // typed MPI_INT by rsmpi's RSMPI_INT32_T (c_int is 32-bit on every supported target).
        check("MPI_Allgather", unsafe {
            ffi::MPI_Allgather(
                (&my_len as *const c_int).cast::<c_void>(),
                1,
                ffi::RSMPI_INT32_T,
                lens.as_mut_ptr().cast::<c_void>(),
                1,
                ffi::RSMPI_INT32_T,
                self.raw,
            )
        })?;
        if let Some(r) = lens.iter().position(|&l| l == -2) {
            return Err(Error::NodeMap(format!(
                "allgather: rank {r}'s contribution is larger than 2 GiB"
            )));
        }
        if lens.iter().any(|&l| l < 0) {
            return Ok(None);
        }
        let mut displs = Vec::with_capacity(self.size);
        let mut total: usize = 0;
        for &l in &lens {
            displs.push(
                c_int::try_from(total)
                    .map_err(|_| Error::NodeMap("allgather result larger than 2 GiB".into()))?,
            );
            total += l.max(0) as usize;
        }
        // Never hand MPI an empty Vec: its dangling pointer is 0x1, which is Open MPI's
        // MPI_IN_PLACE.
        let mut all = vec![0u8; total.max(1)];
        let pad = [0u8; 1];
        let send_ptr = if mine.is_empty() {
            pad.as_ptr()
        } else {
            mine.as_ptr()
        };
        // SAFETY: send_ptr points at my_len readable bytes (or at `pad` when my_len is 0); `all`
        // holds the sum of every rank's length and `displs` are the running offsets into it, so
        // each block fits.
        check("MPI_Allgatherv", unsafe {
            ffi::MPI_Allgatherv(
                send_ptr.cast::<c_void>(),
                my_len,
                handle!(psls_mpi_byte),
                all.as_mut_ptr().cast::<c_void>(),
                lens.as_ptr(),
                displs.as_ptr(),
                handle!(psls_mpi_byte),
                self.raw,
            )
        })?;
        Ok(Some(
            lens.iter()
                .zip(&displs)
                .map(|(&l, &d)| all[d as usize..d as usize + l.max(0) as usize].to_vec())
                .collect(),
        ))
    }

    /// Gathers a list of words from every rank, in rank order, on every rank.
    pub fn allgather_u64s(&self, mine: &[u64]) -> Result<Vec<Vec<u64>>> {
        self.allgather_u64s_unless_failed(Some(mine))?
            .ok_or_else(|| Error::Protocol("allgather: a rank sent no contribution".into()))
    }

    /// [`Comm::allgather_u64s`] where a rank may have failed: see
    /// [`Comm::allgather_bytes_unless_failed`].
    pub fn allgather_u64s_unless_failed(
        &self,
        mine: Option<&[u64]>,
    ) -> Result<Option<Vec<Vec<u64>>>> {
        let bytes: Option<Vec<u8>> = mine.map(|m| m.iter().flat_map(|w| w.to_le_bytes()).collect());
        Ok(self
            .allgather_bytes_unless_failed(bytes.as_deref())?
            .map(|all| {
                all.iter()
                    .map(|b| {
                        b.chunks_exact(8)
                            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                            .collect()
                    })
                    .collect()
            }))
    }

    /// Broadcasts a byte string from `root` to every rank; returns it on every rank.
    pub fn bcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>> {
        let root_c = self.check_rank(root)?;
        let mut len: u64 = data.len() as u64;
        // SAFETY: the buffer is one u64 typed MPI_UINT64_T; self.raw is valid.
        check("MPI_Bcast", unsafe {
            ffi::MPI_Bcast(
                (&mut len as *mut u64).cast::<c_void>(),
                1,
                handle!(psls_mpi_uint64),
                root_c,
                self.raw,
            )
        })?;
        // At least one byte, so the pointer is never a dangling 0x1 (see allgather_bytes).
        let mut buf = vec![0u8; (len as usize).max(1)];
        if self.rank == root {
            buf[..data.len()].copy_from_slice(data);
        }
        let count = c_int::try_from(len)
            .map_err(|_| Error::NodeMap("broadcast larger than 2 GiB".into()))?;
        // SAFETY: buf holds at least `len` bytes on every rank.
        check("MPI_Bcast", unsafe {
            ffi::MPI_Bcast(
                buf.as_mut_ptr().cast::<c_void>(),
                count,
                handle!(psls_mpi_byte),
                root_c,
                self.raw,
            )
        })?;
        buf.truncate(len as usize);
        Ok(buf)
    }

    /// Sends `parts[r]` from `root` to each rank `r` and returns this rank's part (collective;
    /// `parts` is read on the root only, a missing part is empty). A part of 2 GiB or more fails
    /// the call on every rank.
    pub fn scatter_bytes(&self, root: usize, parts: &[Vec<u8>]) -> Result<Vec<u8>> {
        let root_c = self.check_rank(root)?;
        let is_root = self.rank == root;
        let part = |r: usize| parts.get(r).map_or(&[][..], |p| p.as_slice());
        // -1 for every rank when some part is too large, so that every rank fails alike.
        let mut lens: Vec<c_int> = Vec::new();
        if is_root {
            lens = (0..self.size)
                .map(|r| c_int::try_from(part(r).len()).unwrap_or(-1))
                .collect();
            if lens.contains(&-1) {
                lens.fill(-1);
            }
        }
        let mut my_len: c_int = 0;
        let dummy: c_int = 0;
        let send_lens: *const c_int = if is_root { lens.as_ptr() } else { &dummy };
        // SAFETY: on the root the send buffer holds `size` c_ints; elsewhere it is not read.
        // The receive buffer is one c_int. c_int is 32-bit, typed MPI_INT by RSMPI_INT32_T.
        check("MPI_Scatter", unsafe {
            ffi::MPI_Scatter(
                send_lens.cast::<c_void>(),
                1,
                ffi::RSMPI_INT32_T,
                (&mut my_len as *mut c_int).cast::<c_void>(),
                1,
                ffi::RSMPI_INT32_T,
                root_c,
                self.raw,
            )
        })?;
        if my_len < 0 {
            return Err(Error::NodeMap(
                "scatter: a part is larger than 2 GiB".into(),
            ));
        }
        let mut all: Vec<u8> = Vec::new();
        let mut displs: Vec<c_int> = Vec::new();
        if is_root {
            let mut at: usize = 0;
            for r in 0..self.size {
                displs.push(c_int::try_from(at).map_err(|_| {
                    Error::NodeMap("scatter: the parts add up to 2 GiB or more".into())
                })?);
                all.extend_from_slice(part(r));
                at += part(r).len();
            }
        }
        // Never hand MPI a dangling pointer (see allgather_bytes).
        all.push(0);
        let mut buf = vec![0u8; (my_len as usize).max(1)];
        let (lens_p, displs_p) = if is_root {
            (lens.as_ptr(), displs.as_ptr())
        } else {
            (std::ptr::null(), std::ptr::null())
        };
        // SAFETY: on the root `all` holds every part at `displs`, `lens` long; the receive
        // buffer holds `my_len` bytes (at least one).
        check("MPI_Scatterv", unsafe {
            ffi::MPI_Scatterv(
                all.as_ptr().cast::<c_void>(),
                lens_p,
                displs_p,
                handle!(psls_mpi_byte),
                buf.as_mut_ptr().cast::<c_void>(),
                my_len,
                handle!(psls_mpi_byte),
                root_c,
                self.raw,
            )
        })?;
        buf.truncate(my_len as usize);
        Ok(buf)
    }
}

/// Words in a control message (see [`Comm::send_words`]).
pub const MSG_WORDS: usize = 7;

impl Comm {
    /// Sends a control message of [`MSG_WORDS`] 64-bit words to `dest` with `tag`.
    ///
    /// Control messages are 56 bytes, far below every MPI's eager limit, so `MPI_Send` returns
    /// without waiting for the receiver.
    pub fn send_words(&self, dest: usize, tag: i32, words: &[u64; MSG_WORDS]) -> Result<()> {
        let d = self.check_rank(dest)?;
        // SAFETY: words is MSG_WORDS valid u64s, matching the count and MPI_UINT64_T; the call
        // returns only when the buffer may be reused.
        check("MPI_Send", unsafe {
            ffi::MPI_Send(
                words.as_ptr().cast::<c_void>(),
                MSG_WORDS as c_int,
                handle!(psls_mpi_uint64),
                d,
                tag,
                self.raw,
            )
        })
    }

    /// Receives one pending control message with `tag` from any rank, if one has arrived.
    /// Never blocks; each call also drives MPI's progress engine.
    pub fn try_recv_words(&self, tag: i32) -> Result<Option<(usize, [u64; MSG_WORDS])>> {
        let mut flag: c_int = 0;
        // SAFETY: MPI_Status is a plain C struct; all-zero is a valid value to be overwritten.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: self.raw is valid; flag and status are valid out-pointers.
        check("MPI_Iprobe", unsafe {
            ffi::MPI_Iprobe(ffi::RSMPI_ANY_SOURCE, tag, self.raw, &mut flag, &mut status)
        })?;
        if flag == 0 {
            return Ok(None);
        }
        let source = status.MPI_SOURCE;
        let mut words = [0u64; MSG_WORDS];
        // SAFETY: words has room for MSG_WORDS u64s; the message was probed from `source` with
        // `tag`, and only this thread receives with this tag on this communicator, so the
        // receive matches it without blocking.
        check("MPI_Recv", unsafe {
            ffi::MPI_Recv(
                words.as_mut_ptr().cast::<c_void>(),
                MSG_WORDS as c_int,
                handle!(psls_mpi_uint64),
                source,
                tag,
                self.raw,
                ffi::RSMPI_STATUS_IGNORE,
            )
        })?;
        Ok(Some((source as usize, words)))
    }
}

/// A send started by [`Comm::isend_bytes`]: it owns its buffer until MPI is done with it.
#[derive(Debug)]
pub struct PendingSend {
    req: ffi::MPI_Request,
    // Never read: MPI reads it until the request completes; the heap buffer does not move
    // when the value does.
    _buf: Vec<u8>,
}

// SAFETY: the request handle is only used through &mut self, by one thread at a time.
unsafe impl Send for PendingSend {}

impl PendingSend {
    /// Whether the send has completed (then the buffer is free). Drives MPI's progress.
    pub fn test(&mut self) -> Result<bool> {
        if self.req == handle!(psls_mpi_request_null) {
            return Ok(true);
        }
        let mut done: c_int = 0;
        // SAFETY: MPI_Status is plain data that MPI fills in; all-zero is a valid value.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: req is an active request from MPI_Isend, or MPI_REQUEST_NULL once complete
        // (MPI_Test sets it so); done and status are valid out-pointers.
        check("MPI_Test", unsafe {
            ffi::MPI_Test(&mut self.req, &mut done, &mut status)
        })?;
        Ok(done != 0)
    }
}

impl Drop for PendingSend {
    fn drop(&mut self) {
        if super::is_finalized() || self.req == handle!(psls_mpi_request_null) {
            return;
        }
        // SAFETY: MPI_Status is plain data; all-zero is a valid value.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: req is an active request whose buffer is still alive (dropped after this).
        // The receiver was waiting for this message when it was sent, so the wait ends.
        let rc = unsafe { ffi::MPI_Wait(&mut self.req, &mut status) };
        if let Err(e) = check("MPI_Wait", rc) {
            tracing::warn!(target: "psls::rma", "{e}");
        }
    }
}

impl Comm {
    /// Starts sending `data` to `dest` with `tag` (`MPI_Isend`); the returned value owns the
    /// buffer until [`PendingSend::test`] says the send is complete. Unlike `MPI_Send`, this
    /// never waits for the receiver, so two service threads sending each other pages cannot
    /// deadlock when the pages exceed the eager limit.
    pub fn isend_bytes(&self, dest: usize, tag: i32, data: Vec<u8>) -> Result<PendingSend> {
        let d = self.check_rank(dest)?;
        let count = c_int::try_from(data.len())
            .map_err(|_| Error::Protocol("a message larger than 2 GiB".into()))?;
        let mut req: ffi::MPI_Request = handle!(psls_mpi_request_null);
        // SAFETY: data holds `count` bytes and moves into the returned value, which keeps it
        // alive (at the same heap address) until the request completes; req is a valid
        // out-pointer.
        check("MPI_Isend", unsafe {
            ffi::MPI_Isend(
                data.as_ptr().cast::<c_void>(),
                count,
                handle!(psls_mpi_byte),
                d,
                tag,
                self.raw,
                &mut req,
            )
        })?;
        Ok(PendingSend { req, _buf: data })
    }

    /// Receives a message of at most `buf.len()` bytes from `src` with `tag` into `buf` if one
    /// has arrived (`MPI_Iprobe`, then `MPI_Recv`); returns its length, or `None`.
    pub fn try_recv_bytes_from(
        &self,
        src: usize,
        tag: i32,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        let s = self.check_rank(src)?;
        let mut flag: c_int = 0;
        // SAFETY: MPI_Status is a plain C struct; all-zero is a valid value to be overwritten.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: self.raw is valid; flag and status are valid out-pointers.
        check("MPI_Iprobe", unsafe {
            ffi::MPI_Iprobe(s, tag, self.raw, &mut flag, &mut status)
        })?;
        if flag == 0 {
            return Ok(None);
        }
        let count = c_int::try_from(buf.len())
            .map_err(|_| Error::Protocol("a message larger than 2 GiB".into()))?;
        // SAFETY: buf has room for `count` bytes; the message was probed from `src` with `tag`,
        // and only this thread receives with this tag on this communicator. A longer message
        // makes MPI_Recv fail with MPI_ERR_TRUNCATE, which `check` reports.
        check("MPI_Recv", unsafe {
            ffi::MPI_Recv(
                buf.as_mut_ptr().cast::<c_void>(),
                count,
                handle!(psls_mpi_byte),
                s,
                tag,
                self.raw,
                &mut status,
            )
        })?;
        let mut len: c_int = 0;
        // SAFETY: status was filled in by MPI_Recv; len is a valid out-pointer.
        check("MPI_Get_count", unsafe {
            ffi::MPI_Get_count(&status, handle!(psls_mpi_byte), &mut len)
        })?;
        Ok(Some(usize::try_from(len).unwrap_or(0)))
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        if super::is_finalized() {
            return;
        }
        // SAFETY: self.raw is a communicator this value created and has not freed; MPI is
        // still running.
        let rc = unsafe { ffi::MPI_Comm_free(&mut self.raw) };
        if let Err(e) = check("MPI_Comm_free", rc) {
            tracing::warn!(target: "psls::rma", "{e}");
        }
    }
}

/// One message of [`Comm::exchange_blocks`]: blocks at `offsets` (bytes from the base given
/// there), to or from `peer`.
#[derive(Debug, Clone, Copy)]
pub struct Blocks<'a> {
    /// The rank at the other end.
    pub peer: usize,
    /// Where each block starts, in bytes from the base, in the order they travel.
    pub offsets: &'a [usize],
}

impl Comm {
    /// Sends every message of `sends` (blocks of `block` bytes read from `send_base` plus
    /// their offsets) and receives every message of `recvs` (written to `recv_base` plus
    /// theirs), all posted at once (`MPI_Isend`, `MPI_Irecv`) and waited for together
    /// (`MPI_Waitall`): no copy through a buffer of ours, and every rank progresses while it
    /// waits. Scattered blocks travel as one message of an indexed datatype. The messages
    /// between two ranks are matched in order, so both sides must list them in the same order,
    /// with the same block counts. `tag` must be used by nothing else on this communicator
    /// meanwhile.
    ///
    /// # Safety
    /// Every send block lies in memory readable for the whole call, every receive block in
    /// memory writable for the whole call that nothing else reads or writes meanwhile; receive
    /// blocks do not overlap one another or a send block.
    pub unsafe fn exchange_blocks(
        &self,
        tag: i32,
        block: usize,
        send_base: *const u8,
        sends: &[Blocks],
        recv_base: *mut u8,
        recvs: &[Blocks],
    ) -> Result<()> {
        let too_big = || Error::Protocol("exchange_blocks: a message reaches 2 GiB".into());
        let blen = c_int::try_from(block).map_err(|_| too_big())?;
        for m in sends.iter().chain(recvs) {
            self.check_rank(m.peer)?;
            c_int::try_from(m.offsets.len().saturating_mul(block)).map_err(|_| too_big())?;
        }
        let mut reqs: Vec<ffi::MPI_Request> = Vec::with_capacity(sends.len() + recvs.len());
        let post = |m: &Blocks, base: *mut u8, send: bool, reqs: &mut Vec<ffi::MPI_Request>| {
            let Some(&first) = m.offsets.first() else {
                return Ok(());
            };
            let n = m.offsets.len();
            let dense = m.offsets.windows(2).all(|w| w[0] + block == w[1]);
            let mut ty: ffi::MPI_Datatype = handle!(psls_mpi_byte);
            let (ptr, count) = if dense {
                // The caller vouches that base + offset lies in its buffer.
                (base.wrapping_add(first), (n * block) as c_int)
            } else {
                let displs: Vec<ffi::MPI_Aint> = m
                    .offsets
                    .iter()
                    .map(|&o| ffi::MPI_Aint::try_from(o).map_err(|_| too_big()))
                    .collect::<Result<_>>()?;
                // SAFETY: displs holds n displacements; ty is a valid out-pointer.
                check("MPI_Type_create_hindexed_block", unsafe {
                    ffi::MPI_Type_create_hindexed_block(
                        n as c_int,
                        blen,
                        displs.as_ptr(),
                        handle!(psls_mpi_byte),
                        &mut ty,
                    )
                })?;
                // SAFETY: ty was just created.
                check("MPI_Type_commit", unsafe { ffi::MPI_Type_commit(&mut ty) })?;
                (base, 1)
            };
            let mut req: ffi::MPI_Request = handle!(psls_mpi_request_null);
            // SAFETY: the caller vouches for the blocks' memory until the wait below; peer was
            // checked; req is a valid out-pointer.
            let rc = unsafe {
                if send {
                    ffi::MPI_Isend(
                        ptr.cast::<c_void>(),
                        count,
                        ty,
                        m.peer as c_int,
                        tag,
                        self.raw,
                        &mut req,
                    )
                } else {
                    ffi::MPI_Irecv(
                        ptr.cast::<c_void>(),
                        count,
                        ty,
                        m.peer as c_int,
                        tag,
                        self.raw,
                        &mut req,
                    )
                }
            };
            if !dense {
                // A datatype freed while a transfer uses it lives until the transfer ends.
                // SAFETY: ty is a committed datatype of ours.
                unsafe { ffi::MPI_Type_free(&mut ty) };
            }
            check(if send { "MPI_Isend" } else { "MPI_Irecv" }, rc)?;
            reqs.push(req);
            Ok::<(), Error>(())
        };
        // Receives first, so that the messages find them posted.
        let posted = recvs
            .iter()
            .map(|m| (m, recv_base, false))
            .chain(sends.iter().map(|m| (m, send_base.cast_mut(), true)))
            .try_for_each(|(m, base, send)| post(m, base, send, &mut reqs));
        // Whatever was posted is waited for, even after an error, so that no transfer
        // outlives the call.
        // SAFETY: MPI_Status is plain data; all-zero is a valid value.
        let mut statuses: Vec<ffi::MPI_Status> = vec![unsafe { std::mem::zeroed() }; reqs.len()];
        // SAFETY: reqs holds reqs.len() active requests, statuses as many slots.
        let waited = check("MPI_Waitall", unsafe {
            ffi::MPI_Waitall(
                reqs.len() as c_int,
                reqs.as_mut_ptr(),
                statuses.as_mut_ptr(),
            )
        });
        posted.and(waited)
    }
}
