//! `cargo xtask <command>`: the developer commands (set-up, eBPF build, builds, tests, benchmarks).
mod bench;
mod build;
mod ebpf;
mod fuzz;
mod image;
mod setup;
mod test;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Kalypso developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need on Debian/Ubuntu (apt packages, bpf-linker).
    Setup(setup::Options),
    /// Build the eBPF object into target/bpf/.
    BuildEbpf(ebpf::Options),
    /// Build the eBPF object and the agent (optionally cross-compiled).
    Build(build::Options),
    /// Build (release) and run the agent with the given arguments.
    Run(build::RunOptions),
    /// Set up, build, and run the whole test suite (what CI runs).
    Test(test::Options),
    /// Build the fuzz targets in fuzz/ (cargo-fuzz) and run each for a while; fails on a crash.
    Fuzz(fuzz::Options),
    /// Boot Debian's arm64 and amd64 kernels under qemu and check the agent inside (docs/arm64.md).
    VmTest(vm::Options),
    /// Run the performance and accuracy benchmarks (docs/benchmarks.md); needs root.
    Bench(bench::Options),
    /// Build the container image with docker buildx, podman or buildah (docs/image.md).
    Image(image::Options),
    /// Build the image and run it as the rendered DaemonSet specifies, under podman (docs/image.md).
    ImageTest(image::e2e::Options),
    /// Run `setup --target` for both targets in an arm64 container under qemu-user (slow; docs/image.md).
    Arm64HostTest(image::arm64_host::Options),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::BuildEbpf(opts) => ebpf::build(&opts).map(|_| ()),
        Command::Build(opts) => build::build(&opts).map(|_| ()),
        Command::Run(opts) => build::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::Fuzz(opts) => fuzz::run(&opts),
        Command::VmTest(opts) => vm::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
        Command::Image(opts) => image::run(&opts),
        Command::ImageTest(opts) => image::e2e::run(&opts),
        Command::Arm64HostTest(opts) => image::arm64_host::run(&opts),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The Dockerfile builds with these commands: each must be one this CLI accepts.
    #[test]
    fn dockerfile_xtask_commands_parse() {
        let dockerfile = std::fs::read_to_string(crate::setup::workspace_root().join("Dockerfile"))
            .expect("Dockerfile at the workspace root");
        let mut seen = 0;
        for line in dockerfile.lines() {
            for part in line.split("cargo xtask ").skip(1) {
                let part = part.replace("\"$(cat /rust-target)\"", "aarch64-unknown-linux-gnu");
                let words: Vec<String> = part
                    .split_whitespace()
                    .take_while(|w| !matches!(*w, "&&" | "\\"))
                    .map(str::to_owned)
                    .collect();
                let args = std::iter::once("xtask".to_string()).chain(words.clone());
                if let Err(e) = super::Cli::try_parse_from(args) {
                    panic!(
                        "Dockerfile runs `cargo xtask {}`, which the CLI rejects: {e}",
                        words.join(" ")
                    );
                }
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "expected the setup, build-ebpf and build commands, saw {seen}"
        );
    }
}
