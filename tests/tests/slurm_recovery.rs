//! `psls-launch` under Slurm on the emulated cluster (`scripts/slurm-cluster.sh`): one node of
//! the allocation is lost for real (its slurmd and tasks killed, its roots wiped, Slurm marks
//! it down) and the spare node of the same allocation takes over. Kept apart from
//! `tests/tests/slurm.rs` because it takes a node down: `scripts/test.sh` runs it alone, after
//! the others, and this test brings the node back at the end.
//!
//! Needs `PSLS_TEST_SLURM=1` with the cluster up (`scripts/test.sh` does it).

use psls_tests::{sibling_binary, Scratch};
use std::path::PathBuf;
use std::process::{Command, Output};

fn cluster_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-cluster.sh")
}

/// Brings every node of the cluster back when dropped (the test kills one).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let out = Command::new(cluster_script()).args(["start", "4"]).output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("warning: could not bring the emulated cluster's nodes back");
        }
    }
}

/// `salloc -N4 --no-kill psls-launch -n 3 --nodes 3 --spares 1 OPTS -- mgs ...`.
fn launch(opts: &[&str], m: &Scratch, d: &Scratch) -> (Output, String) {
    let mgs = sibling_binary("mgs");
    let out = Command::new("salloc")
        .args(["-N4", "--no-kill", "--time=10"])
        .arg(sibling_binary("psls-launch"))
        .args([
            "-n",
            "3",
            "--nodes",
            "3",
            "--spares",
            "1",
            "--launcher",
            "srun",
        ])
        .arg("--run-dir")
        .arg(d.0.join("run"))
        .args(opts)
        .arg("--")
        .arg(mgs)
        .args(["--rows", "1024", "--vectors", "32", "--every", "4"])
        .env("PSLS_MEMORY_BASE", m.path())
        .env("PSLS_DISK_BASE", d.path())
        .env("PSLS_LOG", "warn")
        .output()
        .expect("run salloc");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

fn checksum(text: &str) -> String {
    text.lines()
        .rfind(|l| l.starts_with("mgs:") && l.contains("checksum") && l.contains("(ok)"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no good checksum in\n{text}"))
        .to_string()
}

#[test]
fn srun_node_lost_and_the_spare_of_the_allocation_takes_over() {
    if std::env::var("PSLS_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!(
            "not run: set PSLS_TEST_SLURM=1 with the emulated cluster up (scripts/test.sh does)"
        );
        return;
    }
    let (m, d) = (Scratch::shm("srun-rec-mem"), Scratch::new("srun-rec-disk"));
    let (out, clean) = launch(&[], &m, &d);
    assert!(out.status.success(), "{clean}");
    let want = checksum(&clean);

    let _restore = Restore;
    let kill = format!("{} kill-node", cluster_script().display());
    let (m, d) = (Scratch::shm("srun-rec-mem"), Scratch::new("srun-rec-disk"));
    let (out, text) = launch(
        &[
            "--probe-timeout",
            "20",
            "--inject",
            "lose-node:node=n2:epoch=4",
            "--lose-node-command",
            &kill,
        ],
        &m,
        &d,
    );
    assert!(out.status.success(), "{text}");
    for l in [
        "n2 taken down",
        "probe n2: does not answer",
        "failure classified: node loss: n2",
        "spare n4 replaces lost node n2",
        "relaunching job slurm-",
        "launch 1: resumed from memory checkpoint 3",
        "finished successfully after 1 restart",
    ] {
        assert!(text.contains(l), "expected {l:?} in\n{text}");
    }
    assert_eq!(checksum(&text), want, "{text}");
}
