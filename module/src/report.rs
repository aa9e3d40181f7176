//! The lines a vKaOS guest writes on its console about its App Modules' entrypoints, and the
//! host's reading of them: the console is the one channel from a guest to its host, and both
//! ends are `kattach`, so the format is defined once, here.
//!
//! ```text
//! kattach guest: app httpd/httpd started
//! kattach guest: app httpd/httpd exited: exit status 1; restarting in 2 s
//! kattach guest: app httpd/httpd exited: signal 9; not restarted
//! ```
//!
//! A guest is not trusted: the host reads at most what a line can hold (512 bytes), only names
//! that follow the manifest's name rules, and only about its own VM. The `guest_input` fuzz
//! target feeds [`parse`] arbitrary lines.

/// What the guest prefixes every line for the host with.
pub const PREFIX: &str = "kattach guest: ";

/// One report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The entrypoint was started.
    Started,
    /// It ended: how (`exit status 1`, `signal 9`).
    Exited(String),
}

/// The line (without [`PREFIX`] and newline) reporting `report` for `module`/`entrypoint`;
/// `next` is what the guest does about an exit.
pub fn line(module: &str, entrypoint: &str, report: &Report, next: &str) -> String {
    match report {
        Report::Started => format!("app {module}/{entrypoint} started"),
        Report::Exited(how) => format!("app {module}/{entrypoint} exited: {how}; {next}"),
    }
}

/// Reads a console line (without its newline); `None` if it is no app report.
pub fn parse(line: &[u8]) -> Option<(String, String, Report)> {
    let line = core::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let rest = line.strip_prefix(PREFIX)?.strip_prefix("app ")?;
    let (who, what) = rest.split_once(' ')?;
    let (module, entrypoint) = who.split_once('/')?;
    let name_ok = |n: &str| crate::manifest::check_name("", n).is_ok();
    if !name_ok(module) || !name_ok(entrypoint) {
        return None;
    }
    let report = if what == "started" {
        Report::Started
    } else {
        let how = what.strip_prefix("exited: ")?.split(';').next()?.trim();
        let known = ["exit status ", "signal "].iter().any(|p| {
            how.strip_prefix(p)
                .is_some_and(|n| n.parse::<i32>().is_ok())
        });
        if !known {
            return None;
        }
        Report::Exited(how.to_owned())
    };
    Some((module.to_owned(), entrypoint.to_owned(), report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_guest_writes_the_host_reads() {
        for (report, next) in [
            (Report::Started, ""),
            (Report::Exited("exit status 1".into()), "restarting in 2 s"),
            (Report::Exited("signal 9".into()), "not restarted"),
        ] {
            let text = format!("{PREFIX}{}", line("httpd", "web", &report, next));
            assert_eq!(
                parse(text.as_bytes()),
                Some(("httpd".into(), "web".into(), report)),
                "{text}"
            );
        }
    }

    #[test]
    fn other_lines_and_forgeries_are_not_reports() {
        for bad in [
            &b"kattach guest: web-1 up (kernel 6.1, 1 vCPUs, 128 MiB)"[..],
            b"kattach guest: app httpd started",
            b"kattach guest: app ../x/y started",
            b"kattach guest: app HTTPD/web started",
            b"kattach guest: app httpd/web exited: whatever; ok",
            b"kattach guest: app httpd/web exited: exit status x; ok",
            b"app httpd/web started",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
