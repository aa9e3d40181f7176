//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` for a time budget each, and
//! reports runs, speed and coverage per target in a table. A crash, a leak, an out-of-memory or a
//! timeout fails the command and names the input libFuzzer saved (`fuzz/artifacts/<target>/`).
//!
//! The targets need a nightly toolchain and cargo-fuzz; [`available`] says whether they are
//! there, so that `cargo xtask test` can skip the smoke run with a reason instead of failing.
//! Each target runs on its corpus (`fuzz/corpus/<target>`, grown by every run, not committed)
//! and on the committed seeds (`fuzz/seeds/<target>`, written by `fuzz/examples/seeds.rs`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, paths};

/// Seconds each target runs in a smoke run unless told otherwise.
pub const DEFAULT_SECONDS: u64 = 10;

/// libFuzzer's memory limit per target process.
const RSS_LIMIT_MB: u32 = 2048;

/// Seconds a single input may take before libFuzzer reports a hang (its default is 20 minutes).
const INPUT_TIMEOUT_S: u32 = 10;

/// Targets whose every input runs a Noise handshake. Three quarters of their time goes to
/// X25519, and tracing the comparisons in that constant-time code (`-sanitizer-coverage-trace-
/// compares`) makes them 3x slower while it teaches the fuzzer nothing: they build without it,
/// in a target directory of their own so the two builds do not evict each other. Address
/// Sanitizer stays on.
const HANDSHAKE_TARGETS: &[&str] = &["handshake", "session_established"];

/// What one target's run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Inputs executed.
    pub runs: u64,
    /// Inputs per second, as libFuzzer averaged them.
    pub runs_per_sec: u64,
    /// Coverage points (edges) reached.
    pub cov: u64,
    /// Inputs added to the corpus by this run.
    pub new_units: u64,
    /// Wall time of the run, build excluded.
    pub seconds: f64,
    /// The input libFuzzer saved for a crash, leak, out-of-memory or timeout.
    pub artifact: Option<PathBuf>,
    /// The panic or sanitizer message of a failure.
    pub failure: Option<String>,
}

/// `Ok` if `cargo +nightly fuzz` can run here, otherwise why not.
pub fn available() -> Result<(), String> {
    let probe = |args: &[&str]| {
        let out = cargo_nightly().args(args).output();
        match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("`cargo` is not on PATH".to_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    probe(&["--version"]).map_err(|e| {
        format!("no nightly toolchain (`cargo +nightly` failed: {e}); `rustup toolchain install nightly`")
    })?;
    probe(&["fuzz", "--version"]).map_err(|e| {
        format!("cargo-fuzz is not installed (`cargo +nightly fuzz` failed: {e}); `cargo install cargo-fuzz`")
    })
}

/// The targets `fuzz/Cargo.toml` declares.
pub fn targets() -> Result<Vec<String>> {
    let list = cmd::output(cargo_nightly().args(["fuzz", "list"]))?;
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `cargo xtask fuzz [TARGET] [--smoke] [--seconds N]`.
pub fn command(target: Option<&str>, all: bool, seconds: u64) -> Result<()> {
    match (target, all) {
        (Some(target), false) => one(target, seconds),
        (None, true) => smoke(seconds),
        (Some(_), true) => bail!("give a target or --smoke, not both"),
        (None, false) => bail!("give a target to fuzz, or --smoke to run them all"),
    }
}

/// Runs every target for `seconds_per_target` seconds and prints the table; fails if any target
/// failed to build or found a problem.
pub fn smoke(seconds_per_target: u64) -> Result<()> {
    available().map_err(anyhow::Error::msg)?;
    run_all(&targets()?, seconds_per_target)
}

/// Runs `target` alone for `seconds` and prints its line of the table.
pub fn one(target: &str, seconds: u64) -> Result<()> {
    available().map_err(anyhow::Error::msg)?;
    let known = targets()?;
    if !known.iter().any(|t| t == target) {
        bail!(
            "no fuzz target `{target}`; the targets are: {}",
            known.join(", ")
        );
    }
    run_all(&[target.to_owned()], seconds)
}

fn run_all(targets: &[String], seconds: u64) -> Result<()> {
    let logs = paths::target_dir().join("kaos").join("fuzz");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    for target in targets {
        build(target, &logs)?;
    }
    let started = Instant::now();
    let mut reports = Vec::new();
    for target in targets {
        eprintln!("fuzzing {target} for {seconds} s");
        reports.push(run(target, seconds, &logs)?);
    }
    print!("{}", table(&reports));
    println!(
        "{} targets, {:.0} s of fuzzing ({} s each); logs in {}",
        reports.len(),
        started.elapsed().as_secs_f64(),
        seconds,
        logs.display()
    );
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.artifact.is_some() || r.failure.is_some())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    for r in &failed {
        let artifact = r
            .artifact
            .as_ref()
            .map_or("(no input saved)".into(), |a| a.display().to_string());
        eprintln!("FAILED {}: {artifact}", r.target);
        if let Some(failure) = &r.failure {
            eprintln!("    {failure}");
        }
        if let Some(a) = &r.artifact {
            let reproduce = cmd::display(fuzz_command("run", &r.target).arg(a));
            eprintln!("    reproduce: {reproduce}");
        }
    }
    let names: Vec<_> = failed.iter().map(|r| r.target.as_str()).collect();
    bail!("fuzzing found problems in {}", names.join(", "))
}

fn target_dir(target: &str) -> PathBuf {
    let fuzz = Path::new("fuzz").join("target");
    if HANDSHAKE_TARGETS.contains(&target) {
        fuzz.join("no-trace-compares")
    } else {
        fuzz
    }
}

/// `cargo +nightly fuzz <sub> <options> target`, run from the workspace root.
fn fuzz_command(sub: &str, target: &str) -> Command {
    let mut cmd = cargo_nightly();
    cmd.args(["fuzz", sub, "--target-dir"])
        .arg(target_dir(target));
    if HANDSHAKE_TARGETS.contains(&target) {
        cmd.arg("--no-trace-compares");
    }
    cmd.arg(target);
    cmd
}

fn build(target: &str, logs: &Path) -> Result<()> {
    let log = logs.join(format!("{target}.build.log"));
    let _ = std::fs::remove_file(&log);
    cmd::run_logged(
        &mut fuzz_command("build", target),
        &log,
        &format!("fuzz build {target}"),
    )
}

fn run(target: &str, seconds: u64, logs: &Path) -> Result<Report> {
    let root = paths::workspace_root();
    let corpus = Path::new("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(root.join(&corpus))
        .with_context(|| format!("creating {}", corpus.display()))?;
    let mut cmd = fuzz_command("run", target);
    cmd.arg(&corpus);
    let seeds = Path::new("fuzz").join("seeds").join(target);
    if root.join(&seeds).is_dir() {
        cmd.arg(&seeds);
    }
    cmd.args([
        "--".to_owned(),
        format!("-max_total_time={seconds}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        "-print_final_stats=1".to_owned(),
    ]);
    let log = logs.join(format!("{target}.log"));
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let result = cmd::run_logged(&mut cmd, &log, &format!("fuzz {target}"));
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let mut report = parse(target, &text);
    report.seconds = started.elapsed().as_secs_f64();
    if let Err(e) = result
        && report.artifact.is_none()
        && report.failure.is_none()
    {
        report.failure = Some(format!("{e:#}"));
    }
    Ok(report)
}

/// Reads libFuzzer's output: final statistics, the last coverage line, a saved artifact and the
/// first line of a panic or sanitizer report.
fn parse(target: &str, log: &str) -> Report {
    let mut r = Report {
        target: target.to_owned(),
        ..Report::default()
    };
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let stat = |name: &str| {
            let value = line.strip_prefix(name)?.trim();
            value.parse::<u64>().ok()
        };
        if let Some(v) = stat("stat::number_of_executed_units:") {
            r.runs = v;
        } else if let Some(v) = stat("stat::average_exec_per_sec:") {
            r.runs_per_sec = v;
        } else if let Some(v) = stat("stat::new_units_added:") {
            r.new_units = v;
        } else if let Some(rest) = line.split_once(" cov: ").map(|(_, rest)| rest) {
            r.cov = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(r.cov);
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            r.artifact = Some(PathBuf::from(path.trim()));
        } else if line.contains("panicked at") && r.failure.is_none() {
            // `thread '…' panicked at file:line:col:` then the message on the next line.
            let message = lines.peek().map_or("", |m| m.trim());
            r.failure = Some(format!("{} {message}", line.trim()));
        } else if line.starts_with("==") && line.contains("ERROR:") && r.failure.is_none() {
            r.failure = Some(line.trim().to_owned());
        }
    }
    r
}

/// The result table.
fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>11} {:>9} {:>7} {:>6} {:>6}  result",
        "target", "runs", "runs/s", "cov", "new", "secs"
    );
    for r in reports {
        let result = match (&r.artifact, &r.failure) {
            (Some(a), _) => format!("FAILED: {}", a.display()),
            (None, Some(_)) => "FAILED (see below)".to_owned(),
            (None, None) => "ok".to_owned(),
        };
        let _ = writeln!(
            s,
            "{:<22} {:>11} {:>9} {:>7} {:>6} {:>6.1}  {result}",
            r.target, r.runs, r.runs_per_sec, r.cov, r.new_units, r.seconds
        );
    }
    s
}

/// `cargo +nightly`, through the rustup proxy on `PATH`, run from the workspace root. The
/// variables `cargo xtask` inherited from the pinned toolchain are removed, or they would send
/// cargo-fuzz's own cargo calls back to it.
fn cargo_nightly() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(paths::workspace_root());
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUSTC",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = "\
#315\tINITED cov: 273 ft: 350 corp: 66/723b exec/s: 0 rss: 44Mb
#1127902\tDONE   cov: 1051 ft: 2497 corp: 878/77Kb lim: 4096 exec/s: 102536 rss: 470Mb
Done 1127902 runs in 11 second(s)
stat::number_of_executed_units: 1127902
stat::average_exec_per_sec:     102536
stat::new_units_added:          812
";

    #[test]
    fn a_clean_run_reports_its_figures() {
        let r = parse("frame_decode", DONE);
        assert_eq!(
            (r.runs, r.runs_per_sec, r.cov, r.new_units),
            (1127902, 102536, 1051, 812)
        );
        assert!(r.artifact.is_none() && r.failure.is_none());
    }

    #[test]
    fn a_crash_names_its_artifact_and_message() {
        let log = "\
#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 40Mb

thread '<unnamed>' panicked at fuzz_targets/handshake.rs:42:5:
session stalled with a full buffer
==123== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/fuzz/artifacts/handshake/'; Test unit written to /w/fuzz/artifacts/handshake/crash-ab12
Base64: AAE=
";
        let r = parse("handshake", log);
        assert_eq!(
            r.artifact,
            Some(PathBuf::from("/w/fuzz/artifacts/handshake/crash-ab12"))
        );
        let failure = r.failure.expect("failure");
        assert!(failure.contains("session stalled"), "{failure}");
        assert!(table(&[parse("handshake", log)]).contains("FAILED: /w/fuzz/artifacts"));
    }
}
