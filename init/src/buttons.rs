//! The power button: ACPI (IPMI soft-off, QEMU `system_powerdown`) or any input device that
//! reports `KEY_POWER`. Pressing it powers the host off in order, as a UPS's SIGPWR does.
//!
//! Devices are chosen by capability (the `KEY_POWER` bit in sysfs), not by name, and read
//! through evdev: 24-byte `struct input_event` records on x86-64.

use std::io::Read as _;
use std::sync::Arc;

use crate::host::{Host, PowerAction};

/// `EV_KEY` from `<linux/input-event-codes.h>`.
const EV_KEY: u16 = 1;
/// `KEY_POWER`.
const KEY_POWER: u16 = 116;
/// `sizeof(struct input_event)` on 64-bit: `timeval` (16), type, code (2 + 2), value (4).
const EVENT_LEN: usize = 24;

/// Starts one reader thread per power-button device. Returns how many were found.
pub fn spawn(host: &Arc<Host>) -> usize {
    let mut started = 0;
    for (name, path) in power_buttons() {
        let host = Arc::clone(host);
        let spawned = std::thread::Builder::new()
            .name("power-button".into())
            .spawn(move || watch(&host, &path));
        match spawned {
            Ok(_) => {
                log::info!("power button: {name}");
                started += 1;
            }
            Err(e) => log::warn!("power button {name}: {e}"),
        }
    }
    started
}

/// `(device name, /dev/input/eventN)` of every input device with `KEY_POWER`.
fn power_buttons() -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("event"))
        .filter_map(|n| {
            let sys = format!("/sys/class/input/{n}/device");
            let caps = std::fs::read_to_string(format!("{sys}/capabilities/key")).ok()?;
            has_key(&caps, KEY_POWER).then_some(())?;
            let name = std::fs::read_to_string(format!("{sys}/name")).unwrap_or_default();
            Some((name.trim().to_owned(), format!("/dev/input/{n}")))
        })
        .collect();
    found.sort();
    found
}

fn watch(host: &Host, path: &str) {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return log::warn!("power button {path}: {e}"),
    };
    let mut buf = [0u8; EVENT_LEN * 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return log::warn!("power button {path}: device gone"),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return log::warn!("power button {path}: {e}"),
        };
        if power_pressed(&buf[..n]) {
            log::info!("power button pressed: powering off");
            host.request_power(PowerAction::PowerOff);
        }
    }
}

/// True if `events` (whole `input_event` records; a trailing partial one is ignored) holds a
/// press of `KEY_POWER`.
fn power_pressed(events: &[u8]) -> bool {
    events.chunks_exact(EVENT_LEN).any(|e| {
        let kind = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Whether sysfs key-capability bitmap `caps` (hex words, most significant first, each
/// `usize::BITS` wide) has bit `code`.
fn has_key(caps: &str, code: u16) -> bool {
    let words: Vec<&str> = caps.split_whitespace().collect();
    let bits = usize::BITS as usize;
    let (index, bit) = (usize::from(code) / bits, usize::from(code) % bits);
    let Some(word) = words
        .len()
        .checked_sub(index + 1)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w >> bit & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn press_is_seen_release_and_sync_are_not() {
        let mut events = event(EV_KEY, KEY_POWER, 0);
        events.extend(event(0, 0, 0));
        assert!(!power_pressed(&events));
        events.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(power_pressed(&events));
        assert!(
            !power_pressed(&events[..EVENT_LEN * 3 - 1]),
            "partial record ignored"
        );
        assert!(!power_pressed(&event(EV_KEY, 115, 1)), "another key");
    }

    #[test]
    fn capability_bitmap() {
        // QEMU's ACPI power button: only KEY_POWER (bit 116 = word 1, bit 52).
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("10000000000000 0", 115));
        // A keyboard's long bitmap with bit 116 clear in its lowest-but-one word.
        assert!(!has_key("ffff 0 ffefffff 0 0", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
        assert!(!has_key("zz 0", KEY_POWER));
    }
}
