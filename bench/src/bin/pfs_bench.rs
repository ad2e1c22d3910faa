//! `pfs_bench`: bandwidths of the PFS (import, export, mapped read, mapped write + flush), each
//! against a baseline of the same bytes to the same disk, measured in the same run.
//!
//! ```sh
//! PSLS_VIRTUAL_NODES=4 mpirun -n 4 target/release/pfs_bench            # a file of 64 MiB
//! PSLS_VIRTUAL_NODES=4 mpirun -n 4 target/release/pfs_bench --mib 256  # of 256 MiB
//! ```
//!
//! For a file of D MiB, every round measures:
//!
//! - baselines, in a scratch directory inside each node's disk root (so on the same disk as the
//!   PFS): **plain write** (each rank writes its block, D / ranks, to its own file with
//!   `std::fs::File` and `sync_all`, all ranks at once), **plain read** (each rank reads its file
//!   back), and an **MPI-IO collective write** (`MPI_File_write_at_all` of each rank's block at
//!   its offset into one file in rank 0's scratch directory, then `MPI_File_sync`);
//! - the PFS: **import** of a regular file of D MiB (`Psls::pfs_import`: rank 0 reads it, and
//!   every page is written to its primary and its mirror), **export** (`Psls::pfs_export` back
//!   to a regular file, written and synced by rank 0), **mapped read** (each rank reads its block
//!   of the imported file as `u64` words through the mapping: first touches load the pages from
//!   disk) and **mapped write + flush** (each rank writes its block of a new file, then
//!   `Psls::flush`; the flush alone is timed too). Every read is checked, and after each flush
//!   the file is mapped again and checked, so that a flush that loses pages fails the benchmark.
//!
//! Each figure is the slowest rank's time between a common start (barrier) and its own end; the
//! medians over the rounds are compared, and baselines and PFS go first in alternate rounds.
//! The OS page cache is not dropped (that needs root), so reads may be served from memory, on
//! both sides alike. `PSLS_BENCH_SMOKE=1`: 1 MiB, one round, figures not checked.
//!
//! The PFS files it makes are named `pfs_bench.imported` and `pfs_bench.written`; a leftover of
//! a crashed run is replaced. The MPI-IO baseline writes one file in rank 0's disk root, which
//! other nodes see only if that is a shared file system (it is, with virtual nodes on one host).

use mpi::ffi;
use psls::rma::Comm;
use psls::{Error, Psls};
use psls_bench::{agree, median, share_max, smoke, timed};
use std::ffi::{c_char, c_int, CString};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The PFS file imported, exported and read.
const IMPORTED: &str = "pfs_bench.imported";
/// The PFS file written through the mapping and flushed.
const WRITTEN: &str = "pfs_bench.written";

fn main() -> ExitCode {
    let mib = match mib_arg(std::env::args().skip(1)) {
        Ok(m) => m,
        Err(msg) => {
            eprintln!("pfs_bench: {msg}\nusage: pfs_bench [--mib N]   (default 64; 1 with PSLS_BENCH_SMOKE=1)");
            return ExitCode::from(2);
        }
    };
    psls_bench::exit("pfs_bench", run(mib))
}

/// The file size in MiB: `--mib N`, or the default.
fn mib_arg(mut args: impl Iterator<Item = String>) -> Result<usize, String> {
    let mut mib = if smoke() { 1 } else { 64 };
    while let Some(a) = args.next() {
        let v = match a.strip_prefix("--mib=") {
            Some(v) => v.to_string(),
            None if a == "--mib" => args.next().ok_or("--mib needs a number")?,
            None => return Err(format!("unknown argument {a:?}")),
        };
        mib = v
            .parse()
            .ok()
            .filter(|&m| m > 0)
            .ok_or(format!("--mib {v:?}: expected a positive whole number"))?;
    }
    Ok(mib)
}

/// What every measurement needs.
struct Setup<'a> {
    p: &'a Psls,
    comm: &'a Comm,
    /// The file size in bytes.
    bytes: usize,
    /// This rank's block of the file's `u64` words.
    mine: Range<usize>,
    /// This rank's block, as bytes (the words `word(i)` for `i` in `mine`).
    block: Vec<u8>,
    /// This rank's baseline file.
    plain: PathBuf,
    /// The regular file imported (on rank 0).
    source: PathBuf,
    /// The regular file exported to (on rank 0).
    exported: PathBuf,
    /// The MPI-IO baseline's file, the same path on every rank.
    mpiio: CString,
}

/// The medians' inputs: seconds per round.
#[derive(Default)]
struct Times {
    plain_write: Vec<f64>,
    plain_read: Vec<f64>,
    mpiio_write: Vec<f64>,
    import: Vec<f64>,
    export: Vec<f64>,
    mapped_read: Vec<f64>,
    mapped_write: Vec<f64>,
    flush: Vec<f64>,
    /// The same two with the service thread working 16 pages ahead.
    ahead_read: Vec<f64>,
    ahead_write: Vec<f64>,
}

fn run(mib: usize) -> psls::Result<()> {
    let p = psls::init()?;
    let comm = p.dup_comm()?;
    let scratch = p.disk_root().join(format!("pfs_bench.{}", p.rank()));
    let result = bench(&p, &comm, &scratch, mib);
    // Local files only, so every rank can do it whatever happened elsewhere.
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    drop(comm);
    p.finalize()
}

fn bench(p: &Psls, comm: &Comm, scratch: &Path, mib: usize) -> psls::Result<()> {
    let bytes = mib << 20;
    let words = bytes / 8;
    let mine = p.local_range(words);
    let made = std::fs::create_dir_all(scratch)
        .map_err(|e| Error::io(format!("creating {}", scratch.display()), e));
    agree(comm, made)?;
    // Rank 0's scratch directory holds the shared files; every rank learns its path.
    let root0 = comm.bcast_bytes(0, scratch.as_os_str().as_bytes())?;
    let root0 = PathBuf::from(std::ffi::OsStr::from_bytes(&root0));
    let mpiio = CString::new(root0.join("mpiio").as_os_str().as_bytes())
        .map_err(|_| Error::Store(format!("{} contains a NUL byte", root0.display())))?;
    let s = Setup {
        p,
        comm,
        bytes,
        block: mine.clone().flat_map(|i| word(i).to_le_bytes()).collect(),
        mine,
        plain: scratch.join("plain"),
        source: root0.join("source"),
        exported: root0.join("exported"),
        mpiio,
    };
    let rounds = if smoke() { 1 } else { 3 };
    if p.rank() == 0 {
        println!(
            "pfs_bench: {}, {} ranks on {} nodes, {mib} MiB, page {}, medians of {rounds} rounds",
            p.mpi_library(),
            p.size(),
            p.node_map().num_nodes(),
            p.page_size(),
        );
        println!(
            "disk: {} (scratch files on the file system of the PFS; OS page cache not dropped, so reads may come from memory)",
            p.disk_root().display()
        );
    }
    let made = if p.rank() == 0 {
        write_source(&s.source, words)
    } else {
        Ok(())
    };
    agree(comm, made)?;
    let mut t = Times::default();
    for round in 0..rounds {
        // Alternate which side goes first, so warm-up effects do not favour one.
        if round % 2 == 0 {
            baselines(&s, &mut t)?;
            pfs(&s, &mut t)?;
        } else {
            pfs(&s, &mut t)?;
            baselines(&s, &mut t)?;
        }
    }
    p.remove_file(IMPORTED)?;
    if p.rank() == 0 {
        report(mib, &mut t);
    }
    Ok(())
}

/// Word `i` of every file written: never zero, since the PFS does not store zero pages.
fn word(i: usize) -> u64 {
    i as u64 + 1
}

/// The wrapping sum of `word(i)` over `range`.
fn sum_of(range: Range<usize>) -> u64 {
    range.fold(0u64, |s, i| s.wrapping_add(word(i)))
}

/// Writes the regular file to import: `words` words `word(i)`, synced.
fn write_source(path: &Path, words: usize) -> psls::Result<()> {
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    const CHUNK: usize = 1 << 17;
    for start in (0..words).step_by(CHUNK) {
        let chunk: Vec<u8> = (start..(start + CHUNK).min(words))
            .flat_map(|i| word(i).to_le_bytes())
            .collect();
        f.write_all(&chunk).map_err(io)?;
    }
    f.sync_all().map_err(io)
}

/// One round of the baselines: plain write + fsync, plain read, MPI-IO collective write.
fn baselines(s: &Setup<'_>, t: &mut Times) -> psls::Result<()> {
    let (p, comm) = (s.p, s.comm);
    remove_quietly(&s.plain);
    t.plain_write.push(timed(p, comm, || {
        let io = |e| Error::io(format!("writing {}", s.plain.display()), e);
        let mut f = std::fs::File::create(&s.plain).map_err(io)?;
        f.write_all(&s.block).map_err(io)?;
        f.sync_all().map_err(io)
    })?);
    let mut buf = vec![0u8; s.block.len()];
    t.plain_read.push(timed(p, comm, || {
        let io = |e| Error::io(format!("reading {}", s.plain.display()), e);
        std::fs::File::open(&s.plain)
            .and_then(|mut f| f.read_exact(&mut buf))
            .map_err(io)?;
        check_sum(&s.plain.display().to_string(), sum_bytes(&buf), s)
    })?);
    remove_quietly(&s.plain);
    if p.rank() == 0 {
        remove_quietly(Path::new(std::ffi::OsStr::from_bytes(s.mpiio.as_bytes())));
    }
    let offset = s.mine.start * 8;
    t.mpiio_write.push(timed(p, comm, || {
        mpiio_write(comm, &s.mpiio, offset, &s.block)
    })?);
    if p.rank() == 0 {
        remove_quietly(Path::new(std::ffi::OsStr::from_bytes(s.mpiio.as_bytes())));
    }
    Ok(())
}

/// One round of the PFS: import, export, mapped read, mapped write + flush.
fn pfs(s: &Setup<'_>, t: &mut Times) -> psls::Result<()> {
    let (p, comm) = (s.p, s.comm);
    // A fresh import each round (not a replacement, which would also time the removal).
    if exists(p, IMPORTED) {
        p.remove_file(IMPORTED)?;
    }
    t.import.push(timed(p, comm, || {
        p.pfs_import(&s.source, IMPORTED, true, &mut |_, _| {})
            .map(drop)
    })?);
    if p.rank() == 0 {
        remove_quietly(&s.exported);
    }
    t.export.push(timed(p, comm, || {
        p.pfs_export(IMPORTED, &s.exported, &mut |_, _| {})
            .map(drop)
    })?);
    let same = if p.rank() == 0 {
        same_contents(&s.source, &s.exported)
    } else {
        Ok(())
    };
    agree(comm, same)?;
    if p.rank() == 0 {
        remove_quietly(&s.exported);
    }

    t.mapped_read.push(mapped_read(s)?);
    let (whole, flush) = mapped_write(s)?;
    t.mapped_write.push(whole);
    t.flush.push(flush);
    // Again with PSLS_PREFETCH=16: read misses fetch ahead, first writes claim ahead.
    p.set_prefetch(psls::Prefetch::Pages(AHEAD));
    let ahead = mapped_read(s).and_then(|r| Ok((r, mapped_write(s)?.0)));
    p.set_prefetch(p.config().prefetch);
    let (r, w) = ahead?;
    t.ahead_read.push(r);
    t.ahead_write.push(w);
    Ok(())
}

/// Pages the service thread works ahead in the second pass of the mapped runs.
const AHEAD: usize = 16;

/// Every rank reads its block of the imported file through a fresh mapping (collective);
/// returns the slowest rank's seconds.
fn mapped_read(s: &Setup<'_>) -> psls::Result<f64> {
    let (p, comm) = (s.p, s.comm);
    let f = p.open_file(IMPORTED)?;
    let v = f.view::<u64>();
    let mut sum = 0u64;
    let secs = timed(p, comm, || {
        for i in s.mine.clone() {
            sum = sum.wrapping_add(v.get(i));
        }
        Ok(())
    })?;
    agree(comm, check_sum(IMPORTED, sum, s))?;
    f.discard()?;
    Ok(secs)
}

/// Every rank writes its block of a new file through the mapping, then all flush
/// (collective); returns the slowest rank's seconds for the whole and for the flush alone.
fn mapped_write(s: &Setup<'_>) -> psls::Result<(f64, f64)> {
    let (p, comm) = (s.p, s.comm);
    if exists(p, WRITTEN) {
        p.remove_file(WRITTEN)?;
    }
    let f = p.create_file(WRITTEN, s.bytes as u64)?;
    let v = f.view::<u64>();
    p.barrier()?;
    let t0 = Instant::now();
    for i in s.mine.clone() {
        v.set(i, word(i));
    }
    p.barrier()?;
    let t1 = Instant::now();
    f.flush()?;
    let (whole, flush) = (t0.elapsed().as_secs_f64(), t1.elapsed().as_secs_f64());
    let times = (share_max(comm, whole)?, share_max(comm, flush)?);
    f.discard()?;
    // Check that the flush reached the disk: map the file anew (its pages load from disk) and
    // sum this rank's block.
    let f = p.open_file(WRITTEN)?;
    let v = f.view::<u64>();
    let sum = s.mine.clone().fold(0u64, |a, i| a.wrapping_add(v.get(i)));
    let what = format!("{WRITTEN}, mapped again after the flush");
    agree(comm, check_sum(&what, sum, s))?;
    f.discard()?;
    p.remove_file(WRITTEN)?;
    Ok(times)
}

/// Prints the figures (rank 0).
fn report(mib: usize, t: &mut Times) {
    let m = |v: &mut Vec<f64>| median(v);
    let (pw, pr, mw) = (
        m(&mut t.plain_write),
        m(&mut t.plain_read),
        m(&mut t.mpiio_write),
    );
    let (imp, exp, mr, mwf, fl) = (
        m(&mut t.import),
        m(&mut t.export),
        m(&mut t.mapped_read),
        m(&mut t.mapped_write),
        m(&mut t.flush),
    );
    let bw = |s: f64| mib as f64 / s;
    println!(
        "plain write+fsync: {:.1} MiB/s; plain read: {:.1} MiB/s; MPI-IO write_at_all+sync: {:.1} MiB/s",
        bw(pw),
        bw(pr),
        bw(mw)
    );
    println!(
        "import:             {:8.1} MiB/s = {:6.3}x plain write  (primary + mirror: physical limit 0.5x)",
        bw(imp),
        pw / imp
    );
    println!(
        "export:             {:8.1} MiB/s = {:6.3}x plain read   (rank 0 writes and syncs the copy)",
        bw(exp),
        pr / exp
    );
    println!(
        "mapped read:        {:8.1} MiB/s = {:6.3}x plain read   (page cache not dropped, on both sides)",
        bw(mr),
        pr / mr
    );
    println!(
        "mapped write+flush: {:8.1} MiB/s = {:6.3}x plain write (target >= 0.4x); = {:6.3}x MPI-IO",
        bw(mwf),
        pw / mwf,
        mw / mwf
    );
    println!(
        "flush alone:        {:8.1} MiB/s ({:.1} ms) = {:6.3}x plain write",
        bw(fl),
        fl * 1e3,
        pw / fl
    );
    let (ar, aw) = (m(&mut t.ahead_read), m(&mut t.ahead_write));
    println!(
        "with PSLS_PREFETCH={AHEAD}: mapped read {:8.1} MiB/s = {:6.3}x plain read; mapped write+flush {:8.1} MiB/s = {:6.3}x plain write",
        bw(ar),
        pr / ar,
        bw(aw),
        pw / aw
    );
}

/// Whether the PFS has a file named `name`.
fn exists(p: &Psls, name: &str) -> bool {
    p.files().iter().any(|f| f.name == name)
}

/// Removes a scratch file, if there.
fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The wrapping sum of the little-endian `u64` words of `b`.
fn sum_bytes(b: &[u8]) -> u64 {
    b.chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        .fold(0, u64::wrapping_add)
}

/// Checks that `sum` is the sum of this rank's block of words.
fn check_sum(what: &str, sum: u64, s: &Setup<'_>) -> psls::Result<()> {
    let want = sum_of(s.mine.clone());
    if sum == want {
        Ok(())
    } else {
        Err(Error::Store(format!(
            "{what}: words {:?} sum to {sum:#x}, not {want:#x}",
            s.mine
        )))
    }
}

/// Checks that two regular files hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> psls::Result<()> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e));
    if read(a)? == read(b)? {
        Ok(())
    } else {
        Err(Error::Store(format!(
            "the export {} differs from the imported {}",
            b.display(),
            a.display()
        )))
    }
}

/// The MPI-IO baseline (collective): every rank writes `data` at byte `offset` of `path` with
/// `MPI_File_write_at_all`, then `MPI_File_sync` and `MPI_File_close`.
fn mpiio_write(comm: &Comm, path: &CString, offset: usize, data: &[u8]) -> psls::Result<()> {
    let count = c_int::try_from(data.len())
        .map_err(|_| Error::Store("MPI-IO baseline: a rank's block must be under 2 GiB".into()))?;
    let offset = ffi::MPI_Offset::try_from(offset)
        .map_err(|_| Error::Store("MPI-IO baseline: offset out of range".into()))?;
    let amode = (ffi::MPI_MODE_CREATE | ffi::MPI_MODE_WRONLY) as c_int;
    // SAFETY: RSMPI_FILE_NULL is an immutable handle constant that rsmpi's C shim initializes.
    let mut fh: ffi::MPI_File = unsafe { ffi::RSMPI_FILE_NULL };
    // SAFETY: comm is a valid communicator for the whole call (it outlives it); path is a
    // NUL-terminated string; RSMPI_INFO_NULL is a constant handle; fh is a valid out-pointer.
    check("MPI_File_open", unsafe {
        ffi::MPI_File_open(
            comm.as_raw(),
            path.as_ptr().cast::<c_char>(),
            amode,
            ffi::RSMPI_INFO_NULL,
            &mut fh,
        )
    })?;
    let written = (|| {
        // SAFETY: fh is the file just opened; data holds `count` bytes and stays borrowed until
        // the blocking call returns; RSMPI_UINT8_T and RSMPI_STATUS_IGNORE are rsmpi's constants.
        check("MPI_File_write_at_all", unsafe {
            ffi::MPI_File_write_at_all(
                fh,
                offset,
                data.as_ptr().cast(),
                count,
                ffi::RSMPI_UINT8_T,
                ffi::RSMPI_STATUS_IGNORE,
            )
        })?;
        // SAFETY: fh is the open file.
        check("MPI_File_sync", unsafe { ffi::MPI_File_sync(fh) })
    })();
    // SAFETY: fh is the open file; MPI_File_close sets it to MPI_FILE_NULL.
    let closed = check("MPI_File_close", unsafe { ffi::MPI_File_close(&mut fh) });
    written.and(closed)
}

/// Turns an MPI return code into [`Error::Mpi`], with MPI's class and message.
fn check(call: &'static str, rc: c_int) -> psls::Result<()> {
    if rc == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    let mut class: c_int = 0;
    // SAFETY: MPI_Error_class may be called at any time; class is a valid out-pointer.
    unsafe { ffi::MPI_Error_class(rc, &mut class) };
    let cap = ffi::MPI_MAX_ERROR_STRING as usize;
    let mut buf = vec![0u8; cap + 1];
    let mut len: c_int = 0;
    // SAFETY: buf holds MPI_MAX_ERROR_STRING + 1 bytes, as MPI_Error_string requires; len is a
    // valid out-pointer.
    let got = unsafe { ffi::MPI_Error_string(rc, buf.as_mut_ptr().cast::<c_char>(), &mut len) };
    let message = if got == ffi::MPI_SUCCESS as c_int {
        String::from_utf8_lossy(&buf[..(len.max(0) as usize).min(cap)]).into_owned()
    } else {
        format!("MPI error code {rc}")
    };
    Err(Error::Mpi {
        call,
        class,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn mib_option() {
        assert_eq!(mib_arg(args(&["--mib", "8"])), Ok(8));
        assert_eq!(mib_arg(args(&["--mib=16"])), Ok(16));
        assert!(mib_arg(args(&["--mib", "0"])).is_err());
        assert!(mib_arg(args(&["--mib"])).is_err());
        assert!(mib_arg(args(&["--size", "8"])).is_err());
    }

    #[test]
    fn sums_agree() {
        let b: Vec<u8> = (3..10).flat_map(|i| word(i).to_le_bytes()).collect();
        assert_eq!(sum_bytes(&b), sum_of(3..10));
    }
}
