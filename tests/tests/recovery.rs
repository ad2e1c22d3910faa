//! Recovery in the runtime (paper, section 3.3): node reboots, node losses with a spare in the
//! lost node's place, a second loss later, power cuts after a loss, two buddy nodes lost at
//! once, and a kill during recovery. Each scenario runs `mgs` on 4 ranks, one per virtual node,
//! kills it at a checkpoint (`PSLS_FAULT=ckpt-begin:...`), does to the node roots what the
//! failure does (a reboot wipes a node's memory root; a loss wipes both roots, and a spare
//! node takes its place in the node map), runs it again, and compares the final result bit for
//! bit with a fault-free run. The launcher drives the same steps (`tests/tests/launcher.rs`).

use psls_tests::{sibling_binary, Launch, Outcome, Scratch};
use std::path::Path;

/// The memory and disk bases of one emulated cluster, and its node-map file.
struct Cluster {
    m: Scratch,
    d: Scratch,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            m: Scratch::shm("recovery-mem"),
            d: Scratch::new("recovery-disk"),
        }
    }

    /// `mgs` with one rank on each of `nodes` (a node map), and `fault` if any.
    fn mgs(&self, nodes: &[&str], fault: Option<&str>, env: &[(&str, &str)]) -> Outcome {
        let map = self.d.0.join("nodemap");
        let text: String = nodes
            .iter()
            .enumerate()
            .map(|(r, n)| format!("{r} {n}\n"))
            .collect();
        std::fs::write(&map, text).expect("write node map");
        let mut run = Launch::program(sibling_binary("mgs"), nodes.len())
            .args(["--rows", "1024", "--vectors", "32", "--every", "4"])
            .roots(&self.m, &self.d)
            .env("PSLS_NODE_MAP", map.display().to_string())
            .env("PSLS_LOG", "warn");
        if let Some(f) = fault {
            run = run.env("PSLS_FAULT", f);
        }
        for (k, v) in env {
            run = run.env(*k, *v);
        }
        run.run()
    }

    /// A run that must die at its fault.
    fn crash(&self, nodes: &[&str], fault: &str, env: &[(&str, &str)]) {
        let out = self.mgs(nodes, Some(fault), env);
        assert!(
            !out.success() && out.stderr.contains("fault injected"),
            "the run was meant to die at {fault}\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }

    /// A reboot of `node`: its memory root (of every job and checkpoint set) is gone.
    fn reboot(&self, node: &str) {
        wipe(&self.m.0, node);
    }

    /// The loss of `node`: its memory and disk roots are gone.
    fn lose(&self, node: &str) {
        wipe(&self.m.0, node);
        wipe(&self.d.0, node);
    }

    /// A power cut: every memory root is gone.
    fn power_cut(&self) {
        for user in dirs(&self.m.0) {
            for d in dirs(&user) {
                std::fs::remove_dir_all(&d).expect("wipe memory");
            }
        }
    }
}

fn dirs(p: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(p)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `BASE/psls-UID/*/NODE`.
fn wipe(base: &Path, node: &str) {
    let mut n = 0;
    for user in dirs(base) {
        for job in dirs(&user) {
            let d = job.join(node);
            if d.is_dir() {
                std::fs::remove_dir_all(&d).expect("wipe node root");
                n += 1;
            }
        }
    }
    assert!(n > 0, "node {node} had no root under {}", base.display());
}

/// The checksum `mgs` printed, after checking that Q was orthonormal.
fn checksum(out: &Outcome) -> String {
    out.assert_success();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("checksum"))
        .unwrap_or_else(|| panic!("no checksum in\n{}\n{}", out.stdout, out.stderr));
    assert!(line.contains("(ok)"), "Q is not orthonormal: {line}");
    line.rsplit(' ').next().unwrap_or_default().to_string()
}

const NODES: [&str; 4] = ["vnode0", "vnode1", "vnode2", "vnode3"];

fn fault_free() -> String {
    let c = Cluster::new();
    let out = c.mgs(&NODES, None, &[]);
    assert!(!out.stdout.contains("restarted"), "{}", out.stdout);
    checksum(&out)
}

/// A restarted run: it must say where it resumed, and end with the fault-free result.
fn resumed(out: &Outcome, from: &str, want: &str) {
    assert!(
        out.stdout.contains(from),
        "expected {from:?}\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(checksum(out), want, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn one_node_rebooted_restores_from_the_other_copies() {
    let want = fault_free();
    let c = Cluster::new();
    c.crash(&NODES, "ckpt-begin:epoch=4:rank=1", &[]);
    c.reboot("vnode1");
    let out = c.mgs(&NODES, None, &[]);
    assert!(
        out.stderr.contains("the memory of node vnode1 is gone"),
        "{}",
        out.stderr
    );
    resumed(&out, "restarted from checkpoint 3 at vector 8", &want);
}

/// The file `name` somewhere under `base` (one checkpoint set's memory roots).
fn find_file(base: &Path, name: &str) -> std::path::PathBuf {
    let mut todo = vec![base.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                return p;
            }
        }
    }
    panic!("no {name} under {}", base.display())
}

/// A rank's recovery slots truncated, or its frame file deleted, while its record says the
/// checkpoint committed: its copies are discarded as if its node had rebooted, and the job
/// comes back bit-identical (before, the lost bytes were read back as zeros, and the run
/// ended "successfully" with a wrong result).
#[test]
fn a_truncated_or_missing_memory_file_is_restored_from_the_other_copies() {
    let want = fault_free();
    let c = Cluster::new();
    for (file, damage) in [("slots.rank2", "truncate"), ("frames.rank0", "remove")] {
        c.crash(&NODES, "ckpt-begin:epoch=4:rank=1", &[]);
        let f = find_file(&c.m.0, file);
        if damage == "truncate" {
            std::fs::File::options()
                .write(true)
                .open(&f)
                .and_then(|h| h.set_len(0))
                .expect("truncate");
        } else {
            std::fs::remove_file(&f).expect("remove");
        }
        let out = c.mgs(&NODES, None, &[]);
        assert!(
            out.stderr.contains("its memory checkpoint is damaged") && out.stderr.contains(file),
            "{file}: {}",
            out.stderr
        );
        resumed(&out, "restarted from checkpoint 3 at vector 8", &want);
    }
}

/// A node is lost and a spare takes its place; later, the node that kept the only other copy
/// of pages the first loss left alone is lost too. Only the copies made again at the first
/// restart (pages and private state) can bring the job back.
#[test]
fn a_second_node_loss_after_a_spare_took_over_is_survived() {
    let want = fault_free();
    let c = Cluster::new();
    c.crash(&NODES, "ckpt-begin:epoch=4:rank=1", &[]);
    c.lose("vnode1");
    let spare1 = ["vnode0", "vnode4", "vnode2", "vnode3"];
    c.crash(&spare1, "ckpt-begin:epoch=7:rank=0", &[]);
    c.lose("vnode0");
    let spare2 = ["vnode5", "vnode4", "vnode2", "vnode3"];
    let out = c.mgs(&spare2, None, &[]);
    assert!(
        out.stderr.contains("the memory of node vnode5 is gone"),
        "{}",
        out.stderr
    );
    resumed(&out, "restarted from checkpoint 6 at vector 16", &want);
}

/// After a node loss the spare gets the lost node's PFS copies (the permanent checkpoint's
/// hidden array files); then a power cut and the loss of a second node's disk: the job comes
/// back from the disks, whose pages now live on the spare.
#[test]
fn a_power_cut_after_node_losses_restores_from_the_re_mirrored_disks() {
    let want = fault_free();
    let c = Cluster::new();
    let every = [("PSLS_CKPT_PERMANENT_EVERY", "3")];
    c.crash(&NODES, "ckpt-begin:epoch=5:rank=1", &every);
    c.lose("vnode1");
    let spare1 = ["vnode0", "vnode4", "vnode2", "vnode3"];
    let out = c.mgs(&spare1, Some("ckpt-begin:epoch=8:rank=2"), &every);
    assert!(
        out.stderr.contains("laid out again over the job's nodes"),
        "{}",
        out.stderr
    );
    c.lose("vnode2");
    c.power_cut();
    let spare2 = ["vnode0", "vnode4", "vnode5", "vnode3"];
    let out = c.mgs(&spare2, None, &every);
    resumed(&out, "restarted from checkpoint 7 at vector 20", &want);
}

/// Two buddy nodes lose their memory at once: some pages may have lost both memory copies, so
/// the job goes back to the permanent checkpoint; without one, it stops with a clear error.
#[test]
fn two_buddy_nodes_rebooted_fall_back_to_the_permanent_checkpoint() {
    let want = fault_free();
    let c = Cluster::new();
    let every = [("PSLS_CKPT_PERMANENT_EVERY", "3")];
    c.crash(&NODES, "ckpt-begin:epoch=5:rank=1", &every);
    c.reboot("vnode1");
    c.reboot("vnode2");
    let out = c.mgs(&NODES, None, &every);
    assert!(
        out.stderr
            .contains("restarting from permanent checkpoint 3 on the disks"),
        "{}",
        out.stderr
    );
    resumed(&out, "restarted from checkpoint 3 at vector 8", &want);

    let c = Cluster::new();
    let never = [("PSLS_CKPT_PERMANENT_EVERY", "0")];
    c.crash(&NODES, "ckpt-begin:epoch=5:rank=1", &never);
    c.reboot("vnode1");
    c.reboot("vnode2");
    let out = c.mgs(&NODES, None, &never);
    assert!(!out.success(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("the memory of nodes vnode1, vnode2 is gone")
            && out.stderr.contains("cannot be restored"),
        "{}",
        out.stderr
    );
}

/// A rank is killed while the restarted job restores (after the pages were rolled back and
/// copied again, before the private state is loaded): the next restart still works.
#[test]
fn a_kill_during_recovery_is_survived() {
    let want = fault_free();
    let c = Cluster::new();
    c.crash(&NODES, "ckpt-begin:epoch=4:rank=1", &[]);
    c.lose("vnode1");
    let spare = ["vnode0", "vnode4", "vnode2", "vnode3"];
    c.crash(&spare, "restart-restore:rank=2", &[]);
    let out = c.mgs(&spare, None, &[]);
    resumed(&out, "restarted from checkpoint 3 at vector 8", &want);
}

/// After a power cut, `PSLS_RESTART_PREFETCH` loads the pages each rank held after the
/// permanent checkpoint's cleaning as soon as the array is allocated again; what that is
/// follows the cleaning policy (total cleaning keeps nothing, so nothing is prefetched).
#[test]
fn a_power_cut_restart_prefetches_the_working_set_the_cleaning_kept() {
    let want = fault_free();
    for (policy, expect) in [("none", true), ("total", false)] {
        let c = Cluster::new();
        let env = [
            ("PSLS_CKPT_PERMANENT_EVERY", "3"),
            ("PSLS_CKPT_CLEANING", policy),
            ("PSLS_RESTART_PREFETCH", "1"),
            ("PSLS_LOG", "psls::ckpt=info,warn"),
        ];
        c.crash(&NODES, "ckpt-begin:epoch=5:rank=1", &env);
        c.power_cut();
        let out = c.mgs(&NODES, None, &env);
        resumed(&out, "restarted from checkpoint 3 at vector 8", &want);
        let line = out.stderr.lines().find(|l| l.contains("restart prefetch:"));
        match (expect, line) {
            (true, Some(l)) => {
                let n: u64 = l
                    .split("restart prefetch: ")
                    .nth(1)
                    .and_then(|s| s.split(' ').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                assert!(n > 0, "{policy}: {l}");
            }
            (false, None) => {}
            _ => panic!("{policy}: prefetch expected: {expect}\n{}", out.stderr),
        }
    }
}

/// Two neighbouring nodes lose their memory and their disks at once: some pages of the
/// permanent checkpoint had both copies there. The job still starts (the re-mirroring counts
/// the lost pages instead of failing), and the first read of a lost page fails with an error
/// that names the file and says what to run — never a hang or zeros.
#[test]
fn pages_lost_on_two_disks_give_a_clear_error() {
    let c = Cluster::new();
    let every = [("PSLS_CKPT_PERMANENT_EVERY", "3")];
    c.crash(&NODES, "ckpt-begin:epoch=5:rank=1", &every);
    c.lose("vnode1");
    c.lose("vnode2");
    let spares = ["vnode0", "vnode4", "vnode5", "vnode3"];
    let out = c.mgs(&spares, None, &every);
    assert!(!out.success(), "{}", out.stdout);
    for needle in [
        "restarting from permanent checkpoint 3",
        "written pages have no copy left on this job's nodes",
        "both copies are missing",
        "run `psls-pfs verify .psls-ckpt.",
    ] {
        assert!(
            out.stderr.contains(needle),
            "expected {needle:?} in\n{}",
            out.stderr
        );
    }
}
