//! Crash consistency: a writer killed at a random moment never loses an acknowledged write.
//!
//! Guards against: the host dying in the middle of a commit, of opening, or of the recovery that
//! follows an earlier death, and leaving a store that no longer opens, that lost a setting whose
//! `set_setting` had returned, or that holds a value nobody wrote. Both a file and a device (a
//! regular file initialised with `init_device`, so our superblock's length bookkeeping is in play)
//! are killed in turn; each keeps its store across all kills, so recovery is itself interrupted.
//!
//! The test re-executes its own binary as the writer (`crash_child`, selected by
//! `KAOS_STORE_CRASH_CHILD`), which prints `ack N` after each commit returns; the parent sends
//! SIGKILL 1–30 ms after the writer said `ready` (or, one time in four, after it was spawned,
//! to hit opening and recovery), then reopens and checks. A SIGKILL keeps the page cache, so this
//! is process death, not power loss; power loss is argued in the crate documentation and the
//! failing-call cases are covered by `tests/faults.rs`. Set `KAOS_STORE_CRASH_SEED` to replay a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs, io, thread};

use kaos_store::{Location, Store, StoreError, init_device};

const CHILD_ENV: &str = "KAOS_STORE_CRASH_CHILD";
const START_ENV: &str = "KAOS_STORE_CRASH_START";
const SEED_ENV: &str = "KAOS_STORE_CRASH_SEED";
/// Kills in all, alternating between the file and the device.
const ITERATIONS: usize = 240;
const DEVICE_BYTES: u64 = 32 * 1024 * 1024;
const SIGKILL: i32 = 9;

/// The writer. Does nothing in a normal test run.
#[test]
fn crash_child() -> Result<(), StoreError> {
    let Ok(spec) = env::var(CHILD_ENV) else {
        return Ok(());
    };
    let location = match spec.split_once(':') {
        Some(("file", path)) => Location::File(path.into()),
        Some(("device", path)) => Location::Device(path.into()),
        _ => panic!("bad {CHILD_ENV}: {spec}"),
    };
    let start: u64 = env::var(START_ENV)
        .ok()
        .and_then(|start| start.parse().ok())
        .expect("the parent passes a start index");
    let store = Store::open(&location)?;
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for i in start.. {
        store.set_setting(&format!("k{i}"), &format!("v{i}"))?;
        writeln!(out, "ack {i}")?;
        out.flush()?;
    }
    Ok(())
}

/// xorshift64: enough randomness for kill times, and replayable from the printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn seed() -> u64 {
    if let Some(seed) = env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()) {
        return seed;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() << 30 ^ u64::from(now.subsec_nanos())) | 1
}

/// One store being killed over and over, and what its writers acknowledged.
struct Target {
    location: Location,
    spec: String,
    acked: BTreeSet<u64>,
    /// Writes that may or may not have landed: the one in flight at each kill.
    in_flight: BTreeSet<u64>,
    next: u64,
    kills: usize,
}

impl Target {
    fn new(location: Location, kind: &str, path: &std::path::Path) -> Target {
        Target {
            location,
            spec: format!("{kind}:{}", path.display()),
            acked: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            next: 0,
            kills: 0,
        }
    }

    fn spawn(&self) -> io::Result<Child> {
        Command::new(env::current_exe()?)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &self.spec)
            .env(START_ENV, self.next.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }

    /// Runs a writer, kills it `delay` after it is ready (or after spawning), records its acks.
    fn kill_once(&mut self, delay: Duration, after_ready: bool) -> io::Result<()> {
        let mut child = self.spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut seen = String::new();
        if after_ready {
            while !seen.ends_with("ready\n") {
                if stdout.read_line(&mut seen)? == 0 {
                    break;
                }
            }
        }
        thread::sleep(delay);
        child.kill()?;
        let status = child.wait()?;
        stdout.read_to_string(&mut seen)?;
        if status.signal() != Some(SIGKILL) {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!(
                "{}: writer ended on its own ({status}):\n{seen}\n{stderr}",
                self.spec
            );
        }
        let acks: Vec<u64> = seen
            .lines()
            .filter_map(|line| line.strip_prefix("ack ")?.parse().ok())
            .collect();
        let in_flight = acks.last().map_or(self.next, |last| last + 1);
        self.acked.extend(acks);
        self.in_flight.insert(in_flight);
        self.next = in_flight + 1;
        self.kills += 1;
        Ok(())
    }

    /// The store opens, holds every acknowledged write, and nothing nobody wrote.
    fn check(&self) -> Result<(), StoreError> {
        let store = Store::open(&self.location).unwrap_or_else(|error| {
            panic!(
                "{} after {} kills: reopen failed: {error}",
                self.spec, self.kills
            )
        });
        let settings: BTreeMap<String, String> = store.settings()?.into_iter().collect();
        for i in &self.acked {
            assert_eq!(
                settings.get(&format!("k{i}")),
                Some(&format!("v{i}")),
                "{}: acknowledged k{i} lost after {} kills",
                self.spec,
                self.kills
            );
        }
        for (key, value) in &settings {
            let i: u64 = key
                .strip_prefix('k')
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("{}: unexpected key {key}", self.spec));
            assert_eq!(
                value,
                &format!("v{i}"),
                "{}: {key} has a wrong value",
                self.spec
            );
            assert!(
                self.acked.contains(&i) || self.in_flight.contains(&i),
                "{}: {key} was never written",
                self.spec
            );
        }
        Ok(())
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() -> Result<(), StoreError> {
    if env::var_os(CHILD_ENV).is_some() {
        return Ok(());
    }
    let seed = seed();
    println!("crash consistency seed {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = XorShift(seed);
    let dir = tempfile::tempdir()?;
    let file: PathBuf = dir.path().join("store.redb");
    let disk: PathBuf = dir.path().join("disk");
    fs::File::create(&disk)?.set_len(DEVICE_BYTES)?;
    init_device(&disk, false, [0x5A; 16])?;
    let mut targets = [
        Target::new(Location::File(file.clone()), "file", &file),
        Target::new(Location::Device(disk.clone()), "device", &disk),
    ];
    let started = Instant::now();
    for iteration in 0..ITERATIONS {
        let target = &mut targets[iteration % 2];
        let delay = Duration::from_millis(1 + rng.next() % 30);
        let after_ready = !rng.next().is_multiple_of(4);
        target.kill_once(delay, after_ready)?;
        target.check()?;
    }
    for target in &targets {
        println!(
            "{}: {} kills, {} acknowledged writes, all present",
            target.spec,
            target.kills,
            target.acked.len()
        );
        assert!(
            target.acked.len() > target.kills,
            "writers barely got to write"
        );
    }
    println!("{ITERATIONS} kills in {:.1?}", started.elapsed());
    Ok(())
}
