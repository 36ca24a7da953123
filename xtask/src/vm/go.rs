//! The Go workload for the guest: `tests/workloads/go/hot`, built the way container images ship
//! Go (stripped with `-ldflags=-s -w`: `.gopclntab` but no `.symtab` or DWARF; CGO_ENABLED=0, so
//! static and needing no library in the initramfs) with the newest toolchain `cargo xtask setup
//! --test-tools` installs, cross-built for the guest's GOARCH.
use super::*;

/// Its name in the guest, `/opt/kalypso/hot_s`, which is also the comm the agent sees.
pub(super) const GO_WORKLOAD: &str = "hot_s";

impl Arch {
    fn goarch(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::X86_64 => "amd64",
        }
    }
}

/// Builds the Go workload for `arch` into `dir`; its path.
pub(super) fn build_go_workload(arch: Arch, dir: &Path) -> Result<PathBuf> {
    setup::install_go_toolchains()?;
    let (version, go) = setup::go_toolchains()
        .pop()
        .context("no Go toolchain listed")?;
    let root = setup::workspace_root();
    // The build cache the test suite's Go builds use (profiler-agent/tests/common/mod.rs).
    let cache = root.join("target/go-workloads/.cache");
    let out = dir.join(GO_WORKLOAD);
    setup::run_checked(
        Command::new(go)
            .args(["build", "-ldflags=-s -w", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(root.join("tests/workloads/go/hot"))
            .env_remove("GOROOT")
            .envs([
                ("GOOS", "linux"),
                ("GOARCH", arch.goarch()),
                ("CGO_ENABLED", "0"),
                ("GOENV", "off"),
                ("GOTOOLCHAIN", "local"),
                ("GOPROXY", "off"),
                ("GOFLAGS", "-buildvcs=false"),
                ("GO111MODULE", "off"),
            ])
            .env("GOCACHE", cache.join("build"))
            .env("GOPATH", cache.join("gopath"))
            .env("GOMODCACHE", cache.join("gopath/pkg/mod")),
    )
    .with_context(|| format!("building tests/workloads/go/hot with Go {version}"))?;
    Ok(out)
}
