//! Guest-side helpers of the App Module reports; the format itself is
//! [`kaos_module::report`], shared with the host's reader and the fuzz target.

pub use kaos_module::report::{Report, line, parse};

/// How a wait status ended: `exit status N` or `signal N`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described() {
        assert_eq!(describe_status(1 << 8), "exit status 1");
        assert_eq!(describe_status(9), "signal 9");
        assert_eq!(describe_status(0), "exit status 0");
    }
}
