//! `psls-launch`: starts a PSLS job under `mpirun` or `srun`, watches it, and brings it back
//! after failures.
//!
//! The launcher shares no code with the runtime and needs no MPI itself: it talks to the
//! runtime through environment variables and files in the run directory.
//!
//! **The loop.** Before each launch L (0 first) the launcher places ranks on the live nodes in
//! blocks and writes the node map `RUN_DIR/nodemap.L` (`PSLS_NODE_MAP`); it also sets
//! `PSLS_JOB_ID`, `PSLS_RUN_DIR`, `PSLS_RESTART=L` and `PSLS_CKPT_NAME` (the job id unless the
//! user set it, so that every launch finds the same checkpoint set), and `PSLS_FAULT` for the
//! faults injected at an epoch. While the job runs it prints where the job resumed from
//! (`RUN_DIR/resumed`, written by rank 0) and fires the faults injected at a time, killing the
//! processes listed in `RUN_DIR/ranks/rank.R`.
//!
//! When the job exits with 0, that is the end. Otherwise, once every process is gone, the
//! launcher applies the node effects of the injected faults (wiping roots, marking a node dead
//! in `RUN_DIR/dead-nodes`), then **probes** every live node through the same MPI launcher
//! (`psls-launch probe` on the node, with a timeout), and **classifies** the failure: a node
//! that does not answer is lost (node loss); every memory root gone is a power cut; some gone is
//! a reboot; all intact is a process crash. An exit code from 1 to 128 with every node intact is
//! the application's own error: it is returned, not restarted. (A first launch that fails
//! before any rank started, with `--mpi-arg` options, is run again with `psls-launch --version`
//! as the program: when that fails too, the MPI launcher rejects the command line, and the
//! launcher says so and exits with status 2.) Otherwise each lost node is
//! **replaced** by the next spare at the same position of the node map, and the job is
//! **relaunched**; the runtime restarts from the newest checkpoint that survived. After
//! `--max-restarts` restarts, or when a lost node has no spare left, the launcher stops with a
//! report and exit status 3. When the job succeeds but an injected fault never fired, the
//! launcher names it and exits with status 4 (the fault was not tested). While a launch runs,
//! `--hang-timeout` ends it as failed only once a rank process the launcher can see has died
//! and the job has gone on running that long (MPI waiting on a dead rank); a job whose ranks
//! are all alive is never timed out.
//!
//! **Nodes.** Virtual nodes (`--virtual-nodes N` or `--nodes N` on one host) are `vnode0..`,
//! the spares after them; a lost one is emulated by `lose-node` (its roots wiped, its name in
//! `dead-nodes`, so that its probe does not answer). With `--hostfile` the hosts are real and
//! the job runs under `mpirun --host H:SLOTS,...`; under Slurm the allocation's nodes are used
//! with `srun --nodelist --exclude --no-kill --distribution=arbitrary` (`SLURM_HOSTFILE` =
//! `RUN_DIR/hostfile.L` keeps every rank where the node map puts it).
//!
//! **Stopping.** SIGTERM (`scancel`, `kill`), SIGINT (Ctrl-C) or SIGHUP sent to the launcher
//! stops the job: SIGTERM to the MPI launcher, SIGKILL after a 10 s grace period (at once on a
//! second signal), then any rank of this host still running is killed; there is no relaunch,
//! and the launcher exits with status 128 + the signal (143, 130, 129). Each MPI launcher it
//! starts gets SIGTERM if the launcher itself dies (`PR_SET_PDEATHSIG`), even of SIGKILL. A
//! job that dies of SIGPIPE while the launcher's own standard output or error is closed (its
//! reader ended, as in `psls-launch ... | head`) is not restarted either: exit status 141.
//!
//! Modules: [`cli`] (options), [`nodes`] (live nodes, spares, node map), [`inject`] (fault
//! specs), [`mpi`] (command lines), [`probe`] (the probe and the classification), [`procs`]
//! (rank processes), [`roots`] (node roots), [`signals`] (stopping on SIGTERM/SIGINT),
//! [`supervise`] (the loop).

mod cli;
mod inject;
mod mpi;
mod nodes;
mod probe;
mod procs;
mod roots;
mod signals;
mod supervise;

use clap::Parser;
use cli::{Cli, LauncherKind, MpiKind, ProbeCli, WipeCli};
use nodes::{Hosts, NodeKind, Nodes, Request};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("probe") => return probe::probe_main(ProbeCli::parse_from(&args[1..])),
        Some("wipe") => return wipe_main(WipeCli::parse_from(&args[1..])),
        _ => {}
    }
    let cli = Cli::parse();
    match prepare(cli) {
        Ok(Some(job)) => {
            signals::install();
            job.supervise()
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("psls-launch: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// `psls-launch wipe`: removes this node's roots, as an injected fault does.
fn wipe_main(cli: WipeCli) -> ExitCode {
    let r = (|| -> Result<usize, String> {
        let uid = roots::uid()?;
        let mut n = roots::wipe_node(&roots::memory_base(), uid, &cli.node)?.len();
        if cli.disk {
            n += roots::wipe_node(&roots::disk_base(), uid, &cli.node)?.len();
        }
        Ok(n)
    })();
    match r {
        Ok(n) => {
            println!("wipe node={} removed={n}", cli.node);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("psls-launch wipe: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Checks the options and works out the job; `None` after a dry run.
fn prepare(cli: Cli) -> Result<Option<supervise::Job>, String> {
    let in_slurm = std::env::var_os("SLURM_JOB_ID").is_some();
    let launcher = match cli.launcher {
        LauncherKind::Auto if in_slurm => LauncherKind::Srun,
        LauncherKind::Auto => LauncherKind::Mpirun,
        l => l,
    };
    let local_host = roots::host_name();
    let hostfile_hosts;
    let hosts = if let Some(path) = &cli.hostfile {
        hostfile_hosts = nodes::read_hostfile(path)?;
        Hosts::File(path, hostfile_hosts)
    } else if launcher == LauncherKind::Srun && in_slurm && cli.virtual_nodes.is_none() {
        Hosts::Slurm(nodes::slurm_hosts()?)
    } else {
        Hosts::None
    };
    let nodes = Nodes::plan(
        Request {
            ranks: cli.ranks,
            ranks_per_node: cli.ranks_per_node,
            nodes: cli.nodes,
            virtual_nodes: cli.virtual_nodes,
            spares: cli.spares,
        },
        hosts,
        &local_host,
    )?;
    if nodes.kind == NodeKind::Hosts && launcher == LauncherKind::Srun {
        return Err(
            "--hostfile goes with mpirun: under srun the nodes are the Slurm allocation's".into(),
        );
    }
    let ranks = cli.ranks as usize;
    let injects = cli
        .inject
        .iter()
        .map(|s| inject::parse(s))
        .collect::<Result<Vec<_>, String>>()?;
    for i in &injects {
        // The nodes that lose-node faults of earlier launches free: as many spares come in.
        let losses_before = injects
            .iter()
            .filter(|x| x.kind == inject::Kind::LoseNode && x.launch < i.launch)
            .count();
        i.validate(ranks, &nodes, cli.max_restarts, losses_before)?;
    }
    let program = resolve_program(&cli.program[0])?;
    let mpi = match cli.mpi {
        MpiKind::Auto => detect_mpi(&program),
        m => m,
    };
    let job_id = match &cli.job_id {
        Some(id) => {
            if !roots::valid_name(id) || id.len() > 64 {
                return Err(format!(
                    "--job-id {id:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -, not \
                     starting with a dot"
                ));
            }
            id.clone()
        }
        None => match std::env::var("SLURM_JOB_ID") {
            Ok(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
                format!("slurm-{id}")
            }
            _ => format!("launch-{}-{}", unix_secs(), std::process::id()),
        },
    };
    let (ckpt_name, set_ckpt_name) = match std::env::var("PSLS_CKPT_NAME") {
        Ok(n) if !n.is_empty() => (n, false),
        _ => (job_id.clone(), true),
    };
    if !roots::valid_name(&ckpt_name) || ckpt_name.len() > 64 {
        return Err(format!(
            "PSLS_CKPT_NAME={ckpt_name:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -, not \
             starting with a dot"
        ));
    }
    let run_dir = cli
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("psls-run-{job_id}")));
    let run_dir = std::path::absolute(&run_dir)
        .map_err(|e| format!("run directory {}: {e}", run_dir.display()))?;
    check_run_dir(&run_dir, cli.run_dir.is_some())?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find psls-launch's own path (for the probe): {e}"))?;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    eprintln!(
        "psls-launch: job {job_id}: {} ranks on {}{} via {launcher:?} ({mpi:?}), up to {}, run \
         dir {}",
        cli.ranks,
        plural(
            nodes.live.len(),
            if nodes.kind == NodeKind::Virtual {
                "virtual node"
            } else {
                "node"
            }
        ),
        if nodes.spares.is_empty() {
            String::new()
        } else {
            format!(" + {}", plural(nodes.spares.len(), "spare"))
        },
        plural(cli.max_restarts as usize, "restart"),
        run_dir.display()
    );
    let job = supervise::Job {
        ranks,
        mpi: mpi::Mpi {
            launcher,
            mpi,
            kind: nodes.kind,
        },
        nodes,
        program,
        args: cli.program[1..].to_vec(),
        mpi_args: cli.mpi_args.clone(),
        job_id,
        ckpt_name,
        set_ckpt_name,
        run_dir,
        injects,
        max_restarts: cli.max_restarts,
        probe_timeout: Duration::from_secs(cli.probe_timeout),
        hang_timeout: (cli.hang_timeout > 0).then(|| Duration::from_secs(cli.hang_timeout)),
        lose_node_command: cli.lose_node_command.clone(),
        exe,
        local_host,
        lock: None,
    };
    if cli.dry_run {
        job.dry_run();
        return Ok(None);
    }
    std::fs::create_dir_all(&job.run_dir)
        .map_err(|e| format!("cannot create run directory {}: {e}", job.run_dir.display()))?;
    check_writable(&job.run_dir)?;
    let mut job = job;
    job.lock = lock_run_dir(&job.run_dir)?;
    Ok(Some(job))
}

/// Refuses a run directory that exists but is not a directory (or that lies under something
/// that is not one), before anything is written: `create_dir_all` would only say "File
/// exists" or "Not a directory". `given`: named by --run-dir (else the default).
fn check_run_dir(dir: &Path, given: bool) -> Result<(), String> {
    let what = if given {
        "--run-dir"
    } else {
        "the run directory"
    };
    // The path itself, then its nearest ancestor that exists.
    for p in dir.ancestors() {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(m) => {
                let kind = describe_file_type(&m);
                return Err(if p == dir {
                    format!(
                        "{what} {} is not a directory (it is {kind}): give a directory, or a \
                         path that does not exist yet (it is created)",
                        dir.display()
                    )
                } else {
                    format!(
                        "{what} {}: {} is not a directory (it is {kind}), so the run \
                         directory cannot be created under it",
                        dir.display(),
                        p.display()
                    )
                });
            }
            // Missing, or under a file (ENOTDIR): look further up.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("{what} {}: {}: {e}", dir.display(), p.display())),
        }
    }
    Ok(())
}

fn describe_file_type(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "neither a file nor a directory"
    }
}

/// Refuses a run directory this user cannot write in (and enter): the launcher writes its
/// lock, node maps and rank files there.
fn check_writable(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("run directory {}: a NUL in the path", dir.display()))?;
    // SAFETY: access(2) on a NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "run directory {} is not writable ({e}): the launcher writes its lock, node maps \
             and rank files there; give a directory you can write in (--run-dir)",
            dir.display()
        ));
    }
    Ok(())
}

/// Takes the run directory for this launcher: an exclusive `flock` on `RUN_DIR/.lock`, held
/// while the file stays open (until the launcher ends, however it ends), with the launcher's
/// pid written in it. Two launchers on one run directory would clear each other's rank files
/// and node maps, and kill each other's ranks: the second is refused, naming the first. A file
/// system without `flock` gets a warning, not a refusal.
fn lock_run_dir(dir: &Path) -> Result<Option<std::fs::File>, String> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    let path = dir.join(".lock");
    // Not truncated on open: it holds the pid of the launcher that may have it.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot open the run directory's lock {}: {e}",
                path.display()
            )
        })?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            eprintln!(
                "psls-launch: warning: cannot lock {} ({e}): nothing stops another psls-launch \
                 from using run directory {} at the same time",
                path.display(),
                dir.display()
            );
            return Ok(None);
        }
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        let mut w = text.split_whitespace();
        let holder = match (w.next(), w.next()) {
            (Some(pid), Some(host)) if pid.parse::<u32>().is_ok() => {
                format!(" (pid {pid} on {host})")
            }
            (Some(pid), None) if pid.parse::<u32>().is_ok() => format!(" (pid {pid})"),
            _ => String::new(),
        };
        return Err(format!(
            "run directory {} is in use by another psls-launch{holder}, which holds {}: give \
             each job its own --run-dir, or wait for that one to end",
            dir.display(),
            path.display()
        ));
    }
    let pid = format!("{} {}\n", std::process::id(), roots::host_name());
    let written = f
        .set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(pid.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "psls-launch: warning: cannot write the pid in {}: {e}",
            path.display()
        );
    }
    Ok(Some(f))
}

/// The program as a path: as given when it contains a slash, else looked up in PATH as a
/// shell does (the first executable file named so; a file that is not executable is passed
/// over). It must be an executable regular file: one that is not would fail on every rank, and
/// the launcher would take that for a crash and restart it in vain.
fn resolve_program(p: &str) -> Result<PathBuf, String> {
    if p.contains('/') {
        let path = PathBuf::from(p);
        return match program_kind(&path) {
            ProgramKind::Executable => Ok(path),
            ProgramKind::Missing => Err(format!(
                "program {p:?} not found: give a path or a command on PATH"
            )),
            ProgramKind::NotAFile => Err(format!(
                "program {p:?} is not a file (a directory?): give the program's path"
            )),
            ProgramKind::NotExecutable => {
                Err(format!("program {p:?} is not executable (chmod +x {p})"))
            }
        };
    }
    let mut not_executable = None;
    for dir in std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let c = dir.join(p);
        match program_kind(&c) {
            ProgramKind::Executable => return Ok(c),
            ProgramKind::NotExecutable if not_executable.is_none() => not_executable = Some(c),
            _ => {}
        }
    }
    Err(match not_executable {
        Some(c) => format!(
            "program {p:?} is not executable: PATH has only {}, without execute permission \
             (chmod +x {})",
            c.display(),
            c.display()
        ),
        None => format!("program {p:?} not found: give a path or a command on PATH"),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum ProgramKind {
    Missing,
    NotAFile,
    NotExecutable,
    Executable,
}

/// What `path` is as a program (symbolic links followed): a regular file with an execute bit
/// set is executable.
fn program_kind(path: &Path) -> ProgramKind {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(_) => ProgramKind::Missing,
        Ok(m) if !m.is_file() => ProgramKind::NotAFile,
        Ok(m) if m.permissions().mode() & 0o111 == 0 => ProgramKind::NotExecutable,
        Ok(_) => ProgramKind::Executable,
    }
}

fn detect_mpi(program: &Path) -> MpiKind {
    match Command::new("ldd").arg(program).output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("libmpich") => MpiKind::Mpich,
        _ => MpiKind::Openmpi,
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn program_must_be_an_executable_file() {
        let dir = std::env::temp_dir().join(format!("psls-launch-prog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("prog");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let shown = f.display().to_string();
        let e = resolve_program(&shown).unwrap_err();
        assert!(
            e.contains(&format!("is not executable (chmod +x {shown})")),
            "{e}"
        );
        assert_eq!(program_kind(&dir), ProgramKind::NotAFile);
        assert!(resolve_program(&dir.display().to_string())
            .unwrap_err()
            .contains("is not a file"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_program(&shown).unwrap(), f);
        assert!(resolve_program(&format!("{shown}.none"))
            .unwrap_err()
            .contains("not found"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
