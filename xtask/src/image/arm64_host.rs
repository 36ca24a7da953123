//! `cargo xtask arm64-host-test`: the set-up path of an arm64 build host (an Apple-silicon Mac's
//! Linux VM building the image), in an arm64 Debian bookworm container run under qemu-user
//! (binfmt) on this machine. Inside it, `cargo xtask setup --target T` runs for both targets: for
//! aarch64 (the host's own) it must ask apt for no cross pieces at all, for x86_64 it must install
//! the x86_64 cross toolchain and Debian's amd64 std; then the one dependency of the agent that
//! compiles C for its target (ring, at the version Cargo.lock pins) is cross-built for x86_64 there,
//! with the environment `cargo xtask build --target` sets, into a program that is run here, on the
//! x86_64 machine it was built for.
//!
//! xtask itself is cross-compiled for aarch64 here first (the same code; compiling it under
//! emulation took about 25 minutes) and the workspace is mounted at its own path, where the binary
//! looks for it. Everything else runs emulated, which is why this is not part of `cargo xtask test`
//! and the agent's own build is not run in it: measured times are in docs/image.md.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use super::base;
use crate::setup::{self, workspace_root};

#[derive(clap::Args, Default)]
pub struct Options {}

const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// Runs in the container, as root, with the workspace at its own path (read-only), xtask built
/// for aarch64 as $XTASK, ring's locked version as $RING_VERSION and a scratch volume at /work.
const SCRIPT: &str = r#"
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive CARGO_HOME=/work/cargo-home
echo "arm64-host: uname -m = $(uname -m)"
for target in aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu; do
  start=$(date +%s)
  "$XTASK" setup --target "$target"
  echo "arm64-host: setup --target $target took $(( $(date +%s) - start )) s"
  if [ "$target" = aarch64-unknown-linux-gnu ]; then
    # The host's own target: none of the x86_64 cross pieces may be installed.
    cross=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}:${Architecture}\n' 'gcc-*x86-64-linux-gnu' \
      'binutils-x86-64-linux-gnu' 'libc6-dev-amd64-cross' 'libstd-rust-web-dev:amd64' 2>/dev/null \
      | awk '$1 == "ii" {print $2}' | tr '\n' ' ' || true)
    echo "arm64-host: cross pieces after setup for the host's own target: [${cross% }]"
  fi
done
for pkg in gcc-x86-64-linux-gnu binutils-x86-64-linux-gnu libc6-dev-amd64-cross libstd-rust-web-dev:amd64; do
  dpkg-query -W -f='arm64-host: installed ${Package}:${Architecture} ${Version}\n' "$pkg"
done
echo "arm64-host: $("$CARGO_HOME/bin/bpf-linker" --version)"
# ring compiles C and assembly for its target with cc-rs; the environment is the one
# `cargo xtask build --target x86_64-unknown-linux-gnu` sets (xtask/src/build.rs, cross_env).
mkdir -p /work/ring-x86/src
printf '%s\n' '[package]' 'name = "ring-x86"' 'version = "0.1.0"' 'edition = "2021"' \
  '[dependencies]' "ring = \"=$RING_VERSION\"" '[workspace]' > /work/ring-x86/Cargo.toml
cat > /work/ring-x86/src/main.rs <<'RUST'
fn main() {
    let d = ring::digest::digest(&ring::digest::SHA256, b"kalypso");
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    println!("built on {} for {}: {hex}", env!("BUILD_ARCH"), std::env::consts::ARCH);
}
RUST
cd /work/ring-x86
start=$(date +%s)
BUILD_ARCH="$(uname -m)" RUSTC=/usr/bin/rustc \
  CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc AR_x86_64_unknown_linux_gnu=x86_64-linux-gnu-ar \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc CARGO_TARGET_DIR=/work/ring-x86/target \
  /usr/bin/cargo build -q --release --target x86_64-unknown-linux-gnu
echo "arm64-host: cross-build of ring $RING_VERSION took $(( $(date +%s) - start )) s"
"#;

/// xtask cross-compiled for aarch64 on this machine, as `cargo xtask build --target` would.
fn cross_build_xtask() -> Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "xtask",
        "--target",
        AARCH64,
    ]);
    crate::build::cross_env(&mut cmd, AARCH64)?;
    setup::run_checked(&mut cmd)?;
    Ok(root.join("target").join(AARCH64).join("release/xtask"))
}

/// The version of package `name` that Cargo.lock pins.
fn locked_version(name: &str) -> Result<String> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock"))?;
    lock.split("[[package]]")
        .find(|p| p.contains(&format!("name = \"{name}\"\n")))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .with_context(|| format!("{name} is not in Cargo.lock"))
}

pub fn run(_opts: &Options) -> Result<()> {
    if !setup::is_root() {
        bail!("arm64-host-test registers qemu-user with binfmt and runs podman: run it as root");
    }
    let started = Instant::now();
    base::install_tools()?;
    enable_binfmt()?;
    let image = base::ensure_debian("linux/arm64")?;
    let work = super::work_dir().join("arm64-host");
    std::fs::create_dir_all(&work)?;
    let _ = std::fs::remove_dir_all(work.join("ring-x86"));
    let xtask = cross_build_xtask()?;
    let ring = locked_version("ring")?;
    let root = workspace_root();
    let ulimits = super::engine::podman_ulimits(&image)?;
    let mut cmd = Command::new("podman");
    cmd.args([
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        "--runtime",
        "runc",
    ])
    .args(&ulimits)
    .args(["--network", "host"])
    .arg("--volume")
    .arg(format!("{}:{}:ro", root.display(), root.display()))
    .arg("--volume")
    .arg(format!("{}:/work", work.display()))
    .arg("--env")
    .arg(format!("XTASK={}", xtask.display()))
    .arg("--env")
    .arg(format!("RING_VERSION={ring}"));
    if std::path::Path::new(super::engine::HOST_CA_BUNDLE).is_file() {
        // Not over the container's own file: ca-certificates rewrites that when it installs.
        cmd.args([
            "--volume",
            "/etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro",
            "--env",
            "CARGO_HTTP_CAINFO=/host-ca.crt",
        ]);
    }
    let log_path = work.join("container.log");
    cmd.args([&image, "bash", "-c", SCRIPT])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?);
    eprintln!(
        "arm64-host: podman run with {} (the container's stderr: {})",
        ulimits.join(" "),
        log_path.display()
    );
    let mut child = cmd.spawn().context("running podman")?;
    let mut text = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        if line.starts_with("arm64-host:") {
            eprintln!("{line}");
        }
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("arm64-host:"))
        .collect();
    ensure!(
        status.success(),
        "the arm64 container failed ({status}); its output:\n{text}\nits stderr is in {}",
        log_path.display()
    );
    ensure!(
        lines.contains(&"arm64-host: uname -m = aarch64"),
        "the container did not run as aarch64"
    );
    for pkg in ["gcc-x86-64-linux-gnu:arm64", "libstd-rust-web-dev:amd64"] {
        ensure!(
            lines
                .iter()
                .any(|l| l.contains(&format!("installed {pkg}"))),
            "setup --target x86_64 did not install {pkg}"
        );
    }
    ensure!(
        lines.contains(&"arm64-host: cross pieces after setup for the host's own target: []"),
        "setup --target {AARCH64} on an arm64 host installed cross pieces it does not need"
    );
    ensure!(
        lines.iter().any(|l| l.contains("bpf-linker 0.13")),
        "setup did not leave bpf-linker {} in the container",
        setup::BPF_LINKER_VERSION
    );
    let binary = work.join("ring-x86/target/x86_64-unknown-linux-gnu/release/ring-x86");
    let ran = Command::new(&binary)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let said = String::from_utf8_lossy(&ran.stdout);
    // SHA-256 of "kalypso", by the host's coreutils.
    let expected = Command::new("bash")
        .args(["-c", "printf kalypso | sha256sum | cut -d' ' -f1"])
        .output()?;
    let expected = String::from_utf8_lossy(&expected.stdout).trim().to_string();
    ensure!(
        ran.status.success() && said.trim() == format!("built on aarch64 for x86_64: {expected}"),
        "the program cross-built with ring said {said:?} (expected the SHA-256 {expected})"
    );
    eprintln!(
        "arm64-host: the x86_64 program built on arm64 with ring {ring} runs here: {}; whole test {:.0} s",
        said.trim(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// qemu-user-static's binfmt entry, so that arm64 binaries run (podman's --platform needs it).
fn enable_binfmt() -> Result<()> {
    let dir = std::path::Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("status").exists() {
        setup::run_checked(
            Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(dir),
        )?;
    }
    if !dir.join("qemu-aarch64").exists() {
        setup::run_checked(Command::new("update-binfmts").args(["--enable", "qemu-aarch64"]))?;
    }
    ensure!(
        dir.join("qemu-aarch64").exists(),
        "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locked_version_is_read_from_cargo_lock() {
        let ring = locked_version("ring").unwrap();
        assert!(ring.starts_with("0.17."), "{ring}");
        assert!(locked_version("no-such-crate").is_err());
    }
}
