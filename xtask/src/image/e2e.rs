//! `cargo xtask image-test`: the image, built here from locally made base images, run under podman
//! exactly as the rendered DaemonSet specifies (capabilities, read-only root, no privilege
//! escalation, hostPID, env, volumes, limits: all read from `helm template` output), profiling a
//! workload in another podman container and exporting to the independent OTLP receiver.
//!
//! Checked: the workload's `container.id` (podman's 64-hex id) on its resource; its own function
//! names, which exist only inside its container; glibc frames named from the libc6-dbg debug file
//! inside that container (names absent from its libc.so.6); the functions of a stripped binary in a
//! second container, named from a debug file only the node's `/usr/lib/debug` has (the agent reads
//! it through `/proc/1/root`, or its parent's root where PID 1 is closed; no volume); `/healthz`; a last export after SIGTERM
//! within `terminationGracePeriodSeconds`; and, under podman's own seccomp profile (what CRI-O and
//! podman nodes apply as RuntimeDefault), the one-line seccomp error.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::base::{self, BUILDER_BASE, RUNTIME_BASE};
use super::podspec::{self, Host, SeccompDefault};
use crate::setup::{self, workspace_root};

/// `--ulimit` arguments every `podman run` here takes ([`super::engine::podman_ulimits`]).
static ULIMITS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn ulimits() -> &'static [String] {
    ULIMITS.get().map_or(&[], Vec::as_slice)
}

const WORKLOAD_IMAGE: &str = "localhost/kalypso-e2e/workload:latest";
/// Function names in tests/image/workload/workload.c.
const WORKLOAD_FUNCTIONS: &[&str] = &[
    "kalypso_e2e_sort_c0ffee",
    "kalypso_e2e_compare_c0ffee",
    "kalypso_e2e_mix_c0ffee",
];
/// How long the agent gets to export the workload's samples (its export interval is the chart's).
const EXPORT_WAIT: Duration = Duration::from_secs(90);

#[derive(clap::Args, Default)]
pub struct Options {
    /// Use the image already built under the chart's default name instead of building it.
    #[arg(long)]
    pub no_build: bool,
    /// The chart to render (default: charts/kalypso-profiler), e.g. a modified copy.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

/// The stripped workload binary and where its debug file lives inside the workload image.
const STRIPPED_BINARY: &str = "/usr/local/bin/kalypso-e2e-stripped";
const NODE_DEBUG_IN_IMAGE: &str = "/usr/local/share/kalypso-e2e/node-debug/.build-id";
/// The node's debug directory, where the test puts that debug file for the run.
const NODE_DEBUG_DIR: &str = "/usr/lib/debug/.build-id";

/// Containers, processes and host files this test made, removed whatever happens.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    receiver: Option<Child>,
    /// Files, then directories, created on the host (removed in reverse order).
    host_paths: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(child) = &mut self.receiver {
            let _ = child.kill();
            let _ = child.wait();
        }
        for p in self.host_paths.iter().rev() {
            let _ = if p.is_dir() {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}

pub fn run(opts: &Options) -> Result<()> {
    if !setup::is_root() {
        bail!("image-test runs the agent with BPF capabilities under podman: run it as root");
    }
    let started = Instant::now();
    base::install_tools()?;
    let dir = super::work_dir().join("e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let tools = chart_tools()?;
    let image = if opts.no_build {
        super::chart_default_image()?
    } else {
        let built = super::build(&super::Options {
            base: super::BaseImages::Local,
            engine: super::EngineChoice::Buildah,
            ..Default::default()
        })?;
        built.tag
    };
    build_workload()?;
    let _ = ULIMITS.set(super::engine::podman_ulimits(WORKLOAD_IMAGE)?);
    let mut cleanup = Cleanup::default();

    let out = dir.join("requests.jsonl");
    let (receiver, port) = start_receiver(&out)?;
    cleanup.receiver = Some(receiver);
    let metrics_port = free_port()?;
    let chart = opts
        .chart
        .clone()
        .unwrap_or_else(|| workspace_root().join("charts/kalypso-profiler"));
    let ds = render_daemonset(&tools, &chart, port, metrics_port)?;
    let host = Host {
        node_name: hostname(),
        scratch: dir.join("volumes"),
        runtime_default_seccomp: SeccompDefault::File(containerd_like_profile(&dir)?),
    };
    let spec = podspec::from_daemonset(&ds, &host)?;
    ensure!(
        spec.image == image,
        "the chart renders image {} but the build made {image}",
        spec.image
    );

    let suffix = std::process::id();
    let workload = podman_run_detached(&[
        "--name",
        &format!("kalypso-e2e-workload-{suffix}"),
        "--network",
        "none",
        WORKLOAD_IMAGE,
    ])?;
    cleanup.containers.push(workload.clone());
    ensure!(
        workload.len() == 64 && workload.bytes().all(|b| b.is_ascii_hexdigit()),
        "podman gave container id {workload:?}"
    );
    let debug_only = debug_only_libc_names(&workload)?;
    let stripped = podman_run_detached(&[
        "--name",
        &format!("kalypso-e2e-stripped-{suffix}"),
        "--network",
        "none",
        "--entrypoint",
        STRIPPED_BINARY,
        WORKLOAD_IMAGE,
    ])?;
    cleanup.containers.push(stripped.clone());
    install_node_debug_file(&stripped, &dir, &mut cleanup.host_paths)?;

    seccomp_refusal(&ds, &host)?;

    // A pod has its own network namespace and reaches the collector by Service name; here the
    // receiver listens on the host's loopback, so the agent shares the host network. The one
    // argument not from the render.
    let name = format!("kalypso-e2e-agent-{suffix}");
    let mut agent_args: Vec<&str> = vec!["--name", &name, "--network", "host"];
    agent_args.extend(spec.args.iter().map(String::as_str));
    agent_args.push(&spec.image);
    let agent = podman_run_detached(&agent_args)?;
    cleanup.containers.push(agent.clone());
    eprintln!("image-test: podman run {}", agent_args.join(" "));

    let (probe_port, probe_path) = spec
        .liveness
        .clone()
        .context("the DaemonSet has no liveness probe")?;
    wait_for(
        Duration::from_secs(30),
        "/healthz to answer 200",
        &agent,
        || http_get(probe_port, &probe_path).0 == 200,
    )?;
    eprintln!("image-test: {probe_path} on :{probe_port} answers 200");

    let mut found = None;
    wait_for(
        EXPORT_WAIT,
        "an export with the workload's frames",
        &agent,
        || {
            found = read_requests(&out)
                .into_iter()
                .find_map(|req| workload_stacks(&req, &workload).map(|s| (req, s)));
            found
                .as_ref()
                .is_some_and(|(_, s)| WORKLOAD_FUNCTIONS.iter().all(|f| s.functions.contains(*f)))
        },
    )?;
    let (request, stacks) = found.expect("waited for it");
    let mut stripped_functions = std::collections::BTreeSet::<String>::new();
    let named = wait_for(
        EXPORT_WAIT,
        "an export naming the stripped workload's functions",
        &agent,
        || {
            stripped_functions = read_requests(&out)
                .iter()
                .filter_map(|req| workload_stacks(req, &stripped))
                .flat_map(|s| s.functions)
                .collect();
            WORKLOAD_FUNCTIONS
                .iter()
                .all(|f| stripped_functions.contains(*f))
        },
    );
    if let Err(e) = named {
        bail!("{e:#}\nthe stripped container's frames were named: {stripped_functions:?}");
    }
    eprintln!(
        "image-test: the stripped binary in container {stripped} is named from the node's {NODE_DEBUG_DIR}: {WORKLOAD_FUNCTIONS:?}"
    );
    let libc_debug: Vec<&String> = stacks
        .libc_functions
        .iter()
        .filter(|f| debug_only.iter().any(|d| d == *f))
        .collect();
    ensure!(
        !libc_debug.is_empty(),
        "no glibc frame of the workload is named from its libc6-dbg: its libc frames are {:?}",
        stacks.libc_functions
    );
    eprintln!(
        "image-test: container.id {workload} carries {} samples; its functions {WORKLOAD_FUNCTIONS:?}; glibc frames named only by libc6-dbg: {libc_debug:?}",
        stacks.samples
    );
    std::fs::write(
        dir.join("decoded-request.json"),
        serde_json::to_string_pretty(&request)?,
    )?;
    check_invariants(&out)?;

    sigterm_flush(&agent, &out, spec.grace_seconds)?;
    drop(cleanup);
    eprintln!(
        "image-test: passed in {:.0} s (requests in {})",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// helm (and pyyaml, to read its output) from the chart suite's own tool installer.
struct ChartTools {
    helm: PathBuf,
    python: PathBuf,
}

fn chart_tools() -> Result<ChartTools> {
    let root = workspace_root();
    let out = Command::new("bash")
        .current_dir(&root)
        .args([
            "-c",
            "source tests/charts/tools.sh && install_helm_kubectl >&2 && install_python_tools >&2 && echo \"$TOOLS_DIR\"",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(
        out.status.success(),
        "installing helm from tests/charts/tools.sh failed"
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(ChartTools {
        helm: dir.join("bin/helm"),
        python: dir.join("venv/bin/python"),
    })
}

fn render_daemonset(
    tools: &ChartTools,
    chart: &Path,
    otlp_port: u16,
    metrics_port: u16,
) -> Result<Value> {
    let root = workspace_root();
    let yaml = Command::new(&tools.helm)
        .current_dir(&root)
        .args(["template", "kalypso-profiler"])
        .arg(chart)
        .args(["--namespace", "kalypso"])
        .args([
            "--set",
            &format!("agent.otlpEndpoint=http://127.0.0.1:{otlp_port}"),
        ])
        .args(["--set", &format!("agent.metricsPort={metrics_port}")])
        .output()?;
    ensure!(
        yaml.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&yaml.stderr)
    );
    let mut py = Command::new(&tools.python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    py.stdin.take().expect("piped").write_all(&yaml.stdout)?;
    let json = py.wait_with_output()?;
    ensure!(json.status.success(), "reading helm's YAML failed");
    let docs: Vec<Value> = serde_json::from_slice(&json.stdout)?;
    docs.into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .context("the chart renders no DaemonSet")
}

/// containerd's RuntimeDefault (≥ 1.6.9, like moby ≥ 23) allows `bpf` to CAP_BPF and
/// `perf_event_open` to CAP_PERFMON; podman's containers-common profile only to CAP_SYS_ADMIN.
/// Derived from podman's own profile so that everything else stays the runtime's.
fn containerd_like_profile(dir: &Path) -> Result<PathBuf> {
    let src = "/usr/share/containers/seccomp.json";
    let mut profile: Value = serde_json::from_str(
        &std::fs::read_to_string(src).with_context(|| format!("reading {src}"))?,
    )?;
    let syscalls = profile["syscalls"]
        .as_array_mut()
        .context("seccomp.json has no syscalls")?;
    for rule in syscalls.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| n != "bpf" && n != "perf_event_open");
        }
    }
    for (name, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        for cap in [cap, "CAP_SYS_ADMIN"] {
            syscalls.push(serde_json::json!({
                "names": [name], "action": "SCMP_ACT_ALLOW", "args": [],
                "includes": {"caps": [cap]}, "excludes": {}
            }));
        }
    }
    let path = dir.join("seccomp-containerd-runtime-default.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&profile)?)?;
    Ok(path)
}

/// Under podman's default profile (what podman and CRI-O nodes apply for RuntimeDefault) the
/// agent must stop at once with the one line that names seccomp.
fn seccomp_refusal(ds: &Value, host: &Host) -> Result<()> {
    let podman_host = Host {
        node_name: host.node_name.clone(),
        scratch: host.scratch.join("podman-default"),
        runtime_default_seccomp: SeccompDefault::Podman,
    };
    let spec = podspec::from_daemonset(ds, &podman_host)?;
    let mut args: Vec<&str> = vec!["run", "--rm", "--runtime", "runc", "--network", "host"];
    args.extend(ulimits().iter().map(String::as_str));
    args.extend(spec.args.iter().map(String::as_str));
    args.push(&spec.image);
    let out = Command::new("timeout")
        .arg("60")
        .arg("podman")
        .args(&args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && out.status.code() != Some(124),
        "under podman's default seccomp profile the agent did not fail (expected EPERM from bpf()): {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("seccomp"))
        .with_context(|| {
            format!("under podman's default seccomp profile the agent failed without naming seccomp:\n{stderr}")
        })?;
    eprintln!("image-test: under podman's default seccomp profile: {line}");
    Ok(())
}

fn build_workload() -> Result<()> {
    let root = workspace_root();
    let mut cmd = Command::new("buildah");
    cmd.current_dir(root.join("tests/image/workload"))
        .args([
            "bud",
            "--layers",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--pull=never",
        ])
        .args(["--format", "docker", "-t", WORKLOAD_IMAGE])
        .args(["--build-arg", &format!("BUILDER_IMAGE={BUILDER_BASE}")])
        .args(["--build-arg", &format!("RUNTIME_IMAGE={RUNTIME_BASE}")])
        .arg(".")
        .stdout(Stdio::null());
    setup::run_checked(&mut cmd)
}

/// Names of the container's glibc that its libc.so.6 does not carry (no `.symtab` there, and not
/// exported): only a debug file can give them.
fn debug_only_libc_names(container: &str) -> Result<Vec<String>> {
    let dir = super::work_dir().join("e2e");
    let local = dir.join("container-libc.so.6");
    let triplet = format!("{}-linux-gnu", setup::host_arch());
    setup::run_checked(
        Command::new("podman")
            .args(["cp", &format!("{container}:/lib/{triplet}/libc.so.6")])
            .arg(&local),
    )?;
    let bytes = std::fs::read(&local)?;
    let candidates = ["__libc_start_call_main", "msort_with_tmp", "__qsort_r"];
    let names = candidates
        .iter()
        .filter(|n| !contains_cstr(&bytes, n))
        .map(|n| n.to_string())
        .collect::<Vec<_>>();
    ensure!(
        names.contains(&"__libc_start_call_main".to_string()),
        "the container's libc.so.6 names __libc_start_call_main itself: it proves nothing about debug files"
    );
    Ok(names)
}

/// Copies the stripped workload's debug file out of its container into the node's
/// `/usr/lib/debug/.build-id` (recording what it creates, for removal), after checking that the
/// binary itself carries none of the names, so that only that file can give them.
fn install_node_debug_file(container: &str, dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let binary = dir.join("stripped-binary");
    setup::run_checked(
        Command::new("podman")
            .args(["cp", &format!("{container}:{STRIPPED_BINARY}")])
            .arg(&binary),
    )?;
    let bytes = std::fs::read(&binary)?;
    ensure!(
        WORKLOAD_FUNCTIONS.iter().all(|f| !contains_cstr(&bytes, f)),
        "{STRIPPED_BINARY} is not stripped: it names its functions itself"
    );
    let copied = dir.join("node-debug");
    setup::run_checked(
        Command::new("podman")
            .args(["cp", &format!("{container}:{NODE_DEBUG_IN_IMAGE}")])
            .arg(&copied),
    )?;
    let mut installed = 0;
    for sub in std::fs::read_dir(&copied)? {
        let sub = sub?.path();
        for file in std::fs::read_dir(&sub)? {
            let file = file?.path();
            let rel = file.strip_prefix(&copied)?;
            let target = Path::new(NODE_DEBUG_DIR).join(rel);
            ensure!(
                !target.exists(),
                "{} already exists on this machine",
                target.display()
            );
            let mut missing: Vec<PathBuf> = target
                .ancestors()
                .skip(1)
                .take_while(|a| !a.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            for d in missing {
                std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
                created.push(d);
            }
            std::fs::copy(&file, &target)
                .with_context(|| format!("installing {}", target.display()))?;
            created.push(target.clone());
            installed += 1;
            eprintln!("image-test: node debug file {}", target.display());
        }
    }
    ensure!(
        installed == 1,
        "{installed} debug files in {NODE_DEBUG_IN_IMAGE}, expected 1"
    );
    Ok(())
}

fn contains_cstr(haystack: &[u8], name: &str) -> bool {
    let needle: Vec<u8> = [&[0u8][..], name.as_bytes(), &[0u8]].concat();
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_slice())
}

fn podman_run_detached(args: &[&str]) -> Result<String> {
    let out = Command::new("podman")
        .args(["run", "-d", "--runtime", "runc"])
        .args(ulimits())
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "podman run {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn start_receiver(out: &Path) -> Result<(Child, u16)> {
    let python = setup::test_tools_dir().join("venv/bin/python");
    ensure!(
        python.exists(),
        "no test venv: run `cargo xtask setup --test-tools`"
    );
    let mut child = Command::new(python)
        .arg(workspace_root().join("tests/readers/otlp_receiver.py"))
        .args(["--port", "0", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok());
    match port {
        Some(p) => Ok((child, p)),
        None => {
            let _ = child.kill();
            bail!("the OTLP receiver did not start: {line:?}")
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Polls `f` until it holds; fails early (with its logs) if the agent container has exited.
fn wait_for(
    limit: Duration,
    what: &str,
    container: &str,
    mut f: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if !container_running(container) {
            bail!(
                "the agent container exited while waiting for {what}:\n{}",
                logs(container)
            );
        }
        if start.elapsed() > limit {
            bail!(
                "timed out after {limit:?} waiting for {what}; agent log:\n{}",
                logs(container)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn container_running(id: &str) -> bool {
    Command::new("podman")
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

fn logs(id: &str) -> String {
    Command::new("podman")
        .args(["logs", "--tail", "40", id])
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
}

fn read_requests(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn check_invariants(path: &Path) -> Result<()> {
    let out = Command::new(setup::test_tools_dir().join("venv/bin/python"))
        .arg(workspace_root().join("tests/readers/otlp_check.py"))
        .arg(path)
        .output()?;
    ensure!(
        out.status.success(),
        "OTLP invariants violated:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What one request says about the workload container.
#[derive(Debug, Default)]
struct WorkloadStacks {
    samples: u64,
    functions: std::collections::BTreeSet<String>,
    /// Names of frames in mappings of libc.so.6.
    libc_functions: std::collections::BTreeSet<String>,
}

fn idx(v: &Value) -> usize {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0) as usize
}

/// The workload's stacks in one request, found by its `container.id` resource attribute.
fn workload_stacks(req: &Value, container_id: &str) -> Option<WorkloadStacks> {
    let d = &req["dictionary"];
    let strings = d["string_table"].as_array()?;
    let s = |v: &Value| {
        strings
            .get(idx(v))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut out = WorkloadStacks::default();
    for rp in req["resource_profiles"].as_array()? {
        let is_workload = rp["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["key"] == "container.id" && a["value"]["string_value"] == container_id);
        if !is_workload {
            continue;
        }
        for sp in rp["scope_profiles"].as_array().into_iter().flatten() {
            for p in sp["profiles"].as_array().into_iter().flatten() {
                for sample in p["samples"].as_array().into_iter().flatten() {
                    out.samples += sample["values"]
                        .get(0)
                        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
                        .unwrap_or(0);
                    let stack = &d["stack_table"][idx(&sample["stack_index"])];
                    for li in stack["location_indices"].as_array().into_iter().flatten() {
                        let loc = &d["location_table"][idx(li)];
                        let file =
                            s(&d["mapping_table"][idx(&loc["mapping_index"])]["filename_strindex"]);
                        for line in loc["lines"].as_array().into_iter().flatten() {
                            let f = s(
                                &d["function_table"][idx(&line["function_index"])]["name_strindex"],
                            );
                            if file.ends_with("libc.so.6") {
                                out.libc_functions.insert(f.clone());
                            }
                            out.functions.insert(f);
                        }
                    }
                }
            }
        }
    }
    (out.samples > 0).then_some(out)
}

/// SIGTERM, as the kubelet sends it: the agent must export once more and exit 0 before the grace
/// period ends (after which the kubelet would SIGKILL it).
fn sigterm_flush(agent: &str, out: &Path, grace_seconds: u64) -> Result<()> {
    // Right after a regular export, so that the next one is not due before the agent has flushed.
    let before = read_requests(out).len();
    let start = Instant::now();
    while read_requests(out).len() == before && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = read_requests(out).len();
    let signalled = Instant::now();
    let signalled_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    setup::run_checked(
        Command::new("podman")
            .args(["kill", "--signal", "TERM", agent])
            .stdout(Stdio::null()),
    )?;
    let exit = Command::new("timeout")
        .arg(grace_seconds.to_string())
        .args(["podman", "wait", agent])
        .output()?;
    let took = signalled.elapsed();
    ensure!(
        exit.status.success(),
        "the agent did not exit within the grace period of {grace_seconds} s after SIGTERM:\n{}",
        logs(agent)
    );
    let code = String::from_utf8_lossy(&exit.stdout).trim().to_string();
    ensure!(
        code == "0",
        "the agent exited {code} after SIGTERM:\n{}",
        logs(agent)
    );
    let requests = read_requests(out);
    let last = requests.last().context("no requests")?;
    let received: u128 = last["_received_unix_nano"]
        .as_u64()
        .map(u128::from)
        .or_else(|| {
            last["_received_unix_nano"]
                .as_str()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(0);
    ensure!(
        requests.len() > seen && received >= signalled_ns,
        "no export after SIGTERM ({} requests before, {} after)",
        seen,
        requests.len()
    );
    eprintln!(
        "image-test: SIGTERM: last export received and exit 0 after {:.1} s (grace {grace_seconds} s)",
        took.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stacks_are_found_by_container_id_and_libc_frames_by_mapping() {
        let req = json!({
            "dictionary": {
                "string_table": ["", "kalypso_e2e_sort_c0ffee", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                                 "__libc_start_call_main", "/usr/local/bin/w"],
                "mapping_table": [{}, {"filename_strindex": 2}, {"filename_strindex": 4}],
                "function_table": [{}, {"name_strindex": 1}, {"name_strindex": 3}],
                "location_table": [{}, {"mapping_index": 2, "lines": [{"function_index": 1}]},
                                   {"mapping_index": 1, "lines": [{"function_index": 2}]}],
                "stack_table": [{}, {"location_indices": [1, 2]}]
            },
            "resource_profiles": [
                {"resource": {"attributes": [{"key": "container.id", "value": {"string_value": "other"}}]},
                 "scope_profiles": [{"profiles": [{"samples": [{"stack_index": 1, "values": ["5"]}]}]}]},
                {"resource": {"attributes": [{"key": "container.id", "value": {"string_value": "abc"}}]},
                 "scope_profiles": [{"profiles": [{"samples": [{"stack_index": 1, "values": ["3"]}]}]}]}
            ]
        });
        let s = workload_stacks(&req, "abc").unwrap();
        assert_eq!(s.samples, 3);
        assert!(s.functions.contains("kalypso_e2e_sort_c0ffee"));
        assert_eq!(
            s.libc_functions.iter().collect::<Vec<_>>(),
            ["__libc_start_call_main"]
        );
        assert!(workload_stacks(&req, "nope").is_none());
    }

    #[test]
    fn names_in_a_binary_are_matched_whole() {
        assert!(contains_cstr(b"\0abc\0def\0", "abc"));
        assert!(!contains_cstr(b"\0xabc\0", "abc"));
    }
}
