//! Booting a kernel under qemu (KVM when it works, else TCG) and reading its console.
use super::*;

pub(super) fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

pub(super) fn host_kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// One guest to boot: which qemu, which kernel and initramfs, and the limits.
pub(super) struct BootSpec<'a> {
    /// The qemu-system binary (a name on PATH, or a path).
    pub(super) qemu: &'a OsStr,
    pub(super) arch: Arch,
    pub(super) kernel: &'a Path,
    pub(super) initrd: &'a Path,
    /// Hard limit, qemu's start to its exit.
    pub(super) timeout: Duration,
    /// How long a KVM guest may take to print its first marker before KVM counts as unusable.
    pub(super) kvm_probe: Duration,
    pub(super) log: &'a Path,
}

pub(super) struct Boot {
    pub(super) lines: Vec<String>,
    pub(super) kvm: bool,
    /// KVM was tried and the guest did not reach /init within the KVM probe time.
    pub(super) kvm_stuck: bool,
    pub(super) timed_out: bool,
    /// From qemu's start to the BEGIN and END lines.
    pub(super) to_begin: Option<Duration>,
    pub(super) to_end: Option<Duration>,
    pub(super) wall: Duration,
    pub(super) exit: Option<std::process::ExitStatus>,
}

/// Boots the guest, under KVM when `try_kvm`. Any KVM failure before the guest's first marker
/// (qemu exiting or aborting, as nested KVM does when it cannot set an MSR, or a guest that hangs)
/// means KVM is not usable on this host: said in one line, remembered in `stamp` (so later runs
/// go straight to TCG), and the same guest boots again under TCG in this run. With
/// `Accel::Kvm` the failure is an error instead.
pub(super) fn boot_with_fallback(
    spec: &BootSpec,
    try_kvm: bool,
    accel: Accel,
    stamp: &Path,
) -> Result<Boot> {
    let boot = boot_once(spec, try_kvm)?;
    let Some(why) = boot.kvm_failure(spec.kvm_probe) else {
        return Ok(boot);
    };
    if accel == Accel::Kvm {
        bail!("KVM is not usable here: {why} (see {})", spec.log.display());
    }
    eprintln!(
        "vm-test {}: KVM is not usable here: {why}; booting again under TCG (remembered in {})",
        spec.arch.name(),
        stamp.display()
    );
    if let Some(dir) = stamp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(stamp, format!("{why}\n"))?;
    boot_once(spec, false)
}

/// Boots once and reads the console until qemu exits, /init reports END (plus a grace period
/// for the power-off), or the hard timeout.
pub(super) fn boot_once(spec: &BootSpec, kvm: bool) -> Result<Boot> {
    let BootSpec {
        qemu,
        arch,
        kernel,
        initrd,
        timeout,
        kvm_probe,
        log,
    } = *spec;
    let mut cmd = Command::new(qemu);
    cmd.args(arch.qemu_args(kvm))
        .args([
            "-smp",
            "2",
            "-m",
            "2048",
            "-nographic",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console={} panic=-1 quiet", arch.console()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "vm-test: booting {} with {} ({}), at most {} s",
        kernel.display(),
        qemu.to_string_lossy(),
        if kvm { "KVM" } else { "TCG" },
        timeout.as_secs()
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", qemu.to_string_lossy()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        spawn_line_reader(child.stdout.take().expect("piped"), tx.clone(), ""),
        spawn_line_reader(child.stderr.take().expect("piped"), tx, "qemu: "),
    ];
    let mut logfile = std::fs::File::create(log)?;
    let mut boot = Boot {
        lines: Vec::new(),
        kvm,
        kvm_stuck: false,
        timed_out: false,
        to_begin: None,
        to_end: None,
        wall: Duration::ZERO,
        exit: None,
    };
    let mut deadline = started + timeout;
    loop {
        let now = Instant::now();
        if kvm && boot.to_begin.is_none() && now >= started + kvm_probe {
            boot.kvm_stuck = true;
            break;
        }
        if now >= deadline {
            boot.timed_out = boot.to_end.is_none();
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(500));
        match rx.recv_timeout(wait) {
            Ok(line) => {
                boot.record(line, started, &mut logfile)?;
                if boot.to_end.is_some() {
                    // Only the power-off is left.
                    deadline = deadline.min(Instant::now() + Duration::from_secs(15));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // qemu closed its output: it has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    boot.exit = if boot.timed_out || boot.kvm_stuck {
        let _ = child.kill();
        child.wait()?;
        None
    } else {
        finish(&mut child)?
    };
    boot.wall = started.elapsed();
    for r in readers {
        let _ = r.join();
    }
    // Lines still in the pipe when qemu stopped.
    while let Ok(line) = rx.try_recv() {
        boot.record(line, started, &mut logfile)?;
    }
    Ok(boot)
}

impl Boot {
    /// Why a KVM boot never reached the guest's first marker, if it was one: after that marker
    /// KVM worked, and a later failure is the guest's own.
    pub(super) fn kvm_failure(&self, probe: Duration) -> Option<String> {
        if !self.kvm || self.to_begin.is_some() {
            return None;
        }
        if self.kvm_stuck || self.timed_out {
            return Some(format!(
                "the guest did not reach /init within {} s",
                probe.as_secs()
            ));
        }
        // qemu's own last words say why ("error: failed to set MSR 0x10a to 0x69", then the
        // assertion that aborts it); three lines are enough for that.
        let said: Vec<&str> = self
            .lines
            .iter()
            .filter_map(|l| l.strip_prefix("qemu: "))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let said = match said.len() {
            0 => String::new(),
            n => format!(": {}", said[n.saturating_sub(3)..].join(" / ")),
        };
        Some(format!(
            "qemu {} before the guest's first marker{said}",
            describe_exit(self.exit)
        ))
    }

    pub(super) fn record(
        &mut self,
        line: String,
        started: Instant,
        log: &mut std::fs::File,
    ) -> Result<()> {
        writeln!(log, "{line}")?;
        if line.contains("KALYPSO|BEGIN|") && self.to_begin.is_none() {
            self.to_begin = Some(started.elapsed());
        }
        if line.contains("KALYPSO|END|") && self.to_end.is_none() {
            self.to_end = Some(started.elapsed());
        }
        self.lines.push(line);
        Ok(())
    }
}

/// "exited with status 1", "was killed by signal 6 (SIGABRT)", or "stopped" when it was killed
/// by us.
pub(super) fn describe_exit(exit: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match exit {
        None => "stopped".into(),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}{}", signal_name(sig)),
            (None, None) => format!("ended ({status})"),
        },
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// Waits briefly for qemu to exit on its own (it powers off after END), else kills it.
pub(super) fn finish(child: &mut Child) -> Result<Option<std::process::ExitStatus>> {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait()?;
    Ok(None)
}

pub(super) fn spawn_line_reader(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
    prefix: &'static str,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A stand-in for qemu-system-x86_64 that behaves like the real one on a host whose nested
    /// KVM cannot set IA32_ARCH_CAPABILITIES: with `-enable-kvm` it prints qemu's two lines and
    /// aborts (or, in `hang` mode, never prints anything); without it the "guest" reports BEGIN
    /// and END as /init does.
    fn fake_qemu(dir: &Path, kvm_mode: &str) -> PathBuf {
        let path = dir.join("qemu-system-x86_64");
        let script = format!(
            r#"#!/bin/sh
kvm=
for a in "$@"; do [ "$a" = -enable-kvm ] && kvm=1; done
echo "$*" >> "{log}"
if [ -n "$kvm" ]; then
  case "{kvm_mode}" in
    abort)
      echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
      echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed." >&2
      kill -ABRT $$ ;;
    hang) exec sleep 60 ;;
    late) echo "KALYPSO|BEGIN|6.1.0-57-amd64|x86_64|2|1.00"; exit 3 ;;
  esac
fi
echo "KALYPSO|BEGIN|6.1.0-57-amd64|x86_64|2|1.00"
echo "KALYPSO|END|2.00"
"#,
            log = dir.join("invocations").display(),
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kalypso-vm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn boot(dir: &Path, kvm_mode: &str, accel: Accel) -> (Result<Boot>, PathBuf, Vec<String>) {
        let qemu = fake_qemu(dir, kvm_mode);
        let (kernel, initrd, log) = (dir.join("vmlinuz"), dir.join("initrd"), dir.join("log"));
        let spec = BootSpec {
            qemu: qemu.as_os_str(),
            arch: Arch::X86_64,
            kernel: &kernel,
            initrd: &initrd,
            timeout: Duration::from_secs(30),
            kvm_probe: Duration::from_secs(1),
            log: &log,
        };
        let stamp = dir.join("cache/kvm-unusable-on-test");
        let result = boot_with_fallback(&spec, true, accel, &stamp);
        let runs = std::fs::read_to_string(dir.join("invocations"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (result, stamp, runs)
    }

    #[test]
    fn qemu_aborting_under_kvm_boots_the_same_guest_under_tcg_and_remembers_it() {
        let dir = scratch("abort");
        let (result, stamp, runs) = boot(&dir, "abort", Accel::Auto);
        let boot = result.expect("falls back to TCG");
        assert!(!boot.kvm, "the second boot is TCG");
        assert!(boot.to_begin.is_some() && boot.to_end.is_some());
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(runs[0].contains("-enable-kvm") && !runs[1].contains("-enable-kvm"));
        // The same kernel and initramfs both times.
        assert_eq!(
            runs[0].split_once("-kernel").unwrap().1,
            runs[1].split_once("-kernel").unwrap().1
        );
        let remembered = std::fs::read_to_string(&stamp).expect("stamp written");
        assert!(
            remembered.contains("killed by signal 6 (SIGABRT)")
                && remembered.contains("failed to set MSR 0x10a"),
            "{remembered}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_kvm_guest_that_hangs_before_its_first_marker_falls_back_after_the_probe() {
        let dir = scratch("hang");
        let (result, stamp, runs) = boot(&dir, "hang", Accel::Auto);
        let boot = result.expect("falls back to TCG");
        assert!(!boot.kvm && boot.to_end.is_some());
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(
            std::fs::read_to_string(&stamp)
                .unwrap()
                .contains("did not reach /init within 1 s")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn with_accel_kvm_a_failing_kvm_boot_is_an_error_not_a_fallback() {
        let dir = scratch("forced");
        let (result, stamp, runs) = boot(&dir, "abort", Accel::Kvm);
        let err = format!("{:#}", result.err().expect("an error"));
        assert!(
            err.contains("KVM is not usable here") && err.contains("SIGABRT"),
            "{err}"
        );
        assert_eq!(runs.len(), 1);
        assert!(!stamp.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_guest_that_fails_after_its_first_marker_is_not_blamed_on_kvm() {
        let dir = scratch("late");
        let (result, stamp, runs) = boot(&dir, "late", Accel::Auto);
        let boot = result.expect("no error: the checks judge this boot");
        assert!(boot.kvm && boot.to_begin.is_some() && boot.to_end.is_none());
        assert_eq!(describe_exit(boot.exit), "exited with status 3");
        assert_eq!(runs.len(), 1);
        assert!(!stamp.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
