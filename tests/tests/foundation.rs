//! Foundation: init/finalize, node map and buddy ring, the safe RMA layer, and the errors a
//! user gets for bad configuration, unusable roots and a missing launcher.
//!
//! Runs under `mpirun` on this host (or `srun`, see `tests/tests/slurm.rs`).

use psls_tests::{sibling_binary, testcase_binary, Launch, Launcher, Scratch};
use std::process::Command;

fn roots() -> (Scratch, Scratch) {
    (Scratch::shm("mem"), Scratch::new("disk"))
}

#[test]
fn init_and_finalize_on_1_2_and_4_ranks() {
    for n in [1, 2, 4] {
        let (m, d) = roots();
        let out = Launch::case("init", n).roots(&m, &d).run();
        out.assert_success();
        out.assert_lines("PASS", n);
        out.assert_lines("NODE", n);
        // Every rank got a distinct rank number.
        let mut ranks: Vec<String> = out
            .lines_with("NODE")
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect();
        ranks.sort();
        ranks.dedup();
        assert_eq!(ranks.len(), n, "{}", out.stdout);
    }
}

/// Parses `NODE rank=R node=N name=X buddy=Y` lines into (rank, name, buddy).
fn node_lines(stdout: &str) -> Vec<(usize, String, String)> {
    let mut v: Vec<(usize, String, String)> = stdout
        .lines()
        .filter(|l| l.starts_with("NODE"))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .unwrap_or("")
                    .to_string()
            };
            (
                field("rank").parse().unwrap(),
                field("name"),
                field("buddy"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn node_map_and_buddy_ring_4_ranks_on_2_nodes() {
    let (m, d) = roots();
    let out = Launch::case("nodemap", 4)
        .nodes(2)
        .roots(&m, &d)
        .env("PSLS_EXPECT_NODES", "2")
        .run();
    out.assert_success();
    out.assert_lines("PASS", 4);
    let got = node_lines(&out.stdout);
    let want: Vec<(usize, String, String)> = vec![
        (0, "vnode0".into(), "vnode1".into()),
        (1, "vnode0".into(), "vnode1".into()),
        (2, "vnode1".into(), "vnode0".into()),
        (3, "vnode1".into(), "vnode0".into()),
    ];
    assert_eq!(got, want, "{}", out.stdout);
    out.assert_output_contains("buddy ring: vnode0 -> vnode1 -> vnode0");
    // Each virtual node got its own roots.
    for node in ["vnode0", "vnode1"] {
        let found = walk_has_dir(&m.0, node) && walk_has_dir(&d.0, node);
        assert!(
            found,
            "no roots for {node} under {} and {}",
            m.path(),
            d.path()
        );
    }
}

#[test]
fn node_map_and_buddy_ring_4_ranks_on_4_nodes() {
    let (m, d) = roots();
    let out = Launch::case("nodemap", 4)
        .nodes(4)
        .roots(&m, &d)
        .env("PSLS_EXPECT_NODES", "4")
        .run();
    out.assert_success();
    out.assert_lines("PASS", 4);
    let got = node_lines(&out.stdout);
    for (r, name, buddy) in &got {
        assert_eq!(name, &format!("vnode{r}"));
        assert_eq!(buddy, &format!("vnode{}", (r + 1) % 4));
    }
    out.assert_output_contains("buddy ring: vnode0 -> vnode1 -> vnode2 -> vnode3 -> vnode0");
}

#[test]
fn node_map_file_from_the_launcher_wins() {
    let (m, d) = roots();
    let map = d.0.join("nodes.map");
    std::fs::write(
        &map,
        "# written by psls-launch\n0 alpha\n1 beta\n2 alpha\n3 gamma\n",
    )
    .unwrap();
    let out = Launch::case("nodemap", 4)
        .nodes(2) // overridden by the map file
        .roots(&m, &d)
        .env("PSLS_NODE_MAP", map.display().to_string())
        .env("PSLS_EXPECT_NODES", "3")
        .run();
    out.assert_success();
    let got: Vec<(usize, String)> = node_lines(&out.stdout)
        .into_iter()
        .map(|(r, n, _)| (r, n))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "alpha".into()),
            (1, "beta".into()),
            (2, "alpha".into()),
            (3, "gamma".into())
        ]
    );
    out.assert_output_contains("buddy ring: alpha -> beta -> gamma -> alpha");
}

fn walk_has_dir(base: &std::path::Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(base) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        p.is_dir() && (p.file_name().is_some_and(|f| f == name) || walk_has_dir(&p, name))
    })
}

#[test]
fn every_rank_stamps_its_successor() {
    for n in [2, 3, 4] {
        let (m, d) = roots();
        let out = Launch::case("stamp", n).nodes(n.min(4)).roots(&m, &d).run();
        out.assert_success();
        out.assert_lines("PASS", n);
        assert_eq!(
            out.lines_with("CHECK")
                .iter()
                .filter(|l| l.contains("local stamp"))
                .count(),
            n
        );
    }
}

#[test]
fn compare_and_swap_counter_is_exact() {
    let (m, d) = roots();
    let out = Launch::case("cas_counter", 4).nodes(2).roots(&m, &d).run();
    out.assert_success();
    out.assert_lines("PASS", 4);
    out.assert_output_contains("CAS counter 4000 == 4000");
    out.assert_output_contains("fetch_and_op counter 4000 == 4000");
}

#[test]
fn bad_rma_calls_are_typed_errors() {
    let (m, d) = roots();
    let out = Launch::case("rma_errors", 2).nodes(2).roots(&m, &d).run();
    out.assert_success();
    out.assert_lines("PASS", 2);
}

#[test]
fn unsigned_min_and_max_are_exact_over_the_whole_range() {
    let (m, d) = roots();
    let out = Launch::case("reduce_u64", 3).nodes(3).roots(&m, &d).run();
    out.assert_success();
    out.assert_lines("PASS", 3);
}

#[test]
fn scatter_gives_each_rank_its_own_part() {
    let (m, d) = roots();
    let out = Launch::case("scatter_bytes", 3)
        .nodes(3)
        .roots(&m, &d)
        .run();
    out.assert_success();
    out.assert_lines("PASS", 3);
}

#[test]
fn bad_config_value_names_key_value_and_allowed() {
    let (m, d) = roots();
    let out = Launch::case("init", 2)
        .roots(&m, &d)
        .env("PSLS_PAGE_SIZE", "5000")
        .run();
    out.assert_failure();
    out.assert_output_contains("PSLS_PAGE_SIZE = \"5000\"");
    out.assert_output_contains("power of two");

    let cfg = d.0.join("psls.toml");
    std::fs::write(&cfg, "virtual_nodes = \"many\"\n").unwrap();
    let out = Launch::case("init", 2)
        .roots(&m, &d)
        .env("PSLS_CONFIG", cfg.display().to_string())
        .run();
    out.assert_failure();
    out.assert_output_contains("virtual_nodes = \"many\"");
    out.assert_output_contains("psls.toml");
    out.assert_output_contains("whole number");
}

/// A memory root too small for the job's pages: the first write that finds the tmpfs full
/// stops the job with a message that says so, wherever it lands (before, a write by the
/// service thread through the frames' alias died of a bare SIGBUS). Needs root for `mount`.
#[test]
fn a_full_memory_root_is_named_not_a_bare_signal() {
    let m = Scratch::new("tiny-mem");
    let d = Scratch::new("disk");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(m.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let out = Launch::program(sibling_binary("hello"), 2)
        .nodes(2)
        .roots(&m, &d)
        .run();
    let _ = Command::new("umount").arg(m.path()).status();
    out.assert_failure();
    out.assert_output_contains("the memory root (tmpfs) is full");
}

/// A setting the ranks must share, set on one rank only, is refused at init on every rank
/// (it went unnoticed, or failed much later), and so is a configuration error on one rank:
/// every rank stops at once, none waits for the one that failed.
#[test]
fn settings_that_differ_between_ranks_are_refused() {
    let (m, d) = roots();
    let case = testcase_binary().display().to_string();
    let on_rank1 = |setting: &str| {
        Launch::program("sh", 2)
            .args([
                "-c".to_string(),
                format!(
                    "r=${{OMPI_COMM_WORLD_RANK:-${{PMI_RANK:-$SLURM_PROCID}}}}; \
                     if [ \"$r\" = 1 ]; then export {setting}; fi; exec \"$0\" init"
                ),
                case.clone(),
            ])
            .roots(&m, &d)
            .run()
    };
    let out = on_rank1("PSLS_PAGE_SIZE=8K");
    out.assert_failure();
    out.assert_output_contains("PSLS_PAGE_SIZE = \"8192 on rank 1\"");
    out.assert_output_contains("rank 0 has 4096");
    let out = on_rank1("PSLS_SVM_BASE=0x300000000000");
    out.assert_failure();
    out.assert_output_contains("PSLS_SVM_BASE");
    let out = on_rank1("PSLS_STRIPE_PAGES=0");
    out.assert_failure();
    out.assert_output_contains("PSLS_STRIPE_PAGES = \"0\"");
    out.assert_output_contains("rank 1 failed");
}

/// A variable that is not UTF-8 (Open MPI copies the command line into the environment, so a
/// file name argument can make one) is none of PSLS's business unless it is a `PSLS_*` key.
#[test]
fn environment_variables_that_are_not_utf8_do_not_stop_init() {
    let (m, d) = roots();
    let case = testcase_binary().display().to_string();
    let with = |var: &str| {
        Launch::program("sh", 2)
            .args([
                "-c".to_string(),
                format!("{var}=\"$(printf 'x\\377')\" exec \"$0\" init"),
                case.clone(),
            ])
            .roots(&m, &d)
            .run()
    };
    let out = with("NOT_OURS");
    out.assert_success();
    out.assert_lines("PASS", 2);
    let out = with("PSLS_LOG");
    out.assert_failure();
    out.assert_output_contains("PSLS_LOG");
    out.assert_output_contains("not valid UTF-8");
}

#[test]
fn unwritable_or_unsuitable_roots_are_refused() {
    let (m, d) = roots();
    // /proc exists, but nobody can make directories in it, not even root.
    let out = Launch::case("init", 2)
        .env("PSLS_MEMORY_BASE", m.path())
        .env("PSLS_DISK_BASE", "/proc")
        .run();
    out.assert_failure();
    out.assert_output_contains("disk root /proc");
    out.assert_output_contains("PSLS_DISK_BASE");

    // A memory base that is not tmpfs.
    let out = Launch::case("init", 2)
        .env("PSLS_MEMORY_BASE", d.path())
        .env("PSLS_DISK_BASE", d.path())
        .run();
    if !out.stdout.contains("PASS") {
        out.assert_failure();
        out.assert_output_contains("not on tmpfs");
        out.assert_output_contains("PSLS_MEMORY_BASE");
    } // else: the temporary directory is itself tmpfs on this machine, nothing to refuse.
}

#[test]
fn another_users_root_is_never_opened() {
    let (m, d) = roots();
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    let mine = d.0.join(format!("psls-{}", uid.trim()));
    std::fs::create_dir(&mine).unwrap();
    let chowned = Command::new("chown")
        .arg("65534")
        .arg(&mine)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if chowned {
        let out = Launch::case("init", 2).roots(&m, &d).run();
        out.assert_failure();
        out.assert_output_contains("belongs to uid 65534");
    }
    // Whoever we are, a group- or world-open root is refused.
    let _ = Command::new("chown").arg(uid.trim()).arg(&mine).status();
    Command::new("chmod")
        .arg("755")
        .arg(&mine)
        .status()
        .unwrap();
    let out = Launch::case("init", 2).roots(&m, &d).run();
    out.assert_failure();
    out.assert_output_contains("mode 0755");
}

#[test]
fn a_failure_on_one_rank_fails_every_rank_without_a_hang() {
    let (m, d) = roots();
    let map = d.0.join("short.map");
    std::fs::write(&map, "0 n1\n1 n1\n2 n2\n").unwrap(); // rank 3 is missing
    let out = Launch::case("init", 4)
        .roots(&m, &d)
        .env("PSLS_NODE_MAP", map.display().to_string())
        .run();
    out.assert_failure();
    out.assert_output_contains("does not list rank 3");
    out.assert_output_contains("rank 3 failed");
}

#[test]
fn init_without_a_launcher_gives_the_documented_error() {
    let (m, d) = roots();
    let out = Command::new(testcase_binary())
        .arg("init")
        .env("PSLS_MEMORY_BASE", m.path())
        .env("PSLS_DISK_BASE", d.path())
        .env_remove("PSLS_ALLOW_SINGLETON")
        .env_remove("SLURM_PROCID")
        .env_remove("PMI_RANK")
        .env_remove("PMI_SIZE")
        .env_remove("PMIX_RANK")
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("no MPI launcher detected") && text.contains("psls-launch"),
        "{text}"
    );
}

#[test]
fn rank_binding_is_available() {
    if Launcher::from_env() == Launcher::Srun {
        return; // binding under srun is Slurm's business
    }
    let (m, d) = roots();
    let out = Launch::case("init", 2)
        .roots(&m, &d)
        .env("PSLS_BIND", "core")
        .run();
    out.assert_success();
    let binds = out.assert_lines("BIND", 2);
    assert!(binds.iter().any(|l| l.contains("Core #0")), "{binds:?}");
}

#[test]
fn a_failed_check_fails_the_job_quickly() {
    // The harness itself must be able to fail: a wrong expectation ends the whole job at once.
    let (m, d) = roots();
    let start = std::time::Instant::now();
    let out = Launch::case("nodemap", 4)
        .nodes(2)
        .roots(&m, &d)
        .env("PSLS_EXPECT_NODES", "3")
        .run();
    out.assert_failure();
    out.assert_output_contains("FAIL rank=");
    out.assert_output_contains("2 nodes, expected 3");
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
}
