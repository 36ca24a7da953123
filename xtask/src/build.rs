//! `cargo xtask build` and `cargo xtask run`: the eBPF object, then the agent that embeds it.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{ebpf, setup};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Optimised build.
    #[arg(long)]
    pub release: bool,
    /// Cross-compile for this target (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu).
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(clap::Args)]
pub struct RunOptions {
    /// Arguments for profiler-agent, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// Builds the agent and returns the path of its binary.
pub fn build(opts: &Options) -> Result<PathBuf> {
    ebpf::build(&ebpf::Options::default())?;
    let root = setup::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["build", "--package", "profiler-agent"]);
    if opts.release {
        cmd.arg("--release");
    }
    let profile_dir = if opts.release { "release" } else { "debug" };
    let binary = match opts.target.as_deref() {
        None => root.join("target").join(profile_dir).join("profiler-agent"),
        Some(target) => {
            cmd.args(["--target", target]);
            if target != host_target() {
                cross_env(&mut cmd, target)?;
            }
            root.join("target")
                .join(target)
                .join(profile_dir)
                .join("profiler-agent")
        }
    };
    setup::run_checked(&mut cmd)?;
    eprintln!("agent: {}", binary.display());
    Ok(binary)
}

/// Cross-compiling uses Debian's multiarch std for the target (rustup may not download one) and
/// the matching gcc as linker; `cargo xtask setup --target T` installs both.
fn cross_env(cmd: &mut Command, target: &str) -> Result<()> {
    let (linker_var, linker) = match target {
        "aarch64-unknown-linux-gnu" => (
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        ),
        "x86_64-unknown-linux-gnu" => (
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
            "x86_64-linux-gnu-gcc",
        ),
        other => bail!("unsupported target {other}"),
    };
    if !setup::command_exists(linker) {
        bail!("{linker} not found: run `cargo xtask setup --target {target}`");
    }
    let std_dir = PathBuf::from("/usr/lib/rustlib").join(target);
    let rustup_std = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_dir());
    if rustup_std.is_none() {
        if !std_dir.is_dir() {
            bail!("no Rust std for {target}: run `cargo xtask setup --target {target}`");
        }
        cmd.env("RUSTC", "/usr/bin/rustc")
            .env_remove("RUSTUP_TOOLCHAIN");
        cmd.env("CARGO", "/usr/bin/cargo");
    }
    cmd.env(linker_var, linker);
    Ok(())
}

pub fn run(opts: &RunOptions) -> Result<()> {
    let binary = build(&Options {
        release: true,
        target: None,
    })?;
    let status = Command::new(&binary)
        .args(&opts.args)
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
