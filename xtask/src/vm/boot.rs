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

pub(super) struct Boot {
    pub(super) lines: Vec<String>,
    pub(super) kvm: bool,
    /// KVM was tried and the guest did not reach /init within KVM_PROBE.
    pub(super) kvm_stuck: bool,
    pub(super) timed_out: bool,
    /// From qemu's start to the BEGIN and END lines.
    pub(super) to_begin: Option<Duration>,
    pub(super) to_end: Option<Duration>,
    pub(super) wall: Duration,
    pub(super) exit: Option<std::process::ExitStatus>,
}

/// Boots once and reads the console until qemu exits, /init reports END (plus a grace period
/// for the power-off), or the hard timeout.
pub(super) fn boot_once(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    kvm: bool,
    timeout: Duration,
    log: &Path,
) -> Result<Boot> {
    let mut cmd = Command::new(arch.qemu());
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
        arch.qemu(),
        if kvm { "KVM" } else { "TCG" },
        timeout.as_secs()
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", arch.qemu()))?;
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
        if kvm && boot.to_begin.is_none() && now >= started + KVM_PROBE {
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
