//! `cargo xtask vm-test`: the agent on Debian's own kernels, booted under qemu-system.
//!
//! For each architecture (aarch64 under TCG; x86_64 with KVM where it works, else TCG) this
//! 1. builds the agent for it (cross-compiled for a foreign architecture) and, for aarch64, runs
//!    its `--version` and `--help` under qemu-user on the host (a fast smoke test);
//! 2. `apt-get download`s Debian's kernel package (what `linux-image-<arch>` depends on) and
//!    `busybox-static` for that architecture into `target/vm-cache/<arch>/`, unpacked there with
//!    dpkg (never into /), and cached between runs;
//! 3. compiles the test workloads (`tests/workloads/`) and `tests/vm/dropuid.c` for it;
//! 4. writes a gzip'd newc initramfs: busybox, the agent, the workloads, the shared libraries they
//!    need, and `tests/vm/init.sh` as `/init`;
//! 5. boots it with a hard timeout, reads the console, and checks what `/init` printed: the call
//!    tree and its shares, kernel frames under user frames for a syscall-heavy workload, node-wide
//!    mode, and the unprivileged error. Any failed check, or a VM that never reports, fails the
//!    command with the check's name.
//!
//! The console log of the last run is kept in `target/vm-cache/<arch>/console.log`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{build, setup};

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Which kernel to boot: aarch64 (TCG), x86_64 (KVM if it works, else TCG), or all.
    #[arg(long, value_enum, default_value = "all")]
    pub arch: ArchChoice,
    /// Accelerator for a VM of the host's own architecture; other architectures always use TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Hard limit for one VM, boot to power-off, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Use this agent binary instead of building one (only with a single --arch).
    #[arg(long)]
    pub agent: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            arch: ArchChoice::All,
            accel: Accel::Auto,
            timeout: 300,
            agent: None,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchChoice {
    Aarch64,
    #[value(name = "x86_64")]
    X86_64,
    All,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM when /dev/kvm opens and a KVM guest was not seen to hang on this host; else TCG.
    Auto,
    /// KVM; fails when the guest does not reach /init within 20 s.
    Kvm,
    /// Emulation only.
    Tcg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    Aarch64,
    X86_64,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }
    /// Debian's name for it.
    fn deb(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::X86_64 => "amd64",
        }
    }
    fn rust_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
        }
    }
    fn triplet(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-linux-gnu",
            Arch::X86_64 => "x86_64-linux-gnu",
        }
    }
    fn is_host(self) -> bool {
        match self {
            Arch::Aarch64 => cfg!(target_arch = "aarch64"),
            Arch::X86_64 => cfg!(target_arch = "x86_64"),
        }
    }
    /// A binutils/gcc tool for this architecture: the host's own, or the cross one.
    fn tool(self, name: &str) -> String {
        if self.is_host() {
            name.to_string()
        } else {
            format!("{}-{name}", self.triplet())
        }
    }
    /// Where the libraries the guest's binaries link against are found on this host.
    fn lib_dirs(self) -> Vec<PathBuf> {
        let t = self.triplet();
        if self.is_host() {
            [
                format!("/lib/{t}"),
                format!("/usr/lib/{t}"),
                "/lib64".into(),
                "/usr/lib64".into(),
                "/lib".into(),
                "/usr/lib".into(),
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect()
        } else {
            vec![
                PathBuf::from(format!("/usr/{t}/lib")),
                PathBuf::from(format!("/usr/{t}/lib64")),
            ]
        }
    }
    fn qemu(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::X86_64 => "qemu-system-x86_64",
        }
    }
    fn console(self) -> &'static str {
        match self {
            Arch::Aarch64 => "ttyAMA0",
            Arch::X86_64 => "ttyS0",
        }
    }
    /// The kernel frame every syscall passes through, as the agent prints it.
    fn syscall_entry(self) -> &'static str {
        match self {
            Arch::Aarch64 => "el0_svc_[k]",
            Arch::X86_64 => "do_syscall_64_[k]",
        }
    }
    fn qemu_args(self, kvm: bool) -> Vec<&'static str> {
        match (self, kvm) {
            (_, true) => vec!["-enable-kvm", "-cpu", "host"],
            // Without pauth-impdef the architected pointer-auth algorithm costs ~3x in TCG.
            (Arch::Aarch64, false) => vec!["-M", "virt", "-cpu", "max,pauth-impdef=on"],
            (Arch::X86_64, false) => vec!["-cpu", "max"],
        }
    }
}

/// The workloads compiled into the initramfs: (name, source relative to the workspace).
const WORKLOADS: &[(&str, &str)] = &[
    ("calltree", "tests/workloads/calltree.c"),
    ("syscalls", "tests/workloads/syscalls.c"),
    ("dropuid", "tests/vm/dropuid.c"),
];
const CFLAGS: &[&str] = &[
    "-O0",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-pthread",
];
/// How long a KVM guest may take to reach /init before KVM is declared unusable on this host
/// (nested KVM can hang a guest right after the real-mode kernel setup).
const KVM_PROBE: Duration = Duration::from_secs(20);

pub fn run(opts: &Options) -> Result<()> {
    let arches = match opts.arch {
        ArchChoice::Aarch64 => vec![Arch::Aarch64],
        ArchChoice::X86_64 => vec![Arch::X86_64],
        ArchChoice::All => vec![Arch::Aarch64, Arch::X86_64],
    };
    if opts.agent.is_some() && arches.len() > 1 {
        bail!("--agent needs a single --arch (one binary runs on one architecture)");
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for arch in arches {
        let started = Instant::now();
        let report = run_arch(arch, opts).with_context(|| format!("vm-test {}", arch.name()))?;
        eprintln!("{}", report.render(started.elapsed()));
        failures.extend(
            report
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}: {}", arch.name(), c.name, c.detail)),
        );
        reports.push(report);
    }
    if !failures.is_empty() {
        bail!(
            "vm-test: {} check(s) failed:\n  {}\n(console logs: target/vm-cache/<arch>/console.log)",
            failures.len(),
            failures.join("\n  ")
        );
    }
    eprintln!(
        "vm-test: all checks passed on {}",
        reports
            .iter()
            .map(|r| format!("{} ({})", r.kernel, r.accel))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn run_arch(arch: Arch, opts: &Options) -> Result<Report> {
    let root = setup::workspace_root();
    let cache = root.join("target/vm-cache").join(arch.name());
    std::fs::create_dir_all(&cache)?;

    if !arch.is_host() {
        setup::run(&setup::Options {
            target: Some(arch.rust_target().into()),
            test_tools: false,
        })?;
    }
    setup::install_vm_tools(arch.deb())?;
    ensure_dpkg_architecture(arch)?;

    let mut checks = Vec::new();
    let agent = match &opts.agent {
        Some(path) => path.clone(),
        None => build::build(&build::Options {
            release: true,
            target: (!arch.is_host()).then(|| arch.rust_target().to_string()),
        })?,
    };
    if !arch.is_host() {
        checks.push(qemu_user_smoke(arch, &agent));
    }

    let (kernel_pkg, kernel) = fetch_kernel(arch, &cache)?;
    let busybox = fetch_busybox(arch, &cache)?;
    let bin_dir = cache.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let mut programs = Vec::new();
    for (name, source) in WORKLOADS {
        let out = bin_dir.join(name);
        setup::run_checked(
            Command::new(arch.tool("gcc"))
                .args(CFLAGS)
                .arg("-o")
                .arg(&out)
                .arg(root.join(source)),
        )?;
        programs.push((name.to_string(), out));
    }
    let stripped = bin_dir.join("profiler-agent");
    // The guest needs no debug info of the agent itself; without it the initramfs is ~5x smaller.
    let agent_in_vm = if Command::new(arch.tool("strip"))
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&agent)
        .status()
        .is_ok_and(|s| s.success())
    {
        stripped
    } else {
        agent.clone()
    };
    programs.push(("profiler-agent".into(), agent_in_vm));

    let initrd = cache.join("initramfs.cpio.gz");
    build_initramfs(arch, &root, &busybox, &programs, &initrd)?;

    let kvm_broken_stamp = root.join("target/vm-cache").join(format!(
        "kvm-hangs-on-{}",
        host_kernel_release().unwrap_or_default()
    ));
    let try_kvm = arch.is_host()
        && match opts.accel {
            Accel::Tcg => false,
            Accel::Kvm => true,
            Accel::Auto => kvm_usable() && !kvm_broken_stamp.exists(),
        };
    let log = cache.join("console.log");
    let timeout = Duration::from_secs(opts.timeout);
    let mut boot = boot_once(arch, &kernel, &initrd, try_kvm, timeout, &log)?;
    if try_kvm && boot.kvm_stuck {
        if opts.accel == Accel::Kvm {
            bail!(
                "the KVM guest did not reach /init within {} s (see {})",
                KVM_PROBE.as_secs(),
                log.display()
            );
        }
        eprintln!(
            "vm-test {}: the KVM guest did not reach /init within {} s: KVM does not work here \
             (remembered in {}); using TCG",
            arch.name(),
            KVM_PROBE.as_secs(),
            kvm_broken_stamp.display()
        );
        std::fs::write(
            &kvm_broken_stamp,
            "a KVM guest hung before /init on this host kernel\n",
        )?;
        boot = boot_once(arch, &kernel, &initrd, false, timeout, &log)?;
    }
    let output = parse_console(&boot.lines);
    checks.extend(check(arch, &output, &boot, timeout));
    Ok(Report {
        arch,
        kernel: output
            .begin
            .as_ref()
            .map(|b| b.release.clone())
            .unwrap_or(kernel_pkg),
        accel: if boot.kvm { "KVM" } else { "TCG" },
        boot_secs: boot.to_begin.map(|d| d.as_secs_f64()),
        tests_secs: match (boot.to_begin, boot.to_end) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        },
        vm_secs: boot.wall.as_secs_f64(),
        rates: sample_rates(&output),
        checks,
    })
}

struct Report {
    arch: Arch,
    kernel: String,
    accel: &'static str,
    /// qemu start to the BEGIN line of /init.
    boot_secs: Option<f64>,
    /// BEGIN to END.
    tests_secs: Option<f64>,
    /// qemu start to its exit.
    vm_secs: f64,
    /// (step, samples, seconds, per second) from the agent's summaries.
    rates: Vec<(String, u64, f64, f64)>,
    checks: Vec<CheckResult>,
}

impl Report {
    fn render(&self, total: Duration) -> String {
        let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.1} s"));
        let mut out = format!(
            "vm-test {}: kernel {} ({}), boot {}, tests {}, VM {:.1} s, with build {:.1} s",
            self.arch.name(),
            self.kernel,
            self.accel,
            secs(self.boot_secs),
            secs(self.tests_secs),
            self.vm_secs,
            total.as_secs_f64()
        );
        for (step, samples, s, rate) in &self.rates {
            let _ = write!(
                out,
                "\n  {step}: {samples} samples in {s:.1} s ({rate:.1}/s)"
            );
        }
        for c in &self.checks {
            let _ = write!(
                out,
                "\n  [{}] {}: {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        out
    }
}

#[derive(Debug)]
struct CheckResult {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn pass(name: &'static str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        ok: true,
        detail: detail.into(),
    }
}

fn fail(name: &'static str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        ok: false,
        detail: detail.into(),
    }
}

/// `--version` and `--help` of the cross-built agent under qemu-user (no BPF there: `bpf()` is
/// ENOSYS in qemu-user, so this only proves the binary starts and parses its arguments).
fn qemu_user_smoke(arch: Arch, agent: &Path) -> CheckResult {
    let name = "host-qemu-user-smoke";
    let qemu = format!("qemu-{}-static", arch.name());
    let sysroot = format!("/usr/{}", arch.triplet());
    let run = |arg: &str| {
        Command::new(&qemu)
            .args(["-L", &sysroot])
            .arg(agent)
            .arg(arg)
            .output()
    };
    match (run("--version"), run("--help")) {
        (Ok(v), Ok(h)) => {
            let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
            let help = String::from_utf8_lossy(&h.stdout);
            if !v.status.success() || !version.starts_with("profiler-agent ") {
                fail(
                    name,
                    format!(
                        "--version under {qemu}: {} {version:?} {}",
                        v.status,
                        String::from_utf8_lossy(&v.stderr)
                    ),
                )
            } else if !h.status.success() || !help.contains("--pid") || !help.contains("--duration")
            {
                fail(name, format!("--help under {qemu}: {} {help:?}", h.status))
            } else {
                pass(
                    name,
                    format!("{version:?}; --help lists --pid and --duration ({qemu})"),
                )
            }
        }
        (Err(e), _) | (_, Err(e)) => fail(name, format!("starting {qemu}: {e}")),
    }
}

fn ensure_dpkg_architecture(arch: Arch) -> Result<()> {
    let native = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg")?;
    if String::from_utf8_lossy(&native.stdout).trim() == arch.deb() {
        return Ok(());
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .context("running dpkg")?;
    if String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|l| l.trim() == arch.deb())
    {
        return Ok(());
    }
    setup::run_checked(&mut privileged("dpkg", &["--add-architecture", arch.deb()]))?;
    apt_update()
}

/// `program args`, through sudo when not root (as `cargo xtask setup` does).
fn privileged(program: &str, args: &[&str]) -> Command {
    if setup::is_root() {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(program).args(args);
        cmd
    }
}

fn apt_update() -> Result<()> {
    setup::run_checked(
        privileged("apt-get", &["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The versioned kernel package that `linux-image-<arch>` depends on, e.g.
/// `linux-image-6.1.0-56-arm64`.
fn kernel_package(arch: Arch) -> Result<String> {
    let meta = format!("linux-image-{}:{}", arch.deb(), arch.deb());
    let out = Command::new("apt-cache")
        .args(["depends", &meta])
        .output()
        .context("running apt-cache")?;
    parse_kernel_dependency(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
        format!(
            "apt-cache knows no kernel for {meta} (run `apt-get update`?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn parse_kernel_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends: ")?;
        let name = dep.split(':').next()?.trim();
        (name.starts_with("linux-image-") && name.chars().any(|c| c.is_ascii_digit()))
            .then(|| name.to_string())
    })
}

/// The cached `.deb` of `package` for `arch` in `dir`, downloaded with `apt-get download` when
/// missing.
fn download(package: &str, arch: Arch, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let find = || -> Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        let suffix = format!("_{}.deb", arch.deb());
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(&suffix) {
                return Ok(Some(dir.join(name)));
            }
        }
        Ok(None)
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    eprintln!("vm-test: apt-get download {package}:{}", arch.deb());
    let out = Command::new("apt-get")
        .args(["download", "-q", &format!("{package}:{}", arch.deb())])
        .current_dir(dir)
        .output()
        .context("running apt-get download")?;
    if !out.status.success() {
        bail!(
            "apt-get download {package}:{} failed: {}",
            arch.deb(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    find()?.with_context(|| {
        format!(
            "apt-get download left no {package} .deb in {}",
            dir.display()
        )
    })
}

/// Debian's kernel for `arch`: (package name, path of its vmlinuz). Only `/boot` is unpacked:
/// the kernel has everything the test needs built in (BPF, perf events, the serial console,
/// devtmpfs, gzip'd initramfs), so its 400 MB of modules stay in the .deb.
fn fetch_kernel(arch: Arch, cache: &Path) -> Result<(String, PathBuf)> {
    match fetch_kernel_once(arch, cache) {
        Ok(found) => Ok(found),
        Err(e) => {
            // Stale package lists: the mirror has moved on to a newer kernel ABI, or the lists of
            // a just-added architecture were never fetched.
            eprintln!("vm-test: {e:#}; updating the package lists and retrying");
            apt_update()?;
            fetch_kernel_once(arch, cache)
        }
    }
}

fn fetch_kernel_once(arch: Arch, cache: &Path) -> Result<(String, PathBuf)> {
    let package = kernel_package(arch)?;
    let unpacked = cache.join("kernel").join(&package);
    let vmlinuz = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir.join("boot"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
    };
    if let Some(k) = vmlinuz(&unpacked) {
        return Ok((package, k));
    }
    // A new kernel ABI replaces the cached one: drop the old .deb and unpacked tree.
    prune(&cache.join("kernel"), "linux-image-", &package)?;
    prune(&cache.join("debs"), "linux-image-", &format!("{package}_"))?;
    let deb = download(&package, arch, &cache.join("debs"))?;
    let partial = cache.join("kernel").join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let mut dpkg = Command::new("dpkg")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg --fsys-tarfile")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "./boot/*"])
        .current_dir(&partial)
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("running tar")?;
    let dpkg = dpkg.wait()?;
    if !dpkg.success() || !tar.success() {
        bail!(
            "unpacking {} failed (dpkg {dpkg}, tar {tar})",
            deb.display()
        );
    }
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::rename(&partial, &unpacked)?;
    let k =
        vmlinuz(&unpacked).with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    Ok((package, k))
}

/// Removes the entries of `dir` that start with `family` but not with `keep`.
fn prune(dir: &Path, family: &str, keep: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(family) && !name.starts_with(keep) {
            eprintln!("vm-test: removing the outdated {}", path.display());
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Debian's statically linked busybox for `arch`, unpacked with `dpkg -x` into the cache.
fn fetch_busybox(arch: Arch, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("busybox");
    let binary = dir.join("bin/busybox");
    if binary.exists() {
        return Ok(binary);
    }
    let deb = download("busybox-static", arch, &cache.join("debs"))?;
    let _ = std::fs::remove_dir_all(&dir);
    setup::run_checked(Command::new("dpkg").arg("-x").arg(&deb).arg(&dir))?;
    if !binary.exists() {
        bail!("no bin/busybox in {}", deb.display());
    }
    Ok(binary)
}

/// The program interpreter and DT_NEEDED libraries of an ELF file, from `readelf` (GNU readelf
/// reads every architecture's ELF).
fn elf_dependencies(file: &Path) -> Result<(Option<String>, Vec<String>)> {
    let out = Command::new("readelf")
        .args(["-W", "-l", "-d"])
        .arg(file)
        .output()
        .context("running readelf")?;
    if !out.status.success() {
        bail!(
            "readelf {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let bracketed = |l: &str, marker: &str| -> Option<String> {
        let rest = &l[l.find(marker)? + marker.len()..];
        Some(rest[..rest.find(']')?].to_string())
    };
    let interp = text
        .lines()
        .find_map(|l| bracketed(l, "[Requesting program interpreter: "));
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| bracketed(l, "Shared library: ["))
        .collect();
    Ok((interp, needed))
}

/// Every shared library `programs` need, transitively: (path in the guest, file on the host).
fn shared_libraries(arch: Arch, programs: &[PathBuf]) -> Result<BTreeMap<String, PathBuf>> {
    let dirs = arch.lib_dirs();
    let resolve = |name: &str| -> Result<PathBuf> {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .with_context(|| format!("shared library {name} not found in {dirs:?}"))
    };
    let mut libs = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<PathBuf> = programs.to_vec();
    while let Some(file) = todo.pop() {
        let (interp, needed) = elf_dependencies(&file)?;
        if let Some(interp) = interp {
            // The interpreter at the absolute path the binaries ask for.
            let base = Path::new(&interp)
                .file_name()
                .context("empty interpreter path")?
                .to_string_lossy()
                .into_owned();
            let host = if arch.is_host() {
                PathBuf::from(&interp)
            } else {
                resolve(&base)?
            };
            libs.insert(interp.trim_start_matches('/').to_string(), host);
        }
        for name in needed {
            if seen.insert(name.clone()) {
                let host = resolve(&name)?;
                libs.insert(format!("lib/{}/{name}", arch.triplet()), host.clone());
                todo.push(host);
            }
        }
    }
    Ok(libs)
}

fn build_initramfs(
    arch: Arch,
    root: &Path,
    busybox: &Path,
    programs: &[(String, PathBuf)],
    out: &Path,
) -> Result<()> {
    let mut fs = Cpio::default();
    for dir in ["proc", "sys", "dev", "root", "etc", "sys/kernel/debug"] {
        fs.add(dir, Node::Dir(0o755));
    }
    fs.add("tmp", Node::Dir(0o1777));
    fs.add("dev/console", Node::CharDev(5, 1));
    fs.add("bin/busybox", Node::file(busybox, 0o755)?);
    fs.add("bin/sh", Node::Symlink("busybox".into()));
    fs.add("init", Node::file(&root.join("tests/vm/init.sh"), 0o755)?);
    fs.add(
        "etc/passwd",
        Node::File(
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            0o644,
        ),
    );
    let paths: Vec<PathBuf> = programs.iter().map(|(_, p)| p.clone()).collect();
    for (name, path) in programs {
        fs.add(&format!("opt/kalypso/{name}"), Node::file(path, 0o755)?);
    }
    for (guest, host) in shared_libraries(arch, &paths)? {
        fs.add(&guest, Node::file(&host, 0o755)?);
    }
    let cpio = fs.to_newc();
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out)?)
        .spawn()
        .context("running gzip")?;
    gzip.stdin
        .take()
        .expect("piped")
        .write_all(&cpio)
        .context("writing to gzip")?;
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    eprintln!(
        "vm-test: initramfs {} ({:.1} MB, {:.1} MB unpacked)",
        out.display(),
        std::fs::metadata(out)?.len() as f64 / 1e6,
        cpio.len() as f64 / 1e6
    );
    Ok(())
}

enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(String),
    CharDev(u32, u32),
}

impl Node {
    fn file(path: &Path, mode: u32) -> Result<Node> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Node::File(data, mode))
    }
}

/// An initramfs image in the kernel's `newc` cpio format (written here rather than with cpio(1)
/// so that the device node /dev/console needs no root and the image is reproducible).
#[derive(Default)]
struct Cpio {
    /// By path without the leading `/`; a BTreeMap orders every directory before its contents.
    nodes: BTreeMap<String, Node>,
}

impl Cpio {
    fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.nodes
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir(0o755));
            parent = p.parent();
        }
        self.nodes.insert(path.to_string(), node);
    }

    fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in (1..).zip(&self.nodes) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir(m) => (0o040000 | m, &[], (0, 0)),
                Node::File(d, m) => (0o100000 | m, d, (0, 0)),
                Node::Symlink(t) => (0o120777, t.as_bytes(), (0, 0)),
                Node::CharDev(maj, min) => (0o020600, &[], (*maj, *min)),
            };
            let nlink = if matches!(node, Node::Dir(_)) { 2 } else { 1 };
            newc_entry(&mut out, ino, mode, nlink, rdev, path, data);
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).expect("initramfs files are < 4 GiB"),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).expect("short names"),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn host_kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

struct Boot {
    lines: Vec<String>,
    kvm: bool,
    /// KVM was tried and the guest did not reach /init within KVM_PROBE.
    kvm_stuck: bool,
    timed_out: bool,
    /// From qemu's start to the BEGIN and END lines.
    to_begin: Option<Duration>,
    to_end: Option<Duration>,
    wall: Duration,
    exit: Option<std::process::ExitStatus>,
}

/// Boots once and reads the console until qemu exits, /init reports END (plus a grace period
/// for the power-off), or the hard timeout.
fn boot_once(
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
    fn record(&mut self, line: String, started: Instant, log: &mut std::fs::File) -> Result<()> {
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
fn finish(child: &mut Child) -> Result<Option<std::process::ExitStatus>> {
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

fn spawn_line_reader(
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

#[derive(Debug, Default)]
struct Begin {
    release: String,
    machine: String,
    cpus: String,
}

/// What /init reported.
#[derive(Debug, Default)]
struct VmOutput {
    begin: Option<Begin>,
    end: bool,
    /// Exit status of each step.
    rc: BTreeMap<String, i32>,
    /// Guest uptime at each step's start and end.
    started: BTreeMap<String, f64>,
    finished: BTreeMap<String, f64>,
    /// Files printed with F lines, and whether their EOF line came.
    files: BTreeMap<String, Vec<String>>,
    complete: BTreeSet<String>,
    missing: BTreeSet<String>,
    notes: Vec<String>,
}

fn parse_console(lines: &[String]) -> VmOutput {
    let mut out = VmOutput::default();
    for line in lines {
        // A kernel message can put bytes before ours on the same line; never after (we write
        // whole lines).
        let Some(at) = line.find("KALYPSO|") else {
            continue;
        };
        let fields: Vec<&str> = line[at..].splitn(4, '|').collect();
        match fields.as_slice() {
            ["KALYPSO", "F", file, content] => out
                .files
                .entry(file.to_string())
                .or_default()
                .push(content.to_string()),
            ["KALYPSO", "F", file] => out
                .files
                .entry(file.to_string())
                .or_default()
                .push(String::new()),
            ["KALYPSO", "BEGIN", rest @ ..] => {
                let rest = rest.join("|");
                let mut parts = rest.split('|');
                out.begin = Some(Begin {
                    release: parts.next().unwrap_or_default().to_string(),
                    machine: parts.next().unwrap_or_default().to_string(),
                    cpus: parts.next().unwrap_or_default().to_string(),
                });
            }
            ["KALYPSO", "END", ..] => out.end = true,
            ["KALYPSO", "START", step, up] => {
                if let Ok(t) = up.parse() {
                    out.started.insert(step.to_string(), t);
                }
            }
            ["KALYPSO", "RC", step, rest] => {
                let mut parts = rest.split('|');
                if let Some(rc) = parts.next().and_then(|r| r.trim().parse().ok()) {
                    out.rc.insert(step.to_string(), rc);
                }
                if let Some(t) = parts.next().and_then(|t| t.trim().parse().ok()) {
                    out.finished.insert(step.to_string(), t);
                }
            }
            ["KALYPSO", "EOF", file] => {
                out.complete.insert(file.to_string());
            }
            ["KALYPSO", "MISSING", file] => {
                out.missing.insert(file.to_string());
            }
            ["KALYPSO", "NOTE", rest @ ..] => out.notes.push(rest.join("|")),
            _ => {}
        }
    }
    out
}

type Folded = BTreeMap<Vec<String>, u64>;

fn parse_folded(lines: &[String]) -> Folded {
    let mut folded = Folded::new();
    for line in lines {
        if let Some((stack, count)) = line.trim_end().rsplit_once(' ')
            && let Ok(count) = count.parse::<u64>()
        {
            let frames = stack.split(';').map(str::to_string).collect();
            *folded.entry(frames).or_default() += count;
        }
    }
    folded
}

fn has_window(stack: &[String], window: &[&str]) -> bool {
    stack
        .windows(window.len())
        .any(|w| w.iter().zip(window).all(|(a, b)| a == b))
}

fn count_with(folded: &Folded, window: &[&str]) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| has_window(s, window))
        .map(|(_, c)| c)
        .sum()
}

/// "… 490 samples in 5.0 s (98.0/s; …" from the agent's summary line.
fn parse_summary(stderr: &[String]) -> Option<(u64, f64, f64)> {
    stderr.iter().find_map(|l| {
        let before = &l[..l.find(" samples in ")?];
        let samples = before.rsplit(' ').next()?.parse().ok()?;
        let after = &l[l.find(" samples in ")? + " samples in ".len()..];
        let secs: f64 = after.split(' ').next()?.parse().ok()?;
        let rate = after.split_once('(')?.1.split('/').next()?.parse().ok()?;
        Some((samples, secs, rate))
    })
}

fn sample_rates(out: &VmOutput) -> Vec<(String, u64, f64, f64)> {
    ["calltree", "syscalls", "node"]
        .iter()
        .filter_map(|step| {
            let err = out.files.get(&format!("{step}.err"))?;
            let (n, s, r) = parse_summary(err)?;
            Some((step.to_string(), n, s, r))
        })
        .collect()
}

/// Minimum samples for one busy thread over 5 s at 99 Hz (495 expected); TCG may lose some.
const MIN_PID_SAMPLES: u64 = 200;

/// The checks on what /init reported. Every check is named; a missing report is a failure.
fn check(arch: Arch, out: &VmOutput, boot: &Boot, timeout: Duration) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    let tail = || {
        let shown: Vec<&str> = boot
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if shown.is_empty() {
            return "(no console output at all)".to_string();
        }
        shown[shown.len().saturating_sub(15)..].join("\n    ")
    };
    match &out.begin {
        Some(b) if b.machine == arch.name() => checks.push(pass(
            "boot",
            format!(
                "{} {} with {} CPUs reached /init after {:.1} s",
                b.release,
                b.machine,
                b.cpus,
                boot.to_begin.unwrap_or_default().as_secs_f64()
            ),
        )),
        Some(b) => checks.push(fail(
            "boot",
            format!(
                "the guest is {} ({}), expected {}",
                b.machine,
                b.release,
                arch.name()
            ),
        )),
        None => {
            let why = if boot.timed_out {
                format!(
                    "no KALYPSO|BEGIN line within the {} s timeout",
                    timeout.as_secs()
                )
            } else {
                format!(
                    "qemu exited ({:?}) before /init printed KALYPSO|BEGIN",
                    boot.exit
                )
            };
            checks.push(fail(
                "boot",
                format!("{why}; last console lines:\n    {}", tail()),
            ));
            return checks;
        }
    }

    let step_ok = |step: &str| -> Result<(), String> {
        let err = out
            .files
            .get(&format!("{step}.err"))
            .map(|l| l.join("\n      "))
            .unwrap_or_default();
        match out.rc.get(step) {
            None => Err(format!("{step} never finished (no RC line)")),
            Some(0) => Ok(()),
            Some(124 | 143) => Err(format!(
                "{step} timed out inside the VM; stderr:\n      {err}"
            )),
            Some(rc) => Err(format!("{step} exited with {rc}; stderr:\n      {err}")),
        }
    };
    let folded_of = |file: &str| -> Result<Folded, String> {
        if out.missing.contains(file) {
            return Err(format!("{file} was not written"));
        }
        if !out.complete.contains(file) {
            return Err(format!("{file} was not printed completely"));
        }
        let f = parse_folded(out.files.get(file).map(Vec::as_slice).unwrap_or_default());
        if f.is_empty() {
            return Err(format!("{file} is empty"));
        }
        Ok(f)
    };
    let total = |f: &Folded| f.values().sum::<u64>();

    // --version inside the VM.
    checks.push(match step_ok("version") {
        Ok(()) => {
            let v = out
                .files
                .get("version.out")
                .and_then(|l| l.first())
                .cloned()
                .unwrap_or_default();
            if v.starts_with("profiler-agent ") {
                pass("version", v)
            } else {
                fail("version", format!("unexpected --version output {v:?}"))
            }
        }
        Err(e) => fail("version", e),
    });

    // The known call tree, in order, with ~75/25 shares.
    checks.push((|| -> Result<CheckResult, String> {
        step_ok("calltree")?;
        let f = folded_of("calltree.folded")?;
        let all = total(&f);
        let a = count_with(&f, &["main", "outer", "hot_a", "work"]);
        let b = count_with(&f, &["main", "outer", "hot_b", "work"]);
        if all < MIN_PID_SAMPLES {
            return Err(format!("only {all} samples in 5 s (at least {MIN_PID_SAMPLES} expected)"));
        }
        if b == 0 || ((a + b) as f64) < 0.8 * all as f64 {
            return Err(format!(
                "main;outer;hot_a;work ({a}) + main;outer;hot_b;work ({b}) cover too little of {all} samples; top stacks: {}",
                top_stacks(&f)
            ));
        }
        let share = a as f64 / (a + b) as f64;
        if !(0.6..=0.9).contains(&share) {
            return Err(format!("hot_a share {share:.3} (of {a}+{b}), expected 0.6-0.9"));
        }
        Ok(pass(
            "calltree",
            format!("{all} samples; main;outer;hot_a;work {a}, main;outer;hot_b;work {b}, hot_a share {share:.2}"),
        ))
    })()
    .unwrap_or_else(|e| fail("calltree", e)));

    // User frames, then the architecture's syscall entry, then only kernel frames.
    checks.push((|| -> Result<CheckResult, String> {
        step_ok("syscalls")?;
        let f = folded_of("syscalls.folded")?;
        let all = total(&f);
        let entry = arch.syscall_entry();
        let through: u64 = f
            .iter()
            .filter(|(s, _)| {
                let user = s.iter().position(|x| x == "raw_read");
                let kernel = s.iter().position(|x| x == entry);
                let first_k = s.iter().position(|x| x.ends_with("_[k]"));
                matches!((user, kernel, first_k), (Some(u), Some(k), Some(fk)) if u < fk && fk <= k)
                    && has_window(s, &["main", "read_zeroes", "raw_read"])
                    && s[first_k.unwrap_or_default()..].iter().all(|x| x.ends_with("_[k]"))
            })
            .map(|(_, c)| c)
            .sum();
        if all < MIN_PID_SAMPLES {
            return Err(format!("only {all} samples in 5 s (at least {MIN_PID_SAMPLES} expected)"));
        }
        if (through as f64) < 0.5 * all as f64 {
            return Err(format!(
                "{through} of {all} samples show main;read_zeroes;raw_read;…;{entry};… (expected > 50%); top stacks: {}",
                top_stacks(&f)
            ));
        }
        let example = f
            .iter()
            .filter(|(s, _)| s.iter().any(|x| x == entry))
            .max_by_key(|(_, c)| **c)
            .map(|(s, _)| s.join(";"))
            .unwrap_or_default();
        Ok(pass(
            "syscalls",
            format!("{through} of {all} samples go main;read_zeroes;raw_read → {entry} → kernel; e.g. {example}"),
        ))
    })()
    .unwrap_or_else(|e| fail("syscalls", e)));

    // Node-wide, with calltree and syscalls both busy: each stack starts with its process's name.
    checks.push(
        (|| -> Result<CheckResult, String> {
            step_ok("node")?;
            let f = folded_of("node.folded")?;
            let all = total(&f);
            let of = |process: &str, window: &[&str]| -> u64 {
                f.iter()
                    .filter(|(s, _)| {
                        s.first().is_some_and(|p| p == process) && has_window(s, window)
                    })
                    .map(|(_, c)| c)
                    .sum()
            };
            let calltree = of("calltree", &["main", "outer"]);
            let syscalls = of("syscalls", &["main", "read_zeroes"]);
            let processes: BTreeSet<&str> = f
                .keys()
                .filter_map(|s| s.first().map(String::as_str))
                .collect();
            if calltree < 50 || syscalls < 50 {
                return Err(format!(
                    "{calltree} samples calltree;…;main;outer;… and {syscalls} syscalls;…;main;read_zeroes;… \
                     of {all} (expected >= 50 each); first frames seen: {processes:?}"
                ));
            }
            Ok(pass(
                "node-wide",
                format!(
                    "{all} samples: calltree;…;main;outer;… {calltree}, syscalls;…;main;read_zeroes;… {syscalls}; first frames: {processes:?}"
                ),
            ))
        })()
        .unwrap_or_else(|e| fail("node-wide", e)),
    );

    // Unprivileged: one `error:` line naming CAP_BPF, a non-zero exit, no panic.
    checks.push(
        (|| -> Result<CheckResult, String> {
            let rc = *out
                .rc
                .get("unprivileged")
                .ok_or("the unprivileged run never finished")?;
            let err = out
                .files
                .get("unprivileged.err")
                .cloned()
                .unwrap_or_default();
            let lines: Vec<&String> = err.iter().filter(|l| !l.trim().is_empty()).collect();
            if rc == 0 {
                return Err(format!(
                    "exit status 0 without privileges; stderr {lines:?}"
                ));
            }
            if rc >= 124 {
                return Err(format!(
                    "exit status {rc} (timeout or signal); stderr {lines:?}"
                ));
            }
            if err.iter().any(|l| l.contains("panicked")) {
                return Err(format!("the agent panicked: {lines:?}"));
            }
            match lines.as_slice() {
                [line] if line.starts_with("error:") && line.contains("CAP_BPF") => {
                    Ok(pass("unprivileged", format!("exit {rc}: {line}")))
                }
                _ => Err(format!(
                    "expected exactly one `error:` line mentioning CAP_BPF, got {lines:?}"
                )),
            }
        })()
        .unwrap_or_else(|e| fail("unprivileged", e)),
    );

    checks.push(if out.end {
        pass(
            "complete",
            format!("/init reported END; guest notes: {}", out.notes.join("; ")),
        )
    } else if boot.timed_out {
        fail(
            "complete",
            format!(
                "no KALYPSO|END within the {} s timeout; last console lines:\n    {}",
                timeout.as_secs(),
                tail()
            ),
        )
    } else {
        fail(
            "complete",
            format!(
                "the VM stopped ({:?}) before KALYPSO|END; last console lines:\n    {}",
                boot.exit,
                tail()
            ),
        )
    });
    checks
}

fn top_stacks(f: &Folded) -> String {
    let mut v: Vec<_> = f.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .take(3)
        .map(|(s, c)| format!("{} {c}", s.join(";")))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    fn boot_of(console: &[String], timed_out: bool) -> Boot {
        Boot {
            lines: console.to_vec(),
            kvm: false,
            kvm_stuck: false,
            timed_out,
            to_begin: Some(Duration::from_secs(3)),
            to_end: None,
            wall: Duration::from_secs(30),
            exit: None,
        }
    }

    const GOOD: &str = "\
[    1.0] some kernel line
KALYPSO|BEGIN|6.1.0-56-arm64|aarch64|2|2.10
KALYPSO|START|version|2.2
KALYPSO|RC|version|0|2.3
KALYPSO|EOF|version.err
KALYPSO|F|version.out|profiler-agent 0.1.0
KALYPSO|EOF|version.out
KALYPSO|RC|calltree|0|8.0
KALYPSO|F|calltree.err|wrote /tmp/c.folded (Folded): 495 samples in 5.0 s (99.0/s; 495 expected for one busy thread), 2 distinct stacks, agent CPU 0.50 s
KALYPSO|EOF|calltree.err
KALYPSO|F|calltree.folded|_start;__libc_start_main;main;outer;hot_a;work 370
KALYPSO|F|calltree.folded|_start;__libc_start_main;main;outer;hot_b;work 125
KALYPSO|EOF|calltree.folded
KALYPSO|RC|unprivileged|1|9.0
KALYPSO|F|unprivileged.err|error: not permitted to load the eBPF sampler: run as root, or grant CAP_BPF and CAP_PERFMON
KALYPSO|EOF|unprivileged.err
KALYPSO|RC|node|0|13.0
KALYPSO|F|node.folded|calltree;main;outer;hot_a;work 200
KALYPSO|F|node.folded|syscalls;main;read_zeroes;raw_read;el0_svc_[k] 250
KALYPSO|F|node.folded|profiler-agent;main;poll_[k] 3
KALYPSO|EOF|node.folded
KALYPSO|RC|syscalls|0|19.0
KALYPSO|F|syscalls.folded|main;read_zeroes;raw_read;el0t_64_sync_[k];el0_svc_[k];invoke_syscall_[k];read_zero_[k] 400
KALYPSO|F|syscalls.folded|main;read_zeroes;raw_read 50
KALYPSO|EOF|syscalls.folded
KALYPSO|END|19.5
";

    #[test]
    fn a_good_report_passes_every_check() {
        let console = lines(GOOD);
        let out = parse_console(&console);
        let checks = check(
            Arch::Aarch64,
            &out,
            &boot_of(&console, false),
            Duration::from_secs(60),
        );
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        assert_eq!(checks.len(), 7);
        assert_eq!(
            sample_rates(&out),
            vec![("calltree".into(), 495, 5.0, 99.0)]
        );
    }

    #[test]
    fn wrong_shares_missing_kernel_frames_and_a_panic_fail_by_name() {
        let bad = GOOD
            .replace("hot_b;work 125", "hot_b;work 370")
            .replace("el0_svc_[k]", "el0_svc")
            .replace("|error: not permitted", "|thread 'main' panicked at src/bpf.rs\nKALYPSO|F|unprivileged.err|error: not permitted");
        let console = lines(&bad);
        let checks = check(
            Arch::Aarch64,
            &parse_console(&console),
            &boot_of(&console, false),
            Duration::from_secs(60),
        );
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(
            failed,
            ["calltree", "syscalls", "unprivileged"],
            "{checks:#?}"
        );
    }

    #[test]
    fn node_wide_stacks_without_process_names_fail() {
        // What a node-wide profile of a single process looks like: no name prefix.
        let bad = GOOD
            .replace("|calltree;main", "|[unknown] libc.so.6+0x2724a;main")
            .replace("|syscalls;main", "|[unknown] libc.so.6+0x2724a;main");
        let console = lines(&bad);
        let checks = check(
            Arch::Aarch64,
            &parse_console(&console),
            &boot_of(&console, false),
            Duration::from_secs(60),
        );
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(failed, ["node-wide"], "{checks:#?}");
    }

    #[test]
    fn a_vm_that_never_reports_fails_boot() {
        let console = lines("[    0.0] Booting Linux\n[    1.0] Run /init as init process");
        let mut boot = boot_of(&console, true);
        boot.to_begin = None;
        let checks = check(
            Arch::X86_64,
            &parse_console(&console),
            &boot,
            Duration::from_secs(60),
        );
        assert_eq!(checks.len(), 1);
        assert!(
            !checks[0].ok && checks[0].detail.contains("timeout"),
            "{checks:#?}"
        );
    }

    #[test]
    fn a_vm_that_stops_mid_run_fails_complete_and_the_missing_steps() {
        let cut: String = GOOD.lines().take(9).map(|l| format!("{l}\n")).collect();
        let console = lines(&cut);
        let checks = check(
            Arch::Aarch64,
            &parse_console(&console),
            &boot_of(&console, false),
            Duration::from_secs(60),
        );
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(
            failed,
            [
                "calltree",
                "syscalls",
                "node-wide",
                "unprivileged",
                "complete"
            ]
        );
    }

    #[test]
    fn kernel_dependency_is_the_versioned_package() {
        let arm = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n";
        assert_eq!(
            parse_kernel_dependency(arm).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        let amd = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_kernel_dependency(amd).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
    }

    #[test]
    fn newc_has_aligned_entries_parents_first_and_a_trailer() {
        let mut fs = Cpio::default();
        fs.add("opt/kalypso/x", Node::File(b"abc".to_vec(), 0o755));
        fs.add("dev/console", Node::CharDev(5, 1));
        let img = fs.to_newc();
        assert_eq!(img.len() % 4, 0);
        let names: Vec<String> = {
            let mut names = Vec::new();
            let mut at = 0;
            while at < img.len() {
                assert_eq!(&img[at..at + 6], b"070701");
                let field = |i: usize| {
                    usize::from_str_radix(
                        std::str::from_utf8(&img[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(),
                        16,
                    )
                    .unwrap()
                };
                let (size, namesize) = (field(6), field(11));
                let name = std::str::from_utf8(&img[at + 110..at + 110 + namesize - 1])
                    .unwrap()
                    .to_string();
                at = (at + 110 + namesize).next_multiple_of(4);
                at = (at + size).next_multiple_of(4);
                let done = name == "TRAILER!!!";
                names.push(name);
                if done {
                    break;
                }
            }
            names
        };
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "opt",
                "opt/kalypso",
                "opt/kalypso/x",
                "TRAILER!!!"
            ]
        );
    }
}
