//! The C API from C: the example and the error test compiled with `mpicc` against the built
//! library (`libpsls.a` next to this test binary: `cargo build --workspace` makes it) and
//! against an installed tree (`make install-files`, then pkg-config); every error code path
//! (`bindings/c/tests/errors.c`); and the C `mgs` under `psls-launch`, which must print the
//! Rust example's checksum, with and without a node lost mid-run.

use psls_tests::{sibling_binary, Launch, MpiFlavor, Scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The MPI C compiler wrapper of the MPI the library was built against.
fn mpicc() -> &'static str {
    match MpiFlavor::from_env() {
        MpiFlavor::Mpich => "mpicc.mpich",
        MpiFlavor::OpenMpi => "mpicc",
    }
}

/// The system libraries a static link needs, as `bindings/c/psls.pc.in` lists them
/// (`Libs.private`): the test uses the pkg-config file's own line, so a wrong line fails here.
fn libs_private() -> Vec<String> {
    let pc = std::fs::read_to_string(root().join("bindings/c/psls.pc.in")).expect("psls.pc.in");
    pc.lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .expect("psls.pc.in has a Libs.private line")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `cmd` ran and succeeded; its output otherwise in the panic message.
fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where the compiled C programs go: beside this test binary, per MPI (the MPICH build has
/// its own target directory).
fn out_dir() -> PathBuf {
    let d = sibling_binary("c-api");
    std::fs::create_dir_all(&d).expect("create the c-api build directory");
    d
}

/// Compiles `src` (relative to the workspace root) with mpicc, the checked-in header and the
/// static library next to this test binary, warnings as errors.
fn compile(src: &str, name: &str) -> PathBuf {
    let lib = sibling_binary("libpsls.a");
    assert!(
        lib.is_file(),
        "{} is missing: build the C library first (cargo build --workspace, or cargo build -p psls-c)",
        lib.display()
    );
    let exe = out_dir().join(name);
    run_ok(
        Command::new(mpicc())
            .args([
                "-std=c11",
                "-O2",
                "-ffp-contract=off",
                "-Wall",
                "-Wextra",
                "-Werror",
            ])
            .arg("-I")
            .arg(root().join("bindings/c/include"))
            .arg(root().join(src))
            .arg(&lib)
            .args(libs_private())
            .arg("-lm")
            .arg("-o")
            .arg(&exe),
    );
    exe
}

/// The C mgs, compiled once per test binary.
fn c_mgs() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("examples/c/mgs.c", "mgs-c"))
}

fn errors_program() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("bindings/c/tests/errors.c", "errors-c"))
}

fn misuse_program() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("bindings/c/tests/misuse.c", "misuse-c"))
}

/// Runs `misuse SCENARIO` (`bindings/c/tests/misuse.c`) on 2 ranks on 2 nodes, with a deadline
/// (a hang is a failure), and checks that every check passed on every rank.
fn misuse(scenario: &str) -> psls_tests::Outcome {
    let (m, d) = (Scratch::shm("capi-mis-mem"), Scratch::new("capi-mis-disk"));
    let out = Launch::program(misuse_program(), 2)
        .nodes(2)
        .roots(&m, &d)
        .env("PSLS_LOG", "error")
        .arg(scenario)
        .timeout(std::time::Duration::from_secs(90))
        .run();
    println!("{}", out.stdout);
    assert!(
        out.status.is_some(),
        "misuse {scenario} hung (killed at the deadline):\n{out:?}"
    );
    let fails: Vec<&str> = out.stdout.lines().filter(|l| l.contains("FAIL")).collect();
    assert!(
        fails.is_empty(),
        "misuse {scenario}:\n{}\n\n{out:?}",
        fails.join("\n")
    );
    out.assert_success();
    out.assert_lines("DONE rank ", 2);
    out
}

/// The size of every mgs run here (the size of `tests/tests/supervise.rs`).
const MGS_ARGS: &[&str] = &["--rows", "1024", "--vectors", "48", "--every", "4"];

/// One job under `psls-launch -n 4 --virtual-nodes 4`, and what it printed.
struct Job {
    ok: bool,
    text: String,
}

impl Job {
    fn run(program: &Path, opts: &[&str], injects: &[&str]) -> Job {
        let (m, d) = (Scratch::shm("capi-mem"), Scratch::new("capi-disk"));
        let mut cmd = Command::new(sibling_binary("psls-launch"));
        cmd.args(["-n", "4", "--virtual-nodes", "4", "--job-id", "capi"])
            .arg("--run-dir")
            .arg(d.0.join("run"))
            .args(opts);
        for i in injects {
            cmd.arg("--inject").arg(i);
        }
        cmd.arg("--")
            .arg(program)
            .args(MGS_ARGS)
            .env("PSLS_MEMORY_BASE", m.path())
            .env("PSLS_DISK_BASE", d.path())
            .env("PSLS_LOG", "warn")
            .env_remove("PSLS_CKPT_NAME")
            .env_remove("SLURM_JOB_ID")
            // The C library chooses Open MPI's one-sided components itself.
            .env_remove("OMPI_MCA_osc");
        let out = cmd.output().expect("run psls-launch");
        Job {
            ok: out.status.success(),
            text: String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        }
    }

    /// The checksum of the last `mgs: ... checksum X` line.
    fn checksum(&self) -> String {
        assert!(self.ok, "the job failed:\n{}", self.text);
        let line = self
            .text
            .lines()
            .rfind(|l| l.starts_with("mgs: ") && l.contains(", checksum "))
            .unwrap_or_else(|| panic!("no checksum line in\n{}", self.text));
        assert!(line.contains("(ok)"), "Q is not orthonormal: {line}");
        let sum = line.rsplit(' ').next().unwrap_or_default().to_string();
        assert!(
            sum.len() == 16 && sum.chars().all(|c| c.is_ascii_hexdigit()),
            "bad checksum {sum:?} in {line:?}"
        );
        sum
    }
}

/// The fault-free C run's checksum, once per test binary.
fn c_fault_free() -> &'static str {
    static SUM: OnceLock<String> = OnceLock::new();
    SUM.get_or_init(|| {
        let j = Job::run(c_mgs(), &[], &[]);
        assert!(!j.text.contains("failure seen"), "{}", j.text);
        j.checksum()
    })
}

#[test]
fn the_c_programs_compile_against_the_library_and_its_header() {
    for exe in [c_mgs(), errors_program()] {
        assert!(exe.is_file(), "{} was not built", exe.display());
    }
    // The header is C++-clean too (cbindgen's cpp_compat guards).
    let cxx = match MpiFlavor::from_env() {
        MpiFlavor::Mpich => "mpicxx.mpich",
        MpiFlavor::OpenMpi => "mpicxx",
    };
    let probe = out_dir().join("header-probe.cc");
    std::fs::write(
        &probe,
        "#include <psls.h>\nint main() { return psls_strerror(PSLS_ERR_NULL) == nullptr; }\n",
    )
    .expect("write the C++ probe");
    run_ok(
        Command::new(cxx)
            // MPI's own C++ bindings are not under test (Open MPI's warn with -Wextra).
            .args(["-DOMPI_SKIP_MPICXX", "-DMPICH_SKIP_MPICXX"])
            .args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
            .arg(root().join("bindings/c/include"))
            .arg(&probe),
    );
}

#[test]
fn every_error_code_path_from_c() {
    let (m, d) = (Scratch::shm("capi-err-mem"), Scratch::new("capi-err-disk"));
    let out = Launch::program(errors_program(), 2)
        .nodes(2)
        .roots(&m, &d)
        .env("PSLS_LOG", "error")
        .env("ERRORS_SHOW_MESSAGES", "1")
        .run();
    let fails: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(
        fails.is_empty(),
        "failed checks:\n{}\n\n{out:?}",
        fails.join("\n")
    );
    out.assert_success();
    println!("{}", out.stdout);
    // "errors: N checks, 0 failed on rank 0": a program that stopped checking early fails.
    let ran: usize = out
        .lines_with("errors: ")
        .first()
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no \"errors: N checks\" line in\n{}", out.stdout));
    assert!(ran >= 150, "only {ran} checks ran:\n{}", out.stdout);
    for line in [
        "PASS psls_rank before psls_init (NULL handle) returns",
        "PASS psls_init before MPI_Init_thread returns",
        "PASS psls_rank with a pointer that is not a handle returns",
        "PASS psls_alloc of 0 bytes returns",
        "PASS psls_alloc of 2^62 bytes returns",
        "PASS psls_file_open of an unknown file returns",
        "PASS psls_free of a foreign pointer returns",
        "PASS psls_rank with a finalized handle returns",
        "PASS psls_strerror(12) is its own message",
        "PASS psls_last_error truncates to len - 1 bytes and NUL-terminates",
        "PASS psls_file_flush in a job that checkpoints returns",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(line)),
            "no {line:?} in\n{}",
            out.stdout
        );
    }
}

#[test]
fn c_mgs_prints_the_rust_checksum() {
    let rust = Job::run(&sibling_binary("mgs"), &[], &[]).checksum();
    let c = c_fault_free();
    println!("C mgs {c}, Rust mgs {rust}");
    assert_eq!(c, rust, "the C mgs and the Rust mgs disagree");
}

#[test]
fn c_mgs_survives_a_node_loss_with_the_same_output() {
    let j = Job::run(
        c_mgs(),
        &["--spares", "1"],
        &["lose-node:node=vnode2:epoch=6"],
    );
    for l in [
        "failure classified: node loss: vnode2",
        "spare vnode4 replaces lost node vnode2",
        "launch 1: resumed from memory checkpoint 5",
        "mgs: restarted from checkpoint 5 at vector 16",
        "finished successfully after 1 restart",
    ] {
        assert!(j.text.contains(l), "expected {l:?} in\n{}", j.text);
    }
    assert_eq!(j.checksum(), c_fault_free(), "{}", j.text);
}

/// `make install-files` into a scratch prefix from the artifacts next to this test binary,
/// then the C mgs built from the installed tree alone with pkg-config, linked dynamically and
/// statically, and run by the installed `psls-launch`.
#[test]
fn the_installed_tree_builds_and_runs_the_c_example() {
    let prefix = Scratch::new("capi-prefix");
    let from = sibling_binary("libpsls.a");
    let from = from.parent().expect("target directory");
    let make = run_ok(
        Command::new("make")
            .current_dir(root())
            .args(["--no-print-directory", "install-files"])
            .arg(format!("PREFIX={}", prefix.path()))
            .arg(format!("INSTALL_FROM={}", from.display())),
    );
    println!("{}", String::from_utf8_lossy(&make.stdout));
    let p = &prefix.0;
    for f in [
        "lib/libpsls.a",
        "lib/libpsls.so",
        "include/psls.h",
        "lib/pkgconfig/psls.pc",
        "bin/psls-launch",
    ] {
        assert!(
            p.join(f).is_file(),
            "make install-files did not install {f}"
        );
    }
    if root().join("bindings/fortran/build.sh").is_file() {
        for f in ["include/psls.mod", "lib/libpslsf.a"] {
            assert!(
                p.join(f).is_file(),
                "make install-files did not install {f}"
            );
        }
    }
    let pkg = |args: &[&str]| -> Vec<String> {
        let out = run_ok(
            Command::new("pkg-config")
                .args(args)
                .arg("psls")
                .env("PKG_CONFIG_PATH", p.join("lib/pkgconfig")),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let cflags = pkg(&["--cflags"]);
    let src = root().join("examples/c/mgs.c");
    let dynamic = p.join("mgs-dynamic");
    run_ok(
        Command::new(mpicc())
            .args(["-O2", "-ffp-contract=off"])
            .arg(&src)
            .args(&cflags)
            .args(pkg(&["--libs"]))
            .arg("-lm") // mgs.c's own sqrt and fabs
            .arg("-o")
            .arg(&dynamic),
    );
    // Without cargo's LD_LIBRARY_PATH (the target directory, which holds a libpsls.so too): the
    // installed tree alone, through the rpath that pkg-config's Libs put in.
    let ldd = run_ok(
        Command::new("ldd")
            .arg(&dynamic)
            .env_remove("LD_LIBRARY_PATH"),
    );
    let ldd = String::from_utf8_lossy(&ldd.stdout).to_string();
    assert!(
        ldd.lines()
            .any(|l| l.contains("libpsls.so") && l.contains(&prefix.path())),
        "the dynamic mgs does not load the installed libpsls.so:\n{ldd}"
    );
    let fixed = p.join("mgs-static");
    let static_libs = pkg(&["--variable=static_libs"]);
    run_ok(
        Command::new(mpicc())
            .args(["-O2", "-ffp-contract=off"])
            .arg(&src)
            .args(&cflags)
            .args(&static_libs)
            .arg("-lm")
            .arg("-o")
            .arg(&fixed),
    );
    let want = c_fault_free();
    for exe in [&dynamic, &fixed] {
        let (m, d) = (
            Scratch::shm("capi-inst-mem"),
            Scratch::new("capi-inst-disk"),
        );
        let mut cmd = Command::new(p.join("bin/psls-launch"));
        cmd.args(["-n", "4", "--virtual-nodes", "4"])
            .arg("--run-dir")
            .arg(d.0.join("run"))
            .arg("--")
            .arg(exe)
            .args(MGS_ARGS)
            .env("PSLS_MEMORY_BASE", m.path())
            .env("PSLS_DISK_BASE", d.path())
            .env("PSLS_LOG", "warn")
            .env_remove("PSLS_CKPT_NAME")
            .env_remove("SLURM_JOB_ID")
            .env_remove("OMPI_MCA_osc")
            .env_remove("LD_LIBRARY_PATH");
        let out = cmd.output().expect("run the installed psls-launch");
        let j = Job {
            ok: out.status.success(),
            text: String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        };
        assert_eq!(j.checksum(), want, "{}: {}", exe.display(), j.text);
    }
}

/// The complete program of `docs/c-api.md` (its one `c` code block) compiles with the
/// documented flags and prints the right sum on 2 ranks.
#[test]
fn the_program_in_the_docs_compiles_and_runs() {
    let doc = std::fs::read_to_string(root().join("docs/c-api.md")).expect("docs/c-api.md");
    let blocks: Vec<&str> = doc
        .split("```c\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default())
        .collect();
    assert_eq!(blocks.len(), 1, "docs/c-api.md should have one ```c block");
    let src = out_dir().join("docs-sum.c");
    std::fs::write(&src, blocks[0]).expect("write the program");
    let lib = sibling_binary("libpsls.a");
    assert!(lib.is_file(), "{} is missing", lib.display());
    let exe = out_dir().join("docs-sum");
    run_ok(
        Command::new(mpicc())
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(root().join("bindings/c/include"))
            .arg(&src)
            .arg(&lib)
            .args(libs_private())
            .arg("-o")
            .arg(&exe),
    );
    let (m, d) = (Scratch::shm("capi-doc-mem"), Scratch::new("capi-doc-disk"));
    let out = Launch::program(&exe, 2)
        .nodes(2)
        .roots(&m, &d)
        .env("PSLS_LOG", "warn")
        .run();
    out.assert_success();
    out.assert_lines("sum 31457220.0 (ok)", 1);
}

/// Ranks that disagree on psls_file_grow (rank 0 shrinks, rank 1 grows) all get the same error
/// instead of rank 1 waiting for rank 0 forever.
#[test]
fn a_grow_the_ranks_disagree_on_fails_everywhere() {
    misuse("grow-disagree");
}

/// Collective calls whose arguments are bad on one rank only (psls_alloc, psls_free,
/// psls_checkpoint_now, psls_file_create/open/flush/close) fail on every rank instead of leaving
/// the others waiting in the collective.
#[test]
fn a_collective_refused_on_one_rank_fails_everywhere() {
    misuse("one-rank-refuses");
}

/// A second psls_init on a live handle fails without overwriting the handle.
#[test]
fn a_second_init_leaves_the_live_handle_alone() {
    misuse("second-init");
}

/// A grow or a create too large for the global range fails with PSLS_ERR_NO_MEMORY and leaves
/// the file mapped where it was, with its bytes (the create leaves no file behind).
#[test]
fn a_grow_that_cannot_be_mapped_leaves_the_file_usable() {
    misuse("grow-huge");
}

/// A copy of a closed file handle, or of a finalized runtime handle, stays invalid when new
/// handles are made (no allocator address reuse makes it alias a new one).
#[test]
fn a_copy_of_a_released_handle_stays_invalid() {
    misuse("stale");
}

/// A file mapped already is not mapped a second time (two incoherent copies).
#[test]
fn a_file_is_mapped_once_at_a_time() {
    misuse("double-open");
}

/// Bad PFS file names are PSLS_ERR_ARG, not an I/O error.
#[test]
fn a_bad_file_name_is_an_invalid_argument() {
    misuse("bad-names");
}

/// psls_init_f with Fortran handles MPI does not know returns PSLS_ERR_ARG instead of aborting
/// the job, and leaves MPI_COMM_WORLD's error handler as it was.
#[test]
fn a_fortran_communicator_mpi_does_not_know_is_refused() {
    misuse("bad-fortran-comm");
}
