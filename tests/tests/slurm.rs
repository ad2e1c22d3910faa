//! Multi-rank tests under `srun` on the emulated Slurm cluster (`scripts/slurm-cluster.sh`),
//! where every node is a real Slurm node and MPI traffic crosses nodes.
//!
//! `scripts/test.sh` starts the cluster and sets `PSLS_TEST_SLURM=1`; without it these tests
//! only print that they were not run.

use psls_tests::{Launch, Launcher, Scratch};

fn enabled() -> bool {
    let on = std::env::var("PSLS_TEST_SLURM").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "not run: set PSLS_TEST_SLURM=1 with the emulated cluster up (scripts/test.sh does)"
        );
    }
    on
}

fn srun(case: &str, ranks: usize, nodes: usize) -> Launch {
    // Each Slurm node gets its own roots; the job id comes from SLURM_JOB_ID.
    Launch::case(case, ranks)
        .launcher(Launcher::Srun)
        .nodes(nodes)
}

#[test]
fn srun_init_and_finalize_on_1_2_and_4_nodes() {
    if !enabled() {
        return;
    }
    for n in [1, 2, 4] {
        let (m, d) = (Scratch::shm("srun-mem"), Scratch::new("srun-disk"));
        let out = srun("init", n, n).roots(&m, &d).run();
        out.assert_success();
        out.assert_lines("PASS", n);
        let mut names: Vec<String> = out
            .lines_with("NODE")
            .iter()
            .map(|l| l.rsplit("name=").next().unwrap().to_string())
            .collect();
        names.sort();
        let want: Vec<String> = (1..=n).map(|k| format!("n{k}")).collect();
        assert_eq!(
            names, want,
            "each rank runs on its own Slurm node:\n{}",
            out.stdout
        );
        out.assert_output_contains("(Slurm)");
    }
}

#[test]
fn srun_node_map_and_buddy_ring_on_4_nodes() {
    if !enabled() {
        return;
    }
    let (m, d) = (Scratch::shm("srun-mem"), Scratch::new("srun-disk"));
    let out = srun("nodemap", 4, 4)
        .roots(&m, &d)
        .env("PSLS_EXPECT_NODES", "4")
        .run();
    out.assert_success();
    out.assert_lines("PASS", 4);
    out.assert_output_contains("buddy ring: n1 -> n2 -> n3 -> n4 -> n1");
    out.assert_output_contains("job slurm-");
}

#[test]
fn srun_rma_across_nodes() {
    if !enabled() {
        return;
    }
    // Open MPI needs the cluster script's environment here (TCP on loopback between the
    // emulated nodes; see docs/design.md); MPICH works over PMI-2 as it is.
    for (case, ranks, nodes) in [
        ("stamp", 4, 4),
        ("cas_counter", 4, 4),
        ("stamp", 4, 2),
        ("rma_errors", 2, 2),
    ] {
        let (m, d) = (Scratch::shm("srun-mem"), Scratch::new("srun-disk"));
        let out = srun(case, ranks, nodes).roots(&m, &d).run();
        out.assert_success();
        out.assert_lines("PASS", ranks);
    }
}

#[test]
fn srun_shared_virtual_memory_across_nodes() {
    if !enabled() {
        return;
    }
    let svm = psls_tests::sibling_binary("svm_cases");
    for (case, ranks, nodes) in [
        ("stripes", 4, 4),
        ("atomics", 4, 2),
        ("message_passing", 3, 3),
        ("blocked", 2, 2),
    ] {
        let (m, d) = (Scratch::shm("srun-mem"), Scratch::new("srun-disk"));
        let out = Launch::program(&svm, ranks)
            .arg(case)
            .launcher(Launcher::Srun)
            .nodes(nodes)
            .roots(&m, &d)
            .run();
        out.assert_success();
        out.assert_lines("PASS", ranks);
    }
}
