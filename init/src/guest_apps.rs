//! App Modules inside a vKaOS guest: the guest `kattach` (PID 1) reads the plan the host put
//! in its initrd ([`kaos_module::plan`]), unpacks each module, renders the configuration
//! groups, starts the entrypoints and supervises them, reporting every start and exit on the
//! console for the host ([`crate::app_report`]).
//!
//! ```text
//! /kaos/aqi/<module>.aqi      from the host; checked against the plan's SHA-256, then removed
//! /kaos/modules/<module>/     the module's files, as its archive lists them
//! /etc/kaos/<module>/<group>.toml   each group, defaults filled in
//! ```
//!
//! An entrypoint runs with its module's directory as working directory, stdin from
//! `/dev/null`, stdout and stderr on the console, and an environment of its own:
//! `KAOS_INSTANCE`, `KAOS_IMAGE`, `KAOS_MODULE`, `KAOS_CONFIG_DIR`, `PATH`. When it exits, its
//! restart policy (`never`, `on-failure`, `always`) decides; restarts back off from 1 s to 30 s
//! and the back-off resets after 30 s of run. A module that fails its checks is reported and
//! skipped; the other modules still run.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaos_module::cpio::FileKind;
use kaos_module::manifest::{App, Entrypoint, Kind, Restart};
use kaos_module::plan::{self, GuestPlan};
use sha2::{Digest as _, Sha256};

use crate::app_report::{self, Report};

/// First restart back-off.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest restart back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Where the guest's root is (`/`; a test points it elsewhere).
#[derive(Debug, Clone)]
pub struct Root(pub PathBuf);

impl Root {
    fn join(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }
}

/// One entrypoint under supervision.
#[derive(Debug)]
struct Program {
    module: String,
    entry: Entrypoint,
    dir: PathBuf,
    pid: Option<u32>,
    started: Instant,
    backoff: Duration,
    /// When to start it again; `None`: not waiting.
    due: Option<Instant>,
}

/// The guest's App Modules.
#[derive(Debug, Default)]
pub struct Apps {
    programs: Vec<Program>,
    env: Vec<(String, String)>,
}

/// Lines for the console: `(is_error, text)`. Reports for the host ([`app_report::line`]) are
/// said with `false`, whatever they report, so they reach the console unchanged.
pub type Say<'a> = &'a dyn Fn(bool, &str);

impl Apps {
    /// Reads the plan under `root` (none: no apps), prepares every module and group, and
    /// starts the entrypoints.
    pub fn start(root: &Root, instance: &str, say: Say<'_>) -> Self {
        let mut apps = Self::default();
        let plan_path = root.join(plan::PLAN_PATH);
        let bytes = match std::fs::read(&plan_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return apps,
            Err(e) => {
                say(true, &format!("{}: {e}", plan_path.display()));
                return apps;
            }
        };
        let plan = match plan::decode(&bytes) {
            Ok(p) => p,
            Err(e) => {
                say(true, &format!("the image's plan: {e}"));
                return apps;
            }
        };
        apps.env = vec![
            ("KAOS_INSTANCE".into(), instance.into()),
            ("KAOS_IMAGE".into(), plan.image.clone()),
        ];
        let mut manifests: Vec<(String, App)> = Vec::new();
        for module in &plan.modules {
            match unpack(root, module) {
                Ok(app) => manifests.push((module.name.clone(), app)),
                Err(e) => say(true, &format!("module {}: {e}; not started", module.name)),
            }
        }
        render_groups(root, &plan, &manifests, say);
        for (module, app) in manifests {
            let dir = root.join(&format!("{}/{module}", plan::MODULES_DIR));
            for entry in app.entrypoints {
                apps.programs.push(Program {
                    module: module.clone(),
                    entry,
                    dir: dir.clone(),
                    pid: None,
                    started: Instant::now(),
                    backoff: BACKOFF_FIRST,
                    due: Some(Instant::now()),
                });
            }
        }
        apps.start_due(root, say);
        apps
    }

    /// Starts every program whose time has come.
    pub fn start_due(&mut self, root: &Root, say: Say<'_>) {
        let now = Instant::now();
        for i in 0..self.programs.len() {
            if self.programs[i].due.is_some_and(|due| due <= now) {
                self.spawn(i, root, say);
            }
        }
    }

    /// How long until the next restart is due (`None`: none is waiting).
    pub fn next_due(&self) -> Option<Duration> {
        let now = Instant::now();
        self.programs
            .iter()
            .filter_map(|p| p.due)
            .map(|due| due.saturating_duration_since(now))
            .min()
    }

    fn spawn(&mut self, i: usize, root: &Root, say: Say<'_>) {
        let env = self.env.clone();
        let p = &mut self.programs[i];
        p.due = None;
        let config_dir = root.join(&format!("{}/{}", plan::CONFIG_DIR, p.module));
        let mut cmd = Command::new(p.dir.join(&p.entry.exec));
        cmd.args(&p.entry.args)
            .current_dir(&p.dir)
            .env_clear()
            .envs(env)
            .env("KAOS_MODULE", &p.module)
            .env("KAOS_CONFIG_DIR", config_dir)
            .env("PATH", p.dir.join("bin"))
            .stdin(Stdio::null());
        let who = format!("{}/{}", p.module, p.entry.name);
        match cmd.spawn() {
            Ok(child) => {
                p.pid = Some(child.id());
                p.started = Instant::now();
                // The supervisor loop reaps it (waitpid on any child), not `child`.
                drop(child);
                say(
                    false,
                    &app_report::line(&p.module, &p.entry.name, &Report::Started, ""),
                );
            }
            Err(e) => {
                say(true, &format!("app {who}: cannot start: {e}"));
                let how = Report::Exited("exit status 127".into());
                let next = Self::plan_restart(p, false);
                say(
                    false,
                    &app_report::line(&p.module, &p.entry.name, &how, &next),
                );
            }
        }
    }

    /// Decides what follows an exit and says it (`restarting in N s` / `not restarted`).
    fn plan_restart(p: &mut Program, success: bool) -> String {
        let restart = match p.entry.restart {
            Restart::Never => false,
            Restart::OnFailure => !success,
            Restart::Always => true,
        };
        if !restart {
            return "not restarted".to_owned();
        }
        if p.started.elapsed() >= HEALTHY_RUN {
            p.backoff = BACKOFF_FIRST;
        }
        let wait = p.backoff;
        p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
        p.due = Some(Instant::now() + wait);
        format!("restarting in {} s", wait.as_secs())
    }

    /// Handles a reaped child; `false` if it was none of the apps.
    pub fn reaped(&mut self, pid: u32, status: i32, say: Say<'_>) -> bool {
        let Some(p) = self.programs.iter_mut().find(|p| p.pid == Some(pid)) else {
            return false;
        };
        p.pid = None;
        let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        let how = Report::Exited(app_report::describe_status(status));
        let next = Self::plan_restart(p, success);
        say(
            false,
            &app_report::line(&p.module, &p.entry.name, &how, &next),
        );
        true
    }
}

/// Checks module `m`'s archive against the plan, unpacks it under
/// `/kaos/modules/<name>/`, and removes the archive; returns its manifest.
fn unpack(root: &Root, m: &plan::PlanModule) -> Result<App, String> {
    let aqi = root.join(&plan::aqi_path(&m.name));
    let bytes = std::fs::read(&aqi).map_err(|e| format!("{}: {e}", aqi.display()))?;
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    if sha != m.sha256 {
        return Err("its archive does not match the SHA-256 the host sent".into());
    }
    let module =
        kaos_module::parse(&bytes, &kaos_module::Limits::APP).map_err(|e| e.to_string())?;
    if module.manifest.name != m.name {
        return Err(format!("the archive is module {:?}", module.manifest.name));
    }
    let Kind::App(app) = module.manifest.kind.clone() else {
        return Err("a platform module, not an App Module".into());
    };
    let dest = root.join(&format!("{}/{}", plan::MODULES_DIR, m.name));
    mkdir(&dest, 0o755)?;
    // Paths were checked by the parser: relative, normal, parents listed before children,
    // no links, no devices.
    for member in &module.members {
        let path = dest.join(&member.name);
        match member.kind {
            FileKind::Dir => mkdir(&path, member.perm)?,
            FileKind::File => {
                let data = bytes.get(member.range.clone()).unwrap_or_default();
                write_file(&path, member.perm, data)?;
            }
            _ => return Err(format!("{}: neither a file nor a directory", member.name)),
        }
    }
    drop(module);
    let _ = std::fs::remove_file(&aqi);
    Ok(app)
}

fn mkdir(path: &Path, perm: u32) -> Result<(), String> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(perm)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_file(path: &Path, perm: u32, data: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Renders each group of the plan whose module was unpacked.
fn render_groups(root: &Root, plan: &GuestPlan, apps: &[(String, App)], say: Say<'_>) {
    for group in &plan.groups {
        let Some((_, app)) = apps.iter().find(|(name, _)| *name == group.module) else {
            say(
                true,
                &format!("group {}: module {} is not here", group.name, group.module),
            );
            continue;
        };
        let values = match kaos_module::group::resolve(app, &group.values) {
            Ok(v) => v,
            Err(e) => {
                say(true, &format!("group {}: {e}", group.name));
                continue;
            }
        };
        let dir = root.join(&format!("{}/{}", plan::CONFIG_DIR, group.module));
        let text = kaos_module::group::render_toml(&group.module, &group.name, &values);
        let written = mkdir(&dir, 0o755).and_then(|()| {
            write_file(
                &dir.join(format!("{}.toml", group.name)),
                0o644,
                text.as_bytes(),
            )
        });
        if let Err(e) = written {
            say(true, &format!("group {}: {e}", group.name));
        }
    }
}

/// Reaps every exited child without blocking: `(pid, wait status)`.
pub fn reap_all() -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while let Ok(Some((pid, status))) =
        rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG)
    {
        out.push((pid.as_raw_nonzero().get().unsigned_abs(), status.as_raw()));
    }
    out
}

#[cfg(test)]
mod tests;
