//! `--inject`: faults for tests and demos, parsed from
//! `KIND[:rank=R|:node=NAME][:epoch=E|:at=SECONDS][:launch=L]`.
//!
//! A fault at an epoch is the runtime's to fire: the launcher sets `PSLS_FAULT` for that launch
//! (`ckpt-begin:epoch=E:rank=R`, or `restart-restore[:epoch=E]:rank=R` for kill-restore). A
//! fault at a time is the launcher's: it kills the processes named in the run directory's rank
//! files. Node effects (wiping roots, marking a node dead) come after the job has exited.

use crate::cli::INJECT_GRAMMAR;
use crate::nodes::{ranks_on, Nodes};

/// What the fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Kill one rank.
    KillRank,
    /// Kill the ranks of a node, then wipe its memory root.
    Reboot,
    /// Kill the ranks of a node, wipe its memory and disk roots, mark it dead.
    LoseNode,
    /// Kill the job, then wipe the memory root of every live node.
    PowerCut,
    /// Kill one rank while the restarted job restores.
    KillRestore,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillRank => "kill-rank",
            Kind::Reboot => "reboot",
            Kind::LoseNode => "lose-node",
            Kind::PowerCut => "power-cut",
            Kind::KillRestore => "kill-restore",
        }
    }

    fn from_name(s: &str) -> Option<Kind> {
        [
            Kind::KillRank,
            Kind::Reboot,
            Kind::LoseNode,
            Kind::PowerCut,
            Kind::KillRestore,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }

    /// Whether the fault hits a node (and so leaves an effect on its roots).
    pub fn hits_node(self) -> bool {
        matches!(self, Kind::Reboot | Kind::LoseNode | Kind::PowerCut)
    }
}

/// Which rank or node.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Rank(usize),
    Node(String),
}

/// When the fault fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// At the start of checkpoint E (kill-restore: while restoring checkpoint E).
    Epoch(u64),
    /// This many seconds after the launch started.
    At(f64),
    /// kill-restore without an epoch: while restoring any checkpoint.
    AnyRestore,
}

/// One `--inject` spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Inject {
    /// As written.
    pub spec: String,
    pub kind: Kind,
    pub target: Option<Target>,
    pub when: When,
    /// The launch it fires in (0: the first).
    pub launch: u32,
}

/// Parses one spec.
pub fn parse(spec: &str) -> Result<Inject, String> {
    let bad = |why: String| {
        format!(
            "--inject {spec:?}: {why}; expected {INJECT_GRAMMAR}, KIND one of kill-rank, reboot, \
             lose-node, power-cut, kill-restore (e.g. kill-rank:rank=1:epoch=3, \
             lose-node:node=vnode2:at=5:launch=1)"
        )
    };
    let mut parts = spec.split(':');
    let kind_word = parts.next().unwrap_or("");
    let kind = Kind::from_name(kind_word).ok_or_else(|| {
        bad(if kind_word.is_empty() {
            "no KIND".to_string()
        } else {
            format!("unknown KIND {kind_word:?}")
        })
    })?;
    let (mut rank, mut node, mut epoch, mut at, mut launch) = (None, None, None, None, None);
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
        let dup = || bad(format!("{key}= is given twice"));
        match key {
            "rank" => {
                let r: usize = value
                    .parse()
                    .map_err(|_| bad(format!("rank={value:?} is not a rank number")))?;
                rank.replace(r).map_or(Ok(()), |_| Err(dup()))?;
            }
            "node" => {
                if !crate::roots::valid_name(value) {
                    return Err(bad(format!("node={value:?} is not a node name")));
                }
                node.replace(value.to_string())
                    .map_or(Ok(()), |_| Err(dup()))?;
            }
            "epoch" => {
                let e: u64 =
                    value.parse().ok().filter(|&e| e >= 1).ok_or_else(|| {
                        bad(format!("epoch={value:?} is not an epoch (1, 2, ...)"))
                    })?;
                epoch.replace(e).map_or(Ok(()), |_| Err(dup()))?;
            }
            "at" => {
                let s: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && (0.0..=1e6).contains(s))
                    .ok_or_else(|| {
                        bad(format!(
                            "at={value:?} is not a number of seconds (0 to 1000000)"
                        ))
                    })?;
                at.replace(s).map_or(Ok(()), |_| Err(dup()))?;
            }
            "launch" => {
                let l: u32 = value
                    .parse()
                    .map_err(|_| bad(format!("launch={value:?} is not a launch number")))?;
                launch.replace(l).map_or(Ok(()), |_| Err(dup()))?;
            }
            _ => return Err(bad(format!("unknown key {key:?}"))),
        }
    }
    let target = match (rank, node) {
        (Some(_), Some(_)) => return Err(bad("give rank= or node=, not both".into())),
        (Some(r), None) => Some(Target::Rank(r)),
        (None, Some(n)) => {
            if !matches!(kind, Kind::Reboot | Kind::LoseNode) {
                return Err(bad(format!(
                    "{} names a rank (rank=R), not a node",
                    kind.name()
                )));
            }
            Some(Target::Node(n))
        }
        (None, None) => None,
    };
    let when = match (epoch, at) {
        (Some(_), Some(_)) => return Err(bad("give epoch= or at=, not both".into())),
        (Some(e), None) => When::Epoch(e),
        (None, Some(s)) => When::At(s),
        (None, None) if kind == Kind::KillRestore => When::AnyRestore,
        (None, None) => {
            return Err(bad(format!(
                "{} needs a moment: epoch=E or at=SECONDS",
                kind.name()
            )))
        }
    };
    let default_launch = if kind == Kind::KillRestore { 1 } else { 0 };
    Ok(Inject {
        spec: spec.to_string(),
        kind,
        target,
        when,
        launch: launch.unwrap_or(default_launch),
    })
}

impl Inject {
    /// Checks the spec against the job: the rank and node exist, the node runs ranks in the
    /// fault's launch, the launch can happen. `losses_before`: the lose-node faults of earlier
    /// launches (each brings in at most one spare, in order).
    pub fn validate(
        &self,
        ranks: usize,
        nodes: &Nodes,
        max_restarts: u32,
        losses_before: usize,
    ) -> Result<(), String> {
        let names = || {
            let mut s = nodes.live.join(", ");
            if !nodes.spares.is_empty() {
                s.push_str(&format!(
                    " (spare{}: {})",
                    if nodes.spares.len() == 1 { "" } else { "s" },
                    nodes.spares.join(", ")
                ));
            }
            s
        };
        match &self.target {
            Some(Target::Rank(r)) if *r >= ranks => {
                return Err(format!(
                    "--inject {:?}: rank {r} does not exist: the job has ranks 0 to {}",
                    self.spec,
                    ranks - 1
                ))
            }
            Some(Target::Node(n)) if !nodes.all().any(|x| x == n) => {
                return Err(format!(
                    "--inject {:?}: node {n} does not exist: the job's nodes are {}",
                    self.spec,
                    names()
                ));
            }
            Some(Target::Node(n)) => {
                if let Some(k) = nodes.spares.iter().position(|x| x == n) {
                    if k >= losses_before {
                        return Err(format!(
                            "--inject {:?}: node {n} is a spare: it runs no rank in launch {} \
                             (a spare runs ranks only once it replaces a lost node, in order, \
                             and {}), so the fault would never fire; name a node that runs \
                             ranks: {}",
                            self.spec,
                            self.launch,
                            match losses_before {
                                0 => "no lose-node fault comes before that launch".to_string(),
                                l => format!(
                                    "the lose-node faults before that launch bring in only \
                                     {} spare{}",
                                    l,
                                    if l == 1 { "" } else { "s" }
                                ),
                            },
                            names()
                        ));
                    }
                }
            }
            _ => {}
        }
        if self.launch > max_restarts {
            return Err(format!(
                "--inject {:?}: launch {} never happens: with --max-restarts {max_restarts} the \
                 launches are 0 to {max_restarts}",
                self.spec, self.launch
            ));
        }
        Ok(())
    }

    /// The rank the fault names (default 0), for the kinds that kill one rank.
    fn rank(&self) -> usize {
        match self.target {
            Some(Target::Rank(r)) => r,
            _ => 0,
        }
    }

    /// The node a reboot or lose-node hits in a launch with node map `map`: the named node, or
    /// the node of the named rank (default rank 0). `Err` when the node runs no rank there.
    pub fn node(&self, map: &[String]) -> Result<String, String> {
        match &self.target {
            Some(Target::Node(n)) if map.iter().any(|x| x == n) => Ok(n.clone()),
            Some(Target::Node(n)) => Err(format!(
                "inject {}: node {n} runs no rank in this launch (lost or spare); skipped",
                self.spec
            )),
            _ => map
                .get(self.rank())
                .cloned()
                .ok_or_else(|| format!("inject {}: no such rank; skipped", self.spec)),
        }
    }

    /// The `PSLS_FAULT` entry for a fault the runtime fires, in a launch with node map `map`;
    /// `None` for a fault at a time.
    pub fn fault_spec(&self, map: &[String]) -> Result<Option<String>, String> {
        let rank = match self.kind {
            Kind::Reboot | Kind::LoseNode => {
                let node = self.node(map)?;
                ranks_on(map, &node).first().copied().unwrap_or(0)
            }
            _ => self.rank(),
        };
        Ok(match (self.kind, self.when) {
            (_, When::At(_)) => None,
            (Kind::KillRestore, When::Epoch(e)) => {
                Some(format!("restart-restore:epoch={e}:rank={rank}"))
            }
            (_, When::AnyRestore) => Some(format!("restart-restore:rank={rank}")),
            (_, When::Epoch(e)) => Some(format!("ckpt-begin:epoch={e}:rank={rank}")),
        })
    }

    /// The ranks the launcher kills for a fault at a time.
    pub fn ranks_to_kill(&self, map: &[String]) -> Result<Vec<usize>, String> {
        Ok(match self.kind {
            Kind::KillRank | Kind::KillRestore => vec![self.rank()],
            Kind::Reboot | Kind::LoseNode => ranks_on(map, &self.node(map)?),
            Kind::PowerCut => (0..map.len()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{Hosts, Request};

    fn nodes() -> Nodes {
        Nodes::plan(
            Request {
                ranks: 8,
                virtual_nodes: Some(4),
                spares: 1,
                ..Request::default()
            },
            Hosts::None,
            "h",
        )
        .unwrap()
    }

    #[test]
    fn parses_the_grammar() {
        let i = parse("kill-rank:rank=2:epoch=3").unwrap();
        assert_eq!(
            (i.kind, i.target, i.when, i.launch),
            (Kind::KillRank, Some(Target::Rank(2)), When::Epoch(3), 0)
        );
        let i = parse("lose-node:node=vnode1:at=2.5:launch=1").unwrap();
        assert_eq!(
            (i.kind, i.target, i.when, i.launch),
            (
                Kind::LoseNode,
                Some(Target::Node("vnode1".into())),
                When::At(2.5),
                1
            )
        );
        let i = parse("kill-restore").unwrap();
        assert_eq!((i.when, i.launch), (When::AnyRestore, 1));
        assert_eq!(parse("power-cut:epoch=4").unwrap().target, None);
    }

    #[test]
    fn malformed_specs_quote_the_grammar() {
        for (spec, why) in [
            ("", "no KIND"),
            ("explode:epoch=1", "unknown KIND \"explode\""),
            ("kill-rank", "needs a moment"),
            ("kill-rank:rank=x:epoch=1", "not a rank number"),
            ("kill-rank:rank=1:rank=2:epoch=1", "rank= is given twice"),
            ("reboot:rank=1:node=vnode1:epoch=2", "not both"),
            ("reboot:epoch=2:at=3", "not both"),
            ("reboot:epoch=0", "not an epoch"),
            ("reboot:at=-1", "not a number of seconds"),
            ("reboot:at=2:color=red", "unknown key \"color\""),
            ("reboot:at=2:oops", "not KEY=VALUE"),
            ("kill-rank:node=vnode1:epoch=1", "names a rank"),
            ("lose-node:node=../x:at=1", "not a node name"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(why), "{spec:?}: {e}");
            assert!(e.contains(INJECT_GRAMMAR), "{spec:?}: {e}");
        }
    }

    #[test]
    fn validation_against_the_job() {
        let n = nodes();
        assert!(parse("kill-rank:rank=7:epoch=1")
            .unwrap()
            .validate(8, &n, 3, 0)
            .is_ok());
        let e = parse("kill-rank:rank=8:epoch=1")
            .unwrap()
            .validate(8, &n, 3, 0)
            .unwrap_err();
        assert!(e.contains("rank 8 does not exist"), "{e}");
        let e = parse("lose-node:node=vnode9:at=1")
            .unwrap()
            .validate(8, &n, 3, 0)
            .unwrap_err();
        assert!(
            e.contains("node vnode9 does not exist") && e.contains("vnode4"),
            "{e}"
        );
        // A spare runs ranks only after a node loss has brought it in.
        assert!(parse("reboot:node=vnode4:at=1:launch=1")
            .unwrap()
            .validate(8, &n, 3, 1)
            .is_ok());
        for (spec, losses) in [
            ("lose-node:node=vnode4:at=1", 0),
            ("reboot:node=vnode4:at=1:launch=1", 0),
        ] {
            let e = parse(spec).unwrap().validate(8, &n, 3, losses).unwrap_err();
            assert!(
                e.contains("node vnode4 is a spare")
                    && e.contains("vnode0, vnode1, vnode2, vnode3 (spare: vnode4)"),
                "{e}"
            );
        }
        let e = parse("kill-rank:epoch=1:launch=4")
            .unwrap()
            .validate(8, &n, 3, 0)
            .unwrap_err();
        assert!(e.contains("launch 4 never happens"), "{e}");
    }

    #[test]
    fn runtime_fault_specs_and_kills() {
        let map = nodes().node_map(8);
        let spec = |s: &str| parse(s).unwrap().fault_spec(&map).unwrap();
        assert_eq!(
            spec("kill-rank:rank=3:epoch=2").as_deref(),
            Some("ckpt-begin:epoch=2:rank=3")
        );
        // A node kind: the first rank of the node.
        assert_eq!(
            spec("lose-node:node=vnode2:epoch=5").as_deref(),
            Some("ckpt-begin:epoch=5:rank=4")
        );
        assert_eq!(
            spec("reboot:rank=3:epoch=1").as_deref(),
            Some("ckpt-begin:epoch=1:rank=2")
        );
        assert_eq!(
            spec("power-cut:epoch=4").as_deref(),
            Some("ckpt-begin:epoch=4:rank=0")
        );
        assert_eq!(
            spec("kill-restore:rank=1").as_deref(),
            Some("restart-restore:rank=1")
        );
        assert_eq!(
            spec("kill-restore:epoch=3").as_deref(),
            Some("restart-restore:epoch=3:rank=0")
        );
        assert_eq!(spec("kill-rank:at=1"), None);
        let kills = |s: &str| parse(s).unwrap().ranks_to_kill(&map).unwrap();
        assert_eq!(kills("kill-rank:rank=5:at=1"), vec![5]);
        assert_eq!(kills("lose-node:node=vnode3:at=1"), vec![6, 7]);
        assert_eq!(kills("reboot:at=1"), vec![0, 1]);
        assert_eq!(kills("power-cut:at=1"), (0..8).collect::<Vec<_>>());
        // A node that runs no rank (a spare not in use yet) is skipped with a message.
        let e = parse("reboot:node=vnode4:at=1")
            .unwrap()
            .ranks_to_kill(&map)
            .unwrap_err();
        assert!(e.contains("runs no rank"), "{e}");
    }
}
