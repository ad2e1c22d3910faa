//! `recovery_bench`: for each failure class, the time from the failure to the resumed
//! computation, and the bytes restored, copied to a buddy again and re-mirrored, set against
//! the fault-free launch time of the same job measured in the same run.
//!
//! It drives `mgs` (4 ranks, one per virtual node) under `mpirun` itself, as `psls-launch`
//! would: a launch killed at a checkpoint (`PSLS_FAULT=ckpt-begin:...`), then what the failure
//! does to the node roots (a reboot wipes a node's memory root, a node loss both roots with a
//! spare in the node map, a power cut every memory root), then the relaunch. Times:
//!
//! - *launch*: from starting `mpirun` to the runtime's `RUN_DIR/resumed` file (init done: the
//!   application computes from there); the fault-free job's is the baseline;
//! - *detect*: from the fault (the killed rank's "fault injected" line) to `mpirun`'s exit;
//! - *failure to resumed*: from the fault to the relaunched job's `resumed` file (detection,
//!   root effects, relaunch and restore; the launcher's probes are not included).
//!
//! Every relaunch must end with the fault-free checksum. Options: `--rows M --vectors N
//! --repeats K`; `PSLS_MPIRUN` names mpirun; `PSLS_BENCH_SMOKE=1` runs tiny sizes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Opts {
    rows: usize,
    vectors: usize,
    repeats: usize,
}

fn parse() -> Result<Opts, String> {
    let smoke = psls_bench::smoke();
    let mut o = Opts {
        rows: if smoke { 512 } else { 16384 },
        vectors: if smoke { 24 } else { 64 },
        repeats: if smoke { 1 } else { 3 },
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v: &usize| v > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--rows" => o.rows = num("--rows")?,
            "--vectors" => o.vectors = num("--vectors")?,
            "--repeats" => o.repeats = num("--repeats")?,
            "-h" | "--help" => {
                println!("usage: recovery_bench [--rows M] [--vectors N] [--repeats K]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if o.vectors < 24 {
        return Err("--vectors must be at least 24 (the faults are at checkpoints 5 and 6)".into());
    }
    Ok(o)
}

/// One launch of mgs and what it did.
struct Launched {
    start: Instant,
    fault: Option<Instant>,
    exit: Instant,
    resumed: Option<(Instant, String)>,
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Scratch roots for one scenario, removed when dropped.
struct Roots {
    mem: PathBuf,
    disk: PathBuf,
}

impl Roots {
    fn new(tag: &str) -> Result<Roots, String> {
        // Distinct names: the two bases may be one directory (the smoke run's), and wiping a
        // node's memory must not wipe its disk.
        let base = |var: &str, default: &str, kind: &str| {
            PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.into())).join(format!(
                "recovery-bench-{tag}-{kind}-{}",
                std::process::id()
            ))
        };
        let r = Roots {
            mem: base("PSLS_MEMORY_BASE", "/dev/shm", "mem"),
            disk: base("PSLS_DISK_BASE", "/var/tmp", "disk"),
        };
        for d in [&r.mem, &r.disk] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        Ok(r)
    }

    fn run_dir(&self) -> PathBuf {
        self.disk.join("run")
    }

    /// Removes `BASE/psls-UID/*/NODE` under the memory base (and the disk base with `disk`).
    fn wipe(&self, node: &str, disk: bool) -> Result<(), String> {
        let bases: &[&Path] = if disk {
            &[&self.mem, &self.disk]
        } else {
            &[&self.mem]
        };
        for base in bases {
            for user in subdirs(base) {
                for job in subdirs(&user) {
                    let d = job.join(node);
                    if d.is_dir() {
                        std::fs::remove_dir_all(&d)
                            .map_err(|e| format!("wiping {}: {e}", d.display()))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Roots {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.mem);
        let _ = std::fs::remove_dir_all(&self.disk);
    }
}

fn subdirs(p: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(p)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.ends_with("run"))
                .collect()
        })
        .unwrap_or_default()
}

fn launch(
    o: &Opts,
    roots: &Roots,
    nodes: &[&str],
    fault: Option<&str>,
    env: &[(&str, &str)],
) -> Result<Launched, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let run_dir = roots.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let resumed_file = run_dir.join("resumed");
    let _ = std::fs::remove_file(&resumed_file);
    let map = roots.disk.join("nodemap");
    let text: String = nodes
        .iter()
        .enumerate()
        .map(|(r, n)| format!("{r} {n}\n"))
        .collect();
    std::fs::write(&map, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(std::env::var("PSLS_MPIRUN").unwrap_or_else(|_| "mpirun".into()));
    cmd.arg("-n")
        .arg(nodes.len().to_string())
        .arg(exe.with_file_name("mgs"))
        .args(["--rows", &o.rows.to_string()])
        .args(["--vectors", &o.vectors.to_string()])
        .args(["--every", "4"])
        .env("PSLS_MEMORY_BASE", &roots.mem)
        .env("PSLS_DISK_BASE", &roots.disk)
        .env("PSLS_NODE_MAP", &map)
        .env("PSLS_RUN_DIR", &run_dir)
        .env("PSLS_CKPT_NAME", "recovery-bench")
        .env("PSLS_LOG", "warn")
        .env_remove("PSLS_VIRTUAL_NODES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = fault {
        cmd.env("PSLS_FAULT", f);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("running mpirun: {e}"))?;
    let fault_seen: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let seen = fault_seen.clone();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("fault injected") {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(Instant::now());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let mut resumed = None;
    let status = loop {
        if resumed.is_none() {
            if let Ok(t) = std::fs::read_to_string(&resumed_file) {
                resumed = Some((Instant::now(), t.trim().to_string()));
            }
        }
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let exit = Instant::now();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let fault = *fault_seen.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Launched {
        start,
        fault,
        exit,
        resumed,
        ok: status.success(),
        stdout,
        stderr,
    })
}

fn checksum(l: &Launched) -> Result<String, String> {
    l.stdout
        .lines()
        .find(|l| l.contains("checksum") && l.contains("(ok)"))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
        .ok_or(format!("no good checksum in:\n{}\n{}", l.stdout, l.stderr))
}

/// A figure of the `resumed` line (`key=value`).
fn figure(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

struct Class {
    name: &'static str,
    /// The fault's checkpoint (mgs: one every 4 vectors).
    fault: &'static str,
    /// Permanent checkpoint every this many (0: only memory checkpoints).
    every: &'static str,
    /// (node, with its disk) wiped after the failure; "*" is every node's memory.
    wipe: &'static [(&'static str, bool)],
    /// The node map of the relaunch.
    relaunch: [&'static str; 4],
    /// What the relaunch must say it resumed from.
    from: &'static str,
}

const NODES: [&str; 4] = ["vnode0", "vnode1", "vnode2", "vnode3"];

const CLASSES: &[Class] = &[
    Class {
        name: "process crash",
        fault: "ckpt-begin:epoch=6:rank=1",
        every: "0",
        wipe: &[],
        relaunch: NODES,
        from: "memory",
    },
    Class {
        name: "node reboot",
        fault: "ckpt-begin:epoch=6:rank=1",
        every: "0",
        wipe: &[("vnode1", false)],
        relaunch: NODES,
        from: "memory",
    },
    Class {
        name: "node loss, spare",
        fault: "ckpt-begin:epoch=6:rank=1",
        every: "0",
        wipe: &[("vnode1", true)],
        relaunch: ["vnode0", "vnode4", "vnode2", "vnode3"],
        from: "memory",
    },
    Class {
        name: "node loss, spare (perm.)",
        fault: "ckpt-begin:epoch=5:rank=1",
        every: "3",
        wipe: &[("vnode1", true)],
        relaunch: ["vnode0", "vnode4", "vnode2", "vnode3"],
        from: "memory",
    },
    Class {
        name: "two buddies rebooted",
        fault: "ckpt-begin:epoch=5:rank=1",
        every: "3",
        wipe: &[("vnode1", false), ("vnode2", false)],
        relaunch: NODES,
        from: "permanent",
    },
    Class {
        name: "power cut",
        fault: "ckpt-begin:epoch=5:rank=1",
        every: "3",
        wipe: &[("*", false)],
        relaunch: NODES,
        from: "permanent",
    },
];

fn run() -> Result<(), String> {
    let o = parse()?;
    println!(
        "recovery_bench: mgs {} x {} ({} MiB of A), 4 ranks on 4 virtual nodes, a checkpoint every 4 vectors; median of {} runs",
        o.rows,
        o.vectors,
        (o.rows * o.vectors * 8) >> 20,
        o.repeats
    );
    // The baseline: the fault-free launch, and its checksum.
    let mut launch_times = Vec::new();
    let mut want = String::new();
    for _ in 0..o.repeats {
        let roots = Roots::new("clean")?;
        let l = launch(&o, &roots, &NODES, None, &[])?;
        if !l.ok {
            return Err(format!(
                "the fault-free run failed:\n{}\n{}",
                l.stdout, l.stderr
            ));
        }
        want = checksum(&l)?;
        let (t, _) = l
            .resumed
            .ok_or("the fault-free run wrote no resumed file")?;
        launch_times.push((t - l.start).as_secs_f64());
    }
    let base = psls_bench::median(&mut launch_times);
    println!(
        "fault-free launch (mpirun start to computation): {:.3} s",
        base
    );
    println!(
        "{:<26} {:>9} {:>9} {:>12} {:>7} {:>11} {:>12} {:>11}",
        "failure",
        "detect s",
        "launch s",
        "fail->run s",
        "ratio",
        "copies kept",
        "copied again",
        "re-mirrored"
    );
    for c in CLASSES {
        let mut rows: Vec<(f64, f64, f64, String)> = Vec::new();
        for _ in 0..o.repeats {
            let roots = Roots::new("fail")?;
            let env = [("PSLS_CKPT_PERMANENT_EVERY", c.every)];
            let crashed = launch(&o, &roots, &NODES, Some(c.fault), &env)?;
            let fault = match (crashed.ok, crashed.fault) {
                (false, Some(t)) => t,
                _ => {
                    return Err(format!(
                        "{}: the run did not die at its fault:\n{}",
                        c.name, crashed.stderr
                    ))
                }
            };
            for &(node, disk) in c.wipe {
                if node == "*" {
                    for n in NODES {
                        roots.wipe(n, false)?;
                    }
                } else {
                    roots.wipe(node, disk)?;
                }
            }
            let again = launch(&o, &roots, &c.relaunch, None, &env)?;
            let sum = checksum(&again)?;
            if sum != want {
                return Err(format!(
                    "{}: the restarted run's checksum {sum} differs from the fault-free {want}",
                    c.name
                ));
            }
            let (t, line) = again
                .resumed
                .ok_or(format!("{}: the relaunch wrote no resumed file", c.name))?;
            if !line.starts_with(c.from) {
                return Err(format!(
                    "{}: resumed from {line:?}, expected a {} checkpoint",
                    c.name, c.from
                ));
            }
            rows.push((
                (crashed.exit - fault).as_secs_f64(),
                (t - again.start).as_secs_f64(),
                (t - fault).as_secs_f64(),
                line,
            ));
        }
        rows.sort_by(|a, b| a.2.total_cmp(&b.2));
        let (detect, relaunch, total, line) = &rows[rows.len() / 2];
        let ps = figure(line, "page-size");
        let mib = |k: &str| (figure(line, k) * ps) as f64 / (1 << 20) as f64;
        println!(
            "{:<26} {:>9.3} {:>9.3} {:>12.3} {:>6.2}x {:>7.2} MiB {:>8.2} MiB {:>7.2} MiB",
            c.name,
            detect,
            relaunch,
            total,
            total / base,
            mib("restored-pages"),
            mib("copied-again"),
            mib("remirrored-pages")
        );
    }
    println!("every restarted run ended with the fault-free checksum {want}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recovery_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
