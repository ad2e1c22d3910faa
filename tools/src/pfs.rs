//! `psls-pfs`: manage the files of the PSLS parallel file system.
//!
//! Each node's disk root is reachable only from that node, so every subcommand runs as an MPI
//! job over the nodes that keep the files, for example:
//!
//! ```text
//! psls-launch -n 4 --virtual-nodes 4 -- psls-pfs import data.bin data
//! psls-launch -n 4 --virtual-nodes 4 -- psls-pfs verify
//! ```

use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "psls-pfs",
    version,
    about = "Import, export, list, check and remove files of the PSLS parallel file system",
    long_about = "Import, export, list, check and remove files of the PSLS parallel file system.\n\n\
PSLS files are striped page by page over the nodes' disk roots (PSLS_DISK_BASE), each page with \
a primary copy on one node and a mirror on the next. Each node's disk root is reachable only from \
that node, so run psls-pfs as an MPI job with at least one rank on every node that keeps files, \
with the same PSLS_DISK_BASE and node names as the jobs that use them:\n\n  \
psls-launch -n 4 --virtual-nodes 4 -- psls-pfs import input.dat input\n  \
mpirun -n 4 psls-pfs ls\n\n\
Exit status: 0 on success, 1 when the operation failed or verify found damage, 2 for bad usage."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Do not print progress.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Copy a regular file (read on rank 0's node) into the PFS.
    ///
    /// SRC must be a regular file of a known size: a FIFO, a device, a socket or a directory is
    /// refused, and so is a file with more data than its reported size (as in /proc) or one
    /// that changes while it is read. Copy such data to a regular file first.
    Import {
        /// The regular file to read.
        src: PathBuf,
        /// The PFS name to give it (default: the file's name; required when SRC has none,
        /// as for `.` or `/`).
        name: Option<String>,
        /// Replace an existing PFS file of that name.
        #[arg(long)]
        replace: bool,
    },
    /// Copy a PFS file out to a regular file (written on rank 0's node).
    ///
    /// The data is written to a temporary file next to DST, renamed to DST when complete. An
    /// existing DST is an error unless it is a regular file and --replace is given; anything
    /// else (a symbolic link, a directory, a device, a FIFO, a socket) is never replaced.
    Export {
        /// The PFS file.
        name: String,
        /// The regular file to write (created when complete).
        dst: PathBuf,
        /// Replace DST if it is an existing regular file.
        #[arg(long)]
        replace: bool,
    },
    /// List the PFS files.
    Ls,
    /// Describe one PFS file: size, page size, striping, nodes, version.
    Stat {
        /// The PFS file.
        name: String,
        /// Also list which node keeps each page's primary and mirror copy.
        #[arg(long)]
        pages: bool,
    },
    /// Check every page's checksums and redundancy; list pages that lost a copy.
    Verify {
        /// Only this file (default: every file).
        name: Option<String>,
    },
    /// Remove a PFS file.
    Rm {
        /// The PFS file.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The runtime's own summary lines are noise for a tool; warnings and errors still show.
    if std::env::var_os("PSLS_LOG").is_none() {
        std::env::set_var("PSLS_LOG", "warn");
    }
    let p = match psls::init() {
        Ok(p) => p,
        Err(e) => {
            // An error that another rank had (`rank R failed: ...`) is printed by that rank,
            // which always holds its own error: printing it here too would print it once per
            // rank. Errors this rank had itself are printed, even if every rank had the same
            // one (the same configuration error everywhere): no rank can tell that
            // rank 0 failed the same way, and staying quiet on the others could hide the only
            // explanation.
            if matches!(e, psls::Error::Remote { .. }) {
                // Exit after the rank that had it has printed it: the MPI launcher aborts the
                // whole job at the first non-zero exit, which could kill that rank first.
                std::thread::sleep(std::time::Duration::from_secs(2));
            } else {
                eprintln!("psls-pfs: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let code = match run(&p, &cli) {
        Ok(code) => code,
        Err(e) => {
            if p.rank() == 0 {
                eprintln!("psls-pfs: {e}");
            }
            1
        }
    };
    if let Err(e) = p.finalize() {
        eprintln!("psls-pfs: finalize: {e}");
        return ExitCode::from(1);
    }
    ExitCode::from(code)
}

/// Prints progress on rank 0: at most twice a second, and once at the end.
struct Meter {
    what: &'static str,
    on: bool,
    start: Instant,
    last: Instant,
}

impl Meter {
    fn new(what: &'static str, on: bool) -> Meter {
        let now = Instant::now();
        Meter {
            what,
            on,
            start: now,
            last: now,
        }
    }

    fn tick(&mut self, done: u64, all: u64) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        if done < all && now.duration_since(self.last).as_millis() < 500 {
            return;
        }
        self.last = now;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-9);
        let pct = if all == 0 {
            100.0
        } else {
            done as f64 * 100.0 / all as f64
        };
        let end = if std::io::stderr().is_terminal() && done < all {
            "\r"
        } else {
            "\n"
        };
        eprint!(
            "{}: {:.1} / {:.1} MiB ({pct:.0}%), {:.1} MiB/s{end}",
            self.what,
            mib(done),
            mib(all),
            mib(done) / secs
        );
        let _ = std::io::stderr().flush();
    }
}

fn run(p: &psls::Psls, cli: &Cli) -> psls::Result<u8> {
    let root = p.rank() == 0;
    let show = root && !cli.quiet;
    match &cli.cmd {
        Cmd::Import { src, name, replace } => {
            let name = match name
                .clone()
                .or_else(|| src.file_name().map(|n| n.to_string_lossy().into_owned()))
            {
                Some(n) => n,
                None => {
                    // Every rank has the same arguments, so every rank stops here, before any
                    // collective step.
                    if root {
                        eprintln!(
                            "psls-pfs: {} has no file name to use as the PFS name; give the name: \
                             psls-pfs import {} NAME",
                            src.display(),
                            src.display()
                        );
                    }
                    return Ok(2);
                }
            };
            let mut m = Meter::new("import", show);
            let info = p.pfs_import(src, &name, *replace, &mut |d, a| m.tick(d, a))?;
            if root {
                println!(
                    "imported {} as {} ({} bytes)",
                    src.display(),
                    info.name,
                    info.size
                );
            }
        }
        Cmd::Export { name, dst, replace } => {
            let mut m = Meter::new("export", show);
            let n = p.pfs_export_with(name, dst, *replace, &mut |d, a| m.tick(d, a))?;
            if root {
                println!("exported {name} to {} ({n} bytes)", dst.display());
            }
        }
        Cmd::Ls => {
            if root {
                for f in p.files() {
                    println!("{:>14}  {}", f.size, f.name);
                }
            }
        }
        Cmd::Stat { name, pages } => {
            let f = p.file_info(name)?;
            if root {
                println!("name:        {}", f.name);
                println!("size:        {} bytes", f.size);
                println!("page size:   {} bytes", f.page_size);
                println!("stripe unit: {} page(s)", f.stripe_pages);
                println!("nodes:       {}", f.nodes.join(" "));
                println!("version:     epoch {}", f.version);
                println!(
                    "written:     {} of {} pages (the others read as zeros)",
                    f.written_pages,
                    f.size.div_ceil(f.page_size as u64)
                );
                println!("PFS epoch:   {}", p.pfs_epoch());
                if *pages {
                    for page in 0..f.size.div_ceil(f.page_size as u64) {
                        let (primary, mirror) = p.page_nodes(name, page)?;
                        println!(
                            "page {page}: primary {primary}, mirror {}",
                            mirror.as_deref().unwrap_or("none")
                        );
                    }
                }
            }
        }
        Cmd::Verify { name } => {
            let reports = p.pfs_verify(name.as_deref())?;
            let mut healthy = true;
            for r in &reports {
                healthy &= r.is_healthy();
                if !root {
                    continue;
                }
                println!(
                    "{}: {} pages, {} redundant, {} under-replicated, {} lost{}",
                    r.name,
                    r.pages,
                    r.redundant,
                    r.under_replicated.len(),
                    r.lost.len(),
                    if r.unchecked.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", {} not checked (copies on nodes outside this job: run verify \
                             with a rank on every node that keeps files)",
                            r.unchecked.len()
                        )
                    }
                );
                for (page, why) in &r.unchecked {
                    println!("  not checked: {} page {page}: {why}", r.name);
                }
                for (page, why) in &r.under_replicated {
                    println!("  under-replicated: {} page {page}: {why}", r.name);
                }
                for (page, why) in &r.lost {
                    println!("  LOST: {} page {page}: {why}", r.name);
                }
            }
            if !healthy {
                return Ok(1);
            }
        }
        Cmd::Rm { name } => {
            p.remove_file(name)?;
            if root {
                println!("removed {name}");
            }
        }
    }
    Ok(0)
}
