//! The MPI launcher's command lines: the job itself, and one process on one node (the probe,
//! a wipe, a kill), through `mpirun` or `srun` as the job is launched.

use crate::cli::{LauncherKind, MpiKind};
use crate::nodes::{NodeKind, Nodes};
use std::path::Path;
use std::process::Command;

/// How processes are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mpi {
    /// `Mpirun` or `Srun` (never `Auto`).
    pub launcher: LauncherKind,
    /// `Openmpi` or `Mpich` (never `Auto`).
    pub mpi: MpiKind,
    pub kind: NodeKind,
}

/// What one launch runs.
pub struct JobSpec<'a> {
    pub ranks: usize,
    pub nodes: &'a Nodes,
    pub map: &'a [String],
    /// Where `srun --distribution=arbitrary` reads its task layout (Slurm nodes only).
    pub slurm_hostfile: &'a Path,
    pub mpi_args: &'a [String],
    pub program: &'a Path,
    pub args: &'a [String],
    /// The `PSLS_*` (and other) variables to set.
    pub env: &'a [(String, String)],
}

impl Mpi {
    fn mpirun(&self) -> Command {
        let mut c = Command::new(if self.mpi == MpiKind::Mpich {
            "mpirun.mpich"
        } else {
            "mpirun.openmpi"
        });
        if self.mpi != MpiKind::Mpich {
            // Ranks may outnumber cores (virtual nodes on one host); let Open MPI run as root
            // in containers, and yield when idle.
            c.env("OMPI_MCA_rmaps_base_oversubscribe", "1")
                .env("OMPI_MCA_mpi_yield_when_idle", "1");
            if is_root() {
                c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            }
        }
        c
    }

    fn srun_mpi(&self) -> &'static str {
        if self.mpi == MpiKind::Mpich {
            "pmi2"
        } else {
            "pmix"
        }
    }

    /// Open MPI does not pass the environment to other hosts: name each variable with `-x`.
    fn export(&self, c: &mut Command, names: &[String]) {
        if self.launcher == LauncherKind::Mpirun
            && self.mpi != MpiKind::Mpich
            && self.kind == NodeKind::Hosts
        {
            for n in names {
                c.arg("-x").arg(n);
            }
        }
    }

    /// The command that runs the job.
    pub fn job(&self, j: &JobSpec<'_>) -> Command {
        let mut c = match self.launcher {
            LauncherKind::Srun => {
                let mut c = Command::new("srun");
                // A rank that dies ends the step at once (the launcher then recovers), instead
                // of leaving the others waiting on it.
                c.arg(format!("--mpi={}", self.srun_mpi()))
                    .arg("-n")
                    .arg(j.ranks.to_string())
                    .arg("--kill-on-bad-exit=1");
                if self.kind == NodeKind::Slurm {
                    // Ranks go exactly where the node map says, in its order, so a spare takes
                    // the lost node's place (an arbitrary distribution names one node per
                    // task), and a lost node is excluded. The step is NOT --no-kill: when one of
                    // its nodes fails, Slurm ends the step and the launcher recovers (the
                    // allocation keeps --no-kill, so the spares stay).
                    c.arg(format!("--nodes={}", j.nodes.live.len()))
                        .arg(format!("--nodelist={}", j.map.join(",")))
                        .arg("--distribution=arbitrary")
                        .env("SLURM_HOSTFILE", j.slurm_hostfile);
                    if !j.nodes.lost.is_empty() {
                        c.arg(format!("--exclude={}", j.nodes.lost.join(",")));
                    }
                }
                c
            }
            _ => {
                let mut c = self.mpirun();
                c.arg("-n").arg(j.ranks.to_string());
                if self.kind == NodeKind::Hosts {
                    // Block placement in node-map order: each host with as many slots as it
                    // has ranks.
                    let hosts: Vec<String> = j
                        .nodes
                        .live
                        .iter()
                        .map(|h| format!("{h}:{}", j.map.iter().filter(|n| *n == h).count()))
                        .collect();
                    let flag = if self.mpi == MpiKind::Mpich {
                        "-hosts"
                    } else {
                        "--host"
                    };
                    c.arg(flag).arg(hosts.join(","));
                    let mut names: Vec<String> = j.env.iter().map(|(k, _)| k.clone()).collect();
                    let inherited: Vec<String> = std::env::vars_os()
                        .filter_map(|(k, _)| k.into_string().ok())
                        .filter(|k| k.starts_with("PSLS_") && !names.contains(k))
                        .collect();
                    names.extend(inherited);
                    self.export(&mut c, &names);
                }
                c
            }
        };
        c.args(j.mpi_args).arg(j.program).args(j.args);
        for (k, v) in j.env {
            c.env(k, v);
        }
        c
    }

    /// A command that runs `program args` once on `node`.
    pub fn on_node(&self, node: &str, program: &Path, args: &[String]) -> Command {
        let mut c = match self.launcher {
            LauncherKind::Srun => {
                let mut c = Command::new("srun");
                c.args([
                    "--nodes=1",
                    "--ntasks=1",
                    "--overlap",
                    "--mpi=none",
                    "--quiet",
                ]);
                if self.kind == NodeKind::Slurm {
                    c.arg(format!("--nodelist={node}"));
                }
                c
            }
            _ => {
                let mut c = self.mpirun();
                let host = if self.kind == NodeKind::Hosts {
                    node
                } else {
                    "localhost"
                };
                let flag = if self.mpi == MpiKind::Mpich {
                    "-hosts"
                } else {
                    "--host"
                };
                c.args(["-n", "1", flag, host]);
                let names: Vec<String> = ["PSLS_MEMORY_BASE", "PSLS_DISK_BASE", "TMPDIR"]
                    .iter()
                    .filter(|k| std::env::var_os(k).is_some())
                    .map(|k| k.to_string())
                    .collect();
                self.export(&mut c, &names);
                c
            }
        };
        c.arg(program).args(args);
        c
    }
}

fn is_root() -> bool {
    crate::roots::uid().map(|u| u == 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{Hosts, Request};

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn hosts_get_block_slots_and_slurm_gets_the_layout() {
        let hosts: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut nodes = Nodes::plan(
            Request {
                ranks: 4,
                spares: 1,
                ..Request::default()
            },
            Hosts::File(Path::new("hf"), hosts.clone()),
            "h",
        )
        .unwrap();
        let map = nodes.node_map(4);
        let env = vec![("PSLS_JOB_ID".to_string(), "j".to_string())];
        let spec = |nodes: &Nodes, map: &[String]| {
            let m = Mpi {
                launcher: LauncherKind::Mpirun,
                mpi: MpiKind::Openmpi,
                kind: NodeKind::Hosts,
            };
            args(&m.job(&JobSpec {
                ranks: 4,
                nodes,
                map,
                slurm_hostfile: Path::new("/run/hostfile.0"),
                mpi_args: &[],
                program: Path::new("/bin/prog"),
                args: &["x".to_string()],
                env: &env,
            }))
        };
        let a = spec(&nodes, &map);
        assert_eq!(&a[..4], &["-n", "4", "--host", "a:2,b:2"]);
        assert!(a.windows(2).any(|w| w == ["-x", "PSLS_JOB_ID"]));
        assert_eq!(&a[a.len() - 2..], &["/bin/prog", "x"]);

        nodes.kind = NodeKind::Slurm;
        nodes.replace("a");
        let map = nodes.node_map(4);
        let m = Mpi {
            launcher: LauncherKind::Srun,
            mpi: MpiKind::Openmpi,
            kind: NodeKind::Slurm,
        };
        let c = m.job(&JobSpec {
            ranks: 4,
            nodes: &nodes,
            map: &map,
            slurm_hostfile: Path::new("/run/hostfile.1"),
            mpi_args: &[],
            program: Path::new("/bin/prog"),
            args: &[],
            env: &env,
        });
        let a = args(&c);
        for want in [
            "--exclude=a",
            "--distribution=arbitrary",
            "--kill-on-bad-exit=1",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
        }
        assert!(
            a.iter().any(|x| x.starts_with("--nodelist=c")),
            "one node per rank: {a:?}"
        );
        assert!(
            !a.iter().any(|x| x == "--no-kill"),
            "the step is not --no-kill: {a:?}"
        );
        let on = args(&m.on_node("b", Path::new("/bin/psls-launch"), &["probe".into()]));
        assert!(on.iter().any(|x| x == "--nodelist=b"), "{on:?}");
    }
}
