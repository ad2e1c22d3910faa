//! The probe: what each node still holds after a failure, and what kind of failure that makes.
//!
//! `psls-launch probe` runs on the node (through the same `mpirun`/`srun` as the job) and prints
//! one machine-readable line. The launcher runs it on every live node at once, each with a
//! timeout: a node that does not answer in time is lost.

use crate::cli::ProbeCli;
use crate::mpi::Mpi;
use crate::roots::{self, RootState};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// What the probe of one node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub node: String,
    /// `None`: the node did not answer.
    pub roots: Option<RootState>,
    /// Why the node counts as not answering, for the messages.
    pub why: Option<String>,
}

fn word(b: bool) -> &'static str {
    if b {
        "intact"
    } else {
        "lost"
    }
}

fn present(b: bool) -> &'static str {
    if b {
        "intact"
    } else {
        "missing"
    }
}

impl Report {
    pub fn answers(&self) -> bool {
        self.roots.is_some()
    }

    /// The machine-readable line.
    pub fn line(&self) -> String {
        match &self.roots {
            None => format!("probe node={} answers=no", self.node),
            Some(r) => format!(
                "probe node={} answers=yes memory={} disk={} pfs={} ckpt-records={}",
                self.node,
                word(r.memory),
                word(r.disk),
                word(r.pfs),
                r.ckpt_records
            ),
        }
    }

    /// Parses the line that [`Report::line`] writes.
    pub fn parse(line: &str) -> Option<Report> {
        let rest = line.trim().strip_prefix("probe ")?;
        let mut node = None;
        let (mut answers, mut memory, mut disk, mut pfs, mut records) =
            (None, None, None, None, None);
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let flag = || match v {
                "intact" | "yes" => Some(true),
                "lost" | "no" => Some(false),
                _ => None,
            };
            match k {
                "node" => node = Some(v.to_string()),
                "answers" => answers = flag(),
                "memory" => memory = flag(),
                "disk" => disk = flag(),
                "pfs" => pfs = flag(),
                "ckpt-records" => records = v.parse().ok(),
                _ => {}
            }
        }
        let node = node?;
        let roots = if answers? {
            Some(RootState {
                memory: memory?,
                disk: disk?,
                pfs: pfs.unwrap_or(false),
                ckpt_records: records.unwrap_or(0),
            })
        } else {
            None
        };
        Some(Report {
            node,
            roots,
            why: None,
        })
    }

    /// One line for people; `started`: whether the job is known to have started there.
    pub fn describe(&self, started: bool) -> String {
        match &self.roots {
            Some(r) if !started && !r.memory && !r.disk => format!(
                "{}: answers; no root of this job (it never started there), PFS {}, {} \
                 checkpoint record{}",
                self.node,
                present(r.pfs),
                r.ckpt_records,
                if r.ckpt_records == 1 { "" } else { "s" }
            ),
            None => format!(
                "{}: does not answer ({})",
                self.node,
                self.why.as_deref().unwrap_or("marked dead")
            ),
            Some(r) => format!(
                "{}: answers; memory root {}, disk root {}, PFS {}, {} checkpoint record{}",
                self.node,
                present(r.memory),
                present(r.disk),
                present(r.pfs),
                r.ckpt_records,
                if r.ckpt_records == 1 { "" } else { "s" }
            ),
        }
    }
}

/// `psls-launch probe`: looks at this node's roots and prints the line.
pub fn probe_main(cli: ProbeCli) -> ExitCode {
    for (what, v) in [
        ("--node", &cli.node),
        ("--job-id", &cli.job_id),
        ("--ckpt-name", &cli.ckpt_name),
    ] {
        if !roots::valid_name(v) {
            eprintln!("psls-launch probe: error: {what} {v:?}: use A-Z a-z 0-9 . _ - (not starting with a dot)");
            return ExitCode::from(2);
        }
    }
    if let Some(dir) = &cli.run_dir {
        if roots::is_marked_dead(dir, &cli.node) {
            let r = Report {
                node: cli.node,
                roots: None,
                why: None,
            };
            println!("{}", r.line());
            return ExitCode::from(1);
        }
    }
    let uid = match roots::uid() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("psls-launch probe: error: {e}");
            return ExitCode::from(2);
        }
    };
    let state = roots::inspect(
        &roots::memory_base(),
        &roots::disk_base(),
        uid,
        &cli.node,
        &cli.job_id,
        &cli.ckpt_name,
    );
    let r = Report {
        node: cli.node,
        roots: Some(state),
        why: None,
    };
    println!("{}", r.line());
    ExitCode::SUCCESS
}

/// A child whose output is collected by threads, so a full pipe never blocks it.
struct Collected {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

fn collect(mut cmd: std::process::Command) -> std::io::Result<Collected> {
    crate::signals::die_with_parent(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut o = child.stdout.take();
    let mut e = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = o.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = e.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    Ok(Collected { child, out, err })
}

/// Runs `program args` on each of `nodes` at once, each within `timeout`; returns, per node,
/// its exit success and output, or why it gave none.
pub fn run_on_nodes(
    mpi: &Mpi,
    nodes: &[String],
    program: &Path,
    args: impl Fn(&str) -> Vec<String>,
    timeout: Duration,
) -> Vec<Result<(bool, String), String>> {
    let mut running: Vec<Result<Collected, String>> = nodes
        .iter()
        .map(|n| {
            let cmd = mpi.on_node(n, program, &args(n));
            let shown = format!("{:?}", cmd.get_program());
            collect(cmd).map_err(|e| format!("cannot start {shown}: {e}"))
        })
        .collect();
    let deadline = Instant::now() + timeout;
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; nodes.len()];
    loop {
        let mut waiting = false;
        for (i, r) in running.iter_mut().enumerate() {
            if let (Ok(c), None) = (r, status[i]) {
                match c.child.try_wait() {
                    Ok(Some(s)) => status[i] = Some(s),
                    Ok(None) => waiting = true,
                    Err(_) => waiting = true,
                }
            }
        }
        // A stop signal: the launcher is ending, the answers no longer matter.
        if !waiting || Instant::now() >= deadline || crate::signals::requested().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    running
        .into_iter()
        .zip(status)
        .map(|(r, s)| {
            let mut c = r?;
            if s.is_none() {
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
            let out = c.out.join().unwrap_or_default();
            let err = c.err.join().unwrap_or_default();
            match s {
                None => Err(format!("no answer within {} s", timeout.as_secs())),
                Some(s) => Ok((s.success(), out + &err)),
            }
        })
        .collect()
}

/// Runs `cmd` to its end within `timeout`; returns its exit success and output, or why it gave
/// none.
pub fn run_within(cmd: std::process::Command, timeout: Duration) -> Result<(bool, String), String> {
    let shown = format!("{:?}", cmd.get_program());
    let mut c = collect(cmd).map_err(|e| format!("cannot start {shown}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match c.child.try_wait() {
            Ok(Some(s)) => break Some(s),
            // A stop signal: the launcher is ending, the answer no longer matters.
            Ok(None) | Err(_)
                if Instant::now() >= deadline || crate::signals::requested().is_some() =>
            {
                break None
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    if status.is_none() {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    let out = c.out.join().unwrap_or_default() + &c.err.join().unwrap_or_default();
    match status {
        None => Err(format!("no answer within {} s", timeout.as_secs())),
        Some(s) => Ok((s.success(), out)),
    }
}

/// Why a probe that ran printed nothing usable (the MPI launcher itself failed to start it).
const NO_REPORT: &str = "the probe printed no report";

/// Probes each of `nodes` through the job's launcher. A node whose probe ran but printed no
/// report (the MPI launcher failed to start it, as Open MPI's `mpirun` now and then does on a
/// loaded host) is probed once more before it counts as not answering: one failed `mpirun`
/// must not cost a node. A node that did not answer in time is not probed again.
pub fn probe_nodes(
    mpi: &Mpi,
    nodes: &[String],
    exe: &Path,
    job_id: &str,
    ckpt_name: &str,
    run_dir: &Path,
    timeout: Duration,
) -> Vec<Report> {
    let mut reports = probe_once(mpi, nodes, exe, job_id, ckpt_name, run_dir, timeout);
    let again: Vec<usize> = (0..reports.len())
        .filter(|&i| {
            reports[i]
                .why
                .as_deref()
                .is_some_and(|w| w.starts_with(NO_REPORT))
        })
        .collect();
    if !again.is_empty() {
        std::thread::sleep(Duration::from_secs(1));
        let retry: Vec<String> = again.iter().map(|&i| nodes[i].clone()).collect();
        let second = probe_once(mpi, &retry, exe, job_id, ckpt_name, run_dir, timeout);
        for (&i, rep) in again.iter().zip(second) {
            reports[i] = rep;
        }
    }
    reports
}

fn probe_once(
    mpi: &Mpi,
    nodes: &[String],
    exe: &Path,
    job_id: &str,
    ckpt_name: &str,
    run_dir: &Path,
    timeout: Duration,
) -> Vec<Report> {
    let results = run_on_nodes(
        mpi,
        nodes,
        exe,
        |n| {
            vec![
                "probe".into(),
                "--node".into(),
                n.into(),
                "--job-id".into(),
                job_id.into(),
                "--ckpt-name".into(),
                ckpt_name.into(),
                "--run-dir".into(),
                run_dir.display().to_string(),
            ]
        },
        timeout,
    );
    nodes
        .iter()
        .zip(results)
        .map(|(node, r)| {
            let found = r.as_ref().ok().and_then(|(_, text)| {
                text.lines()
                    .filter_map(Report::parse)
                    .find(|rep| &rep.node == node)
            });
            match (found, r) {
                (Some(rep), _) if rep.answers() => rep,
                (Some(_), _) => Report {
                    node: node.clone(),
                    roots: None,
                    why: Some(format!(
                        "listed in {}",
                        run_dir.join("dead-nodes").display()
                    )),
                },
                (None, Err(why)) => Report {
                    node: node.clone(),
                    roots: None,
                    why: Some(why),
                },
                (None, Ok((_, text))) => Report {
                    node: node.clone(),
                    roots: None,
                    why: Some(format!(
                        "{NO_REPORT}{}",
                        text.lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .map(|l| format!(": {}", l.trim()))
                            .unwrap_or_default()
                    )),
                },
            }
        })
        .collect()
}

/// What kind of failure the probes show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Every node is intact: processes died, their nodes did not.
    ProcessCrash,
    /// These nodes lost their memory root.
    Reboot(Vec<String>),
    /// Every live node lost its memory root.
    PowerCut,
    /// These nodes do not answer; `wiped` lost their memory root as well.
    NodeLoss {
        lost: Vec<String>,
        wiped: Vec<String>,
    },
}

impl Class {
    /// Whether a node is damaged (anything but a process crash).
    pub fn node_anomaly(&self) -> bool {
        *self != Class::ProcessCrash
    }

    pub fn describe(&self) -> String {
        match self {
            Class::ProcessCrash => "process crash (no node damaged)".into(),
            Class::Reboot(n) => format!("reboot of {} (memory root lost)", n.join(", ")),
            Class::PowerCut => "power cut (every memory root lost)".into(),
            Class::NodeLoss { lost, wiped } => {
                let mut s = format!("node loss: {} (does not answer)", lost.join(", "));
                if !wiped.is_empty() {
                    s.push_str(&format!("; memory root also lost on {}", wiped.join(", ")));
                }
                s
            }
        }
    }
}

/// Classifies the failure from the probes of the live nodes. `started` names the nodes where
/// the job is known to have started (its rank files named them): a node where neither the
/// memory nor the disk root of this job exists and the job never started is not damaged, it
/// just never ran the job (a program that fails before PSLS starts). The PFS root and the
/// checkpoint set may be older than the job, so they prove nothing.
pub fn classify(reports: &[Report], started: &BTreeSet<String>) -> Class {
    let lost: Vec<String> = reports
        .iter()
        .filter(|r| !r.answers())
        .map(|r| r.node.clone())
        .collect();
    let wiped: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let s = r.roots.as_ref()?;
            let ran = started.contains(&r.node) || s.disk;
            (ran && !s.memory).then(|| r.node.clone())
        })
        .collect();
    if !lost.is_empty() {
        Class::NodeLoss { lost, wiped }
    } else if !wiped.is_empty() && wiped.len() == reports.len() {
        Class::PowerCut
    } else if !wiped.is_empty() {
        Class::Reboot(wiped)
    } else {
        Class::ProcessCrash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(node: &str, memory: bool, disk: bool) -> Report {
        Report {
            node: node.into(),
            roots: Some(RootState {
                memory,
                disk,
                pfs: disk,
                ckpt_records: 0,
            }),
            why: None,
        }
    }

    fn dead(node: &str) -> Report {
        Report {
            node: node.into(),
            roots: None,
            why: None,
        }
    }

    #[test]
    fn lines_round_trip() {
        let r = Report {
            node: "vnode2".into(),
            roots: Some(RootState {
                memory: true,
                disk: false,
                pfs: true,
                ckpt_records: 3,
            }),
            why: None,
        };
        assert_eq!(
            r.line(),
            "probe node=vnode2 answers=yes memory=intact disk=lost pfs=intact ckpt-records=3"
        );
        assert_eq!(Report::parse(&r.line()), Some(r));
        assert_eq!(Report::parse(&dead("vnode1").line()), Some(dead("vnode1")));
        assert_eq!(Report::parse("hello world"), None);
        assert_eq!(Report::parse("probe node=x answers=yes"), None);
    }

    #[test]
    fn classification() {
        let none = BTreeSet::new();
        let all: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let intact = [
            rep("a", true, true),
            rep("b", true, true),
            rep("c", true, true),
        ];
        assert_eq!(classify(&intact, &all), Class::ProcessCrash);
        assert!(!classify(&intact, &all).node_anomaly());
        let reboot = [
            rep("a", true, true),
            rep("b", false, true),
            rep("c", true, true),
        ];
        assert_eq!(classify(&reboot, &all), Class::Reboot(vec!["b".into()]));
        let cut = [
            rep("a", false, true),
            rep("b", false, true),
            rep("c", false, true),
        ];
        assert_eq!(classify(&cut, &all), Class::PowerCut);
        let loss = [rep("a", true, true), dead("b"), rep("c", false, true)];
        assert_eq!(
            classify(&loss, &all),
            Class::NodeLoss {
                lost: vec!["b".into()],
                wiped: vec!["c".into()]
            }
        );
        // Nothing anywhere and the job never started: not damage.
        let never = [rep("a", false, false), rep("b", false, false)];
        assert_eq!(classify(&never, &none), Class::ProcessCrash);
        // ... but where it did start, both roots gone is a lost memory.
        assert_eq!(classify(&never, &all), Class::PowerCut);
        // A disk root left by the job shows it started there.
        let one = [rep("a", false, true), rep("b", true, true)];
        assert_eq!(classify(&one, &none), Class::Reboot(vec!["a".into()]));
    }
}
