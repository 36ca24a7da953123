//! `cargo xtask vm-test`: the agent on Debian's own kernels, booted under qemu-system.
//!
//! For each architecture (aarch64 under TCG; x86_64 with KVM where it works, else TCG) this
//! 1. builds the agent for it (cross-compiled for a foreign architecture) and, for aarch64, runs
//!    its `--version` and `--help` under qemu-user on the host (a fast smoke test);
//! 2. `apt-get download`s Debian's kernel package (what `linux-image-<arch>` depends on) and
//!    `busybox-static` for that architecture into `target/vm-cache/<arch>/`, unpacked there with
//!    dpkg (never into /), and cached between runs;
//! 3. compiles the test workloads (`tests/workloads/`) and `tests/vm/dropuid.c` for it, and
//!    cross-builds the Go workload `tests/workloads/go/hot` (stripped, static);
//! 4. writes a gzip'd newc initramfs: busybox, the agent, the workloads, the shared libraries they
//!    need, and `tests/vm/init.sh` as `/init`;
//! 5. boots it with a hard timeout, reads the console, and checks what `/init` printed: the call
//!    tree and its shares, kernel frames under user frames for a syscall-heavy workload, node-wide
//!    mode, the unprivileged error, and a stripped Go program's call tree. Any failed check, or a VM that never reports, fails the command with the check's name.
//!
//! The console log of the last run is kept in `target/vm-cache/<arch>/console.log`.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{build, setup};

mod boot;
mod checks;
mod fetch;
mod go;
mod initramfs;

use boot::*;
use checks::*;
use fetch::*;
use go::*;
use initramfs::*;

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
    /// KVM when /dev/kvm opens and KVM has not failed on this host kernel before; TCG when
    /// it does not, or when the KVM guest fails before /init (qemu exits, aborts or hangs).
    Auto,
    /// KVM; fails when the KVM guest does not reach /init within 20 s.
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

/// The workloads compiled into the initramfs: (name, source relative to the workspace, flags).
const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("calltree", "tests/workloads/calltree.c", CFLAGS),
    ("syscalls", "tests/workloads/syscalls.c", CFLAGS),
    ("dropuid", "tests/vm/dropuid.c", CFLAGS),
    ("nofp", "tests/workloads/nofp.c", NOFP_CFLAGS),
];
/// Frame pointers everywhere, leaf functions included.
const CFLAGS: &[&str] = &[
    "-O0",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-pthread",
];
/// Optimised without frame pointers: only .eh_frame tells how to unwind.
const NOFP_CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
];
/// How long a KVM guest may take to reach /init before KVM is declared unusable on this host
/// (nested KVM can hang a guest right after the real-mode kernel setup; it can also make qemu
/// abort at once, which `boot_with_fallback` catches without waiting).
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
    for (name, source, flags) in WORKLOADS {
        let out = bin_dir.join(name);
        setup::run_checked(
            Command::new(arch.tool("gcc"))
                .args(*flags)
                .arg("-o")
                .arg(&out)
                .arg(root.join(source)),
        )?;
        programs.push((name.to_string(), out));
    }
    programs.push((GO_WORKLOAD.into(), build_go_workload(arch, &bin_dir)?));
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

    let kvm_unusable_stamp = root.join("target/vm-cache").join(format!(
        "kvm-unusable-on-{}",
        host_kernel_release().unwrap_or_default()
    ));
    let try_kvm = arch.is_host()
        && match opts.accel {
            Accel::Tcg => false,
            Accel::Kvm => true,
            Accel::Auto => kvm_usable() && !kvm_unusable_stamp.exists(),
        };
    if try_kvm && opts.accel == Accel::Auto {
        eprintln!(
            "vm-test {}: /dev/kvm opens; trying KVM first (TCG if the guest does not reach /init)",
            arch.name()
        );
    } else if arch.is_host() && kvm_unusable_stamp.exists() && opts.accel == Accel::Auto {
        eprintln!(
            "vm-test {}: TCG, since KVM failed here before ({}: {})",
            arch.name(),
            kvm_unusable_stamp.display(),
            std::fs::read_to_string(&kvm_unusable_stamp)
                .unwrap_or_default()
                .trim()
        );
    }
    let log = cache.join("console.log");
    let spec = BootSpec {
        qemu: OsStr::new(arch.qemu()),
        arch,
        kernel: &kernel,
        initrd: &initrd,
        timeout: Duration::from_secs(opts.timeout),
        kvm_probe: KVM_PROBE,
        log: &log,
    };
    let boot = boot_with_fallback(&spec, try_kvm, opts.accel, &kvm_unusable_stamp)?;
    let timeout = spec.timeout;
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
KALYPSO|RC|nofp|0|25.0
KALYPSO|F|nofp.folded|_start;__libc_start_main;main;run;spin 240
KALYPSO|F|nofp.folded|_start;__libc_start_main;main;run;level_a;level_b;qsort_r;msort_with_tmp;compare_keys;mix 230
KALYPSO|F|nofp.folded|mix 5
KALYPSO|EOF|nofp.folded
KALYPSO|RC|nofp_fp|0|29.0
KALYPSO|F|nofp_fp.folded|spin 150
KALYPSO|F|nofp_fp.folded|mix 140
KALYPSO|EOF|nofp_fp.folded
KALYPSO|RC|go|0|35.0
KALYPSO|F|go.err|wrote /tmp/g.folded (Folded): 490 samples in 5.0 s (98.0/s; 495 expected for one busy thread), 3 distinct stacks, agent CPU 0.50 s
KALYPSO|EOF|go.err
KALYPSO|F|go.folded|runtime.main;main.main;main.hotA;main.leafWork 360
KALYPSO|F|go.folded|runtime.main;main.main;main.hotB;main.leafWork 122
KALYPSO|F|go.folded|runtime.main;main.main;main.hotA 8
KALYPSO|EOF|go.folded
KALYPSO|END|35.5
";

    /// The check names that fail, with `go-calltree` where the Go report fails too.
    fn with_go(mut names: Vec<&'static str>, go_fails: bool) -> Vec<&'static str> {
        if go_fails {
            let at = names
                .iter()
                .position(|n| *n == "unprivileged")
                .unwrap_or(names.len());
            names.insert(at, "go-calltree");
        }
        names
    }

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
        assert_eq!(checks.len(), 9);
        assert_eq!(
            sample_rates(&out),
            vec![
                ("calltree".into(), 495, 5.0, 99.0),
                ("go".into(), 490, 5.0, 98.0)
            ]
        );
    }

    #[test]
    fn wrong_shares_missing_kernel_frames_and_a_panic_fail_by_name() {
        let bad = GOOD
            .replace("hot_b;work 125", "hot_b;work 370")
            .replace("el0_svc_[k]", "el0_svc")
            .replace("|error: not permitted", "|thread 'main' panicked at src/bpf.rs\nKALYPSO|F|unprivileged.err|error: not permitted")
            .replace("|spin 150", "|_start;main;run;spin 150");
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
            with_go(
                vec!["calltree", "syscalls", "nofp-unwind", "unprivileged"],
                false
            ),
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
            with_go(
                vec![
                    "calltree",
                    "syscalls",
                    "node-wide",
                    "nofp-unwind",
                    "unprivileged",
                    "complete"
                ],
                true
            )
        );
    }

    #[test]
    fn go_calltree_wants_three_to_one_with_the_frameless_leafs_caller() {
        let ok = parse_console(&lines(GOOD));
        let check = go_calltree(&ok);
        assert!(check.ok, "{check:?}");
        // What a frame-pointer walk gives: leafWork pushes no frame, so hotA/hotB are skipped.
        let fp_walk = GOOD
            .replace(
                "main.main;main.hotA;main.leafWork",
                "main.main;main.leafWork",
            )
            .replace(
                "main.main;main.hotB;main.leafWork",
                "main.main;main.leafWork",
            );
        let check = go_calltree(&parse_console(&lines(&fp_walk)));
        assert!(
            !check.ok && check.detail.contains("cover too little"),
            "{check:?}"
        );
        // Unsymbolized (no .symtab, .gopclntab not read): addresses only.
        let unnamed = GOOD
            .replace("main.hotA;main.leafWork", "hot_s+0x8f2a0;hot_s+0x8f1c4")
            .replace("main.hotB;main.leafWork", "hot_s+0x8f2e0;hot_s+0x8f1c4");
        assert!(!go_calltree(&parse_console(&lines(&unnamed))).ok);
        let even = GOOD.replace("main.hotB;main.leafWork 122", "main.hotB;main.leafWork 360");
        let check = go_calltree(&parse_console(&lines(&even)));
        assert!(!check.ok && check.detail.contains("share"), "{check:?}");
        let missing: String = GOOD
            .lines()
            .filter(|l| !l.contains("|go"))
            .map(|l| format!("{l}\n"))
            .collect();
        let check = go_calltree(&parse_console(&lines(&missing)));
        assert!(
            !check.ok && check.detail.contains("never finished"),
            "{check:?}"
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
