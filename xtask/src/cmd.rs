//! Running external commands: plain (inherit stdio) or logged (output to a file, a one-line
//! progress display, the log's tail on failure).

use anyhow::{Context as _, Result, bail};
use std::fs::File;
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Renders a command line for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        s.push_str(&format!("(cd {} && ", dir.display()));
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if cmd.get_current_dir().is_some() {
        s.push(')');
    }
    s
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout (stderr inherited), failing on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", display(cmd), out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}`: non-UTF-8 output", display(cmd)))
}

/// Runs `cmd` with stdout and stderr appended to `log`. While it runs, shows the log's last line
/// as a progress line labelled `label` (rewritten in place on a terminal, every 30 s otherwise).
/// On failure, prints the last `TAIL` lines of the log and fails.
pub fn run_logged(cmd: &mut Command, log: &Path, label: &str) -> Result<()> {
    const TAIL: usize = 40;
    let mut file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    writeln!(file, "\n$ {}", display(cmd))?;
    let start_len = file.metadata()?.len();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file.try_clone()?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(250));
        let elapsed = started.elapsed().as_secs();
        if tty {
            let last = last_line(log).unwrap_or_default();
            let line = format!("[{label} {:>3}s] {last}", elapsed);
            let line: String = line.chars().take(100).collect();
            eprint!("\r\x1b[2K{line}");
        } else if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let last = last_line(log).unwrap_or_default();
            eprintln!("[{label} {elapsed:>3}s] {}", last.trim());
        }
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    if !status.success() {
        let tail = tail_lines(log, start_len, TAIL).unwrap_or_default();
        eprintln!("---- last lines of {} ----", log.display());
        eprintln!("{tail}");
        eprintln!("---- end of log excerpt ----");
        bail!(
            "`{}` failed: {status} (full log: {})",
            display(cmd),
            log.display()
        );
    }
    Ok(())
}

/// The last non-empty line of a (growing) log file.
fn last_line(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(512))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_end().to_owned())
}

/// The last `n` lines of `path` written after byte offset `from`.
fn tail_lines(path: &Path, from: u64, n: usize) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(from.max(len.saturating_sub(64 * 1024))))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(n)..].join("\n"))
}
