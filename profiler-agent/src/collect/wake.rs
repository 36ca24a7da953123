//! Sleeping until there is something to do. The sampling thread waits on file descriptors (the
//! kernel's new-process ring and an eventfd that other threads poke) instead of waking on a
//! timer: an agent on every node should cost nothing while nothing happens.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// An eventfd other threads use to wake the sampling thread: a signal arrived, a table was
/// built. Notifications coalesce (the counter just grows until read).
#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
}

impl Wakeup {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory effects; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the waiter (now, or at its next wait).
    pub fn notify(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer. It only fails when the counter would
        // overflow, and then a wakeup is pending anyway.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Takes pending notifications, so the next wait sleeps again.
    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN (nothing pending) is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    /// Sleeps until this is notified, one of `others` is readable, or `timeout` passes;
    /// then clears the notification.
    pub fn wait(&self, others: &[BorrowedFd<'_>], timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.fd.as_fd())
            .chain(others.iter().copied())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Rounded up, so a wait for 0.4 ms does not spin.
        let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs. Errors (EINTR) just
        // end the wait early; the caller re-checks its conditions.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_notification_ends_the_wait_and_is_consumed() {
        let wake = Arc::new(Wakeup::new().unwrap());
        let other = Arc::clone(&wake);
        let poker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.notify();
        });
        let began = Instant::now();
        wake.wait(&[], Duration::from_secs(30));
        assert!(began.elapsed() < Duration::from_secs(20), "woken by notify");
        poker.join().unwrap();
        // Consumed: the next wait runs to its timeout.
        let began = Instant::now();
        wake.wait(&[], Duration::from_millis(100));
        assert!(began.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_readable_descriptor_ends_the_wait() {
        let wake = Wakeup::new().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut &writer, b"x").unwrap();
        let began = Instant::now();
        wake.wait(&[reader.as_fd()], Duration::from_secs(30));
        assert!(began.elapsed() < Duration::from_secs(20));
    }
}
