//! `cargo xtask setup`: installs build and test prerequisites on Debian/Ubuntu. Idempotent: each
//! step checks first and does nothing when its piece is already there.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod go;
pub use go::{go_toolchains, install_go_toolchains};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Also install what building for this target needs (x86_64-unknown-linux-gnu or
    /// aarch64-unknown-linux-gnu): the cross linker and std when it is not the host's own.
    #[arg(long)]
    pub target: Option<String>,
    /// Also install the tools the test suite uses (perf, gcc, Go 1.19-1.23, Python and npm
    /// packages).
    #[arg(long)]
    pub test_tools: bool,
}

pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages for building the eBPF object: a rustc with its std source, and the LLVM that
/// bpf-linker links against.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "gcc",
];
const TEST_PACKAGES: &[&str] = &["linux-perf", "python3", "python3-venv", "procps"];
/// Only when no `node` is on PATH already (many machines have a newer one than Debian's).
const NODE_PACKAGES: &[&str] = &["nodejs", "npm"];
/// Independent readers the tests check our output with: Google's pprof format via the npm
/// `pprof-format` decoder, OTLP via the official Python `opentelemetry-proto` package.
const NPM_TEST_PACKAGES: &[&str] = &["pprof-format@2.3.2"];
const PIP_TEST_PACKAGES: &[&str] = &[
    "opentelemetry-proto==1.45.2",
    "grpcio==1.85.3",
    "pytest==9.2.0",
    // The Pyroscope rules checker reads the chart's collector pipeline from values.yaml.
    "PyYAML==6.0.3",
];
/// What cross-building for a foreign target needs, per (host, target) architecture pair:
/// Debian's std for the target (the same version as `rustc-web`, which apt enforces for a
/// Multi-Arch: same package), the cross gcc as linker, its binutils and the target's libc.
/// Building for the host's own architecture needs none of it: on an arm64 host
/// `gcc-aarch64-linux-gnu` does not even exist, since gcc is that compiler there.
fn cross_packages(host: &str, target: &str) -> Result<&'static [&'static str]> {
    Ok(match (host, target) {
        (h, t) if h == t => &[],
        ("x86_64", "aarch64") => &[
            "libstd-rust-web-dev:arm64",
            "gcc-aarch64-linux-gnu",
            "binutils-aarch64-linux-gnu",
            "libc6-dev-arm64-cross",
        ],
        ("aarch64", "x86_64") => &[
            "libstd-rust-web-dev:amd64",
            "gcc-x86-64-linux-gnu",
            "binutils-x86-64-linux-gnu",
            "libc6-dev-amd64-cross",
        ],
        _ => bail!("no set-up known for building {target} code on a {host} host"),
    })
}

/// The architecture this set-up runs on (xtask is always built for the host).
pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    }
}

/// The architecture of a Rust target we build for.
fn target_arch(target: &str) -> Result<&'static str> {
    Ok(match target {
        "x86_64-unknown-linux-gnu" => "x86_64",
        "aarch64-unknown-linux-gnu" => "aarch64",
        other => bail!(
            "no set-up known for target {other} (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu)"
        ),
    })
}

/// `cargo xtask vm-test --arch aarch64`: qemu-system to boot Debian's arm64 kernel, qemu-user for
/// the fast `--version`/`--help` smoke test on the host. Kernel and busybox are `apt-get download`ed
/// into target/vm-cache, never installed.
const VM_PACKAGES_ARM64: &[&str] = &["qemu-system-arm", "qemu-user-static", "gzip"];
/// `cargo xtask vm-test --arch x86_64` (on an x86_64 host: the host's gcc and libraries).
const VM_PACKAGES_AMD64: &[&str] = &["qemu-system-x86", "gcc", "binutils", "gzip"];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker; it may not be on PATH yet.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with `$CARGO_HOME/bin` appended, for commands that need cargo-installed tools.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    let bin = cargo_bin_dir();
    if !paths.contains(&bin) {
        paths.push(bin);
    }
    std::env::join_paths(paths).expect("PATH entries contain no separator")
}

pub fn command_exists(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null 2>&1")])
        .env("PATH", path_with_cargo_bin())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !command_exists("apt-get") {
        bail!(
            "missing packages {missing:?} and no apt-get: install them with your package manager"
        );
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    eprintln!("installing {missing:?}");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_checked(&mut cmd)
    };
    // A foreign architecture's packages (`libstd-rust-web-dev:arm64`) need it known to dpkg.
    let foreign: BTreeSet<&str> = missing
        .iter()
        .filter_map(|p| p.split_once(':'))
        .map(|(_, a)| a)
        .collect();
    for arch in foreign {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("dpkg"));
        if !sudo.is_empty() {
            cmd.arg("dpkg");
        }
        cmd.args(["--add-architecture", arch]);
        run_checked(&mut cmd)?;
    }
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing);
    apt(&args)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn bpf_linker_ok() -> bool {
    Command::new(cargo_bin_dir().join("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn install_bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    eprintln!("installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes a few minutes)");
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ])
    .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    for var in ["RUSTC", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    run_checked(&mut cmd)
}

pub fn run(opts: &Options) -> Result<()> {
    apt_install(BUILD_PACKAGES)?;
    install_bpf_linker()?;
    if let Some(target) = opts.target.as_deref() {
        apt_install(cross_packages(host_arch(), target_arch(target)?)?)?;
    }
    if opts.test_tools {
        apt_install(TEST_PACKAGES)?;
        if !command_exists("node") || !command_exists("npm") {
            apt_install(NODE_PACKAGES)?;
        }
        install_test_readers()?;
        install_go_toolchains()?;
    }
    eprintln!("set-up complete");
    Ok(())
}

/// Installs what `cargo xtask vm-test` needs to boot a kernel of this Debian architecture.
pub fn install_vm_tools(deb_arch: &str) -> Result<()> {
    match deb_arch {
        "arm64" => apt_install(VM_PACKAGES_ARM64),
        "amd64" => apt_install(VM_PACKAGES_AMD64),
        other => bail!("no VM set-up known for Debian architecture {other}"),
    }
}

/// Where the test suite's own tools live: `target/test-tools/{venv,node_modules,go}`.
pub fn test_tools_dir() -> PathBuf {
    workspace_root().join("target/test-tools")
}

fn install_test_readers() -> Result<()> {
    let dir = test_tools_dir();
    std::fs::create_dir_all(&dir)?;
    let stamp = dir.join("installed.txt");
    let wanted = format!("{NPM_TEST_PACKAGES:?} {PIP_TEST_PACKAGES:?}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    let venv = dir.join("venv");
    if !venv.join("bin/python").exists() {
        run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run_checked(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PIP_TEST_PACKAGES),
    )?;
    run_checked(
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(NPM_TEST_PACKAGES),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_pieces_depend_on_the_host_as_well_as_the_target() {
        // An arm64 build host (an Apple-silicon laptop's Linux VM) building the arm64 image
        // needs nothing: there is no gcc-aarch64-linux-gnu in Debian's arm64 archive.
        assert!(cross_packages("aarch64", "aarch64").unwrap().is_empty());
        assert!(cross_packages("x86_64", "x86_64").unwrap().is_empty());
        // ...and for the amd64 image, the x86_64 cross toolchain and Debian's amd64 std.
        let to_amd64 = cross_packages("aarch64", "x86_64").unwrap();
        assert!(to_amd64.contains(&"gcc-x86-64-linux-gnu"));
        assert!(to_amd64.contains(&"libstd-rust-web-dev:amd64"));
        let to_arm64 = cross_packages("x86_64", "aarch64").unwrap();
        assert!(to_arm64.contains(&"gcc-aarch64-linux-gnu"));
        assert!(to_arm64.contains(&"libstd-rust-web-dev:arm64"));
        assert!(target_arch("riscv64gc-unknown-linux-gnu").is_err());
    }
}
