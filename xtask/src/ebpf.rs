//! Building the eBPF object. It needs `-Z build-std=core` with the std source of the *same*
//! compiler: rustup nightly with `rust-src` where a user has it, else Debian's `rustc-web` (1.96)
//! with `rust-web-src`; bpf-linker links it.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::setup::{self, command_exists, workspace_root};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build with the debug profile (the release profile is the default; both optimise).
    #[arg(long)]
    pub debug: bool,
}

/// Which compiler builds the object.
enum Toolchain {
    RustupNightly,
    Debian,
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

fn pick_toolchain() -> Result<Toolchain> {
    if let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        && out.status.success()
    {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
            return Ok(Toolchain::RustupNightly);
        }
    }
    if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_STD_SRC).is_dir() {
        return Ok(Toolchain::Debian);
    }
    bail!(
        "no compiler that can build the eBPF object: run `cargo xtask setup` (installs Debian's \
         rustc-web and rust-web-src), or `rustup toolchain install nightly --component rust-src`"
    )
}

/// Builds the object and returns its path (`target/bpf/profiler-ebpf.o`).
pub fn build(opts: &Options) -> Result<PathBuf> {
    if !command_exists("bpf-linker") {
        bail!(
            "bpf-linker not found on PATH: run `cargo xtask setup` (installs bpf-linker 0.13 against LLVM 22)"
        );
    }
    let root = workspace_root();
    let crate_dir = root.join("profiler-ebpf");
    let profile = if opts.debug { "dev" } else { "release" };
    let toolchain = pick_toolchain()?;
    let mut cmd = match toolchain {
        Toolchain::RustupNightly => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", "nightly", "cargo"]);
            cmd
        }
        Toolchain::Debian => Command::new(DEBIAN_CARGO),
    };
    // What the outer (stable) cargo set for this process must not leak into the inner build.
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    if matches!(toolchain, Toolchain::Debian) {
        // Debian's compiler is a stable release: RUSTC_BOOTSTRAP lets it take `-Z build-std`.
        cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.env("PATH", setup::path_with_cargo_bin())
        .env("CARGO_TARGET_DIR", crate_dir.join("target"))
        .current_dir(&crate_dir)
        .args(["build", "--profile", profile]);
    let status = cmd.status().context("running cargo for the eBPF crate")?;
    if !status.success() {
        bail!("building the eBPF crate failed ({status})");
    }
    let dir = if opts.debug { "debug" } else { "release" };
    let built = crate_dir
        .join("target/bpfel-unknown-none")
        .join(dir)
        .join("profiler-ebpf");
    let out_dir = root.join("target/bpf");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("profiler-ebpf.o");
    // Written only when it changed: a new mtime would make cargo relink the agent that embeds it.
    let fresh = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if std::fs::read(&out).ok().as_deref() != Some(fresh.as_slice()) {
        std::fs::write(&out, &fresh).with_context(|| format!("writing {}", out.display()))?;
    }
    eprintln!("eBPF object: {}", out.display());
    Ok(out)
}
