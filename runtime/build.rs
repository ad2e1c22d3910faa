//! Compiles the small C shim that exports MPI's macro handles (see `csrc/mpi_shim.c`), with the
//! same MPI that rsmpi was built against (`MPICC` picks it).

fn main() {
    println!("cargo:rerun-if-changed=csrc/mpi_shim.c");
    println!("cargo:rerun-if-env-changed=MPICC");
    let lib = match build_probe_mpi::probe() {
        Ok(lib) => lib,
        Err(errs) => {
            for e in errs {
                println!("cargo:warning=MPI probe: {e}");
            }
            panic!(
                "no MPI library found: install Open MPI or MPICH (`make deps` does), \
                 or set MPICC to the compiler wrapper of the MPI to use"
            );
        }
    };
    let mut build = cc::Build::new();
    build.file("csrc/mpi_shim.c");
    for inc in &lib.include_paths {
        build.include(inc);
    }
    build.compile("psls_mpi_shim");
    for dir in &lib.lib_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for l in &lib.libs {
        println!("cargo:rustc-link-lib={l}");
    }
}
