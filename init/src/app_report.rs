//! The lines a guest writes on its console about its App Modules' entrypoints, and the host's
//! reading of them: the console is the one channel from a guest to its host, and both ends are
//! this crate, so the format is defined once, here.
//!
//! ```text
//! kattach guest: app httpd/httpd started
//! kattach guest: app httpd/httpd exited: exit status 1; restarting in 2 s
//! kattach guest: app httpd/httpd exited: signal 9; not restarted
//! ```
//!
//! A guest is not trusted: the host reads at most what a line can hold, only names that are
//! valid object names, and only about its own VM.

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

/// How a wait status ended: `exit status N` or `signal N`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

/// Reads a console line (without its newline); `None` if it is no app report.
pub fn parse(line: &[u8]) -> Option<(String, String, Report)> {
    let line = core::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let rest = line.strip_prefix(PREFIX)?.strip_prefix("app ")?;
    let (who, what) = rest.split_once(' ')?;
    let (module, entrypoint) = who.split_once('/')?;
    if !kaos_protocol::valid_object_name(module) || !kaos_protocol::valid_object_name(entrypoint) {
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

    #[test]
    fn statuses_are_described() {
        assert_eq!(describe_status(1 << 8), "exit status 1");
        assert_eq!(describe_status(9), "signal 9");
        assert_eq!(describe_status(0), "exit status 0");
    }
}
