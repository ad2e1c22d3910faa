//! Fault injection for tests: named points in the runtime where a test can make the process die
//! (as in a crash) or make a disk write fail (as on a full disk).
//!
//! `PSLS_FAULT` holds one or more comma-separated faults, `NAME[:epoch=N][:rank=R][:count=K]`,
//! for example `PSLS_FAULT=ckpt-phase1:epoch=3:rank=1`. A fault fires at the `count`-th hit
//! (default the first) of the point `NAME` that also matches its epoch and rank filters, and only
//! then: later hits pass. A kill point writes one line to standard error and sends `SIGKILL` to
//! its own process, so no destructor runs and nothing is flushed, as in a real crash. A fault
//! named `LAYER-enospc` (`pfs-enospc`) instead makes one disk write at a `LAYER-*` site fail with
//! `ENOSPC`, through the normal error path. A fault named `*-error` (`ckpt-step1-error`,
//! `ckpt-step2-error`: a memory checkpoint's phase-1 steps) makes that step fail with an error
//! on its rank, and the checkpoint is abandoned on every rank; `ckpt-clean-error` makes the
//! memory cleaning after a committed permanent checkpoint fail on its rank, and every rank
//! stops with that error.
//!
//! Points of the PFS store: `pfs-write` (before each page's data is written, so `count=N` dies
//! with N-1 pages of the flush written), `pfs-prepare` (data fsynced, prepare record not yet
//! renamed into place), `pfs-commit` (before the commit rename), `pfs-committed` (just after
//! it), the disk-full fault `pfs-enospc` (the next page write fails), and `pfs-commit-error`
//! (the commit rename fails on that rank: the other nodes commit, this one stays prepared, and
//! the job fails; unlike a kill at `pfs-commit`, whether the others committed does not depend
//! on how fast the launcher kills them), and `pfs-protect-error` (a flush's write-protection of
//! the rank's dirty pages fails: the flush fails on every rank).
//!
//! The variable is read once. [`configure`] replaces it (the configuration layer will pass its
//! own key there).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// The accepted grammar, quoted in every parse error.
pub(crate) const GRAMMAR: &str = "comma-separated NAME[:epoch=N][:rank=R][:count=K], where NAME \
     is letters, digits, '-' and '_', and count >= 1 (e.g. ckpt-phase1:epoch=3:rank=1)";

/// One fault: where it fires, and on which hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The injection point's name, such as `pfs-write`.
    pub name: String,
    /// Fire only at this epoch.
    pub epoch: Option<u64>,
    /// Fire only on this rank.
    pub rank: Option<usize>,
    /// Fire at this matching hit (1 = the first).
    pub count: u64,
}

impl Fault {
    /// Whether a hit of point `name` at `epoch` on `rank` (None: not known yet) matches the
    /// filters. An epoch or rank filter never matches a hit that has no epoch or rank.
    pub(crate) fn matches(&self, name: &str, epoch: Option<u64>, rank: Option<usize>) -> bool {
        self.name == name
            && self.epoch.is_none_or(|e| epoch == Some(e))
            && self.rank.is_none_or(|r| rank == Some(r))
    }
}

/// Every point the runtime fires: a `PSLS_FAULT` naming another is a mistake (a typo would
/// otherwise never fire, and the test that set it would pass without its fault).
pub(crate) const POINTS: &[&str] = &[
    "ckpt-begin",
    "ckpt-phase1",
    "ckpt-vote",
    "ckpt-commit",
    "ckpt-phase2",
    "ckpt-permanent",
    "ckpt-permanent-committed",
    "ckpt-step1-error",
    "ckpt-step2-error",
    "ckpt-clean-error",
    "restart-restore",
    "pfs-write",
    "pfs-prepare",
    "pfs-commit",
    "pfs-committed",
    "pfs-vote",
    "pfs-enospc",
    "pfs-commit-error",
    "pfs-protect-error",
    #[cfg(test)]
    "inject-selftest",
];

/// A parsed `PSLS_FAULT` value: zero or more faults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The faults, in the order written.
    pub faults: Vec<Fault>,
}

/// Parses a `PSLS_FAULT` value. An empty value means no fault.
pub(crate) fn parse(spec: &str) -> Result<Spec, String> {
    let bad = |why: String| format!("invalid fault spec {spec:?}: {why}; expected {GRAMMAR}");
    let mut faults = Vec::new();
    if spec.trim().is_empty() {
        return Ok(Spec { faults });
    }
    for item in spec.split(',') {
        let mut parts = item.trim().split(':');
        let name = parts.next().unwrap_or_default();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(format!("{name:?} is not a point name")));
        }
        if !POINTS.contains(&name) {
            return Err(bad(format!(
                "there is no point {name:?}; the points are {}",
                POINTS.join(", ")
            )));
        }
        let mut fault = Fault {
            name: name.to_string(),
            epoch: None,
            rank: None,
            count: 1,
        };
        let mut seen_count = false;
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
            let number = value
                .parse::<u64>()
                .map_err(|_| bad(format!("{key}={value:?} is not a non-negative integer")))?;
            let twice = match key {
                "epoch" => fault.epoch.replace(number).is_some(),
                "rank" => {
                    let rank = usize::try_from(number)
                        .map_err(|_| bad(format!("rank={value} is too large")))?;
                    fault.rank.replace(rank).is_some()
                }
                "count" if number == 0 => return Err(bad("count=0 never fires".into())),
                "count" => {
                    fault.count = number;
                    std::mem::replace(&mut seen_count, true)
                }
                _ => return Err(bad(format!("unknown key {key:?}"))),
            };
            if twice {
                return Err(bad(format!("{key} is given twice for {name}")));
            }
        }
        if fault.name.ends_with("-enospc") && fault.epoch.is_some() {
            return Err(bad(format!(
                "{name} is a disk-full fault, whose sites carry no epoch; use count= instead"
            )));
        }
        faults.push(fault);
    }
    Ok(Spec { faults })
}

/// A spec in force, with a hit counter per fault.
#[derive(Debug)]
pub(crate) struct Active {
    spec: Spec,
    hits: Vec<AtomicU64>,
}

impl Active {
    /// Arms `spec` with every counter at zero.
    pub(crate) fn new(spec: Spec) -> Self {
        let hits = spec.faults.iter().map(|_| AtomicU64::new(0)).collect();
        Active { spec, hits }
    }

    /// Counts one hit of point `name` against every matching fault, and says whether one of
    /// them reached its `count` with this hit (so it fires exactly once).
    pub(crate) fn should_fire(&self, name: &str, epoch: Option<u64>, rank: Option<usize>) -> bool {
        let mut fire = false;
        for (fault, hits) in self.spec.faults.iter().zip(&self.hits) {
            if fault.matches(name, epoch, rank) {
                fire |= hits.fetch_add(1, Ordering::Relaxed) + 1 == fault.count;
            }
        }
        fire
    }
}

/// The rank of this process, `usize::MAX` until [`set_rank`].
static RANK: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The spec in force: `PSLS_FAULT` until [`configure`] replaces it.
static ACTIVE: OnceLock<RwLock<Arc<Active>>> = OnceLock::new();

#[cfg(test)]
thread_local! {
    /// A spec for the current test thread only, so that tests running side by side in one
    /// process do not see each other's faults.
    static LOCAL: std::cell::RefCell<Option<Arc<Active>>> = const { std::cell::RefCell::new(None) };
}

fn active_cell() -> &'static RwLock<Arc<Active>> {
    ACTIVE.get_or_init(|| {
        let spec = match std::env::var("PSLS_FAULT") {
            Ok(value) => parse(&value).unwrap_or_else(|e| {
                eprintln!("PSLS: ignoring PSLS_FAULT: {e}");
                Spec::default()
            }),
            Err(_) => Spec::default(),
        };
        RwLock::new(Arc::new(Active::new(spec)))
    })
}

fn active() -> Arc<Active> {
    #[cfg(test)]
    if let Some(local) = LOCAL.with(|l| l.borrow().clone()) {
        return local;
    }
    match active_cell().read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Replaces the spec in force (`PSLS_FAULT`'s value) with `spec`; `None` disables injection.
/// Hit counters start again from zero.
pub(crate) fn configure(spec: Option<&str>) -> Result<(), String> {
    let parsed = match spec {
        Some(s) => parse(s)?,
        None => Spec::default(),
    };
    let fresh = Arc::new(Active::new(parsed));
    match active_cell().write() {
        Ok(mut guard) => *guard = fresh,
        Err(poisoned) => *poisoned.into_inner() = fresh,
    }
    Ok(())
}

/// Records this process's rank, so that `rank=` filters can match.
pub(crate) fn set_rank(rank: usize) {
    RANK.store(rank, Ordering::Relaxed);
}

fn rank() -> Option<usize> {
    match RANK.load(Ordering::Relaxed) {
        usize::MAX => None,
        r => Some(r),
    }
}

fn rank_text() -> String {
    rank().map_or_else(|| "?".to_string(), |r| r.to_string())
}

/// A kill point: returns unless a fault for `name` fires here, in which case the process dies at
/// once with `SIGKILL`.
pub(crate) fn point(name: &str, epoch: u64) {
    if active().should_fire(name, Some(epoch), rank()) {
        eprintln!(
            "PSLS: fault injected at {name} (epoch {epoch}, rank {})",
            rank_text()
        );
        kill_self();
    }
}

/// An error point: whether a fault for `name` (a name ending in `-error`, such as
/// `ckpt-step1-error`) fires here at `epoch`. The caller then fails through its normal error
/// path, as on any local failure, and the process lives on.
pub(crate) fn error_point(name: &str, epoch: u64) -> bool {
    let fire = active().should_fire(name, Some(epoch), rank());
    if fire {
        eprintln!(
            "PSLS: fault injected at {name} (an error, epoch {epoch}, rank {})",
            rank_text()
        );
    }
    fire
}

/// A disk-full point at write site `site` (`pfs-write`): whether a `LAYER-enospc` fault, where
/// `LAYER` is the site's first word, fires here. The caller then fails as on `ENOSPC`.
pub(crate) fn enospc(site: &str) -> bool {
    let layer = site.split('-').next().unwrap_or(site);
    let name = format!("{layer}-enospc");
    let fire = active().should_fire(&name, None, rank());
    if fire {
        eprintln!(
            "PSLS: fault injected at {name} (disk full at {site}, rank {})",
            rank_text()
        );
    }
    fire
}

/// Runs `f` with `spec` in force on this thread only (tests share one process).
#[cfg(test)]
pub(crate) fn with_faults<R>(spec: &str, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LOCAL.with(|l| *l.borrow_mut() = None);
        }
    }
    let armed = Arc::new(Active::new(parse(spec).expect("test fault spec")));
    LOCAL.with(|l| *l.borrow_mut() = Some(armed));
    let _reset = Reset;
    f()
}

/// Ends this process the way a crash would: no unwinding, no destructor, no buffered output.
fn kill_self() -> ! {
    crate::sys::kill_self()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(name: &str, epoch: Option<u64>, rank: Option<usize>, count: u64) -> Fault {
        Fault {
            name: name.into(),
            epoch,
            rank,
            count,
        }
    }

    #[test]
    fn parses_the_grammar() {
        assert_eq!(parse("").unwrap(), Spec::default());
        assert_eq!(
            parse("ckpt-phase1:epoch=3:rank=1").unwrap().faults,
            vec![fault("ckpt-phase1", Some(3), Some(1), 1)]
        );
        assert_eq!(
            parse("pfs-write:count=5, pfs-commit:rank=0:epoch=7")
                .unwrap()
                .faults,
            vec![
                fault("pfs-write", None, None, 5),
                fault("pfs-commit", Some(7), Some(0), 1)
            ]
        );
        assert_eq!(
            parse("pfs-enospc:count=2").unwrap().faults,
            vec![fault("pfs-enospc", None, None, 2)]
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_spec_and_the_grammar() {
        for (bad, why) in [
            ("pfs-write:epoch", "not KEY=VALUE"),
            ("pfs-write:epoch=x", "not a non-negative integer"),
            ("pfs-write:epoch=-1", "not a non-negative integer"),
            ("pfs-write:color=3", "unknown key"),
            ("pfs-write:count=0", "never fires"),
            ("pfs-write:rank=1:rank=2", "given twice"),
            ("pfs write", "not a point name"),
            ("pfs-write,,pfs-commit", "not a point name"),
            (
                "pfs-wirte:rank=1",
                "there is no point \"pfs-wirte\"; the points are ckpt-begin",
            ),
            ("garbage", "there is no point"),
            (":epoch=1", "not a point name"),
            ("pfs-enospc:epoch=2", "disk-full fault"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains(why) && e.contains("NAME[:epoch=N]"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn filters_match_only_what_they_name() {
        let f = fault("ckpt", Some(3), Some(1), 1);
        assert!(f.matches("ckpt", Some(3), Some(1)));
        assert!(!f.matches("ckpt", Some(4), Some(1)));
        assert!(!f.matches("ckpt", Some(3), Some(0)));
        assert!(
            !f.matches("ckpt", Some(3), None),
            "an unset rank never matches"
        );
        assert!(!f.matches("ckpt", None, Some(1)), "no epoch never matches");
        assert!(!f.matches("ckpt-2", Some(3), Some(1)));
        let any = fault("ckpt", None, None, 1);
        assert!(any.matches("ckpt", None, None) && any.matches("ckpt", Some(9), Some(4)));
    }

    #[test]
    fn fires_once_at_the_counted_hit() {
        let a = Active::new(parse("pfs-write:epoch=2:count=3").unwrap());
        let fired: Vec<bool> = (0..6)
            .map(|_| a.should_fire("pfs-write", Some(2), Some(0)))
            .collect();
        assert_eq!(fired, [false, false, true, false, false, false]);
        // Hits that do not match the filters are not counted.
        let b = Active::new(parse("pfs-write:epoch=2:count=2").unwrap());
        assert!(!b.should_fire("pfs-write", Some(1), None));
        assert!(!b.should_fire("pfs-commit", Some(2), None));
        assert!(!b.should_fire("pfs-write", Some(2), None));
        assert!(b.should_fire("pfs-write", Some(2), None));
    }

    #[test]
    fn thread_local_faults_drive_the_enospc_site() {
        assert!(!enospc("pfs-write"));
        with_faults("pfs-enospc:count=2", || {
            assert!(!enospc("pfs-write"));
            assert!(!enospc("ckpt-write"), "another layer's site");
            assert!(enospc("pfs-write"));
            assert!(!enospc("pfs-write"), "fires once");
        });
        assert!(!enospc("pfs-write"));
    }

    #[test]
    fn configure_replaces_the_process_spec() {
        // Only a point name nothing in the runtime uses, since other tests run alongside.
        configure(Some("inject-selftest:count=2")).unwrap();
        let a = active();
        assert!(!a.should_fire("inject-selftest", Some(1), None));
        assert!(a.should_fire("inject-selftest", Some(1), None));
        assert!(configure(Some("inject-selftest:count=x"))
            .unwrap_err()
            .contains("inject-selftest:count=x"));
        configure(None).unwrap();
        assert!(!active().should_fire("inject-selftest", Some(1), None));
    }
}
