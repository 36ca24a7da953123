//! The container engines `cargo xtask image` can build with, and how each is called.
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use super::{BaseImages, EngineChoice};
use crate::setup;

/// The host's CA bundle. Where registries are reached through a TLS-intercepting proxy (these
/// machines), downloads inside the build trust it only if the build sees this file.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
    Buildah,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker buildx",
            Engine::Podman => "podman",
            Engine::Buildah => "buildah",
        }
    }

    /// The build command up to the tag, build arguments and context.
    pub fn build_command(self, platform: &str, local_base: bool) -> Command {
        match self {
            Engine::Docker => {
                let mut cmd = Command::new("docker");
                cmd.args(["buildx", "build", "--platform", platform, "--load"]);
                cmd
            }
            Engine::Podman | Engine::Buildah => {
                let mut cmd = if self == Engine::Podman {
                    let mut c = Command::new("podman");
                    c.arg("build");
                    c
                } else {
                    let mut c = Command::new("buildah");
                    c.arg("bud");
                    c
                };
                // Layers are kept (buildah's default is not to) and RUN steps run chrooted
                // with the host's network: no OCI runtime, which hybrid-cgroup hosts break.
                cmd.args([
                    "--layers",
                    "--isolation",
                    "chroot",
                    "--network",
                    "host",
                    "--platform",
                    platform,
                    // The OCI format has no SHELL: the Dockerfile's `pipefail` would be dropped.
                    "--format",
                    "docker",
                ]);
                if local_base {
                    // The base images exist only in this machine's storage.
                    cmd.arg("--pull=never");
                }
                // Read-only: the build's own CA set-up, if any, cannot rewrite the host's file.
                if Path::new(HOST_CA_BUNDLE).is_file() {
                    cmd.args(["--volume", &format!("{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro")]);
                }
                cmd
            }
        }
    }

    /// Writes the image to a docker-archive file (what `kind load image-archive` reads).
    pub fn save_command(self, tag: &str, archive: &Path) -> Command {
        match self {
            Engine::Docker => {
                let mut cmd = Command::new("docker");
                cmd.args(["save", "-o"]).arg(archive).arg(tag);
                cmd
            }
            Engine::Podman => {
                let mut cmd = Command::new("podman");
                cmd.args(["save", "--format", "docker-archive", "-o"])
                    .arg(archive)
                    .arg(tag);
                cmd
            }
            Engine::Buildah => {
                let mut cmd = Command::new("buildah");
                cmd.args(["push", tag])
                    .arg(format!("docker-archive:{}:{tag}", archive.display()));
                cmd
            }
        }
    }
}

/// A docker CLI alone is not an engine: buildx and a daemon that answers must be there too.
fn docker_usable() -> bool {
    let ok = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    setup::command_exists("docker") && ok(&["buildx", "version"]) && ok(&["info"])
}

pub fn pick(choice: EngineChoice, base: BaseImages) -> Result<Engine> {
    let engine = match choice {
        EngineChoice::Docker => {
            if !docker_usable() {
                bail!(
                    "--engine docker: `docker buildx` or its daemon does not answer (try `docker buildx version` and `docker info`)"
                );
            }
            Engine::Docker
        }
        EngineChoice::Podman => require(Engine::Podman, "podman")?,
        EngineChoice::Buildah => require(Engine::Buildah, "buildah")?,
        // buildah before podman: `podman build` is buildah inside, and buildah needs no service
        // or runtime; images land in the same storage either way.
        EngineChoice::Auto if base == BaseImages::Official && docker_usable() => Engine::Docker,
        EngineChoice::Auto if setup::command_exists("buildah") => Engine::Buildah,
        EngineChoice::Auto if setup::command_exists("podman") => Engine::Podman,
        EngineChoice::Auto => bail!(
            "no container engine found: install docker with buildx, podman or buildah (`apt-get install buildah`), or pass --base local, which installs them"
        ),
    };
    if engine == Engine::Docker && base == BaseImages::Local {
        bail!(
            "--base local makes its base images in podman/buildah storage, which docker cannot see: use --engine podman or buildah"
        );
    }
    Ok(engine)
}

fn require(engine: Engine, command: &str) -> Result<Engine> {
    if !setup::command_exists(command) {
        bail!("--engine {command}: `{command}` is not on PATH (`apt-get install {command}`)");
    }
    Ok(engine)
}

/// `--ulimit` arguments for `podman run` that runc can apply. On these machines podman's
/// `--ulimit host` (and its defaults) ask for more than conmon's own hard limits, and runc fails
/// with `error setting rlimit type 7: operation not permitted`; what conmon has is what a
/// container can get, so that is read from a probe container's conmon and asked for.
pub fn podman_ulimits(image: &str) -> Result<Vec<String>> {
    let low = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let out = Command::new("podman")
        .args([
            "run",
            "-d",
            "--rm",
            "--runtime",
            "runc",
            "--network",
            "none",
        ])
        .args(low)
        .args([image, "sleep", "30"])
        .output()?;
    if !out.status.success() {
        bail!(
            "podman cannot start a probe container from {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let conmon = Command::new("podman")
        .args(["inspect", "-f", "{{.State.ConmonPid}}", &id])
        .output()?;
    let pid = String::from_utf8_lossy(&conmon.stdout).trim().to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let _ = Command::new("podman")
        .args(["rm", "-f", "-t", "0", &id])
        .stdout(std::process::Stdio::null())
        .status();
    let hard = |label: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.split_whitespace().rev().nth(1).map(str::to_string))
    };
    let mut args = Vec::new();
    for (label, name) in [("Max open files", "nofile"), ("Max processes", "nproc")] {
        let Some(max) = hard(label) else {
            bail!("cannot read conmon's limits (/proc/{pid}/limits)");
        };
        let max = if max == "unlimited" {
            "-1".to_string()
        } else {
            max
        };
        args.extend(["--ulimit".to_string(), format!("{name}={max}:{max}")]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn buildah_keeps_layers_and_never_pulls_local_bases() {
        let a = args(&Engine::Buildah.build_command("linux/amd64", true));
        for needed in ["bud", "--layers", "chroot", "--pull=never", "linux/amd64"] {
            assert!(a.iter().any(|x| x == needed), "{needed} missing in {a:?}");
        }
        let official = args(&Engine::Buildah.build_command("linux/arm64", false));
        assert!(!official.iter().any(|x| x == "--pull=never"));
    }

    #[test]
    fn docker_loads_the_single_platform_it_builds() {
        let a = args(&Engine::Docker.build_command("linux/arm64", false));
        assert_eq!(
            a,
            ["buildx", "build", "--platform", "linux/arm64", "--load"]
        );
    }

    #[test]
    fn every_engine_saves_a_docker_archive() {
        let p = Path::new("/tmp/x.tar");
        assert!(
            args(&Engine::Buildah.save_command("a:b", p))
                .contains(&"docker-archive:/tmp/x.tar:a:b".to_string())
        );
        assert!(
            args(&Engine::Podman.save_command("a:b", p)).contains(&"docker-archive".to_string())
        );
    }
}
