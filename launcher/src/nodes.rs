//! The job's nodes: which run ranks (live), which wait (spares), which are lost; and the node
//! map that places ranks on the live nodes.

use std::path::Path;

/// Where the nodes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// This host alone, named by its host name; no spares.
    Local,
    /// Virtual nodes `vnode0..` simulated on this host.
    Virtual,
    /// Real hosts from `--hostfile`.
    Hosts,
    /// The nodes of the Slurm allocation.
    Slurm,
}

/// The nodes of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    pub kind: NodeKind,
    /// The nodes that run ranks, in node-map order.
    pub live: Vec<String>,
    /// The spares not used yet, in the order they will be used.
    pub spares: Vec<String>,
    /// Lost nodes, in the order they were lost.
    pub lost: Vec<String>,
}

/// What the options ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request {
    pub ranks: u32,
    pub ranks_per_node: Option<u32>,
    pub nodes: Option<u32>,
    pub virtual_nodes: Option<u32>,
    pub spares: u32,
}

/// Real hosts, when there are some.
#[derive(Debug, Clone)]
pub enum Hosts<'a> {
    /// Neither a hostfile nor a Slurm allocation launched with srun.
    None,
    /// `--hostfile FILE` and the hosts it lists.
    File(&'a Path, Vec<String>),
    /// The Slurm allocation's nodes.
    Slurm(Vec<String>),
}

impl Nodes {
    /// Works out the nodes from the options, the hosts, and this host's name.
    pub fn plan(req: Request, hosts: Hosts<'_>, local_host: &str) -> Result<Nodes, String> {
        let ranks = req.ranks;
        let per_node = match req.ranks_per_node {
            Some(p) if ranks % p != 0 => {
                return Err(format!(
                    "--ranks-per-node {p} does not divide --ranks {ranks}: every node runs the \
                     same number of ranks, so give a divisor of {ranks}"
                ))
            }
            Some(p) => Some(ranks / p),
            None => None,
        };
        let (explicit, flag) = match (req.virtual_nodes, req.nodes) {
            (Some(v), Some(n)) if v != n => {
                return Err(format!(
                    "--virtual-nodes {v} and --nodes {n} disagree: give one of them"
                ))
            }
            (Some(v), _) => (Some(v), "--virtual-nodes"),
            (None, Some(n)) => (Some(n), "--nodes"),
            (None, None) => (None, ""),
        };
        let count = match (explicit, per_node) {
            (Some(n), Some(q)) if n != q => {
                return Err(format!(
                    "{flag} {n} with --ranks-per-node {} makes {} ranks, but --ranks is {ranks}",
                    req.ranks_per_node.unwrap_or(1),
                    u64::from(n) * u64::from(req.ranks_per_node.unwrap_or(1)),
                ))
            }
            (Some(n), _) => Some(n),
            (None, q) => q,
        };
        if let Some(n) = count {
            if n > ranks {
                let what = if flag == "--virtual-nodes" {
                    "every virtual node needs at least one rank"
                } else {
                    "every node needs at least one rank"
                };
                let flag = if flag.is_empty() { "--nodes" } else { flag };
                return Err(format!("{flag} {n} is more than --ranks {ranks}: {what}"));
            }
        }
        let spares = req.spares as usize;
        let from_hosts = |hosts: Vec<String>, what: String| -> Result<Nodes, String> {
            let n = match count {
                Some(n) => n as usize,
                None if hosts.len() > spares => hosts.len() - spares,
                None => {
                    return Err(format!(
                        "{what} has {} hosts: not enough for --spares {spares} and at least one \
                         compute node",
                        hosts.len()
                    ))
                }
            };
            if n > ranks as usize {
                return Err(format!(
                    "{what} gives {n} compute nodes, more than --ranks {ranks}: every node \
                     needs at least one rank (give --nodes)"
                ));
            }
            if n + spares > hosts.len() {
                return Err(format!(
                    "{what} has {} hosts: not enough for {n} compute nodes and {spares} spares",
                    hosts.len()
                ));
            }
            Ok(Nodes {
                kind: NodeKind::Hosts,
                live: hosts[..n].to_vec(),
                spares: hosts[n..n + spares].to_vec(),
                lost: Vec::new(),
            })
        };
        if req.virtual_nodes.is_none() {
            match hosts {
                Hosts::File(path, list) => {
                    return from_hosts(list, format!("--hostfile {}", path.display()))
                }
                Hosts::Slurm(list) => {
                    let mut n = from_hosts(list, "the Slurm allocation".into())?;
                    n.kind = NodeKind::Slurm;
                    return Ok(n);
                }
                Hosts::None => {}
            }
        }
        match count {
            Some(n) => {
                let names: Vec<String> = (0..n as usize + spares)
                    .map(|k| format!("vnode{k}"))
                    .collect();
                Ok(Nodes {
                    kind: NodeKind::Virtual,
                    live: names[..n as usize].to_vec(),
                    spares: names[n as usize..].to_vec(),
                    lost: Vec::new(),
                })
            }
            None if spares > 0 => Err(format!(
                "--spares {spares}: there is nowhere to put spare nodes on one host without \
                 virtual nodes; give --virtual-nodes N (or --nodes N), a --hostfile, or run \
                 inside a Slurm allocation"
            )),
            None => Ok(Nodes {
                kind: NodeKind::Local,
                live: vec![local_host.to_string()],
                spares: Vec::new(),
                lost: Vec::new(),
            }),
        }
    }

    /// Every node the job may use: live, spare and lost.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.live.iter().chain(&self.spares).chain(&self.lost)
    }

    /// The node of each rank: block distribution over the live nodes in order.
    pub fn node_map(&self, ranks: usize) -> Vec<String> {
        node_map(ranks, &self.live)
    }

    /// Replaces live node `node` by the next spare, at the same position, and returns the
    /// spare; `None` when no spare is left (nothing changes then).
    pub fn replace(&mut self, node: &str) -> Option<String> {
        let pos = self.live.iter().position(|n| n == node)?;
        if self.spares.is_empty() {
            return None;
        }
        let spare = self.spares.remove(0);
        self.live[pos] = spare.clone();
        self.lost.push(node.to_string());
        Some(spare)
    }
}

/// Rank `r` runs on `live[r * N / ranks]`: ranks in blocks, in node order.
pub fn node_map(ranks: usize, live: &[String]) -> Vec<String> {
    if live.is_empty() {
        return Vec::new();
    }
    (0..ranks)
        .map(|r| live[r * live.len() / ranks].clone())
        .collect()
}

/// The node-map file's text: one `RANK NODE` line per rank.
pub fn map_text(map: &[String], launch: u32) -> String {
    let mut s = format!("# psls-launch node map of launch {launch}: RANK NODE\n");
    for (r, n) in map.iter().enumerate() {
        s.push_str(&format!("{r} {n}\n"));
    }
    s
}

/// The ranks on `node`, ascending.
pub fn ranks_on(map: &[String], node: &str) -> Vec<usize> {
    (0..map.len()).filter(|&r| map[r] == node).collect()
}

/// The largest hostfile read: far more than any real list of hosts, and a bound on what a
/// wrong path (a log, an image) costs.
pub const HOSTFILE_MAX_BYTES: u64 = 16 << 20;

/// Reads a hostfile: one host per line, `#` comments; words after the host name (such as
/// `slots=4`) are ignored. Only a regular file of at most [`HOSTFILE_MAX_BYTES`] is read: the
/// type is checked before the file is opened, so that a FIFO (which would block the open until
/// a writer comes) or a device such as /dev/zero (which never ends) is refused at once.
pub fn read_hostfile(path: &Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read --hostfile {shown}: {e}"))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "--hostfile {shown} is {what}: give a regular file listing one host per line"
        ));
    }
    let too_big = || {
        format!(
            "--hostfile {shown} is larger than {} MiB: that is not a list of hosts; give a \
             file listing one host per line",
            HOSTFILE_MAX_BYTES >> 20
        )
    };
    if meta.len() > HOSTFILE_MAX_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(HOSTFILE_MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read --hostfile {shown}: {e}"))?;
    // It may have grown since the check.
    if bytes.len() as u64 > HOSTFILE_MAX_BYTES {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("cannot read --hostfile {shown}: it is not text (not valid UTF-8)"))?;
    let mut hosts: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(host) = line.split_whitespace().next() else {
            continue;
        };
        if !crate::roots::valid_name(host) {
            return Err(format!(
                "--hostfile {} line {}: {host:?} is not a usable host name (A-Z a-z 0-9 . _ -)",
                path.display(),
                i + 1
            ));
        }
        if hosts.iter().any(|h| h == host) {
            return Err(format!(
                "--hostfile {} line {}: host {host} is listed twice",
                path.display(),
                i + 1
            ));
        }
        hosts.push(host.to_string());
    }
    if hosts.is_empty() {
        return Err(format!("--hostfile {} lists no host", path.display()));
    }
    Ok(hosts)
}

/// The nodes of the Slurm allocation, from `scontrol show hostnames $SLURM_JOB_NODELIST`.
pub fn slurm_hosts() -> Result<Vec<String>, String> {
    let list = std::env::var("SLURM_JOB_NODELIST")
        .or_else(|_| std::env::var("SLURM_NODELIST"))
        .map_err(|_| {
            "SLURM_JOB_NODELIST is not set: run inside a Slurm allocation, or give --launcher \
             mpirun"
                .to_string()
        })?;
    let out = std::process::Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .output()
        .map_err(|e| format!("cannot run scontrol show hostnames {list}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scontrol show hostnames {list} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let hosts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if hosts.is_empty() {
        return Err(format!("scontrol show hostnames {list} listed no node"));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ranks: u32) -> Request {
        Request {
            ranks,
            ..Request::default()
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn virtual_nodes_and_spares() {
        let r = Request {
            virtual_nodes: Some(4),
            spares: 1,
            ..req(8)
        };
        let n = Nodes::plan(r, Hosts::None, "h").unwrap();
        assert_eq!(n.kind, NodeKind::Virtual);
        assert_eq!(n.live, names(&["vnode0", "vnode1", "vnode2", "vnode3"]));
        assert_eq!(n.spares, names(&["vnode4"]));
        // --nodes on one host means virtual nodes too, as does --ranks-per-node.
        let n = Nodes::plan(
            Request {
                nodes: Some(2),
                ..req(4)
            },
            Hosts::None,
            "h",
        )
        .unwrap();
        assert_eq!(n.live, names(&["vnode0", "vnode1"]));
        let n = Nodes::plan(
            Request {
                ranks_per_node: Some(2),
                spares: 2,
                ..req(6)
            },
            Hosts::None,
            "h",
        )
        .unwrap();
        assert_eq!(n.live.len(), 3);
        assert_eq!(n.spares, names(&["vnode3", "vnode4"]));
    }

    #[test]
    fn bad_counts_are_refused() {
        let err = |r: Request| Nodes::plan(r, Hosts::None, "h").unwrap_err();
        assert!(err(Request {
            virtual_nodes: Some(3),
            ..req(2)
        })
        .contains("every virtual node needs at least one rank"));
        assert!(err(Request {
            nodes: Some(3),
            ..req(2)
        })
        .contains("--nodes 3 is more than --ranks 2"));
        assert!(err(Request {
            ranks_per_node: Some(3),
            ..req(4)
        })
        .contains("--ranks-per-node 3 does not divide --ranks 4"));
        assert!(err(Request {
            nodes: Some(2),
            ranks_per_node: Some(1),
            ..req(4)
        })
        .contains("makes 2 ranks, but --ranks is 4"));
        assert!(err(Request {
            spares: 1,
            ..req(2)
        })
        .contains("nowhere to put spare nodes"));
    }

    #[test]
    fn local_host_is_one_node() {
        let n = Nodes::plan(req(3), Hosts::None, "myhost").unwrap();
        assert_eq!(n.kind, NodeKind::Local);
        assert_eq!(n.node_map(3), names(&["myhost", "myhost", "myhost"]));
    }

    #[test]
    fn hosts_and_slurm_nodes() {
        let hosts = names(&["a", "b", "c", "d"]);
        let p = Path::new("hf");
        let n = Nodes::plan(
            Request {
                spares: 1,
                ..req(6)
            },
            Hosts::File(p, hosts.clone()),
            "h",
        )
        .unwrap();
        assert_eq!(
            (n.kind, n.live.clone()),
            (NodeKind::Hosts, names(&["a", "b", "c"]))
        );
        assert_eq!(n.spares, names(&["d"]));
        let n = Nodes::plan(
            Request {
                nodes: Some(2),
                spares: 1,
                ..req(4)
            },
            Hosts::Slurm(hosts.clone()),
            "h",
        )
        .unwrap();
        assert_eq!(n.kind, NodeKind::Slurm);
        assert_eq!(
            (n.live.clone(), n.spares.clone()),
            (names(&["a", "b"]), names(&["c"]))
        );
        let e = Nodes::plan(
            Request {
                nodes: Some(3),
                spares: 2,
                ..req(4)
            },
            Hosts::File(p, hosts),
            "h",
        )
        .unwrap_err();
        assert!(
            e.contains("not enough for 3 compute nodes and 2 spares"),
            "{e}"
        );
    }

    #[test]
    fn block_map_and_replacement_keep_positions() {
        let mut n = Nodes::plan(
            Request {
                virtual_nodes: Some(4),
                spares: 2,
                ..req(8)
            },
            Hosts::None,
            "h",
        )
        .unwrap();
        let map = n.node_map(8);
        assert_eq!(map[0], "vnode0");
        assert_eq!(map[3], "vnode1");
        assert_eq!(map[7], "vnode3");
        assert_eq!(ranks_on(&map, "vnode2"), vec![4, 5]);
        // Uneven: 5 ranks on 2 nodes, as the runtime's own virtual nodes do it.
        assert_eq!(
            node_map(5, &names(&["x", "y"])),
            names(&["x", "x", "x", "y", "y"])
        );
        assert_eq!(n.replace("vnode2").as_deref(), Some("vnode4"));
        let map = n.node_map(8);
        assert_eq!(ranks_on(&map, "vnode4"), vec![4, 5]);
        assert_eq!(ranks_on(&map, "vnode3"), vec![6, 7]);
        assert_eq!(n.replace("vnode0").as_deref(), Some("vnode5"));
        assert_eq!(n.replace("vnode1"), None, "no spare left");
        assert_eq!(n.replace("vnode2"), None, "not live any more");
        assert_eq!(n.lost, names(&["vnode2", "vnode0"]));
        assert_eq!(n.live, names(&["vnode5", "vnode1", "vnode4", "vnode3"]));
        assert!(map_text(&map, 1).contains("\n4 vnode4\n"));
    }

    #[test]
    fn hostfile_parsing() {
        let dir = std::env::temp_dir().join(format!("psls-launch-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("hosts");
        std::fs::write(&f, "# cluster\nn1 slots=4\n\n  n2   # second\nn3\n").unwrap();
        assert_eq!(read_hostfile(&f).unwrap(), names(&["n1", "n2", "n3"]));
        std::fs::write(&f, "n1\nn1\n").unwrap();
        assert!(read_hostfile(&f).unwrap_err().contains("listed twice"));
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(read_hostfile(&f).unwrap_err().contains("lists no host"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hostfile_that_is_not_a_regular_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("psls-launch-hf2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO with no writer: opening it would block forever.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_hostfile(&fifo).unwrap_err();
        assert!(e.contains("is a FIFO: give a regular file"), "{e}");
        let e = read_hostfile(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("/dev/zero is a device"), "{e}");
        let e = read_hostfile(&dir).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        // A huge file (sparse: nothing is written) is refused before it is read.
        let big = dir.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(HOSTFILE_MAX_BYTES + 1)
            .unwrap();
        let e = read_hostfile(&big).unwrap_err();
        assert!(e.contains("is larger than 16 MiB"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
