//! A VM's App Module entrypoints as its guest reports them (see [`crate::app_report`]).

use kaos_protocol::{AppStatus, MAX_APPS, truncated};

use crate::app_report::Report;

/// Applies one report to `apps`; a guest reporting more than [`MAX_APPS`] entrypoints has the
/// rest ignored.
pub(super) fn apply(apps: &mut Vec<AppStatus>, module: &str, entrypoint: &str, report: &Report) {
    let index = match apps
        .iter()
        .position(|a| a.module == module && a.entrypoint == entrypoint)
    {
        Some(i) => i,
        None if apps.len() < MAX_APPS => {
            apps.push(AppStatus {
                module: truncated(module),
                entrypoint: truncated(entrypoint),
                running: false,
                starts: 0,
                last_exit: None,
            });
            apps.len() - 1
        }
        None => return,
    };
    let app = &mut apps[index];
    match report {
        Report::Started => {
            app.running = true;
            app.starts = app.starts.saturating_add(1);
        }
        Report::Exited(how) => {
            app.running = false;
            app.last_exit = Some(truncated(how));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_make_a_bounded_table() {
        let mut apps = Vec::new();
        apply(&mut apps, "httpd", "web", &Report::Started);
        apply(
            &mut apps,
            "httpd",
            "web",
            &Report::Exited("exit status 1".into()),
        );
        apply(&mut apps, "httpd", "web", &Report::Started);
        assert_eq!(apps.len(), 1);
        assert!(apps[0].running);
        assert_eq!(apps[0].starts, 2);
        assert_eq!(apps[0].last_exit.as_deref(), Some("exit status 1"));
        for i in 0..40 {
            apply(&mut apps, "m", &format!("e{i}"), &Report::Started);
        }
        assert_eq!(apps.len(), MAX_APPS, "a chatty guest cannot grow the table");
    }
}
