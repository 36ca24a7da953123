//! `cargo xtask image`: builds the agent's container image from the repository's Dockerfile with
//! whichever engine the machine has (docker buildx, podman, buildah), optionally from base images
//! this machine makes itself (`--base local`, what CI uses: no registry is reachable there), and
//! optionally loads it into a kind cluster.
pub mod arm64_host;
mod base;
pub mod e2e;
mod engine;
mod podspec;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub use engine::Engine;

use crate::setup::{self, workspace_root};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// docker buildx where a docker daemon answers, else podman, else buildah.
    Auto,
    Docker,
    Podman,
    Buildah,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BaseImages {
    /// The Dockerfile's defaults, `rust:1-bookworm` and `debian:bookworm-slim`, from a registry.
    Official,
    /// Made on this machine (mmdebstrap, the host's rustup toolchain): no registry needed.
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadInto {
    /// `kind load image-archive` into the cluster named by --kind-cluster.
    Kind,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Target platform: linux/amd64 or linux/arm64 (default: this machine's). For one image of
    /// both, use `docker buildx build --platform linux/amd64,linux/arm64 --push .` (README).
    #[arg(long, value_parser = ["linux/amd64", "linux/arm64"])]
    pub platform: Option<String>,
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    /// Where the builder and runtime base images come from.
    #[arg(long, value_enum, default_value_t = BaseImages::Official)]
    pub base: BaseImages,
    /// Image name (default: the chart's default image, so the chart needs no value on kind).
    #[arg(long)]
    pub tag: Option<String>,
    /// Load the built image into a local cluster.
    #[arg(long, value_enum)]
    pub load: Option<LoadInto>,
    /// The kind cluster `--load kind` loads into.
    #[arg(long, default_value = "kind")]
    pub kind_cluster: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            platform: None,
            engine: EngineChoice::Auto,
            base: BaseImages::Official,
            tag: None,
            load: None,
            kind_cluster: "kind".into(),
        }
    }
}

/// Docker's name for this machine's architecture.
pub fn host_platform() -> &'static str {
    match setup::host_arch() {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// The chart's default image (`image.repository` : `appVersion`), read from the chart itself.
pub fn chart_default_image() -> Result<String> {
    let chart = workspace_root().join("charts/kalypso-profiler");
    let values = std::fs::read_to_string(chart.join("values.yaml"))?;
    let chart_yaml = std::fs::read_to_string(chart.join("Chart.yaml"))?;
    let repository = yaml_scalar(&values, "  repository:")
        .context("charts/kalypso-profiler/values.yaml: no image.repository")?;
    let version = yaml_scalar(&chart_yaml, "appVersion:")
        .context("charts/kalypso-profiler/Chart.yaml: no appVersion")?;
    Ok(format!("{repository}:{version}"))
}

/// The value of the first line starting with `key` (these two files are plain block YAML).
fn yaml_scalar(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// What a build produced.
pub struct Built {
    pub tag: String,
    pub engine: Engine,
}

pub fn run(opts: &Options) -> Result<()> {
    let built = build(opts)?;
    if opts.load == Some(LoadInto::Kind) {
        load_into_kind(&built, &opts.kind_cluster)?;
    }
    Ok(())
}

/// Builds the image and returns its tag and the engine whose storage holds it.
pub fn build(opts: &Options) -> Result<Built> {
    let platform = opts
        .platform
        .clone()
        .unwrap_or_else(|| host_platform().to_string());
    if opts.base == BaseImages::Local {
        base::install_tools()?;
    }
    let engine = engine::pick(opts.engine, opts.base)?;
    let (builder_image, runtime_image) = match opts.base {
        BaseImages::Official => (None, None),
        BaseImages::Local => {
            let images = base::ensure(engine, &platform)?;
            (Some(images.builder), Some(images.runtime))
        }
    };
    let tag = match &opts.tag {
        Some(t) => t.clone(),
        None => chart_default_image()?,
    };
    let root = workspace_root();
    let mut cmd = engine.build_command(&platform, opts.base == BaseImages::Local);
    cmd.current_dir(&root).args(["-t", &tag]);
    if let Some(image) = &builder_image {
        cmd.args(["--build-arg", &format!("BUILDER_IMAGE={image}")]);
    }
    if let Some(image) = &runtime_image {
        cmd.args(["--build-arg", &format!("RUNTIME_IMAGE={image}")]);
    }
    cmd.args([
        "--build-arg",
        &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
    ]);
    if let Some(rev) = git_revision() {
        cmd.args(["--build-arg", &format!("REVISION={rev}")]);
    }
    cmd.args(["-f", "Dockerfile", "."]);
    eprintln!(
        "image: building {tag} for {platform} with {}",
        engine.name()
    );
    let started = Instant::now();
    setup::run_checked(&mut cmd)?;
    eprintln!(
        "image: built {tag} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Built { tag, engine })
}

fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .current_dir(workspace_root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `kind load image-archive`: works for every engine (kind's own `docker-image` needs docker).
fn load_into_kind(built: &Built, cluster: &str) -> Result<()> {
    if !setup::command_exists("kind") {
        bail!("--load kind: no `kind` on PATH (https://kind.sigs.k8s.io/docs/user/quick-start/)");
    }
    let dir = workspace_root().join("target/image");
    std::fs::create_dir_all(&dir)?;
    let archive = dir.join("profiler-agent.tar");
    let _ = std::fs::remove_file(&archive);
    setup::run_checked(&mut built.engine.save_command(&built.tag, &archive))?;
    setup::run_checked(
        Command::new("kind")
            .args(["load", "image-archive"])
            .arg(&archive)
            .args(["--name", cluster]),
    )?;
    eprintln!(
        "image: {} loaded into kind cluster {cluster}; the chart's default image is this one",
        built.tag
    );
    Ok(())
}

/// Where this module keeps what it makes (base rootfs archives, saved images).
pub fn work_dir() -> PathBuf {
    workspace_root().join("target/image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_tag_is_the_charts_default_image() {
        let tag = chart_default_image().unwrap();
        assert!(
            tag.starts_with("ghcr.io/") && tag.contains("/profiler-agent:"),
            "{tag}"
        );
    }

    #[test]
    fn yaml_scalars_are_read_without_quotes() {
        assert_eq!(
            yaml_scalar("a: 1\nappVersion: \"0.1.0\"\n", "appVersion:").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(yaml_scalar("appVersion:\n", "appVersion:"), None);
    }
}
