//! Logging: `tracing` with per-module targets (`psls::rma`, `psls::cluster`, …), filtered by
//! `PSLS_LOG`, written to standard error with the rank in front of every line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

static RANK: AtomicUsize = AtomicUsize::new(usize::MAX);
static START: OnceLock<Instant> = OnceLock::new();

/// Prints `r<rank> +<seconds>` where a timestamp would go, so interleaved output from many ranks
/// can be told apart and ordered.
struct RankClock;

impl FormatTime for RankClock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let secs = START.get_or_init(Instant::now).elapsed().as_secs_f64();
        match RANK.load(Ordering::Relaxed) {
            usize::MAX => write!(w, "r? +{secs:.3}s"),
            r => write!(w, "r{r} +{secs:.3}s"),
        }
    }
}

/// Installs the subscriber once per process; later calls only update the rank.
pub(crate) fn init(filter: &str, rank: Option<usize>) {
    if let Some(r) = rank {
        RANK.store(r, Ordering::Relaxed);
    }
    START.get_or_init(Instant::now);
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // An application that installed its own subscriber keeps it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(RankClock)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
