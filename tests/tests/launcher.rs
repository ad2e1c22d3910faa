//! `psls-launch`, foundation version: it starts a job on virtual nodes and refuses bad options
//! with a clear message and exit status 2.

use psls_tests::{sibling_binary, MpiFlavor, Scratch};
use std::process::{Command, Output};

fn launch(args: &[&str], mem: &Scratch, disk: &Scratch) -> (Output, String) {
    let out = Command::new(sibling_binary("psls-launch"))
        .args(args)
        .env("PSLS_MEMORY_BASE", mem.path())
        .env("PSLS_DISK_BASE", disk.path())
        .env_remove("SLURM_JOB_ID")
        .output()
        .expect("run psls-launch");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
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
    assert!(
        text.contains("job t-launch: 4 ranks on 4 nodes (Virtual)"),
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
    // The job id keys the roots of every virtual node.
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    for k in 0..4 {
        let root = m.0.join(format!("psls-{}/t-launch/vnode{k}", uid.trim()));
        assert!(root.is_dir(), "missing {}", root.display());
    }
}

#[test]
fn bad_options_are_refused_clearly() {
    let (m, d) = (Scratch::shm("launch-mem"), Scratch::new("launch-disk"));
    let hello = sibling_binary("hello").display().to_string();
    for (args, needle) in [
        (vec!["-n", "2"], "required arguments were not provided"),
        (
            vec!["-n", "2", "--virtual-nodes", "3", "--", &hello],
            "every virtual node needs at least one rank",
        ),
        (
            vec!["--launcher", "lsf", "--", &hello],
            "invalid value 'lsf' for '--launcher",
        ),
        (vec!["-n", "0", "--", &hello], "invalid value '0'"),
        (vec!["--", "/no/such/program"], "not found"),
        (vec!["--job-id", "../x", "--", &hello], "--job-id"),
    ] {
        let (out, text) = launch(&args, &m, &d);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains(needle),
            "{args:?}: expected {needle:?} in {text}"
        );
    }
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
