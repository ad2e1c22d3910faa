//! Two-level checkpoint: the memory checkpoint, whole-job crashes at every point of it, and the
//! restart. Each case runs on several ranks over several virtual nodes under `mpirun`; a crashed
//! run and its restart share the same memory roots, as the same command run again on the same
//! nodes would.

use psls_tests::{sibling_binary, Launch, Outcome, Scratch};

fn case(name: &str, ranks: usize, nodes: usize, m: &Scratch, d: &Scratch) -> Launch {
    Launch::program(sibling_binary("ckpt_cases"), ranks)
        .arg(name)
        .nodes(nodes)
        .roots(m, d)
}

/// An `mgs` run of a small matrix with a checkpoint every 4 vectors.
fn mgs(m: &Scratch, d: &Scratch, ranks: usize, nodes: usize) -> Launch {
    Launch::program(sibling_binary("mgs"), ranks)
        .args(["--rows", "1024", "--vectors", "32", "--every", "4"])
        .nodes(nodes)
        .roots(m, d)
}

/// The checksum `mgs` printed, after checking that Q was orthonormal.
fn checksum(out: &Outcome) -> String {
    out.assert_success();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("checksum"))
        .unwrap_or_else(|| panic!("no checksum in\n{}", out.stdout));
    assert!(line.contains("(ok)"), "Q is not orthonormal: {line}");
    line.rsplit(' ').next().unwrap_or_default().to_string()
}

/// Kills every rank at each point of the checkpoint (and between checkpoints), runs the same
/// command again, and compares the final result bit for bit with a fault-free run.
#[test]
fn mgs_restarts_bit_identical_after_a_crash_at_every_point() {
    for (ranks, nodes) in [(4, 4), (4, 2)] {
        let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
        let clean = mgs(&m, &d, ranks, nodes).run();
        let want = checksum(&clean);
        assert!(
            !clean.stdout.contains("restarted"),
            "a fault-free run is not a restart"
        );
        let crashes: &[(&str, Vec<&str>)] = &[
            (
                "between checkpoints",
                vec!["--crash-at", "13", "--crash-rank", "1"],
            ),
            ("in phase 1", vec![]),
            ("after the vote", vec![]),
            ("at the commit", vec![]),
            ("in phase 2", vec![]),
        ];
        let faults = [
            None,
            Some("ckpt-phase1:epoch=3:rank=1"),
            Some("ckpt-vote:epoch=3:rank=2"),
            Some("ckpt-commit:epoch=2:rank=0"),
            Some("ckpt-phase2:epoch=3:rank=3"),
        ];
        for ((what, args), fault) in crashes.iter().zip(faults) {
            let mut run = mgs(&m, &d, ranks, nodes).args(args.iter().copied());
            if let Some(f) = fault {
                run = run.env("PSLS_FAULT", f);
            }
            let crashed = run.run();
            assert!(
                !crashed.success(),
                "{what}: the run was meant to die\n{}",
                crashed.stdout
            );
            let again = mgs(&m, &d, ranks, nodes).run();
            assert!(
                again.stdout.contains("mgs: restarted from checkpoint"),
                "{what} ({ranks} ranks, {nodes} nodes): the second run did not restart\n{}\n{}",
                again.stdout,
                again.stderr
            );
            assert_eq!(
                checksum(&again),
                want,
                "{what} ({ranks} ranks, {nodes} nodes): Q differs from the fault-free run"
            );
            // The restarted run finalized: its checkpoint set is gone, the next run is fresh.
        }
        let fresh = mgs(&m, &d, ranks, nodes).run();
        assert_eq!(checksum(&fresh), want);
        assert!(
            !fresh.stdout.contains("restarted"),
            "after a run that finalized, the next one starts afresh"
        );
    }
}

#[test]
fn a_page_read_on_two_nodes_is_checkpointed_without_transfer() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    for (ranks, nodes) in [(2, 2), (4, 4)] {
        let out = case("replicated", ranks, nodes, &m, &d).run();
        out.assert_success();
        out.assert_lines("PASS", ranks);
    }
}

#[test]
fn private_state_and_arrays_come_back_after_a_restart() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let crashed = case("private_crash", 4, 4, &m, &d).run();
    assert!(!crashed.success(), "private_crash must die");
    assert!(
        crashed.stdout.contains("CRASHING"),
        "it died at the planned point\n{}\n{}",
        crashed.stdout,
        crashed.stderr
    );
    let out = case("private_restart", 4, 4, &m, &d).run();
    out.assert_success();
    out.assert_lines("PASS", 4);
}

/// Scattered pages written between memory checkpoints (every third, then every fourth page of
/// each rank's block) are sent to the buddy node from scattered frames into reused slots; with
/// one node's memory gone after the crash, its ranks' pages come back from those replicas,
/// every word as checkpointed.
#[test]
fn scattered_pages_come_back_from_the_buddy_after_a_reboot() {
    // Under both ways of write-protecting pages (the checkpoint protects the scattered pages,
    // their next writes copy the recovery frames out).
    for mode in ["mprotect", "auto"] {
        scattered_reboot(mode);
    }
}

fn scattered_reboot(mode: &str) {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let crashed = case("scattered_crash", 4, 4, &m, &d)
        .env("PSLS_WRITE_PROTECT", mode)
        .run();
    assert!(
        !crashed.success() && crashed.stdout.contains("CRASHING"),
        "scattered_crash must die at the planned point\n{}\n{}",
        crashed.stdout,
        crashed.stderr
    );
    assert_eq!(
        crashed.stdout.matches("CHECK rank=").count(),
        4 * 6,
        "every check passed before the crash\n{}",
        crashed.stdout
    );
    // A reboot of vnode1: its memory root is gone.
    let mut wiped = 0;
    for user in std::fs::read_dir(&m.0).expect("memory base").flatten() {
        for job in std::fs::read_dir(user.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let root = job.path().join("vnode1");
            if root.is_dir() {
                std::fs::remove_dir_all(&root).expect("wipe vnode1");
                wiped += 1;
            }
        }
    }
    assert!(
        wiped > 0,
        "vnode1 had no memory root under {}",
        m.0.display()
    );
    let out = case("scattered_restart", 4, 4, &m, &d)
        .env("PSLS_WRITE_PROTECT", mode)
        .run();
    out.assert_success();
    out.assert_lines("PASS", 4);
}

#[test]
fn a_restart_with_other_settings_names_them() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let crashed = case("private_crash", 2, 2, &m, &d).run();
    assert!(!crashed.success());
    let out = case("private_restart", 2, 2, &m, &d)
        .env("PSLS_PAGE_SIZE", "8192")
        .run();
    assert!(!out.success(), "a restart with another page size must fail");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("PSLS_PAGE_SIZE") && all.contains("to start afresh"),
        "the error names the setting and the way out:\n{all}"
    );
    // With the settings of the checkpoint, the restart works.
    let out = case("private_restart", 2, 2, &m, &d).run();
    out.assert_success();
}

/// A restart on another node layout (4 ranks on 2 nodes, then on 4) is not reported as lost
/// node memory alone: the error says which rank ran on which node before, and the restart on
/// the old layout still works.
#[test]
fn a_restart_on_another_node_layout_says_so() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let crashed = case("private_crash", 4, 2, &m, &d).run();
    assert!(!crashed.success());
    let out = case("private_restart", 4, 4, &m, &d).run();
    assert!(
        !out.success(),
        "a restart on another layout cannot restore the memory checkpoint"
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("the node layout changed") && all.contains("rank 1 ran on vnode0"),
        "the error names the layout change and where rank 1 ran:\n{all}"
    );
    let out = case("private_restart", 4, 2, &m, &d).run();
    out.assert_success();
}

/// Each cleaning policy leaves the copies its definition says (see `ckpt_cases policy` for the
/// pages): (active, readable recovery, evicted) over the job.
#[test]
fn each_cleaning_policy_keeps_what_it_defines() {
    for (policy, want) in [
        ("none", [6, 3, 0]),
        ("total", [0, 0, 4]),
        ("keep-dirty-and-recovery", [2, 6, 0]),
        ("keep-dirty", [3, 4, 1]),
        ("one-active", [4, 3, 0]),
    ] {
        let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
        let out = case("policy", 2, 2, &m, &d)
            .args(want.iter().map(|n| n.to_string()))
            .env("PSLS_CKPT_CLEANING", policy)
            .run();
        assert!(
            out.success(),
            "policy {policy}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        out.assert_lines("PASS", 2);
    }
}

/// With permanent checkpoints in the run, under every cleaning policy, mgs ends with the same
/// bits; killed inside a cleaner's flush, or after it, it restarts and still does; and after a
/// "power cut" (the memory roots wiped) it restarts from the permanent checkpoint.
#[test]
fn permanent_checkpoints_survive_crashes_and_power_cuts() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let want = checksum(
        &mgs(&m, &d, 4, 4)
            .env("PSLS_CKPT_PERMANENT_EVERY", "0")
            .run(),
    );
    for policy in [
        "none",
        "total",
        "keep-dirty-and-recovery",
        "keep-dirty",
        "one-active",
    ] {
        let out = mgs(&m, &d, 4, 4)
            .env("PSLS_CKPT_PERMANENT_EVERY", "2")
            .env("PSLS_CKPT_CLEANING", policy)
            .run();
        assert_eq!(checksum(&out), want, "policy {policy} changed the result");
    }
    // Calls 3 and 6 of checkpoint() are permanent (at vectors 8 and 20).
    for (what, fault) in [
        ("inside the cleaner's flush", "pfs-write:count=3:rank=1"),
        (
            "after the cleaner committed",
            "ckpt-permanent-committed:epoch=6:rank=2",
        ),
        ("before the cleaner", "ckpt-permanent:epoch=6:rank=0"),
    ] {
        let crashed = mgs(&m, &d, 4, 4)
            .env("PSLS_CKPT_PERMANENT_EVERY", "3")
            .env("PSLS_FAULT", fault)
            .run();
        assert!(!crashed.success(), "{what}: the run was meant to die");
        let again = mgs(&m, &d, 4, 4)
            .env("PSLS_CKPT_PERMANENT_EVERY", "3")
            .run();
        assert!(
            again.stdout.contains("mgs: restarted from checkpoint"),
            "{what}: no restart\n{}\n{}",
            again.stdout,
            again.stderr
        );
        assert_eq!(checksum(&again), want, "{what}: Q differs");
    }
    // A power cut: every rank dies after checkpoint 7 (memory, vector 24); the memory roots
    // are lost; the permanent checkpoint 6 (vector 20) is all that is left.
    let crashed = mgs(&m, &d, 4, 4)
        .env("PSLS_CKPT_PERMANENT_EVERY", "3")
        .args(["--crash-at", "26", "--crash-rank", "0"])
        .run();
    assert!(!crashed.success());
    for e in std::fs::read_dir(m.path()).unwrap().flatten() {
        std::fs::remove_dir_all(e.path()).unwrap();
    }
    let again = mgs(&m, &d, 4, 4)
        .env("PSLS_CKPT_PERMANENT_EVERY", "3")
        .run();
    assert!(
        again
            .stdout
            .contains("mgs: restarted from checkpoint 6 at vector 20"),
        "after the power cut, the permanent checkpoint 6 is the restart point\n{}\n{}",
        again.stdout,
        again.stderr
    );
    assert_eq!(checksum(&again), want, "after the power cut: Q differs");
}

/// A budget too small for any memory checkpoint turns every checkpoint into a permanent one,
/// says why, and the run (crashed and restarted too) still ends with the same bits.
#[test]
fn a_memory_budget_too_small_runs_the_cleaner_instead() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let want = checksum(&mgs(&m, &d, 4, 4).run());
    let tight = |l: Launch| {
        l.env("PSLS_CKPT_MEMORY", "64K")
            .env("PSLS_CKPT_PERMANENT_EVERY", "0")
    };
    let out = tight(mgs(&m, &d, 4, 4)).run();
    assert_eq!(checksum(&out), want);
    assert!(
        out.stderr.contains("over its budget") && out.stderr.contains("permanent checkpoint"),
        "the log says why the cleaner ran:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("memory checkpoint 2:"),
        "no memory checkpoint fits in 64 KiB:\n{}",
        out.stderr
    );
    let crashed = tight(mgs(&m, &d, 4, 4))
        .args(["--crash-at", "13", "--crash-rank", "2"])
        .run();
    assert!(!crashed.success());
    let again = tight(mgs(&m, &d, 4, 4)).run();
    assert!(
        again
            .stdout
            .contains("mgs: restarted from checkpoint 4 at vector 12"),
        "{}",
        again.stdout
    );
    assert_eq!(checksum(&again), want);
}

/// A restart with other arguments (another matrix) fails with an error that says so, instead of
/// computing on the other run's data; with the right arguments it restarts.
#[test]
fn a_restart_with_other_arguments_is_refused() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let crashed = mgs(&m, &d, 4, 4)
        .args(["--crash-at", "9", "--crash-rank", "3"])
        .run();
    assert!(!crashed.success());
    // Other sizes: the arrays do not match the checkpoint's.
    let other = Launch::program(sibling_binary("mgs"), 4)
        .args(["--rows", "2048", "--vectors", "32", "--every", "4"])
        .nodes(4)
        .roots(&m, &d)
        .run();
    assert!(!other.success(), "a restart with other sizes must fail");
    let all = format!("{}{}", other.stdout, other.stderr);
    assert!(
        all.contains("same arguments") || all.contains("--rows 1024 --vectors 32"),
        "the error says what to do:\n{all}"
    );
    let again = mgs(&m, &d, 4, 4).run();
    assert!(
        again.stdout.contains("mgs: restarted from checkpoint"),
        "{}",
        again.stdout
    );
    checksum(&again);
}

/// With PSLS_PREFETCH, the write fault after a checkpoint takes back a run of pages at once in
/// the SIGSEGV handler, copying each recovery frame out: the result, and a restart after a
/// crash, still give the same bits.
#[test]
fn rewriting_a_run_after_a_checkpoint_keeps_every_recovery_copy() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let want = checksum(&mgs(&m, &d, 4, 2).run());
    let ahead = |l: Launch| l.env("PSLS_PREFETCH", "16");
    assert_eq!(checksum(&ahead(mgs(&m, &d, 4, 2)).run()), want);
    let crashed = ahead(mgs(&m, &d, 4, 2))
        .args(["--crash-at", "22", "--crash-rank", "1"])
        .run();
    assert!(!crashed.success());
    let again = ahead(mgs(&m, &d, 4, 2)).run();
    assert!(
        again
            .stdout
            .contains("mgs: restarted from checkpoint 6 at vector 20"),
        "{}",
        again.stdout
    );
    assert_eq!(checksum(&again), want);
}

#[test]
fn a_flush_after_a_checkpoint_is_refused() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let out = case("flush_refused", 2, 2, &m, &d).run();
    out.assert_success();
    out.assert_lines("PASS", 2);
}

#[test]
fn a_checkpoint_failing_on_one_rank_is_abandoned_everywhere_and_the_next_one_succeeds() {
    for fault in [
        "ckpt-step1-error:epoch=2:rank=1",
        "ckpt-step2-error:epoch=2:rank=1",
    ] {
        let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
        let out = case("abandoned", 3, 3, &m, &d)
            .env("PSLS_FAULT", fault)
            .run();
        out.assert_success();
        out.assert_lines("PASS", 3);
        out.assert_output_contains("checkpoint 2 abandoned");
    }
}

/// The memory cleaning after a committed permanent checkpoint fails on one rank (as when an
/// `mprotect` is refused): every rank stops with that error instead of waiting for it, and the
/// next run restarts from the committed checkpoint with the fault-free result.
#[test]
fn a_cleaning_failing_on_one_rank_stops_every_rank() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let want = checksum(
        &mgs(&m, &d, 4, 4)
            .env("PSLS_CKPT_PERMANENT_EVERY", "0")
            .run(),
    );
    let failed = mgs(&m, &d, 4, 4)
        .env("PSLS_CKPT_PERMANENT_EVERY", "3")
        .env("PSLS_FAULT", "ckpt-clean-error:epoch=6:rank=1")
        .timeout(std::time::Duration::from_secs(120))
        .run();
    assert!(failed.status.is_some(), "the run hung:\n{}", failed.stderr);
    failed.assert_failure();
    failed.assert_output_contains("injected error at ckpt-clean-error");
    let again = mgs(&m, &d, 4, 4)
        .env("PSLS_CKPT_PERMANENT_EVERY", "3")
        .run();
    assert!(
        again.stdout.contains("mgs: restarted from checkpoint 6"),
        "no restart from the committed checkpoint\n{}\n{}",
        again.stdout,
        again.stderr
    );
    assert_eq!(checksum(&again), want);
}

#[test]
fn a_checkpoint_on_one_node_is_a_clear_error() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let out = case("one_node", 2, 1, &m, &d).run();
    out.assert_success();
    out.assert_lines("PASS", 2);
}

/// Ranks that ask checkpoint_now for different kinds all get an error instead of going on into
/// different collectives (a hang), and the next agreed checkpoint works.
#[test]
fn checkpoint_kinds_that_differ_between_ranks_are_refused() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let out = case("kind_mismatch", 3, 3, &m, &d)
        .timeout(std::time::Duration::from_secs(120))
        .run();
    assert!(out.status.is_some(), "mismatched kinds hung:\n{out:?}");
    out.assert_success();
    out.assert_lines("PASS", 3);
}

/// Every copy of rank `rank`'s private state of checkpoint `epoch` under the memory roots `m`.
fn private_copies(m: &Scratch, rank: usize, epoch: u64) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, name: &str, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, name, out);
            } else if e.file_name() == name {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        std::path::Path::new(&m.path()),
        &format!("private.rank{rank}.e{epoch}"),
        &mut out,
    );
    out.sort();
    out
}

/// The copy among `copies` that is on node `node` (a virtual node's directory).
fn on_node(copies: &[std::path::PathBuf], node: &str) -> std::path::PathBuf {
    copies
        .iter()
        .find(|p| p.parent().and_then(|d| d.file_name()) == Some(std::ffi::OsStr::new(node)))
        .unwrap_or_else(|| panic!("no copy on {node} among {copies:?}"))
        .clone()
}

/// A way of damaging a file: its new contents from the old.
type Damage = fn(&[u8]) -> Vec<u8>;

/// Ways of damaging a file of private state.
const DAMAGE: &[(&str, Damage)] = &[
    ("emptied", |_| Vec::new()),
    ("truncated", |b| b[..b.len() / 2].to_vec()),
    ("one bit flipped", |b| {
        let mut v = b.to_vec();
        let last = v.len() - 1;
        v[last] ^= 1;
        v
    }),
    ("overwritten with 116 random bytes", |_| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..116)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }),
];

/// Rank 1's own copy of its private state is damaged (emptied, cut short, a bit flipped,
/// garbage): the restart takes the buddy node's copy, says which file it could not use, and
/// ends with the fault-free bits (before, an empty file was an empty state: rank 1 started
/// over with its initial values, and the job hung; garbage was fatal despite the good copy).
#[test]
fn a_damaged_private_state_file_falls_back_to_the_buddy_copy() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let want = checksum(&mgs(&m, &d, 4, 4).run());
    for (what, damage) in DAMAGE {
        let crashed = mgs(&m, &d, 4, 4)
            .args(["--crash-at", "22", "--crash-rank", "1"])
            .run();
        assert!(!crashed.success(), "{what}: the run was meant to die");
        let copies = private_copies(&m, 1, 6);
        assert_eq!(copies.len(), 2, "{what}: two copies of rank 1's state");
        let own = on_node(&copies, "vnode1");
        let bytes = std::fs::read(&own).unwrap();
        std::fs::write(&own, damage(&bytes)).unwrap();
        let again = mgs(&m, &d, 4, 4)
            .timeout(std::time::Duration::from_secs(90))
            .run();
        assert!(
            again.status.is_some(),
            "{what}: the restart hung\n{}",
            again.stderr
        );
        assert!(
            again
                .stdout
                .contains("mgs: restarted from checkpoint 6 at vector 20"),
            "{what}: no restart from checkpoint 6\n{}\n{}",
            again.stdout,
            again.stderr
        );
        assert_eq!(checksum(&again), want, "{what}: Q differs");
        assert!(
            again.stderr.contains(&own.display().to_string()),
            "{what}: the warning names the unusable file {}:\n{}",
            own.display(),
            again.stderr
        );
    }
}

/// Both copies of rank 1's private state are damaged: the restart fails on every rank (no
/// hang, no silent initial values) with an error that names both files.
#[test]
fn private_state_damaged_on_both_nodes_is_an_error() {
    for (what, damage) in DAMAGE {
        let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
        let crashed = mgs(&m, &d, 4, 4)
            .args(["--crash-at", "22", "--crash-rank", "1"])
            .run();
        assert!(!crashed.success(), "{what}: the run was meant to die");
        let copies = private_copies(&m, 1, 6);
        assert_eq!(copies.len(), 2, "{what}: two copies of rank 1's state");
        for p in &copies {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, damage(&bytes)).unwrap();
        }
        let again = mgs(&m, &d, 4, 4)
            .timeout(std::time::Duration::from_secs(90))
            .run();
        assert!(
            again.status.is_some(),
            "{what}: the restart hung\n{}",
            again.stderr
        );
        again.assert_failure();
        let all = format!("{}{}", again.stdout, again.stderr);
        assert!(
            !all.contains("orthogonality error"),
            "{what}: the run went on without rank 1's state\n{all}"
        );
        for p in &copies {
            assert!(
                all.contains(&p.display().to_string()),
                "{what}: the error names {}:\n{all}",
                p.display()
            );
        }
        assert!(
            all.contains("to start afresh"),
            "{what}: the way out\n{all}"
        );
    }
}

/// After a power cut, a restart from the permanent checkpoint with another rank count or page
/// size is refused at init, naming the checkpoint, both values and what to do (before, the
/// other rank count restarted and aborted mid-run, and the other page size was reported as an
/// allocation of another size); with the checkpoint's settings the restart still works.
#[test]
fn a_permanent_restart_with_other_ranks_or_page_size_is_refused_at_init() {
    let (m, d) = (Scratch::shm("ckpt-mem"), Scratch::new("ckpt-disk"));
    let set = |l: Launch| {
        l.env("PSLS_CKPT_NAME", "mgsperm")
            .env("PSLS_CKPT_PERMANENT_EVERY", "3")
            .timeout(std::time::Duration::from_secs(90))
    };
    let want = checksum(&set(mgs(&m, &d, 4, 4)).run());
    let crashed = set(mgs(&m, &d, 4, 4))
        .args(["--crash-at", "22", "--crash-rank", "1"])
        .run();
    assert!(!crashed.success(), "the run was meant to die");
    let power_cut = || {
        for e in std::fs::read_dir(m.path()).unwrap().flatten() {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    };
    for (what, run, names) in [
        (
            "2 ranks",
            set(mgs(&m, &d, 2, 2)),
            ["4 ranks", "2 ranks", "PSLS_CKPT_NAME"],
        ),
        (
            "pages of 8192 bytes",
            set(mgs(&m, &d, 4, 4)).env("PSLS_PAGE_SIZE", "8192"),
            ["4096", "8192", "PSLS_PAGE_SIZE"],
        ),
    ] {
        power_cut();
        let out = run.run();
        assert!(out.status.is_some(), "{what}: the run hung\n{}", out.stderr);
        out.assert_failure();
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains("restarted from"),
            "{what}: refused at init, before any restart\n{all}"
        );
        for n in names.iter().chain(&["permanent checkpoint 6", "mgsperm"]) {
            assert!(all.contains(n), "{what}: the error names {n:?}\n{all}");
        }
    }
    power_cut();
    let again = set(mgs(&m, &d, 4, 4)).run();
    assert!(
        again
            .stdout
            .contains("mgs: restarted from checkpoint 6 at vector 20"),
        "with the checkpoint's settings, the restart works\n{}\n{}",
        again.stdout,
        again.stderr
    );
    assert_eq!(checksum(&again), want);
}
