//! Survives a read through a mapping of a file that another process truncated.
//!
//! The agent's own code never maps a file other processes control (headers, build ids and CFI are
//! read with `pread`, see [`crate::elf`]), but blazesym maps every ELF file it symbolizes, and the
//! process that maps a library may truncate it at any moment. A read past the new end of file
//! raises SIGBUS (`BUS_ADRERR`), which by default kills the agent: any user could stop a
//! node's profiler that way.
//!
//! [`install`] sets a handler that maps a page of zeros over the faulting page (`MAP_FIXED`,
//! anonymous, read-only) and returns, so the interrupted read sees zeros: to the parser, the
//! truncated file reads as garbage, which it rejects or symbolizes as unknown, as for any
//! corrupt file. The page goes away with the rest of the mapping when the parser unmaps it.
//! Every other SIGBUS (hardware memory errors, misaligned accesses) goes to the previous
//! handler, or to the default action, as before.
use std::sync::Once;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static INSTALL: Once = Once::new();
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
static RECOVERED: AtomicU64 = AtomicU64::new(0);
/// The action before ours (written once, before our handler is installed).
static mut PREVIOUS: Option<libc::sigaction> = None;

/// Installs the handler once per process (later calls do nothing). Called before anything
/// blazesym maps, i.e. when a symbolizer is made.
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        PAGE_SIZE.store(usize::try_from(page).unwrap_or(4096), Ordering::SeqCst);
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler has the
        // signature SA_SIGINFO requires and only makes async-signal-safe calls (mmap, sigaction,
        // atomics). PREVIOUS is written before the handler can run, and only read by it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                tracing::warn!(
                    "cannot read the SIGBUS action: a truncated mapped file may kill the agent"
                );
                return;
            }
            *std::ptr::addr_of_mut!(PREVIOUS) = Some(previous);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                tracing::warn!(
                    "cannot handle SIGBUS: a truncated mapped file may kill the agent ({})",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// Reads through a truncated mapping that the handler turned into zeros, since start.
pub fn recovered() -> u64 {
    RECOVERED.load(Ordering::Relaxed)
}

extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    if code == libc::BUS_ADRERR && page.is_power_of_two() && addr >= page {
        let start = addr & !(page - 1);
        // SAFETY: replaces exactly the one page that faulted, which lies in a file mapping whose
        // file ends before it (BUS_ADRERR); a fresh anonymous read-only page of zeros there is
        // what the reader sees instead. mmap is a plain system call (errno saved and restored).
        let mapped = unsafe {
            let errno = *libc::__errno_location();
            let p = libc::mmap(
                start as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            *libc::__errno_location() = errno;
            p as usize == start
        };
        if mapped {
            RECOVERED.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    // Not ours: what would have happened without us.
    // SAFETY: PREVIOUS was set before this handler was installed and is never written again.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(prev)
            if prev.sa_sigaction != libc::SIG_DFL
                && prev.sa_sigaction != libc::SIG_IGN
                && prev.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(prev.sa_sigaction) };
            f(signal, info, context);
        }
        _ => {
            // SAFETY: resetting to the default action; returning re-runs the faulting
            // instruction, which then ends the process as SIGBUS would have.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_read_past_the_end_of_a_truncated_mapping_reads_zeros() {
        crate::test_support::in_child(
            "sigbus::tests::a_read_past_the_end_of_a_truncated_mapping_reads_zeros",
            || {
                install();
                let mut file = tempfile::NamedTempFile::new().unwrap();
                file.write_all(&[0xab; 3 * 4096]).unwrap();
                // SAFETY: a temporary file this test alone controls, mapped read-only.
                let map = unsafe { memmap2::Mmap::map(file.as_file()) }.unwrap();
                assert_eq!(map[5000], 0xab);
                file.as_file().set_len(4096).unwrap();
                let before = recovered();
                // Past the new end: zeros instead of SIGBUS; before it: the file.
                let read = |i: usize| unsafe { std::ptr::read_volatile(&map[i]) };
                assert_eq!(read(3 * 4096 - 1), 0);
                assert_eq!(read(4096 + 10), 0);
                assert_eq!(read(10), 0xab);
                assert_eq!(recovered() - before, 2);
                drop(map);
            },
        );
    }
}
