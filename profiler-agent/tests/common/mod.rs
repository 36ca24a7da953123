//! Helpers for the end-to-end tests: build real workloads, run the real agent binary as root, and
//! read what it wrote.
#![allow(dead_code)]

pub mod otlp;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn agent_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_profiler-agent"))
}

/// BPF tests need root. CI runs as root and sets KALYPSO_REQUIRE_ROOT_TESTS=1, so there a missing
/// privilege fails the test instead of skipping it.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("KALYPSO_REQUIRE_ROOT_TESTS").is_some() {
        panic!("this test loads BPF programs and must run as root");
    }
    eprintln!("skipped: needs root to load BPF programs");
    false
}

fn out_dir() -> PathBuf {
    let dir = workspace_root().join("target/test-workloads");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/workloads/<name>.c` with frame pointers everywhere (gcc drops them from leaf
/// functions at -O1 and above, so -O0).
pub fn build_c(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let src = workspace_root().join(format!("tests/workloads/{name}.c"));
    let out = out_dir().join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(["-O0", "-g", "-fno-omit-frame-pointer"]);
    if cfg!(target_arch = "aarch64") {
        cmd.arg("-mno-omit-leaf-frame-pointer");
    }
    let status = cmd
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed for {}", src.display());
    out
}

/// Compiles `tests/workloads/<name>.rs` optimised, with frame pointers and debug info.
pub fn build_rust(name: &str) -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let src = workspace_root().join(format!("tests/workloads/{name}.rs"));
        let out = out_dir().join(name);
        let status = Command::new("rustc")
            .args([
                "--edition",
                "2021",
                "-C",
                "opt-level=2",
                "-C",
                "force-frame-pointers=yes",
                "-g",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "rustc failed for {}", src.display());
        out
    })
    .clone()
}

/// Builds a workload once per test process into `target/test-workloads/nofp/` (apart from the
/// frame-pointer builds of the same names). `compile(src, out)` gives the compiler command.
fn build_once(file: &str, compile: impl FnOnce(&Path, &Path) -> Command) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap();
    if let Some(out) = built.get(file) {
        return out.clone();
    }
    let src = workspace_root().join("tests/workloads").join(file);
    let dir = out_dir().join("nofp");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(Path::new(file).file_stem().unwrap());
    let status = compile(&src, &out).status().expect("the compiler runs");
    assert!(status.success(), "building {} failed", src.display());
    built.insert(file.to_string(), out.clone());
    out
}

/// Compiles `tests/workloads/<name>.c` optimised and without frame pointers, so only
/// `.eh_frame` tells how to unwind it. Sibling-call optimisation is off: a tail call leaves no
/// frame, and the call chains the tests look for must all be on the stack.
pub fn build_c_nofp(name: &str) -> PathBuf {
    build_once(&format!("{name}.c"), |src, out| {
        let mut cmd = Command::new("gcc");
        cmd.args([
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-o",
        ])
        .arg(out)
        .arg(src);
        cmd
    })
}

/// Compiles `tests/workloads/<name>.rs` release-like (opt-level 3), without frame pointers and
/// with debug info.
pub fn build_rust_nofp(name: &str) -> PathBuf {
    build_once(&format!("{name}.rs"), |src, out| {
        let mut cmd = Command::new("rustc");
        cmd.args([
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
            "-C",
            "force-frame-pointers=no",
            "-g",
            "-o",
        ])
        .arg(out)
        .arg(src);
        cmd
    })
}

/// Samples `pid` with `perf record --call-graph dwarf` (perf copies 8 KiB of user stack per
/// sample and unwinds it with the objects' CFI) for `seconds`, and counts the stacks as
/// `leaf;…;main` paths: leaf first, cut after `main` (what lies below it differs between libc
/// versions and is not what a comparison is about). Stacks that never reach `main` are kept
/// whole. Needs perf (`apt-get install linux-perf`) and the right to profile `pid`.
pub fn perf_dwarf_paths(pid: u32, seconds: u32) -> BTreeMap<String, u64> {
    let dir = temp_dir();
    let data = dir.path().join("perf.data");
    let out = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "99",
            "-e",
            "cpu-clock",
            "--call-graph",
            "dwarf",
        ])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .output()
        .expect("perf runs (apt-get install linux-perf)");
    assert!(
        out.status.success(),
        "perf record: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One block per sample: an empty header line (no header fields asked for: `-p` already
    // limits the samples to one process), then "<ip> <symbol>" per frame, leaf first.
    // --no-inline: one name per frame, the function the code belongs to, as our unwinder reports.
    let out = Command::new("perf")
        .args(["script", "--no-inline", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .expect("perf runs");
    assert!(
        out.status.success(),
        "perf script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut paths = BTreeMap::new();
    let mut frames: Vec<&str> = Vec::new();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            if let Some(main) = frames.iter().position(|f| *f == "main") {
                frames.truncate(main + 1);
            }
            if !frames.is_empty() {
                *paths.entry(frames.join(";")).or_default() += 1;
            }
            frames.clear();
            continue;
        }
        frames.push(
            line.split_once(' ')
                .map_or("[unknown]", |(_, sym)| sym.trim()),
        );
    }
    paths
}

/// A running workload, killed when dropped.
pub struct Workload {
    pub child: Child,
}

impl Workload {
    /// Starts the program and waits until it prints `ready`.
    pub fn start(program: &Path, args: &[&str]) -> Workload {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "workload did not start");
        Workload { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kalypso-test-")
        .tempdir()
        .unwrap()
}

/// Runs the agent to completion.
pub fn run_agent(args: &[&str]) -> Output {
    let out = Command::new(agent_binary())
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap();
    eprintln!(
        "agent {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Folded stacks: frames root first → count.
pub fn read_folded(path: &Path) -> BTreeMap<Vec<String>, u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').expect("folded line has a count");
            (
                stack.split(';').map(str::to_owned).collect(),
                count.parse().expect("count is a number"),
            )
        })
        .collect()
}

pub fn total(folded: &BTreeMap<Vec<String>, u64>) -> u64 {
    folded.values().sum()
}

/// Samples whose stack contains `path` as consecutive frames.
pub fn count_with(folded: &BTreeMap<Vec<String>, u64>, path: &[&str]) -> u64 {
    folded
        .iter()
        .filter(|(stack, _)| {
            stack
                .windows(path.len())
                .any(|w| w.iter().zip(path).all(|(a, b)| a == b))
        })
        .map(|(_, c)| c)
        .sum()
}

/// Bad input: a non-zero exit, no panic, and a first line `error: …` that mentions `needle`.
pub fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "exit status {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error:"),
        "first line is not an error: {stderr}"
    );
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}
