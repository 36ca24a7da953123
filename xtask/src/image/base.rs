//! `--base local`: the Dockerfile's two base images made on this machine, for machines that reach
//! no container registry (these ones). `debian:bookworm-slim` is an mmdebstrap minbase with the
//! official image's apt sources; `rust:1-bookworm` is that plus what the official image adds that
//! our build uses (gcc, libc6-dev, make, pkg-config, git, curl, ca-certificates) and the host's
//! rustup stable toolchain under /usr/local/{rustup,cargo}, with the official image's variables.
//! rustup there never downloads anything: the toolchain it defaults to is already installed.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::engine::Engine;
use crate::setup;

pub const RUNTIME_BASE: &str = "localhost/kalypso-base/debian:bookworm-slim";
pub const BUILDER_BASE: &str = "localhost/kalypso-base/rust:1-bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// What `--base local` and the image test need on the host. qemu-user-static and binfmt-support
/// (and arch-test, which mmdebstrap needs for a foreign --arch) only matter for a foreign
/// --platform: its base is made and its `RUN --version` step runs emulated.
const TOOLS: &[&str] = &[
    "podman",
    "buildah",
    "runc",
    "mmdebstrap",
    "uidmap",
    "fuse-overlayfs",
    "slirp4netns",
    "qemu-user-static",
    "binfmt-support",
    "arch-test",
];

/// What the official rust:1-bookworm has (it is buildpack-deps:bookworm) that the build uses.
const BUILDER_PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "make",
    "pkg-config",
    "git",
    "curl",
    "ca-certificates",
    "xz-utils",
];

pub fn install_tools() -> Result<()> {
    setup::apt_install(TOOLS)
}

pub struct BaseImages {
    pub builder: String,
    pub runtime: String,
}

fn deb_arch(platform: &str) -> Result<&'static str> {
    Ok(match platform {
        "linux/amd64" => "amd64",
        "linux/arm64" => "arm64",
        other => bail!("unsupported platform {other} (linux/amd64 or linux/arm64)"),
    })
}

/// The base images for building `platform` here, made first where missing.
pub fn ensure(engine: Engine, platform: &str) -> Result<BaseImages> {
    if engine == Engine::Docker {
        bail!("--base local needs podman or buildah");
    }
    // The runtime stage takes the target's platform; the builder always runs natively.
    let host_runtime = ensure_debian(super::host_platform())?;
    let runtime = ensure_debian(platform)?;
    if !image_exists(BUILDER_BASE) {
        make_builder(&host_runtime, BUILDER_BASE)?;
    }
    Ok(BaseImages {
        builder: BUILDER_BASE.to_string(),
        runtime,
    })
}

/// A Debian bookworm base for `platform` (the arm64-host test runs in one), made if missing.
pub fn ensure_debian(platform: &str) -> Result<String> {
    let host = deb_arch(super::host_platform())?;
    let target = deb_arch(platform)?;
    let tag = if target == host {
        RUNTIME_BASE.to_string()
    } else {
        format!("{RUNTIME_BASE}-{target}")
    };
    if !image_exists(&tag) {
        make_debian(target, &tag)?;
    }
    Ok(tag)
}

pub fn image_exists(name: &str) -> bool {
    Command::new("podman")
        .args(["image", "exists", name])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn make_debian(arch: &str, tag: &str) -> Result<()> {
    let dir = super::work_dir().join("base");
    std::fs::create_dir_all(&dir)?;
    let tar = dir.join(format!("debian-bookworm-slim-{arch}.tar"));
    let partial = tar.with_extension("tar.partial");
    eprintln!("image: making {tag} with mmdebstrap (about a minute)");
    let started = Instant::now();
    let _ = std::fs::remove_file(&partial);
    setup::run_checked(
        Command::new("mmdebstrap")
            .args([
                "--variant=minbase",
                "--format=tar",
                &format!("--arch={arch}"),
            ])
            // What the official -slim image leaves out.
            .args([
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/info/*",
            ])
            .arg("bookworm")
            .arg(&partial)
            // The official image's sources: LLVM 22 and rustc-web 1.96 are only in -security.
            .arg(format!("deb {MIRROR} bookworm main"))
            .arg(format!("deb {MIRROR} bookworm-updates main"))
            .arg(format!("deb {SECURITY_MIRROR} bookworm-security main")),
    )?;
    std::fs::rename(&partial, &tar)?;
    setup::run_checked(
        Command::new("podman")
            .args(["import", "--arch", arch, "--change", "CMD [\"bash\"]"])
            .arg(&tar)
            .arg(tag),
    )?;
    std::fs::remove_file(&tar)?;
    eprintln!(
        "image: {tag} made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The host's rustup home and its stable toolchain for the host.
fn host_toolchain() -> Result<(PathBuf, String)> {
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .context("neither RUSTUP_HOME nor HOME is set")?;
    let name = format!("stable-{}-unknown-linux-gnu", setup::host_arch());
    if !home
        .join("toolchains")
        .join(&name)
        .join("bin/cargo")
        .is_file()
    {
        bail!(
            "--base local copies the host's rustup toolchain {name} into the builder image, and {} has none: `rustup toolchain install stable`",
            home.display()
        );
    }
    if !setup::cargo_bin_dir().join("rustup").is_file() {
        bail!(
            "--base local needs rustup at {}",
            setup::cargo_bin_dir().join("rustup").display()
        );
    }
    Ok((home, name))
}

fn buildah(args: &[&str]) -> Result<String> {
    let out = Command::new("buildah")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running buildah {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("buildah {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn make_builder(debian: &str, tag: &str) -> Result<()> {
    let (rustup_home, toolchain) = host_toolchain()?;
    eprintln!("image: making {tag} from {debian} and the host's {toolchain}");
    let started = Instant::now();
    let container = buildah(&["from", "--pull=never", debian])?;
    let result = fill_builder(&container, &rustup_home, &toolchain)
        .and_then(|()| buildah(&["commit", "--rm", &container, tag]).map(|_| ()));
    if result.is_err() {
        let _ = buildah(&["rm", &container]);
    }
    result?;
    eprintln!(
        "image: {tag} made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fill_builder(container: &str, rustup_home: &std::path::Path, toolchain: &str) -> Result<()> {
    let install = format!(
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {} && rm -rf /var/lib/apt/lists/*",
        BUILDER_PACKAGES.join(" ")
    );
    buildah(&[
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        container,
        "--",
        "sh",
        "-c",
        &install,
    ])?;
    let mnt = PathBuf::from(buildah(&["mount", container])?);
    let copied = copy_toolchain(&mnt, rustup_home, toolchain);
    let _ = buildah(&["umount", container]);
    copied?;
    let path = "/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    buildah(&[
        "config",
        "--env",
        "RUSTUP_HOME=/usr/local/rustup",
        "--env",
        "CARGO_HOME=/usr/local/cargo",
        "--env",
        &format!("PATH={path}"),
        "--label",
        &format!(
            "org.opencontainers.image.description=stand-in for rust:1-bookworm with the host's {toolchain}"
        ),
        container,
    ])?;
    Ok(())
}

/// The toolchain without its documentation (800 MB the build never reads), rustup, and the
/// proxies the official image has, as links to rustup.
fn copy_toolchain(
    mnt: &std::path::Path,
    rustup_home: &std::path::Path,
    toolchain: &str,
) -> Result<()> {
    let rustup = mnt.join("usr/local/rustup");
    let cargo_bin = mnt.join("usr/local/cargo/bin");
    std::fs::create_dir_all(rustup.join("toolchains"))?;
    std::fs::create_dir_all(&cargo_bin)?;
    let mut tar_out = Command::new("tar")
        .arg("-C")
        .arg(rustup_home.join("toolchains"))
        .args([
            "--exclude",
            &format!("{toolchain}/share/doc"),
            "-cf",
            "-",
            toolchain,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let stdout = tar_out.stdout.take().expect("piped");
    setup::run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(rustup.join("toolchains"))
            .args(["-xf", "-"])
            .stdin(stdout),
    )?;
    if !tar_out.wait()?.success() {
        bail!("copying {toolchain} failed");
    }
    std::fs::write(
        rustup.join("settings.toml"),
        format!(
            "version = \"12\"\ndefault_toolchain = \"{toolchain}\"\nprofile = \"minimal\"\nauto_self_update = \"disable\"\n"
        ),
    )?;
    std::fs::copy(
        setup::cargo_bin_dir().join("rustup"),
        cargo_bin.join("rustup"),
    )?;
    for proxy in [
        "cargo",
        "rustc",
        "rustdoc",
        "cargo-clippy",
        "clippy-driver",
        "rustfmt",
        "cargo-fmt",
        "rust-gdb",
        "rust-gdbgui",
        "rust-lldb",
    ] {
        std::os::unix::fs::symlink("rustup", cargo_bin.join(proxy))?;
    }
    Ok(())
}
