//! The Fortran module (`bindings/fortran`) and the Fortran examples (`examples/fortran`), issue
//! 7: they compile with `mpif90` against the C library (`libpsls.a`, built next to this test
//! binary by `cargo build --workspace`), and they run under `psls-launch`:
//!
//! - a program of checks calls every wrapper, its error paths included (a NULL handle, a bad
//!   size, an unknown file, a string too short, a non-contiguous array, a call without `ierr`);
//! - the Fortran `mgs` prints the Rust `mgs`'s checksum, fault-free and after a node loss with
//!   a spare taking over;
//! - `heat_pfs` works on a mapped PFS file imported with `psls-pfs import`; its final grid,
//!   taken out with `psls-pfs export`, is byte-identical fault-free and after a node loss, its
//!   checksum is the one it printed, and the Rust `heat`'s for the same initial grid;
//! - the complete program of `docs/fortran.md` builds against a tree installed by `make
//!   install-files` (pkg-config's static link line) and survives a killed rank.
//!
//! `PSLS_MPI=mpich` selects `mpif90.mpich` and `mpirun.mpich` (with the libraries of the MPICH
//! build, `target/mpich`); `MPIF90` overrides the compiler.

use psls_tests::{sibling_binary, Launch, Launcher, MpiFlavor, Outcome, Scratch, OPENMPI_ENV};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

/// The C library's native dependencies, for a static link (`cargo rustc -p psls-c --lib --
/// --print native-static-libs`, less MPI and libc, which `mpif90` adds itself).
const NATIVE_LIBS: &[&str] = &[
    "-lhwloc",
    "-ludev",
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
];

/// Flags for every Fortran compile: warnings are errors, and no FMA contraction, so that the
/// arithmetic is the Rust examples' bit for bit.
const FFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-std=f2008",
    "-Wall",
    "-Werror",
    "-ffp-contract=off",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn flavor() -> MpiFlavor {
    MpiFlavor::from_env()
}

/// The MPI Fortran compiler wrapper of the MPI under test.
fn mpif90() -> String {
    if let Ok(fc) = std::env::var("MPIF90") {
        if !fc.is_empty() {
            return fc;
        }
    }
    match flavor() {
        MpiFlavor::Mpich => "mpif90.mpich".into(),
        MpiFlavor::OpenMpi => "mpif90.openmpi".into(),
    }
}

/// Runs a build command; on failure, the command and everything it said.
fn build_step(cmd: &mut Command) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what} failed ({}):\n{text}", out.status))
    }
}

/// The Fortran programs, built once per test binary.
struct Built {
    mgs: PathBuf,
    heat: PathBuf,
    checks: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(b) => b,
        Err(e) => panic!("building the Fortran module and programs:\n{e}"),
    }
}

/// Builds the module with `bindings/fortran/build.sh`, then the examples and the checks
/// program against it and against `libpsls.a` (static), into `<target>/<profile>/fortran`.
fn build() -> Result<Built, String> {
    let lib = sibling_binary("libpsls.a");
    if !lib.is_file() {
        return Err(format!(
            "{} not found: build the C library first (`cargo build --workspace`, or \
             `cargo build -p psls-c`, with the same target directory and MPI as this test)",
            lib.display()
        ));
    }
    let dir = sibling_binary("fortran");
    let _ = std::fs::remove_dir_all(&dir);
    let module = dir.join("module");
    let objs = dir.join("obj");
    std::fs::create_dir_all(&objs).map_err(|e| format!("{}: {e}", objs.display()))?;
    let fc = mpif90();
    build_step(
        Command::new(repo().join("bindings/fortran/build.sh"))
            .arg(&module)
            .env("MPIF90", &fc)
            .env("FFLAGS", "-O2 -g -Werror"),
    )?;
    for f in ["psls.mod", "libpslsf.a"] {
        if !module.join(f).is_file() {
            return Err(format!(
                "build.sh did not write {}",
                module.join(f).display()
            ));
        }
    }
    let checks_src = dir.join("checks.f90");
    std::fs::write(&checks_src, CHECKS).map_err(|e| format!("{}: {e}", checks_src.display()))?;
    let examples = repo().join("examples/fortran");
    let program = |name: &str, sources: &[PathBuf]| -> Result<PathBuf, String> {
        let exe = dir.join(name);
        build_step(
            Command::new(&fc)
                .args(FFLAGS)
                .arg("-I")
                .arg(&module)
                .arg("-J")
                .arg(&objs)
                .args(sources)
                .arg("-o")
                .arg(&exe)
                .arg("-L")
                .arg(&module)
                .arg("-lpslsf")
                .arg(&lib)
                .args(NATIVE_LIBS)
                .current_dir(&objs),
        )?;
        Ok(exe)
    };
    let util = examples.join("util.f90");
    Ok(Built {
        mgs: program("mgs_f90", &[util.clone(), examples.join("mgs.f90")])?,
        heat: program("heat_pfs", &[util, examples.join("heat_pfs.f90")])?,
        checks: program("checks", &[checks_src])?,
    })
}

/// What a `psls-launch` run did.
struct Run {
    status: Option<ExitStatus>,
    text: String,
}

impl Run {
    fn assert_success(&self, what: &str) {
        assert!(
            self.status.is_some_and(|s| s.success()),
            "{what}: psls-launch {}:\n{}",
            match self.status {
                Some(s) => format!("ended with {s}"),
                None => "timed out (killed)".into(),
            },
            self.text
        );
    }

    fn assert_says(&self, lines: &[&str]) {
        for l in lines {
            assert!(self.text.contains(l), "expected {l:?} in\n{}", self.text);
        }
    }

    /// The checksum of the program's last `NAME: ..., checksum X` line (16 hex digits).
    fn checksum(&self) -> String {
        let line = self
            .text
            .lines()
            .rfind(|l| !l.starts_with("psls-launch") && l.contains(", checksum "))
            .unwrap_or_else(|| panic!("no checksum line in\n{}", self.text));
        let sum = line.rsplit(' ').next().unwrap_or_default();
        assert!(
            sum.len() == 16 && sum.chars().all(|c| c.is_ascii_hexdigit()),
            "bad checksum {sum:?} in {line:?}"
        );
        sum.to_string()
    }
}

/// One job's node roots and run directory.
struct Roots {
    mem: Scratch,
    disk: Scratch,
}

impl Roots {
    fn new() -> Roots {
        Roots {
            mem: Scratch::shm("fortran-mem"),
            disk: Scratch::new("fortran-disk"),
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.disk.0.join("run")
    }

    /// `psls-launch -n 4 --virtual-nodes 4 OPTS [--inject I]... -- PROGRAM ARGS`.
    fn launch(&self, opts: &[&str], injects: &[&str], program: &Path, args: &[&str]) -> Run {
        let launcher = sibling_binary("psls-launch");
        self.launch_with(&launcher, 4, opts, injects, program, args)
    }

    /// `LAUNCHER -n 4 --virtual-nodes NODES OPTS [--inject I]... -- PROGRAM ARGS`, with a
    /// deadline: a job that hangs is killed (its whole process group) and reported.
    fn launch_with(
        &self,
        launcher: &Path,
        nodes: usize,
        opts: &[&str],
        injects: &[&str],
        program: &Path,
        args: &[&str],
    ) -> Run {
        let mut cmd = Command::new(launcher);
        cmd.args(["-n", "4", "--virtual-nodes", &nodes.to_string()])
            .args(["--job-id", "fortran", "--mpi"])
            .arg(match flavor() {
                MpiFlavor::Mpich => "mpich",
                MpiFlavor::OpenMpi => "openmpi",
            })
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(opts);
        for i in injects {
            cmd.arg("--inject").arg(i);
        }
        cmd.arg("--")
            .arg(program)
            .args(args)
            .env("PSLS_MEMORY_BASE", self.mem.path())
            .env("PSLS_DISK_BASE", self.disk.path())
            .env("PSLS_LOG", "warn")
            .env_remove("PSLS_CKPT_NAME")
            .env_remove("PSLS_FAULT")
            .env_remove("SLURM_JOB_ID")
            // The C library chooses Open MPI's one-sided components itself, before MPI_Init.
            .env_remove("OMPI_MCA_osc");
        if flavor() == MpiFlavor::OpenMpi {
            cmd.envs(OPENMPI_ENV.iter().copied());
        }
        run_with_deadline(cmd, Duration::from_secs(timeout_secs(300)))
    }

    /// `psls-pfs ARGS` on 4 ranks under mpirun, on the nodes of `node_map` (a `RANK NODE` file
    /// written by psls-launch) or else on vnode0..vnode3.
    fn pfs(&self, args: &[&str], node_map: Option<&Path>) -> Outcome {
        let mut l = Launch::program(sibling_binary("psls-pfs"), 4)
            .launcher(Launcher::Mpirun)
            .nodes(4)
            .roots(&self.mem, &self.disk)
            .arg("--quiet")
            .args(args.iter().copied());
        if let Some(m) = node_map {
            l = l.env("PSLS_NODE_MAP", m.display().to_string());
        }
        let out = l.run();
        out.assert_success();
        out
    }

    /// The node map of psls-launch's last launch in this run directory.
    fn last_node_map(&self) -> PathBuf {
        let dir = self.run_dir();
        (0..10)
            .rev()
            .map(|l| dir.join(format!("nodemap.{l}")))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no nodemap.L in {}", dir.display()))
    }
}

fn timeout_secs(default: u64) -> u64 {
    std::env::var("PSLS_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(default, |t| t.max(default))
}

fn run_with_deadline(cmd: Command, limit: Duration) -> Run {
    let o = psls_tests::run_command(cmd, limit);
    Run {
        status: o.status,
        text: format!("command: {}\n{}{}", o.command, o.stdout, o.stderr),
    }
}

/// FNV-1a 64 over the 8-byte little-endian words of `bytes`, as the examples print it.
fn fnv_words(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in bytes.chunks_exact(8) {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ x).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[test]
fn the_module_and_the_examples_compile_with_mpif90_warning_free() {
    let b = built();
    for p in [&b.mgs, &b.heat, &b.checks] {
        assert!(p.is_file(), "{} was not built", p.display());
    }
    // The module is self-contained: it compiles with the bare compiler too, in strict F2008.
    let scratch = Scratch::new("fortran-strict");
    build_step(
        Command::new("gfortran")
            .args(["-std=f2008", "-Wall", "-Wextra", "-Werror", "-c"])
            .arg(repo().join("bindings/fortran/psls.f90"))
            .arg("-o")
            .arg(scratch.0.join("psls.o"))
            .current_dir(&scratch.0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_wrapper_and_its_error_paths_work_on_four_ranks() {
    let b = built();
    let roots = Roots::new();
    let out = Launch::program(&b.checks, 4)
        .launcher(Launcher::Mpirun)
        .nodes(2)
        .roots(&roots.mem, &roots.disk)
        .env("PSLS_LOG", "error")
        .run();
    out.assert_success();
    out.assert_lines("PASS", 4);
    // A failed call without ierr stops the program with the error's description.
    let out = Launch::program(&b.checks, 2)
        .launcher(Launcher::Mpirun)
        .nodes(2)
        .roots(&roots.mem, &roots.disk)
        .env("PSLS_LOG", "error")
        .arg("--no-ierr")
        .run();
    out.assert_failure();
    out.assert_output_contains("psls: psls_barrier failed: ");
}

const MGS_ARGS: &[&str] = &["--rows", "1024", "--vectors", "48", "--every", "4"];

#[test]
fn fortran_mgs_prints_the_rust_checksum_fault_free_and_after_a_node_loss() {
    let b = built();
    let rust = Roots::new().launch(&[], &[], &sibling_binary("mgs"), MGS_ARGS);
    rust.assert_success("the Rust mgs");
    let want = rust.checksum();

    let free = Roots::new().launch(&[], &[], &b.mgs, MGS_ARGS);
    free.assert_success("the Fortran mgs, fault-free");
    free.assert_says(&["mgs: 1024 x 48, checkpoint every 4 vectors (12 taken in this run)"]);
    free.assert_says(&["(ok), checksum "]);
    assert!(!free.text.contains("failure seen"), "{}", free.text);
    assert_eq!(free.checksum(), want, "Fortran vs Rust mgs\n{}", free.text);

    let lost = Roots::new().launch(
        &["--spares", "1"],
        &["lose-node:node=vnode2:epoch=6"],
        &b.mgs,
        MGS_ARGS,
    );
    lost.assert_success("the Fortran mgs, vnode2 lost");
    lost.assert_says(&[
        "(ok), checksum ",
        "failure classified: node loss: vnode2",
        "spare vnode4 replaces lost node vnode2",
        "launch 1: resumed from memory checkpoint 5",
        "mgs: restarted from checkpoint 5 at vector 16",
        "finished successfully after 1 restart",
    ]);
    assert_eq!(lost.checksum(), want, "after the node loss\n{}", lost.text);
}

/// The heat runs' grid: heat.rs's initial grid (top row 1.0, the rest 0.0), N x N.
const HEAT_N: usize = 128;
/// An odd number of steps: the final grid is the work array's, copied back into the file.
const HEAT_STEPS: &str = "121";

fn initial_grid() -> Vec<u8> {
    let mut g = vec![0u8; HEAT_N * HEAT_N * 8];
    for j in 0..HEAT_N {
        g[j * 8..j * 8 + 8].copy_from_slice(&1.0f64.to_le_bytes());
    }
    g
}

/// Imports the initial grid as `heat-grid`, runs `heat_pfs` on it (with `opts` and `injects`),
/// exports the file: the run and the exported bytes.
fn heat_pfs_run(opts: &[&str], injects: &[&str]) -> (Run, Vec<u8>) {
    let b = built();
    let roots = Roots::new();
    let files = Scratch::new("fortran-files");
    let src = files.0.join("grid.dat");
    std::fs::write(&src, initial_grid()).expect("write the initial grid");
    roots.pfs(&["import", &src.display().to_string(), "heat-grid"], None);
    let args = [
        "--file",
        "heat-grid",
        "--steps",
        HEAT_STEPS,
        "--every",
        "10",
    ];
    let run = roots.launch(opts, injects, &b.heat, &args);
    run.assert_success("heat_pfs");
    let dst = files.0.join("result.dat");
    let map = roots.last_node_map();
    roots.pfs(
        &["export", "heat-grid", &dst.display().to_string()],
        Some(&map),
    );
    let bytes = std::fs::read(&dst).expect("read the exported grid");
    (run, bytes)
}

#[test]
fn heat_pfs_leaves_the_same_final_grid_in_its_pfs_file_after_a_node_loss() {
    let (free, free_grid) = heat_pfs_run(&[], &[]);
    free.assert_says(&[
        "heat_pfs: 128 x 128, 121 steps, checkpoint every 10 steps (13 taken in this run)",
        "final grid published to PFS file \"heat-grid\" (permanent checkpoint)",
    ]);
    assert!(!free.text.contains("failure seen"), "{}", free.text);
    assert_eq!(free_grid.len(), HEAT_N * HEAT_N * 8, "exported size");
    assert_ne!(
        free_grid,
        initial_grid(),
        "the file still holds the initial grid"
    );
    // The file holds the grid the program printed the checksum of ...
    assert_eq!(fnv_words(&free_grid), free.checksum(), "{}", free.text);
    // ... which is the Rust heat's for the same grid and steps.
    let rust = Roots::new().launch(
        &[],
        &[],
        &sibling_binary("heat"),
        &["--size", "128", "--steps", HEAT_STEPS, "--every", "10"],
    );
    rust.assert_success("the Rust heat");
    assert_eq!(
        free.checksum(),
        rust.checksum(),
        "heat_pfs vs heat\n{}",
        rust.text
    );

    let (lost, lost_grid) = heat_pfs_run(&["--spares", "1"], &["lose-node:node=vnode2:epoch=6"]);
    lost.assert_says(&[
        "failure classified: node loss: vnode2",
        "spare vnode4 replaces lost node vnode2",
        "relaunching job fortran on vnode0 vnode1 vnode4 vnode3",
        "launch 1: resumed from memory checkpoint 5",
        "heat_pfs: restarted from checkpoint 5 at step 40",
    ]);
    assert_eq!(lost.checksum(), free.checksum(), "{}", lost.text);
    assert!(
        lost_grid == free_grid,
        "the exported grids differ (after the node loss: {} bytes, checksum {}; fault-free: \
         checksum {})",
        lost_grid.len(),
        fnv_words(&lost_grid),
        fnv_words(&free_grid)
    );
}

#[test]
fn heat_pfs_names_a_missing_file_and_bad_options() {
    let b = built();
    let roots = Roots::new();
    let out = Launch::program(&b.heat, 2)
        .launcher(Launcher::Mpirun)
        .nodes(2)
        .roots(&roots.mem, &roots.disk)
        .args(["--file", "nosuch"])
        .run();
    out.assert_failure();
    out.assert_output_contains("heat_pfs: no PFS file \"nosuch\"");
    out.assert_output_contains("psls-pfs import");
    let out = Launch::program(&b.heat, 2)
        .launcher(Launcher::Mpirun)
        .nodes(2)
        .roots(&roots.mem, &roots.disk)
        .args(["--steps", "ten"])
        .run();
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    out.assert_output_contains("--steps \"ten\": expected a whole number");
    let out = Launch::program(&b.mgs, 2)
        .launcher(Launcher::Mpirun)
        .nodes(2)
        .roots(&roots.mem, &roots.disk)
        .args(["--vectors", "9", "--rows", "8"])
        .run();
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    out.assert_output_contains("need 1 <= vectors <= rows (got 9 vectors of 8 rows)");
}

/// The complete program of `docs/fortran.md`, taken from the page.
fn documented_program() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/fortran.md")).expect("docs/fortran.md");
    doc.split("```fortran\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("program psls_sum"))
        .expect("docs/fortran.md has no complete program (program psls_sum)")
        .to_string()
}

#[test]
fn the_documented_program_builds_against_an_installed_tree_and_survives_a_crash() {
    let prefix = Scratch::new("fortran-prefix");
    let from = sibling_binary("libpsls.a");
    let from = from.parent().expect("target dir");
    build_step(
        Command::new("make")
            .current_dir(repo())
            .args(["--no-print-directory", "install-files"])
            .arg(format!("PREFIX={}", prefix.path()))
            .arg(format!("INSTALL_FROM={}", from.display()))
            .env("MPIF90", mpif90()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for f in [
        "include/psls.mod",
        "lib/libpslsf.a",
        "lib/libpsls.a",
        "lib/pkgconfig/psls.pc",
        "bin/psls-launch",
    ] {
        assert!(
            prefix.0.join(f).is_file(),
            "make install-files did not install {f}"
        );
    }
    let static_libs = build_step(
        Command::new("pkg-config")
            .args(["--variable=static_libs", "psls"])
            .env("PKG_CONFIG_PATH", prefix.0.join("lib/pkgconfig")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let src = prefix.0.join("sum.f90");
    std::fs::write(&src, documented_program()).expect("write sum.f90");
    let exe = prefix.0.join("sum");
    build_step(
        Command::new(mpif90())
            .args(FFLAGS)
            .arg(&src)
            .arg(format!("-I{}", prefix.0.join("include").display()))
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", prefix.0.join("lib").display()))
            .arg("-lpslsf")
            .args(static_libs.split_whitespace())
            .current_dir(&prefix.0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The examples build against the installed tree alone too.
    let examples = repo().join("examples/fortran");
    for (name, main) in [("mgs", "mgs.f90"), ("heat_pfs", "heat_pfs.f90")] {
        let objs = prefix.0.join(format!("obj-{name}"));
        std::fs::create_dir_all(&objs).expect("create obj dir");
        let out = prefix.0.join(name);
        build_step(
            Command::new(mpif90())
                .args(FFLAGS)
                .arg(format!("-I{}", prefix.0.join("include").display()))
                .arg("-J")
                .arg(&objs)
                .arg(examples.join("util.f90"))
                .arg(examples.join(main))
                .arg("-o")
                .arg(&out)
                .arg(format!("-L{}", prefix.0.join("lib").display()))
                .arg("-lpslsf")
                .args(static_libs.split_whitespace())
                .current_dir(&objs),
        )
        .unwrap_or_else(|e| panic!("{name} against the installed tree: {e}"));
        assert!(out.is_file(), "{name} was not built");
    }
    let launcher = prefix.0.join("bin/psls-launch");
    let free = Roots::new().launch_with(&launcher, 2, &[], &[], &exe, &[]);
    free.assert_success("the documented program");
    free.assert_says(&["sum 1000000 (want 1000000)", "expected: "]);
    let killed =
        Roots::new().launch_with(&launcher, 2, &[], &["kill-rank:rank=1:epoch=5"], &exe, &[]);
    killed.assert_success("the documented program, rank 1 killed");
    killed.assert_says(&[
        "failure classified: process crash",
        "restarted from checkpoint 4 at step 3",
        "sum 1000000 (want 1000000)",
    ]);
}

/// A program that calls every wrapper of the module and checks what comes back, error codes
/// included. Run on 4 ranks over 2 virtual nodes, it prints `PASS rank=R` on each rank, or
/// `FAIL rank=R: ...` lines and exits 1. With `--no-ierr` it makes a failing call without
/// `ierr`, which must stop the program.
const CHECKS: &str = r#"
program checks
  use, intrinsic :: iso_fortran_env, only: int64, output_unit
  use mpi
  use psls
  implicit none
  type(c_ptr) :: h, nul, f, p, raw, stale
  integer :: ierr, provided, rank, nranks, e, node, nnodes, buddy, id, k, fails, first4, last4
  integer :: owner
  integer(c_int64_t) :: first, last, fsize, epoch, count, total, i
  real(c_double), pointer :: a(:), b(:, :), fv(:)
  integer(c_int64_t), pointer :: counter(:)
  integer(c_int64_t), target :: x(4), y
  character(len=64) :: name, msg
  character(len=2) :: tiny_name
  character(len=256) :: arg
  logical :: restarted
  type(psls_stats_t) :: st

  fails = 0
  call MPI_Init_thread(MPI_THREAD_MULTIPLE, provided, ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
  nul = c_null_ptr

  ! Before init: a NULL handle.
  call psls_rank(nul, k, e)
  call expect(e, PSLS_ERR_NULL, 'psls_rank(NULL)')
  call psls_barrier(nul, e)
  call expect(e, PSLS_ERR_NULL, 'psls_barrier(NULL)')
  call psls_checkpoint(nul, e)
  call expect(e, PSLS_ERR_NULL, 'psls_checkpoint(NULL)')
  call psls_strerror(PSLS_ERR_NOT_FOUND, msg)
  call truth(len_trim(msg) > 0, 'psls_strerror(PSLS_ERR_NOT_FOUND) is empty')
  call psls_strerror(999, msg)
  call truth(msg == 'unknown error code', 'psls_strerror(999): ' // trim(msg))

  if (command_argument_count() > 0) then
    call get_command_argument(1, arg)
    if (arg == '--no-ierr') then
      call psls_init(MPI_COMM_WORLD, h)
      call psls_barrier(nul)
      write (output_unit, '(a)') 'NOT STOPPED'
    end if
  end if

  call psls_init(MPI_COMM_WORLD, h, e)
  call expect(e, PSLS_OK, 'psls_init')
  call truth(c_associated(h), 'psls_init: NULL handle')

  ! Queries.
  call psls_rank(h, k, e)
  call expect(e, PSLS_OK, 'psls_rank')
  call truth(k == rank, 'psls_rank differs from MPI_Comm_rank')
  call psls_size(h, k, e)
  call truth(e == PSLS_OK .and. k == nranks, 'psls_size')
  call psls_num_nodes(h, nnodes, e)
  call truth(e == PSLS_OK .and. nnodes == 2, 'psls_num_nodes: not 2')
  call psls_node(h, node, e)
  call truth(e == PSLS_OK .and. node == rank / 2, 'psls_node: ranks 0-1 on node 0, 2-3 on 1')
  call psls_node_name(h, node, name, e)
  call expect(e, PSLS_OK, 'psls_node_name')
  write (msg, '(a, i0)') 'vnode', node
  call truth(name == msg, 'psls_node_name: "' // trim(name) // '", not ' // trim(msg))
  call psls_node_name(h, node, tiny_name, e)
  call expect(e, PSLS_ERR_ARG, 'psls_node_name into 2 characters')
  call psls_node_name(h, 99, name, e)
  call expect(e, PSLS_ERR_ARG, 'psls_node_name of node 99')
  call psls_buddy(h, 0, buddy, e)
  call truth(e == PSLS_OK .and. buddy == 1, 'psls_buddy(0) is not node 1')

  ! Block distribution: 1000 items, every one on exactly one rank, in rank order.
  call psls_local_range(h, 1000_int64, first, last, e)
  call expect(e, PSLS_OK, 'psls_local_range')
  count = last - first + 1
  call MPI_Allreduce(count, total, 1, MPI_INTEGER8, MPI_SUM, MPI_COMM_WORLD, ierr)
  call truth(total == 1000, 'psls_local_range blocks do not add up to 1000')
  call truth(first == 1 + rank * 250 .and. last == (rank + 1) * 250, 'psls_local_range block')
  call psls_local_range(h, 1000, first4, last4, e)
  call truth(e == PSLS_OK .and. first4 == first .and. last4 == last, 'psls_local_range i4')
  call psls_local_range(h, 2, first4, last4, e)
  if (rank >= 2) call truth(first4 > last4, 'psls_local_range: an empty block')
  call psls_local_range(h, -1, first4, last4, e)
  call expect(e, PSLS_ERR_ARG, 'psls_local_range(-1)')

  ! Global arrays.
  call psls_alloc_real8(h, -1, a, e)
  call expect(e, PSLS_ERR_ARG, 'psls_alloc_real8(-1)')
  call psls_last_error(msg, e)
  call truth(index(msg, 'negative') > 0, 'psls_last_error after a negative size: ' // trim(msg))
  call truth(.not. associated(a), 'psls_alloc_real8(-1) associated the pointer')
  call psls_alloc_real8(h, 1000, a, e)
  call expect(e, PSLS_OK, 'psls_alloc_real8')
  call truth(size(a) == 1000 .and. lbound(a, 1) == 1, 'psls_alloc_real8: not a(1:1000)')
  call truth(all(a == 0), 'a new array is not zeroed')
  call psls_barrier(h, e)
  call expect(e, PSLS_OK, 'psls_barrier')
  do i = first, last
    a(i) = real(rank, c_double) + real(i, c_double) / 1000
  end do
  call psls_barrier(h, e)
  call expect(e, PSLS_OK, 'psls_barrier')
  do i = 1, 1000
    owner = int((i - 1) / 250)
    if (abs(a(i) - (real(owner, c_double) + real(i, c_double) / 1000)) > 0) then
      call truth(.false., 'a global array element written by another rank')
      exit
    end if
  end do
  call psls_alloc_real8_2d(h, 10, 20, b, e)
  call expect(e, PSLS_OK, 'psls_alloc_real8_2d')
  call truth(size(b, 1) == 10 .and. size(b, 2) == 20, 'psls_alloc_real8_2d shape')
  call psls_alloc(h, 4096, raw, e)
  call expect(e, PSLS_OK, 'psls_alloc')
  call psls_alloc_int8(h, 1, counter, e)
  call expect(e, PSLS_OK, 'psls_alloc_int8')

  ! A global lock around a read-modify-write of a global counter.
  call psls_mutex_create(h, id, e)
  call truth(e == PSLS_OK .and. id == 0, 'psls_mutex_create: first id is not 0')
  do k = 1, 50
    call psls_mutex_lock(h, id, e)
    call expect(e, PSLS_OK, 'psls_mutex_lock')
    counter(1) = counter(1) + 1
    call psls_mutex_unlock(h, id, e)
    call expect(e, PSLS_OK, 'psls_mutex_unlock')
  end do
  call psls_barrier(h, e)
  call truth(counter(1) == 50 * nranks, 'the locked counter lost increments')

  ! Freeing: an address that is not from psls_alloc, then the arrays (pointers nullified).
  call psls_free(h, c_loc(x), e)
  call expect(e, PSLS_ERR_ARG, 'psls_free of a local variable')
  call psls_free(h, b, e)
  call truth(e == PSLS_OK .and. .not. associated(b), 'psls_free_real8_2d')
  call psls_free(h, raw, e)
  call expect(e, PSLS_OK, 'psls_free_ptr')
  call psls_free(h, counter, e)
  call truth(e == PSLS_OK .and. .not. associated(counter), 'psls_free_int8')

  ! Private state.
  x = [1, 2, 3, 4]
  call psls_protect(h, 'x', x, e)
  call expect(e, PSLS_OK, 'psls_protect(x)')
  call psls_protect(h, 'odd', x(1:4:2), e)
  call expect(e, PSLS_ERR_ARG, 'psls_protect of a strided section')
  y = 7
  call psls_protect(h, 'y', c_loc(y), 8, e)
  call expect(e, PSLS_OK, 'psls_protect(ptr, 8)')
  call psls_protect(h, 'z', c_loc(y), -8, e)
  call expect(e, PSLS_ERR_ARG, 'psls_protect with a negative size')
  call psls_restarted(h, restarted, epoch, e)
  call truth(e == PSLS_OK .and. .not. restarted .and. epoch == 0, 'psls_restarted')

  ! Mapped files: unknown, created, flushed, closed, re-created.
  call psls_file_open(h, 'nosuch', f, p, fsize, e)
  call expect(e, PSLS_ERR_NOT_FOUND, 'psls_file_open("nosuch")')
  call truth(.not. c_associated(f), 'psls_file_open("nosuch") returned a handle')
  ! A NUL inside a name would cut it short in C: refused, not another file.
  call psls_file_create(h, 'checks' // char(0) // 'x', 4096, f, p, e)
  call expect(e, PSLS_ERR_ARG, 'psls_file_create of a name with a NUL')
  call psls_file_open(h, 'checks', f, p, fsize, e)
  call expect(e, PSLS_ERR_NOT_FOUND, 'psls_file_open("checks") after the refused create')
  call psls_file_open(h, 'nosuch' // char(0), f, p, fsize, e)
  call expect(e, PSLS_ERR_ARG, 'psls_file_open of a name with a NUL')
  call psls_protect(h, 'y' // char(0) // 'z', c_loc(y), 8, e)
  call expect(e, PSLS_ERR_ARG, 'psls_protect of a name with a NUL')
  call psls_file_create(h, 'checks-file   ', 3 * 4096, f, p, e)
  call expect(e, PSLS_OK, 'psls_file_create')
  call c_f_pointer(p, fv, [3 * 512])
  do i = first, last
    fv(i) = real(i, c_double)
  end do
  call psls_file_size(f, fsize, e)
  call truth(e == PSLS_OK .and. fsize == 3 * 4096, 'psls_file_size')
  call psls_file_grow(f, 4096, p, e)
  call truth(e /= PSLS_OK, 'psls_file_grow shrank a file')
  call psls_barrier(h, e)
  call psls_file_flush(f, e)
  call expect(e, PSLS_OK, 'psls_file_flush')
  call psls_file_close(f, e)
  call truth(e == PSLS_OK .and. .not. c_associated(f), 'psls_file_close')
  call psls_file_create(h, 'checks-file', 4096, f, p, e)
  call expect(e, PSLS_ERR_EXISTS, 'psls_file_create of an existing file')
  call psls_file_open(h, 'checks-file', f, p, fsize, e)
  call truth(e == PSLS_OK .and. fsize == 3 * 4096, 'psls_file_open("checks-file")')
  call c_f_pointer(p, fv, [3 * 512])
  call truth(fv(1000) == 1000 .and. fv(1500) == 0, 'the flushed file content')

  ! Checkpoints: a bad kind, a memory checkpoint; then flushing is refused, closing is not.
  call psls_checkpoint_now(h, 7, e)
  call expect(e, PSLS_ERR_ARG, 'psls_checkpoint_now(7)')
  call psls_checkpoint_now(h, PSLS_CKPT_MEMORY, e)
  call expect(e, PSLS_OK, 'psls_checkpoint_now(PSLS_CKPT_MEMORY)')
  call psls_checkpoint(h, e)
  call expect(e, PSLS_OK, 'psls_checkpoint')
  call psls_file_flush(f, e)
  call expect(e, PSLS_ERR_CHECKPOINT, 'psls_file_flush after a checkpoint')
  call psls_file_close(f, e)
  call expect(e, PSLS_OK, 'psls_file_close after a checkpoint')

  call psls_stats(h, st, e)
  call truth(e == PSLS_OK .and. st%write_faults > 0, 'psls_stats: no write faults counted')

  call psls_free(h, a, e)
  call expect(e, PSLS_OK, 'psls_free_real8')
  stale = h
  call psls_finalize(h, e)
  call truth(e == PSLS_OK .and. .not. c_associated(h), 'psls_finalize')
  call psls_barrier(h, e)
  call expect(e, PSLS_ERR_NULL, 'psls_barrier after psls_finalize')
  call psls_rank(stale, k, e)
  call expect(e, PSLS_ERR_NOT_INIT, 'psls_rank with a copy of the finalized handle')

  if (fails == 0) write (output_unit, '(a, i0)') 'PASS rank=', rank
  flush (output_unit)
  call MPI_Finalize(ierr)
  if (fails /= 0) error stop 1

contains

  subroutine expect(got, want, what)
    integer, intent(in) :: got, want
    character(*), intent(in) :: what
    character(len=512) :: detail
    integer :: e2
    if (got == want) return
    call psls_last_error(detail, e2)
    write (output_unit, '(a, i0, a, i0, a, i0, a)') 'FAIL rank=', rank, ': ' // what // &
         ': got ', got, ', want ', want, ' (' // trim(detail) // ')'
    fails = fails + 1
  end subroutine expect

  subroutine truth(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    if (ok) return
    write (output_unit, '(a, i0, a)') 'FAIL rank=', rank, ': ' // what
    fails = fails + 1
  end subroutine truth

end program checks
"#;
