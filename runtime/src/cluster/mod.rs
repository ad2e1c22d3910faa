//! `cluster`: which rank runs on which node, the live view and the buddy ring, the node roots,
//! and what hwloc says about each node.

mod hwloc;
mod roots;

pub use hwloc::{bind_rank, NodeResources};
pub use roots::{prepare_root, RootKind};

use crate::config::Config;
use crate::error::{Error, Result};
use std::path::Path;

/// Where a rank's node name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    /// The launcher's node-map file (`PSLS_NODE_MAP`).
    NodeMapFile,
    /// Simulated nodes (`PSLS_VIRTUAL_NODES`).
    Virtual,
    /// `SLURMD_NODENAME`, under Slurm.
    Slurm,
    /// The host name.
    HostName,
}

/// The name of the node this rank runs on, and where that came from.
pub fn local_node_name(cfg: &Config, rank: usize, size: usize) -> Result<(String, NodeSource)> {
    if let Some(path) = &cfg.node_map {
        return Ok((
            node_from_map_file(path, rank, size)?,
            NodeSource::NodeMapFile,
        ));
    }
    if cfg.virtual_nodes > 0 {
        if cfg.virtual_nodes > size {
            return Err(Error::Config {
                key: "PSLS_VIRTUAL_NODES".into(),
                value: cfg.virtual_nodes.to_string(),
                source_name: "environment or PSLS_CONFIG file".into(),
                allowed: format!("at most the number of ranks ({size}): every virtual node needs at least one rank"),
            });
        }
        return Ok((
            virtual_node_name(rank * cfg.virtual_nodes / size),
            NodeSource::Virtual,
        ));
    }
    if let Ok(n) = std::env::var("SLURMD_NODENAME") {
        if !n.is_empty() {
            return Ok((n, NodeSource::Slurm));
        }
    }
    let host = crate::sys::host_name().map_err(|e| Error::io("gethostname", e))?;
    Ok((host, NodeSource::HostName))
}

/// The name of virtual node `k`.
pub fn virtual_node_name(k: usize) -> String {
    format!("vnode{k}")
}

/// Reads this rank's node from a node-map file: one `RANK NODE` pair per line, `#` comments,
/// for a job of `size` ranks.
fn node_from_map_file(path: &Path, rank: usize, size: usize) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::NodeMap(format!("cannot read node-map file {}: {e}", path.display()))
    })?;
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            Error::NodeMap(format!(
                "{} line {}: expected `RANK NODE`, found {line:?}",
                path.display(),
                i + 1
            ))
        };
        let mut words = line.split_whitespace();
        let r: usize = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let node = words.next().ok_or_else(bad)?;
        if words.next().is_some() {
            return Err(bad());
        }
        if !valid_node_name(node) {
            return Err(Error::NodeMap(format!(
                "{} line {}: {node:?} is not a valid node name (1-255 characters from A-Z a-z \
                 0-9 . _ -, not starting with a dot)",
                path.display(),
                i + 1
            )));
        }
        if r >= size {
            return Err(Error::NodeMap(format!(
                "{} line {}: rank {r}, but this job has {size} ranks (0 to {}); is the map \
                 from another job?",
                path.display(),
                i + 1,
                size - 1
            )));
        }
        if r == rank {
            if found.is_some() {
                return Err(Error::NodeMap(format!(
                    "{}: rank {rank} is listed twice",
                    path.display()
                )));
            }
            found = Some(node.to_string());
        }
    }
    found.ok_or_else(|| {
        Error::NodeMap(format!(
            "{} does not list rank {rank}; it must name the node of every rank of the job",
            path.display()
        ))
    })
}

/// Node names become directory names: keep them to a safe alphabet.
fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The rank → node map of the job. Nodes are numbered by their lowest rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    names: Vec<String>,
    rank_node: Vec<usize>,
}

impl NodeMap {
    /// Builds the map from every rank's node name, in rank order.
    pub fn from_rank_names(per_rank: &[String]) -> Result<NodeMap> {
        let mut names: Vec<String> = Vec::new();
        let mut rank_node = Vec::with_capacity(per_rank.len());
        for (rank, n) in per_rank.iter().enumerate() {
            if !valid_node_name(n) {
                return Err(Error::NodeMap(format!(
                    "rank {rank} reports node name {n:?}, which is not usable as a directory name \
                     (allowed: A-Z a-z 0-9 . _ -)"
                )));
            }
            let id = match names.iter().position(|x| x == n) {
                Some(i) => i,
                None => {
                    names.push(n.clone());
                    names.len() - 1
                }
            };
            rank_node.push(id);
        }
        Ok(NodeMap { names, rank_node })
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.names.len()
    }

    /// Number of ranks.
    pub fn num_ranks(&self) -> usize {
        self.rank_node.len()
    }

    /// The node id of `rank`.
    pub fn node_of(&self, rank: usize) -> usize {
        self.rank_node[rank]
    }

    /// The name of node `node`.
    pub fn name(&self, node: usize) -> &str {
        &self.names[node]
    }

    /// The ranks on `node`, ascending.
    pub fn ranks_on(&self, node: usize) -> Vec<usize> {
        (0..self.rank_node.len())
            .filter(|&r| self.rank_node[r] == node)
            .collect()
    }

    /// The node's lowest rank, which speaks for the node.
    pub fn leader(&self, node: usize) -> usize {
        self.rank_node.iter().position(|&n| n == node).unwrap_or(0)
    }

    /// This rank's index among the ranks of its node.
    pub fn local_index(&self, rank: usize) -> usize {
        let node = self.rank_node[rank];
        self.rank_node[..rank]
            .iter()
            .filter(|&&n| n == node)
            .count()
    }
}

/// The ring of live nodes: each node's buddy is its successor, which holds the second recovery
/// copy and the mirror of what the node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuddyRing {
    live: Vec<usize>,
}

impl BuddyRing {
    /// The ring over `live` node ids, in ascending order.
    pub fn new(mut live: Vec<usize>) -> BuddyRing {
        live.sort_unstable();
        live.dedup();
        BuddyRing { live }
    }

    /// The live nodes, in ring order.
    pub fn nodes(&self) -> &[usize] {
        &self.live
    }

    /// The successor of `node` on the ring. A ring of one node has no buddy.
    pub fn buddy(&self, node: usize) -> Option<usize> {
        let i = self.live.iter().position(|&n| n == node)?;
        (self.live.len() > 1).then(|| self.live[(i + 1) % self.live.len()])
    }

    /// The predecessor of `node`: the node whose buddy `node` is.
    pub fn predecessor(&self, node: usize) -> Option<usize> {
        let i = self.live.iter().position(|&n| n == node)?;
        (self.live.len() > 1).then(|| self.live[(i + self.live.len() - 1) % self.live.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn node_map_numbers_nodes_by_first_rank() {
        let m = NodeMap::from_rank_names(&names(&["b", "a", "b", "c"])).unwrap();
        assert_eq!(m.num_nodes(), 3);
        assert_eq!(
            (m.node_of(0), m.node_of(1), m.node_of(2), m.node_of(3)),
            (0, 1, 0, 2)
        );
        assert_eq!(m.name(1), "a");
        assert_eq!(m.ranks_on(0), vec![0, 2]);
        assert_eq!(m.leader(2), 3);
        assert_eq!(m.local_index(2), 1);
        assert!(NodeMap::from_rank_names(&names(&["ok", "../x"])).is_err());
    }

    #[test]
    fn buddy_ring_is_successor_over_live_nodes() {
        let r = BuddyRing::new(vec![3, 0, 1]);
        assert_eq!(r.buddy(0), Some(1));
        assert_eq!(r.buddy(1), Some(3));
        assert_eq!(r.buddy(3), Some(0));
        assert_eq!(r.predecessor(0), Some(3));
        assert_eq!(r.buddy(2), None);
        assert_eq!(BuddyRing::new(vec![5]).buddy(5), None);
    }

    #[test]
    fn virtual_nodes_are_blocks() {
        let cfg = Config {
            virtual_nodes: 2,
            ..Config::default()
        };
        let got: Vec<String> = (0..4)
            .map(|r| local_node_name(&cfg, r, 4).unwrap().0)
            .collect();
        assert_eq!(got, names(&["vnode0", "vnode0", "vnode1", "vnode1"]));
        let cfg = Config {
            virtual_nodes: 5,
            ..Config::default()
        };
        let e = local_node_name(&cfg, 0, 4).unwrap_err().to_string();
        assert!(
            e.contains("PSLS_VIRTUAL_NODES") && e.contains("at least one rank"),
            "{e}"
        );
    }

    #[test]
    fn node_map_file_parsing() {
        let dir = std::env::temp_dir().join(format!("psls-nodemap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("map");
        std::fs::write(&f, "# rank node\n0 n1\n1 n2 # second\n\n2 n1\n").unwrap();
        assert_eq!(node_from_map_file(&f, 1, 4).unwrap(), "n2");
        let e = node_from_map_file(&f, 3, 4).unwrap_err().to_string();
        assert!(e.contains("does not list rank 3"), "{e}");
        // A rank beyond the job: the map is another job's.
        let e = node_from_map_file(&f, 1, 2).unwrap_err().to_string();
        assert!(
            e.contains("line 5") && e.contains("rank 2, but this job has 2 ranks"),
            "{e}"
        );
        std::fs::write(&f, "0 n1\nzero n2\n").unwrap();
        let e = node_from_map_file(&f, 0, 2).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("RANK NODE"), "{e}");
        std::fs::write(&f, "0 n1\n1 ../x\n").unwrap();
        let e = node_from_map_file(&f, 0, 2).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("\"../x\" is not a valid node name"),
            "{e}"
        );
        std::fs::write(&f, "0 n1\n0 n2\n").unwrap();
        assert!(node_from_map_file(&f, 0, 2)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
