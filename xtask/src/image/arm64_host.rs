//! `cargo xtask arm64-host-test`: the set-up path of an arm64 build host (an Apple-silicon Mac's
//! Linux VM building the image), in an arm64 Debian bookworm container run under qemu-user
//! (binfmt) on this machine. Inside it, `cargo xtask setup --target T` runs for both targets: for
//! aarch64 (the host's own) it must ask apt for no cross pieces at all, for x86_64 it must install
//! the x86_64 cross toolchain and Debian's amd64 std; then a small program is cross-linked for
//! x86_64 there and run here, on the x86_64 machine it was built for.
//!
//! Everything runs emulated, which is why this is not part of `cargo xtask test`: measured times
//! are in docs/image.md.
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use super::base;
use crate::setup::{self, workspace_root};

#[derive(clap::Args, Default)]
pub struct Options {}

/// Runs in the container, as root, with the workspace at /src and a scratch volume at /work.
const SCRIPT: &str = r#"
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive CARGO_HOME=/work/cargo-home CARGO_TARGET_DIR=/work/target
echo "arm64-host: uname -m = $(uname -m)"
# What a fresh arm64 machine has before `cargo xtask setup`: a cargo to build xtask with.
apt-get update -q
apt-get install -y -q --no-install-recommends cargo-web rustc-web gcc libc6-dev ca-certificates >/dev/null
cd /src
for target in aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu; do
  start=$(date +%s)
  cargo xtask setup --target "$target"
  echo "arm64-host: setup --target $target took $(( $(date +%s) - start )) s"
done
for pkg in gcc-x86-64-linux-gnu binutils-x86-64-linux-gnu libc6-dev-amd64-cross libstd-rust-web-dev:amd64; do
  dpkg-query -W -f='arm64-host: installed ${Package}:${Architecture} ${Version}\n' "$pkg"
done
if apt-cache show gcc-aarch64-linux-gnu >/dev/null 2>&1; then
  echo "arm64-host: gcc-aarch64-linux-gnu exists in this archive"
fi
# A small cross-link for x86_64 with Debian's compiler and amd64 std, as `cargo xtask build
# --target x86_64-unknown-linux-gnu` sets it up.
mkdir -p /work/hello/src
cat > /work/hello/Cargo.toml <<'EOF'
[package]
name = "hello-x86"
version = "0.1.0"
edition = "2021"
[workspace]
EOF
echo 'fn main() { println!("built on {} for {}", env!("BUILD_ARCH"), std::env::consts::ARCH); }' > /work/hello/src/main.rs
cd /work/hello
start=$(date +%s)
BUILD_ARCH="$(uname -m)" RUSTC=/usr/bin/rustc CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
  cargo build -q --release --target x86_64-unknown-linux-gnu
echo "arm64-host: cross-link took $(( $(date +%s) - start )) s"
"#;

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
    let _ = std::fs::remove_dir_all(work.join("hello"));
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
    .arg(format!("{}:/src", workspace_root().display()))
    .arg("--volume")
    .arg(format!("{}:/work", work.display()));
    if std::path::Path::new(super::engine::HOST_CA_BUNDLE).is_file() {
        // Not over the container's own file: ca-certificates rewrites that when it installs.
        cmd.args([
            "--volume",
            "/etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro",
            "--env",
            "CARGO_HTTP_CAINFO=/host-ca.crt",
        ]);
    }
    cmd.args([&image, "bash", "-c", SCRIPT]);
    eprintln!("arm64-host: podman run with {}", ulimits.join(" "));
    let out = cmd.output().context("running podman")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("arm64-host:"))
        .collect();
    for l in &lines {
        eprintln!("{l}");
    }
    ensure!(
        out.status.success(),
        "the arm64 container failed:\n{}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
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
        !lines
            .iter()
            .any(|l| l.contains("gcc-aarch64-linux-gnu exists")),
        "Debian's arm64 archive has gcc-aarch64-linux-gnu after all: the premise changed"
    );
    let binary = work.join("hello/target/x86_64-unknown-linux-gnu/release/hello-x86");
    let ran = Command::new(&binary)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let said = String::from_utf8_lossy(&ran.stdout);
    ensure!(
        said.trim() == "built on aarch64 for x86_64",
        "the cross-linked program said {said:?}"
    );
    eprintln!(
        "arm64-host: the x86_64 program linked on arm64 runs here: {}; whole test {:.0} s",
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
