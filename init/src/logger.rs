//! The `log` facade's sink: `/dev/kmsg` as PID 1 (the kernel prints it on the console with a
//! timestamp and keeps it in its ring buffer), stderr when hosted or before `/dev` is mounted.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    kmsg: OnceLock<Mutex<std::fs::File>>,
}

static LOGGER: Logger = Logger {
    kmsg: OnceLock::new(),
};

/// Installs the logger (stderr until [`use_kmsg`] succeeds).
pub fn init(level: LevelFilter) {
    // Only fails if a logger is already set, which is the one we want.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Sends records to `/dev/kmsg` from now on and lifts the kernel's rate limit on it, which would
/// otherwise drop all but ten lines per five seconds.
pub fn use_kmsg() -> std::io::Result<()> {
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let file = std::fs::OpenOptions::new().write(true).open("/dev/kmsg")?;
    let _ = LOGGER.kmsg.set(Mutex::new(file));
    Ok(())
}

fn kmsg_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per record: kmsg takes a record per write(2).
        let line = match record.level() {
            Level::Info => format!("kattach: {}\n", record.args()),
            level => format!("kattach: {level}: {}\n", record.args()),
        };
        if let Some(kmsg) = self.kmsg.get() {
            let mut kmsg = kmsg
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let prefixed = format!("<{}>{line}", kmsg_priority(record.level()));
            if kmsg.write_all(prefixed.as_bytes()).is_ok() {
                return;
            }
        }
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}
