//! `mgs_overhead`: the paper's Figures 5 and 6 for this implementation. It runs the `mgs`
//! example (Modified Gram–Schmidt) under `mpirun` without checkpoints, with memory checkpoints,
//! with permanent checkpoints, and with permanent checkpoints under each cleaning policy, at a
//! range of checkpoint intervals, and prints each run's overhead in % against the run without
//! checkpoints (the baseline, measured in the same invocation). Every run must print the
//! baseline's checksum of Q: a checkpoint that changed the result fails the benchmark.
//!
//! ```sh
//! PSLS_DISK_BASE=/var/tmp/x target/release/mgs_overhead [--ranks 4] [--nodes 4] \
//!     [--rows 8192] [--vectors 512] [--intervals 0.25,0.5,1,2] [--out docs]
//! ```
//!
//! The interval is turned into a number of vectors between checkpoints from the baseline's
//! time per vector (MGS's later vectors are cheaper, so intervals are averages). Writes
//! `mgs_overhead_fig5.svg` (memory vs permanent) and `mgs_overhead_fig6.svg` (the cleaning
//! policies) into `--out`.

use plotters::prelude::*;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

struct Opts {
    ranks: usize,
    nodes: usize,
    rows: usize,
    vectors: usize,
    intervals: Vec<f64>,
    repeats: usize,
    out: PathBuf,
}

const USAGE: &str = "usage: mgs_overhead [--ranks N] [--nodes V] [--rows M] [--vectors N] [--intervals S,S,...] [--repeats K] [--out DIR]";

fn parse() -> Result<Opts, String> {
    let smoke = psls_bench::smoke();
    let mut o = Opts {
        ranks: 4,
        nodes: 4,
        rows: if smoke { 512 } else { 8192 },
        vectors: if smoke { 32 } else { 512 },
        intervals: if smoke {
            vec![0.05]
        } else {
            vec![0.25, 0.5, 1.0, 2.0]
        },
        repeats: if smoke { 1 } else { 3 },
        out: PathBuf::from("docs"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or(format!("{a} needs a value\n{USAGE}"))
        };
        let num = |v: String| -> Result<usize, String> {
            v.parse()
                .map_err(|_| format!("{a} {v:?}: expected a whole number"))
        };
        match a.as_str() {
            "--ranks" => o.ranks = num(val()?)?,
            "--nodes" => o.nodes = num(val()?)?,
            "--rows" => o.rows = num(val()?)?,
            "--vectors" => o.vectors = num(val()?)?,
            "--repeats" => o.repeats = num(val()?)?.max(1),
            "--out" => o.out = PathBuf::from(val()?),
            "--intervals" => {
                o.intervals = val()?
                    .split(',')
                    .map(|s| s.trim().parse::<f64>().ok().filter(|x| *x > 0.0))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or(format!("{a}: expected positive seconds, comma-separated"))?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.nodes < 2 {
        return Err(
            "--nodes must be at least 2 (memory checkpoints keep copies on two nodes)".into(),
        );
    }
    Ok(o)
}

/// One run of mgs: its main-loop time and checksum.
fn run_mgs(o: &Opts, every: usize, env: &[(&str, &str)]) -> Result<(f64, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mgs = exe.with_file_name("mgs");
    let mut cmd = Command::new(std::env::var("PSLS_MPIRUN").unwrap_or_else(|_| "mpirun".into()));
    cmd.arg("-n")
        .arg(o.ranks.to_string())
        .arg(&mgs)
        .args(["--rows", &o.rows.to_string()])
        .args(["--vectors", &o.vectors.to_string()])
        .args(["--every", &every.to_string()])
        .env("PSLS_VIRTUAL_NODES", o.nodes.to_string())
        .env("PSLS_LOG", "warn")
        .env("PSLS_CKPT_NAME", "mgs-overhead");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("running mpirun: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "mgs failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let time = stdout
        .lines()
        .find_map(|l| l.strip_prefix("mgs: main loop "))
        .and_then(|l| l.trim_end_matches(" s").parse::<f64>().ok())
        .ok_or(format!("no main-loop time in:\n{stdout}"))?;
    let sum = stdout
        .lines()
        .find(|l| l.contains("checksum") && l.contains("(ok)"))
        .and_then(|l| l.rsplit(' ').next())
        .ok_or(format!("no good checksum in:\n{stdout}"))?
        .to_string();
    Ok((time, sum))
}

/// The median main-loop time of `o.repeats` runs, checking the checksum.
fn timed(
    o: &Opts,
    every: usize,
    env: &[(&str, &str)],
    want: Option<&str>,
) -> Result<(f64, String), String> {
    let mut times = Vec::new();
    let mut sum = String::new();
    for _ in 0..o.repeats {
        let (t, s) = run_mgs(o, every, env)?;
        if let Some(w) = want {
            if s != w {
                return Err(format!(
                    "checkpoints changed the result: checksum {s}, without checkpoints {w} (every {every}, {env:?})"
                ));
            }
        }
        times.push(t);
        sum = s;
    }
    Ok((psls_bench::median(&mut times), sum))
}

type Series = (String, Vec<(f64, f64)>);

fn plot(path: &std::path::Path, title: &str, series: &[Series]) -> Result<(), String> {
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        * 1.1;
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.15;
    let ymin = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::min)
        * 1.15;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, ymin..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("checkpoint interval (s)")
        .y_desc("overhead (%)")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

fn run() -> Result<(), String> {
    let o = parse()?;
    println!(
        "mgs_overhead: mgs {} x {} on {} ranks over {} virtual nodes, median of {} runs each",
        o.rows, o.vectors, o.ranks, o.nodes, o.repeats
    );
    let (base, want) = timed(&o, 0, &[], None)?;
    let per_vector = base / o.vectors as f64;
    println!(
        "no checkpoints: main loop {base:.3} s ({:.2} ms per vector), checksum {want}",
        per_vector * 1e3
    );
    println!(
        "{:<44} {:>9} {:>6} {:>9} {:>9}",
        "checkpoints", "interval", "every", "time s", "overhead"
    );
    let configs: Vec<(String, Vec<(&str, &str)>)> = {
        let mut c = vec![(
            "memory".to_string(),
            vec![("PSLS_CKPT_PERMANENT_EVERY", "0")],
        )];
        for p in [
            "none",
            "total",
            "keep-dirty-and-recovery",
            "keep-dirty",
            "one-active",
        ] {
            c.push((
                format!("permanent, cleaning {p}"),
                vec![
                    ("PSLS_CKPT_PERMANENT_EVERY", "1"),
                    ("PSLS_CKPT_CLEANING", p),
                ],
            ));
        }
        c
    };
    let mut series: Vec<Series> = configs.iter().map(|c| (c.0.clone(), Vec::new())).collect();
    for &interval in &o.intervals {
        let every = ((interval / per_vector).round() as usize).clamp(1, o.vectors);
        let actual = every as f64 * per_vector;
        for (i, (name, env)) in configs.iter().enumerate() {
            let (t, _) = timed(&o, every, env, Some(&want))?;
            let overhead = (t / base - 1.0) * 100.0;
            println!("{name:<44} {actual:>8.2}s {every:>6} {t:>9.3} {overhead:>8.1}%");
            series[i].1.push((actual, overhead));
        }
    }
    std::fs::create_dir_all(&o.out).map_err(|e| format!("creating {}: {e}", o.out.display()))?;
    let fig5 = o.out.join("mgs_overhead_fig5.svg");
    let fig6 = o.out.join("mgs_overhead_fig6.svg");
    plot(
        &fig5,
        "mgs: memory vs permanent checkpoints (paper, Fig. 5)",
        &series[..2]
            .iter()
            .map(|s| {
                let name = if s.0 == "memory" {
                    "memory checkpoint".to_string()
                } else {
                    "permanent checkpoint".to_string()
                };
                (name, s.1.clone())
            })
            .collect::<Vec<_>>(),
    )?;
    plot(
        &fig6,
        "mgs: cleaning policies of the permanent checkpoint (paper, Fig. 6)",
        &series[1..],
    )?;
    println!("plots: {} and {}", fig5.display(), fig6.display());
    if let Some(m) = series[0]
        .1
        .iter()
        .min_by(|a, b| (a.0 - 1.0).abs().total_cmp(&(b.0 - 1.0).abs()))
    {
        println!(
            "memory-checkpoint overhead at an interval of {:.2} s: {:.1}% (target <= 5% at about 1 s)",
            m.0, m.1
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mgs_overhead: {e}");
            ExitCode::from(2)
        }
    }
}
