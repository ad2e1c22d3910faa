//! `psls-launch`: it starts a job on virtual nodes, refuses bad options with a clear message
//! and exit status 2, probes nodes, and supervises a job: an application error is returned, a
//! crash is restarted until --max-restarts (then exit status 3), a lost node is replaced by a
//! spare.
//!
//! The supervision tests run a small shell script instead of a PSLS program: it does what the
//! runtime does for the launcher (makes its node's roots, writes `ranks/rank.R` and, on rank 0,
//! `resumed`) and nothing else, so they are cheap and test the launcher alone. The runtime's
//! own recovery is tested in `recovery.rs`.

use psls_tests::{sibling_binary, MpiFlavor, Scratch};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

fn launch(args: &[&str], mem: &Scratch, disk: &Scratch) -> (Output, String) {
    let out = Command::new(sibling_binary("psls-launch"))
        .args(args)
        .env("PSLS_MEMORY_BASE", mem.path())
        .env("PSLS_DISK_BASE", disk.path())
        .env_remove("SLURM_JOB_ID")
        .env_remove("PSLS_CKPT_NAME")
        .env_remove("PSLS_FAULT")
        .output()
        .expect("run psls-launch");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

/// Runs `psls-launch` with a deadline: a launcher that hangs fails the test with its output.
fn supervise(args: &[&str], mem: &Scratch, disk: &Scratch) -> (ExitStatus, String) {
    let mut child = Command::new(sibling_binary("psls-launch"))
        .args(args)
        .env("PSLS_MEMORY_BASE", mem.path())
        .env("PSLS_DISK_BASE", disk.path())
        .env_remove("SLURM_JOB_ID")
        .env_remove("PSLS_CKPT_NAME")
        .env_remove("PSLS_FAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start psls-launch");
    let mut o = child.stdout.take().expect("stdout");
    let mut e = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = o.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for psls-launch") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = out.join().unwrap_or_default() + &err.join().unwrap_or_default();
    match status {
        Some(s) => (s, text),
        None => panic!("psls-launch {args:?} did not end within 120 s:\n{text}"),
    }
}

fn uid() -> String {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8(out.stdout)
        .expect("uid")
        .trim()
        .to_string()
}

/// A script in `dir` with `body`, executable.
fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

/// A stand-in for a PSLS rank, for the launcher's tests: it makes its node's memory root, disk
/// root and a checkpoint record, announces its pid in `ranks/rank.R`, says on rank 0 where it
/// "resumed" from (`fresh` first, `memory 2` after a restart), and runs for about 5 s.
fn fake_rank(dir: &Path) -> String {
    script(
        dir,
        "fake-rank.sh",
        r#"#!/bin/sh
r=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}
node=$(awk -v r="$r" '$1==r {print $2}' "$PSLS_NODE_MAP")
uid=$(id -u)
mkdir -p "$PSLS_MEMORY_BASE/psls-$uid/$PSLS_JOB_ID/$node" \
  "$PSLS_DISK_BASE/psls-$uid/$PSLS_JOB_ID/$node" \
  "$PSLS_MEMORY_BASE/psls-$uid/ckpt-$PSLS_CKPT_NAME/$node"
: > "$PSLS_MEMORY_BASE/psls-$uid/ckpt-$PSLS_CKPT_NAME/$node/ckpt.rank$r"
mkdir -p "$PSLS_RUN_DIR/ranks"
echo "$$ $(uname -n) $node" > "$PSLS_RUN_DIR/ranks/rank.$r.tmp"
mv "$PSLS_RUN_DIR/ranks/rank.$r.tmp" "$PSLS_RUN_DIR/ranks/rank.$r"
if [ "$r" = 0 ]; then
  if [ "$PSLS_RESTART" -gt 0 ]; then echo "memory 2" > "$PSLS_RUN_DIR/resumed"; else echo fresh > "$PSLS_RUN_DIR/resumed"; fi
fi
i=0
while [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "fake rank $r done on $node in launch $PSLS_RESTART"
"#,
    )
}

#[test]
fn runs_hello_on_four_virtual_nodes() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let run_dir = d.0.join("run").display().to_string();
    let (out, text) = launch(
        &[
            "-n",
            "4",
            "--virtual-nodes",
            "4",
            "--job-id",
            "t-launch",
            "--run-dir",
            &run_dir,
            "--",
            &hello,
        ],
        &m,
        &d,
    );
    assert!(out.status.success(), "{text}");
    // The launcher places the ranks itself and hands the runtime its node map.
    assert!(
        text.contains("job t-launch: 4 ranks on 4 nodes (NodeMapFile)"),
        "{text}"
    );
    assert!(
        text.contains("buddy ring: vnode0 -> vnode1 -> vnode2 -> vnode3 -> vnode0"),
        "{text}"
    );
    let mpi = if MpiFlavor::from_env() == MpiFlavor::Mpich {
        "Mpich"
    } else {
        "Openmpi"
    };
    assert!(text.contains(mpi), "detected MPI should be {mpi}: {text}");
    assert!(std::path::Path::new(&run_dir).is_dir());
    let map = std::fs::read_to_string(Path::new(&run_dir).join("nodemap.0")).unwrap();
    assert!(
        map.ends_with("0 vnode0\n1 vnode1\n2 vnode2\n3 vnode3\n"),
        "{map}"
    );
    assert!(text.contains("job t-launch finished successfully after 0 restarts"));
    // The job id keys the roots of every virtual node.
    let uid = uid();
    for k in 0..4 {
        let root = m.0.join(format!("psls-{uid}/t-launch/vnode{k}"));
        assert!(root.is_dir(), "missing {}", root.display());
    }
}

#[test]
fn bad_options_are_refused_clearly() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let grammar = "KIND[:rank=R|:node=NAME][:epoch=E|:at=SECONDS][:launch=L]";
    for (args, needles) in [
        (
            vec!["-n", "2"],
            vec!["required arguments were not provided"],
        ),
        (
            vec!["-n", "2", "--virtual-nodes", "3", "--", &hello],
            vec!["every virtual node needs at least one rank"],
        ),
        (
            vec!["-n", "2", "--nodes", "3", "--", &hello],
            vec!["--nodes 3 is more than --ranks 2: every node needs at least one rank"],
        ),
        (
            vec!["-n", "4", "--ranks-per-node", "3", "--", &hello],
            vec!["--ranks-per-node 3 does not divide --ranks 4"],
        ),
        (
            vec![
                "-n",
                "4",
                "--nodes",
                "2",
                "--ranks-per-node",
                "1",
                "--",
                &hello,
            ],
            vec!["--nodes 2 with --ranks-per-node 1 makes 2 ranks, but --ranks is 4"],
        ),
        (
            vec!["--launcher", "lsf", "--", &hello],
            vec!["invalid value 'lsf' for '--launcher"],
        ),
        (vec!["-n", "0", "--", &hello], vec!["invalid value '0'"]),
        (vec!["--", "/no/such/program"], vec!["not found"]),
        (vec!["--job-id", "../x", "--", &hello], vec!["--job-id"]),
        (
            vec!["--inject", "explode:epoch=1", "--", &hello],
            vec![
                "--inject \"explode:epoch=1\": unknown KIND \"explode\"",
                grammar,
            ],
        ),
        (
            vec!["--inject", "kill-rank", "--", &hello],
            vec!["kill-rank needs a moment: epoch=E or at=SECONDS", grammar],
        ),
        (
            vec!["--inject", "reboot:epoch=2:at=3", "--", &hello],
            vec!["give epoch= or at=, not both", grammar],
        ),
        (
            vec![
                "-n",
                "2",
                "--inject",
                "kill-rank:rank=5:epoch=1",
                "--",
                &hello,
            ],
            vec!["rank 5 does not exist: the job has ranks 0 to 1"],
        ),
        (
            vec![
                "-n",
                "2",
                "--virtual-nodes",
                "2",
                "--spares",
                "1",
                "--inject",
                "lose-node:node=vnode7:at=1",
                "--",
                &hello,
            ],
            vec!["node vnode7 does not exist: the job's nodes are vnode0, vnode1 (spare: vnode2)"],
        ),
        // A spare runs no rank in the first launch: a fault on it would never fire.
        (
            vec![
                "-n",
                "2",
                "--virtual-nodes",
                "2",
                "--spares",
                "1",
                "--inject",
                "lose-node:node=vnode2:epoch=7",
                "--",
                &hello,
            ],
            vec![
                "--inject \"lose-node:node=vnode2:epoch=7\": node vnode2 is a spare: it runs no \
                 rank in launch 0",
                "name a node that runs ranks: vnode0, vnode1 (spare: vnode2)",
            ],
        ),
        // Nor in a later launch without a node loss before it to bring it in.
        (
            vec![
                "-n",
                "2",
                "--virtual-nodes",
                "2",
                "--spares",
                "1",
                "--inject",
                "kill-rank:rank=1:epoch=2",
                "--inject",
                "reboot:node=vnode2:epoch=4:launch=1",
                "--",
                &hello,
            ],
            vec!["node vnode2 is a spare: it runs no rank in launch 1"],
        ),
        (
            vec!["--run-dir", "/etc/passwd", "--", &hello],
            vec!["--run-dir /etc/passwd is not a directory (it is a regular file)"],
        ),
        (
            vec!["--run-dir", "/etc/passwd/run", "--dry-run", "--", &hello],
            vec!["--run-dir /etc/passwd/run: /etc/passwd is not a directory"],
        ),
        (
            vec![
                "--max-restarts",
                "1",
                "--inject",
                "kill-rank:epoch=1:launch=2",
                "--",
                &hello,
            ],
            vec!["launch 2 never happens"],
        ),
        (
            vec!["-n", "2", "--spares", "1", "--", &hello],
            vec!["--spares 1: there is nowhere to put spare nodes"],
        ),
        (
            vec!["--hostfile", "/no/such/hostfile", "--", &hello],
            vec!["cannot read --hostfile /no/such/hostfile"],
        ),
    ] {
        let (out, text) = launch(&args, &m, &d);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        for needle in needles {
            assert!(
                text.contains(needle),
                "{args:?}: expected {needle:?} in {text}"
            );
        }
    }
}

/// A spare may be named for a launch that a lose-node fault before it brings the spare into.
#[test]
fn spare_can_be_named_after_a_node_loss() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let (out, text) = launch(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--spares",
            "1",
            "--inject",
            "lose-node:node=vnode1:epoch=2",
            "--inject",
            "reboot:node=vnode2:epoch=4:launch=1",
            "--dry-run",
            "--",
            &hello,
        ],
        &m,
        &d,
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
}

/// A --run-dir that is a regular file is refused, naming it, and so is one the user cannot
/// write in (unless root, whom permissions do not stop).
#[test]
fn run_dir_must_be_a_writable_directory() {
    use std::os::unix::fs::PermissionsExt;
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let file = d.0.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let shown = file.display().to_string();
    let (out, text) = launch(&["--run-dir", &shown, "--", &hello], &m, &d);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "--run-dir {shown} is not a directory (it is a regular file)"
        )),
        "{text}"
    );
    assert!(!text.contains("cannot create run directory"), "{text}");
    if uid() == "0" {
        return;
    }
    let ro = d.0.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let shown = ro.display().to_string();
    let (out, text) = launch(&["--run-dir", &shown, "--", &hello], &m, &d);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("run directory {shown} is not writable")),
        "{text}"
    );
}

/// --help says what exit status 4 means and that --hang-timeout acts only after a rank died.
#[test]
fn help_documents_never_fired_and_hang_timeout() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let (out, text) = launch(&["--help"], &m, &d);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "never fired: ...`) and exits with status 4",
        "Only after a rank has died",
        "A job whose ranks are all alive, however long it runs or however stuck it is, is never \
         ended",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
}

/// A job that succeeds although an --inject fault never fired (its epoch never came, its launch
/// never happened, its time never came) is not a success: the fault was not tested. Each such
/// fault is named, and the exit status is 4.
#[test]
fn injection_that_never_fired_is_not_a_success() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let rank = fake_rank(&d.0);
    let run_dir = d.0.join("run");
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-unfired",
            "--run-dir",
            &run_dir.display().to_string(),
            "--inject",
            "kill-rank:rank=1:epoch=999",
            "--inject",
            "kill-rank:rank=0:at=100",
            "--inject",
            "reboot:node=vnode1:epoch=2:launch=1",
            "--",
            &rank,
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(4), "{text}");
    for needle in [
        "job t-unfired finished successfully after 0 restarts",
        "--inject kill-rank:rank=1:epoch=999 never fired: the job ended before epoch 999",
        "--inject kill-rank:rank=0:at=100 never fired: launch 0 ended",
        "before at=100",
        "--inject reboot:node=vnode1:epoch=2:launch=1 never fired: launch 1 never happened",
        "job t-unfired succeeded, but 3 of the 3 injected faults never fired",
        "exit status 4",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
}

/// A hostfile that is a FIFO (nobody writes it) or /dev/zero (never ends) is refused at once,
/// not read forever.
#[test]
fn hostfile_must_be_a_regular_file() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let fifo = d.0.join("hosts.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let fifo = fifo.display().to_string();
    for (file, needle) in [
        (
            fifo.as_str(),
            "is a FIFO: give a regular file listing one host per line",
        ),
        ("/dev/zero", "--hostfile /dev/zero is a device"),
    ] {
        let (status, text) = supervise(&["--hostfile", file, "--dry-run", "--", &hello], &m, &d);
        assert_eq!(status.code(), Some(2), "{file}: {text}");
        assert!(
            text.contains(needle),
            "{file}: expected {needle:?} in {text}"
        );
    }
}

/// A program without execute permission is refused before anything runs (it would fail on
/// every rank, and look like a crash to restart); the PATH lookup passes over such files as a
/// shell does.
#[test]
fn program_must_be_executable() {
    use std::os::unix::fs::PermissionsExt;
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let (first, second) = (d.0.join("bin1"), d.0.join("bin2"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let plain = first.join("psls-prog");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shown = plain.display().to_string();
    let (out, text) = launch(&["-n", "1", "--dry-run", "--", &shown], &m, &d);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("is not executable (chmod +x {shown})")),
        "{text}"
    );
    let on_path = |path: &str| {
        Command::new(sibling_binary("psls-launch"))
            .args(["-n", "1", "--dry-run", "--", "psls-prog"])
            .env("PATH", path)
            .env("PSLS_MEMORY_BASE", m.path())
            .env("PSLS_DISK_BASE", d.path())
            .env_remove("SLURM_JOB_ID")
            .output()
            .expect("run psls-launch")
    };
    // Only a file without execute permission on PATH: refused, naming it.
    let out = on_path(&first.display().to_string());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "PATH has only {shown}, without execute permission"
        )),
        "{text}"
    );
    // An executable one later on PATH is the one used.
    let exe = script(&second, "psls-prog", "#!/bin/sh\nexit 0\n");
    let path = std::env::join_paths([&first, &second]).unwrap();
    let out = on_path(path.to_str().unwrap());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&exe), "{exe} not run: {text}");
}

#[test]
fn dry_run_shows_the_node_map_with_a_spare() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let run_dir = d.0.join("run");
    let (out, text) = launch(
        &[
            "-n",
            "4",
            "--virtual-nodes",
            "2",
            "--spares",
            "1",
            "--job-id",
            "t-dry",
            "--run-dir",
            &run_dir.display().to_string(),
            "--inject",
            "reboot:node=vnode1:epoch=3",
            "--dry-run",
            "--",
            &hello,
        ],
        &m,
        &d,
    );
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 vnode0\n1 vnode0\n2 vnode1\n3 vnode1\n# spares: vnode2\n"),
        "{text}"
    );
    assert!(
        text.contains("4 ranks on 2 virtual nodes + 1 spare"),
        "{text}"
    );
    for env in [
        format!("PSLS_NODE_MAP={}", run_dir.join("nodemap.0").display()),
        "PSLS_CKPT_NAME=t-dry".into(),
        "PSLS_RESTART=0".into(),
        // The node's first rank dies when checkpoint 3 begins.
        "PSLS_FAULT=ckpt-begin:epoch=3:rank=2".into(),
    ] {
        assert!(stdout.contains(&env), "{env} in {text}");
    }
    assert!(!stdout.contains("PSLS_VIRTUAL_NODES"), "{text}");
    assert!(!run_dir.exists(), "a dry run writes nothing");
    // ... and does not claim it wrote the node map.
    assert!(!stdout.contains("(written to"), "{text}");
    assert!(
        stdout.contains(&format!(
            "# node map (a real run would write it to {} and pass it as PSLS_NODE_MAP; a dry \
             run writes nothing)",
            run_dir.join("nodemap.0").display()
        )),
        "{text}"
    );
}

/// Writes the roots a node has for job `j` and checkpoint set `s` under the two bases.
fn craft_roots(m: &Scratch, d: &Scratch, node: &str, records: usize) {
    let uid = uid();
    std::fs::create_dir_all(m.0.join(format!("psls-{uid}/j/{node}"))).unwrap();
    std::fs::create_dir_all(d.0.join(format!("psls-{uid}/j/{node}"))).unwrap();
    let set = m.0.join(format!("psls-{uid}/ckpt-s/{node}"));
    std::fs::create_dir_all(&set).unwrap();
    for r in 0..records {
        std::fs::write(set.join(format!("ckpt.rank{r}")), b"record").unwrap();
    }
    std::fs::write(set.join("frames.0"), b"not a record").unwrap();
}

fn probe(node: &str, run_dir: &Path, m: &Scratch, d: &Scratch) -> (Option<i32>, String) {
    let (out, _) = launch(
        &[
            "probe",
            "--node",
            node,
            "--job-id",
            "j",
            "--ckpt-name",
            "s",
            "--run-dir",
            &run_dir.display().to_string(),
        ],
        m,
        d,
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn probe_reports_intact_lost_and_dead_nodes() {
    let (m, d) = (Scratch::shm("probe-mem"), Scratch::new("probe-disk"));
    let run_dir = d.0.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    craft_roots(&m, &d, "vnode1", 2);
    craft_roots(&m, &d, "vnode2", 1);
    assert_eq!(
        probe("vnode1", &run_dir, &m, &d),
        (
            Some(0),
            "probe node=vnode1 answers=yes memory=intact disk=intact pfs=lost ckpt-records=2"
                .into()
        )
    );
    // A reboot: the node's memory roots are gone, its disk root stays.
    let uid = uid();
    std::fs::remove_dir_all(m.0.join(format!("psls-{uid}/j/vnode1"))).unwrap();
    std::fs::remove_dir_all(m.0.join(format!("psls-{uid}/ckpt-s/vnode1"))).unwrap();
    assert_eq!(
        probe("vnode1", &run_dir, &m, &d),
        (
            Some(0),
            "probe node=vnode1 answers=yes memory=lost disk=intact pfs=lost ckpt-records=0".into()
        )
    );
    // A node never seen at all has nothing.
    assert_eq!(
        probe("vnode5", &run_dir, &m, &d).1,
        "probe node=vnode5 answers=yes memory=lost disk=lost pfs=lost ckpt-records=0"
    );
    // A dead node does not answer, whatever its roots hold.
    std::fs::write(run_dir.join("dead-nodes"), "vnode2\n").unwrap();
    assert_eq!(
        probe("vnode2", &run_dir, &m, &d),
        (Some(1), "probe node=vnode2 answers=no".into())
    );
    // A name that is not a node name is refused.
    assert_eq!(probe("../x", &run_dir, &m, &d).0, Some(2));
}

#[test]
fn application_error_is_not_restarted() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let case = psls_tests::testcase_binary().display().to_string();
    let run_dir = d.0.join("run");
    // The test-case binary exits with 64 on an unknown case, before PSLS starts.
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--spares",
            "1",
            "--job-id",
            "t-apperr",
            "--run-dir",
            &run_dir.display().to_string(),
            "--",
            &case,
            "no-such-case",
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(64), "{text}");
    assert!(
        text.contains("job t-apperr failed with exit code 64: an error of the application"),
        "{text}"
    );
    assert!(text.contains("not restarted"), "{text}");
    // Both nodes were probed and found undamaged.
    assert!(text.contains("probe vnode0: answers"), "{text}");
    assert!(text.contains("probe vnode1: answers"), "{text}");
    assert!(!text.contains("restart 1 of"), "{text}");
    assert!(run_dir.join("nodemap.0").is_file());
    assert!(!run_dir.join("nodemap.1").exists(), "relaunched: {text}");
}

#[test]
fn failing_program_exit_code_is_returned() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let case = psls_tests::testcase_binary().display().to_string();
    // The test-case binary exits with 64 on an unknown case, before PSLS starts.
    let (out, text) = launch(
        &[
            "-n",
            "2",
            "--job-id",
            "t-fail",
            "--run-dir",
            &d.path(),
            "--",
            &case,
            "no-such-case",
        ],
        &m,
        &d,
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("failed with exit code"), "{text}");
}

#[test]
fn gives_up_after_max_restarts() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let crash = script(&d.0, "crash.sh", "#!/bin/sh\nkill -9 $$\n");
    let run_dir = d.0.join("run");
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--max-restarts",
            "1",
            "--job-id",
            "t-giveup",
            "--run-dir",
            &run_dir.display().to_string(),
            "--",
            &crash,
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(3), "{text}");
    for needle in [
        "failure seen: launch 0 of job t-giveup",
        "failure classified: process crash",
        "restart 1 of 1: relaunching job t-giveup",
        "failure seen: launch 1 of job t-giveup",
        "giving up on job t-giveup: --max-restarts 1 reached (1 restart done)",
        "report: 1 restart of 1 allowed",
        "failures: launch 0: process crash; launch 1: process crash",
        "report: lost nodes: none",
        "report: what remains: vnode0: nothing; vnode1: nothing",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    assert!(run_dir.join("nodemap.1").is_file());
    assert!(
        !run_dir.join("nodemap.2").exists(),
        "a third launch: {text}"
    );
}

#[test]
fn lost_node_is_replaced_by_the_spare() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let rank = fake_rank(&d.0);
    let run_dir = d.0.join("run");
    let (status, text) = supervise(
        &[
            "-n",
            "4",
            "--virtual-nodes",
            "2",
            "--spares",
            "1",
            "--job-id",
            "t-spare",
            "--run-dir",
            &run_dir.display().to_string(),
            "--inject",
            "lose-node:node=vnode1:at=0.5",
            "--",
            &rank,
        ],
        &m,
        &d,
    );
    assert!(status.success(), "{text}");
    for needle in [
        "launch 0: started fresh",
        "inject lose-node:node=vnode1:at=0.5: killed rank 2",
        "inject lose-node:node=vnode1:at=0.5: killed rank 3",
        "lose-node of vnode1: removed its memory and disk roots",
        "probe vnode0: answers; memory root intact, disk root intact",
        "probe vnode1: does not answer",
        "failure classified: node loss: vnode1",
        "spare vnode2 replaces lost node vnode1",
        "restart 1 of 3: relaunching job t-spare on vnode0 vnode2",
        "launch 1: resumed from memory checkpoint 2",
        "fake rank 3 done on vnode2 in launch 1",
        "job t-spare finished successfully after 1 restart",
        "recovered from: launch 0: loss of vnode1",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    // The spare took the lost node's place in the node map.
    let map = std::fs::read_to_string(run_dir.join("nodemap.1")).unwrap();
    assert!(
        map.ends_with("0 vnode0\n1 vnode0\n2 vnode2\n3 vnode2\n"),
        "{map}"
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("dead-nodes")).unwrap(),
        "vnode1\n"
    );
    // The lost node's roots are gone (memory and disk); the others' stay.
    let uid = uid();
    assert!(!m.0.join(format!("psls-{uid}/t-spare/vnode1")).exists());
    assert!(!d.0.join(format!("psls-{uid}/t-spare/vnode1")).exists());
    assert!(m.0.join(format!("psls-{uid}/t-spare/vnode0")).is_dir());
    assert!(d.0.join(format!("psls-{uid}/t-spare/vnode2")).is_dir());
}

#[test]
fn reboot_then_power_cut_then_a_lost_node_without_spare() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let rank = fake_rank(&d.0);
    let run_dir: PathBuf = d.0.join("run");
    let (status, text) = supervise(
        &[
            "-n",
            "4",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-classes",
            "--run-dir",
            &run_dir.display().to_string(),
            "--inject",
            "reboot:rank=3:at=0.5",
            "--inject",
            "power-cut:at=0.5:launch=1",
            "--inject",
            "lose-node:node=vnode0:at=0.5:launch=2",
            "--",
            &rank,
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(3), "{text}");
    for needle in [
        "reboot of vnode1: removed its memory roots (2 directories)",
        "probe vnode1: answers; memory root missing, disk root intact",
        "failure classified: reboot of vnode1 (memory root lost)",
        "restart 1 of 3",
        "launch 1: resumed from memory checkpoint 2",
        "power-cut of vnode0: removed its memory roots",
        "failure classified: power cut (every memory root lost)",
        "restart 2 of 3",
        "failure classified: node loss: vnode0 (does not answer)",
        "giving up on job t-classes: vnode0 lost and no spare left to replace it",
        "failures: launch 0: reboot of vnode1; launch 1: power cut; launch 2: loss of vnode0",
        "report: lost nodes: vnode0",
        "report: what remains: vnode0: nothing (lost); vnode1: memory root, disk root, 2 checkpoint records",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    assert!(!run_dir.join("nodemap.3").exists(), "relaunched: {text}");
}

/// The spares are part of the job's view: the runtime knows them (`PSLS_SPARES`).
#[test]
fn the_view_names_the_spares() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let run_dir = d.0.join("run").display().to_string();
    let (out, text) = launch(
        &[
            "-n",
            "4",
            "--virtual-nodes",
            "4",
            "--spares",
            "2",
            "--job-id",
            "t-spares",
            "--run-dir",
            &run_dir,
            "--",
            &hello,
        ],
        &m,
        &d,
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("spares: vnode4, vnode5"), "{text}");
}

/// The examples refuse sizes whose element count overflows, and a crash that could never
/// happen, with exit status 2 and the option named (not a panic, not a run that never
/// crashes). These are refused before MPI starts, so no launcher is needed.
#[test]
fn examples_refuse_impossible_options() {
    for (program, args, needle) in [
        (
            "mgs",
            &["--rows", "4294967296", "--vectors", "4294967296"][..],
            "--rows 4294967296 --vectors 4294967296: the matrix",
        ),
        (
            "heat",
            &["--size", "4294967296"][..],
            "--size 4294967296: two grids",
        ),
        (
            "mgs",
            &["--vectors", "16", "--crash-at", "99", "--crash-rank", "0"][..],
            "--crash-at 99: the run has steps 0 to 15",
        ),
    ] {
        let out = Command::new(sibling_binary(program))
            .args(args)
            .output()
            .expect("run example");
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program} {args:?}: {text}");
        assert!(text.contains(needle), "{program} {args:?}: {text}");
        assert!(!text.contains("panicked"), "{program} {args:?}: {text}");
    }
}

/// `mgs --crash-rank` beyond the job's ranks is refused by every rank alike (exit status 2,
/// nobody left waiting), and the launcher returns that as the application's error.
#[test]
fn mgs_refuses_a_crash_rank_beyond_the_job() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let mgs = sibling_binary("mgs").display().to_string();
    let run_dir = d.0.join("run").display().to_string();
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-crashrank",
            "--run-dir",
            &run_dir,
            "--",
            &mgs,
            "--rows",
            "64",
            "--vectors",
            "8",
            "--crash-at",
            "3",
            "--crash-rank",
            "9",
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("--crash-rank 9: the job has ranks 0 to 1"),
        "{text}"
    );
    assert!(!text.contains("restart 1 of"), "{text}");
}

/// An --mpi-arg that mpirun rejects is reported as such (exit status 2, the command shown),
/// not as an error of the application; a program that fails before it starts, with --mpi-arg
/// options mpirun accepts, is still the application's error.
#[test]
fn mpi_arg_rejected_by_mpirun_is_named() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    let run_dir = d.0.join("run").display().to_string();
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-mpiarg",
            "--run-dir",
            &run_dir,
            "--mpi-arg=--no-such-mpirun-option",
            "--",
            &hello,
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("rejected the command line"),
        "expected the rejection in {text}"
    );
    assert!(
        text.contains("check the --mpi-arg options (--no-such-mpirun-option)"),
        "{text}"
    );
    assert!(text.contains("the command was:"), "{text}");
    assert!(!text.contains("an error of the application"), "{text}");
    assert!(!text.contains("restart 1 of"), "{text}");

    let case = psls_tests::testcase_binary().display().to_string();
    let mca: &[&str] = if MpiFlavor::from_env() == MpiFlavor::Mpich {
        &["--mpi-arg=-genv", "--mpi-arg=PSLS_TEST_X", "--mpi-arg=1"]
    } else {
        &["--mpi-arg=-x", "--mpi-arg=PSLS_TEST_X=1"]
    };
    let run_dir = d.0.join("run2").display().to_string();
    let mut args = vec![
        "-n",
        "2",
        "--virtual-nodes",
        "2",
        "--job-id",
        "t-mpiarg2",
        "--run-dir",
        &run_dir,
    ];
    args.extend_from_slice(mca);
    args.extend(["--", &case, "no-such-case"]);
    let (status, text) = supervise(&args, &m, &d);
    assert_eq!(status.code(), Some(64), "{text}");
    assert!(text.contains("an error of the application"), "{text}");
}

/// A `psls-launch` running in the background, its output collected.
struct Background {
    child: std::process::Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    fn start(args: &[&str], mem: &Scratch, disk: &Scratch) -> Background {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(sibling_binary("psls-launch"));
        cmd.args(args)
            .env("PSLS_MEMORY_BASE", mem.path())
            .env("PSLS_DISK_BASE", disk.path())
            .env_remove("SLURM_JOB_ID")
            .env_remove("PSLS_CKPT_NAME")
            .env_remove("PSLS_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only signal(), which is async-signal-safe: the test
        // sends SIGINT and SIGTERM, which a shell may have left ignored for a background job.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start psls-launch");
        let mut o = child.stdout.take().expect("stdout");
        let mut e = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = o.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        });
        Background {
            child,
            out: Some(out),
            err: Some(err),
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill() on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill {sig} {}", self.child.id());
    }

    /// Waits for the launcher to end within `limit` (else kills it): its status, if it ended,
    /// and everything it printed.
    fn wait(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let status = self.wait_status(limit);
        (status, self.output())
    }

    /// Everything the launcher printed (once whatever holds its output has ended).
    fn output(mut self) -> String {
        self.out.take().unwrap().join().unwrap_or_default()
            + &self.err.take().unwrap().join().unwrap_or_default()
    }

    /// Waits for the launcher to end within `limit` (else kills it): its status, if it ended.
    fn wait_status(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for psls-launch") {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in rank like `fake_rank` that runs for about `secs` seconds.
fn slow_rank(dir: &Path, secs: u32) -> String {
    script(
        dir,
        "slow-rank.sh",
        &format!(
            r#"#!/bin/sh
r=${{OMPI_COMM_WORLD_RANK:-${{PMI_RANK:-0}}}}
node=$(awk -v r="$r" '$1==r {{print $2}}' "$PSLS_NODE_MAP")
mkdir -p "$PSLS_RUN_DIR/ranks"
echo "$$ $(uname -n) $node" > "$PSLS_RUN_DIR/ranks/rank.$r.tmp"
mv "$PSLS_RUN_DIR/ranks/rank.$r.tmp" "$PSLS_RUN_DIR/ranks/rank.$r"
[ "$r" = 0 ] && echo fresh > "$PSLS_RUN_DIR/resumed"
i=0
while [ $i -lt {} ]; do sleep 0.1; i=$((i+1)); done
echo "slow rank $r done"
"#,
            secs * 10
        ),
    )
}

/// The live (not zombie) processes of this host whose command line contains `needle`, but
/// `except`.
fn processes_with(needle: &str, except: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == except || pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let i = s.rfind(')')?;
                s[i + 1..].trim_start().chars().next()
            })
            .is_some_and(|c| c == 'Z' || c == 'X');
        if cmdline.contains(needle) && !zombie {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Kills, when dropped, whatever process still runs `needle` (what a failed test left).
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, _) in processes_with(&self.0, 0) {
            // SAFETY: kill() on a process of the test's own job.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Waits until `n` ranks announced themselves in `run_dir/ranks`.
fn wait_for_ranks(run_dir: &Path, n: usize, bg: &mut Background) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let k = (0..n)
            .filter(|r| run_dir.join(format!("ranks/rank.{r}")).is_file())
            .count();
        if k == n {
            return;
        }
        if let Ok(Some(s)) = bg.child.try_wait() {
            panic!("psls-launch ended ({s}) before its ranks started");
        }
        assert!(Instant::now() < deadline, "the ranks did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM (`scancel`, `kill`) or SIGINT (Ctrl-C) sent to psls-launch alone stops the job:
/// mpirun and every rank end, nothing is relaunched, and the launcher exits with 128 + the
/// signal.
#[test]
fn stop_signal_ends_the_job_without_relaunch() {
    for (sig, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
        let rank = slow_rank(&d.0, 120);
        let _reaper = Reaper(rank.clone());
        let run_dir = d.0.join("run");
        let shown = run_dir.display().to_string();
        let mut bg = Background::start(
            &[
                "-n",
                "2",
                "--virtual-nodes",
                "2",
                "--job-id",
                "t-stop",
                "--run-dir",
                &shown,
                "--",
                &rank,
            ],
            &m,
            &d,
        );
        wait_for_ranks(&run_dir, 2, &mut bg);
        let launcher = bg.child.id();
        let before = processes_with(&rank, launcher);
        assert!(before.len() >= 3, "mpirun and 2 ranks expected: {before:?}");
        let t0 = Instant::now();
        bg.signal(sig);
        let (status, text) = bg.wait(Duration::from_secs(40));
        let status = status.unwrap_or_else(|| panic!("no exit within 40 s of {name}:\n{text}"));
        assert_eq!(status.code(), Some(code), "{name}: {status}\n{text}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{text}");
        assert!(
            text.contains(&format!(
                "psls-launch: got {name}: stopping the job (no relaunch)"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("job t-stop stopped by {name}")),
            "{text}"
        );
        assert!(!text.contains("relaunching"), "{text}");
        assert!(!text.contains("probe vnode"), "{text}");
        let left = processes_with(&rank, launcher);
        assert!(left.is_empty(), "{name}: left running: {left:?}\n{text}");
    }
}

/// A SIGKILL of psls-launch, which it cannot catch, still ends mpirun and the ranks (mpirun
/// gets SIGTERM when its parent dies).
#[test]
fn killed_launcher_leaves_no_job_behind() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let rank = slow_rank(&d.0, 120);
    let _reaper = Reaper(rank.clone());
    let run_dir = d.0.join("run");
    let shown = run_dir.display().to_string();
    let mut bg = Background::start(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-killed",
            "--run-dir",
            &shown,
            "--",
            &rank,
        ],
        &m,
        &d,
    );
    wait_for_ranks(&run_dir, 2, &mut bg);
    let launcher = bg.child.id();
    assert!(processes_with(&rank, launcher).len() >= 3);
    bg.signal(libc::SIGKILL);
    // Not its output yet: mpirun, if left running, holds the pipes open.
    let status = bg.wait_status(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_with(&rank, launcher);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after psls-launch was killed: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two launchers on one run directory would clear each other's rank files and kill each
/// other's ranks: the second is refused at once (exit status 2, naming the directory and the
/// first launcher's pid), the first goes on, and the directory is free again once it ends.
#[test]
fn second_launcher_on_a_run_dir_is_refused() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let rank = slow_rank(&d.0, 6);
    let _reaper = Reaper(rank.clone());
    let run_dir = d.0.join("run");
    let shown = run_dir.display().to_string();
    let mut first = Background::start(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-lock1",
            "--run-dir",
            &shown,
            "--",
            &rank,
        ],
        &m,
        &d,
    );
    wait_for_ranks(&run_dir, 2, &mut first);
    let t0 = Instant::now();
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-lock2",
            "--run-dir",
            &shown,
            "--",
            &rank,
        ],
        &m,
        &d,
    );
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{text}");
    assert!(
        text.contains(&format!(
            "run directory {shown} is in use by another psls-launch (pid {}",
            first.child.id()
        )),
        "{text}"
    );
    assert!(!text.contains("launch 0:"), "{text}");
    let (status, text) = first.wait(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{text}");
    assert!(
        text.contains("job t-lock1 finished successfully after 0 restarts"),
        "{text}"
    );
    assert!(!text.contains("failure seen"), "{text}");

    // The lock went with the first launcher: its run directory serves again.
    let hello = sibling_binary("hello").display().to_string();
    let (status, text) = supervise(
        &[
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--job-id",
            "t-lock3",
            "--run-dir",
            &shown,
            "--",
            &hello,
        ],
        &m,
        &d,
    );
    assert!(status.success(), "{text}");
}

/// A job that dies of SIGPIPE because psls-launch's own standard output was closed (`| head`)
/// is not a crash to recover from: a relaunch would die the same way. The launcher says so and
/// exits with 141 (128 + SIGPIPE), as a process of a pipeline killed by SIGPIPE does.
#[test]
fn sigpipe_from_closed_output_is_not_restarted() {
    use std::io::BufRead;
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let rank = script(
        &d.0,
        "chatty-rank.sh",
        r#"#!/bin/sh
r=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}
mkdir -p "$PSLS_RUN_DIR/ranks"
echo "$$ $(uname -n) vnode$r" > "$PSLS_RUN_DIR/ranks/rank.$r"
i=0
while [ $i -lt 400 ]; do echo "rank $r line $i"; sleep 0.05; i=$((i+1)); done
"#,
    );
    let _reaper = Reaper(rank.clone());
    let run_dir = d.0.join("run").display().to_string();
    let mut child = Command::new(sibling_binary("psls-launch"))
        .args([
            "-n",
            "2",
            "--virtual-nodes",
            "2",
            "--max-restarts",
            "2",
            "--job-id",
            "t-pipe",
            "--run-dir",
            &run_dir,
            "--",
            &rank,
        ])
        .env("PSLS_MEMORY_BASE", m.path())
        .env("PSLS_DISK_BASE", d.path())
        .env_remove("SLURM_JOB_ID")
        .env_remove("PSLS_CKPT_NAME")
        .env_remove("PSLS_FAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start psls-launch");
    let mut e = child.stderr.take().expect("stderr");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    });
    // Read the first line of the job's output, then close the pipe, as `| head -1` does.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read the job's output");
    assert!(first.contains("line"), "{first}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for psls-launch") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = err.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("no exit within 60 s:\n{text}"));
    assert!(!text.contains("relaunching"), "{text}");
    if MpiFlavor::from_env() == MpiFlavor::Mpich {
        // The launcher reads MPICH's output itself: the job does not see the closed pipe.
        assert!(
            status.code() == Some(141) || status.success(),
            "{status}\n{text}"
        );
    } else {
        assert_eq!(status.code(), Some(141), "{status}\n{text}");
        assert!(
            text.contains("job t-pipe died of SIGPIPE: psls-launch's standard output is closed"),
            "{text}"
        );
    }
}
