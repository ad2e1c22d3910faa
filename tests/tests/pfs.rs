//! The parallel file system: import and export, mapped reads and writes, atomic flushes,
//! redundancy, corruption and crashes. Every run uses 4 ranks on 4 virtual nodes unless said
//! otherwise, with one disk base per test.

use psls_tests::{check_pattern, pattern, sibling_binary, write_pattern, Launch, Outcome, Scratch};
use std::path::{Path, PathBuf};

const PAGE: u64 = 4096;

/// One test's memory and disk bases.
struct Pfs {
    mem: Scratch,
    disk: Scratch,
    files: Scratch,
}

impl Pfs {
    fn new() -> Pfs {
        Pfs {
            mem: Scratch::shm("pfs-mem"),
            disk: Scratch::new("pfs-disk"),
            files: Scratch::new("pfs-files"),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files.0.join(name)
    }

    fn launch(&self, program: &str, args: &[&str]) -> Launch {
        let mut l = Launch::program(sibling_binary(program), 4)
            .nodes(4)
            .roots(&self.mem, &self.disk);
        for a in args {
            l = l.arg(*a);
        }
        l
    }

    fn tool(&self, args: &[&str]) -> Outcome {
        self.launch("psls-pfs", args).arg("--quiet").run()
    }

    fn ok(&self, args: &[&str]) -> Outcome {
        let out = self.tool(args);
        out.assert_success();
        out
    }

    fn case(&self, args: &[&str]) -> Outcome {
        let out = self.launch("pfs_cases", args).run();
        out.assert_success();
        out.assert_lines("PASS", 4);
        out
    }

    /// Imports `len` bytes of pattern `seed` as `name`.
    fn import(&self, name: &str, seed: u64, len: u64) {
        let src = self.file(&format!("{name}.src"));
        write_pattern(&src, seed, len);
        self.ok(&["import", src.to_str().unwrap(), name]);
    }

    /// Exports `name` and checks it is `len` bytes of pattern `seed`.
    fn expect(&self, name: &str, seed: u64, len: u64) -> Result<(), String> {
        let dst = self.file(&format!("{name}.out"));
        let _ = std::fs::remove_file(&dst);
        self.ok(&["export", name, dst.to_str().unwrap()]);
        check_pattern(&dst, seed, len)
    }

    /// The PFS directory of virtual node `n`.
    fn node_root(&self, n: usize) -> PathBuf {
        let uid = unsafe_free_uid();
        self.disk.0.join(format!("psls-{uid}/pfs/vnode{n}"))
    }

    /// The node names that keep page `page` of `name`: (primary, mirror).
    fn holders(&self, name: &str, page: u64) -> (String, String) {
        let out = self.ok(&["stat", name, "--pages"]);
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("page {page}:")))
            .unwrap_or_else(|| panic!("no page {page} in:\n{}", out.stdout))
            .to_string();
        let word = |after: &str| {
            line.split(after)
                .nth(1)
                .and_then(|s| s.split([',', ' ']).next())
                .unwrap_or_default()
                .to_string()
        };
        (word("primary "), word("mirror "))
    }
}

/// The real uid, from `/proc/self/status` (no libc call needed).
fn unsafe_free_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "0".into())
}

/// Flips one byte of page `page` of the only PFS file in the store of the node whose root is
/// `root`, a file imported from `len` bytes of pattern `seed`: byte 100 of every page-aligned
/// copy of that page's bytes in the node's data file. It finds the copy by its content, so it
/// does not depend on where the store lays the page out.
fn corrupt(root: &Path, seed: u64, len: u64, page: u64) {
    let files = root.join("store/files");
    let dir = std::fs::read_dir(&files)
        .unwrap_or_else(|e| panic!("{}: {e}", files.display()))
        .next()
        .expect("one file")
        .expect("dir entry")
        .path();
    let data_path = dir.join("data");
    let mut data = std::fs::read(&data_path).expect("read data");
    let want: Vec<u8> = (page * PAGE..(page + 1) * PAGE)
        .map(|i| if i < len { pattern(seed, i) } else { 0 })
        .collect();
    let mut flipped = false;
    for copy in data.chunks_exact_mut(PAGE as usize) {
        if copy == want.as_slice() {
            copy[100] ^= 0x40;
            flipped = true;
        }
    }
    assert!(
        flipped,
        "no data for page {page} in {}",
        data_path.display()
    );
    std::fs::write(&data_path, data).expect("write data");
}

#[test]
fn import_export_round_trips_are_bit_identical() {
    let t = Pfs::new();
    for (k, len) in [0, 1, PAGE - 1, PAGE, PAGE + 1, 100 * (1 << 20) + 12_345]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{k}");
        t.import(&name, k as u64 + 1, len);
        t.expect(&name, k as u64 + 1, len).unwrap();
    }
    let ls = t.ok(&["ls"]);
    assert!(
        ls.stdout.contains("f5")
            && ls
                .stdout
                .contains(&(100 * (1 << 20) + 12_345u64).to_string()),
        "{}",
        ls.stdout
    );
}

#[test]
fn a_mapped_file_is_read_whole_by_every_rank() {
    let t = Pfs::new();
    t.import("shared", 7, 5 * PAGE + 99);
    let out = t.case(&["shared_read", "shared", "7"]);
    assert!(out.stdout.contains("pages_loaded="), "{}", out.stdout);
}

#[test]
fn writes_reach_disk_only_through_the_flush() {
    let t = Pfs::new();
    // A new file: zeros on disk before the flush. 512 pages, so that each leader pulls several
    // batches from every owner (a lost batch once left pages of zeros on disk).
    t.case(&[
        "write_flush",
        "new",
        &(512 * PAGE + 7).to_string(),
        "zero",
        "3",
    ]);
    t.expect("new", 3, 512 * PAGE + 7).unwrap();
    // An imported file: its old content on disk before the flush.
    t.import("old", 4, 6 * PAGE + 1);
    t.case(&["write_flush", "old", &(6 * PAGE + 1).to_string(), "4", "5"]);
    t.expect("old", 5, 6 * PAGE + 1).unwrap();
}

/// A flush whose pages come from owners interleaved all along the file, in many rounds of its
/// exchange: both copies of every page reach disk (verify finds nothing wrong, and the file
/// reads the same with either node of a pair gone), unwritten pages stay zeros.
#[test]
fn interleaved_writers_flush_whole_primaries_and_mirrors() {
    let t = Pfs::new();
    let pages = 3000; // 12 MiB: several rounds of the flush's exchange.
    t.case(&["scatter", "sc", &pages.to_string(), "9"]);
    let size = pages * PAGE + 7;
    let want: Vec<u8> = (0..size)
        .map(|i| {
            let written = (i / PAGE) % 3 != 0;
            if written {
                pattern(9, i)
            } else {
                0
            }
        })
        .collect();
    let exported = || {
        let dst = t.file("sc.out");
        let _ = std::fs::remove_file(&dst);
        t.ok(&["export", "sc", dst.to_str().unwrap()]);
        std::fs::read(&dst).unwrap()
    };
    let same = |got: &[u8]| {
        got.len() == want.len() && got.iter().zip(&want).filter(|(a, b)| a != b).count() == 0
    };
    let v = t.tool(&["verify"]);
    assert_eq!(v.status.and_then(|s| s.code()), Some(0), "{}", v.stdout);
    assert!(
        same(&exported()),
        "the export differs from what was written"
    );
    // Each page's primary and mirror are on two nodes; without node 1, the pages it kept come
    // from their other copy.
    std::fs::remove_dir_all(t.node_root(1)).unwrap();
    assert!(
        same(&exported()),
        "without node 1 the export differs from what was written"
    );
}

#[test]
fn writes_with_pages_claimed_ahead_reach_disk_whole() {
    // PSLS_PREFETCH: first writes claim the untouched pages ahead, in the background; the
    // flush and the unmap must wait for that work, or pages go missing from the flush and
    // stale directory entries hide the file when it is mapped again.
    let t = Pfs::new();
    let out = t
        .launch(
            "pfs_cases",
            &[
                "write_flush",
                "ahead",
                &(512 * PAGE + 7).to_string(),
                "zero",
                "6",
            ],
        )
        .env("PSLS_PREFETCH", "16")
        .run();
    out.assert_success();
    out.assert_lines("PASS", 4);
    t.expect("ahead", 6, 512 * PAGE + 7).unwrap();
}

/// Files grow in place within their room, keep their size through close and open, are mapped
/// once at a time, and move (PfsFile::relocate) beyond their room: a move that fails leaves
/// the file where it was.
#[test]
fn files_grow_in_place_and_keep_their_size() {
    let t = Pfs::new();
    t.case(&["grow", "g"]);
    let stat = t.ok(&["stat", "g"]);
    assert!(
        stat.stdout.contains(&format!("{} bytes", 3 * PAGE + 5)),
        "{}",
        stat.stdout
    );
}

#[test]
fn losing_a_whole_disk_root_loses_no_file() {
    let t = Pfs::new();
    t.import("a", 1, 20 * PAGE + 3);
    t.import("b", 2, 3 * PAGE);
    std::fs::remove_dir_all(t.node_root(2)).unwrap();
    let v = t.tool(&["verify"]);
    assert_eq!(v.status.and_then(|s| s.code()), Some(1), "{}", v.stdout);
    assert!(
        v.stdout.contains("under-replicated: a page"),
        "{}",
        v.stdout
    );
    // Every page that node 2 kept is named.
    let named = v.stdout.matches("under-replicated: ").count();
    assert!(named >= 10, "only {named} pages named:\n{}", v.stdout);
    t.expect("a", 1, 20 * PAGE + 3).unwrap();
    t.expect("b", 2, 3 * PAGE).unwrap();
    t.case(&["shared_read", "a", "1"]);
}

/// `verify` run on fewer nodes than keep the files: the copies it cannot reach are "not
/// checked" (exit 1), never counted as lost or as a second copy gone.
#[test]
fn verify_on_fewer_nodes_says_what_it_could_not_check() {
    let t = Pfs::new();
    t.import("a", 1, 16 * PAGE);
    let out = Launch::program(sibling_binary("psls-pfs"), 2)
        .nodes(2)
        .roots(&t.mem, &t.disk)
        .args(["verify", "--quiet"])
        .run();
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("0 lost") && out.stdout.contains("not checked (copies on nodes"),
        "{}",
        out.stdout
    );
    // Pages kept on vnode2 and vnode3 only (primary on one, mirror on the other) are named.
    assert!(
        out.stdout
            .contains("primary on a node outside this job, mirror on a node outside this job"),
        "{}",
        out.stdout
    );
    t.ok(&["verify"]);
}

/// A node's commit record removed, or replaced by an older one: the node takes the job's
/// catalog and keeps its copies (it used to delete the data of every file its own record did
/// not list, before the nodes compared records). With every record gone, nothing is deleted
/// and the tools say why they stop.
#[test]
fn a_node_whose_commit_record_is_lost_or_stale_keeps_its_copies() {
    let t = Pfs::new();
    t.import("a", 1, 12 * PAGE);
    let old = std::fs::read(t.node_root(1).join("store/commit")).unwrap();
    t.import("b", 2, 8 * PAGE);
    std::fs::write(t.node_root(1).join("store/commit"), old).unwrap();
    std::fs::remove_file(t.node_root(2).join("store/commit")).unwrap();
    let v = t.tool(&["verify"]);
    v.assert_success();
    assert!(!v.stdout.contains("under-replicated: "), "{}", v.stdout);
    assert!(v.stdout.contains("b: 8 pages, 8 redundant"), "{}", v.stdout);
    t.expect("a", 1, 12 * PAGE).unwrap();
    t.expect("b", 2, 8 * PAGE).unwrap();

    for n in 0..4 {
        std::fs::remove_file(t.node_root(n).join("store/commit")).unwrap();
    }
    let out = t.tool(&["ls"]);
    out.assert_failure();
    out.assert_output_contains("nothing was deleted");
    for n in 0..4 {
        let files = t.node_root(n).join("store/files");
        assert_eq!(std::fs::read_dir(&files).unwrap().count(), 2, "node {n}");
    }
}

#[test]
fn a_corrupt_primary_is_read_from_the_mirror_and_repaired() {
    let t = Pfs::new();
    t.import("c", 3, PAGE);
    let (primary, _) = t.holders("c", 0);
    let n: usize = primary.trim_start_matches("vnode").parse().unwrap();
    corrupt(&t.node_root(n), 3, PAGE, 0);
    let v = t.tool(&["verify", "c"]);
    assert_eq!(v.status.and_then(|s| s.code()), Some(1), "{}", v.stdout);
    assert!(v.stdout.contains("primary corrupt"), "{}", v.stdout);
    // A mapped read is right and repairs the primary.
    let out = t.case(&["shared_read", "c", "3"]);
    assert!(
        out.stderr.contains("repaired from the mirror"),
        "{}",
        out.stderr
    );
    t.ok(&["verify", "c"]);
    // Export also reads through a bad primary.
    corrupt(&t.node_root(n), 3, PAGE, 0);
    t.expect("c", 3, PAGE).unwrap();
    t.ok(&["verify", "c"]);
}

/// Rank 0's read faults, from the `STATS` line of a `pfs_cases` run.
fn read_faults_of_rank0(out: &Outcome) -> u64 {
    out.stdout
        .lines()
        .find(|l| l.starts_with("STATS rank=0 "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("read_faults="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no read_faults of rank 0 in:\n{}", out.stdout))
}

/// A first sequential read of a file on disk loads the following pages ahead (one request per
/// node for a run of pages) instead of faulting on every page. A bad primary inside such a run
/// is still read from its mirror and repaired, and a page with no good copy still fails by name,
/// never reading as zeros. The ranks that load pages for rank 0 keep them unmapped: their
/// memory mappings do not grow by two per page (`first_read` checks).
#[test]
fn a_sequential_first_read_loads_ahead_through_bad_pages() {
    const PAGES: u64 = 256;
    let t = Pfs::new();
    t.import("s", 6, PAGES * PAGE);
    let out = t.case(&["first_read", "s", "6"]);
    let faults = read_faults_of_rank0(&out);
    assert!(
        faults < PAGES / 4,
        "rank 0 took {faults} read faults for the {PAGES} pages it loaded first: nothing was loaded ahead\n{}",
        out.stdout
    );
    let node = |name: String| -> usize { name.trim_start_matches("vnode").parse().unwrap() };
    let (primary, _) = t.holders("s", 37);
    corrupt(&t.node_root(node(primary)), 6, PAGES * PAGE, 37);
    let out = t.case(&["first_read", "s", "6"]);
    assert!(
        out.stderr.contains("page 37: the primary copy")
            && out.stderr.contains("repaired from the mirror"),
        "{}",
        out.stderr
    );
    t.ok(&["verify", "s"]);
    let (primary, mirror) = t.holders("s", 100);
    for name in [primary, mirror] {
        corrupt(&t.node_root(node(name)), 6, PAGES * PAGE, 100);
    }
    let out = t.launch("pfs_cases", &["first_read", "s", "6"]).run();
    out.assert_failure();
    out.assert_output_contains("\"s\", page 100: no good copy left");
}

#[test]
fn two_corrupt_copies_give_an_error_naming_file_and_page() {
    let t = Pfs::new();
    t.import("d", 4, 2 * PAGE);
    let (primary, mirror) = t.holders("d", 1);
    for node in [primary, mirror] {
        let n: usize = node.trim_start_matches("vnode").parse().unwrap();
        corrupt(&t.node_root(n), 4, 2 * PAGE, 1);
    }
    let dst = t.file("d.out");
    let out = t.tool(&["export", "d", dst.to_str().unwrap()]);
    out.assert_failure();
    out.assert_output_contains("\"d\", page 1: no good copy left");
    assert!(!dst.exists(), "a failed export left {}", dst.display());
    let v = t.tool(&["verify", "d"]);
    assert!(v.stdout.contains("LOST: d page 1"), "{}", v.stdout);
    // A mapped read dies with the same message rather than returning wrong data.
    let out = t.launch("pfs_cases", &["shared_read", "d", "4"]).run();
    out.assert_failure();
    out.assert_output_contains("page 1: no good copy left");
}

#[test]
fn a_written_page_missing_on_both_nodes_is_lost_never_zeros() {
    let t = Pfs::new();
    t.import("e", 5, 8 * PAGE);
    let stat = t.ok(&["stat", "e"]);
    assert!(
        stat.stdout.contains("written:     8 of 8 pages"),
        "{}",
        stat.stdout
    );
    // Lose both disk roots that keep page 0: its data is gone, and nothing may read it as zeros.
    let (primary, mirror) = t.holders("e", 0);
    for node in [primary, mirror] {
        let n: usize = node.trim_start_matches("vnode").parse().unwrap();
        std::fs::remove_dir_all(t.node_root(n)).unwrap();
    }
    let dst = t.file("e.out");
    let out = t.tool(&["export", "e", dst.to_str().unwrap()]);
    out.assert_failure();
    out.assert_output_contains(
        "\"e\", page 0: no good copy left (primary missing, mirror missing)",
    );
    let v = t.tool(&["verify", "e"]);
    assert!(
        v.stdout
            .contains("LOST: e page 0: primary missing, mirror missing"),
        "{}",
        v.stdout
    );
    let out = t.launch("pfs_cases", &["shared_read", "e", "5"]).run();
    out.assert_failure();
    out.assert_output_contains("page 0: both copies are missing");
}

/// Kills a flush of `d` (pattern 1 → 2) with `fault`, then checks the file is entirely the
/// old or entirely the new version, as `expect_new` says.
fn crash_flush(fault: &str, expect_new: bool) {
    let t = Pfs::new();
    let len = 40 * PAGE + 17;
    t.import("d", 1, len);
    let out = t
        .launch("pfs_cases", &["rewrite", "d", "2"])
        .env("PSLS_FAULT", fault)
        .run();
    out.assert_failure();
    out.assert_output_contains("fault injected at");
    let (old, new) = (t.expect("d", 1, len), t.expect("d", 2, len));
    if expect_new {
        new.unwrap_or_else(|e| panic!("{fault}: not the new version: {e} ({old:?})"));
    } else {
        old.unwrap_or_else(|e| panic!("{fault}: not the old version: {e} ({new:?})"));
    }
    t.ok(&["verify"]);
}

#[test]
fn a_crash_while_writing_pages_keeps_the_old_version() {
    crash_flush("pfs-write:count=5", false);
}

#[test]
fn a_crash_before_the_vote_keeps_the_old_version() {
    crash_flush("pfs-vote", false);
    crash_flush("pfs-prepare:rank=2", false);
}

#[test]
fn a_crash_before_any_commit_keeps_the_old_version() {
    crash_flush("pfs-commit", false);
}

#[test]
fn a_crash_after_some_nodes_committed_rolls_forward() {
    crash_flush("pfs-committed:rank=1", true);
    // Rank 3's commit fails while the others commit (a kill at `pfs-commit:rank=3` made this
    // a race: under MPICH the launcher sometimes killed the others before their rename).
    crash_flush("pfs-commit-error:rank=3", true);
}

#[test]
fn a_full_disk_fails_the_flush_and_keeps_the_old_version() {
    let t = Pfs::new();
    let len = 8 * PAGE;
    t.import("e", 1, len);
    let out = t
        .launch("pfs_cases", &["rewrite", "e", "2"])
        .env("PSLS_FAULT", "pfs-enospc")
        .run();
    out.assert_failure();
    out.assert_output_contains("the disk root is full");
    t.expect("e", 1, len).unwrap();
    t.ok(&["verify"]);
}

/// A node whose disk fails in the middle of a collective tool never leaves the others waiting:
/// a full disk on one node during an import (several chunks) fails the import everywhere. A
/// node whose data file cannot be read (an I/O error) counts as having lost its copies: export
/// and mapped reads use the mirrors, and `verify` names the pages as unreadable.
#[test]
fn a_node_whose_disk_fails_never_hangs_the_others_and_its_copies_are_replaced_by_mirrors() {
    let t = Pfs::new();
    let len = 700 * PAGE + 5; // three import chunks
    let src = t.file("big.src");
    write_pattern(&src, 7, len);
    let out = t
        .launch(
            "psls-pfs",
            &["import", src.to_str().unwrap(), "big", "--quiet"],
        )
        .env("PSLS_FAULT", "pfs-enospc:rank=1")
        .timeout(std::time::Duration::from_secs(120))
        .run();
    out.assert_failure();
    out.assert_output_contains("the disk root is full");
    let ls = t.ok(&["ls"]);
    assert!(
        !ls.stdout.contains("big"),
        "a failed import left a file:\n{}",
        ls.stdout
    );
    t.import("big", 7, len);
    // Node 2's data file becomes a directory: opening it for reading fails there only.
    let files = t.node_root(2).join("store/files");
    let dir = std::fs::read_dir(&files)
        .expect("store files")
        .next()
        .expect("one file")
        .expect("dir entry")
        .path();
    std::fs::remove_file(dir.join("data")).expect("remove data");
    std::fs::create_dir(dir.join("data")).expect("data as a directory");
    let out = t
        .launch("psls-pfs", &["verify", "big"])
        .timeout(std::time::Duration::from_secs(120))
        .run();
    out.assert_failure();
    out.assert_output_contains("primary unreadable");
    t.expect("big", 7, len).unwrap();
    let out = t.case(&["first_read", "big", "7"]);
    out.assert_output_contains("is unreadable; read from the mirror");
}

/// A rank that cannot write-protect its dirty pages at the start of a flush fails the flush on
/// every rank (before, the others waited for it in the exchange that follows), and the disk
/// keeps the old version.
#[test]
fn a_flush_that_fails_on_one_rank_fails_on_all() {
    let t = Pfs::new();
    let len = 8 * PAGE;
    t.import("g", 1, len);
    let out = t
        .launch("pfs_cases", &["rewrite", "g", "2"])
        .env("PSLS_FAULT", "pfs-protect-error:rank=2")
        .timeout(std::time::Duration::from_secs(120))
        .run();
    out.assert_failure();
    out.assert_output_contains("injected error at pfs-protect-error");
    t.expect("g", 1, len).unwrap();
}

#[test]
fn bad_tool_usage_is_refused_clearly() {
    let t = Pfs::new();
    let out = t.tool(&["export", "nosuch", "/tmp/x"]);
    out.assert_failure();
    out.assert_output_contains("no PFS file named \"nosuch\"");
    let out = t.tool(&["import", "/nonexistent/file", "x"]);
    out.assert_failure();
    out.assert_output_contains("/nonexistent/file");
    t.import("dup", 1, 10);
    let src = t.file("dup.src");
    let out = t.tool(&["import", src.to_str().unwrap(), "dup"]);
    out.assert_failure();
    out.assert_output_contains("--replace");
    t.ok(&["import", src.to_str().unwrap(), "dup", "--replace"]);
    t.ok(&["rm", "dup"]);
    let ls = t.ok(&["ls"]);
    assert!(!ls.stdout.contains("dup"), "{}", ls.stdout);
}

/// `--quiet` runs of `psls-pfs` with `env` set.
fn tool_with(t: &Pfs, env: &[(&str, &str)], args: &[&str]) -> Outcome {
    let mut l = t.launch("psls-pfs", args).arg("--quiet");
    for (k, v) in env {
        l = l.env(*k, *v);
    }
    l.run()
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Export writes a new regular file, or replaces an existing regular file only with
/// `--replace`; a symbolic link, a FIFO or a directory at the destination is never replaced
/// (renaming over it once turned `/dev/null` into a regular file).
#[test]
fn export_never_replaces_what_it_was_not_asked_to() {
    use std::os::unix::fs::FileTypeExt;
    let t = Pfs::new();
    t.import("x", 9, 3 * PAGE + 5);
    let dst = t.file("x.out");
    std::fs::write(&dst, b"precious").unwrap();
    let out = t.tool(&["export", "x", dst.to_str().unwrap()]);
    out.assert_failure();
    out.assert_output_contains("exists already; pass --replace");
    assert_eq!(std::fs::read(&dst).unwrap(), b"precious");
    t.ok(&["export", "x", dst.to_str().unwrap(), "--replace"]);
    check_pattern(&dst, 9, 3 * PAGE + 5).unwrap();

    // A symbolic link: refused even with --replace; the link and its target stay.
    let target = t.file("target");
    std::fs::write(&target, b"target").unwrap();
    let link = t.file("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for extra in [&[][..], &["--replace"][..]] {
        let out = t.tool(&[&["export", "x", link.to_str().unwrap()][..], extra].concat());
        out.assert_failure();
        out.assert_output_contains("is a symbolic link, not a regular file");
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"target");

    // A FIFO and a directory: refused, left as they are.
    let fifo = t.file("fifo");
    mkfifo(&fifo);
    let out = t.tool(&["export", "x", fifo.to_str().unwrap(), "--replace"]);
    out.assert_failure();
    out.assert_output_contains("is a FIFO (named pipe), not a regular file");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let out = t.tool(&["export", "x", t.files.0.to_str().unwrap(), "--replace"]);
    out.assert_failure();
    out.assert_output_contains("is a directory, not a regular file");
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&t.files.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("psls-export"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Import reads regular files only: a FIFO is refused at once (opening it waited for a
/// writer forever), and a file with more data than its reported size (as in /proc) fails
/// instead of importing the first 0 bytes of it, leaving the file it was to replace intact.
#[test]
fn import_refuses_what_is_not_a_regular_file_of_known_size() {
    let t = Pfs::new();
    let fifo = t.file("fifo");
    mkfifo(&fifo);
    let out = t
        .launch(
            "psls-pfs",
            &["import", fifo.to_str().unwrap(), "f", "--quiet"],
        )
        .timeout(std::time::Duration::from_secs(60))
        .run();
    out.assert_failure();
    out.assert_output_contains("is a FIFO (named pipe), not a regular file");
    out.assert_output_contains("copy it to a regular file first");
    let out = t.tool(&["import", t.files.0.to_str().unwrap(), "d"]);
    out.assert_failure();
    out.assert_output_contains("is a directory, not a regular file");

    t.import("keep", 2, 2 * PAGE + 3);
    for name in ["cpu", "keep"] {
        let out = t.tool(&["import", "/proc/cpuinfo", name, "--replace"]);
        out.assert_failure();
        out.assert_output_contains("/proc/cpuinfo is larger than its reported size");
        out.assert_output_contains("the import was abandoned");
    }
    let ls = t.ok(&["ls"]);
    assert!(
        !ls.stdout.contains("cpu") && !ls.stdout.contains(" f\n") && !ls.stdout.contains(" d\n"),
        "a failed import left a file:\n{}",
        ls.stdout
    );
    t.expect("keep", 2, 2 * PAGE + 3).unwrap();
}

/// Import and export move about 1 MiB per step, at least a page: with 256 MiB pages a step of
/// 256 pages once asked for 64 GiB and aborted.
#[test]
fn import_and_export_with_large_pages_keep_memory_bounded() {
    let t = Pfs::new();
    let env = [("PSLS_PAGE_SIZE", "256M")];
    let src = t.file("small.src");
    write_pattern(&src, 4, 3 * PAGE + 11);
    tool_with(&t, &env, &["import", src.to_str().unwrap(), "small"]).assert_success();
    let stat = t.ok(&["stat", "small"]);
    assert!(
        stat.stdout
            .contains(&format!("page size:   {} bytes", 256 << 20)),
        "{}",
        stat.stdout
    );
    let dst = t.file("small.out");
    tool_with(&t, &env, &["export", "small", dst.to_str().unwrap()]).assert_success();
    check_pattern(&dst, 4, 3 * PAGE + 11).unwrap();
}

/// `import SRC` takes the PFS name from SRC's file name; a path with none (`/`, `.`) asks for
/// the name (exit 2) instead of reporting an empty name.
#[test]
fn import_without_a_name_asks_for_one_when_the_path_has_none() {
    let t = Pfs::new();
    for src in ["/", "."] {
        let out = t.tool(&["import", src]);
        assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out:?}");
        out.assert_output_contains(&format!(
            "{src} has no file name to use as the PFS name; give the name"
        ));
        assert!(!out.stderr.contains("it is empty"), "{}", out.stderr);
    }
}

/// An error one rank has at start-up is printed once, by that rank, not once more by every
/// other rank as `rank R failed: ...`.
#[test]
fn a_start_up_error_on_one_rank_is_printed_once() {
    let t = Pfs::new();
    t.import("a", 1, 10);
    let root = t.node_root(2);
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"in the way").unwrap();
    let out = t.tool(&["ls"]);
    out.assert_failure();
    let said = out.stderr.matches("exists and is not a directory").count();
    assert_eq!(said, 1, "{}", out.stderr);
}
