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

/// The GNU triplet of a Rust target we cross-compile for (the prefix of its gcc and binutils).
fn gnu_triplet(target: &str) -> Result<&'static str> {
    Ok(match target {
        "aarch64-unknown-linux-gnu" => "aarch64-linux-gnu",
        "x86_64-unknown-linux-gnu" => "x86_64-linux-gnu",
        other => bail!("unsupported target {other}"),
    })
}

/// Cross-compiling uses Debian's multiarch std for the target (rustup may not download one) and
/// the matching gcc as linker; `cargo xtask setup --target T` installs both. Where rustup already
/// has the target's std, rustup's compiler is used instead.
pub(crate) fn cross_env(cmd: &mut Command, target: &str) -> Result<()> {
    let triplet = gnu_triplet(target)?;
    let linker = format!("{triplet}-gcc");
    let target_var = target.to_uppercase().replace('-', "_");
    if !setup::command_exists(&linker) {
        bail!("{linker} not found: run `cargo xtask setup --target {target}`");
    }
    // The linker, and the C compiler and archiver for any crate that builds C code (cc-rs reads
    // CC_<target> / AR_<target>), all for the target, not the host.
    let cc_var = target.replace('-', "_");
    cmd.env(format!("CC_{cc_var}"), &linker)
        .env(format!("AR_{cc_var}"), format!("{triplet}-ar"));
    let linker_var = format!("CARGO_TARGET_{target_var}_LINKER");
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
        // Debian's compiler, whose std for the target `libstd-rust-web-dev:<arch>` provides.
        cmd.env("RUSTC", "/usr/bin/rustc")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC_WRAPPER");
    }
    cmd.env(linker_var, &linker);
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
