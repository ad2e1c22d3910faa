//! The supervision loop: launch, watch, and after a failure probe, classify, replace and
//! relaunch (see the crate's documentation for the whole loop).

use crate::cli::{LauncherKind, MpiKind};
use crate::inject::{Inject, Kind, When};
use crate::mpi::{JobSpec, Mpi};
use crate::nodes::{map_text, NodeKind, Nodes};
use crate::probe::{self, Class, Report};
use crate::procs::{self, Owner, RankProc};
use crate::roots;
use crate::signals;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit status when the launcher gives up (restarts exhausted, or no spare left).
pub const GAVE_UP: u8 = 3;

/// Exit status when the job succeeded but some `--inject` fault never fired: the fault was not
/// tested, and a test that counted on it must not pass.
pub const NOT_FIRED: u8 = 4;

/// Prints one line of the launcher's to standard error, in one write, so that the job's own
/// output (on the same pipe) never cuts it in two.
macro_rules! say {
    ($($t:tt)*) => {{
        let line = format!("psls-launch: {}\n", format_args!($($t)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

/// A job to run and keep alive.
pub struct Job {
    pub ranks: usize,
    pub nodes: Nodes,
    pub mpi: Mpi,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub mpi_args: Vec<String>,
    pub job_id: String,
    /// The checkpoint set, the same for every launch.
    pub ckpt_name: String,
    /// Whether the launcher sets `PSLS_CKPT_NAME` (the user's environment did not).
    pub set_ckpt_name: bool,
    /// Absolute.
    pub run_dir: PathBuf,
    pub injects: Vec<Inject>,
    pub max_restarts: u32,
    pub probe_timeout: Duration,
    /// `None`: wait for a job forever.
    pub hang_timeout: Option<Duration>,
    /// Run with a lost node's name appended, to take it down for real.
    pub lose_node_command: Option<String>,
    /// This executable, run on the nodes as `probe` and `wipe`.
    pub exe: PathBuf,
    pub local_host: String,
    /// `RUN_DIR/.lock`, locked (`flock`) for as long as the launcher runs: no other launcher
    /// may use the run directory meanwhile. `None` where the file system cannot lock.
    pub lock: Option<std::fs::File>,
}

/// What one launch did.
struct Launched {
    status: ExitStatus,
    elapsed: Duration,
    /// Why the launch counts as killed whatever its exit code says, if it does.
    cause: Option<&'static str>,
    /// The faults at a time that fired (indices into `Job::injects`).
    fired: Vec<usize>,
    /// Whether any rank announced itself (`ranks/rank.R`) in this launch.
    ranks_started: bool,
}

/// What the supervision has seen so far.
struct History {
    start: Instant,
    /// The injected faults that fired (indices into `Job::injects`).
    fired: BTreeSet<usize>,
    /// Why each fault of a launch that ran did not fire (indices into `Job::injects`).
    not_fired: std::collections::BTreeMap<usize, String>,
    restarts: u32,
    /// Nodes the job started on (from the rank files and probes).
    started: BTreeSet<String>,
    /// One entry per failure.
    failures: Vec<String>,
    /// The latest probe of each node.
    reports: Vec<Report>,
}

impl Job {
    fn node_map_path(&self, launch: u32) -> PathBuf {
        self.run_dir.join(format!("nodemap.{launch}"))
    }

    fn slurm_hostfile(&self, launch: u32) -> PathBuf {
        self.run_dir.join(format!("hostfile.{launch}"))
    }

    fn launch_injects(&self, launch: u32) -> impl Iterator<Item = (usize, &Inject)> {
        self.injects
            .iter()
            .enumerate()
            .filter(move |(_, i)| i.launch == launch)
    }

    /// The environment of launch `launch`, and the faults at a time it carries.
    fn launch_env(&self, launch: u32, map: &[String]) -> (Vec<(String, String)>, Vec<usize>) {
        let mut env: Vec<(String, String)> = vec![
            ("PSLS_LAUNCHED".into(), "1".into()),
            ("PSLS_JOB_ID".into(), self.job_id.clone()),
            ("PSLS_RUN_DIR".into(), self.run_dir.display().to_string()),
            (
                "PSLS_NODE_MAP".into(),
                self.node_map_path(launch).display().to_string(),
            ),
            ("PSLS_RESTART".into(), launch.to_string()),
            ("PSLS_SPARES".into(), self.nodes.spares.join(",")),
        ];
        if self.set_ckpt_name {
            env.push(("PSLS_CKPT_NAME".into(), self.ckpt_name.clone()));
        }
        let mut faults: Vec<String> = std::env::var("PSLS_FAULT")
            .ok()
            .filter(|f| !f.is_empty())
            .into_iter()
            .collect();
        let mut timed = Vec::new();
        for (i, inj) in self.launch_injects(launch) {
            match inj.fault_spec(map) {
                Ok(Some(f)) => faults.push(f),
                Ok(None) => timed.push(i),
                Err(e) => say!("{e}"),
            }
        }
        if self
            .launch_injects(launch)
            .any(|(_, i)| !matches!(i.when, When::At(_)))
        {
            env.push(("PSLS_FAULT".into(), faults.join(",")));
        }
        (env, timed)
    }

    /// The command of launch `launch` with node map `map`.
    fn command(&self, launch: u32, map: &[String], env: &[(String, String)]) -> Command {
        self.mpi.job(&JobSpec {
            ranks: self.ranks,
            nodes: &self.nodes,
            map,
            slurm_hostfile: &self.slurm_hostfile(launch),
            mpi_args: &self.mpi_args,
            program: &self.program,
            args: &self.args,
            env,
        })
    }

    /// `--dry-run`: what the first launch would write and run.
    pub fn dry_run(&self) {
        let map = self.nodes.node_map(self.ranks);
        let (env, _) = self.launch_env(0, &map);
        println!(
            "# node map (a real run would write it to {} and pass it as PSLS_NODE_MAP; a dry \
             run writes nothing)",
            self.node_map_path(0).display()
        );
        print!("{}", map_text(&map, 0));
        if !self.nodes.spares.is_empty() {
            println!("# spares: {}", self.nodes.spares.join(" "));
        }
        for (k, v) in &env {
            println!("# env {k}={v}");
        }
        for inj in &self.injects {
            let how = match inj.when {
                When::At(at) => {
                    format!("psls-launch kills its ranks {at} s after the launch starts")
                }
                _ => "through PSLS_FAULT".to_string(),
            };
            println!("# inject {}: in launch {}, {how}", inj.spec, inj.launch);
        }
        println!("{:?}", self.command(0, &map, &env));
    }

    /// Runs the job until it succeeds, fails on its own, or the launcher gives up.
    pub fn supervise(mut self) -> ExitCode {
        let mut h = History {
            start: Instant::now(),
            fired: BTreeSet::new(),
            not_fired: Default::default(),
            restarts: 0,
            started: BTreeSet::new(),
            failures: Vec::new(),
            reports: Vec::new(),
        };
        // dead-nodes records this supervision's lost virtual nodes; an old one would make the
        // probe report a node of this run as lost.
        let _ = std::fs::remove_file(self.run_dir.join("dead-nodes"));
        let mut launch = 0u32;
        loop {
            if let Some(sig) = signals::check() {
                return self.stopped(&h, sig);
            }
            let map = self.nodes.node_map(self.ranks);
            let r = match self.launch(launch, &map, &mut h) {
                Ok(r) => r,
                Err(e) => {
                    say!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            self.note_fired(launch, &map, &r, &mut h);
            if r.status.success() {
                let mut line = format!(
                    "job {} finished successfully after {} restart{} in {:.1} s",
                    self.job_id,
                    h.restarts,
                    if h.restarts == 1 { "" } else { "s" },
                    h.start.elapsed().as_secs_f64()
                );
                if !h.failures.is_empty() {
                    line.push_str(&format!(" (recovered from: {})", h.failures.join("; ")));
                }
                say!("{line}");
                return self.check_fired(launch, &h);
            }
            if let Some(sig) = signals::check() {
                return self.stopped(&h, sig);
            }
            let code = r.status.code();
            let killed =
                r.cause.is_some() || r.status.signal().is_some() || code.is_some_and(|c| c > 128);
            say!(
                "failure seen: launch {launch} of job {} {} after {:.1} s",
                self.job_id,
                describe_status(r.status, r.cause),
                r.elapsed.as_secs_f64()
            );
            if died_of_sigpipe(r.status) {
                if let Some(closed) = closed_output() {
                    say!(
                        "job {} died of SIGPIPE: psls-launch's {closed} is closed (whatever read \
                         it ended, as `| head` does), so the job could not write its output; not \
                         restarted: a relaunch would die the same way",
                        self.job_id
                    );
                    return ExitCode::from(128 + libc::SIGPIPE as u8);
                }
            }
            if launch == 0 && !r.ranks_started && r.cause.is_none() && !self.mpi_args.is_empty() {
                if let Some(said) = self.rejected_command_line(&map) {
                    let (env, _) = self.launch_env(0, &map);
                    say!(
                        "error: {launcher} rejected the command line: it fails the same way \
                         with the program replaced by `psls-launch --version`, so check the \
                         --mpi-arg options ({}); the command was: {:?}{said}",
                        self.mpi_args.join(" "),
                        self.command(0, &map, &env),
                        launcher = self.launcher_name()
                    );
                    return ExitCode::from(2);
                }
            }
            self.apply_effects(launch, &map, &r.fired);
            let reports = probe::probe_nodes(
                &self.mpi,
                &self.nodes.live,
                &self.exe,
                &self.job_id,
                &self.ckpt_name,
                &self.run_dir,
                self.probe_timeout,
            );
            for rep in &reports {
                if rep.roots.as_ref().is_some_and(|s| s.memory || s.disk) {
                    h.started.insert(rep.node.clone());
                }
                say!("probe {}", rep.describe(h.started.contains(&rep.node)));
            }
            if let Some(sig) = signals::check() {
                return self.stopped(&h, sig);
            }
            let class = probe::classify(&reports, &h.started);
            h.reports
                .retain(|old| !reports.iter().any(|n| n.node == old.node));
            h.reports.extend(reports);
            if !killed && !class.node_anomaly() {
                let c = code.unwrap_or(1).clamp(1, 255);
                say!(
                    "job {} failed with exit code {c}: an error of the application (every node \
                     is intact), not restarted",
                    self.job_id
                );
                return ExitCode::from(c as u8);
            }
            say!("failure classified: {}", class.describe());
            h.failures
                .push(format!("launch {launch}: {}", short_class(&class)));
            if h.restarts >= self.max_restarts {
                if let Class::NodeLoss { lost, .. } = &class {
                    self.record_lost(lost);
                }
                return self.give_up(
                    &h,
                    &format!(
                        "--max-restarts {} reached ({} restart{} done)",
                        self.max_restarts,
                        h.restarts,
                        if h.restarts == 1 { "" } else { "s" }
                    ),
                );
            }
            if let Class::NodeLoss { lost, .. } = &class {
                if lost.len() > self.nodes.spares.len() {
                    let reason = format!(
                        "{} lost and {} left to replace {}",
                        lost.join(", "),
                        match self.nodes.spares.len() {
                            0 => "no spare".to_string(),
                            1 => "only 1 spare".to_string(),
                            k => format!("only {k} spares"),
                        },
                        if lost.len() == 1 { "it" } else { "them" }
                    );
                    self.record_lost(lost);
                    return self.give_up(&h, &reason);
                }
                for n in lost {
                    if let Some(spare) = self.nodes.replace(n) {
                        say!("spare {spare} replaces lost node {n}");
                    }
                }
            }
            h.restarts += 1;
            launch += 1;
            say!(
                "restart {} of {}: relaunching job {} on {}",
                h.restarts,
                self.max_restarts,
                self.job_id,
                self.nodes.live.join(" ")
            );
        }
    }

    /// Records which of launch `launch`'s faults fired, and why the others did not. A fault
    /// at a time fired when the launcher killed its ranks. A fault at an epoch is the
    /// runtime's, which kills its rank when it fires: in a launch that succeeded it did not
    /// fire; in one that failed it counts as fired (the runtime leaves no other trace).
    fn note_fired(&self, launch: u32, map: &[String], r: &Launched, h: &mut History) {
        for (i, inj) in self.launch_injects(launch) {
            let why = match inj.when {
                When::At(at) => {
                    if r.fired.contains(&i) {
                        None
                    } else if let Err(e) = inj.ranks_to_kill(map) {
                        Some(format!("it hits no rank of launch {launch} ({e})"))
                    } else if r.elapsed.as_secs_f64() < at {
                        Some(format!(
                            "launch {launch} ended {:.1} s after it started, before at={at}",
                            r.elapsed.as_secs_f64()
                        ))
                    } else {
                        Some(format!(
                            "its ranks had not all started (ranks/rank.R files) when launch \
                             {launch} ended"
                        ))
                    }
                }
                _ => match inj.fault_spec(map) {
                    Err(e) => Some(format!("it hits no rank of launch {launch} ({e})")),
                    Ok(_) if !r.status.success() => None,
                    Ok(f) => {
                        let f = f.unwrap_or_default();
                        Some(match inj.when {
                            When::Epoch(e) if inj.kind == Kind::KillRestore => format!(
                                "launch {launch} ended without restoring checkpoint {e} \
                                 (PSLS_FAULT {f})"
                            ),
                            When::Epoch(e) => format!(
                                "the job ended before epoch {e}: launch {launch} finished \
                                 without its rank beginning checkpoint {e} (PSLS_FAULT {f}); \
                                 does the program take that many checkpoints?"
                            ),
                            _ => format!(
                                "launch {launch} ended without restoring a checkpoint \
                                 (PSLS_FAULT {f})"
                            ),
                        })
                    }
                },
            };
            match why {
                None => {
                    h.fired.insert(i);
                }
                Some(w) => {
                    h.not_fired.insert(i, w);
                }
            }
        }
    }

    /// After the job succeeded in launch `last`: success only if every injected fault fired.
    /// One that did not was never tested, and a test run must not pass as if it had been.
    fn check_fired(&self, last: u32, h: &History) -> ExitCode {
        let mut missed = 0;
        for (i, inj) in self.injects.iter().enumerate() {
            if h.fired.contains(&i) {
                continue;
            }
            let why = h.not_fired.get(&i).cloned().unwrap_or_else(|| {
                format!(
                    "launch {} never happened: the job succeeded in launch {last}",
                    inj.launch
                )
            });
            say!("--inject {} never fired: {why}", inj.spec);
            missed += 1;
        }
        if missed == 0 {
            return ExitCode::SUCCESS;
        }
        say!(
            "job {} succeeded, but {missed} of the {} injected fault{} never fired, so {} not \
             tested: exit status {NOT_FIRED}",
            self.job_id,
            self.injects.len(),
            if self.injects.len() == 1 { "" } else { "s" },
            if missed == 1 { "it was" } else { "they were" }
        );
        ExitCode::from(NOT_FIRED)
    }

    fn launcher_name(&self) -> &'static str {
        if self.mpi.launcher == LauncherKind::Srun {
            "srun"
        } else {
            "mpirun"
        }
    }

    /// After a first launch that failed before any rank started, with --mpi-arg options: runs
    /// the same command line with `psls-launch --version` as the program (twice, as `mpirun`
    /// now and then fails to start on a loaded host). When that fails too, the MPI launcher
    /// rejects the command line itself, not the program: returns what it said (a few lines,
    /// for the report). `None`: it runs, so the failure is the program's.
    fn rejected_command_line(&self, map: &[String]) -> Option<String> {
        let (env, _) = self.launch_env(0, map);
        let args = ["--version".to_string()];
        let mut said = String::new();
        for _ in 0..2 {
            let cmd = self.mpi.job(&JobSpec {
                ranks: self.ranks,
                nodes: &self.nodes,
                map,
                slurm_hostfile: &self.slurm_hostfile(0),
                mpi_args: &self.mpi_args,
                program: &self.exe,
                args: &args,
                env: &env,
            });
            match probe::run_within(cmd, self.probe_timeout) {
                Ok((true, _)) => return None,
                Ok((false, out)) => said = out,
                // It hangs or does not start: no verdict on the command line.
                Err(_) => return None,
            }
        }
        let lines: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '-'))
            .take(4)
            .collect();
        Some(if lines.is_empty() {
            String::new()
        } else {
            format!("; it said: {}", lines.join(" / "))
        })
    }

    /// Records `lost` as lost without replacing them (for the final report).
    fn record_lost(&mut self, lost: &[String]) {
        for n in lost {
            if !self.nodes.lost.contains(n) {
                self.nodes.lost.push(n.clone());
            }
            self.nodes.live.retain(|x| x != n);
        }
    }

    /// Writes the launch's files, runs it and watches it until every process is gone.
    fn launch(&self, launch: u32, map: &[String], h: &mut History) -> Result<Launched, String> {
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        write(&self.node_map_path(launch), &map_text(map, launch))?;
        if self.nodes.kind == NodeKind::Slurm {
            write(&self.slurm_hostfile(launch), &(map.join("\n") + "\n"))?;
        }
        let resumed = self.run_dir.join("resumed");
        match std::fs::remove_file(&resumed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {}: {e}", resumed.display()))
            }
            _ => {}
        }
        procs::clear_rank_files(&self.run_dir)?;
        let (env, timed) = self.launch_env(launch, map);
        let mut cmd = self.command(launch, map, &env);
        let injected: Vec<&str> = self
            .launch_injects(launch)
            .map(|(_, i)| i.spec.as_str())
            .collect();
        say!(
            "launch {launch}: {} ranks on {} (node map {}){}",
            self.ranks,
            self.nodes.live.join(" "),
            self.node_map_path(launch).display(),
            if injected.is_empty() {
                String::new()
            } else {
                format!(", injecting {}", injected.join(" "))
            }
        );
        let mut r = self.watch(launch, map, &mut cmd, &timed)?;
        for p in procs::read_rank_files(&self.run_dir) {
            r.ranks_started = true;
            if !p.node.is_empty() {
                h.started.insert(p.node);
            }
        }
        Ok(r)
    }

    fn is_local(&self, p: &RankProc) -> bool {
        matches!(self.nodes.kind, NodeKind::Virtual | NodeKind::Local) || p.host == self.local_host
    }

    /// Prints where the job resumed from, once `RUN_DIR/resumed` holds a whole line (a file
    /// still being written, even empty, is not ready yet).
    fn report_resumed(&self, launch: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(self.run_dir.join("resumed")) else {
            return false;
        };
        if !text.ends_with('\n') {
            return false;
        }
        let text = text.trim();
        let mut w = text.split_whitespace();
        match (w.next(), w.next()) {
            (Some("fresh"), _) => {
                say!("launch {launch}: started fresh (no checkpoint to resume from)")
            }
            (Some(kind @ ("memory" | "permanent")), Some(e)) => {
                say!("launch {launch}: resumed from {kind} checkpoint {e}")
            }
            _ => say!("launch {launch}: resumed: {text}"),
        }
        true
    }

    /// Runs the launch's command until it exits, firing the faults at a time, and makes sure
    /// that its processes on this host are gone.
    fn watch(
        &self,
        launch: u32,
        map: &[String],
        cmd: &mut Command,
        timed: &[usize],
    ) -> Result<Launched, String> {
        // MPICH reports a rank killed by a signal as an exit code equal to the signal number,
        // and says so only in its output: read it on the way through.
        let scan = self.mpi.launcher == LauncherKind::Mpirun && self.mpi.mpi == MpiKind::Mpich;
        let signal_text = Arc::new(AtomicBool::new(false));
        if scan {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        signals::die_with_parent(cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        let mut forwarders = Vec::new();
        if scan {
            if let Some(o) = child.stdout.take() {
                forwarders.push(forward(o, std::io::stdout(), signal_text.clone()));
            }
            if let Some(e) = child.stderr.take() {
                forwarders.push(forward(e, std::io::stderr(), signal_text.clone()));
            }
        }
        let t0 = Instant::now();
        let mut pending: Vec<usize> = timed.to_vec();
        let mut waiting_said: BTreeSet<usize> = BTreeSet::new();
        let mut fired = Vec::new();
        let mut resumed = false;
        let mut our_kill = false;
        let mut ended_hung = false;
        let mut stopped = false;
        let mut last_check = t0;
        let mut dead_since: Option<(Instant, String)> = None;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => {
                    say!("cannot watch the job ({e}); waiting for it");
                    break child
                        .wait()
                        .map_err(|e| format!("cannot wait for the job: {e}"))?;
                }
            }
            if signals::check().is_some() && !stopped {
                stop_child(&mut child);
                stopped = true;
                continue;
            }
            if !resumed {
                resumed = self.report_resumed(launch);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let mut still = Vec::new();
            for i in pending {
                let inj = &self.injects[i];
                let When::At(at) = inj.when else { continue };
                if elapsed < at {
                    still.push(i);
                    continue;
                }
                match self.fire(inj, launch, map, t0.elapsed().as_secs_f64()) {
                    Ok(true) => {
                        fired.push(i);
                        our_kill = true;
                    }
                    Ok(false) => {
                        if waiting_said.insert(i) {
                            say!(
                                "inject {}: waiting for its ranks to start (ranks/rank.R files)",
                                inj.spec
                            );
                        }
                        still.push(i);
                    }
                    Err(e) => say!("inject {}: {e}", inj.spec),
                }
            }
            pending = still;
            if let Some(limit) = self.hang_timeout {
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    if dead_since.is_none() {
                        dead_since = procs::read_rank_files(&self.run_dir)
                            .into_iter()
                            .find(|p| self.is_local(p) && !procs::is_alive(p.pid))
                            .map(|p| (Instant::now(), format!("rank {} (pid {})", p.rank, p.pid)));
                    }
                    if let Some((since, who)) = &dead_since {
                        if since.elapsed() >= limit {
                            say!(
                                "{who} ended at least {} s ago but the job is still running: \
                                 ending it (--hang-timeout)",
                                limit.as_secs()
                            );
                            end_child(&mut child);
                            ended_hung = true;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = t0.elapsed();
        for i in pending {
            say!(
                "inject {}: did not fire: launch {launch} ended before it",
                self.injects[i].spec
            );
        }
        self.ensure_gone(launch, Duration::from_secs(if stopped { 3 } else { 10 }));
        let deadline = Instant::now() + Duration::from_secs(2);
        while forwarders.iter().any(|f| !f.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !resumed {
            self.report_resumed(launch);
        }
        Ok(Launched {
            status,
            elapsed,
            cause: if stopped {
                Some("the launcher stopped it on a signal")
            } else if ended_hung {
                Some("the launcher ended it: a rank had died and the job hung")
            } else if our_kill {
                Some("the launcher killed a rank")
            } else if signal_text.load(Ordering::Relaxed) {
                Some("MPICH reports a rank killed by a signal")
            } else {
                None
            },
            fired,
            ranks_started: false,
        })
    }

    /// Fires a fault at a time: kills its ranks once their rank files are there. `Ok(false)`:
    /// not yet.
    fn fire(
        &self,
        inj: &Inject,
        launch: u32,
        map: &[String],
        elapsed: f64,
    ) -> Result<bool, String> {
        let ranks = inj.ranks_to_kill(map)?;
        let procs = procs::read_rank_files(&self.run_dir);
        let targets: Vec<&RankProc> = ranks
            .iter()
            .filter_map(|r| procs.iter().find(|p| p.rank == *r))
            .collect();
        if targets.len() < ranks.len() {
            return Ok(false);
        }
        // Check every target before the first kill: once one rank dies, MPI ends the others.
        let owners: Vec<Owner> = targets
            .iter()
            .map(|p| {
                if self.is_local(p) {
                    procs::owner(p.pid, &self.job_id, launch)
                } else {
                    Owner::Ours
                }
            })
            .collect();
        let at = |p: &RankProc| {
            format!(
                "rank {} (pid {} on {})",
                p.rank,
                p.pid,
                if p.node.is_empty() { &p.host } else { &p.node }
            )
        };
        for (p, owner) in targets.into_iter().zip(owners) {
            match owner {
                Owner::Gone => say!("inject {}: {} had already ended", inj.spec, at(p)),
                Owner::Other => say!(
                    "inject {}: pid {} of rank {} is not a process of launch {launch} of this \
                     job; not killed",
                    inj.spec,
                    p.pid,
                    p.rank
                ),
                Owner::Ours => match self.kill_rank(p) {
                    Ok(()) => say!(
                        "inject {}: killed {} with SIGKILL at {elapsed:.1} s",
                        inj.spec,
                        at(p)
                    ),
                    Err(e) => say!("inject {}: {e}", inj.spec),
                },
            }
        }
        Ok(true)
    }

    /// Sends SIGKILL to a rank checked to be this launch's: here, or on its node.
    fn kill_rank(&self, p: &RankProc) -> Result<(), String> {
        if self.is_local(p) {
            if procs::signal(p.pid, "KILL") || !procs::is_alive(p.pid) {
                return Ok(());
            }
            return Err(format!("cannot kill pid {} of rank {}", p.pid, p.rank));
        }
        let node = if p.node.is_empty() { &p.host } else { &p.node };
        let r = probe::run_on_nodes(
            &self.mpi,
            std::slice::from_ref(node),
            Path::new("kill"),
            |_| vec!["-KILL".into(), p.pid.to_string()],
            self.probe_timeout,
        );
        match r.into_iter().next() {
            Some(Ok((true, _))) => Ok(()),
            Some(Ok((false, out))) => Err(format!(
                "kill -KILL {} on {node} failed: {}",
                p.pid,
                out.trim()
            )),
            Some(Err(e)) => Err(format!("kill -KILL {} on {node}: {e}", p.pid)),
            None => Err(format!("kill -KILL {} on {node}: not run", p.pid)),
        }
    }

    /// After the job's command exited: waits for its processes on this host to end, and kills
    /// those that do not within `grace`.
    fn ensure_gone(&self, launch: u32, grace: Duration) {
        let ours = || -> Vec<RankProc> {
            procs::read_rank_files(&self.run_dir)
                .into_iter()
                .filter(|p| {
                    self.is_local(p) && procs::owner(p.pid, &self.job_id, launch) == Owner::Ours
                })
                .collect()
        };
        let deadline = Instant::now() + grace;
        while !ours().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = ours();
        if left.is_empty() {
            return;
        }
        for p in &left {
            say!(
                "rank {} (pid {}) outlived the job's launcher: killing it",
                p.rank,
                p.pid
            );
            procs::signal(p.pid, "KILL");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ours().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Applies the node effects of the launch's faults, now that its processes are gone: the
    /// faults at an epoch when the launch failed, the faults at a time that fired.
    fn apply_effects(&self, launch: u32, map: &[String], fired: &[usize]) {
        for (i, inj) in self.launch_injects(launch) {
            if !inj.kind.hits_node() || (matches!(inj.when, When::At(_)) && !fired.contains(&i)) {
                continue;
            }
            let (targets, disk) = match inj.kind {
                Kind::PowerCut => (self.nodes.live.clone(), false),
                kind => match inj.node(map) {
                    Ok(n) => (vec![n], kind == Kind::LoseNode),
                    Err(e) => {
                        say!("{e}");
                        continue;
                    }
                },
            };
            for node in &targets {
                match self.wipe(node, disk) {
                    Ok(n) => say!(
                        "inject {}: {} of {node}: removed its {} roots ({n} director{})",
                        inj.spec,
                        inj.kind.name(),
                        if disk { "memory and disk" } else { "memory" },
                        if n == 1 { "y" } else { "ies" }
                    ),
                    Err(e) => say!("inject {}: cannot wipe {node}: {e}", inj.spec),
                }
                if inj.kind == Kind::LoseNode {
                    match roots::mark_dead(&self.run_dir, node) {
                        Ok(()) => say!(
                            "inject {}: {node} is marked dead in {}",
                            inj.spec,
                            self.run_dir.join("dead-nodes").display()
                        ),
                        Err(e) => say!("inject {}: {e}", inj.spec),
                    }
                    if let Some(cmd) = &self.lose_node_command {
                        self.take_down(&inj.spec, cmd, node);
                    }
                }
            }
        }
    }

    /// Runs the `--lose-node-command` for `node`.
    fn take_down(&self, spec: &str, cmd: &str, node: &str) {
        let mut words = cmd.split_whitespace();
        let Some(program) = words.next() else {
            return;
        };
        match Command::new(program).args(words).arg(node).output() {
            Ok(o) if o.status.success() => {
                say!("inject {spec}: {node} taken down ({cmd} {node})")
            }
            Ok(o) => say!(
                "inject {spec}: `{cmd} {node}` failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => say!("inject {spec}: cannot run `{cmd} {node}`: {e}"),
        }
    }

    /// Wipes `node`'s memory roots (and disk roots): here for virtual nodes, on the node
    /// otherwise. Returns the number of directories removed.
    fn wipe(&self, node: &str, disk: bool) -> Result<usize, String> {
        if matches!(self.nodes.kind, NodeKind::Virtual | NodeKind::Local) {
            let uid = roots::uid()?;
            let mut n = roots::wipe_node(&roots::memory_base(), uid, node)?.len();
            if disk {
                n += roots::wipe_node(&roots::disk_base(), uid, node)?.len();
            }
            return Ok(n);
        }
        let r = probe::run_on_nodes(
            &self.mpi,
            &[node.to_string()],
            &self.exe,
            |n| {
                let mut a = vec!["wipe".to_string(), "--node".into(), n.into()];
                if disk {
                    a.push("--disk".into());
                }
                a
            },
            self.probe_timeout,
        );
        match r.into_iter().next() {
            Some(Ok((true, out))) => Ok(out
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("wipe ")?
                        .split("removed=")
                        .nth(1)?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)),
            Some(Ok((false, out))) => Err(out.trim().to_string()),
            Some(Err(e)) => Err(e),
            None => Err("not run".into()),
        }
    }

    /// Ends the supervision after a stop signal (the job's processes are gone): exit status
    /// 128 + the signal, as a shell reports a process killed by it.
    fn stopped(&self, h: &History, sig: i32) -> ExitCode {
        say!(
            "job {} stopped by {} after {} restart{} in {:.1} s, not relaunched; run again with \
             --job-id {} to resume from its checkpoints",
            self.job_id,
            signals::name(sig),
            h.restarts,
            if h.restarts == 1 { "" } else { "s" },
            h.start.elapsed().as_secs_f64(),
            self.job_id
        );
        ExitCode::from((128 + sig).clamp(0, 255) as u8)
    }

    /// Stops with a report of what failed, what was lost and what remains.
    fn give_up(&self, h: &History, reason: &str) -> ExitCode {
        say!("giving up on job {}: {reason}", self.job_id);
        say!(
            "report: {} restart{} of {} allowed, in {:.1} s; failures: {}",
            h.restarts,
            if h.restarts == 1 { "" } else { "s" },
            self.max_restarts,
            h.start.elapsed().as_secs_f64(),
            h.failures.join("; ")
        );
        say!(
            "report: lost nodes: {}",
            if self.nodes.lost.is_empty() {
                "none".to_string()
            } else {
                self.nodes.lost.join(", ")
            }
        );
        let mut remain = Vec::new();
        for r in &h.reports {
            remain.push(match &r.roots {
                None => format!("{}: nothing (lost)", r.node),
                Some(s) => {
                    let mut parts = Vec::new();
                    if s.memory {
                        parts.push("memory root".to_string());
                    }
                    if s.disk {
                        parts.push("disk root".to_string());
                    }
                    if s.pfs {
                        parts.push("PFS".to_string());
                    }
                    if s.ckpt_records > 0 {
                        parts.push(format!(
                            "{} checkpoint record{}",
                            s.ckpt_records,
                            if s.ckpt_records == 1 { "" } else { "s" }
                        ));
                    }
                    if parts.is_empty() {
                        format!("{}: nothing", r.node)
                    } else {
                        format!("{}: {}", r.node, parts.join(", "))
                    }
                }
            });
        }
        say!("report: what remains: {}", remain.join("; "));
        let uid = roots::uid()
            .map(|u| u.to_string())
            .unwrap_or_else(|_| "UID".into());
        say!(
            "report: the roots are under {}/psls-{uid} and {}/psls-{uid} (job {}, checkpoint \
             set {}); run again with --job-id {} (and the same PSLS_CKPT_NAME) to resume from \
             what remains",
            roots::memory_base().display(),
            roots::disk_base().display(),
            self.job_id,
            self.ckpt_name,
            self.job_id
        );
        ExitCode::from(GAVE_UP)
    }
}

/// Copies a child's output through, noticing MPICH's report of a rank killed by a signal.
fn forward<R: Read + Send + 'static, W: Write + Send + 'static>(
    mut from: R,
    mut to: W,
    seen: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = to.write_all(&buf[..n]);
            let _ = to.flush();
            tail.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&tail);
            if text.contains("EXIT STRING:") && text.contains("(signal ") {
                seen.store(true, Ordering::Relaxed);
            }
            let keep = tail.len().saturating_sub(256);
            tail.drain(..keep);
        }
    })
}

/// Stops the job on a stop signal: SIGTERM to its MPI launcher (which passes it on to the
/// ranks), then SIGKILL after 10 s, or at once when the signal comes again.
fn stop_child(child: &mut Child) {
    procs::signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !signals::insisted() {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say!(
        "the job's MPI launcher (pid {}) did not end {}: killing it (SIGKILL)",
        child.id(),
        if signals::insisted() {
            "before a second stop signal"
        } else {
            "within 10 s of SIGTERM"
        }
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Ends a hung job: SIGTERM to its launcher, then SIGKILL.
fn end_child(child: &mut Child) {
    procs::signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
}

/// Whether the job's MPI launcher, or a rank as it reports, died of SIGPIPE.
fn died_of_sigpipe(s: ExitStatus) -> bool {
    s.signal() == Some(libc::SIGPIPE) || s.code() == Some(128 + libc::SIGPIPE)
}

/// Which of the launcher's standard output and standard error, if any, nobody reads any more
/// (a pipe whose reader ended, a terminal hung up): the job's output goes there too.
fn closed_output() -> Option<&'static str> {
    for (fd, name) in [(1, "standard output"), (2, "standard error")] {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: polls one valid pollfd, without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return Some(name);
        }
    }
    None
}

fn describe_status(s: ExitStatus, cause: Option<&str>) -> String {
    let mut notes: Vec<String> = Vec::new();
    let head = match (s.code(), s.signal()) {
        (_, Some(sig)) => format!("was killed by signal {sig}"),
        (Some(c), _) => {
            if c > 128 {
                notes.push(format!("a rank died of signal {}", c - 128));
            }
            format!("ended with exit status {c}")
        }
        (None, None) => "ended".into(),
    };
    notes.extend(cause.map(str::to_string));
    if notes.is_empty() {
        head
    } else {
        format!("{head} ({})", notes.join("; "))
    }
}

fn short_class(c: &Class) -> String {
    match c {
        Class::ProcessCrash => "process crash".into(),
        Class::Reboot(n) => format!("reboot of {}", n.join(", ")),
        Class::PowerCut => "power cut".into(),
        Class::NodeLoss { lost, .. } => format!("loss of {}", lost.join(", ")),
    }
}
