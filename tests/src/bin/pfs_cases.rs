//! PFS test cases, run under `mpirun` by `tests/tests/pfs.rs`.
//!
//! `pfs_cases CASE [NAME] [ARGS]`: each case prints `CHECK` lines and `PASS rank=R`, or `FAIL`
//! and exits 1; a runtime error exits 2. File contents follow [`psls_tests::pattern`].

use psls::{Psls, Result};
use psls_tests::cases::Case;
use psls_tests::{check, pattern};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cases: &[(&str, Case)] = &[
        ("shared_read", shared_read),
        ("first_read", first_read),
        ("write_flush", write_flush),
        ("rewrite", rewrite),
        ("grow", grow),
        ("scatter", scatter),
    ];
    psls_tests::cases::run("pfs_cases", cases, report)
}

fn report(p: &Psls) {
    let s = p.stats();
    println!(
        "STATS rank={} pages_loaded={} pages_flushed={} fetches={} read_faults={}",
        p.rank(),
        s.pages_loaded,
        s.pages_flushed,
        s.fetches,
        s.read_faults
    );
}

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_default()
}

/// `shared_read NAME SEED`: every rank maps NAME and reads all of it; it must follow the
/// pattern of SEED.
fn shared_read(p: &Psls) -> Result<()> {
    let (name, seed) = (arg(2), arg(3).parse::<u64>().unwrap_or(0));
    let f = p.open_file(&name)?;
    let b = f.bytes();
    let n = f.size() as usize;
    let bad = (0..n)
        .filter(|&i| b.get(i) != pattern(seed, i as u64))
        .count();
    check!(p, bad == 0, "read all {n} bytes of {name} ({bad} wrong)");
    p.barrier()?;
    f.discard()?;
    Ok(())
}

/// `first_read NAME SEED`: rank 0 alone maps NAME's pages in for the first time, reading all of
/// it in order (the other ranks' nodes load and serve their pages); it must follow the pattern
/// of SEED.
fn first_read(p: &Psls) -> Result<()> {
    let (name, seed) = (arg(2), arg(3).parse::<u64>().unwrap_or(0));
    let f = p.open_file(&name)?;
    let b = f.bytes();
    let n = f.size() as usize;
    let mappings = || std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count());
    let before = mappings();
    let mut bad = 0;
    if p.rank() == 0 {
        bad = (0..n)
            .filter(|&i| b.get(i) != pattern(seed, i as u64))
            .count();
    }
    check!(
        p,
        bad == 0,
        "rank 0 read all {n} bytes of {name} ({bad} wrong)"
    );
    p.barrier()?;
    // The other ranks loaded every fourth page for rank 0 without mapping them: a large file
    // read that way must not cut their mappings into pieces (vm.max_map_count).
    let grown = mappings().saturating_sub(before);
    check!(
        p,
        p.rank() == 0 || grown < 16,
        "rank {} has {grown} more memory mappings after loading pages for rank 0",
        p.rank()
    );
    f.discard()?;
    Ok(())
}

/// `write_flush NAME SIZE OLD NEW`: creates (or opens, if it exists) NAME; each rank writes its
/// block of the bytes with pattern NEW; the disk must still hold pattern OLD (or zeros when
/// OLD is `zero`) until the flush, and NEW after it. `psls-pfs export` checks the disk later.
fn write_flush(p: &Psls) -> Result<()> {
    let name = arg(2);
    let size: u64 = arg(3).parse().unwrap_or(0);
    let old = arg(4);
    let new: u64 = arg(5).parse().unwrap_or(0);
    let f = if p.files().iter().any(|f| f.name == name) {
        p.open_file(&name)?
    } else {
        p.create_file(&name, size)?
    };
    check!(p, f.size() == size, "{name} has {} bytes", f.size());
    let b = f.bytes();
    for i in p.local_range(size as usize) {
        b.set(i, pattern(new, i as u64));
    }
    p.barrier()?;
    let dst = std::env::temp_dir().join(format!("pfs-case-{name}-{}.before", std::process::id()));
    p.pfs_export(&name, &dst, &mut |_, _| {})?;
    if p.rank() == 0 {
        let bytes = std::fs::read(&dst).unwrap_or_default();
        let want = |i: usize| match old.as_str() {
            "zero" => 0,
            s => pattern(s.parse().unwrap_or(0), i as u64),
        };
        let bad = (0..bytes.len()).filter(|&i| bytes[i] != want(i)).count();
        check!(
            p,
            bytes.len() as u64 == size && bad == 0,
            "before the flush the disk holds the old version ({} bytes, {bad} differ)",
            bytes.len()
        );
        let _ = std::fs::remove_file(&dst);
    }
    let before = p.pfs_epoch();
    let epoch = p.flush()?;
    check!(
        p,
        epoch > before,
        "flush published epoch {epoch} (was {before})"
    );
    // Written again after the flush: the page must be dirty again and reach the next flush.
    if p.rank() == 0 && size > 0 {
        b.set(0, pattern(new, 0));
    }
    p.barrier()?;
    let bad = (0..size as usize)
        .filter(|&i| b.get(i) != pattern(new, i as u64))
        .count();
    check!(p, bad == 0, "memory holds the new version ({bad} wrong)");
    f.close()?;
    // Mapped again in the same job (the same global pages are reused): every page loads the
    // flushed version from disk. Work a service thread did ahead of the earlier faults must
    // not leave directory entries behind that hide the file's data.
    let f = p.open_file(&name)?;
    let b = f.bytes();
    let bad = (0..size as usize)
        .filter(|&i| b.get(i) != pattern(new, i as u64))
        .count();
    check!(
        p,
        bad == 0,
        "mapped again, {name} reads the flushed version ({bad} wrong)"
    );
    f.discard()?;
    Ok(())
}

/// Whether page `p` is written by `scatter`, and by which of `size` ranks.
fn scatter_writer(p: u64, size: u64) -> Option<u64> {
    (p % 3 != 0).then_some((p / 2) % size)
}

/// `scatter NAME PAGES SEED`: creates NAME of PAGES pages and 7 bytes; the ranks write every
/// page but each third one, two consecutive pages per rank in turn (owners interleaved all
/// along the file, as a flush's exchange sees them), with pattern SEED; flushes and closes.
fn scatter(p: &Psls) -> Result<()> {
    let name = arg(2);
    let pages: u64 = arg(3).parse().unwrap_or(0);
    let seed: u64 = arg(4).parse().unwrap_or(0);
    let ps = p.page_size() as u64;
    let size = pages * ps + 7;
    let f = p.create_file(&name, size)?;
    let b = f.bytes();
    let mut mine = 0;
    for page in 0..size.div_ceil(ps) {
        if scatter_writer(page, p.size() as u64) == Some(p.rank() as u64) {
            for i in page * ps..((page + 1) * ps).min(size) {
                b.set(i as usize, pattern(seed, i));
            }
            mine += 1;
        }
    }
    p.flush()?;
    check!(p, mine > 0, "wrote {mine} pages of {name} and flushed");
    f.close()?;
    Ok(())
}

/// `rewrite NAME NEW`: opens NAME, every rank rewrites its block with pattern NEW, flushes (a
/// test may kill the flush with `PSLS_FAULT`).
fn rewrite(p: &Psls) -> Result<()> {
    let name = arg(2);
    let new: u64 = arg(3).parse().unwrap_or(0);
    let f = p.open_file(&name)?;
    let b = f.bytes();
    for i in p.local_range(f.size() as usize) {
        b.set(i, pattern(new, i as u64));
    }
    p.flush()?;
    check!(p, true, "flushed {name}");
    f.close()?;
    Ok(())
}

/// `grow NAME`: creates NAME at one page + 10 bytes with room to grow, grows it to three pages
/// + 5 bytes, writes the new bytes, closes; reopens and checks size and content.
fn grow(p: &Psls) -> Result<()> {
    let name = arg(2);
    let ps = p.page_size() as u64;
    let (small, big) = (ps + 10, 3 * ps + 5);
    let mut f = p.create_file_with(&name, small, 8 * ps as usize)?;
    if p.rank() == 0 {
        for i in 0..small as usize {
            f.bytes().set(i, pattern(1, i as u64));
        }
    }
    p.barrier()?;
    let addr = f.as_ptr() as usize;
    f.grow(big)?;
    check!(
        p,
        f.size() == big && f.as_ptr() as usize == addr,
        "grown in place to {big} bytes"
    );
    let b = f.bytes();
    let zeros = (small as usize..big as usize)
        .filter(|&i| b.get(i) != 0)
        .count();
    check!(p, zeros == 0, "the grown bytes read as zeros ({zeros} not)");
    p.barrier()?;
    if p.rank() == p.size() - 1 {
        for i in small as usize..big as usize {
            b.set(i, pattern(1, i as u64));
        }
    }
    f.close()?;
    let f = p.open_file(&name)?;
    check!(p, f.size() == big, "reopened with {} bytes", f.size());
    let b = f.bytes();
    let bad = (0..big as usize)
        .filter(|&i| b.get(i) != pattern(1, i as u64))
        .count();
    check!(p, bad == 0, "reopened content is right ({bad} wrong)");
    p.barrier()?;
    // Collective calls with arguments that differ between ranks are refused everywhere.
    let other = format!("{name}-rank{}", p.rank());
    let differ = p.create_file(&other, ps);
    check!(
        p,
        matches!(differ, Err(psls::Error::Argument(_)))
            && !p
                .files()
                .iter()
                .any(|i| i.name.starts_with(&format!("{name}-rank"))),
        "a create with a name per rank is refused and makes no file ({differ:?})"
    );
    // A file is mapped once at a time.
    let again = p.open_file(&name);
    check!(
        p,
        matches!(again, Err(psls::Error::Argument(_))),
        "a second open of the mapped file is refused ({again:?})"
    );
    // Growing beyond the room: a move that fails leaves the file where it was; one that
    // succeeds keeps the bytes, and the new ones read as zeros.
    let mut f = f;
    let (addr, far) = (f.as_ptr() as usize, 10 * ps + 1);
    let huge = f.relocate(1 << 62, 0);
    check!(
        p,
        huge.is_err() && f.as_ptr() as usize == addr && f.size() == big,
        "a move too large for the range fails and leaves the file ({huge:?})"
    );
    f.relocate(far, 0)?;
    let b = f.bytes();
    let bad = (0..big as usize)
        .filter(|&i| b.get(i) != pattern(1, i as u64))
        .count();
    let nonzero = (big as usize..far as usize)
        .filter(|&i| b.get(i) != 0)
        .count();
    check!(
        p,
        f.size() == far && bad == 0 && nonzero == 0,
        "moved to {far} bytes with its content ({bad} wrong, {nonzero} new bytes not zero)"
    );
    p.barrier()?;
    f.discard()?;
    Ok(())
}
