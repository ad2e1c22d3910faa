//! The runtime's configuration: one struct, read once at init.
//!
//! Values come from, in increasing precedence: built-in defaults, the TOML file named by
//! `PSLS_CONFIG`, and `PSLS_*` environment variables. Every key is in [`KEYS`], and
//! `docs/configuration.md` documents each one (a unit test keeps the two in step). A bad value
//! is an error that names the key, the value, where it came from and what is allowed.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Which CPUs each rank is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// No binding: the OS places ranks (the default; right when ranks are oversubscribed).
    None,
    /// Each rank of a node is bound to one core, round robin by its index on the node.
    Core,
    /// Each rank of a node is bound to one hardware thread (PU), round robin.
    Pu,
}

/// How far the SVM works ahead of a miss (`PSLS_PREFETCH`): after a read miss it fetches the
/// following pages, after a first write to an untouched page it takes the following untouched
/// pages, and after a checkpoint a write takes back the following pages this rank owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// Only after sequential misses (the miss lands just after the last one and the pages
    /// worked ahead of it), 1, 2, 4, … up to 64 pages, as the kernel's readahead does.
    #[default]
    Auto,
    /// Always up to this many pages (0: never).
    Pages(usize),
}

impl std::fmt::Display for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefetch::Auto => write!(f, "auto"),
            Prefetch::Pages(n) => write!(f, "{n}"),
        }
    }
}

/// How a fault on a page homed on another rank takes and releases the page's directory entry
/// (`PSLS_DIRECTORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectoryRequests {
    /// Chosen at start-up from the measured cost of a remote RMA atomic: `Home` when it is
    /// slow (the MPI library emulates it in software, as UCX over TCP does), else `Rma`.
    #[default]
    Auto,
    /// The faulting rank locks, reads and writes the entry itself, with RMA atomics, gets and
    /// puts on the home's directory window.
    Rma,
    /// The faulting rank asks the home's service thread to lock and read the entry (one
    /// message and its answer), and sends it the new entry with the unlock.
    Home,
}

impl std::fmt::Display for DirectoryRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DirectoryRequests::Auto => "auto",
            DirectoryRequests::Rma => "rma",
            DirectoryRequests::Home => "home",
        })
    }
}

/// How the application's view write-protects its readable pages (`PSLS_WRITE_PROTECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteProtection {
    /// `userfaultfd` where the kernel offers it for shared memory, else `mprotect`.
    #[default]
    Auto,
    /// `userfaultfd` write-protection; `init` fails where the kernel does not offer it.
    Userfaultfd,
    /// `mprotect` only.
    Mprotect,
}

impl std::fmt::Display for WriteProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteProtection::Auto => "auto",
            WriteProtection::Userfaultfd => "userfaultfd",
            WriteProtection::Mprotect => "mprotect",
        })
    }
}

/// The runtime's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The TOML file the configuration was read from, if any.
    pub config_file: Option<PathBuf>,
    /// The job id that keys the node roots. `None`: the launcher's, Slurm's, or generated.
    pub job_id: Option<String>,
    /// The checkpoint set's name (default: the program's name and the rank count).
    pub ckpt_name: Option<String>,
    /// Number of simulated nodes on this host; 0 means real nodes.
    pub virtual_nodes: usize,
    /// A node-map file (`RANK NODE` per line), as the launcher writes it.
    pub node_map: Option<PathBuf>,
    /// Directory under which memory roots are made (tmpfs).
    pub memory_base: PathBuf,
    /// Directory under which disk roots are made.
    pub disk_base: PathBuf,
    /// Whether memory roots must be on tmpfs.
    pub require_tmpfs: bool,
    /// Page size in bytes: a power of two, at least 4096.
    pub page_size: usize,
    /// Rank binding.
    pub bind: Binding,
    /// Start of the global address range, the same on every rank.
    pub svm_base: usize,
    /// Length of the global address range in bytes.
    pub svm_size: usize,
    /// Longest sleep of an idle service thread between two polls.
    pub service_max_sleep: std::time::Duration,
    /// Working ahead of misses (read prefetch, claims of untouched pages, taking pages back
    /// after a checkpoint).
    pub prefetch: Prefetch,
    /// How faults take directory entries homed on other ranks.
    pub directory: DirectoryRequests,
    /// How the view write-protects readable pages.
    pub write_protect: WriteProtection,
    /// Every how-manieth `checkpoint()` call is a permanent checkpoint (0: none by count).
    pub ckpt_permanent_every: u64,
    /// A `checkpoint()` call at least this long after the last permanent checkpoint (or the
    /// start) is a permanent one (zero: none by time).
    pub ckpt_permanent_interval: std::time::Duration,
    /// What a permanent checkpoint leaves in memory.
    pub ckpt_cleaning: crate::ckpt::Cleaning,
    /// After a restart from the permanent checkpoint, load the pages each rank held after that
    /// checkpoint's cleaning when the application allocates them again (else on first touch).
    pub restart_prefetch: bool,
    /// The memory a node may hold for the job (frames and recovery copies) after a memory
    /// checkpoint's phase 1: bytes, or a share of the node's memory.
    pub ckpt_memory: crate::ckpt::Budget,
    /// Pages per stripe unit of new PFS files.
    pub stripe_pages: u32,
    /// Test-only fault injection (`NAME[:epoch=N][:rank=R][:count=K]`, comma-separated).
    pub fault: Option<String>,
    /// `tracing` filter for the runtime's logs.
    pub log: String,
    /// Whether a program started without an MPI launcher may run as one rank.
    pub allow_singleton: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            config_file: None,
            job_id: None,
            ckpt_name: None,
            virtual_nodes: 0,
            node_map: None,
            memory_base: PathBuf::from("/dev/shm"),
            disk_base: default_disk_base(),
            require_tmpfs: true,
            page_size: 4096,
            bind: Binding::None,
            svm_base: 0x2000_0000_0000,
            svm_size: 16 << 30,
            service_max_sleep: std::time::Duration::from_micros(200),
            prefetch: Prefetch::Auto,
            write_protect: WriteProtection::Auto,
            directory: DirectoryRequests::Auto,
            ckpt_permanent_every: 10,
            ckpt_permanent_interval: std::time::Duration::ZERO,
            ckpt_cleaning: crate::ckpt::Cleaning::NoCleaning,
            restart_prefetch: false,
            ckpt_memory: crate::ckpt::Budget::Percent(50),
            stripe_pages: 1,
            fault: None,
            log: "info".into(),
            allow_singleton: false,
        }
    }
}

fn default_disk_base() -> PathBuf {
    match std::env::var_os("TMPDIR") {
        Some(t) if !t.is_empty() && Path::new(&t).is_absolute() => PathBuf::from(t),
        _ => PathBuf::from("/var/tmp"),
    }
}

/// Whether `v` can name a job or a checkpoint set: 1 to 64 characters from A-Z a-z 0-9 . _ -,
/// not starting with a dot (it becomes a directory name).
pub(crate) fn valid_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
}

/// One configuration key.
pub struct Key {
    /// Its name in the TOML file.
    pub name: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// What is allowed, as shown in errors and docs.
    pub allowed: &'static str,
    set: fn(&mut Config, &str) -> std::result::Result<(), ()>,
}

/// Every configuration key.
pub const KEYS: &[Key] = &[
    Key {
        name: "job_id",
        env: "PSLS_JOB_ID",
        allowed: "1 to 64 characters from A-Z a-z 0-9 . _ -",
        set: |c, v| {
            valid_name(v)
                .then(|| c.job_id = Some(v.to_string()))
                .ok_or(())
        },
    },
    Key {
        name: "ckpt_name",
        env: "PSLS_CKPT_NAME",
        allowed: "1 to 64 characters from A-Z a-z 0-9 . _ -",
        set: |c, v| {
            valid_name(v)
                .then(|| c.ckpt_name = Some(v.to_string()))
                .ok_or(())
        },
    },
    Key {
        name: "virtual_nodes",
        env: "PSLS_VIRTUAL_NODES",
        allowed: "a whole number from 0 (real nodes) to 4096",
        set: |c, v| {
            let n: usize = v.parse().map_err(|_| ())?;
            (n <= 4096).then(|| c.virtual_nodes = n).ok_or(())
        },
    },
    Key {
        name: "node_map",
        env: "PSLS_NODE_MAP",
        allowed: "the path of an existing node-map file (lines of `RANK NODE`)",
        set: |c, v| {
            let p = PathBuf::from(v);
            p.is_file().then(|| c.node_map = Some(p)).ok_or(())
        },
    },
    Key {
        name: "memory_base",
        env: "PSLS_MEMORY_BASE",
        allowed: "an absolute path to an existing directory (tmpfs, e.g. /dev/shm)",
        set: |c, v| set_dir(&mut c.memory_base, v),
    },
    Key {
        name: "disk_base",
        env: "PSLS_DISK_BASE",
        allowed: "an absolute path to an existing directory on the node-local disk",
        set: |c, v| set_dir(&mut c.disk_base, v),
    },
    Key {
        name: "require_tmpfs",
        env: "PSLS_REQUIRE_TMPFS",
        allowed: "true or false (also 1/0, yes/no)",
        set: |c, v| parse_bool(v).map(|b| c.require_tmpfs = b),
    },
    Key {
        name: "page_size",
        env: "PSLS_PAGE_SIZE",
        allowed:
            "a power of two from 4096 to 1G bytes; K, M and G suffixes are accepted (4096, 64K, 2M)",
        set: |c, v| {
            let n = parse_size(v).ok_or(())?;
            (n.is_power_of_two() && (4096..=1 << 30).contains(&n))
                .then(|| c.page_size = n)
                .ok_or(())
        },
    },
    Key {
        name: "bind",
        env: "PSLS_BIND",
        allowed: "none, core or pu",
        set: |c, v| {
            c.bind = match v.to_ascii_lowercase().as_str() {
                "none" => Binding::None,
                "core" => Binding::Core,
                "pu" => Binding::Pu,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "svm_base",
        env: "PSLS_SVM_BASE",
        allowed:
            "a hexadecimal address (0x...), a multiple of 1 GiB, from 0x100000000 to 0x7f0000000000",
        set: |c, v| {
            let hex = v
                .strip_prefix("0x")
                .or_else(|| v.strip_prefix("0X"))
                .ok_or(())?;
            let a = usize::from_str_radix(&hex.replace('_', ""), 16).map_err(|_| ())?;
            (a % (1 << 30) == 0 && (1usize << 32..=0x7f00_0000_0000).contains(&a))
                .then(|| c.svm_base = a)
                .ok_or(())
        },
    },
    Key {
        name: "svm_size",
        env: "PSLS_SVM_SIZE",
        allowed: "a size from 64M to 1024G, a multiple of 1M (64M, 16G)",
        set: |c, v| {
            let n = parse_size(v).ok_or(())?;
            (n % (1 << 20) == 0 && ((64 << 20)..=(1 << 40)).contains(&n))
                .then(|| c.svm_size = n)
                .ok_or(())
        },
    },
    Key {
        name: "service_max_sleep",
        env: "PSLS_SERVICE_MAX_SLEEP",
        allowed: "a duration from 0us to 100ms, with a unit: 0us, 50us, 200us, 1ms",
        set: |c, v| {
            let v = v.trim();
            let (num, unit) = if let Some(n) = v.strip_suffix("us") {
                (n, 1u64)
            } else if let Some(n) = v.strip_suffix("ms") {
                (n, 1000)
            } else {
                return Err(());
            };
            let us = num
                .trim()
                .parse::<u64>()
                .map_err(|_| ())?
                .checked_mul(unit)
                .ok_or(())?;
            (us <= 100_000)
                .then(|| c.service_max_sleep = std::time::Duration::from_micros(us))
                .ok_or(())
        },
    },
    Key {
        name: "prefetch",
        env: "PSLS_PREFETCH",
        allowed: "auto (work ahead of sequential misses only), or a whole number of pages from 0 (off) to 64",
        set: |c, v| {
            if v.trim().eq_ignore_ascii_case("auto") {
                c.prefetch = Prefetch::Auto;
                return Ok(());
            }
            let n: usize = v.trim().parse().map_err(|_| ())?;
            (n <= 64).then(|| c.prefetch = Prefetch::Pages(n)).ok_or(())
        },
    },
    Key {
        name: "directory",
        env: "PSLS_DIRECTORY",
        allowed: "auto, rma or home",
        set: |c, v| {
            c.directory = match v.trim().to_ascii_lowercase().as_str() {
                "auto" => DirectoryRequests::Auto,
                "rma" => DirectoryRequests::Rma,
                "home" => DirectoryRequests::Home,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "write_protect",
        env: "PSLS_WRITE_PROTECT",
        allowed: "auto, userfaultfd or mprotect",
        set: |c, v| {
            c.write_protect = match v.trim().to_ascii_lowercase().as_str() {
                "auto" => WriteProtection::Auto,
                "userfaultfd" => WriteProtection::Userfaultfd,
                "mprotect" => WriteProtection::Mprotect,
                _ => return Err(()),
            };
            Ok(())
        },
    },
    Key {
        name: "ckpt_permanent_every",
        env: "PSLS_CKPT_PERMANENT_EVERY",
        allowed: "a whole number from 0 (never by count) to 1000000",
        set: |c, v| {
            let n: u64 = v.trim().parse().map_err(|_| ())?;
            (n <= 1_000_000)
                .then(|| c.ckpt_permanent_every = n)
                .ok_or(())
        },
    },
    Key {
        name: "ckpt_permanent_seconds",
        env: "PSLS_CKPT_PERMANENT_SECONDS",
        allowed: "a whole number of seconds from 0 (never by time) to 31536000",
        set: |c, v| {
            let n: u64 = v.trim().parse().map_err(|_| ())?;
            (n <= 31_536_000)
                .then(|| c.ckpt_permanent_interval = std::time::Duration::from_secs(n))
                .ok_or(())
        },
    },
    Key {
        name: "ckpt_memory",
        env: "PSLS_CKPT_MEMORY",
        allowed: "a size (64K, 512M, 8G) or a percentage of the node's memory from 1% to 100%",
        set: |c, v| {
            let v = v.trim();
            if let Some(p) = v.strip_suffix('%') {
                let p: u32 = p.trim().parse().map_err(|_| ())?;
                return (1..=100)
                    .contains(&p)
                    .then(|| c.ckpt_memory = crate::ckpt::Budget::Percent(p))
                    .ok_or(());
            }
            let n = parse_size(v).ok_or(())?;
            (n >= 4096)
                .then(|| c.ckpt_memory = crate::ckpt::Budget::Bytes(n as u64))
                .ok_or(())
        },
    },
    Key {
        name: "ckpt_cleaning",
        env: "PSLS_CKPT_CLEANING",
        allowed: "one of none, total, keep-dirty-and-recovery, keep-dirty, one-active",
        set: |c, v| {
            crate::ckpt::Cleaning::from_name(v.trim())
                .map(|p| c.ckpt_cleaning = p)
                .ok_or(())
        },
    },
    Key {
        name: "restart_prefetch",
        env: "PSLS_RESTART_PREFETCH",
        allowed: "true or false (also 1/0, yes/no)",
        set: |c, v| parse_bool(v).map(|b| c.restart_prefetch = b),
    },
    Key {
        name: "stripe_pages",
        env: "PSLS_STRIPE_PAGES",
        allowed: "a whole number of pages from 1 to 65536",
        set: |c, v| {
            let n: u32 = v.trim().parse().map_err(|_| ())?;
            (1..=65536)
                .contains(&n)
                .then(|| c.stripe_pages = n)
                .ok_or(())
        },
    },
    Key {
        name: "fault",
        env: "PSLS_FAULT",
        allowed: "test-only fault injection: NAME[:epoch=N][:rank=R][:count=K], comma-separated",
        set: |c, v| {
            crate::inject::parse(v).map_err(|_| ())?;
            c.fault = Some(v.to_string());
            Ok(())
        },
    },
    Key {
        name: "log",
        env: "PSLS_LOG",
        allowed: "a tracing filter, e.g. info, debug, or psls::rma=debug,info",
        set: |c, v| {
            tracing_subscriber::EnvFilter::try_new(v).map_err(|_| ())?;
            c.log = v.to_string();
            Ok(())
        },
    },
    Key {
        name: "allow_singleton",
        env: "PSLS_ALLOW_SINGLETON",
        allowed: "true or false (also 1/0, yes/no)",
        set: |c, v| parse_bool(v).map(|b| c.allow_singleton = b),
    },
];

/// Environment variables that are not configuration keys but that PSLS itself reads or sets.
const OTHER_ENV: &[&str] = &[
    "PSLS_CONFIG",
    "PSLS_LAUNCHED",
    "PSLS_RUN_DIR",
    "PSLS_RESTART",
    "PSLS_SPARES",
];

fn set_dir(slot: &mut PathBuf, v: &str) -> std::result::Result<(), ()> {
    let p = PathBuf::from(v);
    (p.is_absolute() && p.is_dir()).then(|| *slot = p).ok_or(())
}

fn parse_bool(v: &str) -> std::result::Result<bool, ()> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(()),
    }
}

/// Parses `4096`, `64K`, `64KiB`, `2M`, `1G` (binary multiples).
pub fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let (digits, mult) = match v.find(|c: char| !c.is_ascii_digit()) {
        None => (v, 1usize),
        Some(i) => {
            let unit = match v[i..].to_ascii_uppercase().as_str() {
                "K" | "KB" | "KIB" => 1 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                _ => return None,
            };
            (&v[..i], unit)
        }
    };
    digits.parse::<usize>().ok()?.checked_mul(mult)
}

impl Config {
    /// The settings every rank of a job must share (the layout of the global range, the
    /// protocol, the checkpoint and file policies), by environment name, as text. Per-rank
    /// settings (roots, binding, log, faults) may differ.
    fn shared_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PSLS_PAGE_SIZE", self.page_size.to_string()),
            ("PSLS_SVM_BASE", format!("{:#x}", self.svm_base)),
            ("PSLS_SVM_SIZE", self.svm_size.to_string()),
            ("PSLS_VIRTUAL_NODES", self.virtual_nodes.to_string()),
            ("PSLS_DIRECTORY", format!("{:?}", self.directory)),
            ("PSLS_STRIPE_PAGES", self.stripe_pages.to_string()),
            ("PSLS_CKPT_NAME", format!("{:?}", self.ckpt_name)),
            (
                "PSLS_CKPT_PERMANENT_EVERY",
                self.ckpt_permanent_every.to_string(),
            ),
            (
                "PSLS_CKPT_PERMANENT_SECONDS",
                self.ckpt_permanent_interval.as_secs().to_string(),
            ),
            ("PSLS_CKPT_CLEANING", format!("{:?}", self.ckpt_cleaning)),
            ("PSLS_CKPT_MEMORY", format!("{:?}", self.ckpt_memory)),
            ("PSLS_RESTART_PREFETCH", self.restart_prefetch.to_string()),
        ]
    }

    /// Checks (collective over `comm`) that every rank has the same [shared
    /// settings](Self::shared_settings): a page size or global base set on one rank only would
    /// otherwise fail much later, or not at all and wrongly. Every rank returns the same error,
    /// naming the first setting that differs and the ranks' values.
    pub(crate) fn check_same_on_every_rank(&self, comm: &crate::rma::Comm) -> Result<()> {
        let text = |s: &[(&str, String)]| -> String {
            s.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
        };
        let mine = self.shared_settings();
        let all = comm.allgather_bytes(text(&mine).as_bytes())?;
        let first = String::from_utf8_lossy(&all[0]).into_owned();
        for (r, b) in all.iter().enumerate().skip(1) {
            let theirs = String::from_utf8_lossy(b);
            if theirs == first {
                continue;
            }
            let (k, v0, vr) = first
                .lines()
                .zip(theirs.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| {
                    let (k, v0) = a.split_once('=').unwrap_or((a, ""));
                    let vr = b.split_once('=').map_or(b, |(_, v)| v);
                    (k.to_string(), v0.to_string(), vr.to_string())
                })
                .unwrap_or_default();
            return Err(Error::Config {
                key: k,
                value: format!("{vr} on rank {r}"),
                source_name: "environment or PSLS_CONFIG file".into(),
                allowed: format!(
                    "the same value on every rank of the job, and rank 0 has {v0}: set it the \
                     same way for the whole job (e.g. export it before mpirun, or mpirun -x)"
                ),
            });
        }
        Ok(())
    }

    /// Reads the configuration from this process's environment (and the TOML file that
    /// `PSLS_CONFIG` names).
    pub fn from_env() -> Result<Config> {
        // Not `std::env::vars()`, which panics on any variable that is not UTF-8 (Open MPI puts
        // the command line in the environment, so a file name argument can be one). Only our
        // own keys must be text.
        let mut vars = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            match v.into_string() {
                Ok(v) => vars.push((k.to_string(), v)),
                Err(v) if k.starts_with("PSLS_") => {
                    return Err(Error::Config {
                        key: k.to_string(),
                        value: v.to_string_lossy().into_owned(),
                        source_name: "environment".into(),
                        allowed: "the value is not valid UTF-8 text".into(),
                    })
                }
                Err(_) => {}
            }
        }
        Self::from_vars(vars)
    }

    /// Reads the configuration from the given environment variables (and the TOML file that
    /// `PSLS_CONFIG` names among them).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut cfg = Config::default();
        if let Some((_, file)) = vars.iter().find(|(k, _)| k == "PSLS_CONFIG") {
            let path = PathBuf::from(file);
            cfg.apply_toml(&path)?;
            cfg.config_file = Some(path);
        }
        for (k, v) in &vars {
            if !k.starts_with("PSLS_") {
                continue;
            }
            match KEYS.iter().find(|key| key.env == k) {
                Some(key) => apply(&mut cfg, key, key.env, v, "environment")?,
                None if OTHER_ENV.contains(&k.as_str()) => {}
                None => tracing::debug!(
                    target: "psls::config",
                    "ignoring {k}: not a PSLS configuration key (see docs/configuration.md)"
                ),
            }
        }
        Ok(cfg)
    }

    fn apply_toml(&mut self, path: &Path) -> Result<()> {
        let file_err = |message: String| Error::ConfigFile {
            path: path.to_path_buf(),
            message,
        };
        // Looked at before it is opened: opening a FIFO would block, and a device could be
        // read without end.
        const MAX: u64 = 1 << 20;
        let meta = std::fs::metadata(path).map_err(|e| {
            file_err(format!(
                "cannot read it ({e}); PSLS_CONFIG must name a readable TOML file"
            ))
        })?;
        if !meta.is_file() {
            return Err(file_err(
                "not a regular file; PSLS_CONFIG must name a readable TOML file".into(),
            ));
        }
        if meta.len() > MAX {
            return Err(file_err(format!(
                "{} bytes is too large for a configuration file (at most {MAX})",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            file_err(format!(
                "cannot read it ({e}); PSLS_CONFIG must name a readable TOML file"
            ))
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map_or(String::new(), |s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {column}")
            });
            file_err(format!("not valid TOML{at}: {}", e.message()))
        })?;
        let source = format!("file {}", path.display());
        for (k, v) in &table {
            let key = KEYS.iter().find(|key| key.name == k).ok_or_else(|| {
                let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
                file_err(format!(
                    "unknown key `{k}`; the keys are: {}",
                    names.join(", ")
                ))
            })?;
            let text = match v {
                toml::Value::String(s) => s.clone(),
                // An address is hexadecimal, as the user most likely wrote it.
                toml::Value::Integer(i) if key.name == "svm_base" => format!("{i:#x}"),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            };
            apply(self, key, key.name, &text, &source)?;
        }
        Ok(())
    }
}

fn apply(cfg: &mut Config, key: &Key, shown: &str, value: &str, source: &str) -> Result<()> {
    (key.set)(cfg, value).map_err(|()| Error::Config {
        key: shown.to_string(),
        value: value.to_string(),
        source_name: source.to_string(),
        allowed: match key.name {
            // The fault parser says which part is wrong, and lists the points.
            "fault" => crate::inject::parse(value)
                .err()
                .unwrap_or_else(|| format!("expected {}", key.allowed)),
            _ => format!("expected {}", key.allowed),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.page_size, 4096);
        assert_eq!(c.virtual_nodes, 0);
        assert_eq!(c.memory_base, PathBuf::from("/dev/shm"));
        assert!(c.require_tmpfs);
        assert_eq!(c.bind, Binding::None);
    }

    #[test]
    fn env_values_are_parsed() {
        let c = Config::from_vars(vars(&[
            ("PSLS_PAGE_SIZE", "64K"),
            ("PSLS_VIRTUAL_NODES", "4"),
            ("PSLS_BIND", "core"),
            ("PSLS_DIRECTORY", "Home"),
            ("PSLS_JOB_ID", "job-1.a"),
            ("PSLS_REQUIRE_TMPFS", "no"),
            ("PSLS_SOMETHING_ELSE", "ignored"),
        ]))
        .unwrap();
        assert_eq!(c.page_size, 65536);
        assert_eq!(c.virtual_nodes, 4);
        assert_eq!(c.bind, Binding::Core);
        assert_eq!(c.directory, DirectoryRequests::Home);
        assert_eq!(c.job_id.as_deref(), Some("job-1.a"));
        assert!(!c.require_tmpfs);
    }

    #[test]
    fn bad_values_name_key_value_and_what_is_allowed() {
        for (k, v, needle) in [
            ("PSLS_PAGE_SIZE", "5000", "power of two"),
            ("PSLS_PAGE_SIZE", "2048", "power of two"),
            ("PSLS_PAGE_SIZE", "12Q", "power of two"),
            ("PSLS_VIRTUAL_NODES", "-1", "whole number"),
            ("PSLS_BIND", "socket", "none, core or pu"),
            ("PSLS_DIRECTORY", "messages", "auto, rma or home"),
            ("PSLS_JOB_ID", "../etc", "A-Z"),
            ("PSLS_MEMORY_BASE", "relative/dir", "absolute path"),
            ("PSLS_MEMORY_BASE", "/no/such/dir", "existing directory"),
            ("PSLS_REQUIRE_TMPFS", "maybe", "true or false"),
            ("PSLS_LOG", "psls=[[", "tracing filter"),
            ("PSLS_SVM_BASE", "12345", "hexadecimal"),
            ("PSLS_SVM_BASE", "0x1234", "multiple of 1 GiB"),
            ("PSLS_SVM_SIZE", "1K", "64M to 1024G"),
            ("PSLS_SERVICE_MAX_SLEEP", "5", "with a unit"),
            ("PSLS_SERVICE_MAX_SLEEP", "1s", "with a unit"),
            ("PSLS_SERVICE_MAX_SLEEP", "200ms", "0us to 100ms"),
        ] {
            let e = Config::from_vars(vars(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
            assert!(e.contains(&format!("{v:?}")), "{e}");
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn toml_file_then_env_override() {
        let dir = std::env::temp_dir().join(format!("psls-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("psls.toml");
        std::fs::write(&f, "page_size = 8192\nvirtual_nodes = 2\nbind = \"pu\"\n").unwrap();
        let fs = f.to_str().unwrap();
        let c = Config::from_vars(vars(&[("PSLS_CONFIG", fs)])).unwrap();
        assert_eq!(
            (c.page_size, c.virtual_nodes, c.bind),
            (8192, 2, Binding::Pu)
        );
        let c = Config::from_vars(vars(&[("PSLS_CONFIG", fs), ("PSLS_PAGE_SIZE", "16K")])).unwrap();
        assert_eq!(c.page_size, 16384);

        std::fs::write(&f, "page_sise = 8192\n").unwrap();
        let e = Config::from_vars(vars(&[("PSLS_CONFIG", fs)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key `page_sise`") && e.contains("page_size"),
            "{e}"
        );

        std::fs::write(&f, "page_size = 3000\n").unwrap();
        let e = Config::from_vars(vars(&[("PSLS_CONFIG", fs)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("page_size") && e.contains("\"3000\"") && e.contains("psls.toml"),
            "{e}"
        );

        std::fs::write(&f, "bind = \"pu\"\npage_size = = 1\n").unwrap();
        let e = Config::from_vars(vars(&[("PSLS_CONFIG", fs)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid TOML at line 2, column"), "{e}");

        // An address written as a TOML integer (hexadecimal, most likely) is an address.
        std::fs::write(&f, "svm_base = 0x300000000000\n").unwrap();
        let c = Config::from_vars(vars(&[("PSLS_CONFIG", fs)])).unwrap();
        assert_eq!(c.svm_base, 0x3000_0000_0000);

        // A FIFO is refused before it is opened (opening it would wait for a writer).
        let fifo = dir.join("fifo.toml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = Config::from_vars(vars(&[("PSLS_CONFIG", fifo.to_str().unwrap())]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();

        let e = Config::from_vars(vars(&[("PSLS_CONFIG", "/no/such.toml")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such.toml") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_fault_naming_no_point_is_refused_with_the_list() {
        let e = Config::from_vars(vars(&[("PSLS_FAULT", "pfs-wirte:rank=1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PSLS_FAULT")
                && e.contains("there is no point \"pfs-wirte\"")
                && e.contains("pfs-write"),
            "{e}"
        );
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        for k in KEYS {
            assert!(
                doc.contains(&format!("`{}`", k.env)),
                "{} missing from docs/configuration.md",
                k.env
            );
            assert!(
                doc.contains(&format!("`{}`", k.name)),
                "{} missing from docs/configuration.md",
                k.name
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("2m"), Some(2 << 20));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size(""), None);
    }
}
