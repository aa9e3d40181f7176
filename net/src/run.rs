//! The blocking service loop: poll the link fd, run the endpoint, repeat.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io;
use rustix::time::{ClockId, Timespec, clock_gettime};
use smoltcp::time::{Duration, Instant};

use crate::endpoint::{AddressEvent, Endpoint};
use crate::link::Link;
use crate::session::Handler;

/// Longest sleep between polls when smoltcp has no timer pending.
const MAX_WAIT: Duration = Duration::from_millis(1000);

/// What the service loop reports besides requests.
pub trait Observer: Handler {
    /// The endpoint got or lost its address.
    fn address(&mut self, event: AddressEvent);
}

/// Monotonic time for smoltcp (never the wall clock, which may jump or start at 1970).
pub fn now() -> Instant {
    let ts = clock_gettime(ClockId::Monotonic);
    Instant::from_micros(ts.tv_sec * 1_000_000 + ts.tv_nsec / 1_000)
}

/// Serves `endpoint` on `link` until an unrecoverable error. `wake` (an eventfd) is written by
/// other threads when a stream may have something to send, e.g. a new event was recorded.
pub fn serve(
    endpoint: &mut Endpoint,
    link: &mut Link,
    observer: &mut impl Observer,
    wake: Option<BorrowedFd<'_>>,
) -> io::Errno {
    let mut carrier = link.carrier();
    loop {
        // Only while there is no address: once bound, a carrier flap needs nothing from us.
        if endpoint.address().is_none() {
            let now_up = link.carrier();
            if now_up == Some(true) && carrier != Some(true) {
                log::info!("{}: carrier up", link.name());
                endpoint.restart_dhcp();
            }
            carrier = now_up;
        }
        let (delay, event) = endpoint.poll(now(), link, observer);
        if let Some(event) = event {
            observer.address(event);
        }
        let wait = delay.map_or(MAX_WAIT, |d| d.min(MAX_WAIT));
        let timeout = Timespec {
            tv_sec: i64::try_from(wait.secs()).unwrap_or(1),
            tv_nsec: i64::try_from(wait.millis() % 1000 * 1_000_000).unwrap_or(0),
        };
        let fd = link.as_fd();
        let mut fds = vec![PollFd::new(&fd, PollFlags::IN)];
        if let Some(wake) = &wake {
            fds.push(PollFd::new(wake, PollFlags::IN));
        }
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(io::Errno::INTR) => {}
            Err(e) => return e,
        }
        if let Some(wake) = wake
            && fds
                .get(1)
                .is_some_and(|f| f.revents().contains(PollFlags::IN))
        {
            // Reset the eventfd's counter; its value does not matter.
            let mut counter = [0u8; 8];
            let _ = io::read(wake, &mut counter);
        }
    }
}
