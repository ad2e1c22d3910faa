//! The checked-in header `include/psls.h` is what cbindgen makes of the crate now: this test
//! regenerates it and fails on any difference. `PSLS_BLESS=1` writes the new header instead.

use std::path::Path;

#[test]
fn the_checked_in_header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("header is UTF-8");
    let path = dir.join("include/psls.h");
    if std::env::var_os("PSLS_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write include/psls.h");
        eprintln!("wrote {}", path.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != fresh {
        let first = checked_in
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(fresh.lines().count()));
        panic!(
            "{} is out of date: it differs from what cbindgen generates from src/ first at line {}:\n  checked in: {:?}\n  generated:  {:?}\nRegenerate it with\n  PSLS_BLESS=1 cargo test -p psls-c --test header\nand commit it.",
            path.display(),
            first + 1,
            checked_in.lines().nth(first).unwrap_or("<end of file>"),
            fresh.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
    for name in [
        "PSLS_OK",
        "PSLS_ERR_NULL",
        "PSLS_ERR_OTHER",
        "PSLS_CKPT_MEMORY",
        "PSLS_CKPT_PERMANENT",
        "#include <mpi.h>",
        "typedef struct psls_t psls_t;",
        "int psls_init(MPI_Comm comm, struct psls_t **out);",
        "int psls_init_f(MPI_Fint comm, struct psls_t **out);",
    ] {
        assert!(fresh.contains(name), "the header lacks {name:?}");
    }
}
