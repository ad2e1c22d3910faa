//! Shared virtual memory: one global address space, sequentially consistent, write-invalidate.
//! Each case runs on several ranks over several virtual nodes under `mpirun`.

use psls_tests::{sibling_binary, Launch, Scratch};

fn svm(case: &str, ranks: usize, nodes: usize) -> psls_tests::Outcome {
    let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
    let out = Launch::program(sibling_binary("svm_cases"), ranks)
        .arg(case)
        .nodes(nodes)
        .roots(&m, &d)
        .run();
    out.assert_success();
    out.assert_lines("PASS", ranks);
    out
}

/// Sums one `key=value` field of the `STATS` lines over the ranks.
fn stat(out: &psls_tests::Outcome, key: &str) -> u64 {
    out.lines_with("STATS")
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
        })
        .map(|v| v.parse::<u64>().unwrap())
        .sum()
}

#[test]
fn home_based_directory_requests_keep_every_guarantee() {
    // PSLS_DIRECTORY=home: faults lock and update directory entries through their homes'
    // service threads, and owners send pages as messages (what `auto` picks over UCX/TCP).
    // The same cases must pass, and the counters must show the home path was taken.
    for (case, ranks, nodes) in [
        ("stripes", 4, 4),
        ("mutex_counter", 4, 2),
        ("message_passing", 3, 3),
        ("peterson", 3, 3),
        ("atomics", 4, 4),
        ("false_sharing", 3, 3),
        ("random", 4, 2),
        ("threads", 3, 3),
        ("blocked", 2, 2),
        ("alloc_free", 2, 2),
    ] {
        let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
        let out = Launch::program(sibling_binary("svm_cases"), ranks)
            .arg(case)
            .nodes(nodes)
            .roots(&m, &d)
            .env("PSLS_DIRECTORY", "home")
            .run();
        out.assert_success();
        out.assert_lines("PASS", ranks);
        assert!(stat(&out, "home_locks") > 0, "{case}: {}", out.stdout);
    }
    // And `rma` never takes that path.
    let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
    let out = Launch::program(sibling_binary("svm_cases"), 3)
        .arg("false_sharing")
        .nodes(3)
        .roots(&m, &d)
        .env("PSLS_DIRECTORY", "rma")
        .run();
    out.assert_success();
    assert_eq!(stat(&out, "home_locks"), 0, "{}", out.stdout);
}

#[test]
fn stripes_are_visible_to_every_rank() {
    for (ranks, nodes) in [(2, 2), (4, 4), (4, 2)] {
        let out = svm("stripes", ranks, nodes);
        assert!(stat(&out, "fetches") > 0);
    }
}

#[test]
fn mutex_protected_counter_is_exact() {
    svm("mutex_counter", 4, 2);
}

#[test]
fn message_passing_without_barrier() {
    svm("message_passing", 3, 3);
}

#[test]
fn peterson_mutual_exclusion_holds() {
    svm("peterson", 2, 2);
    svm("peterson", 3, 3);
}

/// Whether this kernel offers `userfaultfd` write-protection of shared memory (Linux 6.4 or
/// later), so that `PSLS_WRITE_PROTECT=userfaultfd` must work.
fn kernel_has_shmem_uffd_wp() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|s| s.parse::<u32>().ok());
    matches!((it.next(), it.next()), (Some(Some(a)), Some(Some(b))) if (a, b) >= (6, 4))
}

/// How many ranks' `STATS` lines report write-protection `mode`.
fn reporting(out: &psls_tests::Outcome, mode: &str) -> usize {
    out.lines_with("STATS")
        .iter()
        .filter(|l| l.contains(&format!(" write_protection={mode} ")))
        .count()
}

#[test]
fn both_write_protections_keep_every_guarantee() {
    // The coherence cases that write most (upgrades, downgrades, invalidations, threads) under
    // each way of write-protecting pages; the ranks must report the one asked for.
    for mode in ["mprotect", "userfaultfd"] {
        for (case, ranks, nodes) in [
            ("mutex_counter", 4, 2),
            ("false_sharing", 3, 3),
            ("random", 4, 2),
            ("threads", 3, 3),
            ("alloc_free", 2, 2),
        ] {
            let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
            let out = Launch::program(sibling_binary("svm_cases"), ranks)
                .arg(case)
                .nodes(nodes)
                .roots(&m, &d)
                .env("PSLS_WRITE_PROTECT", mode)
                .run();
            if mode == "userfaultfd" && !kernel_has_shmem_uffd_wp() && !out.success() {
                out.assert_output_contains("PSLS_WRITE_PROTECT");
                eprintln!("userfaultfd half skipped: this kernel predates Linux 6.4");
                return;
            }
            out.assert_success();
            out.assert_lines("PASS", ranks);
            assert_eq!(
                reporting(&out, mode),
                ranks,
                "{case} under {mode}: {}",
                out.stdout
            );
        }
    }
}

#[test]
fn userfaultfd_asked_where_it_cannot_work_is_a_clear_error() {
    // A memory root on a disk file system (PSLS_REQUIRE_TMPFS=false): userfaultfd
    // write-protects shared memory only. Asked for, init refuses with the setting and what to
    // do; `auto` falls back to mprotect and runs.
    let (m, d) = (Scratch::new("svm-mem-disk"), Scratch::new("svm-disk"));
    let run = |mode: &str| {
        Launch::program(sibling_binary("svm_cases"), 2)
            .arg("stripes")
            .nodes(2)
            .roots(&m, &d)
            .env("PSLS_REQUIRE_TMPFS", "false")
            .env("PSLS_WRITE_PROTECT", mode)
            .run()
    };
    let out = run("userfaultfd");
    out.assert_failure();
    out.assert_output_contains("PSLS_WRITE_PROTECT");
    out.assert_output_contains("auto or mprotect");
    let out = run("auto");
    out.assert_success();
    assert_eq!(reporting(&out, "mprotect"), 2, "{}", out.stdout);
}

#[test]
fn racing_atomics_are_exact() {
    svm("atomics", 4, 4);
}

#[test]
fn false_sharing_is_exact_and_ping_pongs() {
    let out = svm("false_sharing", 3, 3);
    assert!(stat(&out, "invalidations_received") >= 50, "{}", out.stdout);
}

#[test]
fn random_stress_never_goes_backwards() {
    svm("random", 4, 2);
}

#[test]
fn threads_in_every_rank() {
    svm("threads", 2, 2);
    svm("threads", 3, 3);
}

#[test]
fn service_thread_serves_while_application_blocks_in_mpi() {
    svm("blocked", 2, 2);
}

#[test]
fn freed_memory_is_reused_zeroed() {
    svm("alloc_free", 2, 2);
}

#[test]
fn an_ordinary_segfault_still_kills_the_process() {
    // The fault path serves the global range and passes every other fault on, so a store to
    // 0x10 dies of SIGSEGV as it would without PSLS (and does not hang in the handler).
    let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
    let out = Launch::program(sibling_binary("svm_cases"), 1)
        .arg("segv_outside")
        .roots(&m, &d)
        .run();
    out.assert_failure();
    out.assert_output_contains("global store served");
    out.assert_output_contains("Segmentation fault");
    assert!(!out.stdout.contains("did not fault"), "{}", out.stdout);
}

#[test]
fn hitting_max_map_count_names_the_fix() {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530);
    if limit > 300_000 {
        eprintln!("not run: vm.max_map_count is {limit}; reaching it would take too long");
        return;
    }
    let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
    let out = Launch::program(sibling_binary("svm_cases"), 1)
        .arg("map_count")
        .roots(&m, &d)
        .run();
    out.assert_failure();
    out.assert_output_contains(&format!("reached vm.max_map_count ({limit})"));
    out.assert_output_contains("PSLS_PAGE_SIZE");
    out.assert_output_contains("sysctl -w vm.max_map_count=");
    assert!(!out.stdout.contains("without reaching"), "{}", out.stdout);
}

#[test]
fn page_table_tracks_unique_replicated_owner_and_dirty_epoch() {
    svm("page_table", 3, 3);
}

#[test]
fn sequential_scan_and_first_write_with_and_without_prefetch() {
    // The default (auto) works ahead of these sequential misses; PSLS_PREFETCH=0 never does.
    svm("scan", 2, 2);
    let scan = |ranks: usize, prefetch: &str| {
        let (m, d) = (Scratch::shm("svm-mem"), Scratch::new("svm-disk"));
        let out = Launch::program(sibling_binary("svm_cases"), ranks)
            .arg("scan")
            .nodes(ranks)
            .roots(&m, &d)
            .env("PSLS_PREFETCH", prefetch)
            .run();
        out.assert_success();
        out.assert_lines("PASS", ranks);
        assert!(!out.lines_with("STATS").is_empty(), "{}", out.stdout);
        out
    };
    let out = scan(2, "0");
    assert_eq!(stat(&out, "prefetches"), 0);
    assert_eq!(stat(&out, "claimed"), 0);
    let out = scan(3, "8");
    assert!(stat(&out, "prefetches") > 0);
    assert!(stat(&out, "claimed") > 0);
}
