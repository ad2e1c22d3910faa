//! Tests of the node-local page store: the two-phase commit, crash atomicity (simulated by
//! dropping the store, and for real by `SIGKILL` in a child process), epoch reuse, corruption
//! and repair, and misuse.

use super::*;
use crate::pfs::layout::Layout;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const PS: u32 = 512;

/// A scratch directory, removed on drop. The store lives in its `pfs` subdirectory.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("psls-pfs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn pfs(&self) -> PathBuf {
        self.0.join("pfs")
    }

    fn open(&self) -> NodeStore {
        NodeStore::open(&self.pfs(), "vnode0").unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn meta(id: u64, name: &str) -> FileMeta {
    FileMeta {
        id,
        name: name.into(),
        size: 64 * u64::from(PS),
        page_size: PS,
        layout: Layout::for_file(name, 1),
        nodes: vec!["vnode0".into()],
        version: 1,
        written: Vec::new(),
    }
}

fn catalog(files: &[&FileMeta]) -> Catalog {
    Catalog {
        next_id: files.iter().map(|m| m.id + 1).max().unwrap_or(0),
        files: files
            .iter()
            .map(|m| (m.name.clone(), (*m).clone()))
            .collect(),
        checkpoints: Default::default(),
    }
}

/// The content of page `p` as written at `epoch`: different for every page and epoch.
fn content(p: u64, epoch: u64) -> Vec<u8> {
    (0..PS as u64)
        .map(|i| (i.wrapping_mul(31) ^ p.wrapping_mul(7) ^ epoch.wrapping_mul(101)) as u8)
        .collect()
}

fn write(s: &mut NodeStore, m: &FileMeta, epoch: u64, pages: &[u64]) {
    for &p in pages {
        s.write_page(m, p, epoch, &content(p, epoch)).unwrap();
    }
}

fn flush(s: &mut NodeStore, m: &FileMeta, epoch: u64, pages: &[u64]) {
    write(s, m, epoch, pages);
    s.prepare(epoch, catalog(&[m])).unwrap();
    s.commit(epoch).unwrap();
}

fn read(s: &NodeStore, m: &FileMeta, p: u64, upto: u64) -> (PageState, Vec<u8>) {
    let mut buf = vec![0xAA; PS as usize];
    let state = s.read_page(m, p, upto, &mut buf).unwrap();
    (state, buf)
}

/// Asserts that page `p` reads as its content of epoch `epoch` at `upto`.
fn expect(s: &NodeStore, m: &FileMeta, p: u64, upto: u64, epoch: u64) {
    let (state, buf) = read(s, m, p, upto);
    assert_eq!(state, PageState::Present { epoch }, "page {p} at {upto}");
    assert!(buf == content(p, epoch), "page {p} at {upto}: wrong data");
}

fn flip(path: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], offset).unwrap();
}

fn data_path(sc: &Scratch, m: &FileMeta) -> PathBuf {
    sc.pfs().join(format!("files/{}/data", m.id))
}

fn slots_path(sc: &Scratch, m: &FileMeta) -> PathBuf {
    sc.pfs().join(format!("files/{}/slots", m.id))
}

#[test]
fn committed_pages_read_back_and_unwritten_or_wiped_ones_are_absent() {
    let sc = Scratch::new("basic");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    assert!(s.committed().is_none() && s.prepared().is_none());
    assert_eq!(s.committed_epoch(), 0);
    flush(&mut s, &m, 1, &[0, 1, 2, 5]);
    assert_eq!(s.committed().unwrap().catalog, catalog(&[&m]));
    for p in [0, 1, 2, 5] {
        expect(&s, &m, p, 1, 1);
    }
    let (state, buf) = read(&s, &m, 3, 1);
    assert_eq!(state, PageState::Absent);
    assert!(buf.iter().all(|&b| b == 0), "an absent page reads as zeros");
    assert_eq!(read(&s, &meta(7, "never"), 0, 1).0, PageState::Absent);
    drop(s);
    let s = sc.open();
    assert_eq!(s.committed_epoch(), 1);
    expect(&s, &m, 5, 1, 1);
    // The disk root is wiped under the store, then the node restarts on an empty one.
    fs::remove_dir_all(sc.pfs()).unwrap();
    assert_eq!(read(&s, &m, 0, 1).0, PageState::Absent);
    drop(s);
    let s = sc.open();
    assert!(s.committed().is_none());
    assert_eq!(read(&s, &m, 0, 1).0, PageState::Absent);
}

#[test]
fn a_crash_before_commit_keeps_the_previous_version() {
    let sc = Scratch::new("crash");
    let m = meta(0, "a.dat");
    let all: Vec<u64> = (0..6).collect();
    let mut s = sc.open();
    flush(&mut s, &m, 1, &all);

    // Crash before prepare.
    write(&mut s, &m, 2, &[0, 2, 4]);
    drop(s);
    let s = sc.open();
    assert_eq!((s.committed_epoch(), s.prepared()), (1, None));
    for &p in &all {
        expect(&s, &m, p, 1, 1);
        expect(&s, &m, p, 2, 1); // the discarded slots are gone even for a read at 2
    }

    // Crash after prepare, before commit: still version 1, and the prepared epoch stays
    // available for a roll-forward.
    let mut s = s;
    write(&mut s, &m, 2, &[0, 2, 4]);
    s.prepare(2, catalog(&[&m])).unwrap();
    drop(s);
    let mut s = sc.open();
    assert_eq!(s.committed_epoch(), 1);
    assert_eq!(s.prepared().map(|r| r.epoch), Some(2));
    for &p in &all {
        expect(&s, &m, p, 1, 1);
    }
    // Roll forward, as when another node had committed epoch 2.
    s.commit(2).unwrap();
    drop(s);
    let s = sc.open();
    assert_eq!((s.committed_epoch(), s.prepared()), (2, None));
    for &p in &all {
        expect(&s, &m, p, 2, if p % 2 == 0 { 2 } else { 1 });
        expect(&s, &m, p, 1, 1); // the older version is still there at epoch 1
    }
}

#[test]
fn ping_pong_over_many_epochs_keeps_unwritten_pages() {
    let sc = Scratch::new("pingpong");
    let m = meta(3, "grid");
    let pages: Vec<u64> = (0..8).collect();
    let mut newest = vec![0u64; pages.len()];
    let mut s = sc.open();
    for epoch in 1..=7u64 {
        let subset: Vec<u64> = pages
            .iter()
            .copied()
            .filter(|p| epoch == 1 || (p + epoch) % 3 != 0)
            .collect();
        // An attempt that crashes first, then the real flush at the same epoch.
        write(&mut s, &m, epoch, &pages);
        drop(s);
        s = sc.open();
        for &p in &pages {
            if newest[p as usize] > 0 {
                expect(&s, &m, p, epoch - 1, newest[p as usize]);
            }
        }
        flush(&mut s, &m, epoch, &subset);
        for &p in &subset {
            newest[p as usize] = epoch;
        }
        if epoch % 2 == 0 {
            drop(s);
            s = sc.open();
        }
        for &p in &pages {
            expect(&s, &m, p, epoch, newest[p as usize]);
        }
    }
    assert!(
        newest.iter().any(|&e| e < 7),
        "some page kept an older version"
    );
}

#[test]
fn an_aborted_or_interrupted_epoch_number_can_be_reused() {
    let sc = Scratch::new("reuse");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0, 1, 2]);

    // Prepared, then aborted; the retry at the same epoch does not rewrite page 1.
    write(&mut s, &m, 2, &[0, 1]);
    s.prepare(2, catalog(&[&m])).unwrap();
    s.abort().unwrap();
    assert!(s.prepared().is_none() && !sc.pfs().join("prepare").exists());
    assert!(s.highest_epoch_seen() >= 2);
    expect(&s, &m, 1, 2, 1);
    flush(&mut s, &m, 2, &[0]);
    expect(&s, &m, 0, 2, 2);
    expect(&s, &m, 1, 2, 1);

    // Aborted before prepare.
    write(&mut s, &m, 3, &[1, 2]);
    s.abort().unwrap();
    flush(&mut s, &m, 3, &[1]);
    expect(&s, &m, 2, 3, 1);

    // Interrupted by a crash, with the abort done at the next open: after a prepare ...
    write(&mut s, &m, 4, &[0, 2]);
    s.prepare(4, catalog(&[&m])).unwrap();
    drop(s);
    let mut s = sc.open();
    s.abort().unwrap();
    flush(&mut s, &m, 4, &[0]);
    expect(&s, &m, 2, 4, 1);
    // ... and before one.
    write(&mut s, &m, 5, &[1, 2]);
    drop(s);
    let mut s = sc.open();
    assert!(s.highest_epoch_seen() >= 5);
    flush(&mut s, &m, 5, &[2]);
    expect(&s, &m, 1, 5, 3);
    expect(&s, &m, 2, 5, 5);
    expect(&s, &m, 0, 5, 4);
}

#[test]
fn a_flipped_data_byte_is_corrupt_and_repair_restores_it() {
    let sc = Scratch::new("data");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0, 1]); // slot 0 (no current copy yet)
    flush(&mut s, &m, 2, &[0]); // slot 1
                                // Flip one byte of the epoch-2 copy of page 0 (slot 1).
    flip(
        &data_path(&sc, &m),
        crate::pfs::pages::data_offset(&m, 0, 1).unwrap() + 100,
    );
    let (state, buf) = read(&s, &m, 0, 2);
    assert!(
        matches!(&state, PageState::Corrupt { why } if why.contains("slot 1 (epoch 2)")),
        "{state:?}"
    );
    assert!(
        buf.iter().all(|&b| b == 0),
        "no stale or damaged data is returned"
    );
    expect(&s, &m, 1, 2, 1);
    let scan = s.scan(&m, 2).unwrap();
    assert_eq!(scan.len(), 2);
    assert!(matches!(scan[0], (0, PageState::Corrupt { .. })));
    assert_eq!(scan[1], (1, PageState::Present { epoch: 1 }));
    // A repair copy must be the newest committed one.
    let e = s.repair_page(&m, 0, 1, &content(0, 1)).unwrap_err();
    assert!(e.to_string().contains("epoch 2"), "{e}");
    s.repair_page(&m, 0, 2, &content(0, 2)).unwrap();
    expect(&s, &m, 0, 2, 2);
    drop(s);
    let s = sc.open();
    expect(&s, &m, 0, 2, 2);
    expect(&s, &m, 0, 1, 1);
}

#[test]
fn a_damaged_header_is_corrupt_never_the_older_copy() {
    let sc = Scratch::new("header");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0, 1]);
    flush(&mut s, &m, 2, &[0, 1]);
    // Page 0: damage the header of its newest copy (slot 1: (2*0 + 1) * 32).
    flip(&slots_path(&sc, &m), 32 + 10);
    let (state, _) = read(&s, &m, 0, 2);
    assert!(
        matches!(&state, PageState::Corrupt { why } if why.contains("slot 1")),
        "{state:?}"
    );
    // Page 1: damage the header of its older copy (slot 0: 2*1*32). The copy of exactly the
    // epoch read cannot be beaten by it.
    flip(&slots_path(&sc, &m), 64 + 3);
    expect(&s, &m, 1, 2, 2);
    s.repair_page(&m, 0, 2, &content(0, 2)).unwrap();
    expect(&s, &m, 0, 2, 2);
}

#[test]
fn a_discarded_write_over_a_damaged_header_stays_corrupt() {
    let sc = Scratch::new("poison");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0]);
    flush(&mut s, &m, 2, &[0]);
    flip(&slots_path(&sc, &m), 32 + 20); // the newest copy's header
                                         // A flush writes page 0 over the damaged slot (the only one not holding a valid copy at
                                         // or before 2), then aborts: the older slot must not pass for the current copy.
    s.write_page(&m, 0, 3, &content(0, 3)).unwrap();
    s.abort().unwrap();
    assert!(matches!(read(&s, &m, 0, 2).0, PageState::Corrupt { .. }));
    // The same through a crash and the discard at open.
    s.write_page(&m, 0, 3, &content(0, 3)).unwrap();
    drop(s);
    let mut s = sc.open();
    assert!(matches!(read(&s, &m, 0, 2).0, PageState::Corrupt { .. }));
    // A flush that commits replaces the damage for good.
    flush(&mut s, &m, 3, &[0]);
    expect(&s, &m, 0, 3, 3);
}

#[test]
fn repair_recreates_a_lost_copy_and_keeps_a_good_one() {
    let sc = Scratch::new("repair");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0, 1]);
    fs::remove_dir_all(sc.pfs().join("files/0")).unwrap();
    assert_eq!(read(&s, &m, 1, 1).0, PageState::Absent);
    for p in [0, 1] {
        s.repair_page(&m, p, 1, &content(p, 1)).unwrap();
        expect(&s, &m, p, 1, 1);
    }
    // Repairing a good copy with other data is refused and changes nothing.
    let e = s.repair_page(&m, 1, 1, &content(1, 9)).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { page: 1, .. }), "{e}");
    expect(&s, &m, 1, 1, 1);
    // Only committed epochs can be repaired.
    assert!(matches!(
        s.repair_page(&m, 1, 2, &content(1, 2)),
        Err(StoreError::Protocol(_))
    ));
    // A repair during a flush does not touch the flush's slots.
    s.write_page(&m, 0, 2, &content(0, 2)).unwrap(); // slot 1
    flip(&data_path(&sc, &m), 0); // page 0, slot 0: the committed copy
    assert!(matches!(read(&s, &m, 0, 1).0, PageState::Corrupt { .. }));
    s.repair_page(&m, 0, 1, &content(0, 1)).unwrap();
    expect(&s, &m, 0, 1, 1);
    s.prepare(2, catalog(&[&m])).unwrap();
    s.commit(2).unwrap();
    expect(&s, &m, 0, 2, 2);
}

#[test]
fn damaged_records_are_errors_naming_the_path() {
    let sc = Scratch::new("records");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0]);
    write(&mut s, &m, 2, &[0]);
    s.prepare(2, catalog(&[&m])).unwrap();
    drop(s);
    for name in ["commit", "prepare"] {
        let path = sc.pfs().join(name);
        let good = fs::read(&path).unwrap();
        flip(&path, good.len() as u64 / 2);
        let e = NodeStore::open(&sc.pfs(), "vnode0").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::BadRecord { .. }), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(NodeStore::open(&sc.pfs(), "vnode0").is_err());
        fs::write(&path, &good).unwrap();
    }
    assert_eq!(sc.open().prepared().map(|r| r.epoch), Some(2));
}

#[test]
fn a_full_disk_fails_the_flush_and_keeps_the_committed_version() {
    let sc = Scratch::new("enospc");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    flush(&mut s, &m, 1, &[0, 1, 2]);
    crate::inject::with_faults("pfs-enospc:count=2", || {
        s.write_page(&m, 0, 2, &content(0, 2)).unwrap();
        let e = s.write_page(&m, 1, 2, &content(1, 2)).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::NoSpace { .. }), "{text}");
        assert!(
            text.contains("disk root is full")
                && text.contains("intact")
                && text.contains(&data_path(&sc, &m).display().to_string()),
            "{text}"
        );
    });
    s.abort().unwrap();
    for p in 0..3 {
        expect(&s, &m, p, 1, 1);
    }
    flush(&mut s, &m, 2, &[1]);
    expect(&s, &m, 0, 2, 1);
    expect(&s, &m, 1, 2, 2);
}

#[test]
fn misuse_is_refused() {
    let sc = Scratch::new("misuse");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    let protocol = |r: Result<()>| match r {
        Err(StoreError::Protocol(why)) => why,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    assert!(protocol(s.commit(1)).contains("call prepare first"));
    assert!(protocol(s.write_page(&m, 0, 1, &[0; 10])).contains("page size is 512"));
    assert!(protocol(s.write_page(&m, 0, 0, &content(0, 0))).contains("committed epoch 0"));
    flush(&mut s, &m, 1, &[0]);
    assert!(protocol(s.write_page(&m, 0, 1, &content(0, 1))).contains("committed epoch 1"));
    write(&mut s, &m, 3, &[0]);
    assert!(protocol(s.write_page(&m, 0, 4, &content(0, 4))).contains("epoch 3 is being written"));
    assert!(protocol(s.prepare(4, catalog(&[&m]))).contains("written at epoch 3"));
    let mut bad = catalog(&[&m]);
    bad.next_id = 0;
    assert!(protocol(s.prepare(3, bad)).contains("next_id"));
    s.prepare(3, catalog(&[&m])).unwrap();
    assert!(protocol(s.write_page(&m, 0, 3, &content(0, 3))).contains("prepared"));
    assert!(protocol(s.commit(4)).contains("prepared epoch is 3"));
    assert!(protocol(s.remove_file(&m)).contains("still lists it"));
    let mut buf = vec![0; 3];
    assert!(s.read_page(&m, 0, 1, &mut buf).is_err());
    assert!(protocol(s.write_page(&m, u64::MAX / 2, 3, &content(0, 3))).contains("prepared"));
    s.commit(3).unwrap();
    assert!(protocol(s.write_page(&m, u64::MAX / 2, 4, &content(0, 4))).contains("largest offset"));
}

#[test]
fn removed_files_and_leftovers_are_cleaned() {
    let sc = Scratch::new("garbage");
    let a = meta(0, "a");
    let b = meta(1, "b");
    let mut s = sc.open();
    write(&mut s, &a, 1, &[0]);
    write(&mut s, &b, 1, &[0]);
    s.prepare(1, catalog(&[&a, &b])).unwrap();
    s.commit(1).unwrap();
    // Remove b: commit a catalog without it, then its pages.
    s.prepare(2, catalog(&[&a])).unwrap();
    assert!(s.remove_file(&b).is_err(), "still in the committed catalog");
    s.commit(2).unwrap();
    s.remove_file(&b).unwrap();
    assert!(!sc.pfs().join("files/1").exists());
    expect(&s, &a, 0, 2, 1);
    // A file created by a flush that never prepared, a stray directory and a stale tmp.
    let c = meta(5, "c");
    write(&mut s, &c, 3, &[0]);
    drop(s);
    fs::create_dir(sc.pfs().join("files/9")).unwrap();
    fs::write(sc.pfs().join("commit.tmp"), b"half").unwrap();
    let s = sc.open();
    // Opening deletes no file directory: the records may not be the job's yet.
    assert!(sc.pfs().join("files/5").exists() && sc.pfs().join("files/9").exists());
    s.collect_garbage().unwrap();
    for gone in ["files/5", "files/9", "commit.tmp", "inflight"] {
        assert!(!sc.pfs().join(gone).exists(), "{gone} survived");
    }
    expect(&s, &a, 0, 2, 1);
}

#[test]
fn scan_lists_every_page_with_a_header() {
    let sc = Scratch::new("scan");
    let m = meta(0, "a.dat");
    let mut s = sc.open();
    assert!(s.scan(&m, 1).unwrap().is_empty());
    flush(&mut s, &m, 1, &[0, 3, 2000]);
    write(&mut s, &m, 2, &[5]);
    let scan = s.scan(&m, 1).unwrap();
    let present = PageState::Present { epoch: 1 };
    assert_eq!(
        scan,
        vec![
            (0, present.clone()),
            (3, present.clone()),
            (5, PageState::Absent),
            (2000, present)
        ]
    );
}

// ---- real crashes: the child process dies by SIGKILL at an injection point.

const CHILD_DIR: &str = "PSLS_PFS_TEST_DIR";
const CHILD_FAULT: &str = "PSLS_PFS_TEST_FAULT";

/// In the child: commits epoch 1, then flushes epoch 2 under the fault, which kills it.
fn crash_child(dir: &Path, fault: &str) {
    let m = meta(0, "a.dat");
    let mut s = NodeStore::open(dir, "vnode0").unwrap();
    flush(&mut s, &m, 1, &[0, 1, 2, 3]);
    crate::inject::configure(Some(fault)).unwrap();
    flush(&mut s, &m, 2, &[0, 1, 2, 3]);
    eprintln!("child survived {fault}");
    std::process::exit(3);
}

#[test]
fn sigkill_at_each_injection_point_leaves_one_whole_version() {
    if let (Ok(dir), Ok(fault)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_FAULT)) {
        crash_child(Path::new(&dir), &fault);
    }
    let test = "pfs::store::tests::sigkill_at_each_injection_point_leaves_one_whole_version";
    for (fault, committed, prepared) in [
        ("pfs-write:epoch=2:count=3", 1, None),
        ("pfs-prepare:epoch=2", 1, None),
        ("pfs-commit:epoch=2", 1, Some(2)),
        ("pfs-committed:epoch=2", 2, None),
    ] {
        let sc = Scratch::new("sigkill");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, sc.pfs())
            .env(CHILD_FAULT, fault)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let point = fault.split(':').next().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{fault}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "PSLS: fault injected at {point} (epoch 2, rank ?)"
            )),
            "{fault}: {stderr}"
        );
        let m = meta(0, "a.dat");
        let mut s = sc.open();
        assert_eq!(s.committed_epoch(), committed, "{fault}");
        assert_eq!(s.prepared().map(|r| r.epoch), prepared, "{fault}");
        if prepared.is_some() {
            s.commit(2).unwrap(); // roll forward
        }
        let epoch = s.committed_epoch();
        for p in 0..4 {
            expect(&s, &m, p, epoch, epoch);
        }
    }
}

#[test]
fn batched_writes_match_page_by_page_writes_across_groups_and_slots() {
    let sc = Scratch::new("batched");
    let mut m = meta(0, "big.dat");
    // In units of the data file's groups, so that the batches cross their boundaries.
    let g = crate::pfs::pages::DATA_GROUP;
    m.size = (2 * g + 72) * u64::from(PS);
    let mut s = sc.open();
    let run = |s: &mut NodeStore, first: u64, n: u64, epoch: u64| {
        let data: Vec<u8> = (first..first + n).flat_map(|p| content(p, epoch)).collect();
        s.write_pages(&m, first, epoch, &data).unwrap();
    };
    // Epoch 1: pages 10..2g+22 in one batch (crosses two group boundaries), all in slot 0.
    run(&mut s, 10, 2 * g + 12, 1);
    s.prepare(1, catalog(&[&m])).unwrap();
    s.commit(1).unwrap();
    // Epoch 2: pages g-4..g+6 flip to slot 1, page 2g+12 page by page; the rest stay at
    // epoch 1.
    run(&mut s, g - 4, 10, 2);
    s.write_page(&m, 2 * g + 12, 2, &content(2 * g + 12, 2))
        .unwrap();
    s.prepare(2, catalog(&[&m])).unwrap();
    s.commit(2).unwrap();
    // Epoch 3: a batch mixing pages whose next slot is 0 (g-4..g+6) and 1 (the others).
    run(&mut s, g - 9, 20, 3);
    s.prepare(3, catalog(&[&m])).unwrap();
    s.commit(3).unwrap();
    for p in 0..2 * g + 72 {
        let want = if (g - 9..g + 11).contains(&p) {
            Some(3)
        } else if p == 2 * g + 12 {
            Some(2)
        } else if (10..2 * g + 22).contains(&p) {
            Some(1)
        } else {
            None
        };
        match want {
            Some(e) => expect(&s, &m, p, 3, e),
            None => assert_eq!(read(&s, &m, p, 3).0, PageState::Absent, "page {p}"),
        }
    }
    // The older copies are still there for the older epochs.
    expect(&s, &m, g + 1, 2, 2);
    expect(&s, &m, g - 8, 2, 1);
    // Reading many pages at once (spans of headers, runs of contiguous copies) gives what reading
    // each alone gives, at every epoch, across groups and slots, for absent pages, and for a
    // copy whose data was damaged.
    flip(
        &data_path(&sc, &m),
        crate::pfs::pages::data_offset(&m, g + 1, 0).unwrap() + 7,
    );
    let all: Vec<u64> = (0..2 * g + 72).collect();
    let sparse: Vec<u64> = (0..2 * g + 72).step_by(3).collect();
    for pages in [&all, &sparse] {
        for upto in 1..=3 {
            let mut buf = vec![0xAA; PS as usize];
            let mut seen = Vec::new();
            s.read_pages(&m, pages, upto, &mut buf, |p, state, data| {
                seen.push((p, state, data.to_vec()))
            })
            .unwrap();
            let alone: Vec<(u64, PageState, Vec<u8>)> = pages
                .iter()
                .map(|&p| {
                    let (state, data) = read(&s, &m, p, upto);
                    (p, state, data)
                })
                .collect();
            assert_eq!(seen.len(), alone.len());
            for (a, b) in seen.iter().zip(&alone) {
                assert!(
                    a == b,
                    "page {} at {upto}: {:?} read together, {:?} alone",
                    a.0,
                    a.1,
                    b.1
                );
            }
            if upto == 3 {
                let at = |p: u64| seen.iter().find(|x| x.0 == p).map(|x| x.1.clone());
                assert!(matches!(at(g + 1), Some(PageState::Corrupt { .. }) | None));
            }
        }
    }
    assert!(matches!(
        read(&s, &m, g + 1, 3).0,
        PageState::Corrupt { .. }
    ));
    // A batch that is not a whole number of pages is refused before anything is written.
    match s.write_pages(&m, 0, 4, &[0u8; 100]) {
        Err(StoreError::Protocol(why)) => assert!(why.contains("whole number"), "{why}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn runs_with_gaps_write_their_pages_and_keep_the_pages_between() {
    let sc = Scratch::new("runs");
    let mut m = meta(0, "runs.dat");
    let g = crate::pfs::pages::DATA_GROUP;
    m.size = (g + 44) * u64::from(PS);
    let mut s = sc.open();
    let data = |first: u64, n: u64, epoch: u64| -> Vec<u8> {
        (first..first + n).flat_map(|p| content(p, epoch)).collect()
    };
    // Epoch 1: every page, one by one.
    flush(&mut s, &m, 1, &(0..g + 44).collect::<Vec<_>>());
    // Epoch 2: runs with gaps, across a group boundary, in one call.
    let (a, b, c) = (data(3, 2, 2), data(g - 2, 5, 2), data(g + 30, 1, 2));
    s.write_runs(&m, 2, &[(3, &a), (g - 2, &b), (g + 30, &c)])
        .unwrap();
    s.prepare(2, catalog(&[&m])).unwrap();
    s.commit(2).unwrap();
    for p in 0..g + 44 {
        let epoch = if (3..5).contains(&p) || (g - 2..g + 3).contains(&p) || p == g + 30 {
            2
        } else {
            1
        };
        expect(&s, &m, p, 2, epoch);
    }
    // The pages between the runs still have their epoch-1 copy, and the runs' old copies too.
    expect(&s, &m, g - 1, 1, 1);
    // Runs out of order, or overlapping, are refused before anything is written.
    let (x, y) = (data(10, 2, 3), data(5, 1, 3));
    for runs in [
        vec![(10, &x[..]), (5, &y[..])],
        vec![(10, &x[..]), (11, &y[..])],
    ] {
        match s.write_runs(&m, 3, &runs) {
            Err(StoreError::Protocol(why)) => assert!(why.contains("overlap"), "{why}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
    expect(&s, &m, 10, 3, 1);
}

#[test]
fn a_node_of_a_striped_file_keeps_its_pages_dense_and_refuses_others() {
    let sc = Scratch::new("dense");
    let mut m = meta(0, "striped.dat");
    m.nodes = (0..4).map(|i| format!("vnode{i}")).collect();
    m.layout = Layout {
        stripe_pages: 1,
        rotation: 0,
    };
    let g = crate::pfs::pages::DATA_GROUP;
    let pages = 4 * g + 40;
    m.size = pages * u64::from(PS);
    let mut s = sc.open(); // vnode0: primary of pages 4k, mirror of pages 4k+3
    let kept: Vec<u64> = (0..pages).filter(|p| p % 4 == 0 || p % 4 == 3).collect();
    // Runs of the kept pages, as a flush passes them: (4k-1, 4k) pairs, in one call.
    let epoch = 1;
    let bufs: Vec<(u64, Vec<u8>)> = kept
        .chunk_by(|a, b| b == &(a + 1))
        .map(|run| {
            (
                run[0],
                run.iter().flat_map(|&p| content(p, epoch)).collect(),
            )
        })
        .collect();
    let runs: Vec<(u64, &[u8])> = bufs.iter().map(|(p, d)| (*p, &d[..])).collect();
    s.write_runs(&m, epoch, &runs).unwrap();
    s.prepare(epoch, catalog(&[&m])).unwrap();
    s.commit(epoch).unwrap();
    for &p in &kept {
        expect(&s, &m, p, epoch, epoch);
    }
    // Dense: the data file spans the kept pages' groups only, about half the file's pages
    // (the old layout by page number spanned all of them).
    let len = fs::metadata(data_path(&sc, &m)).unwrap().len();
    let kept_groups = (kept.len() as u64).div_ceil(g);
    assert!(
        len <= (2 * kept_groups - 1) * g * u64::from(PS),
        "data file of {len} bytes for {} kept pages",
        kept.len()
    );
    // A page this node does not keep is refused, naming the node, and nothing is written.
    for p in [1, 2, 4 * g + 1] {
        match s.write_page(&m, p, 2, &content(p, 2)) {
            Err(StoreError::Protocol(why)) => {
                assert!(why.contains("vnode0 keeps no copy of page"), "{why}")
            }
            other => panic!("page {p}: expected a protocol error, got {other:?}"),
        }
    }
    assert_eq!(fs::metadata(data_path(&sc, &m)).unwrap().len(), len);
    // A node outside the file's view keeps nothing.
    m.nodes[0] = "elsewhere".into();
    assert!(matches!(
        s.read_page(&m, 0, 1, &mut vec![0u8; PS as usize]),
        Err(StoreError::Protocol(why)) if why.contains("vnode0 keeps no copy")
    ));
}

#[test]
fn a_store_that_lost_its_records_deletes_nothing() {
    let sc = Scratch::new("lost-records");
    let a = meta(0, "a");
    let mut s = sc.open();
    write(&mut s, &a, 1, &[0, 1]);
    s.prepare(1, catalog(&[&a])).unwrap();
    s.commit(1).unwrap();
    drop(s);
    fs::remove_file(sc.pfs().join("commit")).unwrap();
    let s = sc.open();
    let e = s.collect_garbage().unwrap_err().to_string();
    assert!(
        e.contains("commit") && e.contains("it is missing") && e.contains("nothing was deleted"),
        "{e}"
    );
    assert!(sc.pfs().join("files/0").exists());
}

#[test]
fn an_aborted_flush_removes_the_files_it_created() {
    let sc = Scratch::new("abort-new-file");
    let (a, b) = (meta(0, "a"), meta(1, "b"));
    let mut s = sc.open();
    write(&mut s, &a, 1, &[0]);
    s.prepare(1, catalog(&[&a])).unwrap();
    s.commit(1).unwrap();
    write(&mut s, &a, 2, &[1]);
    write(&mut s, &b, 2, &[0]);
    s.abort().unwrap();
    assert!(
        !sc.pfs().join("files/1").exists(),
        "the new file's directory survived"
    );
    assert!(sc.pfs().join("files/0").exists());
    expect(&s, &a, 0, 1, 1);
}

#[test]
fn a_symbolic_link_in_place_of_the_files_directory_is_refused() {
    let sc = Scratch::new("symlinked-files");
    drop(sc.open());
    let files = sc.pfs().join("files");
    fs::remove_dir(&files).unwrap();
    let elsewhere = sc.pfs().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &files).unwrap();
    let e = NodeStore::open(&sc.pfs(), "vnode0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("a symbolic link") && e.contains("files"), "{e}");
}
