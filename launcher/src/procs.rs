//! The job's processes, as the runtime announces them in `RUN_DIR/ranks/rank.R` (`PID HOST
//! NODE`), and how the launcher checks and kills those on this host.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// One rank's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankProc {
    pub rank: usize,
    pub pid: u32,
    pub host: String,
    pub node: String,
}

/// Every `ranks/rank.R` file (temporary files beside them are skipped).
pub fn read_rank_files(run_dir: &Path) -> Vec<RankProc> {
    let Ok(rd) = fs::read_dir(run_dir.join("ranks")) else {
        return Vec::new();
    };
    let mut out: Vec<RankProc> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rank: usize = name.strip_prefix("rank.")?.parse().ok()?;
            let text = fs::read_to_string(e.path()).ok()?;
            let mut w = text.split_whitespace();
            let pid: u32 = w.next()?.parse().ok()?;
            let host = w.next()?.to_string();
            let node = w.next().unwrap_or("").to_string();
            Some(RankProc {
                rank,
                pid,
                host,
                node,
            })
        })
        .collect();
    out.sort_by_key(|p| p.rank);
    out
}

/// Removes the rank files of an earlier launch.
pub fn clear_rank_files(run_dir: &Path) -> Result<(), String> {
    let dir = run_dir.join("ranks");
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot clear {}: {e}", dir.display())),
    }
}

/// Whether process `pid` of this host is running (a zombie is not).
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Whose a process of this host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// It belongs to the launch (its environment says so).
    Ours,
    /// Another process now has that pid: never kill it.
    Other,
    /// It has ended or is ending (no environment left to read).
    Gone,
}

/// Whether process `pid` of this host belongs to launch `launch` of job `job` (its environment
/// says so), so that a reused process id is never killed.
pub fn owner(pid: u32, job: &str, launch: u32) -> Owner {
    if !is_alive(pid) {
        return Owner::Gone;
    }
    let env = match fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) if !env.is_empty() => env,
        // An exiting process has no environment left; one we may not read is not ours.
        Ok(_) => return Owner::Gone,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Owner::Gone,
        Err(_) => return Owner::Other,
    };
    let want_job = format!("PSLS_JOB_ID={job}");
    let want_launch = format!("PSLS_RESTART={launch}");
    let mut job_ok = false;
    let mut launch_ok = false;
    for var in env.split(|&b| b == 0) {
        job_ok |= var == want_job.as_bytes();
        launch_ok |= var == want_launch.as_bytes();
    }
    if job_ok && launch_ok {
        Owner::Ours
    } else {
        Owner::Other
    }
}

/// Sends `signal` (a name such as `KILL`) to process `pid` of this host.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_files_and_liveness() {
        let dir = std::env::temp_dir().join(format!("psls-launch-ranks-{}", std::process::id()));
        let ranks = dir.join("ranks");
        fs::create_dir_all(&ranks).unwrap();
        fs::write(ranks.join("rank.1"), "4242 hostb vnode1\n").unwrap();
        fs::write(ranks.join("rank.0"), "4241 hosta vnode0\n").unwrap();
        fs::write(ranks.join("rank.tmp99"), "1 x y\n").unwrap();
        fs::write(ranks.join("rank.2"), "garbage\n").unwrap();
        let got = read_rank_files(&dir);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            RankProc {
                rank: 1,
                pid: 4242,
                host: "hostb".into(),
                node: "vnode1".into()
            }
        );
        clear_rank_files(&dir).unwrap();
        assert!(read_rank_files(&dir).is_empty());
        clear_rank_files(&dir).unwrap();
        assert!(is_alive(std::process::id()));
        assert_eq!(owner(std::process::id(), "no-such-job", 0), Owner::Other);
        assert_eq!(owner(u32::MAX, "no-such-job", 0), Owner::Gone);
        let _ = fs::remove_dir_all(&dir);
    }
}
