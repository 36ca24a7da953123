//! `cargo xtask test`: everything CI runs, in order, after installing what is missing.
use std::process::Command;

use anyhow::{Result, bail};

use crate::{ebpf, setup};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Skip the chart and Dockerfile validation suite.
    #[arg(long)]
    pub no_charts: bool,
    /// Skip booting the arm64 and x86_64 VMs (`cargo xtask vm-test`).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip building the container image and running it as the DaemonSet does (`cargo xtask image-test`).
    #[arg(long)]
    pub no_image: bool,
    /// Skip the fuzz targets (`cargo xtask fuzz`).
    #[arg(long)]
    pub no_fuzz: bool,
    /// Seconds each fuzz target runs (its regressions and seeds are always replayed first).
    #[arg(long, default_value_t = 10)]
    pub fuzz_seconds: u64,
}

pub fn run(opts: &Options) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "the test suite loads BPF programs into the kernel: run it as root (`sudo -E cargo xtask test`)"
        );
    }
    setup::run(&setup::Options {
        target: None,
        test_tools: true,
    })?;
    ebpf::build(&ebpf::Options::default())?;
    let root = setup::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Root-only tests fail instead of skipping here; one test at a time, since profiles taken
    // side by side would share the two CPUs and skew each other's shares.
    setup::run_checked(
        Command::new(&cargo)
            .current_dir(&root)
            .env("KALYPSO_REQUIRE_ROOT_TESTS", "1")
            .args(["test", "--workspace", "--release", "--", "--test-threads=1"]),
    )?;
    // The agent on Debian's 6.1 arm64 and x86_64 kernels, booted under qemu.
    if !opts.no_vm {
        crate::vm::run(&crate::vm::Options::default())?;
    }
    // The image built by buildah from locally made bases, run under podman as the rendered
    // DaemonSet specifies, profiling another container (docs/image.md).
    if !opts.no_image {
        crate::image::e2e::run(&crate::image::e2e::Options::default())?;
    }
    // The independent OTLP receiver and checker the agent's tests rely on, tested on their own.
    setup::run_checked(
        Command::new(setup::test_tools_dir().join("venv/bin/python"))
            .current_dir(&root)
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/readers",
            ]),
    )?;
    if !opts.no_fuzz {
        crate::fuzz::run(&crate::fuzz::Options {
            seconds: opts.fuzz_seconds,
            sanitizer: None,
            targets: Vec::new(),
        })?;
    }
    let charts = root.join("tests/charts/run.sh");
    if !opts.no_charts && charts.exists() {
        setup::run_checked(Command::new("bash").arg(&charts).current_dir(&root))?;
    }
    Ok(())
}
