//! System (Debian) packages that xtask steps need: checked with `dpkg-query`, installed with
//! `apt-get` when running as root, otherwise reported with the exact command to run.

use crate::cmd;
use anyhow::{Context as _, Result, bail};
use std::process::Command;

/// Makes sure every Debian package in `packages` is installed. Idempotent: does nothing (and
/// runs no `apt-get update`) when all are present.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        missing.join(" ")
    );
    if !is_root()? {
        bail!(
            "missing Debian packages: {}. Install them as root with:\n    {install}",
            missing.join(", ")
        );
    }
    eprintln!("[deps] installing {}", missing.join(" "));
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing),
    )?;
    let still = missing_packages(packages)?;
    if !still.is_empty() {
        bail!(
            "apt-get install succeeded but still missing: {}",
            still.join(", ")
        );
    }
    Ok(())
}

/// The subset of `packages` that dpkg does not report as "install ok installed".
pub fn missing_packages(packages: &[&str]) -> Result<Vec<String>> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    // dpkg-query exits 1 when any package is unknown but still prints the known ones, so the
    // exit status is not used; unknown packages are simply absent from the output.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(packages)
        .stderr(std::process::Stdio::null())
        .output()
        .context("running dpkg-query (is this a Debian system?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(missing_from_status(packages, &text))
}

/// Pure part of [`missing_packages`]: `status` is `dpkg-query` output of `Package\tStatus` lines.
pub fn missing_from_status(packages: &[&str], status: &str) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            !status.lines().any(|l| {
                l.split_once('\t')
                    .is_some_and(|(name, st)| name == **p && st.trim() == "install ok installed")
            })
        })
        .map(|p| (*p).to_owned())
        .collect()
}

/// Whether the effective uid is 0 (from `/proc/self/status`, to avoid a libc dependency).
pub fn is_root() -> Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    Ok(euid_from_status(&status).context("no Uid line in /proc/self/status")? == 0)
}

/// Effective uid from `/proc/<pid>/status` text (`Uid: real effective saved fs`).
pub fn euid_from_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|e| e.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_detection() {
        let status = "flex\tinstall ok installed\nbison\tdeinstall ok config-files\n";
        assert_eq!(
            missing_from_status(&["flex", "bison", "bc"], status),
            ["bison", "bc"]
        );
        assert!(missing_from_status(&["flex"], status).is_empty());
    }

    #[test]
    fn euid_parsing() {
        let s = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(euid_from_status(s), Some(0));
        assert_eq!(euid_from_status("Name: x\n"), None);
    }
}
