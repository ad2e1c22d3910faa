//! The batch template `slurm/psls-job.sbatch`, submitted with `sbatch` to the emulated Slurm
//! cluster (`scripts/slurm-cluster.sh`): once fault-free, and once with a node of the
//! allocation killed for real in the middle of the job (`slurm-cluster.sh kill-node n2` while
//! `mgs` runs: its slurmd and tasks die and Slurm marks it down). The job must finish with the
//! fault-free run's checksum, the spare `n4` must have replaced `n2`, the file imported into
//! the PSLS file system before the job must come out intact after it (exported on the nodes of
//! the last launch, `n4` in `n2`'s place), and the job's directories must be gone from the
//! nodes that answer. Kept apart from `tests/tests/slurm.rs` because it takes a node down:
//! `scripts/test.sh` runs it alone, and the test brings the node back at the end.
//!
//! Needs `PSLS_TEST_SLURM=1`, the cluster up and its environment (`eval "$(scripts/
//! slurm-cluster.sh env)"`), and the workspace's binaries built (`mgs`, `psls-launch`,
//! `psls-pfs` next to the test executable). `PSLS_TEST_TIMEOUT` (default 900 s) bounds each
//! job, time in the queue included.

use psls_tests::{check_pattern, sibling_binary, write_pattern, Scratch};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The matrix: big enough that the job is still running well after its second checkpoint.
const MGS_ARGS: &str = "--rows 4096 --vectors 96 --every 4";
/// The file imported before the job and exported after it (bytes, pattern seed).
const DATA_LEN: u64 = 300_000;
const DATA_SEED: u64 = 7;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn cluster_script() -> PathBuf {
    repo().join("scripts/slurm-cluster.sh")
}

fn template() -> PathBuf {
    repo().join("slurm/psls-job.sbatch")
}

fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("PSLS_TEST_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900),
    )
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

/// A submitted batch job: `sbatch --wait` running, cancelled if dropped before it ends.
struct Submitted {
    child: Child,
    id: Option<String>,
    out: PathBuf,
    started: Instant,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(id) = &self.id {
                let _ = Command::new("scancel").arg(id).status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Submitted {
    /// The job's output so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Reads the job id that `sbatch --parsable` prints once the job is queued.
    fn read_id(&mut self) {
        let mut text = String::new();
        if let Some(mut so) = self.child.stdout.take() {
            let mut b = [0u8; 1];
            while so.read(&mut b).is_ok_and(|n| n == 1) && b[0] != b'\n' {
                text.push(b[0] as char);
            }
        }
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        assert!(
            !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
            "sbatch printed no job id ({text:?}); stderr:\n{}",
            self.stderr()
        );
        self.id = Some(id);
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Waits until `cond` holds for the output, or the job ends, or the timeout.
    fn wait_for(&mut self, what: &str, cond: impl Fn(&str) -> bool) {
        loop {
            let text = self.output();
            if cond(&text) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "the job ended ({s}) before {what}; its output:\n{text}\n--- sbatch:\n{}",
                    self.stderr()
                );
            }
            self.check_deadline(&format!("waiting for {what}"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn check_deadline(&mut self, doing: &str) {
        if self.started.elapsed() > timeout() {
            let text = self.output();
            let queue = Command::new("squeue")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            panic!(
                "job {:?} still running after {:?} ({doing}; PSLS_TEST_TIMEOUT); squeue:\n{queue}\
                 its output:\n{text}",
                self.id,
                timeout()
            );
        }
    }

    /// Waits for the job to end: sbatch's exit status (the job's) and the job's output.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for sbatch") {
                break s;
            }
            self.check_deadline("waiting for the job to end");
            std::thread::sleep(Duration::from_millis(500));
        };
        let mut text = self.output();
        let err = self.stderr();
        if !err.trim().is_empty() {
            text.push_str(&format!("\n--- sbatch:\n{err}"));
        }
        (status, text)
    }
}

/// What one job uses: the roots' bases and a working directory for its output, run directory,
/// input and exported file.
struct Dirs {
    mem: Scratch,
    disk: Scratch,
    work: Scratch,
}

impl Dirs {
    fn new() -> Dirs {
        let d = Dirs {
            mem: Scratch::shm("sbatch-mem"),
            disk: Scratch::new("sbatch-disk"),
            work: Scratch::new("sbatch-work"),
        };
        write_pattern(&d.input(), DATA_SEED, DATA_LEN);
        d
    }

    fn input(&self) -> PathBuf {
        self.work.0.join("input.dat")
    }

    fn exported(&self) -> PathBuf {
        self.work.0.join("exported.dat")
    }
}

/// `sbatch --wait -N4 psls-job.sbatch` with `mgs` as the program, 3 compute nodes + 1 spare.
fn submit(d: &Dirs) -> Submitted {
    let out = d.work.0.join("job.out");
    let mut cmd = Command::new("sbatch");
    cmd.args(["--wait", "--parsable", "-N4", "--time=20"])
        .arg("--job-name=psls-batch-test")
        .arg(format!("--output={}", out.display()))
        .arg(format!("--chdir={}", d.work.path()))
        .arg(template())
        .env("PSLS_LAUNCH", sibling_binary("psls-launch"))
        .env("PSLS_PFS", sibling_binary("psls-pfs"))
        .env("PSLS_PROGRAM", sibling_binary("mgs"))
        .env("PSLS_PROGRAM_ARGS", MGS_ARGS)
        .env("PSLS_SPARES", "1")
        .env("PSLS_RANKS_PER_NODE", "1")
        .env("PSLS_MEMORY_BASE", d.mem.path())
        .env("PSLS_DISK_BASE", d.disk.path())
        .env("PSLS_IMPORT", format!("data={}", d.input().display()))
        .env("PSLS_EXPORT", format!("data={}", d.exported().display()))
        .env("PSLS_LAUNCH_OPTS", "--probe-timeout 20")
        // Info: the runtime logs each checkpoint, which tells when to kill the node.
        .env("PSLS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in [
        "PSLS_JOB_ID",
        "PSLS_CKPT_NAME",
        "PSLS_NODES",
        "PSLS_CLEAN",
        "PSLS_RUN_DIR",
    ] {
        cmd.env_remove(v);
    }
    let child = cmd.spawn().expect("run sbatch (is Slurm installed?)");
    let mut s = Submitted {
        child,
        id: None,
        out,
        started: Instant::now(),
    };
    s.read_id();
    s
}

fn checksum(text: &str) -> String {
    text.lines()
        .rfind(|l| l.starts_with("mgs:") && l.contains("checksum") && l.contains("(ok)"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no good checksum in\n{text}"))
        .to_string()
}

/// The PSLS job id the template printed (`psls-job: PSLS job slurm-N, ...`).
fn job_id(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("psls-job: PSLS job "))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no 'psls-job: PSLS job' line in\n{text}"))
        .to_string()
}

fn assert_contains(text: &str, lines: &[&str]) {
    for l in lines {
        assert!(text.contains(l), "expected {l:?} in\n{text}");
    }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The job's directories of `node` left under both bases (the PFS volume not counted).
fn leftovers(d: &Dirs, job: &str, node: &str) -> Vec<PathBuf> {
    let uid = uid();
    let mut left = Vec::new();
    for base in [d.mem.0.as_path(), d.disk.0.as_path()] {
        let user = base.join(format!("psls-{uid}"));
        for dir in [
            job.to_string(),
            format!("ckpt-{job}"),
            format!("ckpt-{job}-pfs"),
        ] {
            let p = user.join(dir).join(node);
            if p.exists() {
                left.push(p);
            }
        }
    }
    left
}

fn pfs_volume(d: &Dirs, node: &str) -> PathBuf {
    let uid = uid();
    d.disk.0.join(format!("psls-{uid}/pfs/{node}"))
}

fn check_binaries() {
    for b in ["mgs", "psls-launch", "psls-pfs"] {
        let p = sibling_binary(b);
        assert!(
            p.is_file(),
            "{} is missing: build the workspace's binaries first (cargo build --workspace, with \
             the same MPICC and CARGO_TARGET_DIR)",
            p.display()
        );
    }
}

#[test]
fn sbatch_template_survives_a_node_killed_mid_job_and_cleans_up() {
    if std::env::var("PSLS_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!(
            "not run: set PSLS_TEST_SLURM=1 with the emulated cluster up and its environment \
             (scripts/test.sh does)"
        );
        return;
    }
    check_binaries();
    assert!(template().is_file(), "{} is missing", template().display());

    // Fault-free: the reference checksum, and everything cleaned on all four nodes.
    let clean = Dirs::new();
    let (status, text) = submit(&clean).finish();
    assert!(
        status.success(),
        "fault-free job failed ({status}):\n{text}"
    );
    let want = checksum(&text);
    let job = job_id(&text);
    assert_contains(
        &text,
        &[
            "psls-job: Slurm job ",
            "3 compute node(s) (n1 n2 n3) + 1 spare(s) (n4)",
            "psls-job: import: ",
            "launch 0: 3 ranks on n1 n2 n3",
            "finished successfully after 0 restarts",
            "psls-job: psls-launch exited with status 0",
            "psls-job: export: PSLS file data -> ",
        ],
    );
    check_pattern(&clean.exported(), DATA_SEED, DATA_LEN).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for n in ["n1", "n2", "n3", "n4"] {
        assert!(
            text.contains(&format!("psls-job: cleaned {n}: ")),
            "no cleaning of {n} in\n{text}"
        );
        let left = leftovers(&clean, &job, n);
        assert!(left.is_empty(), "left after the job: {left:?}\n{text}");
    }
    assert!(
        pfs_volume(&clean, "n1").is_dir(),
        "the PFS volume must be kept\n{text}"
    );

    // n2 killed while the job runs, after its second checkpoint.
    let _restore = Restore;
    let faulty = Dirs::new();
    let mut sub = submit(&faulty);
    sub.wait_for("the job's second checkpoint", |t| {
        t.contains("psls::ckpt: memory checkpoint 2:")
    });
    let kill = Command::new(cluster_script())
        .args(["kill-node", "n2"])
        .output()
        .expect("run slurm-cluster.sh kill-node");
    assert!(
        kill.status.success(),
        "kill-node n2 failed: {}",
        String::from_utf8_lossy(&kill.stderr)
    );
    let (status, text) = sub.finish();
    assert!(
        text.contains("psls-launch: launch 1:") || !text.contains("mgs: ") || !status.success(),
        "the job ended before n2 was killed: give mgs more work (MGS_ARGS)\n{text}"
    );
    assert!(
        status.success(),
        "job with n2 killed failed ({status}):\n{text}"
    );
    let job = job_id(&text);
    assert_contains(
        &text,
        &[
            "launch 0: 3 ranks on n1 n2 n3",
            "probe n2: does not answer",
            "failure classified: node loss: n2",
            "spare n4 replaces lost node n2",
            "launch 1: 3 ranks on n1 n4 n3",
            "launch 1: resumed from memory checkpoint ",
            "finished successfully after 1 restart",
            "psls-job: psls-launch exited with status 0",
            &format!(
                "psls-job: export: PSLS file data -> {}, on n1,n4,n3",
                faulty.exported().display()
            ),
            "psls-job: cleaned n2: failed",
        ],
    );
    // Slurm ended the step when n2 failed (psls-launch starts its steps without --no-kill): the
    // launcher did not have to end a hung job itself.
    assert!(
        !text.contains("(--hang-timeout)"),
        "the step outlived its lost node until the launcher's --hang-timeout\n{text}"
    );
    assert_eq!(checksum(&text), want, "{text}");
    check_pattern(&faulty.exported(), DATA_SEED, DATA_LEN)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    for n in ["n1", "n3", "n4"] {
        assert!(
            text.contains(&format!("psls-job: cleaned {n}: "))
                && !text.contains(&format!("cleaned {n}: failed")),
            "no cleaning of {n} in\n{text}"
        );
        let left = leftovers(&faulty, &job, n);
        assert!(left.is_empty(), "left after the job: {left:?}\n{text}");
        assert!(
            pfs_volume(&faulty, n).is_dir(),
            "the PFS volume of {n} must be kept\n{text}"
        );
    }
}
