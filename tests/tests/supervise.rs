//! `psls-launch` bringing real jobs back: the failure scenarios of issue 6, each injected with
//! `--inject` into `mgs` or `heat` on 4 virtual nodes plus spares. Every scenario checks that
//! the launcher named the failure correctly and that the final output is bit-identical to a
//! fault-free run of the same program.

use psls_tests::{sibling_binary, Scratch};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A program of the examples with small arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum App {
    Mgs,
    Heat,
}

impl App {
    fn args(self) -> Vec<String> {
        let (name, args): (&str, &[&str]) = match self {
            App::Mgs => (
                "mgs",
                &["--rows", "1024", "--vectors", "48", "--every", "4"],
            ),
            App::Heat => (
                "heat",
                &["--size", "128", "--steps", "120", "--every", "10"],
            ),
        };
        std::iter::once(sibling_binary(name).display().to_string())
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    }

    /// The fault-free run's checksum, computed once per test binary.
    fn want(self) -> &'static str {
        static MGS: OnceLock<String> = OnceLock::new();
        static HEAT: OnceLock<String> = OnceLock::new();
        let cell = if self == App::Mgs { &MGS } else { &HEAT };
        cell.get_or_init(|| {
            let r = Run::new(self, &[], &[], &[]);
            assert!(r.out.status.success(), "fault-free {self:?}:\n{}", r.text);
            assert!(!r.text.contains("failure seen"), "{}", r.text);
            r.checksum()
        })
    }
}

/// One supervised job and what it printed.
struct Run {
    out: Output,
    text: String,
}

impl Run {
    fn new(app: App, opts: &[&str], injects: &[&str], env: &[(&str, &str)]) -> Run {
        let (m, d) = (Scratch::shm("sup-mem"), Scratch::new("sup-disk"));
        let run_dir = d.0.join("run");
        let mut cmd = Command::new(sibling_binary("psls-launch"));
        cmd.args(["-n", "4", "--virtual-nodes", "4", "--job-id", "sup"])
            .arg("--run-dir")
            .arg(&run_dir)
            .args(opts);
        for i in injects {
            cmd.arg("--inject").arg(i);
        }
        cmd.arg("--")
            .args(app.args())
            .env("PSLS_MEMORY_BASE", m.path())
            .env("PSLS_DISK_BASE", d.path())
            .env("PSLS_LOG", "warn")
            .env_remove("PSLS_CKPT_NAME")
            .env_remove("SLURM_JOB_ID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run psls-launch");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        Run { out, text }
    }

    fn checksum(&self) -> String {
        self.text
            .lines()
            .rfind(|l| l.contains("checksum"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no checksum in\n{}", self.text))
            .to_string()
    }

    /// The job succeeded, said each of `lines`, and ended with the fault-free result.
    fn recovered(&self, app: App, lines: &[&str]) {
        assert!(self.out.status.success(), "{}", self.text);
        for l in lines {
            assert!(self.text.contains(l), "expected {l:?} in\n{}", self.text);
        }
        assert_eq!(self.checksum(), app.want(), "{}", self.text);
    }
}

#[test]
fn a_rank_killed_mid_run() {
    let r = Run::new(App::Mgs, &[], &["kill-rank:rank=1:epoch=5"], &[]);
    r.recovered(
        App::Mgs,
        &[
            "failure classified: process crash",
            "restart 1 of 3",
            "launch 1: resumed from memory checkpoint 4",
            "finished successfully after 1 restart",
        ],
    );
}

#[test]
fn one_node_rebooted() {
    let r = Run::new(App::Heat, &[], &["reboot:node=vnode1:epoch=5"], &[]);
    r.recovered(
        App::Heat,
        &[
            "failure classified: reboot of vnode1",
            "launch 1: resumed from memory checkpoint 4",
        ],
    );
}

#[test]
fn one_node_lost_and_the_spare_takes_its_place() {
    let r = Run::new(
        App::Mgs,
        &["--spares", "1"],
        &["lose-node:node=vnode2:epoch=6"],
        &[],
    );
    r.recovered(
        App::Mgs,
        &[
            "failure classified: node loss: vnode2",
            "spare vnode4 replaces lost node vnode2",
            "relaunching job sup on vnode0 vnode1 vnode4 vnode3",
            "launch 1: resumed from memory checkpoint 5",
        ],
    );
}

/// A node is lost, the spare takes over; later the node that kept the other copy of the
/// first node's pages goes too, and the second spare takes over: only the copies made again
/// after the first loss can bring the job back.
#[test]
fn a_second_node_lost_later_in_the_same_job() {
    let r = Run::new(
        App::Heat,
        &["--spares", "2"],
        &[
            "lose-node:node=vnode1:epoch=4",
            "lose-node:node=vnode2:epoch=9:launch=1",
        ],
        &[],
    );
    r.recovered(
        App::Heat,
        &[
            "spare vnode4 replaces lost node vnode1",
            "spare vnode5 replaces lost node vnode2",
            "relaunching job sup on vnode0 vnode4 vnode5 vnode3",
            "finished successfully after 2 restarts",
        ],
    );
}

#[test]
fn two_buddy_nodes_rebooted_at_once_fall_back_to_the_permanent_checkpoint() {
    let r = Run::new(
        App::Mgs,
        &[],
        &["reboot:node=vnode1:epoch=5", "reboot:node=vnode2:epoch=5"],
        &[("PSLS_CKPT_PERMANENT_EVERY", "3")],
    );
    r.recovered(
        App::Mgs,
        &[
            "failure classified: reboot of vnode1, vnode2",
            "launch 1: resumed from permanent checkpoint 3",
        ],
    );
}

#[test]
fn a_power_cut() {
    let r = Run::new(
        App::Heat,
        &[],
        &["power-cut:epoch=5"],
        &[("PSLS_CKPT_PERMANENT_EVERY", "3")],
    );
    r.recovered(
        App::Heat,
        &[
            "failure classified: power cut",
            "launch 1: resumed from permanent checkpoint 3",
        ],
    );
}

#[test]
fn a_kill_during_recovery() {
    let r = Run::new(
        App::Mgs,
        &["--spares", "1"],
        &["lose-node:node=vnode3:epoch=5", "kill-restore:rank=0"],
        &[],
    );
    r.recovered(
        App::Mgs,
        &[
            "spare vnode4 replaces lost node vnode3",
            "restart 2 of 3",
            "launch 2: resumed from memory checkpoint 4",
        ],
    );
}

#[test]
fn three_successive_crashes() {
    let r = Run::new(
        App::Heat,
        &[],
        &[
            "kill-rank:rank=1:epoch=3",
            "kill-rank:rank=2:epoch=6:launch=1",
            "kill-rank:rank=3:epoch=9:launch=2",
        ],
        &[],
    );
    r.recovered(
        App::Heat,
        &[
            "restart 3 of 3",
            "launch 3: resumed from memory checkpoint 8",
            "finished successfully after 3 restarts",
        ],
    );
}

#[test]
fn max_restarts_exhausted_gives_a_report_and_a_non_zero_exit() {
    let r = Run::new(
        App::Mgs,
        &["--max-restarts", "1"],
        &[
            "kill-rank:rank=1:epoch=3",
            "kill-rank:rank=1:epoch=6:launch=1",
        ],
        &[],
    );
    assert_eq!(r.out.status.code(), Some(3), "{}", r.text);
    for l in ["giving up on job sup", "report:"] {
        assert!(r.text.contains(l), "expected {l:?} in\n{}", r.text);
    }
}
